/*
 * fio_tls07.h - libfio_tls07's extensions to facil.io 0.7.x's TLS API.
 *
 * libfio_tls07 (make API=0.7) implements the nine functions of facil.io
 * 0.7.0-0.7.6's lib/facil/tls/fio_tls.h (fio_tls_new with the certificate
 * before the key and a key password, fio_tls_cert_add, fio_tls_alpn_add,
 * fio_tls_alpn_count, fio_tls_trust, fio_tls_accept, fio_tls_connect,
 * fio_tls_dup, fio_tls_destroy) with their exact signatures: applications
 * include facil.io's own fio_tls.h for those (README.md, "facil.io 0.7.x
 * (release API)", says what each one does here). This header declares only
 * what libfio_tls07 adds, and makes the link fail early when libfio_tls07
 * is missing from it. Include it after or before facil.io's fio_tls.h, in
 * C or C++.
 *
 * Kept by hand (the Rust sources are in src/ffi/api07.rs and
 * src/ffi/cluster.rs); make check compares what it declares with what
 * libfio_tls07.so exports (c_tests/suites/test_lib07.py).
 */
#ifndef LIBFIO_TLS_FIO_TLS07_H
#define LIBFIO_TLS_FIO_TLS07_H

#ifdef __cplusplus
extern "C" {
#endif

/* `struct fio_tls_s` is facil.io's opaque fio_tls_s (the typedef is in
 * facil.io's fio_tls.h; C99 forbids repeating it, so this header names the
 * struct and stands alone). */
struct fio_tls_s;

/**
 * Extension: re-checks the watched files of `tls` (NULL: of every live
 * object) now, in every process of the application: each certificate's
 * certificate and key files and the CA files of fio_tls_trust. A changed
 * pair that loads (with the key password it was added with) serves new
 * handshakes; established connections keep theirs; an unusable change keeps
 * the old certificate with one WARNING. While facil.io runs, the request
 * reaches the root process and every worker as a cluster filter message
 * (filter 0x46544C52) and the call returns at once; before fio_start or
 * without facil.io's pub/sub, the calling process re-checks before
 * returning. A destroyed or never-made `tls` is one ERROR line and nothing
 * else. Callable from any thread, not from a signal handler.
 */
void fio_tls_reload(struct fio_tls_s *tls);

/** Does nothing; only libfio_tls07 defines it (see the link check below). */
void fio_tls_needs_libfio_tls07_on_the_link_line(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

/*
 * Link check. Every file that includes this header refers to
 * fio_tls_needs_libfio_tls07_on_the_link_line(), which only libfio_tls07
 * defines: without libfio_tls07 (or with the beta4 libfio_tls, whose API
 * differs) the link fails naming it, instead of the program exiting in
 * facil.io's "no SSL/TLS library" stub at run time; and a static link pulls
 * libfio_tls07.a in even when libfacil.io.a comes first. With LD_PRELOAD,
 * define FIO_TLS_NO_LINK_CHECK before including this header. Needs a
 * GNU-compatible compiler (gcc, clang); otherwise put libfio_tls07 before
 * facil.io on the link line.
 */
#if defined(__GNUC__) && !defined(FIO_TLS_NO_LINK_CHECK)
static void (*const fio_tls07_link_check_)(void) __attribute__((used, unused)) =
    fio_tls_needs_libfio_tls07_on_the_link_line;
#endif

#endif /* LIBFIO_TLS_FIO_TLS07_H */
