//! The C boundary: facil.io's six `fio_tls_*` functions and our extensions.
//!
//! Every body runs inside [`boundary::ffi_boundary!`]; every `fio_tls_s *`
//! argument is a handle ([`handle`]) looked up in a table, never an address
//! that is dereferenced. Errors are reported as one `ERROR: fio_tls: ...`
//! line on stderr, honouring facil.io's `FIO_LOG_LEVEL`, and leave the
//! object as it was. Nothing here exits, aborts, prompts or blocks on the
//! terminal.

pub mod boundary;
pub mod cluster;
pub mod handle;
pub mod link;
mod reload;
/// The release API's functions (feature `api07`): not in `fio_tls.h`.
/// cbindgen:ignore
#[cfg(feature = "api07")]
pub mod api07;

// fio_tls_reload (cluster.rs) calls it in every process.
pub(crate) use reload::recheck_objects;

use crate::facil::hooks::{self, Handler, Snapshot};
use crate::log::{log_debug, log_error};
use crate::tls::{ConfigError, KeyPassword, LoadedCert, LoadedTrust, Role, TlsConfig};
use boundary::ffi_boundary;
use handle::{Lookup, Registry};
use libc::{c_char, c_void};
use std::ffi::CStr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The C type `fio_tls_s`: opaque. A `fio_tls_s *` that C holds is a
/// handle made by `fio_tls_new` (see [`handle`]), not the address of one
/// of these; nothing of this type is ever made.
#[repr(C)]
pub struct fio_tls_s {
    _opaque: [u8; 0],
}

/// The object behind a handle: certificates (by SNI name), ALPN protocols
/// and the OpenSSL contexts built from them.
///
/// Two locks, so that a handshake never waits on a configuration change:
/// `config` serialises the changes (held while contexts are built and while
/// the watcher reloads changed files, never while `fio_tls_cert_add` /
/// `fio_tls_trust` read files or generate keys), `built` is held only to
/// copy or replace the `Arc` that `fio_tls_accept` / `fio_tls_connect`
/// start from. Connections keep their own `Arc` of what they started with;
/// the certificate a server handshake serves is looked up in the shared
/// table ([`crate::tls::Certs`]) under its own read lock.
pub struct TlsObject {
    config: Mutex<TlsConfig<Handler>>,
    built: Mutex<Arc<Snapshot>>,
    /// The process that made it (`getpid` in `fio_tls_new`): a handle names
    /// the same object in every process only when that process forked the
    /// others after making it (see [`cluster`]); it also reports reloads
    /// and expiry at their own level, while forked workers checking their
    /// copies say so at DEBUG only (one line per change per application).
    born_in: u32,
    /// facil.io 0.7.x's reference count: `fio_tls_new` makes 1,
    /// `fio_tls_dup` adds one, `fio_tls_destroy` takes one away and
    /// destroys the handle at 0 (see [`api07`]).
    #[cfg(feature = "api07")]
    refs: std::sync::atomic::AtomicUsize,
}

/// Every live object, by handle.
static OBJECTS: Registry<TlsObject> = Registry::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a whole-value swap: a panic while
    // one was held (caught at the boundary) left nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handle C holds for an object of the table.
fn to_c(handle: usize) -> *mut fio_tls_s {
    handle as *mut fio_tls_s
}

/// The object behind `tls`; logs and returns `None` for NULL, destroyed
/// and foreign values.
fn object(api: &str, tls: *mut fio_tls_s) -> Option<Arc<TlsObject>> {
    match OBJECTS.get(tls as usize) {
        Lookup::Live(o) => Some(o),
        other => {
            report_bad(api, tls, &other);
            None
        }
    }
}

