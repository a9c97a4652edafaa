/*
 * misuse.c -- table-driven API misuse test of libfio_tls (issue 5).
 *
 *   misuse FIXDIR [CASE-SUBSTRING]
 *
 * Every public function (include/fio_tls.h) is called with NULL and invalid
 * arguments, empty strings, over-long and odd names, and files that cannot
 * be used (directories, symlink loops, a FIFO, a 50 MiB junk file, a file
 * of mode 000 read by an unprivileged user, /proc/self/mem, /dev/zero...),
 * and with destroyed or foreign objects, stale handles whose object was
 * replaced by a new one, and objects destroyed by one thread while others
 * use them. Each row runs in its own forked
 * child, with the child's stderr captured, and must:
 *   - not crash, hang or trip a sanitizer (ASan/UBSan build: make check-asan);
 *   - log exactly one "ERROR: fio_tls: <function>: ..." line naming the
 *     problem (rows that expect an error), or nothing at all (rows that
 *     expect success), at FIO_LOG_LEVEL >= 2; nothing at levels 0-1;
 *   - return what the contract says (fio_tls_new: NULL or an object;
 *     accept/connect with a bad object: the uuid is closed).
 *
 * Built twice (see the Makefile):
 *   misuse          links libfio_tls only (no facil.io): the library finds
 *                   no host, so FIO_LOG_LEVEL is defined here (the library
 *                   reads it through a weak reference) and accept/connect
 *                   report that facil.io is missing;
 *   misuse_facil    -DMISUSE_FACIL, linked with facil.io: adds rows for
 *                   accept/connect with bad uuids (negative, never opened,
 *                   huge, already closed) and a bad object on a live uuid.
 *
 * FIXDIR is made by c_tests/suites/test_misuse.py (key.pem, cert.pem,
 * other_key.pem, ca.pem, garbage.pem, enc_key.pem, dir/, loop_a <-> loop_b,
 * fifo, junk50m, empty, mode000; DER: key.der, cert.der, enc_key.der,
 * wrong_chain.der, trailing.der). FIO_LOG_LEVEL in the environment sets the
 * level. Each child's stderr is echoed on stdout as "#   | ..." lines, so
 * the driver can check that no key material is ever logged.
 *
 * Output: "ok - ..." / "not ok - ..." per row ("# TODO" marks a known
 * library bug: not counted in this program's exit status, but a failed
 * check of test_misuse.py all the same), then "N passed, N failed".
 */
#define _GNU_SOURCE
#include "fio_tls.h"

#ifdef MISUSE_FACIL
#include <fio.h>
#endif

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MISUSE_FACIL
/* No facil.io here: the library's weak reference to facil.io's log level
 * resolves to this variable instead. */
int FIO_LOG_LEVEL = 4;
#endif

/* ---------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------ */

typedef enum { NEW, CERT_ADD, PROTO_ADD, TRUST, ACCEPT, CONNECT, DESTROY, RELOAD } op_e;
static const char *op_name[] = {"fio_tls_new",   "fio_tls_cert_add",
                                "fio_tls_proto_add", "fio_tls_trust",
                                "fio_tls_accept", "fio_tls_connect",
                                "fio_tls_destroy", "fio_tls_reload"};

/* the fio_tls_s argument */
typedef enum {
  LIVE,      /* fio_tls_new(NULL, NULL, NULL) */
  NULLOBJ,   /* NULL */
  DESTROYED, /* made and destroyed */
  FOREIGN,   /* the address of a static variable, never made by fio_tls_new */
  REPLACED,  /* made and destroyed, then another object made: it takes the
                destroyed one's slot in the library's handle table (what a
                reused address would be); the row also checks that the new
                object was left alone */
  RACING,    /* two threads run the call in a loop while the main thread
                destroys the object (no use-after-free: see check-asan) */
} obj_e;

/* the uuid argument of accept/connect */
typedef enum {
  U_FAKE,   /* 0x100 (fd 1): fine without facil.io, which is never called */
  U_MINUS1, /* -1, what fio_socket/fio_accept return on failure */
  U_NEVER,  /* fd 900, never opened */
  U_HUGE,   /* fd far beyond facil.io's table */
  U_CLOSED, /* a socketpair uuid after fio_force_close */
  U_LIVE,   /* an open socketpair uuid */
} uuid_e;

typedef enum {
  SILENT, /* success: no log line; fio_tls_new returns an object */
  ERROR,  /* one ERROR line; fio_tls_new returns NULL */
  WARN1,  /* one WARNING line (a client's failed handshake, a doubtful certificate) */
  ANYLOG, /* lines not counted (only no crash, no sanitizer report) */
} want_e;

/* In string arguments: "@name" is FIXDIR/name; "#name" a generated string
 * (see gen()); anything else is used as is. */
typedef struct {
  const char *what; /* the argument(s) under test */
  op_e op;
  obj_e obj;
  const char *a, *b, *c; /* string arguments after tls (or of fio_tls_new) */
  uuid_e uuid;
  want_e want;
  const char *needle[2]; /* substrings of the ERROR line */
  const char *bug;       /* known library bug: reported, not counted */
  unsigned flags;
} row_s;

#define FACIL_ONLY 1u /* needs facil.io linked */
#define PURE_ONLY 2u  /* expects no facil.io */
#define AS_NOBODY 4u  /* run as an unprivileged user (mode 000 files) */
#define TWICE 8u      /* accept/connect twice on the same live uuid */
#define QUIET_PEER 16u /* the peer stays connected and silent for 1 s */

