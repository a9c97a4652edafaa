/*
 * fio_server.c -- a facil.io 0.7.0.beta4 program that exercises libfio_tls.
 *
 * The integration driver (facil_suite.py) starts this program in one of the
 * modes below and talks to it with real TLS peers (curl, openssl s_client,
 * gnutls-cli). Every listener binds 127.0.0.1 only.
 *
 *   fio_server [-t THREADS] [-l LOG_LEVEL] [-p PUBLIC_DIR] [--trust CA]
 *              [-f FILE] MODE PORT ARGS...
 *
 *   --trust CA calls fio_tls_trust(tls, CA) on the mode's TLS object (modes
 *   selfsigned, certs, echo): mutual TLS. CA "system" passes NULL.
 *
 *   selfsigned PORT [NAME]
 *       http_listen with fio_tls_new(NAME, NULL, NULL); NAME "-" or no NAME
 *       passes NULL (the library then certifies "localhost").
 *   certs PORT NAME KEY CERT [NAME KEY CERT]...
 *       http_listen with fio_tls_new(first triple), then one
 *       fio_tls_cert_add per further triple (SNI).
 *   echo PORT NAME KEY CERT [NAME KEY CERT]...
 *       raw fio_listen whose on_open calls fio_tls_accept, certificates as
 *       in "certs"; one protocol "echo" sends every byte back unchanged.
 *   alpn PORT [once]
 *       raw fio_listen whose on_open calls fio_tls_accept. Protocols
 *       "echo-a" (added twice: the second callback must win) and "echo-b"
 *       echo every chunk back prefixed with "a:" / "b:". With "once", the
 *       TLS object is destroyed right after the first fio_tls_accept and
 *       later connections are closed unanswered.
 *   pair PORT PORT2 NAME KEY CERT   (needs --trust CA)
 *       two TLS objects with the same certificate: http_listen on PORT with
 *       one that verifies no peer, on PORT2 with one that requires client
 *       certificates (fio_tls_trust). A session of PORT must not get a
 *       client past PORT2's verification.
 *   badinput PORT KEY CERT GARBAGE OTHER_KEY ENCRYPTED_KEY DIRECTORY MISSING
 *       calls the API with bad arguments, printing "CASE <name> -" before
 *       and "RESULT <name> <what>" after each call, then serves HTTPS with
 *       fio_tls_new("localhost", KEY, CERT).
 *   scale PORT DIR COUNT
 *       http_listen with COUNT names n0.scale.test .. n<COUNT-1>.scale.test:
 *       fio_tls_new("n0.scale.test", DIR/n0.key, DIR/n0.crt), then one
 *       fio_tls_cert_add per further name with DIR/n<i>.key, DIR/n<i>.crt.
 *       Prints "ADDED <COUNT> <seconds>" (the time of the whole loop,
 *       fio_tls_new included) before READY.
 *   bench PORT [KEY CERT]
 *       the server of the benchmarks (bench/bench.py): http_listen over
 *       fio_tls_new("localhost", KEY, CERT), or plaintext HTTP/1.1 without
 *       KEY and CERT, with its own lean routes (no extra headers, no public
 *       folder): GET /1m a 1 MiB body of 'x' from memory (http_send_body
 *       copies it per response), GET /1m-file the file of -f FILE, opened
 *       per request and sent with http_sendfile (facil.io 0.7.0.beta4
 *       stalls the next response on a keep-alive connection with rw hooks
 *       after it: see bench/README.md), anything else the same 64-byte body
 *       as bench/nginx.conf. The bench runs it with the default -t 1.
 *
 * The other HTTP modes answer: GET /big with 1,000,000 bytes ("%09u\n" lines
 * 0..99999), a POST with "received N bytes fnv1a=XXXXXXXX\n", anything else
 * with HELLO_BODY. -p serves static files from PUBLIC_DIR first.
 *
 * Lines on stdout, for the driver: "READY <port>" once listening,
 * "CALLBACK <protocol> <prefix>" each time an ALPN callback runs,
 * "DESTROYED tls after-first-accept" (alpn once), "STOPPED" after fio_start
 * returned and the TLS objects were destroyed. stdout is unbuffered so that
 * these interleave correctly with the library's log lines on stderr.
 */
