//! The C boundary of facil.io 0.7.x's release API (tags 0.7.0 to 0.7.6,
//! `lib/facil/tls/fio_tls.h`): the nine `fio_tls_*` functions with their
//! exact signatures, built instead of the beta4 ones with the cargo
//! feature `api07` (`make API=0.7`: `libfio_tls07.so` / `libfio_tls07.a`).
//! Applications include facil.io's own `fio_tls.h`; our extensions
//! (`fio_tls_reload`) are declared in `include/fio_tls07.h`.
//!
//! The engine, the handle table, the rw hooks and the error reporting are
//! the beta4 build's: only the signatures, the argument order, the key
//! password, the ALPN registration ([`crate::facil::v076::Registration`])
//! and the reference count differ. What differs from facil.io 0.7.6's own
//! OpenSSL backend (`fio_tls_openssl.c`) is said at each function.
//!
//! References: `fio_tls_new` makes an object holding one reference;
//! `fio_tls_dup` adds one (facil.io's `fio_listen` / `fio_connect` do, for
//! as long as the listener or connecting socket lives) and
//! `fio_tls_destroy` takes one away. At 0 the handle is destroyed: every
//! later call with it is reported as a destroyed handle, never acted on.
//! Connections already started keep what they use (contexts, certificates
//! and ALPN registrations) until they close, as in facil.io's backend,
//! where a connection holds a reference of its own.

use super::boundary::ffi_boundary;
use super::handle::Lookup;
use super::{add_cert, fio_tls_s, new_object, object, opt_str, remove, report_bad, start, trust, OBJECTS};
use crate::facil::v076::{Alpn, OnCleanup, OnSelected, Registration};
use crate::log::log_error;
use crate::tls::{KeyPassword, Role};
use libc::{c_char, c_void};
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `pk_password`: NULL or "" is no password; any bytes otherwise (copied,
/// and wiped when no longer needed).
unsafe fn password(pk_password: *const c_char) -> Option<KeyPassword> {
    if pk_password.is_null() {
        return None;
    }
    KeyPassword::new(CStr::from_ptr(pk_password).to_bytes())
}

/// Creates a TLS settings object with a default certificate (facil.io
/// 0.7.x signature: the certificate file **before** the key file, then the
/// key's password).
///
/// - `server_name`: the default certificate's host name; a client sends
///   it as SNI and checks the server's certificate against it once
///   `fio_tls_trust` was called. May be NULL. Checked as in the beta4
///   build (ASCII host name or IP address, at most 255 bytes).
/// - `public_cert_file`, `private_key_file`: PEM or DER files; the
///   certificate file may hold the whole chain, leaf first. The key must
///   match the leaf.
/// - `pk_password`: decrypts an encrypted private key (PEM, traditional
///   or PKCS#8, or encrypted PKCS#8 DER; OpenSSL does the decryption,
///   nothing prompts on a terminal). NULL or "" for a key that is not
///   encrypted; a password given for a plain key is not needed and not an
///   error. It is copied, kept (wiped on release) to decrypt the renewed
///   key file when the watched files change, and never logged.
/// - Both files NULL: a self-signed ECDSA P-256 certificate for
///   `server_name` (or "localhost" when NULL), renewed before it expires.
///   facil.io 0.7.6's backend makes no certificate at all when
///   `server_name` is NULL too; ours can still serve.
/// - Both files NULL with `FIO_TLS_ACME_DIRECTORY` set: `server_name` gets
///   its certificate from that ACME CA (TLS-ALPN-01 answered on the
///   application's own port), as in the beta4 build; the self-signed one
///   serves until then.
///
/// Everything else (watched files, TLS 1.2 and 1.3 only, key exchange
/// groups, rotating session tickets, the handshake deadline, the
/// environment variables) is as documented for the beta4 build in
/// `include/fio_tls.h`.
///
/// Returns a new object holding one reference (release it with
/// `fio_tls_destroy`), or NULL after one `ERROR: fio_tls: fio_tls_new: ...`
/// line naming the file and the reason: missing or unreadable file, no
/// valid PEM or DER, key/certificate mismatch, the files swapped, only one
/// of the two files, an encrypted key without `pk_password` ("no password
/// (pk_password) was given"), a password that does not decrypt the key
/// ("the password given does not decrypt it"). facil.io 0.7.6's backend
/// exits the process on a missing file and silently serves no
/// certificate after a wrong password; this never exits.
/// The string arguments are copied. Thread-safe.
///
/// # Safety
/// Each string argument must be NULL or point to a NUL-terminated string
/// valid for the call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_new(
    server_name: *const c_char,
    public_cert_file: *const c_char,
    private_key_file: *const c_char,
    pk_password: *const c_char,
) -> *mut fio_tls_s {
    const API: &str = "fio_tls_new";
    ffi_boundary!(API, { new_object(API, server_name, private_key_file, public_cert_file, password(pk_password)) })
}