static const row_s rows[] = {
    /* -------- fio_tls_new: names -------- */
    {"all NULL (self-signed for localhost)", NEW, LIVE, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"empty strings count as NULL", NEW, LIVE, "", "", "", 0, SILENT, {0}, 0, 0},
    {"server name with 0x01 bytes", NEW, LIVE, "\x01odd\x01name", NULL, NULL, 0, ERROR, {"server name", "control character"}, 0, 0},
    {"server name with a newline", NEW, LIVE, "bad\nname", NULL, NULL, 0, ERROR, {"server name", "control character"}, 0, 0},
    {"server name with a space", CERT_ADD, LIVE, "a b.test", NULL, NULL, 0, ERROR, {"server name", "a space"}, 0, 0},
    {"server name not ASCII (IDN in Unicode form)", NEW, LIVE, "b\xc3\xbc" "cher.test", NULL, NULL, 0, ERROR, {"server name", "xn--"}, 0, 0},
    {"server name of 255 bytes (the limit; CN cut to 64)", NEW, LIVE, "#name255", NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"server name of 256 bytes (over the RFC 6066 limit)", NEW, LIVE, "#name256", NULL, NULL, 0, ERROR, {"server name is 256 bytes", 0}, 0, 0},
    {"server name with 0xff bytes", NEW, LIVE, "\xff\xfe" "name", NULL, NULL, 0, ERROR, {"server name", "not valid UTF-8"}, 0, 0},
    {"server name with a truncated UTF-8 sequence", NEW, LIVE, "caf\xc3", NULL, NULL, 0, ERROR, {"server name", "not valid UTF-8"}, 0, 0},
    /* -------- fio_tls_new: file pairs -------- */
    {"key file without certificate file", NEW, LIVE, "localhost", "@key.pem", NULL, 0, ERROR, {"without a certificate file", 0}, 0, 0},
    {"certificate file without key file", NEW, LIVE, "localhost", NULL, "@cert.pem", 0, ERROR, {"without a private key file", 0}, 0, 0},
    {"empty key name, real certificate", NEW, LIVE, "localhost", "", "@cert.pem", 0, ERROR, {"without a private key file", 0}, 0, 0},
    {"valid key and certificate (control)", NEW, LIVE, "localhost", "@key.pem", "@cert.pem", 0, SILENT, {0}, 0, 0},
    {"missing key file", NEW, LIVE, "localhost", "@missing.pem", "@cert.pem", 0, ERROR, {"missing.pem", "No such file or directory"}, 0, 0},
    {"missing certificate file", NEW, LIVE, "localhost", "@key.pem", "@missing.pem", 0, ERROR, {"missing.pem", "No such file or directory"}, 0, 0},
    {"key file is a directory", NEW, LIVE, "localhost", "@dir", "@cert.pem", 0, ERROR, {"private key file", "Is a directory"}, 0, 0},
    {"certificate file is a directory", NEW, LIVE, "localhost", "@key.pem", "@dir", 0, ERROR, {"certificate file", "Is a directory"}, 0, 0},
    {"key file is a symlink loop", NEW, LIVE, "localhost", "@loop_a", "@cert.pem", 0, ERROR, {"loop_a", "Too many levels of symbolic links"}, 0, 0},
    {"certificate file is a symlink loop", NEW, LIVE, "localhost", "@key.pem", "@loop_b", 0, ERROR, {"loop_b", "Too many levels of symbolic links"}, 0, 0},
    {"key file below a regular file (ENOTDIR)", NEW, LIVE, "localhost", "@key.pem/x", "@cert.pem", 0, ERROR, {"key.pem/x", "Not a directory"}, 0, 0},
    {"key file name of 5000 bytes", NEW, LIVE, "localhost", "#longpath", "@cert.pem", 0, ERROR, {"private key file", "File name too long"}, 0, 0},
    {"key file name not UTF-8", NEW, LIVE, "localhost", "/tmp/\xff\xfe.pem", "@cert.pem", 0, ERROR, {"private key file name", "not valid UTF-8"}, 0, 0},
    {"key file is a 50 MiB junk file", NEW, LIVE, "localhost", "@junk50m", "@cert.pem", 0, ERROR, {"junk50m", "larger than"}, 0, 0},
    {"certificate file is a 50 MiB junk file", NEW, LIVE, "localhost", "@key.pem", "@junk50m", 0, ERROR, {"junk50m", "larger than"}, 0, 0},
    {"key file is /dev/zero (a device)", NEW, LIVE, "localhost", "/dev/zero", "@cert.pem", 0, ERROR, {"/dev/zero", "not a regular file"}, 0, 0},
    {"key file is unreadable (/proc/self/mem: EIO)", NEW, LIVE, "localhost", "/proc/self/mem", "@cert.pem", 0, ERROR, {"/proc/self/mem", "Input/output error"}, 0, 0},
    {"key file of mode 000, read by nobody", NEW, LIVE, "localhost", "@mode000", "@cert.pem", 0, ERROR, {"mode000", "Permission denied"}, 0, AS_NOBODY},
    {"certificate file of mode 000, read by nobody", NEW, LIVE, "localhost", "@key.pem", "@mode000", 0, ERROR, {"mode000", "Permission denied"}, 0, AS_NOBODY},
    {"key file is a FIFO with no writer (no hang)", NEW, LIVE, "localhost", "@fifo", "@cert.pem", 0, ERROR, {"fifo", "not a regular file"}, 0, 0},
    {"key file is empty", NEW, LIVE, "localhost", "@empty", "@cert.pem", 0, ERROR, {"empty", "no valid PEM"}, 0, 0},
    {"key file holds garbage PEM", NEW, LIVE, "localhost", "@garbage.pem", "@cert.pem", 0, ERROR, {"garbage.pem", "no valid PEM"}, 0, 0},
    {"certificate given as key file", NEW, LIVE, "localhost", "@cert.pem", "@cert.pem", 0, ERROR, {"private key file \"", "holds a certificate, not a private key (fio_tls_new and fio_tls_cert_add take the private key file first"}, 0, 0},
    {"key given as certificate file", NEW, LIVE, "localhost", "@key.pem", "@key.pem", 0, ERROR, {"certificate file \"", "holds a private key, not a certificate (fio_tls_new and fio_tls_cert_add take the private key file first"}, 0, 0},
    {"key and certificate swapped", NEW, LIVE, "localhost", "@cert.pem", "@key.pem", 0, ERROR, {"are swapped", "pass the private key file first, then the certificate file"}, 0, 0},
    {"key and certificate swapped", CERT_ADD, LIVE, "localhost", "@cert.pem", "@key.pem", 0, ERROR, {"are swapped", "pass the private key file first, then the certificate file"}, 0, 0},
    {"certificate (DER) given as key file", NEW, LIVE, "localhost", "@cert.der", "@cert.pem", 0, ERROR, {"cert.der\": holds a certificate", "private key file first"}, 0, 0},
    {"key that does not match the certificate", NEW, LIVE, "localhost", "@other_key.pem", "@cert.pem", 0, ERROR, {"does not match", 0}, 0, 0},
    {"encrypted key (no prompt)", NEW, LIVE, "localhost", "@enc_key.pem", "@cert.pem", 0, ERROR, {"enc_key.pem", "encrypted"}, 0, 0},
    {"encrypted key in DER form (PKCS#8, no prompt)", NEW, LIVE, "localhost", "@enc_key.der", "@cert.pem", 0, ERROR, {"enc_key.der", "the key is encrypted"}, 0, 0},
    {"key and certificate in DER form (control)", NEW, LIVE, "localhost", "@key.der", "@cert.der", 0, SILENT, {0}, 0, 0},
    {"DER chain file: every certificate is loaded (its order is checked: one WARNING)", NEW, LIVE, "localhost", "@key.pem", "@wrong_chain.der", 0, WARN1, {"wrong_chain.der", "did not issue certificate 1"}, 0, 0},
    {"DER certificate followed by junk", NEW, LIVE, "localhost", "@key.pem", "@trailing.der", 0, ERROR, {"trailing.der", "1 DER certificate(s) followed by 5 bytes that are not a DER certificate"}, 0, 0},
    {"server name the certificate does not cover (one WARNING)", NEW, LIVE, "wrong.test", "@key.pem", "@cert.pem", 0, WARN1, {"not valid for server name \"wrong.test\"", "(the certificate's names: localhost)"}, 0, 0},

    /* -------- fio_tls_cert_add -------- */
    {"NULL object", CERT_ADD, NULLOBJ, "a.test", NULL, NULL, 0, ERROR, {"NULL", 0}, 0, 0},
    {"destroyed object", CERT_ADD, DESTROYED, "a.test", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"foreign pointer", CERT_ADD, FOREIGN, "a.test", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "never returned by fio_tls_new"}, 0, 0},
    {"all NULL names (self-signed for localhost)", CERT_ADD, LIVE, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"valid key and certificate, no name (control)", CERT_ADD, LIVE, NULL, "@key.pem", "@cert.pem", 0, SILENT, {0}, 0, 0},
    {"server name the certificate does not cover (one WARNING)", CERT_ADD, LIVE, "gamma.test", "@key.pem", "@cert.pem", 0, WARN1, {"not valid for server name \"gamma.test\"", "(the certificate's names: localhost)"}, 0, 0},
    {"RSA-1024 certificate (under OpenSSL's security level)", NEW, LIVE, "localhost", "@rsa1024_key.pem", "@rsa1024.pem", 0, ERROR, {"rsa1024.pem", "refuses it"}, 0, 0},
    {"expired certificate (one WARNING)", NEW, LIVE, "localhost", "@key.pem", "@expired.pem", 0, WARN1, {"expired.pem", "expired on"}, 0, 0},
    {"chain out of order (one WARNING)", NEW, LIVE, "localhost", "@key.pem", "@wrong_chain.pem", 0, WARN1, {"did not issue certificate 1", 0}, 0, 0},
    {"a name that already has a certificate (one WARNING)", CERT_ADD, LIVE, "localhost", "@key.pem", "@cert.pem", 0, WARN1, {"already has a certificate", 0}, 0, 0},
    {"server name not UTF-8", CERT_ADD, LIVE, "\xc0\xaf", NULL, NULL, 0, ERROR, {"server name", "not valid UTF-8"}, 0, 0},
    {"key file without certificate file", CERT_ADD, LIVE, "a.test", "@key.pem", NULL, 0, ERROR, {"without a certificate file", 0}, 0, 0},
    {"key file is a directory", CERT_ADD, LIVE, "a.test", "@dir", "@cert.pem", 0, ERROR, {"Is a directory", 0}, 0, 0},
    {"certificate file is a symlink loop", CERT_ADD, LIVE, "a.test", "@key.pem", "@loop_a", 0, ERROR, {"Too many levels of symbolic links", 0}, 0, 0},
    {"certificate file is a 50 MiB junk file", CERT_ADD, LIVE, "a.test", "@key.pem", "@junk50m", 0, ERROR, {"larger than", 0}, 0, 0},
    {"key file of mode 000, read by nobody", CERT_ADD, LIVE, "a.test", "@mode000", "@cert.pem", 0, ERROR, {"Permission denied", 0}, 0, AS_NOBODY},
    {"certificate file is a FIFO with no writer (no hang)", CERT_ADD, LIVE, "a.test", "@key.pem", "@fifo", 0, ERROR, {"fifo", "not a regular file"}, 0, 0},
    {"key that does not match the certificate", CERT_ADD, LIVE, "a.test", "@other_key.pem", "@cert.pem", 0, ERROR, {"does not match", 0}, 0, 0},

    /* -------- fio_tls_proto_add -------- */
    {"NULL object", PROTO_ADD, NULLOBJ, "h2", NULL, NULL, 0, ERROR, {"NULL", 0}, 0, 0},
    {"destroyed object", PROTO_ADD, DESTROYED, "h2", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"foreign pointer", PROTO_ADD, FOREIGN, "h2", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "never returned by fio_tls_new"}, 0, 0},
    {"NULL name", PROTO_ADD, LIVE, NULL, NULL, NULL, 0, ERROR, {"protocol name is NULL or empty", 0}, 0, 0},
    {"empty name", PROTO_ADD, LIVE, "", NULL, NULL, 0, ERROR, {"protocol name is NULL or empty", 0}, 0, 0},
    {"name of 256 bytes", PROTO_ADD, LIVE, "#alpn256", NULL, NULL, 0, ERROR, {"256 bytes", "255"}, 0, 0},
    {"name of 255 bytes (the limit)", PROTO_ADD, LIVE, "#alpn255", NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"name of 100000 bytes", PROTO_ADD, LIVE, "#alpn100k", NULL, NULL, 0, ERROR, {"100000 bytes", "255"}, 0, 0},
    {"name with 0x01 bytes (valid ALPN bytes)", PROTO_ADD, LIVE, "\x01proto\x01", NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"name with 0xff bytes", PROTO_ADD, LIVE, "\xffproto", NULL, NULL, 0, ERROR, {"protocol name", "not valid UTF-8"}, 0, 0},
    {"name with an overlong UTF-8 encoding", PROTO_ADD, LIVE, "\xc0\x80", NULL, NULL, 0, ERROR, {"protocol name", "not valid UTF-8"}, 0, 0},
    {"the same name twice (replaces the callback)", PROTO_ADD, LIVE, "#same", NULL, NULL, 0, SILENT, {0}, 0, 0},

    /* -------- fio_tls_trust -------- */
    {"NULL object", TRUST, NULLOBJ, "@cert.pem", NULL, NULL, 0, ERROR, {"NULL", 0}, 0, 0},
    {"destroyed object", TRUST, DESTROYED, "@cert.pem", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"foreign pointer", TRUST, FOREIGN, "@cert.pem", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "never returned by fio_tls_new"}, 0, 0},
    {"NULL CA file (system store)", TRUST, LIVE, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"valid CA file (control)", TRUST, LIVE, "@ca.pem", NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"missing CA file", TRUST, LIVE, "@missing.pem", NULL, NULL, 0, ERROR, {"CA file", "No such file or directory"}, 0, 0},
    {"CA file is a directory", TRUST, LIVE, "@dir", NULL, NULL, 0, ERROR, {"CA file", "Is a directory"}, 0, 0},
    {"CA file is a symlink loop", TRUST, LIVE, "@loop_b", NULL, NULL, 0, ERROR, {"CA file", "Too many levels of symbolic links"}, 0, 0},
    {"CA file is a 50 MiB junk file", TRUST, LIVE, "@junk50m", NULL, NULL, 0, ERROR, {"CA file", "larger than"}, 0, 0},
    {"CA file of mode 000, read by nobody", TRUST, LIVE, "@mode000", NULL, NULL, 0, ERROR, {"CA file", "Permission denied"}, 0, AS_NOBODY},
    {"CA file is a private key", TRUST, LIVE, "@key.pem", NULL, NULL, 0, ERROR, {"CA file", "holds a private key, not CA certificates"}, 0, 0},
    {"CA file name not UTF-8", TRUST, LIVE, "/tmp/\xff.pem", NULL, NULL, 0, ERROR, {"CA file name", "not valid UTF-8"}, 0, 0},
    {"CA file is a FIFO with no writer (no hang)", TRUST, LIVE, "@fifo", NULL, NULL, 0, ERROR, {"fifo", "not a regular file"}, 0, 0},

    /* -------- fio_tls_accept / fio_tls_connect without facil.io -------- */
    {"NULL object", ACCEPT, NULLOBJ, NULL, NULL, NULL, U_FAKE, ERROR, {"NULL", 0}, 0, 0},
    {"destroyed object", ACCEPT, DESTROYED, NULL, NULL, NULL, U_FAKE, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"foreign pointer", CONNECT, FOREIGN, NULL, NULL, NULL, U_FAKE, ERROR, {"not a live fio_tls_s", "never returned by fio_tls_new"}, 0, 0},
    {"live object, no facil.io in the process", ACCEPT, LIVE, NULL, NULL, NULL, U_FAKE, ERROR, {"facil.io is not linked", 0}, 0, PURE_ONLY},
    {"live object, no facil.io in the process", CONNECT, LIVE, NULL, NULL, NULL, U_FAKE, ERROR, {"facil.io is not linked", 0}, 0, PURE_ONLY},

    /* -------- fio_tls_accept / fio_tls_connect with facil.io -------- */
    {"uuid -1", ACCEPT, LIVE, NULL, NULL, NULL, U_MINUS1, ERROR, {"not an open connection", 0}, 0, FACIL_ONLY},
    {"uuid -1", CONNECT, LIVE, NULL, NULL, NULL, U_MINUS1, ERROR, {"not an open connection", 0}, 0, FACIL_ONLY},
    {"uuid of a never opened fd", ACCEPT, LIVE, NULL, NULL, NULL, U_NEVER, ERROR, {"not an open connection", 0}, 0, FACIL_ONLY},
    {"uuid beyond facil.io's table", CONNECT, LIVE, NULL, NULL, NULL, U_HUGE, ERROR, {"not an open connection", 0}, 0, FACIL_ONLY},
    {"uuid already closed", ACCEPT, LIVE, NULL, NULL, NULL, U_CLOSED, ERROR, {"not an open connection", 0}, 0, FACIL_ONLY},
    {"uuid already closed", CONNECT, LIVE, NULL, NULL, NULL, U_CLOSED, ERROR, {"not an open connection", 0}, 0, FACIL_ONLY},
    {"NULL object on a live uuid (the uuid is closed)", ACCEPT, NULLOBJ, NULL, NULL, NULL, U_LIVE, ERROR, {"NULL", 0}, 0, FACIL_ONLY},
    {"destroyed object on a live uuid (the uuid is closed)", CONNECT, DESTROYED, NULL, NULL, NULL, U_LIVE, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, FACIL_ONLY},
    {"live uuid (fio_fd2uuid), peer silent for 1 s: still open", ACCEPT, LIVE, NULL, NULL, NULL, U_LIVE, SILENT, {0}, 0, FACIL_ONLY | QUIET_PEER},
    {"live uuid, peer hangs up (DEBUG line only)", ACCEPT, LIVE, NULL, NULL, NULL, U_LIVE, SILENT, {0}, 0, FACIL_ONLY},
    {"live uuid, peer hangs up (one WARNING)", CONNECT, LIVE, NULL, NULL, NULL, U_LIVE, WARN1, {"TLS handshake failed (client", 0}, 0, FACIL_ONLY},
    {"twice on the same live uuid, peer hangs up", ACCEPT, LIVE, NULL, NULL, NULL, U_LIVE, ANYLOG, {0}, 0, FACIL_ONLY | TWICE},
    {"twice on the same live uuid, peer hangs up", CONNECT, LIVE, NULL, NULL, NULL, U_LIVE, ANYLOG, {0}, 0, FACIL_ONLY | TWICE},

    /* -------- stale handles and races -------- */
    {"stale handle: destroyed, a new object made in its place", CERT_ADD, REPLACED, "a.test", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"stale handle: destroyed, a new object made in its place", PROTO_ADD, REPLACED, "h2", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"stale handle: destroyed, a new object made in its place", TRUST, REPLACED, "@ca.pem", NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"stale handle: destroyed, a new object made in its place", ACCEPT, REPLACED, NULL, NULL, NULL, U_FAKE, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"stale handle: a second destroy after a new object was made leaves it alone", DESTROY, REPLACED, NULL, NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"destroyed by another thread while two threads add protocols", PROTO_ADD, RACING, "h2", NULL, NULL, 0, ANYLOG, {0}, 0, 0},
    {"destroyed by another thread while two threads add certificates", CERT_ADD, RACING, "a.test", NULL, NULL, 0, ANYLOG, {0}, 0, 0},
    {"destroyed by another thread while two threads set trust", TRUST, RACING, "@ca.pem", NULL, NULL, 0, ANYLOG, {0}, 0, 0},
    {"destroyed by another thread while two threads start connections", ACCEPT, RACING, NULL, NULL, NULL, U_FAKE, ANYLOG, {0}, 0, PURE_ONLY},
    {"destroyed by three threads at once", DESTROY, RACING, NULL, NULL, NULL, 0, ANYLOG, {0}, 0, 0},

    /* -------- fio_tls_reload -------- */
    {"NULL: every live object", RELOAD, NULLOBJ, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"live object (self-signed: nothing to re-read)", RELOAD, LIVE, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"destroyed object", RELOAD, DESTROYED, NULL, NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"foreign pointer", RELOAD, FOREIGN, NULL, NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "never returned by fio_tls_new"}, 0, 0},
    {"stale handle: destroyed, a new object made in its place", RELOAD, REPLACED, NULL, NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"destroyed by another thread while two threads reload it", RELOAD, RACING, NULL, NULL, NULL, 0, ANYLOG, {0}, 0, 0},

    /* -------- fio_tls_destroy -------- */
    {"NULL (ignored, like free)", DESTROY, NULLOBJ, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
    {"twice (destroyed object)", DESTROY, DESTROYED, NULL, NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "destroyed by fio_tls_destroy"}, 0, 0},
    {"foreign pointer", DESTROY, FOREIGN, NULL, NULL, NULL, 0, ERROR, {"not a live fio_tls_s", "never returned by fio_tls_new"}, 0, 0},
    {"live object (control)", DESTROY, LIVE, NULL, NULL, NULL, 0, SILENT, {0}, 0, 0},
};

