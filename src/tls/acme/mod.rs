//! Automatic certificates: an ACME client (RFC 8555) answering the
//! TLS-ALPN-01 challenge (RFC 8737) inside the library's own handshake.
//!
//! Engine room only (no facil.io knowledge): the host layer decides when
//! and where the client thread runs ([`crate::facil::acme`]).
//!
//! * [`settings`]: the environment, read once per process.
//! * [`cache`]: the cache directory layout (0700 directory, 0600 files):
//!   `account.key`, `certs/<name>.key` + `certs/<name>.crt` (watched like
//!   any certificate files), `challenges/<name>.pem` (the challenge key and
//!   certificate of a pending name), `lock` (the election).
//! * [`responder`]: the RFC 8737 challenge certificate and the ClientHello
//!   decision for ALPN `acme-tls/1`; every process reads the challenge
//!   material from the cache on demand, so whichever worker accepts the
//!   validation connection answers it.
//! * [`jws`], [`http`], [`client`]: the protocol.
//! * [`manager`]: the election, the issuance and renewal loop, back-off.
//!
//! # Why hand-written
//! The maintained ACME crates did not fit: `instant-acme` is async (tokio)
//! over hyper and rustls, a second TLS stack and runtime that cannot be
//! pointed at `FIO_TLS_ACME_CA_FILE` through OpenSSL and whose runtime
//! threads must never reach a forked worker; `acme-lib` / `acme-micro` are
//! unmaintained (no release for years) and pull `ureq` with its own TLS
//! configuration. RFC 8555's client side that we need is small: JWS ES256
//! over OpenSSL, a JWK thumbprint (RFC 7638), a CSR, and a handful of
//! HTTPS requests, which [`http`] sends over `openssl::ssl::SslStream`
//! (one request per connection). JSON goes through `serde_json`.

pub mod cache;
pub mod client;
pub mod http;
pub mod jws;
pub mod manager;
pub mod responder;

use once_cell::sync::Lazy;
use std::path::PathBuf;
use std::sync::Mutex;

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737 section 6.2).
pub const ALPN: &[u8] = b"acme-tls/1";

/// The ACME settings of this process, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FIO_TLS_ACME_DIRECTORY`: the directory URL (https only).
    pub directory: String,
    /// `FIO_TLS_ACME_DIR`: the cache directory (default `fio_tls_acme`,
    /// relative to the working directory).
    pub dir: PathBuf,
    /// `FIO_TLS_ACME_EMAIL`: optional contact (`mailto:` is added).
    pub email: Option<String>,
    /// `FIO_TLS_ACME_CA_FILE`: optional PEM bundle trusted for the ACME
    /// server's own HTTPS, on top of the system store.
    pub ca_file: Option<String>,
    /// `FIO_TLS_ACME_TEST_RENEW_AFTER`: test knob, seconds after a
    /// certificate's notBefore from which it is renewed (instead of two
    /// thirds of its lifetime).
    pub renew_after: Option<i64>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    fn from_env() -> Option<Settings> {
        let directory = env("FIO_TLS_ACME_DIRECTORY")?;
        let renew_after = env("FIO_TLS_ACME_TEST_RENEW_AFTER").and_then(|v| match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                crate::log::log_warning!(
                    "FIO_TLS_ACME_TEST_RENEW_AFTER=\"{v}\" is not a whole number of seconds (1 or more); ignored"
                );
                None
            }
        });
        let settings = Settings {
            directory,
            dir: PathBuf::from(env("FIO_TLS_ACME_DIR").unwrap_or_else(|| "fio_tls_acme".into())),
            email: env("FIO_TLS_ACME_EMAIL"),
            ca_file: env("FIO_TLS_ACME_CA_FILE"),
            renew_after,
        };
        if !settings.directory.starts_with("https://") {
            crate::log::log_error!(
                "FIO_TLS_ACME_DIRECTORY=\"{}\" is not an https:// URL; automatic certificates are off",
                settings.directory
            );
            return None;
        }
        if let Err(e) = cache::prepare(&settings.dir) {
            crate::log::log_error!("FIO_TLS_ACME_DIR: {e}; automatic certificates are off");
            return None;
        }
        Some(settings)
    }
}

/// The ACME settings, or `None` when `FIO_TLS_ACME_DIRECTORY` is unset (or
/// unusable: one ERROR line then). Read once per process; a forked worker
/// keeps what its parent read.
pub fn settings() -> Option<&'static Settings> {
    static VALUE: Lazy<Option<Settings>> = Lazy::new(Settings::from_env);
    VALUE.as_ref()
}

/// Names that get certificates from the CA, in the order registered.
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether `name` can get a certificate by TLS-ALPN-01: a DNS name (not a
/// wildcard, which RFC 8737 cannot validate, nor an IP address) made of
/// letters, digits, '-' and '.'.
pub fn eligible(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.')
}

/// Registers `name` (lower-cased) for a certificate from the CA; a name
/// registered twice is kept once.
pub fn register(name: &str) {
    let name = name.to_ascii_lowercase();
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if !names.contains(&name) {
        names.push(name);
    }
}

/// The names registered so far.
pub fn names() -> Vec<String> {
    NAMES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
