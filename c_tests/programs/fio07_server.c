/*
 * fio07_server.c -- a facil.io 0.7.6 (release API) program for the API07
 * suite (suites/test_api07.py), the side-by-side probes (make compare07) and
 * the release-build bench rows (make bench07).
 *
 * It includes facil.io 0.7.6's own fio_tls.h and nothing of ours, so the
 * same object links against libfio_tls07 (static, shared, LD_PRELOAD) and
 * against facil.io's own OpenSSL backend (build-openssl, -lssl -lcrypto).
 * Every listener binds 127.0.0.1 only. Lines on stdout: "READY <port>" once
 * listening, "STOPPED" after fio_start returned and the TLS object was
 * released; each mode prints what it saw, one fact a line.
 *
 *   fio07_server [-l LOG_LEVEL] [-t THREADS] [-w WORKERS] [-f FILE]
 *                [--password PW] [--trust CA[,CA]...] MODE PORT ARGS...
 *
 *   https PORT NAME CERT KEY [NAME CERT KEY]...
 *       http_listen(.tls) over fio_tls_new(NAME, CERT, KEY, PW), then one
 *       fio_tls_cert_add per further triple (SNI). "-" passes NULL (NAME with
 *       CERT and KEY "-": a self-signed certificate). --password PW is every
 *       triple's pk_password; --trust CA[,CA]... calls fio_tls_trust once per
 *       CA file in that order ("system": NULL) for mTLS. Prints
 *       "TLS_NEW object|null" (null: it prints "NOT_LISTENING" and returns).
 *       GET / answers "hello fio07\n"; GET /ws upgrades to a websocket that
 *       echoes each message back prefixed with "echo:".
 *   plain PORT
 *       the routes of "https" over plain HTTP (no TLS object): a baseline.
 *   alpn PORT CERT KEY
 *       fio_listen(.tls) with no on_open: the ALPN callbacks attach the
 *       protocol. fio_tls_alpn_add "echo-a" twice (the first registration
 *       with udata_tls "a-old", replaced by "a-new"), then "echo-b" ("b").
 *       The connection's udata is "conn-udata". on_selected prints
 *       "SELECTED <proto> conn=<udata_connection> tls=<udata_tls>" and
 *       attaches an echo protocol that prefixes every chunk "<proto>:";
 *       on_cleanup prints "CLEANUP <udata_tls>". Prints "ALPN_COUNT <n>"
 *       after each fio_tls_alpn_add.
 *   refs
 *       no network: fio_tls_new, one protocol with on_cleanup, then
 *       fio_tls_dup twice and fio_tls_destroy three times, printing
 *       "STEP <what> cleanups=<n>" after each call.
 *   bench PORT KEY CERT
 *       the bench server (bench/bench.py): fio_tls_new("localhost", CERT,
 *       KEY, NULL); GET /1m a 1 MiB body of 'x' from memory, anything else
 *       the 64-byte body of bench/nginx.conf. -f FILE is accepted and unused.
 */
#include <fio.h>
#include <fio_tls.h>
#include <http.h>

#include "fio07_args.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *listen_port;
static const char *key_password; /* --password */
static const char *trust_ca;     /* --trust */
static fio_tls_s *server_tls;    /* destroyed after fio_start returns */
static int threads = 1;
static int workers = 1;

static const char *arg(const char *a) { return strcmp(a, "-") ? a : NULL; }

/* one line on stdout, flushed at once (the driver reads the log live) */
#define SAY(...)                                                               \
  do {                                                                         \
    printf(__VA_ARGS__);                                                       \
    fflush(stdout);                                                            \
  } while (0)

static void print_ready(void *ignored) {
  (void)ignored;
  SAY("READY %s\n", listen_port);
}

/* ------------------------------------------------------------------------
 * https: HTTP and a websocket echo over TLS
 * --------------------------------------------------------------------- */
static void ws_echo(ws_s *ws, fio_str_info_s msg, uint8_t is_text) {
  char *buf = malloc(msg.len + 5);
  if (!buf) {
    websocket_close(ws);
    return;
  }
  memcpy(buf, "echo:", 5);
  memcpy(buf + 5, msg.data, msg.len);
  websocket_write(ws, (fio_str_info_s){.data = buf, .len = msg.len + 5},
                  is_text);
  free(buf);
}

static void on_https_request(http_s *h) {
  static const char hello[] = "hello fio07\n";
  http_send_body(h, (void *)hello, sizeof(hello) - 1);
}

static void on_https_upgrade(http_s *h, char *protocol, size_t len) {
  if (len == 9 && !memcmp(protocol, "websocket", 9)) {
    http_upgrade2ws(h, .on_message = ws_echo);
    return;
  }
  http_send_error(h, 400);
}