/* ---------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------ */

static const char *fixdir;
static long foreign_object[8];

/* the child's generated strings, kept reachable until it exits (so that
 * LeakSanitizer reports only the library's leaks) */
static char *kept[8];
static char *keep(char *s) {
  for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); ++i)
    if (!kept[i])
      return kept[i] = s;
  abort();
}

static char *repeat(char ch, size_t n) {
  char *s = keep(malloc(n + 1));
  if (!s)
    abort();
  memset(s, ch, n);
  s[n] = 0;
  return s;
}

/* strings are made in the child and live until it exits */
static const char *arg(const char *spec) {
  if (!spec)
    return NULL;
  if (spec[0] == '@') {
    size_t n = strlen(fixdir) + strlen(spec) + 2;
    char *p = keep(malloc(n));
    if (!p)
      abort();
    snprintf(p, n, "%s/%s", fixdir, spec + 1);
    return p;
  }
  if (spec[0] != '#')
    return spec;
  if (!strcmp(spec, "#name255"))
    return repeat('n', 255);
  if (!strcmp(spec, "#name256"))
    return repeat('n', 256);
  if (!strcmp(spec, "#alpn255"))
    return repeat('a', 255);
  if (!strcmp(spec, "#alpn256"))
    return repeat('a', 256);
  if (!strcmp(spec, "#alpn100k"))
    return repeat('a', 100000);
  if (!strcmp(spec, "#same"))
    return "http/1.1";
  if (!strcmp(spec, "#longpath")) {
    char *p = repeat('d', 5000);
    p[0] = '/';
    return p;
  }
  fprintf(stdout, "misuse: unknown argument %s\n", spec);
  exit(2);
}