#include <fio.h>
#include <fiobj.h>
#include <http.h>

#include "fio_tls.h"
#include "preload_trust.h" /* HAVE_TRUST(): fio_tls_trust, weak in the preload build */

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "https_headers.h"

#define HELLO_BODY "Hello from facil.io over fio_tls\n"
#define BIG_LINES 100000

static const char *listen_port;
static const char *public_dir;
static fio_tls_s *http_tls; /* destroyed after fio_start returns */
static const char *trust_ca; /* --trust */

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/* Prints "WORD NAME DETAIL"; stdout is unbuffered (see main). */
static void mark(const char *word, const char *name, const char *detail) {
  printf("%s %s %s\n", word, name, detail);
}

static void print_ready(void *ignored) {
  (void)ignored;
  printf("READY %s\n", listen_port);
}

static uint32_t fnv1a(const char *data, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; ++i) {
    h ^= (uint8_t)data[i];
    h *= 16777619u;
  }
  return h;
}

static int fiobj_equals(FIOBJ o, const char *text) {
  fio_str_info_s s = fiobj_obj2cstr(o);
  return s.len == strlen(text) && memcmp(s.data, text, s.len) == 0;
}

/* ---------------------------------------------------------------------------
 * HTTP application (modes selfsigned, certs, badinput)
 * ------------------------------------------------------------------------ */

static void send_big(http_s *h) {
  const size_t line = 10;
  char *buf = malloc(BIG_LINES * line + 1);
  if (!buf) {
    http_send_error(h, 500);
    return;
  }
  for (unsigned i = 0; i < BIG_LINES; ++i)
    snprintf(buf + i * line, line + 1, "%09u\n", i);
  http_send_body(h, buf, BIG_LINES * line);
  free(buf);
}

static void on_http_request(http_s *h) {
  set_https_headers(h);
  if (fiobj_equals(h->method, "POST")) {
    char reply[80];
    size_t len = 0;
    uint32_t sum = fnv1a("", 0);
    if (h->body) {
      len = (size_t)fiobj_data_len(h->body);
      fio_str_info_s s = fiobj_data_pread(h->body, 0, len);
      len = s.len;
      sum = fnv1a(s.data, s.len);
    }
    int n = snprintf(reply, sizeof(reply), "received %zu bytes fnv1a=%08x\n",
                     len, (unsigned)sum);
    http_send_body(h, reply, (uintptr_t)n);
    return;
  }
  if (fiobj_equals(h->path, "/big")) {
    send_big(h);
    return;
  }
  http_set_header(h, HTTP_HEADER_CONTENT_TYPE,
                  http_mimetype_find("txt", 3));
  http_send_body(h, HELLO_BODY, sizeof(HELLO_BODY) - 1);
}

/* http_listen on 127.0.0.1:port with the HTTP routes above */
static int listen_https(const char *port, fio_tls_s *tls) {
  intptr_t uuid = http_listen(port, "127.0.0.1", .on_request = on_http_request,
                              .tls = tls, .public_folder = public_dir,
                              .public_folder_length =
                                  public_dir ? strlen(public_dir) : 0);
  if (uuid == -1) {
    fprintf(stderr, "fio_server: http_listen on port %s failed: %s\n", port,
            strerror(errno));
    return -1;
  }
  return 0;
}

static int start_https(fio_tls_s *tls) {
  if (listen_https(listen_port, tls))
    return -1;
  http_tls = tls;
  return 0;
}

/* ---------------------------------------------------------------------------
 * ALPN echo application (mode alpn)
 * ------------------------------------------------------------------------ */

typedef struct {
  fio_protocol_s pr;
  const char *prefix;
} echo_protocol_s;

static fio_tls_s *alpn_tls;
static int alpn_once;

static void echo_on_data(intptr_t uuid, fio_protocol_s *pr) {
  echo_protocol_s *echo = (echo_protocol_s *)pr;
  char buf[4096 + 8];
  size_t plen = strlen(echo->prefix);
  ssize_t n;
  memcpy(buf, echo->prefix, plen);
  while ((n = fio_read(uuid, buf + plen, sizeof(buf) - plen)) > 0)
    fio_write(uuid, buf, plen + (size_t)n);
}

