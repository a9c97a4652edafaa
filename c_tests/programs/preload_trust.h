/* The preload build links facil.io only (libfio_tls comes from LD_PRELOAD
 * at run time), so the extension fio_tls_trust -- which facil.io does not
 * define -- must be a weak reference there, checked before use. The other
 * builds reference it normally (the link fails if it is missing). Shared by
 * fio_client.c and fio_server.c; include it after fio_tls.h. */
#ifndef FIO_TLS_TESTS_PRELOAD_TRUST_H
#define FIO_TLS_TESTS_PRELOAD_TRUST_H

#include "fio_tls.h"

#ifdef FIO_TESTS_PRELOAD
#pragma weak fio_tls_trust
#define HAVE_TRUST() (fio_tls_trust != NULL)
#else
#define HAVE_TRUST() 1
#endif

#endif
