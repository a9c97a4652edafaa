/*
 * fio07_client.c -- a facil.io 0.7.6 (release API) HTTPS client for the
 * API07 suite (suites/test_api07.py) and make compare07.
 *
 *   fio07_client [-l LOG_LEVEL] [--name NAME] [--trust CA] [--cert CERT --key KEY]
 *                [--password PW] [--close 1] [--timeout SECONDS] URL
 *
 * One GET of URL (https://HOST:PORT/PATH) with http_connect(.tls) over
 * fio_tls_new(NAME, CERT, KEY, PW) (NAME default NULL; no --cert: no
 * client certificate), then fio_tls_trust(tls, CA) when --trust is given
 * (CA "system" passes NULL); an http:// URL goes without TLS (a baseline).
 * Lines on stdout: "STATUS <code>" and
 * "BODY <bytes> <first line>" for a response, "FINISH" when http_connect's
 * on_finish runs, "DONE" after fio_start returned and the TLS object was
 * released, "TIMEOUT" when nothing came in 8 s (facil.io's client timeout is
 * 30 s).
 * --timeout: http_connect's .timeout (facil.io's default 30 s).
 * Exit status 0 when a response came, 3 when none did.
 */
#include <fio.h>
#include <fio_tls.h>
#include <http.h>

#include "fio07_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int got_response;
static const char *close_arg; /* --close */
static const char *timeout_arg; /* --timeout */
/* fio_stop() is only seen when the reactor wakes up: a 50 ms tick stops it
 * once the work is done (or after 8 s) */
static volatile int finished;
static int ticks;

static void on_response(http_s *h) {
  if (h->status == 0) { /* connected: send the request */
    /* keep-alive by default: facil.io 0.7.6's HTTP client often loses a
     * response that the server follows with its FIN at once (33 of 40 runs
     * over plain HTTP, no TLS involved); the tick below stops this program
     * after the response instead. --close 1 asks for "Connection: close". */
    if (close_arg && !strcmp(close_arg, "1"))
      http_set_header2(h, (fio_str_info_s){.data = "connection", .len = 10},
                       (fio_str_info_s){.data = "close", .len = 5});
    http_finish(h);
    return;
  }
  fio_str_info_s body = {.len = 0};
  if (h->body) {
    fiobj_data_seek(h->body, 0);
    body = fiobj_data_read(h->body, 0);
  }
  size_t first = 0;
  while (first < body.len && body.data[first] != '\n')
    ++first;
  printf("STATUS %d\nBODY %zu %.*s\n", (int)h->status, body.len, (int)first,
         body.data ? body.data : "");
  fflush(stdout);
  got_response = 1;
  finished = 1;
}

static void on_finish(http_settings_s *s) {
  (void)s;
  printf("FINISH\n");
  fflush(stdout);
  finished = 1;
}

static void tick(void *ignored) {
  (void)ignored;
  if (!finished && ++ticks < 160)
    return;
  if (!finished)
    printf("TIMEOUT\n");
  fflush(stdout);
  fio_stop();
}

static int usage(const char *prog) {
  return fio07_usage(prog, "[-l LEVEL] [--name NAME] [--trust CA] [--cert CERT --key KEY] "
                     "[--password PW] [--close 1] [--timeout SECONDS] URL");
}

int main(int argc, char **argv) {
  const char *name = NULL, *trust = NULL, *cert = NULL, *key = NULL,
             *password = NULL;
  const fio07_option_s options[] = {{"--name", &name},
                                    {"--trust", &trust},
                                    {"--password", &password},
                                    {"--cert", &cert},
                                    {"--key", &key},
                                    {"--close", &close_arg},
                                    {"--timeout", &timeout_arg},
                                    {NULL, NULL}};
  int i = fio07_parse(argc, argv, options);
  if (i < 0)
    return usage(argv[0]);
  if (i + 1 != argc)
    return usage(argv[0]);
  /* URL http://...: no TLS object (a plain-HTTP baseline) */
  int plain = !strncmp(argv[i], "http://", 7);
  fio_tls_s *tls = plain ? NULL : fio_tls_new(name, cert, key, password);
  if (!tls && !plain) {
    printf("TLS_NEW null\n");
    return 1;
  }
  if (trust && tls)
    fio_tls_trust(tls, strcmp(trust, "system") ? trust : NULL);
  if (http_connect(argv[i], NULL, .on_response = on_response,
                   .on_finish = on_finish, .tls = tls,
                   .timeout = timeout_arg ? (uint8_t)atoi(timeout_arg) : 0) == -1) {
    printf("CONNECT_FAILED\n");
    if (tls)
      fio_tls_destroy(tls);
    return 1;
  }
  fio_run_every(50, 0, tick, NULL, NULL);
  fio_start(.threads = 1, .workers = 1);
  if (tls)
    fio_tls_destroy(tls);
  printf("DONE\n");
  return got_response ? 0 : 3;
}
