// The body of the `key_cert_files` fuzz target, shared with the replay of
// fuzz/seeds and fuzz/regressions in tests/fuzz_regressions.rs.
//
// Arbitrary bytes as a private key file and a certificate file.
//
// Input layout: `key_len (2 bytes, little endian), key bytes, cert bytes`
// (a key_len past the end takes the whole rest as the key). Both parts are
// written to files in a private temporary directory, then loaded the ways
// the C API loads them: `pem::load_private_key`, `pem::load_chain`,
// `TlsConfig::new` (key/certificate match), `add_cert`, the certificate
// file as a CA file (`set_trust`), and `build()` of whatever loaded.
// Every error must be a one-line message naming the file.

use fio_tls::tls::{pem, TlsConfig};
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        // /dev/shm when there is one: no disk writes per input
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("fio_tls_fuzz_files_{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

/// Settings with a generated certificate, made once.
fn anonymous() -> &'static TlsConfig<u8> {
    static A: OnceLock<TlsConfig<u8>> = OnceLock::new();
    A.get_or_init(|| TlsConfig::new(None, None, None).expect("self-signed"))
}

fn check_message(e: &impl std::fmt::Display, path: &str) {
    let m = e.to_string();
    assert!(!m.is_empty(), "empty error message");
    assert!(!m.contains('\n'), "multi-line error message: {m:?}");
    assert!(m.contains(path) || m.contains("does not match") || m.contains("OpenSSL") || m.len() < 400,
            "unexpected error message: {m:?}");
}

/// One input; panics (or a sanitizer report) on a bug.
pub fn run(input: &[u8]) {
    if input.len() < 2 {
        return;
    }
    let key_len = u16::from_le_bytes([input[0], input[1]]) as usize;
    let rest = &input[2..];
    let (key, cert) = rest.split_at(key_len.min(rest.len()));
    let d = dir();
    let key_path = d.join("key.pem");
    let cert_path = d.join("cert.pem");
    std::fs::write(&key_path, key).expect("write key");
    std::fs::write(&cert_path, cert).expect("write cert");
    let (k, c) = (key_path.to_str().expect("utf-8"), cert_path.to_str().expect("utf-8"));

    match pem::load_private_key(k) {
        Ok(pkey) => {
            let _ = pkey.public_key_to_der();
        }
        Err(e) => check_message(&e, k),
    }
    match pem::load_chain(c) {
        Ok(chain) => {
            assert!(!chain.is_empty(), "an empty chain loaded");
            for x in &chain {
                let _ = x.subject_alt_names();
                let _ = x.public_key();
            }
        }
        Err(e) => check_message(&e, c),
    }
    // The pair as given (then built, with a second certificate, an ALPN
    // name and the certificate file as CA file), and the certificate file
    // as both key and certificate (one PEM file holding both is common).
    match TlsConfig::<u8>::new(Some("fuzz.test"), Some(k), Some(c)) {
        Ok(mut cfg) => {
            let _ = cfg.add_cert(Some("b.fuzz.test"), Some(k), Some(c));
            let _ = cfg.add_protocol("http/1.1", 1);
            let _ = cfg.set_trust(Some(c));
            // build() may refuse what loaded (e.g. "ee key too small" for a
            // key below OpenSSL's security level): one line, no panic.
            match cfg.build() {
                Ok(built) => assert!(built.protocol_for(None).is_some()),
                Err(e) => assert!(!e.to_string().contains('\n')),
            }
        }
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "multi-line error message: {m:?}");
        }
    }
    if let Err(e) = TlsConfig::<u8>::new(None, Some(c), Some(c)) {
        assert!(!e.to_string().contains('\n'));
    }
    let mut anon = anonymous().clone();
    if anon.set_trust(Some(c)).is_ok() {
        if let Err(e) = anon.build() {
            assert!(!e.to_string().contains('\n'));
        }
    }
}