static void noop_callback(intptr_t uuid, void *udata) {
  (void)uuid;
  (void)udata;
}

/* ---------------------------------------------------------------------------
 * One row, in a child process. Exit status: 0 the return value was as
 * expected, 3 it was not (the reason went to stdout).
 * ------------------------------------------------------------------------ */

#ifdef MISUSE_FACIL
static int peer_fd = -1;

static intptr_t make_uuid(uuid_e kind) {
  int sv[2];
  switch (kind) {
  case U_FAKE:
    return 0x100;
  case U_MINUS1:
    return -1;
  case U_NEVER:
    return (intptr_t)900 << 8;
  case U_HUGE:
    return (intptr_t)0x7fffffffffff00;
  case U_CLOSED:
  case U_LIVE:
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
      return -1;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    peer_fd = sv[1];
    intptr_t uuid = fio_fd2uuid(sv[0]);
    if (kind == U_CLOSED)
      fio_force_close(uuid);
    return uuid;
  }
  return -1;
}

/* rows on a live uuid run inside the reactor: start TLS, hang up the peer
 * after 100 ms, and by 1 s the library must have closed the uuid */
static const row_s *reactor_row;
static fio_tls_s *reactor_tls;
static intptr_t reactor_uuid = -1;
static const char *reactor_verdict = "the reactor did not run the row";

