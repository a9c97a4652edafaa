//! The C boundary: facil.io's six `fio_tls_*` functions.
//!
//! Every body runs inside a panic boundary; every pointer argument is
//! checked (NULL, and for `fio_tls_s *`, that it is a live object made by
//! `fio_tls_new`). Errors are reported as one `ERROR: fio_tls: ...` line on
//! stderr, honouring facil.io's `FIO_LOG_LEVEL`, and leave the object as it
//! was. Nothing here exits, aborts, prompts or blocks on the terminal.

use crate::facil::hooks::{self, boundary, Handler, ProtocolCallback, Snapshot};
use crate::log::{log_debug, log_error};
use crate::tls::{Role, TlsConfig};
use libc::{c_char, c_void};
use once_cell::sync::Lazy;
use std::collections::HashSet;
use std::ffi::CStr;
use std::sync::{Arc, Mutex};

/// An opaque TLS settings object: certificates (by SNI name), ALPN
/// protocols and the OpenSSL contexts built from them.
///
/// Created by `fio_tls_new`, released by `fio_tls_destroy`. All functions
/// taking it are thread-safe. Connections started from it keep what they
/// use alive, so it may be destroyed while they are still open.
pub struct fio_tls_s {
    state: Mutex<TlsState>,
}

struct TlsState {
    config: TlsConfig<Handler>,
    built: Arc<Snapshot>,
}

/// Addresses of the live `fio_tls_s` objects, so that a stale or foreign
/// pointer is reported instead of dereferenced.
static LIVE: Lazy<Mutex<HashSet<usize>>> = Lazy::new(|| Mutex::new(HashSet::new()));

fn live() -> std::sync::MutexGuard<'static, HashSet<usize>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Borrows `tls` if it is a live object; logs and returns `None` otherwise.
unsafe fn checked<'a>(api: &str, tls: *mut fio_tls_s) -> Option<&'a fio_tls_s> {
    if tls.is_null() {
        log_error!("{api}: the fio_tls_s argument is NULL");
        return None;
    }
    if !live().contains(&(tls as usize)) {
        log_error!("{api}: {tls:p} is not a live fio_tls_s (already destroyed, or not made by fio_tls_new)");
        return None;
    }
    Some(&*tls)
}

/// Reads an optional C string argument; `""` counts as absent.
unsafe fn opt_str(api: &str, what: &str, p: *const c_char) -> Result<Option<String>, ()> {
    if p.is_null() {
        return Ok(None);
    }
    match CStr::from_ptr(p).to_str() {
        Ok("") => Ok(None),
        Ok(s) => Ok(Some(s.to_string())),
        Err(_) => {
            log_error!("{api}: the {what} is not valid UTF-8");
            Err(())
        }
    }
}

impl fio_tls_s {
    fn lock(&self) -> std::sync::MutexGuard<'_, TlsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to a copy of the settings and swaps it in only if
    /// the copy builds: a failed call leaves the object unchanged.
    fn update(&self, api: &str, change: impl FnOnce(&mut TlsConfig<Handler>) -> Result<(), crate::tls::ConfigError>) {
        let mut state = self.lock();
        let mut next = state.config.clone();
        match change(&mut next).and_then(|()| next.build()) {
            Ok(built) => {
                state.config = next;
                state.built = Arc::new(built);
            }
            Err(e) => log_error!("{api}: {e}"),
        }
    }
}

