/*
 * fio_server.c -- a facil.io 0.7.0.beta4 program that exercises libfio_tls.
 *
 * The server suite (suites/test_server.py) starts this program in one of the
 * modes below and talks to it with real TLS peers (curl, openssl s_client,
 * gnutls-cli). Every listener binds 127.0.0.1 only.
 *
 *   fio_server [-t THREADS] [-w WORKERS] [-l LOG_LEVEL] [-p PUBLIC_DIR]
 *              [--trust CA] [-f FILE] MODE PORT ARGS...
 *
 *   -w WORKERS (default 1) forks that many worker processes after the TLS
 *   objects are made; start such a server in its own session (setsid), as
 *   facil.io signals its whole process group.
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
 *   torture PORT [-w WORKERS] [-P PLAIN_PORT]
 *       the server of the torture suite (hostile and heavy traffic):
 *       http_listen with fio_tls_new("localhost", NULL, NULL), WORKERS
 *       worker processes (default 1), -P adds a plain-HTTP listener with the
 *       same routes. Routes: GET / (HELLO_BODY), GET /dyn?n=N (N bytes:
 *       16-byte records "%015x\n" of the record index, cut to N), POST /sum
 *       ("len=N crc32=XXXXXXXX\n" of the body), GET /close (HELLO_BODY and
 *       "Connection: close"), GET /stats (counters summed over the workers:
 *       requests, ALPN hand-overs, websocket events), GET /ws (websocket
 *       broadcast through pub/sub), static files under -p. Lines on stdout:
 *       "WORKER <pid>" per worker, "READY <port>" once all of them run,
 *       "STOPPED". On stderr, "FD_RACE ..." when facil.io closes a healthy
 *       connection for another's error event (see torture_main's section).
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
 *   renew PORT WORKERS NAME KEY CERT [NAME KEY CERT]...
 *       the renewal tests (c_tests/suites/test_renewal.py): fio_start with
 *       WORKERS worker processes (and -t threads each) over http_listen with
 *       the certificates of "certs". Every answer names the worker:
 *       "pid=N\n"; GET /reload calls fio_tls_reload(NULL) and GET
 *       /reload-one fio_tls_reload(tls) first. A websocket upgrade echoes
 *       each message back as "pid=N MESSAGE". SIGHUP reloads (README's
 *       recipe: the handler sets a flag, a 50 ms facil.io timer calls
 *       fio_tls_reload(NULL) and prints "SIGHUP-RELOAD <pid>"). Prints
 *       "ROOT <pid>" before fio_start and "WORKER <pid>" as each worker
 *       starts (the root of a multi-worker run serves no connection).
 *       Start it in a session of its own: facil.io signals its process group.
 *   acme PORT WORKERS NAME [NAME]...
 *       the ACME tests (c_tests/suites/test_acme.py): fio_tls_new(NAME,
 *       NULL, NULL) and fio_tls_cert_add(tls, NAME, NULL, NULL) for each
 *       further name (certificates from the CA of FIO_TLS_ACME_DIRECTORY),
 *       WORKERS worker processes, the answers of "renew".
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
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "https_headers.h"

/* mode torture */
#include <arpa/inet.h>
#include <http1.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <websockets.h>

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
 * Hostile and heavy traffic (mode torture, c_tests/suites/test_torture.py)
 *
 * Its own HTTP routes, websocket broadcast, shared counters, worker
 * processes and fio_start: see torture_main. Nothing here is used by the
 * other modes, except the two pass-through functions of the fd race
 * diagnosis below.
 * ------------------------------------------------------------------------ */

#define TORTURE_WS_CHANNEL "torture"
#define TORTURE_DYN_MAX (256UL * 1024 * 1024)

/* in a MAP_SHARED page made before fio_start forks: totals of all workers */
typedef struct {
  volatile uint64_t requests;   /* on_request / on_upgrade calls */
  volatile uint64_t callbacks;  /* ALPN "http/1.1" hand-overs */
  volatile uint64_t ws_open;
  volatile uint64_t ws_close;
  volatile uint64_t ws_in;      /* websocket messages received */
  volatile uint64_t workers_up; /* worker processes that started */
} torture_counters_s;

static torture_counters_s *torture_counters;
static int torture_workers = 1;

#define TORTURE_COUNT(field)                                                   \
  __atomic_add_fetch(&torture_counters->field, 1, __ATOMIC_SEQ_CST)