static void reactor_check(void *ignored) {
  (void)ignored;
  if (reactor_row->flags & QUIET_PEER)
    reactor_verdict = fio_is_closed(reactor_uuid)
                          ? "the uuid was closed after 1 s, long before the "
                            "handshake deadline (10 s)"
                          : NULL;
  else
    reactor_verdict = fio_is_closed(reactor_uuid)
                          ? NULL
                          : "the uuid was still open 0.9 s after the peer hung up";
  fio_stop();
}
static void hang_up_peer(void *ignored) {
  (void)ignored;
  if (peer_fd >= 0)
    close(peer_fd);
  peer_fd = -1;
}
static void reactor_start(void *ignored) {
  (void)ignored;
  const row_s *r = reactor_row;
  void (*start)(intptr_t, fio_tls_s *, void *) =
      r->op == ACCEPT ? fio_tls_accept : fio_tls_connect;
  reactor_uuid = make_uuid(U_LIVE);
  start(reactor_uuid, reactor_tls, (void *)0x1234);
  if (r->flags & TWICE)
    start(reactor_uuid, reactor_tls, (void *)0x5678);
  if (!(r->flags & QUIET_PEER))
    fio_run_every(100, 1, hang_up_peer, NULL, NULL);
  fio_run_every(1000, 1, reactor_check, NULL, NULL);
}
#else
static intptr_t make_uuid(uuid_e kind) {
  (void)kind;
  return 0x100;
}
#endif