/// Creates a TLS settings object with a default certificate.
///
/// - `server_name`: the host name of the default certificate; a client
///   sends it as SNI. May be NULL. An ASCII host name or IP address, at
///   most 255 bytes (international names in their IDNA "xn--" form); a
///   space, control character or non-ASCII byte is an error.
/// - `private_key_file`, `public_cert_file`: PEM or DER files (a file
///   without PEM armour is read as DER). The certificate file may hold a
///   full chain, leaf first (PEM blocks, or DER certificates laid end to
///   end); the whole chain is served. The key must match the leaf
///   certificate and must not be encrypted, in PEM or DER form (there is no
///   passphrase prompt).
/// - Both files NULL: a self-signed ECDSA P-256 certificate for
///   `server_name` (or "localhost" when NULL) is generated in memory, valid
///   for 365 days from now. Clients do not trust it: this is facil.io's
///   "anonymous (unverified)" mode.
///
/// Protocol versions are TLS 1.2 and 1.3 only, with forward-secret AEAD
/// suites, no compression and no renegotiation.
///
/// Returns a new object owned by the caller (release it with
/// `fio_tls_destroy`), or NULL after logging one `ERROR: fio_tls: ...` line
/// naming the file and the reason (missing or unreadable file, no valid
/// PEM or DER, key/certificate mismatch, encrypted key, only one of the two
/// files, a key file holding a certificate or a certificate file holding a
/// key (the line reminds of the order: key file, then certificate file),
/// bytes after the last DER certificate, a PKCS#7 bundle, a certificate
/// OpenSSL's security level refuses, e.g. RSA-1024). A certificate clients
/// would refuse (expired or not yet valid, a chain out of leaf-then-issuer
/// order, or one that OpenSSL's host name / IP check finds not valid for
/// `server_name`) is accepted with one WARNING line; the name check is
/// skipped for a certificate whose extendedKeyUsage allows only client
/// authentication (a client certificate, for which `server_name` is the
/// server's name).
/// Check the result: facil.io's `http_listen` treats `.tls = NULL` as
/// plain HTTP.
/// The string arguments are copied; the caller keeps ownership. Thread-safe.
///
/// # Safety
/// Each string argument must be NULL or point to a NUL-terminated string
/// that stays valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_new(
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
) -> *mut fio_tls_s {
    const API: &str = "fio_tls_new";
    boundary(API, core::ptr::null_mut(), || {
        let (Ok(name), Ok(key), Ok(cert)) = (
            opt_str(API, "server name", server_name),
            opt_str(API, "private key file name", private_key_file),
            opt_str(API, "certificate file name", public_cert_file),
        ) else {
            return core::ptr::null_mut();
        };
        let made = TlsConfig::new(name.as_deref(), key.as_deref(), cert.as_deref())
            .and_then(|mut config| config.build().map(|built| (config, built)));
        match made {
            Ok((config, built)) => {
                let tls = Box::into_raw(Box::new(fio_tls_s {
                    state: Mutex::new(TlsState { config, built: Arc::new(built) }),
                }));
                live().insert(tls as usize);
                tls
            }
            Err(e) => {
                log_error!("{API}: {e}");
                core::ptr::null_mut()
            }
        }
    })
}

/// Adds a certificate for SNI: a client whose server name indication
/// matches `server_name`, or a DNS name in the certificate's
/// subjectAltName (`*.` wildcards cover one label), gets this certificate.
/// A client sending no SNI, or an unknown name, gets the first (default)
/// certificate. Files and `server_name` are checked as in `fio_tls_new`;
/// both files NULL generates a self-signed certificate for `server_name`
/// (or "localhost"). When names overlap the certificate added first wins,
/// so adding a name that already has a certificate logs a WARNING (a
/// renewal needs a new object).
///
/// On error (NULL or destroyed `tls`, unusable file) one error line is
/// logged and the object is unchanged. Connections already started keep the
/// certificates they began with. Thread-safe; but facil.io's workers are
/// forked processes, so a call after `fio_start` changes the calling
/// worker's copy only.
///
/// # Safety
/// `tls` must be NULL or a pointer returned by `fio_tls_new` (a destroyed
/// or foreign pointer is detected and reported, but must not be freed
/// memory that was reused for something else). Each string argument must be
/// NULL or point to a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_cert_add(
    tls: *mut fio_tls_s,
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
) {
    const API: &str = "fio_tls_cert_add";
    boundary(API, (), || {
        let Some(tls) = checked(API, tls) else { return };
        let (Ok(name), Ok(key), Ok(cert)) = (
            opt_str(API, "server name", server_name),
            opt_str(API, "private key file name", private_key_file),
            opt_str(API, "certificate file name", public_cert_file),
        ) else {
            return;
        };
        tls.update(API, |c| c.add_cert(name.as_deref(), key.as_deref(), cert.as_deref()));
    })
}

