//! The engine room: TLS over OpenSSL with no knowledge of facil.io.
//!
//! Settings, the certificate table and contexts ([`config`]), key/certificate
//! loading ([`pem`]), self-signed certificates ([`selfsigned`]), file
//! watching and expiry policy ([`watch`]) and a per-connection state machine
//! over any non-blocking fd ([`conn`]), testable with plain sockets.

pub mod acme;
pub mod config;
pub mod conn;
pub mod error;
pub mod keylog;
pub mod pem;
pub mod selfsigned;
mod sys;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tickets;
pub mod watch;

#[cfg(test)]
mod alert_tests;
#[cfg(test)]
mod groups_tests;

pub use config::{Built, CertEntry, CheckStep, Certs, LoadedCert, LoadedTrust, Protocol, TlsConfig, Trust, TrustOrigin};
pub use conn::{Connection, Handshake, Phase, ReadOutcome, Role};
pub use error::{ConfigError, ErrorKind};
pub use pem::KeyPassword;