static void echo_on_close(intptr_t uuid, fio_protocol_s *pr) {
  (void)uuid;
  free(pr);
}

static void attach_echo(intptr_t uuid, const char *name, const char *prefix) {
  echo_protocol_s *echo = malloc(sizeof(*echo));
  if (!echo) {
    fio_close(uuid);
    return;
  }
  *echo = (echo_protocol_s){
      .pr = {.on_data = echo_on_data, .on_close = echo_on_close},
      .prefix = prefix,
  };
  /* the driver counts these lines: one per completed handshake */
  mark("CALLBACK", name, *prefix ? prefix : "exact");
  fio_attach(uuid, &echo->pr);
}

static void on_alpn_a_stale(intptr_t uuid, void *udata) {
  (void)udata;
  attach_echo(uuid, "echo-a", "stale:");
}

static void on_alpn_a(intptr_t uuid, void *udata) {
  if (udata != (void *)&alpn_tls) /* udata must be what on_open passed */
    mark("CALLBACK", "echo-a", "wrong-udata");
  attach_echo(uuid, "echo-a", "a:");
}

static void on_alpn_b(intptr_t uuid, void *udata) {
  if (udata != (void *)&alpn_tls)
    mark("CALLBACK", "echo-b", "wrong-udata");
  attach_echo(uuid, "echo-b", "b:");
}

static void on_raw_open(intptr_t uuid, void *udata) {
  (void)udata;
  if (!alpn_tls) {
    fio_close(uuid);
    return;
  }
  fio_tls_accept(uuid, alpn_tls, (void *)&alpn_tls);
  if (alpn_once) {
    /* the connection just accepted must survive its object's destruction */
    fio_tls_destroy(alpn_tls);
    alpn_tls = NULL;
    mark("DESTROYED", "tls", "after-first-accept");
  }
}