/// Adds an ALPN protocol (RFC 7301) and the callback that takes over a
/// connection that selects it.
///
/// The order of calls is the server's order of preference. Once a handshake
/// has finished, `callback(uuid, udata)` runs exactly once on a facil.io
/// thread (with the `udata` given to `fio_tls_accept` / `fio_tls_connect`);
/// it normally attaches the application protocol with `fio_attach`. When
/// the peer negotiated no ALPN, the first protocol added runs. A server
/// whose client offers only unknown protocols fails the handshake with the
/// `no_application_protocol` alert. A server connection whose handshake
/// failed gets no callback. A client connection (`fio_tls_connect`) gets
/// its callback exactly once either way: after a failed handshake it runs
/// with the uuid already closed (`fio_is_closed(uuid)` is true), so the
/// application can release `udata`; a protocol it attaches gets its
/// `on_close` at once (this is how facil.io's `http_connect` runs
/// `on_finish` after a failed TLS handshake), and nothing it writes is sent.
///
/// Adding a name that is already present keeps its place and replaces its
/// callback, for both roles: facil.io's `http_listen` and `http_connect`
/// each add "http/1.1" (server and client callbacks), so give them
/// separate objects. `protocol_name` must be 1 to 255 bytes of UTF-8
/// (copied). `callback`
/// may be NULL (the name is negotiated; the application attaches its own
/// protocol). On error one error line is logged and nothing changes.
/// Thread-safe.
///
/// # Safety
/// `tls` must be NULL or a pointer returned by `fio_tls_new` (a destroyed
/// or foreign pointer is detected and reported, but must not be freed
/// memory that was reused for something else). Each string argument must be
/// NULL or point to a NUL-terminated string valid for the call. `callback` must be NULL or a function
/// that stays callable while connections from `tls` may finish handshakes.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_proto_add(
    tls: *mut fio_tls_s,
    protocol_name: *const c_char,
    callback: Option<unsafe extern "C" fn(uuid: isize, udata: *mut c_void)>,
) {
    const API: &str = "fio_tls_proto_add";
    boundary(API, (), || {
        let Some(tls) = checked(API, tls) else { return };
        let name = match opt_str(API, "protocol name", protocol_name) {
            Ok(Some(n)) => n,
            Ok(None) => {
                log_error!("{API}: the protocol name is NULL or empty");
                return;
            }
            Err(()) => return,
        };
        let handler: Option<ProtocolCallback> = callback;
        tls.update(API, |c| c.add_protocol(&name, handler));
    })
}

/// Extension (not in facil.io 0.7.0.beta4; same name and shape as
/// facil.io's later releases): turns on peer verification.
///
/// - On a client (`fio_tls_connect`): the server's certificate chain must
///   verify against the CA certificates in `ca_file` (PEM or DER, one or more
///   certificates) and, when the object has a `server_name`, match that
///   name (OpenSSL's host name / IP check, RFC 6125). A failure fails the
///   handshake with a WARNING line naming the reason (for example
///   "certificate has expired", "unable to get local issuer certificate",
///   "hostname mismatch").
/// - On a server (`fio_tls_accept`): mutual TLS. The client must present a
///   certificate signed by one of these CAs, or the handshake fails; the
///   CA names are sent in the CertificateRequest.
///
/// `ca_file` NULL uses OpenSSL's default trust store (the system CAs; on a
/// server no CA names are sent). May be called again to replace the trust
/// source. On error (NULL or destroyed `tls`, unreadable or invalid file)
/// one error line is logged and nothing changes. Connections already
/// started are not affected. Thread-safe.
///
/// # Safety
/// `tls` must be NULL or a pointer returned by `fio_tls_new` (a destroyed
/// or foreign pointer is detected and reported, but must not be freed
/// memory that was reused for something else). Each string argument must be
/// NULL or point to a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_trust(tls: *mut fio_tls_s, ca_file: *const c_char) {
    const API: &str = "fio_tls_trust";
    boundary(API, (), || {
        let Some(tls) = checked(API, tls) else { return };
        let Ok(ca_file) = opt_str(API, "CA file name", ca_file) else { return };
        tls.update(API, |c| c.set_trust(ca_file.as_deref()));
    })
}

/// Shared body of accept and connect.
unsafe fn start(api: &str, uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void, role: Role) {
    boundary(api, (), || {
        let Some(tls) = checked(api, tls) else {
            // A connection that cannot be secured must not stay open
            // unserved.
            crate::facil::sys::close(uuid);
            return;
        };
        let snapshot = tls.lock().built.clone();
        match hooks::start(uuid, snapshot, role, udata) {
            Ok(()) => {}
            Err(hooks::StartError::Refused(e)) => {
                log_error!("{api}: {e}");
                crate::facil::sys::close(uuid);
            }
            // Routine (a peer that connected and hung up at once): DEBUG,
            // like a handshake the peer abandons.
            Err(hooks::StartError::Closing(e)) => {
                log_debug!("{api}: {e}");
                crate::facil::sys::close(uuid);
            }
        }
    })
}

/// Starts the server side of TLS on an accepted connection `uuid` (as from
/// `fio_accept`, or a `fio_listen` `on_open`).
///
/// The handshake runs through facil.io's read/write hooks; its deadline is
/// 10 seconds (environment variable `FIO_TLS_HANDSHAKE_TIMEOUT`, 1-255
/// seconds), after which the connection is closed. When it finishes, the
/// ALPN-selected protocol's callback runs with `(uuid, udata)` and
/// application data then flows encrypted through `fio_read` / `fio_write`;
/// `fio_close` sends close_notify. `udata` is passed through untouched.
///
/// A handshake failure closes the connection and logs one line (INFO level;
/// DEBUG for peers that simply hang up). A NULL or destroyed `tls`, or a
/// uuid that is not open, logs an error and closes `uuid`; a uuid facil.io
/// is already closing (a peer that connected and hung up at once) is closed
/// with a DEBUG line only. Thread-safe; the
/// connection keeps its own reference to the settings.
///
/// # Safety
/// `tls` as for `fio_tls_cert_add`; `uuid` should come from facil.io (an
/// invalid one is detected and reported). `udata` is never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_accept(uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void) {
    start("fio_tls_accept", uuid, tls, udata, Role::Server)
}