fn report_bad<T>(api: &str, tls: *mut fio_tls_s, what: &Lookup<T>) {
    match what {
        Lookup::Live(_) => {}
        Lookup::Null => log_error!("{api}: the fio_tls_s argument is NULL"),
        Lookup::Destroyed => {
            log_error!("{api}: {tls:p} is not a live fio_tls_s: it was destroyed by fio_tls_destroy")
        }
        Lookup::Foreign => {
            log_error!("{api}: {tls:p} is not a live fio_tls_s: it was never returned by fio_tls_new")
        }
    }
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

impl TlsObject {
    /// What a new connection starts from (held only to copy the `Arc`).
    fn snapshot(&self) -> Arc<Snapshot> {
        lock(&self.built).clone()
    }

    /// Changes the settings in two steps: `prepare` does the slow part
    /// (reading files, generating keys) holding no lock, then `apply` runs
    /// on a copy of the settings under the `config` lock, and the copy is
    /// swapped in only if it builds. A failed call logs one error line and
    /// leaves the object unchanged.
    fn update<P>(
        &self,
        api: &str,
        prepare: impl FnOnce() -> Result<P, ConfigError>,
        apply: impl FnOnce(&mut TlsConfig<Handler>, P) -> Result<(), ConfigError>,
    ) {
        let prepared = match prepare() {
            Ok(p) => p,
            Err(e) => return log_error!("{api}: {e}"),
        };
        let mut config = lock(&self.config);
        let mut next = config.clone();
        match apply(&mut next, prepared).and_then(|()| next.build()) {
            Ok(built) => {
                *config = next;
                let old = std::mem::replace(&mut *lock(&self.built), Arc::new(built));
                drop(config);
                drop(old);
            }
            Err(e) => log_error!("{api}: {e}"),
        }
    }

    /// Publishes a new snapshot built from `config` (whose lock the caller
    /// holds); the old one is released after the locks.
    fn publish(&self, config: MutexGuard<'_, TlsConfig<Handler>>, api: &str) {
        let mut config = config;
        match config.build() {
            Ok(built) => {
                let old = std::mem::replace(&mut *lock(&self.built), Arc::new(built));
                drop(config);
                drop(old);
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
///   for 365 days from now, and made again (new key and serial) 30 days
///   before it expires, in each process, with one INFO line. Clients do not
///   trust it: this is facil.io's "anonymous (unverified)" mode. Test knob:
///   the environment variable `FIO_TLS_SELF_SIGNED_SECONDS` (2 to 31536000,
///   read once per process) sets the lifetime of generated certificates;
///   a short one is renewed half-way through.
/// - Both files NULL with `FIO_TLS_ACME_DIRECTORY` set (read once per
///   process): `server_name` gets its certificate from that ACME CA (RFC
///   8555), proving control with TLS-ALPN-01 (RFC 8737) on the listening
///   port itself; the self-signed certificate serves until then, a cached
///   one at once. Cache directory `FIO_TLS_ACME_DIR` (0700; files 0600),
///   optional `FIO_TLS_ACME_EMAIL`, `FIO_TLS_ACME_CA_FILE` (trust for the
///   CA's HTTPS), test knob `FIO_TLS_ACME_TEST_RENEW_AFTER` (seconds).
///   One worker process talks to the CA, on its own thread started after
///   facil.io forked; renewal at two thirds of the lifetime; failures give
///   one WARNING each with the CA's problem `type` and `detail` and an
///   exponential back-off. See the README, "Automatic certificates".
///
/// Watched files: the key and certificate files are checked every
/// `FIO_TLS_RELOAD_SECONDS` seconds (environment variable, 0 to 86400,
/// default 10, read once per process; 0 turns watching off) by a facil.io
/// timer in every process of the application (root and workers), with one
/// `stat(2)` per file, following symlinks. A changed pair that loads and
/// matches is served by new handshakes from then on (one INFO line naming
/// the server name, the certificate file, the new serial and notAfter);
/// established connections keep theirs. A pair that does not load (half
/// written, truncated, garbage, deleted, a key that does not match its
/// certificate yet) leaves the old certificate serving, with one WARNING
/// naming the file and the reason per change of the files; the next change
/// is tried again. A certificate within 14 days of its notAfter gets a
/// WARNING once a day, an expired one an ERROR once a day. Only the process
/// that made the object logs these at their level; the other processes
/// (forked workers) at DEBUG.
///
/// Protocol versions are TLS 1.2 and 1.3 only, with forward-secret AEAD
/// suites, no compression and no renegotiation.
///
/// Key exchange groups (server and client, in preference order) follow the
/// OpenSSL the library runs on, chosen at run time:
/// - OpenSSL 3.5 or newer (and the `OPENSSL=vendored` build, which carries
///   OpenSSL 3.5 LTS): X25519MLKEM768 (post-quantum hybrid), X25519, P-256,
///   X448, P-384, P-521. A client sends key shares for X25519MLKEM768 and
///   X25519; a server picks the first of the list that the client sent a
///   key share for, so a classical client that sent an X25519 share gets
///   X25519 without a HelloRetryRequest.
/// - OpenSSL 3.0 to 3.4: X25519, P-256, X448, P-384, P-521 (no ML-KEM).
///
/// With `FIO_LOG_LEVEL` at debug (5), each finished handshake logs its
/// version, group and ALPN protocol.
///
/// Session tickets (server side, RFC 5077 / RFC 8446): sealed with keys
/// that rotate every `FIO_TLS_TICKET_KEY_SECONDS` (environment, 1-86400,
/// default 3600); tickets of the previous and the next period also resume,
/// and a resumed TLS 1.3 handshake always gets a fresh ticket (TLS 1.2: a
/// fresh one when its ticket is not of the current period). The keys derive
/// from a random secret that the first call in the process makes (before
/// `fio_start` forks, so every worker shares it), or, when the environment
/// variable `FIO_TLS_TICKET_KEY_FILE` names a file, from that file's
/// secret, so that every host holding the same file resumes the others'
/// sessions. The first call reads the file; a file with fewer than 32
/// bytes, or that group or others may read or write, is one ERROR line
/// naming it, and the call still succeeds with the random secret. Each
/// process checks the file again every `FIO_TLS_RELOAD_SECONDS`: a new
/// secret seals new tickets at once, and the previous one still resumes
/// for one key period.
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
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub unsafe extern "C" fn fio_tls_new(
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
) -> *mut fio_tls_s {
    const API: &str = "fio_tls_new";
    ffi_boundary!(API, { new_object(API, server_name, private_key_file, public_cert_file, None) })
}

/// Adds a certificate for SNI: a client whose server name indication
/// matches `server_name`, or a DNS name in the certificate's
/// subjectAltName (`*.` wildcards cover one label), gets this certificate.
/// A client sending no SNI, or an unknown name, gets the first (default)
/// certificate. Files and `server_name` are checked as in `fio_tls_new`;
/// both files NULL generates a self-signed certificate for `server_name`
/// (or "localhost"). An exact name beats a `*.` wildcard; when the same
/// name (or wildcard) comes twice, the certificate added first wins, so
/// adding a name that already has a certificate logs a WARNING (to renew a
/// certificate, replace its files: they are watched, see `fio_tls_new`).
/// The files are watched, self-signed certificates renewed, and names with
/// NULL files given ACME certificates as for `fio_tls_new`.
///
/// Cost: amortised constant time per call (no context is built; a pair
/// already loaded under another name, same file contents, is not parsed
/// again), and picking the certificate for a ClientHello is a hash lookup
/// whatever the number of names.
///
/// On error (NULL or destroyed `tls`, unusable file) one error line is
/// logged and the object is unchanged. Connections already started keep the
/// certificates they began with. Thread-safe; the files are read (or the
/// key generated) before the object is locked, so `fio_tls_accept` and
/// `fio_tls_connect` on other threads never wait for the disk. facil.io's
/// workers are forked processes, so a call after `fio_start` changes the
/// calling worker's copy only.
///
/// # Safety
/// `tls` may be any value: anything but a live handle from `fio_tls_new`
/// (NULL, destroyed, never made) is reported, never acted on (see
/// `fio_tls_destroy`). Each string argument must be NULL or point to a
/// NUL-terminated string valid for the call.
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub unsafe extern "C" fn fio_tls_cert_add(
    tls: *mut fio_tls_s,
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
) {
    const API: &str = "fio_tls_cert_add";
    ffi_boundary!(API, { add_cert(API, tls, server_name, private_key_file, public_cert_file, None) })
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
/// `tls` may be any value: anything but a live handle from `fio_tls_new`
/// (NULL, destroyed, never made) is reported, never acted on (see
/// `fio_tls_destroy`). Each string argument must be NULL or point to a
/// NUL-terminated string valid for the call. `callback` must be NULL or a
/// function that stays callable while connections from `tls` may finish
/// handshakes.
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub unsafe extern "C" fn fio_tls_proto_add(
    tls: *mut fio_tls_s,
    protocol_name: *const c_char,
    callback: Option<unsafe extern "C" fn(uuid: isize, udata: *mut c_void)>,
) {
    const API: &str = "fio_tls_proto_add";
    ffi_boundary!(API, {
        let Some(tls) = object(API, tls) else { return };
        let name = match opt_str(API, "protocol name", protocol_name) {
            Ok(Some(n)) => n,
            Ok(None) => {
                log_error!("{API}: the protocol name is NULL or empty");
                return;
            }
            Err(()) => return,
        };
        let handler: Handler = callback;
        tls.update(API, || Ok(()), |c, ()| c.add_protocol(&name, handler));
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
/// source. `ca_file` is watched like the certificate files (see
/// `fio_tls_new`): a changed CA file that loads applies to new handshakes
/// (one INFO line); one that does not load leaves the CA certificates
/// loaded before in use, with one WARNING per change. On error (NULL or destroyed `tls`, unreadable or invalid file)
/// one error line is logged and nothing changes. Connections already
/// started are not affected. Thread-safe; `fio_tls_accept` and
/// `fio_tls_connect` on other threads never wait for it (the file is read
/// before the object is locked, as in `fio_tls_cert_add`).
///
/// # Safety
/// `tls` may be any value: anything but a live handle from `fio_tls_new`
/// (NULL, destroyed, never made) is reported, never acted on (see
/// `fio_tls_destroy`). Each string argument must be NULL or point to a
/// NUL-terminated string valid for the call.
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub unsafe extern "C" fn fio_tls_trust(tls: *mut fio_tls_s, ca_file: *const c_char) {
    ffi_boundary!("fio_tls_trust", { trust(tls, ca_file) })
}

/// Takes `tls` out of the table: the handle is destroyed at once, and the
/// object is released here or by the last call still using it on another
/// thread. NULL is ignored silently, like `free(NULL)`.
fn remove(api: &str, tls: *mut fio_tls_s) {
    match OBJECTS.remove(tls as usize) {
        Lookup::Live(object) => drop(object),
        Lookup::Null => {}
        other => report_bad(api, tls, &other),
    }
}

/// The server name and file names of `fio_tls_new` / `fio_tls_cert_add`
/// as strings (`None`: NULL or ""); `None` after logging an argument that
/// is not UTF-8.
///
/// # Safety
/// Each pointer NULL or a NUL-terminated string valid for the call.
unsafe fn cert_args(
    api: &str,
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
) -> Option<[Option<String>; 3]> {
    let (Ok(name), Ok(key), Ok(cert)) = (
        opt_str(api, "server name", server_name),
        opt_str(api, "private key file name", private_key_file),
        opt_str(api, "certificate file name", public_cert_file),
    ) else {
        return None;
    };
    Some([name, key, cert])
}

/// Makes an object from its default certificate (the body of both APIs'
/// `fio_tls_new`, the file names in key, certificate order; `password`
/// only from the release API): registers it and returns its handle, or
/// logs why not and returns NULL.
///
/// # Safety
/// As for `fio_tls_new`.
unsafe fn new_object(
    api: &str,
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
    password: Option<KeyPassword>,
) -> *mut fio_tls_s {
    let Some([name, key, cert]) = cert_args(api, server_name, private_key_file, public_cert_file) else {
        return core::ptr::null_mut();
    };
    let name = name.as_deref();
    let made = LoadedCert::load_with(name, key.as_deref(), cert.as_deref(), password).and_then(|loaded| {
        let mut config = TlsConfig::with_default(name, loaded);
        config.build().map(|built| (config, built))
    });
    let object = match made {
        Ok((config, built)) => TlsObject {
            config: Mutex::new(config),
            built: Mutex::new(Arc::new(built)),
            born_in: std::process::id(),
            #[cfg(feature = "api07")]
            refs: std::sync::atomic::AtomicUsize::new(1),
        },
        Err(e) => {
            log_error!("{api}: {e}");
            return core::ptr::null_mut();
        }
    };
    match OBJECTS.insert(object) {
        Ok(handle) => {
            // in every process that has objects (workers forked later
            // inherit it): fio_tls_reload's cluster message
            cluster::listen();
            reload::arm_timer();
            to_c(handle)
        }
        Err(handle::Full(n)) => {
            log_error!("{api}: {n} fio_tls_s objects exist already (the limit); destroy some first");
            core::ptr::null_mut()
        }
    }
}

/// The body of both APIs' `fio_tls_cert_add` (the file names already in
/// key, certificate order; `password` only from the release API).
///
/// # Safety
/// As for `fio_tls_cert_add`.
unsafe fn add_cert(
    api: &str,
    tls: *mut fio_tls_s,
    server_name: *const c_char,
    private_key_file: *const c_char,
    public_cert_file: *const c_char,
    password: Option<KeyPassword>,
) {
    let Some(tls) = object(api, tls) else { return };
    let Some([name, key, cert]) = cert_args(api, server_name, private_key_file, public_cert_file) else {
        return;
    };
    // The files are read (or the key generated) before the lock.
    let loaded = match LoadedCert::load_with(name.as_deref(), key.as_deref(), cert.as_deref(), password) {
        Ok(l) => l,
        Err(e) => return log_error!("{api}: {e}"),
    };
    let mut config = lock(&tls.config);
    match config.add_loaded(name.as_deref(), loaded) {
        // The first certificate from files is also the client's: the
        // client context changed.
        Ok(true) => tls.publish(config, api),
        Ok(false) => {}
        Err(e) => log_error!("{api}: {e}"),
    }
}

/// The body of `fio_tls_trust` (both APIs): the release API adds the CA
/// source to facil.io 0.7.x's trust list, the beta4 extension replaces the
/// earlier one.
///
/// # Safety
/// As for `fio_tls_trust`.
unsafe fn trust(tls: *mut fio_tls_s, ca_file: *const c_char) {
    const API: &str = "fio_tls_trust";
    let Some(tls) = object(API, tls) else { return };
    let Ok(ca_file) = opt_str(API, "CA file name", ca_file) else { return };
    tls.update(
        API,
        || LoadedTrust::load(ca_file.as_deref()),
        |c, trust| {
            #[cfg(feature = "api07")]
            c.trust_added(trust);
            #[cfg(not(feature = "api07"))]
            c.trust_loaded(trust);
            Ok(())
        },
    );
}

/// Shared body of accept and connect.
fn start(api: &str, uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void, role: Role) {
    ffi_boundary!(api, {
        let Some(tls) = object(api, tls) else {
            // A connection that cannot be secured must not stay open
            // unserved.
            crate::facil::sys::close(uuid);
            return;
        };
        let snapshot = tls.snapshot();
        drop(tls);
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
#[cfg(not(feature = "api07"))]
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
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub unsafe extern "C" fn fio_tls_connect(uuid: isize, tls: *mut fio_tls_s, udata: *mut c_void) {
    start("fio_tls_connect", uuid, tls, udata, Role::Client)
}

/// Releases a settings object made by `fio_tls_new`.
///
/// NULL is ignored. Connections started from it stay valid: they hold their
/// own reference to the contexts they use, freed when they close.
///
/// Handles: a `fio_tls_s *` is a handle, not an address (dereferencing
/// one faults). Every function taking one reports, with one ERROR line, and
/// otherwise ignores:
/// - NULL ("the fio_tls_s argument is NULL"; `fio_tls_destroy(NULL)` is
///   silent, like `free(NULL)`);
/// - a destroyed handle ("it was destroyed by fio_tls_destroy"), also after
///   a new object was made in its place: a second `fio_tls_destroy(a)` never
///   destroys the object a later `fio_tls_new` returned;
/// - any value `fio_tls_new` never returned ("it was never returned by
///   fio_tls_new"): real addresses of any kind (heap, stack, static, inside
///   this library), and values that are no handle at all.
///
/// Not detected: a made-up value that copies the handle format (bits 63..48
/// 0xF715, a slot and a generation) of a live object. A slot is retired
/// after 2^24 destroys rather than reuse a generation, so a destroyed
/// handle can never come back to life.
///
/// Thread-safe, also against other calls on the same handle: a call racing
/// with `fio_tls_destroy` either runs on the whole object (which is
/// released only when the last such call returns) or reports the handle as
/// destroyed; no use-after-free either way.
///
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub extern "C" fn fio_tls_destroy(tls: *mut fio_tls_s) {
    ffi_boundary!("fio_tls_destroy", { remove("fio_tls_destroy", tls) })
}

#[cfg(all(test, not(feature = "api07")))]
pub(crate) mod tests {
    use super::boundary::test_support::panic_next;
    use super::*;
    use std::ffi::CString;
    use std::sync::mpsc;
    use std::time::Duration;

    pub(crate) fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    /// The object behind a handle that must be live.
    pub(crate) fn live(tls: *mut fio_tls_s) -> Arc<TlsObject> {
        match OBJECTS.get(tls as usize) {
            Lookup::Live(o) => o,
            _ => panic!("{tls:p} is not live"),
        }
    }

    fn certs(tls: *mut fio_tls_s) -> usize {
        lock(&live(tls).config).certs().len()
    }

    fn new_anon() -> *mut fio_tls_s {
        // SAFETY: NULL strings.
        let tls = unsafe { fio_tls_new(core::ptr::null(), core::ptr::null(), core::ptr::null()) };
        assert!(!tls.is_null());
        tls
    }

    #[test]
    fn new_self_signed_and_destroy() {
        unsafe {
            let tls = fio_tls_new(c("localhost").as_ptr(), core::ptr::null(), core::ptr::null());
            assert!(!tls.is_null());
            fio_tls_cert_add(tls, c("other.test").as_ptr(), core::ptr::null(), core::ptr::null());
            fio_tls_proto_add(tls, c("http/1.1").as_ptr(), None);
            assert_eq!(certs(tls), 2);
            assert_eq!(live(tls).snapshot().protocols.len(), 1);
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
            let tls = new_anon();
            fio_tls_cert_add(tls, c("bad").as_ptr(), c("/nonexistent.key").as_ptr(), c("/nonexistent.crt").as_ptr());
            fio_tls_proto_add(tls, c(&"x".repeat(256)).as_ptr(), None);
            fio_tls_proto_add(tls, core::ptr::null(), None);
            fio_tls_trust(tls, c("/nonexistent-ca.pem").as_ptr());
            assert_eq!(certs(tls), 1);
            assert!(lock(&live(tls).config).protocols().is_empty());
            assert!(!live(tls).snapshot().verify_peer);
            fio_tls_destroy(tls);
        }
    }

    #[test]
    fn accept_without_host_is_refused_not_crashed() {
        unsafe {
            let tls = new_anon();
            fio_tls_accept(0x100, tls, core::ptr::null_mut());
            fio_tls_connect(0x100, core::ptr::null_mut(), core::ptr::null_mut());
            assert!(!crate::facil::sys::host_present());
            fio_tls_destroy(tls);
        }
    }

    #[test]
    fn a_stale_handle_never_reaches_the_object_made_after_it() {
        unsafe {
            let a = new_anon();
            fio_tls_destroy(a);
            // The slot of `a` is free; the next object takes it (as an
            // allocator would give it the same address).
            let b = new_anon();
            fio_tls_destroy(a);
            fio_tls_cert_add(a, c("stale.test").as_ptr(), core::ptr::null(), core::ptr::null());
            fio_tls_proto_add(a, c("stale").as_ptr(), None);
            fio_tls_accept(0x100, a, core::ptr::null_mut());
            // b is untouched by all of that, and still usable.
            assert_eq!(certs(b), 1);
            assert!(lock(&live(b).config).protocols().is_empty());
            fio_tls_proto_add(b, c("h2").as_ptr(), None);
            assert_eq!(live(b).snapshot().protocols.len(), 1);
            fio_tls_destroy(b);
            assert!(matches!(OBJECTS.get(b as usize), Lookup::Destroyed));
        }
    }

    #[test]
    fn foreign_pointers_are_refused() {
        let mut not_ours = [0u64; 4];
        let p = not_ours.as_mut_ptr() as *mut fio_tls_s;
        unsafe {
            fio_tls_cert_add(p, c("x.test").as_ptr(), core::ptr::null(), core::ptr::null());
            fio_tls_destroy(p);
        }
        assert_eq!(not_ours, [0; 4], "nothing written through a foreign pointer");
        assert!(matches!(OBJECTS.get(p as usize), Lookup::Foreign));
    }

    #[test]
    fn a_change_that_reads_files_does_not_hold_up_new_connections() {
        let tls = new_anon();
        let object = live(tls);
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let updater = {
            let object = object.clone();
            std::thread::spawn(move || {
                object.update(
                    "test",
                    // Stands for a slow disk (or key generation).
                    || {
                        entered_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        Ok("slow.test")
                    },
                    |c, name| c.add_protocol(name, None),
                );
            })
        };
        entered.recv().unwrap();
        // What fio_tls_accept does, from another thread, while the update
        // is still reading.
        let (done_tx, done) = mpsc::channel();
        let reader = object.clone();
        std::thread::spawn(move || done_tx.send(reader.snapshot().protocols.len()).unwrap());
        let got = done.recv_timeout(Duration::from_secs(5));
        release.send(()).unwrap();
        updater.join().unwrap();
        assert_eq!(got, Ok(0), "fio_tls_accept waited for a configuration change's file reads");
        assert_eq!(object.snapshot().protocols.len(), 1, "the change landed afterwards");
        fio_tls_destroy(tls);
    }

    #[test]
    fn concurrent_destroy_and_use_are_safe() {
        // Users hammer a handle that the main thread destroys and replaces;
        // every call either acts on a whole live object or reports it.
        let current = Arc::new(std::sync::atomic::AtomicUsize::new(new_anon() as usize));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let users: Vec<_> = (0..3)
            .map(|i| {
                let (current, stop) = (current.clone(), stop.clone());
                std::thread::spawn(move || {
                    let name = c(&format!("p{i}"));
                    let mut calls = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        let h = current.load(std::sync::atomic::Ordering::Acquire) as *mut fio_tls_s;
                        // SAFETY: any handle value is allowed.
                        unsafe {
                            fio_tls_proto_add(h, name.as_ptr(), None);
                            fio_tls_accept(0x100, h, core::ptr::null_mut());
                        }
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        for _ in 0..50 {
            let next = new_anon() as usize;
            let old = current.swap(next, std::sync::atomic::Ordering::AcqRel);
            fio_tls_destroy(old as *mut fio_tls_s);
            fio_tls_destroy(old as *mut fio_tls_s);
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        let calls: u32 = users.into_iter().map(|u| u.join().unwrap()).sum();
        assert!(calls > 0);
        fio_tls_destroy(current.load(std::sync::atomic::Ordering::Acquire) as *mut fio_tls_s);
    }

    #[test]
    fn a_panic_inside_an_api_call_returns_the_failure_value() {
        panic_next("fio_tls_new");
        // SAFETY: NULL strings.
        let tls = unsafe { fio_tls_new(core::ptr::null(), core::ptr::null(), core::ptr::null()) };
        assert!(tls.is_null());
        let tls = new_anon();
        panic_next("fio_tls_proto_add");
        // SAFETY: a live handle and a C string.
        unsafe { fio_tls_proto_add(tls, c("h2").as_ptr(), None) };
        assert!(lock(&live(tls).config).protocols().is_empty());
        // The object is still usable afterwards.
        unsafe { fio_tls_proto_add(tls, c("h2").as_ptr(), None) };
        assert_eq!(live(tls).snapshot().protocols.len(), 1);
        panic_next("fio_tls_destroy");
        fio_tls_destroy(tls);
        fio_tls_destroy(tls);
        assert!(matches!(OBJECTS.get(tls as usize), Lookup::Destroyed));
    }
}