/// Adds a certificate for SNI (facil.io 0.7.x signature: certificate file,
/// key file, key password; both files NULL: self-signed for
/// `server_name`).
///
/// A client whose SNI matches `server_name`, or a DNS name of the
/// certificate's subjectAltName (`*.` wildcards cover one label), gets this
/// certificate; other clients get the first one. facil.io 0.7.6's own
/// backend puts every certificate in one OpenSSL context with no
/// servername callback, so there SNI picks nothing. Files, names and
/// passwords are checked as in `fio_tls_new`; the files are watched. On
/// error one ERROR line is logged and the object is unchanged (facil.io
/// 0.7.6's backend exits on a missing file). Thread-safe; a call after
/// `fio_start` forked the workers changes the calling process's copy only.
///
/// # Safety
/// `tls` may be any value: anything but a live handle is reported, never
/// acted on (see `fio_tls_destroy`). Each string argument must be NULL or
/// point to a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_cert_add(
    tls: *mut fio_tls_s,
    server_name: *const c_char,
    public_cert_file: *const c_char,
    private_key_file: *const c_char,
    pk_password: *const c_char,
) {
    const API: &str = "fio_tls_cert_add";
    ffi_boundary!(API, { add_cert(API, tls, server_name, private_key_file, public_cert_file, password(pk_password)) })
}

/// Adds an ALPN protocol (RFC 7301) with its callback and TLS-level udata.
///
/// The order of calls is the server's order of preference, and the first
/// protocol added is the default: it takes a connection whose peer
/// negotiated no ALPN. A client that offers only protocols we do not know
/// fails the handshake with the `no_application_protocol` alert (RFC 7301;
/// facil.io 0.7.6's backend hands it to the default protocol instead).
///
/// `on_selected(uuid, udata_connection, udata_tls)` runs once per
/// connection, on a facil.io thread, after the handshake finished (not in
/// the middle of it, as in facil.io's backend): `udata_connection` is the
/// `udata` of `fio_tls_accept` / `fio_tls_connect`, `udata_tls` this
/// call's. It normally `fio_attach`es the application protocol. A client
/// connection whose handshake failed gets it too, with `uuid` -1, so that
/// the application learns of the failure and can release
/// `udata_connection` (facil.io's backend does the same). A server
/// connection whose handshake failed gets no call.
///
/// `on_cleanup(udata_tls)` runs exactly once, when this registration can
/// no longer be selected: after the object's last reference went
/// (`fio_tls_destroy`) or the same name was added again, and after the
/// last connection started with it ended (see
/// [`crate::facil::v076::Registration`] for the thread it runs on). A call
/// that fails (NULL or destroyed `tls`, a NULL, empty or over-long name: one
/// ERROR line) runs `on_cleanup(udata_tls)` at once: the registration
/// never happened, and the application gets its udata back.
///
/// Adding a name already present keeps its place and takes the new
/// callbacks. `protocol_name` is 1 to 255 bytes of UTF-8 (copied); every
/// other argument may be NULL. Thread-safe.
///
/// # Safety
/// `tls` may be any value (see `fio_tls_destroy`); `protocol_name` NULL or
/// a NUL-terminated string valid for the call; the callbacks NULL or
/// functions that stay callable until `on_cleanup` has run.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_alpn_add(
    tls: *mut fio_tls_s,
    protocol_name: *const c_char,
    on_selected: Option<OnSelected>,
    udata_tls: *mut c_void,
    on_cleanup: Option<OnCleanup>,
) {
    const API: &str = "fio_tls_alpn_add";
    ffi_boundary!(API, {
        // Dropped on every path that does not register it: on_cleanup.
        let handler: Alpn = Arc::new(Registration::new(on_selected, udata_tls, on_cleanup));
        let Some(tls) = object(API, tls) else { return };
        let name = match opt_str(API, "protocol name", protocol_name) {
            Ok(Some(n)) => n,
            Ok(None) => return log_error!("{API}: the protocol name is NULL or empty"),
            Err(()) => return,
        };
        tls.update(API, || Ok(()), |c, ()| c.add_protocol(&name, handler));
    })
}