#define TORTURE_READ(field)                                                    \
  __atomic_load_n(&torture_counters->field, __ATOMIC_SEQ_CST)

/* -- facil.io's fd race, diagnosed ------------------------------------------
 * facil.io 0.7.0.beta4's poller turns an error event (hang-up, reset) of fd
 * N into fio_force_close(fd2uuid(N)): the uuid of whichever connection has
 * N *now*. With threads > 1, another thread may have closed the connection
 * the event was about, and a new connection may have been given the same fd
 * number, before the poller gets there: the poller then closes that new,
 * healthy connection (plain HTTP shows it too: c_tests/tools/repro_abuse.py
 * --mode plain). Its client sees an EOF or a reset.
 *
 * The same happens the other way round: a thread whose read of fd N found
 * the peer gone (EOF, reset) force-closes the connection it was reading,
 * and by the time it closes fd N, the poller may have closed that
 * connection and N may belong to a new one.
 *
 * So that the suite can tell these from a connection the library drops,
 * this program defines epoll_wait, read and close (facil.io's and the
 * library's calls bind to them; they pass straight through unless torture
 * mode sets fd_race_watch). A thread remembers the fds of the error events
 * epoll_wait gave it (until its next epoll_wait) and the last few fds whose
 * read found the peer gone, each for FD_RACE_WINDOW_NS; when that thread then
 * closes such an fd (facil.io does it at once: 0.1-3 ms later on a loaded
 * machine) and the socket shows no hang-up, reset or error (these stay set
 * once a peer hung up or reset), the event or the read was not about this
 * socket, and one line goes to stderr:
 *   FD_RACE fd=N peer_port=P events=0xE     (after an epoll event)
 *   FD_RACE fd=N peer_port=P read=R         (after a read, R = 0 or -errno)
 * P (the client's port, -1 when fd N is not a connected socket) is what the
 * suite matches with its dropped connections. */
static volatile int fd_race_watch;
#define FD_RACE_MAX 64
#define FD_RACE_WINDOW_NS 100000000LL /* 100 ms */
static __thread int fd_race_fds[FD_RACE_MAX];
static __thread uint32_t fd_race_events[FD_RACE_MAX];
static __thread int fd_race_count;
static __thread long long fd_race_since; /* CLOCK_MONOTONIC ns */
/* the last reads that found the peer gone (fd -1: none): result 0, -errno */
#define FD_RACE_READS 8
static __thread struct {
  int fd;
  int result;
  long long at;
} fd_race_reads[FD_RACE_READS] = {[0 ... FD_RACE_READS - 1] = {.fd = -1}};
static __thread unsigned fd_race_next_read;
static __thread unsigned fd_race_read_count; /* entries with fd != -1 */

static long long fd_race_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int epoll_wait(int epfd, struct epoll_event *events, int maxevents,
               int timeout) {
  int n = epoll_pwait(epfd, events, maxevents, timeout, NULL);
  if (!fd_race_watch)
    return n;
  fd_race_count = 0;
  for (int i = 0; i < n && fd_race_count < FD_RACE_MAX; ++i) {
    if (events[i].events & ~(uint32_t)(EPOLLIN | EPOLLOUT)) {
      fd_race_fds[fd_race_count] = events[i].data.fd;
      fd_race_events[fd_race_count++] = events[i].events;
    }
  }
  if (fd_race_count)
    fd_race_since = fd_race_now();
  return n;
}

ssize_t read(int fd, void *buf, size_t count) {
  ssize_t n = syscall(SYS_read, fd, buf, count);
  if (fd_race_watch && n <= 0) {
    int e = errno;
    if (n == 0 || (e != EAGAIN && e != EWOULDBLOCK && e != EINTR)) {
      unsigned i = fd_race_next_read++ % FD_RACE_READS;
      if (fd_race_reads[i].fd == -1)
        ++fd_race_read_count;
      fd_race_reads[i].fd = fd;
      fd_race_reads[i].result = n == 0 ? 0 : -e;
      fd_race_reads[i].at = fd_race_now();
    }
    errno = e;
  }
  return n;
}

/* fd's socket shows no hang-up, reset or error: its client port, else 0 */
static int fd_race_healthy_port(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  if (poll(&p, 1, 0) < 0 ||
      (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)))
    return 0;
  struct sockaddr_storage peer;
  socklen_t len = sizeof(peer);
  if (getpeername(fd, (struct sockaddr *)&peer, &len))
    return -1;
  if (peer.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&peer)->sin_port);
  if (peer.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
  return -1;
}

