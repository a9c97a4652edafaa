/*
 * bench_server.c -- the facil.io 0.7.0.beta4 "hello" server of the
 * benchmarks (bench/bench.py), over libfio_tls or in plaintext.
 *
 *   bench_server [-f FILE] PORT            plaintext HTTP/1.1
 *   bench_server [-f FILE] PORT KEY CERT   HTTPS: fio_tls_new("localhost", KEY, CERT)
 *
 * Listens on 127.0.0.1 only, one worker process and one thread
 * (fio_start(.threads = 1, .workers = 1)), like the nginx it is compared
 * with (worker_processes 1).
 *
 *   GET /1m       a 1 MiB body from memory (http_send_body, which copies it
 *                 into a new 1 MiB buffer per response): the bench's bulk route
 *   GET /1m-file  the file FILE (-f), opened per request and sent with
 *                 http_sendfile, as nginx serves its static file. NOT used by
 *                 the bench over TLS: facil.io 0.7.0.beta4 stalls the next
 *                 response on a keep-alive connection with rw hooks after a
 *                 file (see bench/README.md); plaintext uses sendfile(2)
 *   anything else: the same 64-byte body nginx returns (bench/nginx.conf)
 *
 * Prints "READY <port>" on stdout once listening.
 */
#include <fio.h>
#include <fiobj.h>
#include <http.h>

#include "fio_tls.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 64 bytes exactly (63 characters and a newline); bench.py checks it */
static const char body64[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
#define BIG_LEN (1024 * 1024)
static char *big;
static const char *big_file;

static void on_request(http_s *h) {
  fio_str_info_s path = fiobj_obj2cstr(h->path);
  http_set_header(h, HTTP_HEADER_CONTENT_TYPE, http_mimetype_find("txt", 3));
  if (path.len == 8 && !memcmp(path.data, "/1m-file", 8) && big_file) {
    int fd = open(big_file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd == -1 || fstat(fd, &st) == -1) {
      if (fd != -1)
        close(fd);
      http_send_error(h, 500);
      return;
    }
    http_sendfile(h, fd, (uintptr_t)st.st_size, 0); /* closes fd */
  } else if (path.len == 3 && !memcmp(path.data, "/1m", 3))
    http_send_body(h, big, BIG_LEN);
  else
    http_send_body(h, (void *)body64, sizeof(body64) - 1);
}

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "-f")) {
    big_file = argv[2];
    argv += 2;
    argc -= 2;
  }
  if (argc != 2 && argc != 4) {
    fprintf(stderr, "usage: bench_server [-f FILE] PORT [KEY CERT]\n");
    return 2;
  }
  _Static_assert(sizeof(body64) - 1 == 64, "the body is 64 bytes");
  big = malloc(BIG_LEN);
  if (!big)
    return 1;
  memset(big, 'x', BIG_LEN);

  fio_tls_s *tls = NULL;
  if (argc == 4) {
    tls = fio_tls_new("localhost", argv[2], argv[3]);
    if (!tls) {
      fprintf(stderr, "bench_server: fio_tls_new failed\n");
      return 1;
    }
  }
  if (http_listen(argv[1], "127.0.0.1", .on_request = on_request,
                  .tls = tls) == -1) {
    fprintf(stderr, "bench_server: cannot listen on 127.0.0.1:%s\n", argv[1]);
    fio_tls_destroy(tls);
    return 1;
  }
  printf("READY %s\n", argv[1]);
  fflush(stdout);
  fio_start(.threads = 1, .workers = 1);
  fio_tls_destroy(tls);
  free(big);
  return 0;
}