static int start_https(char **a, int n) {
  if (n == 0) /* mode plain: the same routes without TLS (a baseline) */
    return http_listen(listen_port, "127.0.0.1",
                       .on_request = on_https_request,
                       .on_upgrade = on_https_upgrade, .timeout = 10) == -1
               ? -1
               : 0;
  if (n < 3 || n % 3)
    return -1;
  server_tls = fio_tls_new(arg(a[0]), arg(a[1]), arg(a[2]), key_password);
  SAY("TLS_NEW %s\n", server_tls ? "object" : "null");
  if (!server_tls) {
    SAY("NOT_LISTENING\n");
    return 1;
  }
  for (int i = 3; i < n; i += 3)
    fio_tls_cert_add(server_tls, arg(a[i]), arg(a[i + 1]), arg(a[i + 2]),
                     key_password);
  for (const char *ca = trust_ca; ca && *ca;) {
    size_t len = strcspn(ca, ",");
    char file[4096];
    snprintf(file, sizeof(file), "%.*s", (int)len, ca);
    fio_tls_trust(server_tls, strcmp(file, "system") ? file : NULL);
    ca += len + (ca[len] == ',');
  }
  return http_listen(listen_port, "127.0.0.1", .on_request = on_https_request,
                     .on_upgrade = on_https_upgrade, .tls = server_tls,
                     .timeout = 10) == -1
             ? -1
             : 0;
}

/* ------------------------------------------------------------------------
 * alpn: udata_tls, udata_connection and on_cleanup as the callbacks see them
 * --------------------------------------------------------------------- */
typedef struct {
  fio_protocol_s pr;
  const char *prefix;
} echo_s;

static void echo_on_data(intptr_t uuid, fio_protocol_s *pr) {
  echo_s *e = (echo_s *)pr;
  char in[4096], out[4096 + 16];
  ssize_t got = fio_read(uuid, in, sizeof(in));
  if (got <= 0)
    return;
  int head = snprintf(out, 16, "%s:", e->prefix);
  memcpy(out + head, in, (size_t)got);
  fio_write(uuid, out, (size_t)got + head);
}

static void echo_on_close(intptr_t uuid, fio_protocol_s *pr) {
  (void)uuid;
  free(pr);
}

static const char conn_udata[] = "conn-udata";

static void on_alpn_selected(const char *proto, intptr_t uuid, void *conn,
                             void *udata_tls) {
  SAY("SELECTED %s conn=%s tls=%s\n", proto, conn ? (char *)conn : "NULL",
      udata_tls ? (char *)udata_tls : "NULL");
  echo_s *e = calloc(1, sizeof(*e));
  if (!e) {
    fio_close(uuid);
    return;
  }
  e->pr.on_data = echo_on_data;
  e->pr.on_close = echo_on_close;
  e->prefix = proto;
  fio_attach(uuid, &e->pr);
}

static void on_echo_a(intptr_t uuid, void *conn, void *udata_tls) {
  on_alpn_selected("echo-a", uuid, conn, udata_tls);
}
static void on_echo_b(intptr_t uuid, void *conn, void *udata_tls) {
  on_alpn_selected("echo-b", uuid, conn, udata_tls);
}
static void on_alpn_cleanup(void *udata_tls) {
  SAY("CLEANUP %s\n", udata_tls ? (char *)udata_tls : "NULL");
}

static void alpn_add(fio_tls_s *tls, const char *name,
                     void (*cb)(intptr_t, void *, void *), const char *udata) {
  fio_tls_alpn_add(tls, name, cb, (void *)udata, on_alpn_cleanup);
  SAY("ALPN_COUNT %lu after %s (%s)\n", (unsigned long)fio_tls_alpn_count(tls),
      name, udata);
}

static int start_alpn(char **a, int n) {
  if (n != 2)
    return -1;
  server_tls = fio_tls_new("localhost", a[0], a[1], key_password);
  if (!server_tls)
    return -1;
  alpn_add(server_tls, "echo-a", on_echo_a, "a-old");
  alpn_add(server_tls, "echo-a", on_echo_a, "a-new");
  alpn_add(server_tls, "echo-b", on_echo_b, "b");
  return fio_listen(.port = listen_port, .address = "127.0.0.1",
                    .tls = server_tls, .udata = (void *)conn_udata) == -1
             ? -1
             : 0;
}

/* ------------------------------------------------------------------------
 * refs: fio_tls_dup / fio_tls_destroy counting
 * --------------------------------------------------------------------- */
static int refs_cleanups;
static void refs_cleanup(void *udata_tls) {
  (void)udata_tls;
  ++refs_cleanups;
}

static void refs_step(const char *what) {
  SAY("STEP %s cleanups=%d\n", what, refs_cleanups);
}