/* RACING rows: the call under test, in a loop, on two threads */
typedef struct {
  const row_s *r;
  fio_tls_s *tls;
  const char *a, *b, *c;
  volatile int *go;
} racer_s;

static void *racer(void *arg) {
  racer_s *x = arg;
  /* making a self-signed certificate or building contexts takes a while */
  int rounds = x->r->op == PROTO_ADD || x->r->op == DESTROY ||
                       x->r->op == ACCEPT || x->r->op == RELOAD
                   ? 400
                   : 25;
  while (!*x->go)
    ;
  for (int i = 0; i < rounds; ++i) {
    switch (x->r->op) {
    case CERT_ADD:
      fio_tls_cert_add(x->tls, x->a, x->b, x->c);
      break;
    case PROTO_ADD:
      fio_tls_proto_add(x->tls, x->a, NULL);
      break;
    case TRUST:
      fio_tls_trust(x->tls, x->a);
      break;
    case ACCEPT:
      fio_tls_accept(0x100, x->tls, NULL);
      break;
    case DESTROY:
      fio_tls_destroy(x->tls);
      break;
    case RELOAD:
      fio_tls_reload(x->tls);
      break;
    default:
      break;
    }
  }
  return NULL;
}

static int run_racing_row(const row_s *r, const char *a, const char *b,
                          const char *c) {
  volatile int go = 0;
  fio_tls_s *tls = fio_tls_new(NULL, NULL, NULL);
  if (!tls) {
    printf("#   setup: fio_tls_new(NULL, NULL, NULL) failed\n");
    return 3;
  }
  racer_s x = {r, tls, a, b, c, &go};
  pthread_t t[2];
  for (int i = 0; i < 2; ++i)
    if (pthread_create(&t[i], NULL, racer, &x)) {
      printf("#   setup: pthread_create failed\n");
      return 3;
    }
  go = 1;
  usleep(300);
  fio_tls_destroy(tls);
  for (int i = 0; i < 2; ++i)
    pthread_join(t[i], NULL);
  return 0;
}