/// Returns the number of ALPN protocols added with `fio_tls_alpn_add`
/// (0 when none). facil.io's `fio_listen` / `fio_connect` use it to choose
/// between handing connections to the ALPN callbacks (non-zero) and
/// calling their own `on_open` / `on_connect` right after
/// `fio_tls_accept` / `fio_tls_connect` (0). Returns 0 after one ERROR
/// line for a NULL, destroyed or foreign `tls`. Thread-safe; it never
/// waits for a configuration change that reads files.
///
/// # Safety
/// `tls` may be any value (see `fio_tls_destroy`).
#[no_mangle]
pub unsafe extern "C" fn fio_tls_alpn_count(tls: *mut fio_tls_s) -> usize {
    const API: &str = "fio_tls_alpn_count";
    ffi_boundary!(API, {
        match object(API, tls) {
            Some(tls) => tls.snapshot().protocols.len(),
            None => 0,
        }
    })
}

/// Turns on peer verification with the CA certificates of
/// `public_cert_file` (PEM or DER, one or more certificates).
///
/// - Client (`fio_tls_connect`, e.g. facil.io's `http_connect` with
///   `.tls`): the server's chain must verify against these CAs **and**
///   match the object's `server_name` (OpenSSL's host name / IP check, RFC
///   6125); facil.io 0.7.6's backend checks the chain only, so any
///   certificate from a trusted CA is accepted for any host there. A failure
///   fails the handshake with one WARNING naming the reason, and the
///   protocol's `on_selected` gets uuid -1.
/// - Server (`fio_tls_accept`): mutual TLS; clients must present a
///   certificate from these CAs.
///
/// Each call **adds** to the trust list, as facil.io 0.7.6 documents:
/// peers are verified against the CAs of every file given (and the system
/// store, if NULL was given). NULL adds OpenSSL's default trust store
/// (facil.io's backend ignores a NULL). Giving the same path (or NULL)
/// again reloads that source instead of adding it twice. Each file is
/// watched like the certificate files. On error (unreadable or invalid
/// file; facil.io's backend exits) one ERROR line and nothing changes: the
/// sources added before stay in use. Thread-safe.
///
/// # Safety
/// `tls` may be any value (see `fio_tls_destroy`); `public_cert_file` NULL
/// or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_trust(tls: *mut fio_tls_s, public_cert_file: *const c_char) {
    ffi_boundary!("fio_tls_trust", { trust(tls, public_cert_file) })
}

/// Starts the server side of TLS on an accepted connection (facil.io's
/// `fio_listen` with `.tls` calls it for every connection).
///
/// The handshake runs in facil.io's event loop through the rw hooks, with
/// no CPU spent while it waits for the peer (facil.io 0.7.6's backend
/// polls a waiting handshake in a loop), and a deadline of 10 seconds
/// (`FIO_TLS_HANDSHAKE_TIMEOUT`). Then the ALPN-selected protocol's
/// `on_selected` runs (see `fio_tls_alpn_add`); with no protocols added,
/// the application's own protocol (attached by `fio_listen`'s `on_open`
/// right after this call) reads the decrypted data. `fio_close` sends
/// close_notify. The connection keeps what it uses even if the object is
/// destroyed meanwhile. A NULL or destroyed `tls`, or a uuid that is not
/// open, logs an error and closes `uuid`. Thread-safe.
///
/// # Safety
/// `tls` may be any value (see `fio_tls_destroy`); `udata` is never
/// dereferenced.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_accept(uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void) {
    start("fio_tls_accept", uuid, tls, udata, Role::Server)
}

