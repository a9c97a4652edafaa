//! Configuration errors: one line naming what failed and why, plus a kind
//! that callers and tests can match without reading the text.

use std::fmt;

/// What went wrong, independent of the wording of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read (missing, unreadable, a directory, a
    /// FIFO or device, too large).
    File,
    /// The file holds no usable key or certificate in PEM or DER form, or
    /// holds more than that (bytes after the last DER certificate).
    Format,
    /// The file holds the other half of the pair: a certificate given as
    /// the private key file, or a private key given as a certificate (or
    /// CA) file. Usually the two arguments were swapped.
    WrongContent,
    /// The private key is encrypted (PEM or DER); there is no passphrase
    /// prompt.
    Encrypted,
    /// The private key is encrypted and the password given does not
    /// decrypt it (facil.io 0.7.x's `pk_password`).
    WrongPassword,
    /// The key does not belong to the certificate.
    KeyMismatch,
    /// OpenSSL refuses the certificate (e.g. a key under its security
    /// level).
    Refused,
    /// An invalid argument: a server name, a protocol name, half a
    /// key/certificate pair.
    Input,
    /// Any other OpenSSL failure.
    OpenSsl,
}

/// Why a key, certificate, name or protocol could not be used. `Display`
/// gives the one-line message that the C API logs; [`ConfigError::kind`]
/// says what kind of problem it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ErrorKind,
    message: String,
}

impl ConfigError {
    /// A file that could not be used: `<what> "<path>": <reason>`.
    pub fn file(kind: ErrorKind, what: &str, path: &str, reason: String) -> Self {
        ConfigError { kind, message: format!("{what} \"{path}\": {reason}") }
    }

    /// An invalid argument ([`ErrorKind::Input`]).
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    /// Any message of a given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConfigError { kind, message: message.into() }
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<openssl::error::ErrorStack> for ConfigError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self::new(ErrorKind::OpenSsl, format!("OpenSSL: {}", first_reason(&e)))
    }
}

/// The most telling reason string of an OpenSSL error stack.
pub fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .iter()
        .find_map(|x| x.reason().map(str::to_string))
        .unwrap_or_else(|| "unknown error".to_string())
}

/// An OS error's text without Rust's " (os error N)" suffix, as strerror(3)
/// words it (what facil.io users see in other log lines).
pub fn os_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
