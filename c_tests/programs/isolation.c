/*
 * isolation.c -- one process, two OpenSSLs: the vendored libfio_tls.a
 * (OpenSSL 3.5 LTS inside, every symbol but fio_tls_* local) serves HTTPS
 * through facil.io, and this program itself uses the system's libssl
 * (linked with -lssl -lcrypto) as an HTTPS client against that server.
 *
 *   isolation PORT
 *
 * Build (see the Makefile's check-pq):
 *   cc isolation.c build/vendored/libfio_tls.a libfacil.io.a \
 *      -lssl -lcrypto -lpthread -ldl -lm
 *
 * Lines on stdout, for c_tests/suites/test_pq_vendored.py:
 *   APP-OPENSSL <OpenSSL_version(OPENSSL_VERSION) as the program sees it>
 *   APP-SSL_CTX_new <file dladdr names for the program's SSL_CTX_new>
 *   APP-OpenSSL_version <file dladdr names for the program's OpenSSL_version>
 *   CLIENT version=<TLS version> group=<group> status=<HTTP status line>
 *   CLIENT-FAILED <reason>
 *   DONE
 * The library's own log lines (FIO_LOG_LEVEL 5) go to stderr: its
 * "OpenSSL ... (built against ...)" line says which OpenSSL it runs on.
 *
 * Without the symbol localisation the executable would carry OpenSSL 3.5's
 * SSL_CTX_new and friends as global definitions, the program's own calls
 * would bind to them (dladdr would name the executable, the version would
 * read 3.5) and the system libcrypto could be interposed by them too.
 */
#define _GNU_SOURCE
#include <fio.h>
#include <http.h>

#include "fio_tls.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int port;
static int client_ok;

static void on_request(http_s *h) {
  http_send_body(h, "isolated\n", 9);
}

static const char *where(void *fn) {
  Dl_info info;
  if (!dladdr(fn, &info) || !info.dli_fname)
    return "unknown";
  return info.dli_fname;
}

static int tcp_connect(void) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
      return fd;
    if (fd >= 0)
      close(fd);
    usleep(25000);
  }
  return -1;
}

/* The program's own HTTPS client, on the system libssl. */
static void *client_thread(void *unused) {
  (void)unused;
  char reason[256] = "";
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl = NULL;
  int fd = tcp_connect();
  if (!ctx || fd < 0) {
    snprintf(reason, sizeof(reason), "%s", !ctx ? "SSL_CTX_new" : "connect");
    goto done;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (SSL_connect(ssl) != 1) {
    ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
    goto done;
  }
  const char *req = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  SSL_write(ssl, req, (int)strlen(req));
  char buf[4096];
  size_t got = 0;
  int n;
  while (got + 1 < sizeof(buf) && (n = SSL_read(ssl, buf + got, (int)(sizeof(buf) - 1 - got))) > 0)
    got += (size_t)n;
  buf[got] = 0;
  char *eol = strstr(buf, "\r\n");
  if (eol)
    *eol = 0;
  const char *group = SSL_group_to_name(ssl, (int)SSL_get_negotiated_group(ssl));
  printf("CLIENT version=%s group=%s status=%s body=%s\n", SSL_get_version(ssl),
         group ? group : "none", buf, (eol && strstr(eol + 1, "isolated")) ? "isolated" : "other");
  client_ok = 1;
done:
  if (!client_ok)
    printf("CLIENT-FAILED %s\n", reason);
  if (ssl) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  if (fd >= 0)
    close(fd);
  SSL_CTX_free(ctx);
  fio_stop();
  return NULL;
}

static void start_client(void *unused) {
  (void)unused;
  pthread_t t;
  if (pthread_create(&t, NULL, client_thread, NULL) == 0)
    pthread_detach(t);
  else
    fio_stop();
}

int main(int argc, char **argv) {
  if (argc != 2)
    return 2;
  port = atoi(argv[1]);
  FIO_LOG_LEVEL = FIO_LOG_LEVEL_DEBUG;
  setvbuf(stdout, NULL, _IONBF, 0);
  printf("APP-OPENSSL %s\n", OpenSSL_version(OPENSSL_VERSION));
  printf("APP-SSL_CTX_new %s\n", where((void *)&SSL_CTX_new));
  printf("APP-OpenSSL_version %s\n", where((void *)&OpenSSL_version));

  fio_tls_s *tls = fio_tls_new("localhost", NULL, NULL);
  if (!tls)
    return 1;
  if (http_listen(argv[1], "127.0.0.1", .on_request = on_request, .tls = tls) == -1)
    return 1;
  fio_state_callback_add(FIO_CALL_ON_START, start_client, NULL);
  fio_start(.threads = 1, .workers = 1);
  fio_tls_destroy(tls);
  printf("DONE\n");
  return client_ok ? 0 : 1;
}