/// Starts the client side of TLS on a connected uuid (facil.io's
/// `fio_connect` with `.tls` calls it from its `on_ready`).
///
/// Sends SNI = the object's `server_name` (a host name, not an IP
/// literal), offers the ALPN protocols in the order added, presents the
/// first certificate loaded from files when the server asks for one, and
/// verifies the server only after `fio_tls_trust`. After the handshake the
/// protocol the server picked (or the first added) gets `on_selected`;
/// after a failed handshake it gets uuid -1. Errors as in
/// `fio_tls_accept`. Thread-safe.
///
/// # Safety
/// As for `fio_tls_accept`.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_connect(uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void) {
    start("fio_tls_connect", uuid, tls, udata, Role::Client)
}

/// Adds a reference to `tls`; `fio_tls_destroy` takes it away again.
/// A NULL, destroyed or foreign `tls` is reported with one ERROR line and
/// gains nothing (facil.io 0.7.6's backend would dereference it).
/// Thread-safe; a `fio_tls_dup` racing with the `fio_tls_destroy` that
/// takes the last reference either lands first or is reported.
///
/// # Safety
/// `tls` may be any value (see `fio_tls_destroy`).
#[no_mangle]
pub unsafe extern "C" fn fio_tls_dup(tls: *mut fio_tls_s) {
    const API: &str = "fio_tls_dup";
    ffi_boundary!(API, {
        let Some(object) = object(API, tls) else { return };
        if object.refs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > 0).then(|| n + 1)).is_err() {
            // its last reference went on another thread just now
            report_bad(API, tls, &Lookup::<()>::Destroyed);
        }
    })
}