static void fd_race_check(int fd) {
  long long now = fd_race_now();
  for (int i = 0; fd_race_read_count && i < FD_RACE_READS; ++i) {
    if (fd_race_reads[i].fd != fd)
      continue;
    fd_race_reads[i].fd = -1; /* one close per read */
    --fd_race_read_count;
    int port = now - fd_race_reads[i].at > FD_RACE_WINDOW_NS
                   ? 0
                   : fd_race_healthy_port(fd);
    if (port > 0)
      fprintf(stderr, "FD_RACE fd=%d peer_port=%d read=%d\n", fd, port,
              fd_race_reads[i].result);
    if (port)
      return;
    break;
  }
  if (now - fd_race_since > FD_RACE_WINDOW_NS)
    fd_race_count = 0;
  for (int i = 0; i < fd_race_count; ++i) {
    if (fd_race_fds[i] != fd)
      continue;
    uint32_t events = fd_race_events[i];
    --fd_race_count; /* one close per event */
    fd_race_fds[i] = fd_race_fds[fd_race_count];
    fd_race_events[i] = fd_race_events[fd_race_count];
    int port = fd_race_healthy_port(fd);
    if (port)
      fprintf(stderr, "FD_RACE fd=%d peer_port=%d events=0x%x\n", fd, port,
              (unsigned)events);
    return;
  }
}

int close(int fd) {
  if (fd_race_watch && (fd_race_count || fd_race_read_count)) {
    int saved = errno;
    fd_race_check(fd);
    errno = saved;
  }
  return (int)syscall(SYS_close, fd);
}

/* -- checksums and the /dyn pattern ----------------------------------------- */

static uint32_t torture_crc_table[256];

static void torture_crc32_init(void) {
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    torture_crc_table[i] = c;
  }
}

/* the CRC-32 of zlib (Python's zlib.crc32) */
static uint32_t torture_crc32(const uint8_t *p, size_t len) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; ++i)
    c = torture_crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* record i (16 bytes): 15 lowercase hex digits of i, then '\n'; cut to n */
static void torture_fill_pattern(char *buf, size_t n) {
  static const char hex[] = "0123456789abcdef";
  char rec[16];
  rec[15] = '\n';
  for (size_t i = 0; i * 16 < n; ++i) {
    uint64_t v = i;
    for (int k = 14; k >= 0; --k) {
      rec[k] = hex[v & 15];
      v >>= 4;
    }
    size_t off = i * 16;
    memcpy(buf + off, rec, n - off < 16 ? n - off : 16);
  }
}

/* -- HTTP routes ------------------------------------------------------------ */

static void torture_send_text(http_s *h, const char *text, size_t len) {
  http_set_header(h, HTTP_HEADER_CONTENT_TYPE, http_mimetype_find("txt", 3));
  http_send_body(h, (void *)text, len);
}

/* GET /dyn?n=N: N bytes of the pattern, built per request */
static void torture_route_dyn(http_s *h) {
  size_t n = 0;
  if (h->query) {
    fio_str_info_s q = fiobj_obj2cstr(h->query);
    const char *p = q.data;
    const char *end = q.data + q.len;
    while (p && p + 2 <= end) {
      if (p[0] == 'n' && p[1] == '=') {
        n = strtoull(p + 2, NULL, 10);
        break;
      }
      p = memchr(p, '&', (size_t)(end - p));
      if (p)
        ++p;
    }
  }
  if (n > TORTURE_DYN_MAX) {
    http_send_error(h, 413);
    return;
  }
  char *buf = malloc(n ? n : 1);
  if (!buf) {
    http_send_error(h, 500);
    return;
  }
  torture_fill_pattern(buf, n);
  torture_send_text(h, buf, n);
  free(buf);
}

/* POST /sum: "len=N crc32=XXXXXXXX\n" of the body facil.io stored. When
 * that body is not Content-Length bytes long, a 500 "BODY MISMATCH ..."
 * (also on stderr) says what facil.io handed over: stored=-1 means the
 * body file's fd no longer answers fstat (it was closed under the request:
 * facil.io's fd race; the library never closes an fd). */
