/*
 * demo.c -- the smallest HTTPS server: facil.io 0.7.0.beta4 + libfio_tls.
 *
 *   demo [PORT [ADDRESS]]
 *
 * PORT defaults to $DEMO_PORT, then 4443; ADDRESS defaults to 127.0.0.1.
 * The server name is $DEMO_NAME, else "localhost". The certificate is
 * generated in-process (self-signed), so a client has to skip
 * verification: curl -k; with FIO_TLS_ACME_DIRECTORY set it comes from
 * that ACME CA instead (`make demo ACME=pebble`). Stop it with Ctrl-C.
 *
 * It only ever names fio_tls_new and fio_tls_destroy, which makes it the
 * test (in suites/test_server.py) that a static link still picks up every TLS
 * function from libfio_tls.a rather than facil.io's weak stubs.
 */
#include <fio.h>
#include <http.h>

#include "fio_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "https_headers.h"

static const char body[] = "Hello, TLS world! (facil.io + libfio_tls)\n";

static void on_request(http_s *h) {
  set_https_headers(h);
  http_set_header(h, HTTP_HEADER_CONTENT_TYPE, http_mimetype_find("txt", 3));
  http_send_body(h, (void *)body, sizeof(body) - 1);
}

int main(int argc, char **argv) {
  const char *port = argc > 1 ? argv[1] : getenv("DEMO_PORT");
  const char *address = argc > 2 ? argv[2] : "127.0.0.1";
  const char *name = getenv("DEMO_NAME");
  if (!port || !*port)
    port = "4443";
  if (!name || !*name)
    name = "localhost";

  fio_tls_s *tls = fio_tls_new(name, NULL, NULL);
  if (!tls) {
    fprintf(stderr, "demo: could not create the TLS object\n");
    return 1;
  }
  if (http_listen(port, address, .on_request = on_request, .tls = tls) == -1) {
    fprintf(stderr, "demo: cannot listen on %s:%s\n", address, port);
    fio_tls_destroy(tls);
    return 1;
  }
  printf("HTTPS demo listening on %s:%s (self-signed certificate for %s, or "
         "the ACME CA's once issued). Try:\n",
         address, port, name);
  if (!strcmp(name, "localhost"))
    printf("  curl -k https://localhost:%s/\n", port);
  else /* the name need not resolve (an ACME test name) */
    printf("  curl -k --resolve %s:%s:%s https://%s:%s/\n", name, port,
           strcmp(address, "0.0.0.0") ? address : "127.0.0.1", name, port);
  fflush(stdout);
  fio_start(.threads = 1, .workers = 1);
  fio_tls_destroy(tls);
  return 0;
}
