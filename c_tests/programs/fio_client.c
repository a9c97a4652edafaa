/*
 * fio_client.c -- a facil.io 0.7.0.beta4 TLS client over libfio_tls.
 *
 * The client suite (c_tests/suites/test_client.py) runs it against real
 * TLS servers (openssl s_server, gnutls-serv, Python ssl servers,
 * fio_server).
 *
 *   fio_client [OPTIONS] raw HOST PORT
 *       fio_connect, then fio_tls_connect from on_connect. The ALPN
 *       protocol that runs attaches a protocol that writes the payload and
 *       counts what comes back.
 *   fio_client [OPTIONS] http URL
 *       http_connect(URL, .on_response, .tls): URL is "http://host:port/path"
 *       (facil.io 0.7.0.beta4 refuses https:// URLs; .tls makes it TLS).
 *
 * OPTIONS
 *   --name NAME        server_name for fio_tls_new (SNI and verification
 *                      name); default (or "-"): NULL
 *   --trust CA|system  fio_tls_trust(tls, CA), "system" passes NULL
 *   --cert KEY CERT    fio_tls_new(name, KEY, CERT): a client certificate
 *   --alpn NAME        fio_tls_proto_add(tls, NAME, cb) (raw; repeatable,
 *                      up to 4, in order); without any: one protocol "echo"
 *   --payload FILE     bytes to write once the protocol runs (raw)
 *   --expect N         close after N bytes came back (raw); default: wait
 *                      for the server to close
 *   --out FILE         write the received bytes (raw) / body (http) there
 *   --udata TEXT       the udata string given to fio_tls_connect (raw)
 *   --timeout SECONDS  give up after this long (default 10)
 *   --no-watchdog      do not stop when the connection closed and no
 *                      callback ran (NO-CALLBACK): only the application's
 *                      own callbacks (on_close, on_finish) or --timeout end
 *                      the run, as in a real program
 *   -l LEVEL           FIO_LOG_LEVEL
 *
 * Lines on stdout (unbuffered; the library logs on stderr):
 *   CONNECTED                    TCP connection made, fio_tls_connect called
 *   CONNECT-FAILED               fio_connect's on_fail ran
 *   PROTO <name> udata=<text>    an ALPN callback ran ("WRONG-UDATA" when
 *                                the pointer is not the one passed in);
 *                                http: "PROTO http/1.1 udata=-" when
 *                                on_response gets the empty handle
 *   HANDSHAKE-FAILED <name> udata=<text>
 *                                an ALPN callback ran on a closed uuid: the
 *                                library's way of telling a client that its
 *                                handshake failed (then, like a real
 *                                program, the callback attaches its
 *                                protocol and writes: CLOSED follows in raw
 *                                mode, NO-RESPONSE in http mode); http:
 *                                on_response got the empty handle with the
 *                                uuid closed
 *   STATUS <code>                (http) the response status
 *   CLOSED                       (raw) the application protocol's on_close
 *   NO-CALLBACK                  the connection has been closed for 100 ms
 *                                and no callback ran (the application was
 *                                never told; not with --no-watchdog)
 *   FINISH                       (http) http_connect's on_finish ran
 *   NO-RESPONSE                  (http) on_finish ran before any response
 *   TIMEOUT                      --timeout expired
 *   RESULT proto=<name|none> callbacks=N bytes=N fnv1a=XXXXXXXX
 *                                (callbacks: those on an open uuid)
 *   FDS start=N end=N            open descriptors in /proc/self/fd before
 *                                anything and after fio_start returned and
 *                                fio_tls_destroy ran; then one "FD <n> <target>"
 *                                line per descriptor not open at the start
 * Exit status: 0 when the run ended by itself (whatever happened on the
 * wire), 1 when setup failed, 2 on a usage error.
 */
#include <fio.h>
#include <fiobj.h>
#include <http.h>

#include "fio_tls.h"
#include "preload_trust.h" /* HAVE_TRUST(): fio_tls_trust, weak in the preload build */

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ALPN 4
#define MAX_FDS 1024