static void torture_route_sum(http_s *h) {
  size_t len = 0, declared = 0;
  intptr_t stored = -1;
  int err = 0;
  uint32_t sum = torture_crc32((const uint8_t *)"", 0);
  FIOBJ cl = fiobj_hash_get2(h->headers,
                             fiobj_obj2hash(HTTP_HEADER_CONTENT_LENGTH));
  if (cl)
    declared = (size_t)fiobj_obj2num(cl);
  if (h->body) {
    stored = fiobj_data_len(h->body);
    errno = 0;
    fio_str_info_s s = fiobj_data_pread(h->body, 0, (uintptr_t)stored);
    err = errno;
    len = s.len;
    sum = torture_crc32((const uint8_t *)s.data, s.len);
  }
  char reply[160];
  int n;
  if (len != declared) {
    n = snprintf(reply, sizeof(reply),
                 "BODY MISMATCH content-length=%zu body_object=%s "
                 "stored=%ld read=%zu errno=%d\n",
                 declared, h->body ? "yes" : "NULL", (long)stored, len, err);
    http_set_header(h, HTTP_HEADER_CONTENT_TYPE, http_mimetype_find("txt", 3));
    h->status = 500;
    http_send_body(h, reply, (size_t)n);
    fprintf(stderr, "fio_server: %s", reply);
    return;
  }
  n = snprintf(reply, sizeof(reply), "len=%zu crc32=%08x\n", len,
               (unsigned)sum);
  torture_send_text(h, reply, (size_t)n);
}

static void torture_route_stats(http_s *h) {
  char reply[256];
  int n = snprintf(reply, sizeof(reply),
                   "requests=%llu callbacks=%llu ws_open=%llu ws_close=%llu "
                   "ws_in=%llu pid=%d\n",
                   (unsigned long long)TORTURE_READ(requests),
                   (unsigned long long)TORTURE_READ(callbacks),
                   (unsigned long long)TORTURE_READ(ws_open),
                   (unsigned long long)TORTURE_READ(ws_close),
                   (unsigned long long)TORTURE_READ(ws_in), (int)getpid());
  torture_send_text(h, reply, (size_t)n);
}

/* GET / (and anything else not under -p): HELLO_BODY; GET /close: the same
 * with "Connection: close" (facil.io's http1 then closes) */
static void torture_on_request(http_s *h) {
  TORTURE_COUNT(requests);
  if (fiobj_equals(h->method, "POST")) {
    torture_route_sum(h);
  } else if (fiobj_equals(h->path, "/dyn")) {
    torture_route_dyn(h);
  } else if (fiobj_equals(h->path, "/stats")) {
    torture_route_stats(h);
  } else {
    if (fiobj_equals(h->path, "/close"))
      http_set_header2(h, (fio_str_info_s){.data = "connection", .len = 10},
                       (fio_str_info_s){.data = "close", .len = 5});
    torture_send_text(h, HELLO_BODY, sizeof(HELLO_BODY) - 1);
  }
}

/* -- GET /ws: every message is published on one channel that every
 * websocket (in every worker) is subscribed to; "hello" greets a new one -- */

static void torture_ws_on_open(ws_s *ws) {
  TORTURE_COUNT(ws_open);
  websocket_subscribe(ws,
                      .channel = {.data = TORTURE_WS_CHANNEL,
                                  .len = sizeof(TORTURE_WS_CHANNEL) - 1},
                      .force_binary = 1);
  websocket_write(ws, (fio_str_info_s){.data = "hello", .len = 5}, 1);
}

static void torture_ws_on_message(ws_s *ws, fio_str_info_s msg,
                                  uint8_t is_text) {
  (void)ws;
  (void)is_text;
  TORTURE_COUNT(ws_in);
  fio_publish(.channel = {.data = TORTURE_WS_CHANNEL,
                          .len = sizeof(TORTURE_WS_CHANNEL) - 1},
              .message = msg);
}

static void torture_ws_on_close(intptr_t uuid, void *udata) {
  (void)uuid;
  (void)udata;
  TORTURE_COUNT(ws_close);
}

static void torture_on_upgrade(http_s *h, char *proto, size_t len) {
  TORTURE_COUNT(requests);
  if (len >= 9 && (proto[0] == 'w' || proto[0] == 'W')) {
    http_upgrade2ws(h, .on_open = torture_ws_on_open,
                    .on_message = torture_ws_on_message,
                    .on_close = torture_ws_on_close);
    return;
  }
  http_send_error(h, 400);
}