static int run_row(const row_s *r) {
  fio_tls_s *tls = NULL;
  fio_tls_s *replacement = NULL; /* REPLACED: the object made after */
  if (r->obj == RACING)
    return run_racing_row(r, arg(r->a), arg(r->b), arg(r->c));
  switch (r->obj) {
  case LIVE:
    if (r->op != NEW && !(tls = fio_tls_new(NULL, NULL, NULL))) {
      printf("#   setup: fio_tls_new(NULL, NULL, NULL) failed\n");
      return 3;
    }
    break;
  case NULLOBJ:
    break;
  case DESTROYED:
    tls = fio_tls_new(NULL, NULL, NULL);
    fio_tls_destroy(tls);
    break;
  case FOREIGN:
    tls = (fio_tls_s *)(void *)foreign_object;
    break;
  case REPLACED:
    tls = fio_tls_new(NULL, NULL, NULL);
    fio_tls_destroy(tls);
    replacement = fio_tls_new(NULL, NULL, NULL);
    if (!replacement) {
      printf("#   setup: fio_tls_new(NULL, NULL, NULL) failed\n");
      return 3;
    }
    if (replacement == tls)
      printf("#   (the new object has the stale handle's value)\n");
    break;
  case RACING:
    break;
  }
  const char *a = arg(r->a), *b = arg(r->b), *c = arg(r->c);
  switch (r->op) {
  case NEW: {
    fio_tls_s *made = fio_tls_new(a, b, c);
    /* an object comes back unless the row wants an ERROR */
    if ((made != NULL) == (r->want == ERROR)) {
      printf("#   fio_tls_new returned %p\n", (void *)made);
      return 3;
    }
    fio_tls_destroy(made);
    return 0;
  }
  case CERT_ADD:
    fio_tls_cert_add(tls, a, b, c);
    break;
  case PROTO_ADD:
    fio_tls_proto_add(tls, a, noop_callback);
    if (r->a && !strcmp(r->a, "#same"))
      fio_tls_proto_add(tls, a, NULL);
    break;
  case TRUST:
    fio_tls_trust(tls, a);
    break;
  case ACCEPT:
  case CONNECT: {
#ifdef MISUSE_FACIL
    if (r->uuid == U_LIVE && r->obj == LIVE) {
      /* the realistic case: inside the reactor, as from on_open */
      reactor_row = r;
      reactor_tls = tls;
      fio_state_callback_add(FIO_CALL_ON_START, reactor_start, NULL);
      fio_start(.threads = 1, .workers = 1);
      if (reactor_verdict) {
        printf("#   %s\n", reactor_verdict);
        return 3;
      }
      break;
    }
#endif
    intptr_t uuid = make_uuid(r->uuid);
    void (*start)(intptr_t, fio_tls_s *, void *) =
        r->op == ACCEPT ? fio_tls_accept : fio_tls_connect;
    start(uuid, tls, (void *)0x1234);
    if (r->flags & TWICE)
      start(uuid, tls, (void *)0x5678);
#ifdef MISUSE_FACIL
    if (r->uuid == U_LIVE && !fio_is_closed(uuid)) {
      printf("#   the uuid is still open after a refused %s\n", op_name[r->op]);
      return 3;
    }
#endif
    break;
  }
  case DESTROY:
    fio_tls_destroy(tls);
    tls = NULL; /* destroyed (or never ours) */
    break;
  case RELOAD:
    fio_tls_reload(tls);
    break;
  }
  if (r->obj == LIVE)
    fio_tls_destroy(tls);
  if (replacement) {
    /* left alone by the stale handle: still live (these two calls log
     * nothing), with no protocol added through the stale handle */
    fio_tls_proto_add(replacement, "still-live", NULL);
    fio_tls_destroy(replacement);
  }
  return 0;
}

/* ---------------------------------------------------------------------------
 * Checking a row's stderr
 * ------------------------------------------------------------------------ */

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, n = 0;
  if (!f)
    return calloc(1, 1);
  for (;;) {
    if (n + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      buf = realloc(buf, cap);
      if (!buf)
        abort();
    }
    size_t got = fread(buf + n, 1, 4096, f);
    if (!got)
      break;
    n += got;
  }
  fclose(f);
  buf[n] = 0;
  *len = n;
  return buf;
}

static int starts_with(const char *s, const char *prefix) {
  return !strncmp(s, prefix, strlen(prefix));
}

static int passed, failed, todo;

static void report(const row_s *r, int ok, const char *why, const char *err) {
  char name[512];
  snprintf(name, sizeof(name), "%s: %s", op_name[r->op], r->what);
  if (ok && r->bug) {
    printf("ok - %s # known bug no longer seen (remove the mark): %s\n", name, r->bug);
    passed++;
  } else if (ok) {
    printf("ok - %s\n", name);
    passed++;
  } else if (r->bug) {
    printf("not ok - %s # TODO known library bug: %s (%s)\n", name, r->bug, why);
    todo++;
  } else {
    printf("not ok - %s: %s\n", name, why);
    failed++;
  }
  /* the child's stderr, for the driver's secrets check and for humans */
  const char *line = err;
  while (line && *line) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    printf("#   | %.*s\n", (int)len, line);
    line = end ? end + 1 : NULL;
  }
}