static int start_alpn(void) {
  alpn_tls = fio_tls_new("localhost", NULL, NULL);
  if (!alpn_tls)
    return -1;
  fio_tls_proto_add(alpn_tls, "echo-a", on_alpn_a_stale);
  fio_tls_proto_add(alpn_tls, "echo-a", on_alpn_a);
  fio_tls_proto_add(alpn_tls, "echo-b", on_alpn_b);
  if (fio_listen(.port = listen_port, .address = "127.0.0.1",
                 .on_open = on_raw_open) == -1) {
    fprintf(stderr, "fio_server: fio_listen on port %s failed: %s\n",
            listen_port, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------
 * Exact echo over TLS (mode echo)
 * ------------------------------------------------------------------------ */

static fio_tls_s *echo_tls;

static void on_echo(intptr_t uuid, void *udata) {
  if (udata != (void *)&echo_tls)
    mark("CALLBACK", "echo", "wrong-udata");
  attach_echo(uuid, "echo", "");
}

static void on_echo_open(intptr_t uuid, void *udata) {
  (void)udata;
  fio_tls_accept(uuid, echo_tls, (void *)&echo_tls);
}

static int start_echo(fio_tls_s *tls) {
  echo_tls = tls;
  fio_tls_proto_add(tls, "echo", on_echo);
  if (fio_listen(.port = listen_port, .address = "127.0.0.1",
                 .on_open = on_echo_open) == -1) {
    fprintf(stderr, "fio_server: fio_listen on port %s failed: %s\n",
            listen_port, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------
 * Bad input (mode badinput)
 * ------------------------------------------------------------------------ */

static void ignore_protocol(intptr_t uuid, void *udata) {
  (void)udata;
  fio_close(uuid);
}

/* one end of a fresh socket pair, as a facil.io uuid (-1 on failure) */
static intptr_t connected_uuid(void) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair))
    return -1;
  close(pair[1]); /* the peer is gone; the uuid itself stays valid */
  fio_set_non_block(pair[0]);
  return fio_fd2uuid(pair[0]);
}

static void result_tls(const char *name, fio_tls_s *tls) {
  mark("RESULT", name, tls ? "object" : "NULL");
  if (tls)
    fio_tls_destroy(tls);
}

static int start_badinput(char **a) {
  const char *key = a[0], *cert = a[1], *garbage = a[2], *other_key = a[3],
             *encrypted_key = a[4], *directory = a[5], *missing = a[6];
  fio_tls_s *t;

  mark("CASE", "new-missing-key", "-");
  t = fio_tls_new("localhost", missing, cert);
  result_tls("new-missing-key", t);

  mark("CASE", "new-missing-cert", "-");
  t = fio_tls_new("localhost", key, missing);
  result_tls("new-missing-cert", t);

  mark("CASE", "new-directory-cert", "-");
  t = fio_tls_new("localhost", key, directory);
  result_tls("new-directory-cert", t);

  mark("CASE", "new-garbage-key", "-");
  t = fio_tls_new("localhost", garbage, cert);
  result_tls("new-garbage-key", t);

  mark("CASE", "new-garbage-cert", "-");
  t = fio_tls_new("localhost", key, garbage);
  result_tls("new-garbage-cert", t);

  mark("CASE", "new-mismatched-key", "-");
  t = fio_tls_new("localhost", other_key, cert);
  result_tls("new-mismatched-key", t);

  mark("CASE", "new-encrypted-key", "-");
  t = fio_tls_new("localhost", encrypted_key, cert);
  result_tls("new-encrypted-key", t);

  mark("CASE", "new-key-without-cert", "-");
  t = fio_tls_new("localhost", key, NULL);
  result_tls("new-key-without-cert", t);

  mark("CASE", "new-null-name-selfsigned", "-");
  t = fio_tls_new(NULL, NULL, NULL);
  result_tls("new-null-name-selfsigned", t);

  /* the object that will serve: nothing below may change what it serves */
  fio_tls_s *good = fio_tls_new("localhost", key, cert);
  if (!good) {
    mark("RESULT", "good-object", "NULL");
    return -1;
  }

  mark("CASE", "cert-add-missing", "-");
  fio_tls_cert_add(good, "bad.test", missing, cert);
  mark("RESULT", "cert-add-missing", "returned");

  mark("CASE", "cert-add-garbage", "-");
  fio_tls_cert_add(good, "bad.test", key, garbage);
  mark("RESULT", "cert-add-garbage", "returned");

  mark("CASE", "cert-add-mismatched-key", "-");
  fio_tls_cert_add(good, "bad.test", other_key, cert);
  mark("RESULT", "cert-add-mismatched-key", "returned");

  mark("CASE", "cert-add-null-tls", "-");
  fio_tls_cert_add(NULL, "bad.test", key, cert);
  mark("RESULT", "cert-add-null-tls", "returned");

  mark("CASE", "proto-add-null-tls", "-");
  fio_tls_proto_add(NULL, "bad-proto", ignore_protocol);
  mark("RESULT", "proto-add-null-tls", "returned");

  mark("CASE", "proto-add-null-name", "-");
  fio_tls_proto_add(good, NULL, ignore_protocol);
  mark("RESULT", "proto-add-null-name", "returned");

  /* real, connected uuids, so that only the tls argument is wrong */
  intptr_t uuid = connected_uuid();
  mark("CASE", "accept-null-tls", "-");
  fio_tls_accept(uuid, NULL, NULL);
  mark("RESULT", "accept-null-tls", "returned");
  fio_force_close(uuid);

  uuid = connected_uuid();
  mark("CASE", "connect-null-tls", "-");
  fio_tls_connect(uuid, NULL, NULL);
  mark("RESULT", "connect-null-tls", "returned");
  fio_force_close(uuid);

  mark("CASE", "destroy-null", "-");
  fio_tls_destroy(NULL);
  mark("RESULT", "destroy-null", "returned");

  return start_https(good);
}

/* ---------------------------------------------------------------------------
 * Benchmark application (mode bench)
 * ------------------------------------------------------------------------ */

/* 64 bytes exactly (63 characters and a newline); bench.py checks it */
static const char bench_body64[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
_Static_assert(sizeof(bench_body64) - 1 == 64, "the bench body is 64 bytes");
#define BENCH_BIG_LEN (1024 * 1024)
static char *bench_big;        /* the GET /1m body, freed after fio_start */
static const char *bench_file; /* -f: the GET /1m-file file */

/* the request handler whose cost the bench measures: keep it lean */
static void on_bench_request(http_s *h) {
  fio_str_info_s path = fiobj_obj2cstr(h->path);
  http_set_header(h, HTTP_HEADER_CONTENT_TYPE, http_mimetype_find("txt", 3));
  if (path.len == 8 && !memcmp(path.data, "/1m-file", 8) && bench_file) {
    int fd = open(bench_file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd == -1 || fstat(fd, &st) == -1) {
      if (fd != -1)
        close(fd);
      http_send_error(h, 500);
      return;
    }
    http_sendfile(h, fd, (uintptr_t)st.st_size, 0); /* closes fd */
  } else if (path.len == 3 && !memcmp(path.data, "/1m", 3))
    http_send_body(h, bench_big, BENCH_BIG_LEN);
  else
    http_send_body(h, (void *)bench_body64, sizeof(bench_body64) - 1);
}

/* a: [KEY CERT] (n is 0 or 2) */
static int start_bench(char **a, int n) {
  bench_big = malloc(BENCH_BIG_LEN);
  if (!bench_big)
    return -1;
  memset(bench_big, 'x', BENCH_BIG_LEN);
  fio_tls_s *tls = NULL;
  if (n == 2 && !(tls = fio_tls_new("localhost", a[0], a[1])))
    return -1;
  if (http_listen(listen_port, "127.0.0.1", .on_request = on_bench_request,
                  .tls = tls) == -1) {
    fprintf(stderr, "fio_server: http_listen on port %s failed: %s\n",
            listen_port, strerror(errno));
    fio_tls_destroy(tls);
    return -1;
  }
  http_tls = tls;
  return 0;
}

/* ---------------------------------------------------------------------------
 * Many names (mode scale)
 * ------------------------------------------------------------------------ */

static int start_scale(const char *dir, const char *count_arg) {
  char *end = NULL;
  long count = strtol(count_arg, &end, 10);
  if (!end || *end || count < 1 || count > 1000000)
    return -1;
  size_t cap = strlen(dir) + 64;
  char *key = malloc(cap), *cert = malloc(cap), name[64];
  if (!key || !cert) {
    free(key);
    free(cert);
    return -1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fio_tls_s *tls = NULL;
  for (long i = 0; i < count; ++i) {
    snprintf(name, sizeof(name), "n%ld.scale.test", i);
    snprintf(key, cap, "%s/n%ld.key", dir, i);
    snprintf(cert, cap, "%s/n%ld.crt", dir, i);
    if (i == 0) {
      if (!(tls = fio_tls_new(name, key, cert)))
        break;
    } else {
      fio_tls_cert_add(tls, name, key, cert);
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  free(key);
  free(cert);
  if (!tls)
    return -1;
  printf("ADDED %ld %.6f\n", count,
         (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return start_https(tls);
}

/* ---------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------ */

/* applies --trust to a new TLS object */
static fio_tls_s *trusting(fio_tls_s *tls) {
  if (tls && trust_ca && !HAVE_TRUST()) {
    fprintf(stderr, "fio_server: fio_tls_trust is not available\n");
    fio_tls_destroy(tls);
    return NULL;
  }
  if (tls && trust_ca)
    fio_tls_trust(tls, strcmp(trust_ca, "system") ? trust_ca : NULL);
  return tls;
}

static fio_tls_s *pair_tls;

/* mode pair: `open` on listen_port, `verifying` on port2 */
static int start_pair(fio_tls_s *open, fio_tls_s *verifying, const char *port2) {
  if (start_https(open) || listen_https(port2, verifying))
    return -1;
  pair_tls = verifying;
  return 0;
}

static int usage(const char *prog) {
  fprintf(stderr,
          "usage: %s [-t THREADS] [-l LOG_LEVEL] [-p PUBLIC_DIR] [--trust CA] "
          "[-f FILE] MODE PORT ARGS...\n"
          "modes: selfsigned PORT [NAME|-]\n"
          "       certs PORT NAME KEY CERT [NAME KEY CERT]...\n"
          "       echo PORT NAME KEY CERT [NAME KEY CERT]...\n"
          "       alpn PORT [once]\n"
          "       pair PORT PORT2 NAME KEY CERT (with --trust CA)\n"
          "       badinput PORT KEY CERT GARBAGE OTHER_KEY ENCRYPTED_KEY "
          "DIRECTORY MISSING\n"
          "       scale PORT DIR COUNT\n"
          "       bench PORT [KEY CERT] (-f FILE: the file of GET /1m-file)\n",
          prog);
  return 2;
}

int main(int argc, char **argv) {
  int threads = 1;
  int i = 1;
  setvbuf(stdout, NULL, _IONBF, 0);

  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    if (!strcmp(argv[i], "-t"))
      threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-l"))
      FIO_LOG_LEVEL = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-p"))
      public_dir = argv[i + 1];
    else if (!strcmp(argv[i], "--trust"))
      trust_ca = argv[i + 1];
    else if (!strcmp(argv[i], "-f"))
      bench_file = argv[i + 1];
    else
      return usage(argv[0]);
  }
  if (argc - i < 2 || threads < 1)
    return usage(argv[0]);

  const char *mode = argv[i];
  listen_port = argv[i + 1];
  char **rest = argv + i + 2;
  int nrest = argc - i - 2;
  int rc;

  if (bench_file && strcmp(mode, "bench"))
    return usage(argv[0]); /* -f belongs to mode bench */
  if (!strcmp(mode, "selfsigned") && nrest <= 1) {
    const char *name = NULL;
    if (nrest == 1 && strcmp(rest[0], "-"))
      name = rest[0];
    fio_tls_s *tls = trusting(fio_tls_new(name, NULL, NULL));
    rc = tls ? start_https(tls) : -1;
  } else if ((!strcmp(mode, "certs") || !strcmp(mode, "echo")) && nrest >= 3 &&
             nrest % 3 == 0) {
    fio_tls_s *tls = fio_tls_new(rest[0], rest[1], rest[2]);
    for (int k = 3; tls && k < nrest; k += 3)
      fio_tls_cert_add(tls, rest[k], rest[k + 1], rest[k + 2]);
    tls = trusting(tls);
    rc = !tls ? -1 : !strcmp(mode, "echo") ? start_echo(tls) : start_https(tls);
  } else if (!strcmp(mode, "alpn") && nrest <= 1) {
    alpn_once = (nrest == 1 && !strcmp(rest[0], "once"));
    rc = start_alpn();
  } else if (!strcmp(mode, "pair") && nrest == 4 && trust_ca) {
    fio_tls_s *open = fio_tls_new(rest[1], rest[2], rest[3]);
    fio_tls_s *verifying = trusting(fio_tls_new(rest[1], rest[2], rest[3]));
    rc = (open && verifying) ? start_pair(open, verifying, rest[0]) : -1;
  } else if (!strcmp(mode, "badinput") && nrest == 7) {
    rc = start_badinput(rest);
  } else if (!strcmp(mode, "scale") && nrest == 2) {
    rc = start_scale(rest[0], rest[1]);
  } else if (!strcmp(mode, "bench") && (nrest == 0 || nrest == 2)) {
    rc = start_bench(rest, nrest);
  } else {
    return usage(argv[0]);
  }
  if (rc) {
    fprintf(stderr, "fio_server: mode %s could not start\n", mode);
    return 1;
  }

  fio_state_callback_add(FIO_CALL_ON_START, print_ready, NULL);
  fio_start(.threads = (int16_t)threads, .workers = 1);
  if (http_tls)
    fio_tls_destroy(http_tls);
  if (alpn_tls)
    fio_tls_destroy(alpn_tls);
  if (echo_tls)
    fio_tls_destroy(echo_tls);
  if (pair_tls)
    fio_tls_destroy(pair_tls);
  free(bench_big);
  printf("STOPPED\n");
  return 0;
}