/* the ALPN callback that replaces http_listen's (same name, so in place):
 * counts the hand-over, then does what facil.io's does (udata is the
 * listener's settings) */
static void torture_on_http1(intptr_t uuid, void *udata) {
  TORTURE_COUNT(callbacks);
  if (!http1_new((uintptr_t)uuid, (http_settings_s *)udata, NULL, 0))
    fio_close(uuid);
}

static void torture_on_worker_start(void *ignored) {
  (void)ignored;
  printf("WORKER %d\n", (int)getpid());
  if ((int)TORTURE_COUNT(workers_up) == torture_workers)
    printf("READY %s\n", listen_port);
}

/* torture PORT [-w WORKERS] [-P PLAIN_PORT]: an HTTPS listener with a
 * self-signed "localhost" certificate, -P adds a plain-HTTP one with the same
 * routes (the baseline of the memory item); -p PUBLIC_DIR and -l apply. */
static int torture_main(int threads, char **a, int n) {
  const char *plain = NULL;
  for (int k = 0; k < n; k += 2) {
    if (k + 1 >= n)
      return -1;
    if (!strcmp(a[k], "-w"))
      torture_workers = atoi(a[k + 1]);
    else if (!strcmp(a[k], "-P"))
      plain = a[k + 1];
    else
      return -1;
  }
  if (torture_workers < 1)
    return -1;

  torture_crc32_init();
  torture_counters = mmap(NULL, sizeof(*torture_counters),
                          PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                          -1, 0);
  if (torture_counters == MAP_FAILED) {
    perror("fio_server: mmap");
    return 1;
  }
  memset((void *)torture_counters, 0, sizeof(*torture_counters));

  fio_tls_s *tls = fio_tls_new("localhost", NULL, NULL);
  if (!tls) {
    fprintf(stderr, "fio_server: fio_tls_new failed\n");
    return 1;
  }
  size_t public_len = public_dir ? strlen(public_dir) : 0;
  if (http_listen(listen_port, "127.0.0.1", .on_request = torture_on_request,
                  .on_upgrade = torture_on_upgrade, .tls = tls,
                  .public_folder = public_dir,
                  .public_folder_length = public_len,
                  .max_body_size = 64UL * 1024 * 1024,
                  .ws_max_msg_size = 1024 * 1024) == -1 ||
      (plain &&
       http_listen(plain, "127.0.0.1", .on_request = torture_on_request,
                   .on_upgrade = torture_on_upgrade,
                   .public_folder = public_dir,
                   .public_folder_length = public_len,
                   .max_body_size = 64UL * 1024 * 1024) == -1)) {
    fprintf(stderr, "fio_server: http_listen failed: %s\n", strerror(errno));
    fio_tls_destroy(tls);
    return 1;
  }
  fio_tls_proto_add(tls, "http/1.1", torture_on_http1);

  fd_race_watch = 1;
  fio_state_callback_add(FIO_CALL_ON_START, torture_on_worker_start, NULL);
  fio_start(.threads = (int16_t)threads, .workers = (int16_t)torture_workers);
  fd_race_watch = 0;
  fio_tls_destroy(tls);
  printf("STOPPED\n");
  munmap((void *)torture_counters, sizeof(*torture_counters));
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

  /* fio_tls_new with each bad input: NULL and one ERROR line each */
  const struct {
    const char *name, *server, *key, *cert;
  } news[] = {
      {"new-missing-key", "localhost", missing, cert},
      {"new-missing-cert", "localhost", key, missing},
      {"new-directory-cert", "localhost", key, directory},
      {"new-garbage-key", "localhost", garbage, cert},
      {"new-garbage-cert", "localhost", key, garbage},
      {"new-mismatched-key", "localhost", other_key, cert},
      {"new-encrypted-key", "localhost", encrypted_key, cert},
      {"new-key-without-cert", "localhost", key, NULL},
      {"new-null-name-selfsigned", NULL, NULL, NULL},
  };
  for (size_t i = 0; i < sizeof(news) / sizeof(news[0]); ++i) {
    mark("CASE", news[i].name, "-");
    result_tls(news[i].name, fio_tls_new(news[i].server, news[i].key, news[i].cert));
  }

  /* the object that will serve: nothing below may change what it serves */
  fio_tls_s *good = fio_tls_new("localhost", key, cert);
  if (!good) {
    mark("RESULT", "good-object", "NULL");
    return -1;
  }

  /* fio_tls_cert_add with each bad input: nothing added */
  const struct {
    const char *name;
    fio_tls_s *tls;
    const char *key, *cert;
  } adds[] = {
      {"cert-add-missing", good, missing, cert},
      {"cert-add-garbage", good, key, garbage},
      {"cert-add-mismatched-key", good, other_key, cert},
      {"cert-add-null-tls", NULL, key, cert},
  };
  for (size_t i = 0; i < sizeof(adds) / sizeof(adds[0]); ++i) {
    mark("CASE", adds[i].name, "-");
    fio_tls_cert_add(adds[i].tls, "bad.test", adds[i].key, adds[i].cert);
    mark("RESULT", adds[i].name, "returned");
  }

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
 * Certificate renewal (mode renew): multi-worker, pid in every answer,
 * fio_tls_reload from a request handler and from a SIGHUP-driven task
 * ------------------------------------------------------------------------ */

#ifdef FIO_TESTS_PRELOAD
/* facil.io alone does not define our extension: resolved at run time */
#pragma weak fio_tls_reload
#define HAVE_RELOAD() (fio_tls_reload != NULL)
#else
#define HAVE_RELOAD() 1
#endif

static fio_tls_s *renew_tls;
static int workers = 1; /* fio_start's .workers (-w, or mode renew's WORKERS) */
static volatile sig_atomic_t renew_sighup;

static void renew_reply(http_s *h, const char *what) {
  char body[64];
  int n = snprintf(body, sizeof(body), "pid=%d%s\n", (int)getpid(), what);
  http_set_header(h, HTTP_HEADER_CONTENT_TYPE, http_mimetype_find("txt", 3));
  http_send_body(h, body, (size_t)n);
}

static void on_renew_request(http_s *h) {
  if (fiobj_equals(h->path, "/reload")) {
    fio_tls_reload(NULL);
    renew_reply(h, " reload=all");
  } else if (fiobj_equals(h->path, "/reload-one")) {
    fio_tls_reload(renew_tls);
    renew_reply(h, " reload=one");
  } else {
    renew_reply(h, "");
  }
}

static void renew_ws_on_message(ws_s *ws, fio_str_info_s msg, uint8_t is_text) {
  char buf[1024];
  int n = snprintf(buf, sizeof(buf), "pid=%d %.*s", (int)getpid(),
                   (int)(msg.len < 900 ? msg.len : 900), msg.data);
  websocket_write(ws, (fio_str_info_s){.data = buf, .len = (size_t)n},
                  is_text);
}

static void on_renew_upgrade(http_s *h, char *protocol, size_t len) {
  if (len == 9 && !memcmp(protocol, "websocket", 9))
    http_upgrade2ws(h, .on_message = renew_ws_on_message);
  else
    http_send_error(h, 400);
}

/* The README's signal recipe: the handler only sets a flag... */
static void renew_on_sighup(int sig) {
  (void)sig;
  renew_sighup = 1;
}

/* ...and a facil.io timer (in every process) makes the call. */
static void renew_poll_sighup(void *ignored) {
  (void)ignored;
  if (!renew_sighup)
    return;
  renew_sighup = 0;
  printf("SIGHUP-RELOAD %d\n", (int)getpid());
  fio_tls_reload(NULL);
}

static void renew_print_worker(void *ignored) {
  (void)ignored;
  printf("WORKER %d\n", (int)getpid());
}

/* http_listen over renew_tls (NULL: fails) with the renew answers; prints
 * ROOT now and WORKER as each worker starts (modes renew and acme) */
static int renew_listen(void) {
  if (!renew_tls)
    return -1;
  if (http_listen(listen_port, "127.0.0.1", .on_request = on_renew_request,
                  .on_upgrade = on_renew_upgrade, .tls = renew_tls) == -1) {
    fprintf(stderr, "fio_server: http_listen on port %s failed: %s\n",
            listen_port, strerror(errno));
    fio_tls_destroy(renew_tls);
    renew_tls = NULL;
    return -1;
  }
  http_tls = renew_tls; /* destroyed after fio_start returns */
  fio_state_callback_add(FIO_CALL_ON_START, renew_print_worker, NULL);
  printf("ROOT %d\n", (int)getpid());
  return 0;
}

/* a: WORKERS NAME KEY CERT [NAME KEY CERT]... (n = 1 + 3k, k >= 1) */
static int start_renew(char **a, int n) {
  workers = atoi(a[0]);
  if (workers < 1 || !HAVE_RELOAD())
    return -1;
  renew_tls = fio_tls_new(a[1], a[2], a[3]);
  for (int k = 4; renew_tls && k < n; k += 3)
    fio_tls_cert_add(renew_tls, a[k], a[k + 1], a[k + 2]);
  if (renew_listen())
    return -1;
  struct sigaction act = {.sa_handler = renew_on_sighup, .sa_flags = SA_RESTART};
  sigemptyset(&act.sa_mask);
  sigaction(SIGHUP, &act, NULL);
  /* made before fio_start: every forked worker inherits the timer */
  fio_run_every(50, 0, renew_poll_sighup, NULL, NULL);
  return 0;
}

/* ---------------------------------------------------------------------------
 * Automatic certificates (mode acme): names with NULL files, multi-worker,
 * the renew mode's pid answers (c_tests/suites/test_acme.py; the ACME
 * settings come from the FIO_TLS_ACME_* environment)
 * ------------------------------------------------------------------------ */

/* a: WORKERS NAME [NAME]... */
static int start_acme(char **a, int n) {
  workers = atoi(a[0]);
  if (workers < 1)
    return -1;
  renew_tls = fio_tls_new(a[1], NULL, NULL);
  for (int k = 2; renew_tls && k < n; ++k)
    fio_tls_cert_add(renew_tls, a[k], NULL, NULL);
  return renew_listen();
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
          "usage: %s [-t THREADS] [-w WORKERS] [-l LOG_LEVEL] [-p PUBLIC_DIR] "
          "[--trust CA] [-f FILE] MODE PORT ARGS...\n"
          "modes: selfsigned PORT [NAME|-]\n"
          "       certs PORT NAME KEY CERT [NAME KEY CERT]...\n"
          "       echo PORT NAME KEY CERT [NAME KEY CERT]...\n"
          "       alpn PORT [once]\n"
          "       torture PORT [-w WORKERS] [-P PLAIN_PORT]\n"
          "       pair PORT PORT2 NAME KEY CERT (with --trust CA)\n"
          "       badinput PORT KEY CERT GARBAGE OTHER_KEY ENCRYPTED_KEY "
          "DIRECTORY MISSING\n"
          "       scale PORT DIR COUNT\n"
          "       bench PORT [KEY CERT] (-f FILE: the file of GET /1m-file)\n"
          "       renew PORT WORKERS NAME KEY CERT [NAME KEY CERT]...\n"
          "       acme PORT WORKERS NAME [NAME]...\n",
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
    else if (!strcmp(argv[i], "-w"))
      workers = atoi(argv[i + 1]);
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
  if (argc - i < 2 || threads < 1 || workers < 1)
    return usage(argv[0]);

  const char *mode = argv[i];
  listen_port = argv[i + 1];
  char **rest = argv + i + 2;
  int nrest = argc - i - 2;
  if (!strcmp(mode, "torture")) { /* its own listeners, workers, fio_start */
    int trc = trust_ca ? -1 : torture_main(threads, rest, nrest);
    return trc < 0 ? usage(argv[0]) : trc;
  }
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
  } else if (!strcmp(mode, "renew") && nrest >= 4 && (nrest - 1) % 3 == 0) {
    rc = start_renew(rest, nrest);
  } else if (!strcmp(mode, "acme") && nrest >= 2) {
    rc = start_acme(rest, nrest);
  } else {
    return usage(argv[0]);
  }
  if (rc) {
    fprintf(stderr, "fio_server: mode %s could not start\n", mode);
    return 1;
  }

  fio_state_callback_add(FIO_CALL_ON_START, print_ready, NULL);
  fio_start(.threads = (int16_t)threads, .workers = (int16_t)workers);
  if (workers > 1) {
    /* facil.io 0.7.0.beta4 race at exit: the root's sentinel threads (one
     * per worker, blocked in waitpid) read facil.io's state after the
     * worker is reaped, while the exiting main thread unmaps it (a
     * segfault in fio_sentinel_worker_thread after "STOPPED", about one
     * run in twenty). The children are gone by now: give those threads a
     * moment to finish. */
    usleep(200000);
  }
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
