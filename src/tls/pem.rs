//! Reading private keys and certificate chains from files.
//!
//! PEM is the documented format; DER is accepted too when a file holds no
//! PEM armour at all. Every failure names the file and the reason in one
//! line. A private key's file bytes are wiped with `OPENSSL_cleanse` as soon
//! as OpenSSL has parsed them, on success and on error alike.

use super::error::{os_reason as io_reason, ConfigError};
use super::sys::cleanse;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Largest key or certificate file we read (a CA bundle is well below this).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// File bytes that are wiped when dropped.
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        cleanse(&mut self.0);
    }
}

fn read_limited(what: &'static str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let fail = |reason: String| ConfigError::file(what, path, reason);
    // O_NONBLOCK: opening a FIFO with no writer must not hang; regular
    // files ignore the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(io_reason(&e)))?;
    let meta = file.metadata().map_err(|e| fail(io_reason(&e)))?;
    if meta.is_dir() {
        return Err(fail("Is a directory".into()));
    }
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!("file is larger than {} bytes", MAX_FILE_BYTES)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(io_reason(&e)))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        cleanse(&mut bytes);
        return Err(fail(format!("file is larger than {} bytes", MAX_FILE_BYTES)));
    }
    Ok(bytes)
}

fn has_pem_armour(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// Loads a private key (PEM, or DER when the file has no PEM armour).
///
/// An encrypted key is refused with a clear error: this library never asks
/// for a passphrase (no terminal prompt, no hang).
pub fn load_private_key(path: &str) -> Result<PKey<Private>, ConfigError> {
    const WHAT: &str = "private key file";
    let bytes = SecretBytes(read_limited(WHAT, path)?);
    let bytes = &bytes.0;
    if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(ConfigError::file(WHAT, path, "the key is encrypted; provide an unencrypted key".into()));
    }
    let parsed = if has_pem_armour(bytes) {
        // A passphrase callback that always declines, so OpenSSL never falls
        // back to prompting on the terminal.
        PKey::private_key_from_pem_callback(bytes, |_buf| Ok(0))
    } else {
        PKey::private_key_from_der(bytes)
    };
    parsed.map_err(|_| ConfigError::file(WHAT, path, "no valid PEM (or DER) private key in the file".into()))
}

/// Loads a certificate chain: the leaf first, then any intermediates, in the
/// order the file holds them (PEM; a single DER certificate is accepted too).
pub fn load_chain(path: &str) -> Result<Vec<X509>, ConfigError> {
    load_certificates("certificate file", path)
}

/// Loads every certificate of a PEM file (or one DER certificate); `what`
/// names the file's role in error messages.
pub fn load_certificates(what: &'static str, path: &str) -> Result<Vec<X509>, ConfigError> {
    let bytes = read_limited(what, path)?;
    let chain = if has_pem_armour(&bytes) {
        X509::stack_from_pem(&bytes).ok().filter(|c| !c.is_empty())
    } else {
        X509::from_der(&bytes).ok().map(|c| vec![c])
    };
    chain.ok_or_else(|| ConfigError::file(what, path, "no valid PEM (or DER) certificate in the file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, contents: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("fio_tls_pem_{}_{}", std::process::id(), name));
        let mut f = std::fs::File::create(&dir).unwrap();
        f.write_all(contents).unwrap();
        dir.to_string_lossy().into_owned()
    }

    #[test]
    fn missing_file_names_path_and_reason() {
        let err = load_private_key("/nonexistent/fio_tls/key.pem").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/fio_tls/key.pem"), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[test]
    fn directory_is_refused() {
        let err = load_chain("/tmp").unwrap_err().to_string();
        assert!(err.contains("Is a directory"), "{err}");
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let fifo = std::env::temp_dir().join(format!("fio_tls_pem_{}_fifo", std::process::id()));
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: plain mkfifo(3) on a fresh path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = load_chain(fifo.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        let err = load_private_key("/dev/zero").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        let p = temp_file("garbage.pem", b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
        let err = load_chain(&p).unwrap_err().to_string();
        assert!(err.contains("no valid PEM"), "{err}");
        let err = load_private_key(&p).unwrap_err().to_string();
        assert!(err.contains("no valid PEM"), "{err}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn encrypted_key_is_refused_without_prompt() {
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let pkey = PKey::from_ec_key(key).unwrap();
        let pem = pkey
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"secret")
            .unwrap();
        let p = temp_file("enc.pem", &pem);
        let err = load_private_key(&p).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn pem_and_der_keys_load() {
        let (key, cert) = crate::tls::selfsigned::generate("pem.test").unwrap();
        let p = temp_file("k.pem", &key.private_key_to_pem_pkcs8().unwrap());
        assert!(load_private_key(&p).unwrap().public_eq(&key));
        let d = temp_file("k.der", &key.private_key_to_der().unwrap());
        assert!(load_private_key(&d).unwrap().public_eq(&key));
        let c = temp_file("c.der", &cert.to_der().unwrap());
        assert_eq!(load_chain(&c).unwrap().len(), 1);
        for f in [p, d, c] {
            std::fs::remove_file(f).unwrap();
        }
    }
}