/// Starts the client side of TLS on a connected `uuid` (as received by a
/// `fio_connect` `on_connect` callback).
///
/// Sends SNI = the object's `server_name` when it is a host name (not an IP
/// literal) and offers the ALPN protocols in the order added. The peer's
/// certificate is not verified (facil.io's anonymous mode) unless
/// `fio_tls_trust` was called on `tls`. A certificate
/// loaded from files with `fio_tls_new` is presented when the server asks
/// for one. After the handshake the protocol the server picked (or the
/// first added) gets `(uuid, udata)`. A failed handshake closes the
/// connection and logs one WARNING line; then the first protocol added (or
/// the one the server picked, if it got that far) gets `(uuid, udata)` on
/// the closed uuid, so that the application learns of the failure (see
/// `fio_tls_proto_add`). Errors as in `fio_tls_accept` (no callback runs
/// for a call refused outright). Thread-safe.
///
/// # Safety
/// `tls` as for `fio_tls_cert_add`; `uuid` should come from facil.io (an
/// invalid one is detected and reported). `udata` is never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_connect(uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void) {
    start("fio_tls_connect", uuid, tls, udata, Role::Client)
}

/// Releases a settings object made by `fio_tls_new`.
///
/// NULL is ignored. Connections started from it stay valid: they hold their
/// own reference to the contexts they use, freed when they close. Passing
/// an object twice (or one not made by `fio_tls_new`) logs an error and
/// does nothing. Thread-safe, but the caller must not use `tls` afterwards.
///
/// # Safety
/// `tls` must be NULL or a pointer returned by `fio_tls_new`, not used by
/// another thread during or after this call.
#[no_mangle]
pub unsafe extern "C" fn fio_tls_destroy(tls: *mut fio_tls_s) {
    const API: &str = "fio_tls_destroy";
    boundary(API, (), || {
        if tls.is_null() {
            return;
        }
        if !live().remove(&(tls as usize)) {
            log_error!("{API}: {tls:p} is not a live fio_tls_s (already destroyed, or not made by fio_tls_new)");
            return;
        }
        drop(Box::from_raw(tls));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn new_self_signed_and_destroy() {
        unsafe {
            let tls = fio_tls_new(c("localhost").as_ptr(), core::ptr::null(), core::ptr::null());
            assert!(!tls.is_null());
            fio_tls_cert_add(tls, c("other.test").as_ptr(), core::ptr::null(), core::ptr::null());
            fio_tls_proto_add(tls, c("http/1.1").as_ptr(), None);
            assert_eq!((*tls).lock().config.certs().len(), 2);
            assert_eq!((*tls).lock().built.protocols.len(), 1);
            fio_tls_destroy(tls);
            // Double destroy is reported, not a double free.
            fio_tls_destroy(tls);
            fio_tls_destroy(core::ptr::null_mut());
        }
    }

    #[test]
    fn bad_files_return_null() {
        unsafe {
            let tls = fio_tls_new(c("x").as_ptr(), c("/nonexistent.key").as_ptr(), c("/nonexistent.crt").as_ptr());
            assert!(tls.is_null());
            let tls = fio_tls_new(c("x").as_ptr(), c("/nonexistent.key").as_ptr(), core::ptr::null());
            assert!(tls.is_null());
        }
    }

    #[test]
    fn failed_change_leaves_object_unchanged() {
        unsafe {
            let tls = fio_tls_new(core::ptr::null(), core::ptr::null(), core::ptr::null());
            fio_tls_cert_add(tls, c("bad").as_ptr(), c("/nonexistent.key").as_ptr(), c("/nonexistent.crt").as_ptr());
            fio_tls_proto_add(tls, c(&"x".repeat(256)).as_ptr(), None);
            fio_tls_proto_add(tls, core::ptr::null(), None);
            assert_eq!((*tls).lock().config.certs().len(), 1);
            assert!((*tls).lock().config.protocols().is_empty());
            fio_tls_destroy(tls);
        }
    }

    #[test]
    fn accept_without_host_is_refused_not_crashed() {
        unsafe {
            let tls = fio_tls_new(core::ptr::null(), core::ptr::null(), core::ptr::null());
            fio_tls_accept(0x100, tls, core::ptr::null_mut());
            fio_tls_connect(0x100, core::ptr::null_mut(), core::ptr::null_mut());
            assert!(!crate::facil::sys::host_present());
            fio_tls_destroy(tls);
        }
    }
}
