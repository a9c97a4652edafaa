/*
 * header_check.c -- compile-only test of include/fio_tls.h.
 *
 * `make check` compiles this file twice, with nothing but the header on the
 * include path:
 *   cc  -std=c99 -Wall -Wextra -Werror -pedantic -c
 *   c++ -Wall -Wextra -Werror -x c++ -c
 * and then checks (nm) that the C++ object refers to the six functions by
 * their plain C names, i.e. that the header wraps them in extern "C".
 *
 * The header must be self-contained (it has to bring intptr_t along), must
 * survive a second inclusion, and must keep the exact seed signatures: each
 * function initialises a pointer of the seed's type below, so any drift in a
 * parameter or return type is a compile error (C: incompatible pointer
 * types under -Werror; C++: no conversion).
 */
#include "fio_tls.h"
#include "fio_tls.h" /* the include guard makes this a no-op */

/* the seed API, spelled out independently of the header */
typedef fio_tls_s *(*seed_new_f)(const char *server_name,
                                 const char *private_key_file,
                                 const char *public_cert_file);
typedef void (*seed_cert_add_f)(fio_tls_s *tls, const char *server_name,
                                const char *private_key_file,
                                const char *public_cert_file);
typedef void (*seed_proto_callback_f)(intptr_t uuid, void *udata);
typedef void (*seed_proto_add_f)(fio_tls_s *tls, const char *protocol_name,
                                 seed_proto_callback_f callback);
typedef void (*seed_accept_f)(intptr_t uuid, fio_tls_s *tls, void *udata);
typedef void (*seed_connect_f)(intptr_t uuid, fio_tls_s *tls, void *udata);
typedef void (*seed_destroy_f)(fio_tls_s *tls);

struct seed_api {
  seed_new_f new_;
  seed_cert_add_f cert_add;
  seed_proto_add_f proto_add;
  seed_accept_f accept_;
  seed_connect_f connect_;
  seed_destroy_f destroy;
};

#ifdef __cplusplus
extern "C" {
#endif
/* external linkage keeps the references in the object file for nm */
extern const struct seed_api fio_tls_header_check_api;
const struct seed_api fio_tls_header_check_api = {
    fio_tls_new,    fio_tls_cert_add,  fio_tls_proto_add,
    fio_tls_accept, fio_tls_connect,   fio_tls_destroy,
};
#ifdef __cplusplus
}
#endif
