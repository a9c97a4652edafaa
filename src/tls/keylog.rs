//! `SSLKEYLOGFILE`: session secrets in the NSS key log format, for
//! decrypting a capture in Wireshark while debugging.
//!
//! Off unless the environment variable names a file when the first context
//! is built. Then every handshake appends its secrets (OpenSSL produces the
//! lines) and one WARNING says so, since anyone who can read the file can
//! decrypt the traffic. Nothing else in the library writes key material.

use crate::log::log_warning;
use once_cell::sync::Lazy;
use openssl::ssl::SslContextBuilder;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

static KEYLOG: Lazy<Option<Mutex<File>>> = Lazy::new(|| {
    let path = std::env::var_os("SSLKEYLOGFILE")?;
    if path.is_empty() {
        return None;
    }
    let shown = path.to_string_lossy().into_owned();
    // Owner-only: anyone who reads the file can decrypt the traffic.
    match OpenOptions::new().create(true).append(true).mode(0o600).open(&path) {
        Ok(file) => {
            log_warning!("SSLKEYLOGFILE is set: TLS session secrets are appended to \"{shown}\" (debugging only)");
            Some(Mutex::new(file))
        }
        Err(e) => {
            log_warning!("SSLKEYLOGFILE=\"{shown}\" cannot be opened ({e}); no key log is written");
            None
        }
    }
});

/// Installs the key log callback on `b` when `SSLKEYLOGFILE` is in use.
pub fn install(b: &mut SslContextBuilder) {
    if KEYLOG.is_none() {
        return;
    }
    b.set_keylog_callback(|_ssl, line| {
        crate::ffi::boundary::ffi_boundary!("key log callback", {
            if let Some(file) = KEYLOG.as_ref() {
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                // One write per line keeps lines whole across processes too.
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
        })
    });
}
