/* Response headers an HTTPS deployment sends (HSTS and two common security
 * headers); the scanners of `make scan` look for them. Shared by the test
 * servers and the demo. */
#ifndef FIO_TLS_TESTS_HTTPS_HEADERS_H
#define FIO_TLS_TESTS_HTTPS_HEADERS_H

#include "http.h"

static inline void set_https_headers(http_s *h) {
  http_set_header2(h, (fio_str_info_s){.data = (char *)"strict-transport-security", .len = 25},
                   (fio_str_info_s){.data = (char *)"max-age=31536000", .len = 16});
  http_set_header2(h, (fio_str_info_s){.data = (char *)"x-content-type-options", .len = 22},
                   (fio_str_info_s){.data = (char *)"nosniff", .len = 7});
  http_set_header2(h, (fio_str_info_s){.data = (char *)"x-frame-options", .len = 15},
                   (fio_str_info_s){.data = (char *)"DENY", .len = 4});
}

#endif
