//! Reading private keys and certificate chains from files.
//!
//! PEM and DER are both read: a file with PEM armour is PEM, any other is
//! DER (a key in traditional or PKCS#8 form; a chain as DER certificates
//! laid end to end, leaf first). Every failure names the file and the
//! reason in one line and has an [`ErrorKind`]: a file holding the other
//! half of the pair (key and certificate swapped), an encrypted key (PEM or
//! DER), bytes after the last DER certificate, a PKCS#7 bundle. A private key's file bytes are wiped with `OPENSSL_cleanse` as soon
//! as OpenSSL has parsed them, on success and on error alike.

use super::error::{os_reason as io_reason, ConfigError, ErrorKind};
use super::sys::{cleanse, der_certificates};
use openssl::pkcs7::Pkcs7;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Largest key or certificate file we read (a CA bundle is well below this).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The password of an encrypted private key (facil.io 0.7.x's
/// `pk_password`), wiped when dropped. Kept with a certificate loaded from
/// files so that the watcher can decrypt a renewed key file too.
#[derive(Clone)]
pub struct KeyPassword(Vec<u8>);

impl KeyPassword {
    /// `None` for an empty password: OpenSSL treats a key encrypted with
    /// the empty password as a plain one anyway.
    pub fn new(password: &[u8]) -> Option<Self> {
        (!password.is_empty()).then(|| KeyPassword(password.to_vec()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for KeyPassword {
    fn drop(&mut self) {
        cleanse(&mut self.0);
    }
}

/// File bytes that are wiped when dropped.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        cleanse(&mut self.0);
    }
}

fn read_limited(what: &'static str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let fail = |reason: String| ConfigError::file(ErrorKind::File, what, path, reason);
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

/// What a file's bytes hold as a private key.
enum KeyProbe {
    Plain(PKey<Private>),
    /// OpenSSL asked for a passphrase: an encrypted key (PEM or PKCS#8 DER).
    Encrypted,
    None,
}

/// Parses a private key with OpenSSL: PEM when the bytes have PEM armour,
/// else DER (traditional or PKCS#8, then encrypted PKCS#8). The passphrase
/// callback always declines, so OpenSSL never prompts on the terminal; that
/// it was asked at all tells an encrypted key from garbage.
fn probe_key(bytes: &[u8]) -> KeyProbe {
    let mut asked = false;
    let parsed = if has_pem_armour(bytes) {
        if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(bytes, b"Proc-Type: 4,ENCRYPTED") {
            return KeyProbe::Encrypted;
        }
        PKey::private_key_from_pem_callback(bytes, |_buf| {
            asked = true;
            Ok(0)
        })
    } else {
        PKey::private_key_from_der(bytes).or_else(|_| {
            // An EncryptedPrivateKeyInfo (PKCS#8, RFC 5208 section 6).
            PKey::private_key_from_pkcs8_callback(bytes, |_buf| {
                asked = true;
                Ok(0)
            })
        })
    };
    match parsed {
        // A key "encrypted" with an empty passphrase is a plain key.
        Ok(key) => KeyProbe::Plain(key),
        Err(_) if asked => KeyProbe::Encrypted,
        Err(_) => KeyProbe::None,
    }
}

/// True when the bytes hold at least one certificate (PEM, or DER).
fn holds_certificate(bytes: &[u8]) -> bool {
    if has_pem_armour(bytes) {
        X509::stack_from_pem(bytes).is_ok_and(|c| !c.is_empty())
    } else {
        !der_certificates(bytes).0.is_empty()
    }
}

/// True when the bytes are a PKCS#7 certificate bundle (`.p7b`).
fn holds_pkcs7(bytes: &[u8]) -> bool {
    if has_pem_armour(bytes) {
        Pkcs7::from_pem(bytes).is_ok()
    } else {
        Pkcs7::from_der(bytes).is_ok()
    }
}

/// The reminder added when a file holds the other half of the pair.
const ORDER_HINT: &str = if cfg!(feature = "api07") {
    "facil.io 0.7's fio_tls_new and fio_tls_cert_add take the certificate file first, then the private key file: were they swapped?"
} else {
    "fio_tls_new and fio_tls_cert_add take the private key file first, then the certificate file: were they swapped?"
};

/// Loads a private key (PEM, or DER when the file has no PEM armour).
///
/// An encrypted key (PEM or PKCS#8 DER) is refused with a clear error: this
/// library never asks for a passphrase (no terminal prompt, no hang). A
/// file holding a certificate instead is refused with a reminder of the
/// argument order ([`ErrorKind::WrongContent`]).
pub fn load_private_key(path: &str) -> Result<PKey<Private>, ConfigError> {
    parse_private_key(path, read_key_file(path)?.bytes())
}

/// What a private key file's label is in messages.
const KEY_FILE: &str = "private key file";

/// Reads a private key file (wiped when dropped), for
/// [`parse_private_key`].
pub fn read_key_file(path: &str) -> Result<SecretBytes, ConfigError> {
    Ok(SecretBytes(read_limited(KEY_FILE, path)?))
}

/// Reads a certificate file (wiped when dropped too: a key given as a
/// certificate file must not linger), for [`parse_chain`].
pub fn read_cert_file(path: &str) -> Result<SecretBytes, ConfigError> {
    Ok(SecretBytes(read_limited("certificate file", path)?))
}

/// What to do about an encrypted key without a password, in messages.
const ENCRYPTED_HINT: &str = if cfg!(feature = "api07") {
    "the key is encrypted and no password (pk_password) was given"
} else {
    "the key is encrypted; provide an unencrypted key"
};

/// [`load_private_key`] of bytes already read from `path` (named in errors).
pub fn parse_private_key(path: &str, bytes: &[u8]) -> Result<PKey<Private>, ConfigError> {
    parse_private_key_with(path, bytes, None)
}

/// [`parse_private_key`] with the password of an encrypted key (PEM, or
/// encrypted PKCS#8 DER). OpenSSL decrypts it; a password that does not
/// decrypt it is [`ErrorKind::WrongPassword`]. A password given for a key
/// that is not encrypted is not needed and not an error.
pub fn parse_private_key_with(path: &str, bytes: &[u8], password: Option<&KeyPassword>) -> Result<PKey<Private>, ConfigError> {
    const WHAT: &str = KEY_FILE;
    match probe_key(bytes) {
        KeyProbe::Plain(key) => Ok(key),
        KeyProbe::Encrypted => match password {
            Some(pw) => decrypt_key(bytes, pw).ok_or_else(|| {
                ConfigError::file(
                    ErrorKind::WrongPassword,
                    WHAT,
                    path,
                    "the key is encrypted and the password given does not decrypt it".into(),
                )
            }),
            None => Err(ConfigError::file(ErrorKind::Encrypted, WHAT, path, ENCRYPTED_HINT.into())),
        },
        KeyProbe::None if holds_certificate(bytes) => Err(ConfigError::file(
            ErrorKind::WrongContent,
            WHAT,
            path,
            format!("holds a certificate, not a private key ({ORDER_HINT})"),
        )),
        KeyProbe::None => Err(ConfigError::file(
            ErrorKind::Format,
            WHAT,
            path,
            "no valid PEM (or DER) private key in the file".into(),
        )),
    }
}

/// Decrypts an encrypted key (PEM: PKCS#8 or traditional with a
/// DEK-Info header; DER: encrypted PKCS#8). The password goes to OpenSSL
/// directly: no prompt either way.
fn decrypt_key(bytes: &[u8], password: &KeyPassword) -> Option<PKey<Private>> {
    let parsed = if has_pem_armour(bytes) {
        PKey::private_key_from_pem_passphrase(bytes, password.bytes())
    } else {
        PKey::private_key_from_pkcs8_passphrase(bytes, password.bytes())
    };
    parsed.ok()
}

/// Loads a certificate chain: the leaf first, then any intermediates, in the
/// order the file holds them (PEM blocks, or DER certificates laid end to
/// end).
pub fn load_chain(path: &str) -> Result<Vec<X509>, ConfigError> {
    load(CertFile::Chain, path)
}

/// [`load_chain`] of bytes already read from `path` (named in errors).
pub fn parse_chain(path: &str, bytes: &[u8]) -> Result<Vec<X509>, ConfigError> {
    parse(CertFile::Chain, path, bytes)
}

/// Loads every certificate of a CA file (PEM, or DER certificates laid end
/// to end).
pub fn load_ca_certificates(path: &str) -> Result<Vec<X509>, ConfigError> {
    load(CertFile::Ca, path)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CertFile {
    /// The certificate file of a key/certificate pair.
    Chain,
    /// The CA file of `fio_tls_trust`.
    Ca,
}

fn what(role: CertFile) -> &'static str {
    match role {
        CertFile::Chain => "certificate file",
        CertFile::Ca => "CA file",
    }
}

fn load(role: CertFile, path: &str) -> Result<Vec<X509>, ConfigError> {
    // Wiped too: a key given as a certificate file must not linger.
    let bytes = SecretBytes(read_limited(what(role), path)?);
    parse(role, path, &bytes.0)
}

fn parse(role: CertFile, path: &str, bytes: &[u8]) -> Result<Vec<X509>, ConfigError> {
    let what = what(role);
    let fail = |kind, reason: String| Err(ConfigError::file(kind, what, path, reason));
    let chain = if has_pem_armour(bytes) {
        X509::stack_from_pem(bytes).unwrap_or_default()
    } else {
        let (chain, used) = der_certificates(bytes);
        if !chain.is_empty() && used < bytes.len() {
            return fail(
                ErrorKind::Format,
                format!(
                    "{} DER certificate(s) followed by {} bytes that are not a DER certificate",
                    chain.len(),
                    bytes.len() - used
                ),
            );
        }
        chain
    };
    if !chain.is_empty() {
        return Ok(chain);
    }
    if !matches!(probe_key(bytes), KeyProbe::None) {
        return match role {
            CertFile::Chain => fail(
                ErrorKind::WrongContent,
                format!("holds a private key, not a certificate ({ORDER_HINT})"),
            ),
            CertFile::Ca => fail(ErrorKind::WrongContent, "holds a private key, not CA certificates".into()),
        };
    }
    if holds_pkcs7(bytes) {
        return fail(
            ErrorKind::Format,
            "holds a PKCS#7 bundle, which is not read here; convert it to PEM \
             (openssl pkcs7 -print_certs -in FILE, with -inform DER for a DER bundle)"
                .into(),
        );
    }
    fail(ErrorKind::Format, "no valid PEM (or DER) certificate in the file".into())
}

#[cfg(test)]
mod tests {
    /// How the order reminder words the argument order in this build.
    const ORDER_IN_HINT: &str = if cfg!(feature = "api07") {
        "take the certificate file first, then the private key file"
    } else {
        "private key file first, then the certificate file"
    };
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
        let err = load_private_key(&p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encrypted);
        assert!(err.to_string().contains("encrypted"), "{err}");
        std::fs::remove_file(p).unwrap();
    }

    use crate::tls::testutil::{self, TempDir, Usage};

    /// A CA, an intermediate and a leaf for "leaf.test" (with the leaf's key).
    fn chain() -> (PKey<Private>, Vec<X509>) {
        let ca_key = testutil::key();
        let ca = testutil::cert(&ca_key, "Test CA", &[], Usage::Ca, None);
        let int_key = testutil::key();
        let int = testutil::cert(&int_key, "Test Intermediate", &[], Usage::Ca, Some((&ca, &ca_key)));
        let leaf_key = testutil::key();
        let leaf = testutil::cert(&leaf_key, "leaf.test", &["leaf.test"], Usage::Server, Some((&int, &int_key)));
        (leaf_key, vec![leaf, int, ca])
    }

    fn der_of(chain: &[X509]) -> Vec<u8> {
        chain.iter().flat_map(|c| c.to_der().unwrap()).collect()
    }

    #[test]
    fn der_chain_loads_whole() {
        let dir = TempDir::new("derchain");
        let (_, chain) = chain();
        let p = dir.file("chain.der", &der_of(&chain));
        let loaded = load_chain(&p).unwrap();
        assert_eq!(loaded.len(), 3, "every certificate of the DER file");
        for (got, want) in loaded.iter().zip(&chain) {
            assert_eq!(got.to_der().unwrap(), want.to_der().unwrap(), "in file order");
        }
        // the same file as a CA file
        assert_eq!(load_ca_certificates(&p).unwrap().len(), 3);
    }

    #[test]
    fn der_chain_with_trailing_bytes_is_refused() {
        let dir = TempDir::new("dertrail");
        let (_, chain) = chain();
        let mut bytes = der_of(&chain[..2]);
        bytes.extend_from_slice(b"not a certificate");
        let p = dir.file("trail.der", &bytes);
        let err = load_chain(&p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format);
        let m = err.to_string();
        assert!(m.contains(&p) && m.contains("2 DER certificate(s) followed by 17 bytes"), "{m}");
    }

    #[test]
    fn pkcs7_bundle_is_refused_with_a_conversion_hint() {
        let dir = TempDir::new("p7");
        let (key, chain) = chain();
        let mut extra = openssl::stack::Stack::new().unwrap();
        extra.push(chain[1].clone()).unwrap();
        let p7 = openssl::pkcs7::Pkcs7::sign(&chain[0], &key, &extra, b"", openssl::pkcs7::Pkcs7Flags::empty()).unwrap();
        for (name, bytes) in [("b.p7b", p7.to_der().unwrap()), ("b.p7b.pem", p7.to_pem().unwrap())] {
            let p = dir.file(name, &bytes);
            let err = load_chain(&p).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Format, "{err}");
            assert!(err.to_string().contains("PKCS#7"), "{err}");
        }
    }

    #[test]
    fn encrypted_der_key_is_refused_as_encrypted() {
        let dir = TempDir::new("encder");
        let key = testutil::key();
        let der = key.private_key_to_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"secret").unwrap();
        let p = dir.file("enc.der", &der);
        let err = load_private_key(&p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encrypted);
        assert!(err.to_string().contains(&p) && err.to_string().contains("encrypted"), "{err}");
        // Not mistaken for garbage, nor garbage for it.
        let p = dir.file("junk.der", &der[..der.len() / 2]);
        assert_eq!(load_private_key(&p).unwrap_err().kind(), ErrorKind::Format);
    }

    #[test]
    fn certificate_as_key_file_names_the_argument_order() {
        let dir = TempDir::new("swapkey");
        let (_, chain) = chain();
        for (name, bytes) in [("c.pem", chain[0].to_pem().unwrap()), ("c.der", chain[0].to_der().unwrap())] {
            let p = dir.file(name, &bytes);
            let err = load_private_key(&p).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WrongContent, "{err}");
            let m = err.to_string();
            assert!(m.starts_with(&format!("private key file \"{p}\": holds a certificate")), "{m}");
            assert!(m.contains(ORDER_IN_HINT), "{m}");
        }
    }

    #[test]
    fn key_as_certificate_file_names_the_argument_order() {
        let dir = TempDir::new("swapcert");
        let key = testutil::key();
        let enc = key.private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"x").unwrap();
        for (name, bytes) in [
            ("k.pem", key.private_key_to_pem_pkcs8().unwrap()),
            ("k.der", key.private_key_to_der().unwrap()),
            ("enc.pem", enc),
        ] {
            let p = dir.file(name, &bytes);
            let err = load_chain(&p).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WrongContent, "{name}: {err}");
            let m = err.to_string();
            assert!(m.starts_with(&format!("certificate file \"{p}\": holds a private key")), "{m}");
            assert!(m.contains(ORDER_IN_HINT), "{m}");
            let err = load_ca_certificates(&p).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WrongContent);
            assert!(err.to_string().contains("CA file") && !err.to_string().contains("swapped"), "{err}");
        }
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