static struct {
  const char *name;
  const char *trust; /* NULL: no fio_tls_trust call */
  const char *key, *cert;
  const char *alpn[MAX_ALPN];
  int nalpn;
  const char *payload_path;
  char *payload;
  size_t payload_len;
  long long expect; /* -1: until the server closes */
  const char *out_path;
  const char *udata;
  int timeout;
  int no_watchdog;
} opt = {.expect = -1, .udata = "client-udata", .timeout = 10};

static fio_tls_s *tls;
static FILE *out;
static intptr_t conn_uuid = -1;
static int callbacks;        /* ALPN callbacks on an open uuid */
static int failed_callbacks; /* ALPN callbacks on a closed uuid */
static int closed_ticks;     /* ticks that saw the uuid closed, no callback */
static const char *proto_ran = "none";
static unsigned long long received;
static uint32_t sum = 2166136261u;
static struct timespec started;
static int stopping;

/* ---------------------------------------------------------------------------
 * helpers
 * ------------------------------------------------------------------------ */

static void fnv1a_update(const char *data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    sum ^= (uint8_t)data[i];
    sum *= 16777619u;
  }
}

static void take(const char *data, size_t len) {
  fnv1a_update(data, len);
  received += len;
  if (out && len && fwrite(data, 1, len, out) != len)
    fprintf(stderr, "fio_client: writing %s failed\n", opt.out_path);
}

/* open descriptors; `fds` receives their numbers (up to MAX_FDS) */
static int list_fds(int *fds) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  int own = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    int fd = atoi(e->d_name);
    if (fd == own)
      continue;
    if (fds && n < MAX_FDS)
      fds[n] = fd;
    ++n;
  }
  closedir(d);
  return n;
}

static double elapsed(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - started.tv_sec) +
         (double)(now.tv_nsec - started.tv_nsec) / 1e9;
}

static void stop(const char *why) {
  if (stopping)
    return;
  stopping = 1;
  if (why)
    printf("%s\n", why);
  fio_stop();
}

/* every 20 ms: a connection closed for 100 ms (5 ticks: the library's
 * callback after a failure is a deferred task, which may run after a tick
 * already queued) with no callback at all means the application was never
 * told */
static void tick(void *ignored) {
  (void)ignored;
  if (stopping)
    return;
  if (!opt.no_watchdog && conn_uuid != -1 && !callbacks && !failed_callbacks &&
      fio_is_closed(conn_uuid) && ++closed_ticks >= 5) {
    stop("NO-CALLBACK");
    return;
  }
  if (elapsed() > opt.timeout)
    stop("TIMEOUT");
}

static int read_file(const char *path, char **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *bigger = realloc(buf, cap * 2);
      if (!bigger)
        free(buf);
      buf = bigger;
      cap *= 2;
    }
  }
  fclose(f);
  if (!buf)
    return -1;
  *data = buf;
  *len = n;
  return 0;
}

/* ---------------------------------------------------------------------------
 * raw mode: fio_connect + fio_tls_connect + an application protocol
 * ------------------------------------------------------------------------ */

static void app_on_data(intptr_t uuid, fio_protocol_s *pr) {
  (void)pr;
  char buf[65536];
  ssize_t n;
  while ((n = fio_read(uuid, buf, sizeof(buf))) > 0) {
    take(buf, (size_t)n);
    if (opt.expect >= 0 && received >= (unsigned long long)opt.expect) {
      fio_close(uuid); /* close_notify, then close */
      return;
    }
  }
}

static void app_on_close(intptr_t uuid, fio_protocol_s *pr) {
  (void)uuid;
  (void)pr;
  printf("CLOSED\n");
  stop(NULL);
}

static fio_protocol_s app_protocol = {.on_data = app_on_data,
                                      .on_close = app_on_close};