static int run_refs(void) {
  fio_tls_s *tls = fio_tls_new(NULL, NULL, NULL, NULL);
  if (!tls)
    return -1;
  fio_tls_alpn_add(tls, "refs", NULL, NULL, refs_cleanup);
  refs_step("new+alpn_add");
  fio_tls_dup(tls);
  refs_step("dup1");
  fio_tls_dup(tls);
  refs_step("dup2");
  fio_tls_destroy(tls);
  refs_step("destroy1");
  fio_tls_destroy(tls);
  refs_step("destroy2");
  fio_tls_destroy(tls); /* the last reference */
  refs_step("destroy3");
  return 0;
}

/* ------------------------------------------------------------------------
 * bench: the routes of bench/bench.py
 * --------------------------------------------------------------------- */
static const char bench_body64[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
#define BENCH_BIG_LEN (1024 * 1024)
static char *bench_big;

static void on_bench_request(http_s *h) {
  if (fiobj_obj2cstr(h->path).len == 3 &&
      !memcmp(fiobj_obj2cstr(h->path).data, "/1m", 3)) {
    http_send_body(h, bench_big, BENCH_BIG_LEN);
    return;
  }
  http_send_body(h, (void *)bench_body64, sizeof(bench_body64) - 1);
}

static int start_bench(char **a, int n) {
  if (n != 2)
    return -1;
  bench_big = malloc(BENCH_BIG_LEN);
  if (!bench_big)
    return -1;
  memset(bench_big, 'x', BENCH_BIG_LEN);
  server_tls = fio_tls_new("localhost", a[1], a[0], NULL);
  if (!server_tls)
    return -1;
  return http_listen(listen_port, "127.0.0.1", .on_request = on_bench_request,
                     .tls = server_tls) == -1
             ? -1
             : 0;
}

static int usage(const char *prog) {
  return fio07_usage(prog, "[-l LEVEL] [-t THREADS] [-w WORKERS] [-f FILE] [--password PW] "
                     "[--trust CA[,CA]...] https|plain|alpn|refs|bench PORT ARGS...");
}

/* facil.io 0.7.6 never joins the root's sentinel threads (one per
 * worker): at shutdown fio_worker_cleanup reaps the workers itself with
 * wait(), the sentinels' waitpid() then fails, and they go on to read
 * fio_data while the root may already be unmapping it in its destructor
 * fio_lib_destroy: a SIGSEGV in fio_sentinel_worker_thread at exit (seen
 * about once in 30 stops of `-w 2`, with no TLS code on either thread).
 * The root therefore waits, at most 2 s, until its other threads are
 * gone before it returns from main. */
static int other_threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = -1;
  if (!d)
    return 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void wait_for_sentinels(void) {
  for (int i = 0; i < 200 && other_threads() > 0; ++i)
    usleep(10000);
}

int main(int argc, char **argv) {
  const char *threads_arg = "1", *workers_arg = "1", *file_arg = NULL;
  const fio07_option_s options[] = {
      {"-t", &threads_arg},       {"-w", &workers_arg},
      {"-f", &file_arg},          {"--password", &key_password},
      {"--trust", &trust_ca},     {NULL, NULL}};
  int i = fio07_parse(argc, argv, options);
  if (i < 0)
    return usage(argv[0]);
  threads = atoi(threads_arg);
  workers = atoi(workers_arg);
  (void)file_arg; /* bench.py passes it to every bench server */
  if (i >= argc)
    return usage(argv[0]);
  const char *mode = argv[i++];
  if (!strcmp(mode, "refs"))
    return run_refs() ? 1 : 0;
  if (i >= argc)
    return usage(argv[0]);
  listen_port = argv[i++];
  char **rest = argv + i;
  int n = argc - i;
  int r;
  if (!strcmp(mode, "https"))
    r = n ? start_https(rest, n) : -1;
  else if (!strcmp(mode, "plain"))
    r = n ? -1 : start_https(rest, 0);
  else if (!strcmp(mode, "alpn"))
    r = start_alpn(rest, n);
  else if (!strcmp(mode, "bench"))
    r = start_bench(rest, n);
  else
    return usage(argv[0]);
  if (r > 0)
    return 0;
  if (r < 0) {
    fprintf(stderr, "fio07_server: mode %s failed to start\n", mode);
    if (server_tls)
      fio_tls_destroy(server_tls);
    return 1;
  }
  fio_state_callback_add(FIO_CALL_ON_START, print_ready, NULL);
  fio_start(.threads = threads, .workers = workers);
  if (workers > 1 && getpid() == fio_parent_pid())
    wait_for_sentinels();
  SAY("DESTROY\n");
  fio_tls_destroy(server_tls);
  free(bench_big);
  SAY("STOPPED\n");
  return 0;
}
