//! Configuration errors: one line naming what failed and why.

use std::fmt;

/// Why a key, certificate, name or protocol could not be used. `Display`
/// gives the one-line message that the C API logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    /// A file that could not be used: `<what> "<path>": <reason>`.
    pub fn file(what: &str, path: &str, reason: String) -> Self {
        ConfigError(format!("{what} \"{path}\": {reason}"))
    }

    /// Any other invalid input or OpenSSL failure.
    pub fn msg(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<openssl::error::ErrorStack> for ConfigError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        ConfigError(format!("OpenSSL: {}", first_reason(&e)))
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