/// Takes one reference away from `tls`; the last one destroys the handle
/// and releases the object (certificates, contexts, and each ALPN
/// registration's `on_cleanup` once no connection uses it any more).
///
/// NULL is ignored. Connections started from it stay valid. A handle
/// whose references are all gone, or any value `fio_tls_new` never
/// returned, is reported with one ERROR line and otherwise ignored, also
/// after a new object took its place (handles carry a generation; see the
/// beta4 `fio_tls_destroy` in `include/fio_tls.h`). Thread-safe.
///
/// # Safety
/// `tls` may be any value.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_destroy(tls: *mut fio_tls_s) {
    const API: &str = "fio_tls_destroy";
    ffi_boundary!(API, {
        let object = match OBJECTS.get(tls as usize) {
            Lookup::Live(o) => o,
            Lookup::Null => return,
            other => return report_bad(API, tls, &other),
        };
        match object.refs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
            Ok(1) => {
                drop(object);
                remove(API, tls)
            }
            Ok(_) => {}
            Err(_) => report_bad(API, tls, &Lookup::<()>::Destroyed),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::{self, TempDir, Usage};
    use crate::tls::LoadedCert;
    use std::ffi::CString;
    use std::sync::Mutex;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }
    const NULL: *const c_char = core::ptr::null();

    fn is_live(tls: *mut fio_tls_s) -> bool {
        matches!(OBJECTS.get(tls as usize), Lookup::Live(_))
    }

    /// on_cleanup counts per udata_tls value (tests run in parallel: each
    /// uses its own udata values).
    static CLEANED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    unsafe extern "C" fn count_cleanup(udata_tls: *mut c_void) {
        CLEANED.lock().unwrap().push(udata_tls as usize);
    }
    fn cleaned(udata: usize) -> usize {
        CLEANED.lock().unwrap().iter().filter(|&&u| u == udata).count()
    }
    unsafe extern "C" fn ignore_selected(_uuid: isize, _c: *mut c_void, _t: *mut c_void) {}

    #[test]
    fn dup_and_destroy_count_references() {
        unsafe {
            let tls = fio_tls_new(c("count.test").as_ptr(), NULL, NULL, NULL);
            assert!(!tls.is_null());
            fio_tls_dup(tls);
            fio_tls_dup(tls);
            fio_tls_destroy(tls);
            fio_tls_destroy(tls);
            assert!(is_live(tls), "one reference is left");
            assert_eq!(fio_tls_alpn_count(tls), 0);
            fio_tls_destroy(tls);
            assert!(!is_live(tls), "the last reference destroyed the handle");
            // Reported, never acted on.
            fio_tls_dup(tls);
            fio_tls_destroy(tls);
            assert!(!is_live(tls));
            assert_eq!(fio_tls_alpn_count(tls), 0);
        }
    }

    #[test]
    fn on_cleanup_runs_once_per_protocol_when_the_last_reference_goes() {
        let (a, b, replaced) = (0xa11a, 0xb11b, 0xa22a);
        unsafe {
            let tls = fio_tls_new(NULL, NULL, NULL, NULL);
            fio_tls_alpn_add(tls, c("h2").as_ptr(), Some(ignore_selected), a as *mut c_void, Some(count_cleanup));
            fio_tls_alpn_add(tls, c("http/1.1").as_ptr(), Some(ignore_selected), b as *mut c_void, Some(count_cleanup));
            assert_eq!(fio_tls_alpn_count(tls), 2);
            // The same name again: the old registration is cleaned up, the
            // place kept.
            fio_tls_alpn_add(tls, c("h2").as_ptr(), None, replaced as *mut c_void, Some(count_cleanup));
            assert_eq!((cleaned(a), cleaned(b), cleaned(replaced)), (1, 0, 0));
            assert_eq!(fio_tls_alpn_count(tls), 2);
            let object = match OBJECTS.get(tls as usize) {
                Lookup::Live(o) => o,
                _ => panic!("not live"),
            };
            assert_eq!(object.snapshot().protocols[0].name, "h2");
            drop(object);
            fio_tls_dup(tls);
            fio_tls_destroy(tls);
            assert_eq!((cleaned(b), cleaned(replaced)), (0, 0), "a reference is left");
            // What a connection holds: the snapshot it started with.
            let held = match OBJECTS.get(tls as usize) {
                Lookup::Live(o) => o.snapshot(),
                _ => panic!("not live"),
            };
            fio_tls_destroy(tls);
            assert_eq!((cleaned(b), cleaned(replaced)), (0, 0), "a connection still uses them");
            drop(held);
            assert_eq!((cleaned(a), cleaned(b), cleaned(replaced)), (1, 1, 1));
        }
    }

    #[test]
    fn a_refused_alpn_add_gives_udata_tls_back_at_once() {
        let (bad_name, bad_tls, long) = (0xbad1, 0xbad2, 0xbad3);
        unsafe {
            let tls = fio_tls_new(NULL, NULL, NULL, NULL);
            fio_tls_alpn_add(tls, NULL, None, bad_name as *mut c_void, Some(count_cleanup));
            fio_tls_alpn_add(tls, c(&"x".repeat(256)).as_ptr(), None, long as *mut c_void, Some(count_cleanup));
            fio_tls_alpn_add(core::ptr::null_mut(), c("h2").as_ptr(), None, bad_tls as *mut c_void, Some(count_cleanup));
            assert_eq!((cleaned(bad_name), cleaned(long), cleaned(bad_tls)), (1, 1, 1));
            assert_eq!(fio_tls_alpn_count(tls), 0);
            fio_tls_destroy(tls);
        }
    }

    /// An encrypted key and its certificate in `dir`: (cert, key) paths.
    fn encrypted_pair(dir: &TempDir, name: &str, password: &str) -> (String, String) {
        let key = testutil::key();
        let cert = testutil::cert(&key, name, &[name], Usage::Server, None);
        let pem = key
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), password.as_bytes())
            .unwrap();
        (dir.file("enc.crt", &cert.to_pem().unwrap()), dir.file("enc.key", &pem))
    }

    #[test]
    fn pk_password_decrypts_the_key_and_a_wrong_one_is_refused() {
        let dir = TempDir::new("api07-password");
        let (crt, key) = encrypted_pair(&dir, "enc.test", "s3cret");
        unsafe {
            let tls = fio_tls_new(c("enc.test").as_ptr(), c(&crt).as_ptr(), c(&key).as_ptr(), c("s3cret").as_ptr());
            assert!(!tls.is_null(), "the right password decrypts the key");
            // cert_add takes the same order and password.
            let before = match OBJECTS.get(tls as usize) {
                Lookup::Live(o) => super::super::lock(&o.config).certs().len(),
                _ => panic!(),
            };
            fio_tls_cert_add(tls, c("again.test").as_ptr(), c(&crt).as_ptr(), c(&key).as_ptr(), c("wrong").as_ptr());
            fio_tls_cert_add(tls, c("again.test").as_ptr(), c(&crt).as_ptr(), c(&key).as_ptr(), NULL);
            let after = match OBJECTS.get(tls as usize) {
                Lookup::Live(o) => super::super::lock(&o.config).certs().len(),
                _ => panic!(),
            };
            assert_eq!(before, after, "a wrong or missing password adds nothing");
            fio_tls_cert_add(tls, c("again.test").as_ptr(), c(&crt).as_ptr(), c(&key).as_ptr(), c("s3cret").as_ptr());
            let added = match OBJECTS.get(tls as usize) {
                Lookup::Live(o) => super::super::lock(&o.config).certs().len(),
                _ => panic!(),
            };
            assert_eq!(added, before + 1);
            fio_tls_destroy(tls);
            // A wrong password after a right one: the parse cache must not
            // hand out the key decrypted before.
            let wrong = fio_tls_new(c("enc.test").as_ptr(), c(&crt).as_ptr(), c(&key).as_ptr(), c("wrong").as_ptr());
            assert!(wrong.is_null());
            let none = fio_tls_new(c("enc.test").as_ptr(), c(&crt).as_ptr(), c(&key).as_ptr(), NULL);
            assert!(none.is_null());
            // The files swapped (key first, as beta4 took them): refused.
            let swapped = fio_tls_new(c("enc.test").as_ptr(), c(&key).as_ptr(), c(&crt).as_ptr(), c("s3cret").as_ptr());
            assert!(swapped.is_null());
        }
    }

    #[test]
    fn the_errors_say_what_is_wrong_with_the_password() {
        let dir = TempDir::new("api07-password-kinds");
        let (crt, key) = encrypted_pair(&dir, "enc.test", "s3cret");
        let err = |pw: Option<&str>| {
            LoadedCert::load_with(Some("enc.test"), Some(&key), Some(&crt), pw.and_then(|p| KeyPassword::new(p.as_bytes())))
                .err()
                .map(|e| (e.kind(), e.to_string()))
        };
        let (kind, text) = err(Some("wrong")).unwrap();
        assert_eq!(kind, crate::tls::ErrorKind::WrongPassword);
        assert!(text.contains(&key) && text.contains("does not decrypt"), "{text}");
        let (kind, text) = err(None).unwrap();
        assert_eq!(kind, crate::tls::ErrorKind::Encrypted);
        assert!(text.contains("pk_password"), "{text}");
        assert!(!text.contains("s3cret"));
        assert_eq!(err(Some("s3cret")), None);
    }

    #[test]
    fn dup_racing_the_last_destroy_never_revives_the_handle() {
        for _ in 0..50 {
            let tls = unsafe { fio_tls_new(NULL, NULL, NULL, NULL) } as usize;
            // SAFETY: any handle value is allowed.
            let t = std::thread::spawn(move || unsafe { fio_tls_dup(tls as *mut fio_tls_s) });
            unsafe { fio_tls_destroy(tls as *mut fio_tls_s) };
            t.join().unwrap();
            // Either the dup landed first (one reference left), or it was
            // refused and the handle is gone; never a live handle with 0.
            let tls = tls as *mut fio_tls_s;
            if is_live(tls) {
                unsafe { fio_tls_destroy(tls) };
            }
            assert!(!is_live(tls));
        }
    }
}