static void proto_ran_cb(int index, intptr_t uuid, void *udata) {
  /* a closed uuid: the handshake failed (see fio_tls_proto_add) */
  int failed = fio_is_closed(uuid);
  if (failed) {
    ++failed_callbacks;
  } else {
    ++callbacks;
    proto_ran = opt.alpn[index];
  }
  printf("%s %s udata=%s\n", failed ? "HANDSHAKE-FAILED" : "PROTO",
         opt.alpn[index],
         udata == (void *)opt.udata ? opt.udata : "WRONG-UDATA");
  if (uuid != conn_uuid)
    printf("WRONG-UUID\n");
  /* what a program that does not look at fio_is_closed does: attach (its
   * on_close then runs at once) and write (nothing is sent) */
  fio_attach(uuid, &app_protocol);
  if (opt.payload_len)
    fio_write(uuid, opt.payload, opt.payload_len); /* copied */
  else if (opt.expect == 0)
    fio_close(uuid);
}

#define PROTO_CB(i)                                                            \
  static void proto_cb_##i(intptr_t uuid, void *udata) {                       \
    proto_ran_cb(i, uuid, udata);                                              \
  }
PROTO_CB(0)
PROTO_CB(1)
PROTO_CB(2)
PROTO_CB(3)
static void (*const proto_cbs[MAX_ALPN])(intptr_t, void *) = {
    proto_cb_0, proto_cb_1, proto_cb_2, proto_cb_3};

static void on_connect(intptr_t uuid, void *udata) {
  (void)udata;
  printf("CONNECTED\n");
  fio_tls_connect(uuid, tls, (void *)opt.udata);
}

static void on_fail(intptr_t uuid, void *udata) {
  (void)uuid;
  (void)udata;
  stop("CONNECT-FAILED");
}