static void check_row(const row_s *r, int status, int timed_out, const char *err,
                      int level) {
  char why[512] = "";
  if (timed_out) {
    report(r, 0, "hung (killed after the deadline)", err);
    return;
  }
  if (WIFSIGNALED(status)) {
    snprintf(why, sizeof(why), "crashed with signal %d", WTERMSIG(status));
    report(r, 0, why, err);
    return;
  }
  if (WEXITSTATUS(status) == 3) {
    report(r, 0, "unexpected return value or state (see above)", err);
    return;
  }
  if (WEXITSTATUS(status) != 0) {
    snprintf(why, sizeof(why), "child exited with status %d", WEXITSTATUS(status));
    report(r, 0, why, err);
    return;
  }
  static const char *const forbidden[] = {"Sanitizer", "runtime error", "panicked",
                                          "internal error", "FATAL", NULL};
  for (int i = 0; forbidden[i]; ++i)
    if (strstr(err, forbidden[i])) {
      snprintf(why, sizeof(why), "stderr mentions \"%s\"", forbidden[i]);
      report(r, 0, why, err);
      return;
    }
  int errors = 0, warnings = 0;
  const char *error_line = NULL, *warning_line = NULL;
  for (const char *l = err; *l;) {
    if (starts_with(l, "ERROR: ")) {
      errors++;
      if (!error_line)
        error_line = l;
    }
    if (starts_with(l, "WARNING: ")) {
      warnings++;
      if (!warning_line)
        warning_line = l;
    }
    const char *nl = strchr(l, '\n');
    if (!nl)
      break;
    l = nl + 1;
  }
  if (r->want == ANYLOG) {
    report(r, 1, NULL, err);
    return;
  }
  int want_errors = (r->want == ERROR && level >= 2) ? 1 : 0;
  int want_warnings = (r->want == WARN1 && level >= 3) ? 1 : 0;
  if (errors != want_errors || warnings != want_warnings) {
    snprintf(why, sizeof(why), "%d ERROR and %d WARNING lines, expected %d and %d",
             errors, warnings, want_errors, want_warnings);
    report(r, 0, why, err);
    return;
  }
  const char *line = want_errors ? error_line : want_warnings ? warning_line : NULL;
  if (line) {
    char prefix[128];
    if (want_errors)
      snprintf(prefix, sizeof(prefix), "ERROR: fio_tls: %s: ", op_name[r->op]);
    else
      snprintf(prefix, sizeof(prefix), "WARNING: fio_tls: ");
    if (!starts_with(line, prefix)) {
      snprintf(why, sizeof(why), "the line does not start with \"%s\"", prefix);
      report(r, 0, why, err);
      return;
    }
    char *copy = strndup(line, strcspn(line, "\n"));
    for (int i = 0; i < 2 && r->needle[i]; ++i) {
      if (!copy || !strstr(copy, r->needle[i])) {
        snprintf(why, sizeof(why), "the line lacks \"%s\"", r->needle[i]);
        free(copy);
        report(r, 0, why, err);
        return;
      }
    }
    free(copy);
  }
  report(r, 1, NULL, err);
}

static void drop_privileges(void) {
  if (geteuid() != 0)
    return;
  if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) {
    printf("#   could not become nobody: %s\n", strerror(errno));
    exit(3);
  }
}

/* Proves that a sanitizer report in a child is seen: a use-after-free in
 * plain C. Only meaningful in the sanitizer build. */
static int canary(const char *errpath) {
  int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 2);
    char *volatile p = malloc(16);
    free(p);
    volatile char c = p[3];
    exit(c == 42 ? 5 : 6);
  }
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  size_t len = 0;
  char *err = slurp(errpath, &len);
  int caught = strstr(err, "AddressSanitizer: heap-use-after-free") != NULL &&
               !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  printf("%s - sanitizer canary (a use-after-free in a child) is caught\n",
         caught ? "ok" : "not ok");
  free(err);
  unlink(errpath);
  printf("%d passed, %d failed\n", caught, !caught);
  return caught ? 0 : 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: %s FIXDIR [CASE-SUBSTRING]\n", argv[0]);
    return 2;
  }
  fixdir = argv[1];
  const char *only = argc > 2 ? argv[2] : NULL;
  const char *lvl = getenv("FIO_LOG_LEVEL");
  if (lvl && *lvl)
    FIO_LOG_LEVEL = atoi(lvl);
  int level = FIO_LOG_LEVEL;
#ifdef MISUSE_FACIL
  const unsigned skip = PURE_ONLY;
  const char *build = "with facil.io";
#else
  const unsigned skip = FACIL_ONLY;
  const char *build = "without facil.io";
#endif
  printf("# libfio_tls API misuse table (%s, FIO_LOG_LEVEL=%d)\n", build, level);
  const char *sk = getenv("MISUSE_SKIP_KNOWN_BUGS");
  int skip_known = sk && *sk && strcmp(sk, "0");

  char errpath[4096];
  snprintf(errpath, sizeof(errpath), "%s/stderr.%ld", fixdir, (long)getpid());
  if (only && !strcmp(only, "--canary"))
    return canary(errpath);
  for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); ++i) {
    const row_s *r = &rows[i];
    if (r->flags & skip)
      continue;
    if (r->bug && skip_known)
      continue;
    if (only) {
      char name[512];
      snprintf(name, sizeof(name), "%s: %s", op_name[r->op], r->what);
      if (!strstr(name, only))
        continue;
    }
    int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      printf("misuse: cannot create %s: %s\n", errpath, strerror(errno));
      return 2;
    }
    pid_t pid = fork();
    if (pid == 0) {
      dup2(fd, 2);
      close(fd);
      if (r->flags & AS_NOBODY)
        drop_privileges();
      /* exit (not _exit): LeakSanitizer checks at exit */
      exit(run_row(r) == 0 ? 0 : 3);
    }
    close(fd);
    /* a known hang is cut short: it is reported, not waited for */
    double deadline = (r->flags & QUIET_PEER) ? 5.0 : r->bug ? 0.5 : 20.0;
    int status = 0, timed_out = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid)
        break;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        timed_out = 1;
        break;
      }
      usleep(2000);
    }
    size_t len = 0;
    char *err = slurp(errpath, &len);
    check_row(r, status, timed_out, err, level);
    free(err);
  }
  unlink(errpath);
  printf("# known library bugs (TODO, not counted): %d\n", todo);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