static int start_raw(const char *host, const char *port) {
  if (!opt.nalpn)
    opt.alpn[opt.nalpn++] = "echo";
  for (int i = 0; i < opt.nalpn; ++i)
    fio_tls_proto_add(tls, opt.alpn[i], proto_cbs[i]);
  conn_uuid = fio_connect(.address = host, .port = port,
                          .on_connect = on_connect, .on_fail = on_fail,
                          .timeout = (uint8_t)opt.timeout);
  if (conn_uuid == -1) {
    fprintf(stderr, "fio_client: fio_connect %s:%s failed: %s\n", host, port,
            strerror(errno));
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------
 * http mode: http_connect("http://...", .tls = tls)
 * ------------------------------------------------------------------------ */

static void on_response(http_s *h) {
  if (h->status == 0) {
    /* connected (TLS done, "http/1.1" callback ran): send the request. On
     * a closed uuid the handshake failed: the request goes nowhere and
     * on_finish follows, as for a server that hangs up at once. */
    if (fio_is_closed(conn_uuid)) {
      ++failed_callbacks;
      printf("HANDSHAKE-FAILED http/1.1 udata=-\n");
    } else {
      ++callbacks;
      proto_ran = "http/1.1";
      printf("PROTO http/1.1 udata=-\n");
    }
    http_finish(h);
    return;
  }
  printf("STATUS %d\n", (int)h->status);
  if (h->body) {
    size_t len = (size_t)fiobj_data_len(h->body);
    fio_str_info_s s = fiobj_data_pread(h->body, 0, len);
    take(s.data, s.len);
  }
  stop(NULL);
}

static void on_http_finish(struct http_settings_s *settings) {
  (void)settings;
  printf("FINISH\n");
  if (!stopping && !received)
    stop("NO-RESPONSE");
}

static int start_http(const char *url) {
  conn_uuid = http_connect(url, .on_response = on_response,
                           .on_finish = on_http_finish, .tls = tls,
                           .timeout = (uint8_t)opt.timeout);
  if (conn_uuid == -1) {
    fprintf(stderr, "fio_client: http_connect %s failed\n", url);
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------ */

static int usage(const char *prog) {
  fprintf(stderr,
          "usage: %s [--name NAME|-] [--trust CA|system] [--cert KEY CERT]\n"
          "          [--alpn NAME]... [--payload FILE] [--expect N] "
          "[--out FILE]\n"
          "          [--udata TEXT] [--timeout SECONDS] [--no-watchdog]\n"
          "          [-l LEVEL]\n"
          "          raw HOST PORT | http URL\n",
          prog);
  return 2;
}

int main(int argc, char **argv) {
  static int fds_before[MAX_FDS], fds_after[MAX_FDS];
  int nbefore = list_fds(fds_before);
  clock_gettime(CLOCK_MONOTONIC, &started);
  setvbuf(stdout, NULL, _IONBF, 0);

  int i = 1;
  for (; i < argc && argv[i][0] == '-'; ++i) {
    const char *o = argv[i];
    int left = argc - i - 1;
    if (!strcmp(o, "--name") && left >= 1)
      opt.name = strcmp(argv[++i], "-") ? argv[i] : NULL;
    else if (!strcmp(o, "--trust") && left >= 1)
      opt.trust = argv[++i];
    else if (!strcmp(o, "--cert") && left >= 2) {
      opt.key = argv[++i];
      opt.cert = argv[++i];
    } else if (!strcmp(o, "--alpn") && left >= 1 && opt.nalpn < MAX_ALPN)
      opt.alpn[opt.nalpn++] = argv[++i];
    else if (!strcmp(o, "--payload") && left >= 1)
      opt.payload_path = argv[++i];
    else if (!strcmp(o, "--expect") && left >= 1)
      opt.expect = atoll(argv[++i]);
    else if (!strcmp(o, "--out") && left >= 1)
      opt.out_path = argv[++i];
    else if (!strcmp(o, "--udata") && left >= 1)
      opt.udata = argv[++i];
    else if (!strcmp(o, "--timeout") && left >= 1)
      opt.timeout = atoi(argv[++i]);
    else if (!strcmp(o, "--no-watchdog"))
      opt.no_watchdog = 1;
    else if (!strcmp(o, "-l") && left >= 1)
      FIO_LOG_LEVEL = atoi(argv[++i]);
    else
      return usage(argv[0]);
  }
  if (i >= argc || opt.timeout < 1 || opt.timeout > 255)
    return usage(argv[0]);
  const char *mode = argv[i];
  int nrest = argc - i - 1;
  int raw = !strcmp(mode, "raw") && nrest == 2;
  if (!raw && !(!strcmp(mode, "http") && nrest == 1))
    return usage(argv[0]);

  if (opt.payload_path &&
      read_file(opt.payload_path, &opt.payload, &opt.payload_len)) {
    fprintf(stderr, "fio_client: cannot read %s: %s\n", opt.payload_path,
            strerror(errno));
    return 1;
  }
  if (opt.out_path && !(out = fopen(opt.out_path, "wb"))) {
    fprintf(stderr, "fio_client: cannot write %s: %s\n", opt.out_path,
            strerror(errno));
    return 1;
  }

  tls = fio_tls_new(opt.name, opt.key, opt.cert);
  if (!tls) {
    fprintf(stderr, "fio_client: fio_tls_new failed\n");
    return 1;
  }
  if (opt.trust && !HAVE_TRUST()) {
    fprintf(stderr, "fio_client: fio_tls_trust is not available\n");
    fio_tls_destroy(tls);
    return 1;
  }
  if (opt.trust)
    fio_tls_trust(tls, strcmp(opt.trust, "system") ? opt.trust : NULL);

  if (raw ? start_raw(argv[i + 1], argv[i + 2]) : start_http(argv[i + 1])) {
    fio_tls_destroy(tls);
    return 1;
  }
  fio_run_every(20, 0, tick, NULL, NULL);
  fio_start(.threads = 1, .workers = 1);

  fio_tls_destroy(tls);
  if (out)
    fclose(out);
  free(opt.payload);
  printf("RESULT proto=%s callbacks=%d bytes=%llu fnv1a=%08x\n", proto_ran,
         callbacks, received, (unsigned)sum);

  int nafter = list_fds(fds_after);
  printf("FDS start=%d end=%d\n", nbefore, nafter);
  for (int a = 0; a < nafter && a < MAX_FDS; ++a) {
    int known = 0;
    for (int b = 0; b < nbefore && b < MAX_FDS && !known; ++b)
      known = fds_after[a] == fds_before[b];
    if (known)
      continue;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fds_after[a]);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    target[n > 0 ? n : 0] = 0;
    printf("FD %d %s\n", fds_after[a], target);
  }
  return 0;
}
