//! TLS settings (certificates by SNI name, ALPN protocols, peer
//! verification) and the OpenSSL contexts built from them.
//!
//! [`TlsConfig`] is the mutable description a `fio_tls_s` holds;
//! [`TlsConfig::build`] produces an immutable [`Built`] snapshot whose
//! server context is a *dispatcher*: it carries the settings (protocol
//! versions, suites, ALPN, peer verification, ticket keys) and the default
//! certificate, and its ClientHello callback serves the certificate the
//! client's SNI names, looked up in the shared [`Certs`] table. The table
//! maps exact names and `*.` wildcards to certificates with two hash maps,
//! so the lookup costs the same with one name or ten thousand, and adding a
//! certificate (or reloading one) changes one slot of the table instead of
//! building OpenSSL contexts. Connections keep an `Arc` of the snapshot
//! they started with, so changing or destroying the settings never pulls a
//! context from under a live connection.
//!
//! Every certificate and CA file is watched ([`super::watch`]):
//! [`TlsConfig::check`] stats them, loads what changed, and swaps a new
//! certificate in only when the new files parse and match ("never worse
//! than before"); it also reports certificates close to or past their
//! notAfter and makes a self-signed certificate again before it expires.
//!
//! Defaults (server and client): TLS 1.2 and 1.3 only; TLS 1.2 suites are
//! ECDHE with AES-GCM or ChaCha20-Poly1305 (forward secret AEAD only), in the
//! server's order; key exchange groups as [`groups`] picks them for the
//! OpenSSL in the process (X25519MLKEM768 first where it has ML-KEM); no compression; no
//! renegotiation; session tickets (keys rotated, see [`super::tickets`])
//! and the server session cache on; a session resumes only under the
//! certificate and peer-verification settings it was made with.

use super::error::{first_reason, ConfigError, ErrorKind};
use super::watch::{expiry_due, unix_time, Expiry, Poll, Reporter, Watch};
use crate::log::log_debug;
use super::pem::KeyPassword;
use super::{pem, selfsigned};
use crate::ffi::boundary::ffi_boundary;
use crate::log::{log_warning, Level};
use foreign_types::ForeignTypeRef;
use once_cell::sync::Lazy;
use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sha::Sha256;
use openssl::ssl::{
    AlpnError, ClientHelloResponse, SslAlert, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslRef, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509ExtendedKeyUsage, X509Ref, X509VerifyResult, X509};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// TLS 1.2 cipher list: forward-secret AEAD suites only, strongest first per
/// key type. (TLS 1.3 suites are all AEAD + (EC)DHE; OpenSSL's default set is
/// kept.)
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Key exchange groups with the post-quantum hybrid (OpenSSL 3.5 and newer),
/// in preference order, as one group tuple (OpenSSL 3.5's list syntax).
///
/// - Server: with `CIPHER_SERVER_PREFERENCE` and a single tuple, OpenSSL
///   takes the first group of this list for which the client sent a key
///   share, so a client that sent X25519MLKEM768 gets it and a client that
///   sent only an X25519 share gets X25519 without a HelloRetryRequest. A
///   HelloRetryRequest happens only when no key share is usable (then for
///   the first group of this list the client supports).
/// - Client: `*` marks the groups we send key shares for: X25519MLKEM768
///   and X25519, as browsers do, so a server without ML-KEM answers at once.
///
/// X25519MLKEM768 is the hybrid of draft-ietf-tls-ecdhe-mlkem (codepoint
/// 0x11EC): the shared secret is ML-KEM-768's concatenated with X25519's,
/// so it is as strong as the stronger of the two.
pub const GROUPS_PQ: &str = "*X25519MLKEM768:*X25519:P-256:X448:P-384:P-521";

/// Key exchange groups without ML-KEM (OpenSSL 3.0 to 3.4), in preference
/// order: the classical tail of [`GROUPS_PQ`]. A client sends an X25519 key
/// share.
pub const GROUPS_CLASSICAL: &str = "X25519:P-256:X448:P-384:P-521";

/// The group list the OpenSSL in this process accepts: [`GROUPS_PQ`] where
/// it knows X25519MLKEM768 and the 3.5 list syntax, otherwise
/// [`GROUPS_CLASSICAL`]. Decided at run time, once per process (the shared
/// library may run against a newer libssl than it was built with).
pub fn groups() -> &'static str {
    static CHOSEN: once_cell::sync::OnceCell<&'static str> = once_cell::sync::OnceCell::new();
    CHOSEN.get_or_init(|| {
        let accepted = SslContextBuilder::new(SslMethod::tls())
            .map(|mut b| b.set_groups_list(GROUPS_PQ).is_ok())
            .unwrap_or(false);
        // A refused list leaves nothing on the thread's error queue: the
        // openssl crate drains it into the returned ErrorStack.
        let list = if accepted { GROUPS_PQ } else { GROUPS_CLASSICAL };
        log_debug!(
            "{} (built against OpenSSL {}); key exchange groups {}",
            openssl::version::version(),
            env!("FIO_TLS_OPENSSL_BUILT"),
            list.replace('*', "")
        );
        list
    })
}

/// Longest ALPN protocol name (RFC 7301: a 1-byte length prefix).
pub const MAX_ALPN_NAME: usize = 255;
/// Largest encoded ALPN list (RFC 7301: a 2-byte length prefix).
pub const MAX_ALPN_LIST: usize = 65535;
/// Longest server name (RFC 6066 host_name; DNS names are shorter still).
pub const MAX_SERVER_NAME: usize = 255;

fn check_server_name(name: Option<&str>) -> Result<(), ConfigError> {
    match name {
        Some(n) if n.len() > MAX_SERVER_NAME => Err(ConfigError::msg(format!(
            "server name is {} bytes long (the limit is {MAX_SERVER_NAME})",
            n.len()
        ))),
        // RFC 6066 host names are ASCII (international names in their
        // IDNA "xn--" form); control bytes would also end up in log lines.
        Some(n) if !n.bytes().all(|b| b.is_ascii_graphic()) => Err(ConfigError::msg(format!(
            "server name {n:?} holds a space, a control character or a non-ASCII byte \
             (a host name or IP address is expected; international names in their \"xn--\" form)"
        ))),
        _ => Ok(()),
    }
}

/// The warnings about a certificate file that OpenSSL accepts but clients
/// will not: an expired or not yet valid leaf, or a chain whose
/// certificates are not in leaf-then-issuer order.
fn chain_warnings(path: &str, chain: &[X509]) -> Vec<String> {
    let mut out = Vec::new();
    let leaf = &chain[0];
    if let Ok(now) = Asn1Time::days_from_now(0) {
        if leaf.not_after() < now {
            out.push(format!(
                "certificate file \"{path}\": the certificate expired on {}; clients will refuse it",
                leaf.not_after()
            ));
        } else if leaf.not_before() > now {
            out.push(format!(
                "certificate file \"{path}\": the certificate is not valid before {}; clients will refuse it until then",
                leaf.not_before()
            ));
        }
    }
    for (i, pair) in chain.windows(2).enumerate() {
        if pair[1].issued(&pair[0]) != X509VerifyResult::OK {
            out.push(format!(
                "certificate file \"{path}\": certificate {} did not issue certificate {} before it; \
                 clients may fail to verify the chain (put the leaf first, then each issuer in turn)",
                i + 2,
                i + 1
            ));
            break;
        }
    }
    out
}

/// The names a certificate is valid for, for messages: its subjectAltName
/// DNS names and IP addresses, or its subject CN when it has neither.
fn certificate_names(cert: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in sans.iter() {
            if let Some(dns) = san.dnsname() {
                names.push(dns.to_string());
            } else if let Some(ip) = san.ipaddress() {
                match <[u8; 4]>::try_from(ip) {
                    Ok(v4) => names.push(std::net::Ipv4Addr::from(v4).to_string()),
                    Err(_) => {
                        if let Ok(v6) = <[u8; 16]>::try_from(ip) {
                            names.push(std::net::Ipv6Addr::from(v6).to_string());
                        }
                    }
                }
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject_name().entries_by_nid(Nid::COMMONNAME) {
            if let Ok(cn) = cn.data().to_string() {
                names.push(cn);
            }
        }
    }
    names
}

/// True when the certificate says it is only for TLS clients: an
/// extendedKeyUsage without serverAuth (or anyExtendedKeyUsage). Such a
/// certificate given to `fio_tls_new` is a client certificate, and the name
/// is then the server's, not the certificate's.
fn client_only(cert: &X509Ref) -> bool {
    cert.extended_key_usage()
        .is_some_and(|eku| !eku.intersects(X509ExtendedKeyUsage::SSL_SERVER | X509ExtendedKeyUsage::ANYEKU))
}

/// The warning for a server certificate loaded for `name` that is not
/// valid for that name by OpenSSL's host name (or IP address) check: a
/// client that checks names (browsers, curl, our own `fio_tls_trust`)
/// refuses it when it connects under `name`. `None` when it is valid, or
/// when the certificate is a client certificate ([`client_only`]).
fn name_warning(path: &str, name: &str, leaf: &X509Ref) -> Option<String> {
    if client_only(leaf) || super::sys::certificate_covers(leaf, name) {
        return None;
    }
    let names = certificate_names(leaf);
    let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    Some(format!(
        "certificate file \"{path}\" is not valid for server name \"{name}\" (the certificate's names: {names}); \
         clients that check the name will refuse it"
    ))
}

/// Makes OpenSSL judge the certificate now (key size, signature algorithm
/// under its security level), so that a refusal names the file. One probe
/// context per process; each check costs an `SSL_new`, not a context.
fn check_usable(path: &str, leaf: &X509) -> Result<(), ConfigError> {
    static PROBE: Lazy<Result<SslContext, ErrorStack>> =
        Lazy::new(|| SslContextBuilder::new(SslMethod::tls_server()).map(SslContextBuilder::build));
    let probe = PROBE.as_ref().map_err(|e| ConfigError::from(e.clone()))?;
    let mut ssl = super::sys::new_ssl(probe)?;
    ssl.set_certificate(leaf).map_err(|e| {
        ConfigError::file(ErrorKind::Refused, "certificate file", path, format!("OpenSSL refuses it: {}", first_reason(&e)))
    })
}

/// A certificate chain with its key, and the SNI names it answers to.
/// Immutable: a reload makes a new one.
#[derive(Clone)]
pub struct CertEntry {
    /// Lower-case host names: the name it was added under, then the
    /// certificate's subjectAltName DNS names (may hold `*.` wildcards).
    pub names: Vec<String>,
    pub key: PKey<Private>,
    /// Leaf first, then intermediates.
    pub chain: Vec<X509>,
    /// Generated in-process (never presented as a client certificate).
    pub self_signed: bool,
    /// The leaf's validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the leaf (DER): what sessions are bound to.
    leaf_digest: [u8; 32],
    /// Keeps the parse cache's entry alive while this entry is in use.
    _parsed: Option<Arc<Parsed>>,
}

/// A key and chain parsed from files, shared by every entry loaded from
/// files with the same contents (see [`parse_cache`]).
struct Parsed {
    key: PKey<Private>,
    chain: Vec<X509>,
}

/// Identity of a pair of files' contents: SHA-256 of the key file, then of
/// the certificate file.
type ContentId = [u8; 64];

/// Pairs parsed recently, by content. Parsing a key and certificate with
/// OpenSSL 3.0 costs far more (hundreds of µs) than reading and hashing
/// the files, so the same pair added under many names (a certificate
/// with many subjectAltNames, a wildcard certificate) or unchanged files
/// re-checked are parsed once. The table holds weak references: a key
/// lives only as long as an entry uses it, never in the cache alone.
fn parse_cache() -> MutexGuard<'static, ParseCache> {
    static CACHE: Lazy<Mutex<ParseCache>> = Lazy::new(|| Mutex::new(ParseCache { map: HashMap::new(), prune_at: 64 }));
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

struct ParseCache {
    map: HashMap<ContentId, Weak<Parsed>>,
    prune_at: usize,
}

impl ParseCache {
    fn get(&self, id: &ContentId) -> Option<Arc<Parsed>> {
        self.map.get(id).and_then(Weak::upgrade)
    }

    fn insert(&mut self, id: ContentId, parsed: &Arc<Parsed>) {
        self.map.insert(id, Arc::downgrade(parsed));
        // Drop dead references now and then: amortised O(1) per insert.
        if self.map.len() >= self.prune_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.prune_at = (2 * self.map.len()).max(64);
        }
    }
}

fn leaf_validity(leaf: &X509Ref) -> (i64, i64) {
    (unix_time(leaf.not_before()).unwrap_or(0), unix_time(leaf.not_after()).unwrap_or(0))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finish()
}

/// The argument order, for the message about swapped files.
const SWAP_ORDER: &str = if cfg!(feature = "api07") {
    "facil.io 0.7 takes the certificate file first, then the private key file"
} else {
    "pass the private key file first, then the certificate file"
};

impl CertEntry {
    fn new(server_name: Option<&str>, key: PKey<Private>, chain: Vec<X509>, self_signed: bool, parsed: Option<Arc<Parsed>>) -> Result<Self, ConfigError> {
        let mut names = Vec::new();
        if let Some(n) = server_name {
            names.push(n.to_ascii_lowercase());
        }
        if let Some(sans) = chain[0].subject_alt_names() {
            for dns in sans.iter().filter_map(|g| g.dnsname()) {
                let dns = dns.to_ascii_lowercase();
                if !names.contains(&dns) {
                    names.push(dns);
                }
            }
        }
        let (not_before, not_after) = leaf_validity(&chain[0]);
        let leaf_digest = sha256(&chain[0].to_der()?);
        Ok(CertEntry { names, key, chain, self_signed, not_before, not_after, leaf_digest, _parsed: parsed })
    }

    /// Loads `key_file` and `cert_file` (or generates a self-signed pair when
    /// both are `None`) and checks that the key matches the certificate.
    /// Warnings about a certificate clients would refuse are logged.
    pub fn load(server_name: Option<&str>, key_file: Option<&str>, cert_file: Option<&str>) -> Result<Self, ConfigError> {
        let (entry, warnings) = Self::load_quietly(server_name, key_file, cert_file)?;
        for w in warnings {
            log_warning!("{w}");
        }
        Ok(entry)
    }

    /// [`CertEntry::load`], returning the warnings instead of logging them.
    pub fn load_quietly(
        server_name: Option<&str>,
        key_file: Option<&str>,
        cert_file: Option<&str>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        Self::load_quietly_with(server_name, key_file, cert_file, None)
    }

    /// [`CertEntry::load_quietly`] with the password of an encrypted key
    /// file (see [`pem::parse_private_key_with`]).
    pub fn load_quietly_with(
        server_name: Option<&str>,
        key_file: Option<&str>,
        cert_file: Option<&str>,
        password: Option<&KeyPassword>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        check_server_name(server_name)?;
        match (key_file, cert_file) {
            (None, None) => {
                let (key, cert) = selfsigned::generate(server_name.unwrap_or("localhost"))?;
                Ok((Self::new(server_name, key, vec![cert], true, None)?, Vec::new()))
            }
            (Some(k), Some(c)) => Self::load_files(server_name, k, c, password),
            (Some(k), None) => Err(ConfigError::msg(format!(
                "private key file \"{k}\" given without a certificate file (pass both, or neither for a self-signed certificate)"
            ))),
            (None, Some(c)) => Err(ConfigError::msg(format!(
                "certificate file \"{c}\" given without a private key file (pass both, or neither for a self-signed certificate)"
            ))),
        }
    }

    fn load_files(server_name: Option<&str>, k: &str, c: &str, password: Option<&KeyPassword>) -> Result<(Self, Vec<String>), ConfigError> {
        let key_bytes = pem::read_key_file(k)?;
        let cert_bytes = match pem::read_cert_file(c) {
            Ok(b) => b,
            // The key file is judged first, as when it was read alone.
            Err(e) => {
                pem::parse_private_key_with(k, key_bytes.bytes(), password)?;
                return Err(e);
            }
        };
        let mut id = [0u8; 64];
        // The password is part of what the key file's bytes parse to: an
        // encrypted key parsed once with the right password must not be
        // found again for a wrong one.
        id[..32].copy_from_slice(&match password {
            None => sha256(key_bytes.bytes()),
            Some(pw) => sha256(&[key_bytes.bytes(), b"\0password\0", pw.bytes()].concat()),
        });
        id[32..].copy_from_slice(&sha256(cert_bytes.bytes()));
        let cached = parse_cache().get(&id);
        let (parsed, mut warnings) = match cached {
            Some(p) => (p, Vec::new()),
            None => {
                let key = match pem::parse_private_key_with(k, key_bytes.bytes(), password) {
                    Ok(key) => key,
                    // Both files hold the other half: name the swap once.
                    Err(e) if e.kind() == ErrorKind::WrongContent && pem::parse_private_key(c, cert_bytes.bytes()).is_ok() => {
                        return Err(ConfigError::new(
                            ErrorKind::WrongContent,
                            format!(
                                "private key file \"{k}\" holds a certificate and certificate file \"{c}\" \
                                 holds a private key: the two are swapped ({SWAP_ORDER})"
                            ),
                        ));
                    }
                    Err(e) => return Err(e),
                };
                let chain = pem::parse_chain(c, cert_bytes.bytes())?;
                check_usable(c, &chain[0])?;
                let warnings = chain_warnings(c, &chain);
                if !chain[0].public_key()?.public_eq(&key) {
                    return Err(ConfigError::new(
                        ErrorKind::KeyMismatch,
                        format!("private key file \"{k}\" does not match certificate file \"{c}\""),
                    ));
                }
                let parsed = Arc::new(Parsed { key, chain });
                parse_cache().insert(id, &parsed);
                (parsed, warnings)
            }
        };
        if let Some(warning) = server_name.and_then(|name| name_warning(c, name, &parsed.chain[0])) {
            warnings.push(warning);
        }
        let entry = Self::new(server_name, parsed.key.clone(), parsed.chain.clone(), false, Some(parsed))?;
        Ok((entry, warnings))
    }

    /// The leaf's serial number in hex, for log lines.
    pub fn serial(&self) -> String {
        self.chain[0]
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_else(|_| "?".into())
    }

    /// The same certificates and key as `other`.
    fn same_as(&self, other: &CertEntry) -> bool {
        self.leaf_digest == other.leaf_digest
            && self.chain.len() == other.chain.len()
            && self.chain.iter().zip(&other.chain).all(|(a, b)| a.to_der().ok() == b.to_der().ok())
            && self.key.public_eq(&other.key)
    }
}

/// Where a certificate came from, and what the watcher knows about it.
pub enum Source {
    /// Loaded from a key and certificate file (watched).
    Files {
        /// The server name it was added under.
        label: Option<String>,
        /// The key file's password, for reloads (facil.io 0.7.x).
        password: Option<KeyPassword>,
        watch: Watch,
        /// When its expiry is looked at next (seconds since the epoch).
        next_expiry_report: i64,
    },
    /// Generated in-process (made again before it expires).
    SelfSigned { label: Option<String>, renew_at: i64 },
}

/// A certificate loaded for [`TlsConfig::new`] / [`TlsConfig::add_loaded`],
/// with its source (the watch on its files starts before they are read).
pub struct LoadedCert {
    pub entry: CertEntry,
    pub source: Source,
}

impl LoadedCert {
    /// Loads as [`CertEntry::load`] does (warnings logged) and starts
    /// watching the files.
    pub fn load(server_name: Option<&str>, key_file: Option<&str>, cert_file: Option<&str>) -> Result<Self, ConfigError> {
        Self::load_with(server_name, key_file, cert_file, None)
    }

    /// [`LoadedCert::load`] with the password of an encrypted key file,
    /// kept for the reloads of the watcher.
    pub fn load_with(
        server_name: Option<&str>,
        key_file: Option<&str>,
        cert_file: Option<&str>,
        password: Option<KeyPassword>,
    ) -> Result<Self, ConfigError> {
        if let (None, None, Some(name), Some(acme)) = (key_file, cert_file, server_name, super::acme::settings()) {
            if super::acme::eligible(&name.to_ascii_lowercase()) {
                return Self::acme(name, acme);
            }
            log_warning!("server name \"{name}\" cannot get a certificate by ACME TLS-ALPN-01 (not a DNS name); it keeps a self-signed one");
        }
        let watch = match (key_file, cert_file) {
            (Some(k), Some(c)) => Some(Watch::new(&[k, c])),
            _ => None,
        };
        let (entry, warnings) = CertEntry::load_quietly_with(server_name, key_file, cert_file, password.as_ref())?;
        for w in warnings {
            log_warning!("{w}");
        }
        let label = server_name.map(str::to_string);
        let source = match watch {
            Some(watch) => Source::Files { label, password, watch, next_expiry_report: 0 },
            None => Source::SelfSigned { label, renew_at: selfsigned::renew_at(entry.not_before, entry.not_after) },
        };
        Ok(LoadedCert { entry, source })
    }
}

impl LoadedCert {
    /// A name with no files while ACME is on: registered for a certificate
    /// from the CA, and served from the cache files `certs/<name>.key` and
    /// `certs/<name>.crt` (watched like any pair, so a certificate the
    /// client writes later reaches every process); until they exist (or
    /// while they do not load), a self-signed certificate serves.
    fn acme(name: &str, acme: &super::acme::Settings) -> Result<Self, ConfigError> {
        check_server_name(Some(name))?;
        let lower = name.to_ascii_lowercase();
        super::acme::register(&lower);
        let (k, c) = super::acme::cache::cert_files(&acme.dir, &lower);
        let (k, c) = (k.to_string_lossy().into_owned(), c.to_string_lossy().into_owned());
        let watch = Watch::new(&[&k, &c]);
        let entry = match CertEntry::load_quietly(Some(name), Some(&k), Some(&c)) {
            Ok((entry, _)) => {
                log_debug!("server name \"{name}\": serving the ACME certificate cached in \"{c}\" (serial {})", entry.serial());
                entry
            }
            Err(_) => CertEntry::load_quietly(Some(name), None, None)?.0,
        };
        Ok(LoadedCert { entry, source: Source::Files { label: Some(name.to_string()), password: None, watch, next_expiry_report: 0 } })
    }
}

/// The certificates of one `fio_tls_s`, shared by the configuration and
/// every dispatcher context built from it.
///
/// Lookups (one per handshake) take the read lock for a hash lookup and an
/// `Arc` clone; a change takes the write lock for a push or a pointer swap
/// only: files are read and keys parsed before, never under it.
pub struct Certs {
    slots: RwLock<Slots>,
    /// Parallel to the slots; only the configuration side touches it.
    sources: Mutex<Vec<Source>>,
}

#[derive(Default)]
struct Slots {
    /// Slot 0 is the default certificate.
    entries: Vec<Arc<CertEntry>>,
    /// Lower-case exact names -> slot (the certificate added first wins).
    exact: HashMap<String, u32>,
    /// `*.example.com` is stored as "example.com" -> slot.
    wildcard: HashMap<String, u32>,
}

impl Slots {
    fn register(&mut self, names: &[String], slot: u32) {
        for n in names {
            match n.strip_prefix("*.") {
                Some(base) if !base.is_empty() => self.wildcard.entry(base.to_string()).or_insert(slot),
                _ => self.exact.entry(n.clone()).or_insert(slot),
            };
        }
    }

    fn lookup(&self, host: &str) -> Option<u32> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        // A wildcard covers exactly one (non-empty) leftmost label.
        match host.split_once('.') {
            Some((label, rest)) if !label.is_empty() => self.wildcard.get(rest).copied(),
            _ => None,
        }
    }

    fn knows(&self, name: &str) -> bool {
        match name.strip_prefix("*.") {
            Some(base) if !base.is_empty() => self.wildcard.contains_key(base),
            _ => self.exact.contains_key(name),
        }
    }
}

impl Certs {
    fn new(first: LoadedCert) -> Arc<Self> {
        let certs = Arc::new(Certs { slots: RwLock::new(Slots::default()), sources: Mutex::new(Vec::new()) });
        certs.push(first);
        certs
    }

    fn read(&self) -> RwLockReadGuard<'_, Slots> {
        // Changes under the lock are single pushes and swaps (no panic
        // half-way); after a panic elsewhere the table is whole.
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Slots> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    fn sources(&self) -> MutexGuard<'_, Vec<Source>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, loaded: LoadedCert) -> usize {
        let mut sources = self.sources();
        let mut slots = self.write();
        let slot = slots.entries.len();
        slots.register(&loaded.entry.names, slot as u32);
        slots.entries.push(Arc::new(loaded.entry));
        drop(slots);
        sources.push(loaded.source);
        slot
    }

    /// Serves `entry` in `slot` from now on; names it brings that no
    /// certificate has yet are added (names are never taken away).
    fn replace(&self, slot: usize, entry: CertEntry) {
        let entry = Arc::new(entry);
        let mut slots = self.write();
        slots.register(&entry.names, slot as u32);
        let old = std::mem::replace(&mut slots.entries[slot], entry);
        drop(slots);
        drop(old);
    }

    /// The certificate for a ClientHello's SNI: the exact name, else a
    /// wildcard covering it, else the default (slot 0).
    pub fn pick(&self, host: Option<&str>) -> Arc<CertEntry> {
        let slots = self.read();
        let i = host.and_then(|h| slots.lookup(h)).unwrap_or(0);
        slots.entries[i as usize].clone()
    }

    /// The slot a name leads to (`None`: the default would serve it).
    pub fn slot_for(&self, host: &str) -> Option<usize> {
        self.read().lookup(host).map(|i| i as usize)
    }

    pub fn get(&self, slot: usize) -> Arc<CertEntry> {
        self.read().entries[slot].clone()
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every certificate, in the order added.
    pub fn all(&self) -> Vec<Arc<CertEntry>> {
        self.read().entries.clone()
    }
}

/// An ALPN protocol name and the caller's handler for it.
#[derive(Clone)]
pub struct Protocol<H> {
    pub name: String,
    pub handler: H,
}

/// The CA certificates peers are verified against: the system trust
/// store, CA certificates from files, or both (the union of every
/// `fio_tls_trust` call of the release API).
#[derive(Clone)]
pub struct Trust {
    /// OpenSSL's default verify paths (the system trust store) are used.
    pub system: bool,
    /// CA certificates loaded from files, in the order added.
    pub cas: Vec<X509>,
}

impl Trust {
    /// Only these CA certificates.
    pub fn cas(cas: Vec<X509>) -> Self {
        Trust { system: false, cas }
    }

    /// Loads `ca_file` (PEM or DER, one or more certificates), or the system store
    /// when `None`.
    pub fn load(ca_file: Option<&str>) -> Result<Self, ConfigError> {
        match ca_file {
            None => Ok(Trust { system: true, cas: Vec::new() }),
            Some(path) => pem::load_ca_certificates(path).map(Trust::cas),
        }
    }

    /// Everything any of `sources` trusts; `None` when there are none
    /// (no peer verification).
    fn union<'a>(sources: impl IntoIterator<Item = &'a Trust>) -> Option<Trust> {
        let mut all: Option<Trust> = None;
        for t in sources {
            let u = all.get_or_insert_with(|| Trust::cas(Vec::new()));
            u.system |= t.system;
            u.cas.extend(t.cas.iter().cloned());
        }
        all
    }

    fn apply(&self, b: &mut SslContextBuilder, server: bool) -> Result<(), ConfigError> {
        if self.system {
            b.set_default_verify_paths()?;
            if let Some((file, dir)) = distribution_store() {
                b.load_verify_locations(file, dir)?;
            }
            // Files' CAs join the system ones in the context's own store.
            for ca in &self.cas {
                b.cert_store_mut().add_cert(ca.clone())?;
            }
        } else {
            let mut store = X509StoreBuilder::new()?;
            for ca in &self.cas {
                store.add_cert(ca.clone())?;
            }
            b.set_verify_cert_store(store.build())?;
        }
        if server && !self.cas.is_empty() {
            // Name the acceptable CAs of the files in the CertificateRequest
            // (the system store's are not listed).
            let mut names = Stack::new()?;
            for ca in &self.cas {
                names.push(ca.subject_name().to_owned()?)?;
            }
            b.set_client_ca_list(names);
        }
        let mode = if server {
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
        } else {
            SslVerifyMode::PEER
        };
        b.set_verify(mode);
        Ok(())
    }

    /// What sessions are bound to, besides the certificate (see
    /// [`session_context`]).
    fn digest(trust: Option<&Trust>) -> Result<[u8; 32], ConfigError> {
        let mut h = Sha256::new();
        match trust {
            None => h.update(b"no peer verification"),
            Some(t) => {
                if t.system {
                    h.update(b"system trust store");
                }
                h.update(b"CA files");
                for ca in &t.cas {
                    let der = ca.to_der()?;
                    h.update(&(der.len() as u64).to_be_bytes());
                    h.update(&der);
                }
            }
        }
        Ok(h.finish())
    }

    fn same_as(&self, other: &Trust) -> bool {
        self.system == other.system
            && self.cas.len() == other.cas.len()
            && self.cas.iter().zip(&other.cas).all(|(x, y)| x.to_der().ok() == y.to_der().ok())
    }
}

/// Where one [`LoadedTrust`] came from: what makes a second
/// `fio_tls_trust` of the same source replace the first instead of
/// adding to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustOrigin {
    /// A CA file, by the path it was given as.
    File(String),
    /// The system trust store (`fio_tls_trust(tls, NULL)`).
    System,
    /// Certificates given in memory (tests); never merged.
    Memory,
}

/// One source of peer verification loaded by `fio_tls_trust`, with the
/// watch on its CA file (none for the system store).
#[derive(Clone)]
pub struct LoadedTrust {
    pub trust: Trust,
    pub origin: TrustOrigin,
    pub file: Option<Arc<Mutex<Watch>>>,
}

impl LoadedTrust {
    /// Loads `ca_file` (or the system store) and starts watching it.
    pub fn load(ca_file: Option<&str>) -> Result<Self, ConfigError> {
        let watch = ca_file.map(|p| Watch::new(&[p]));
        let trust = Trust::load(ca_file)?;
        let origin = match ca_file {
            Some(p) => TrustOrigin::File(p.to_string()),
            None => TrustOrigin::System,
        };
        Ok(LoadedTrust { trust, origin, file: watch.map(|w| Arc::new(Mutex::new(w))) })
    }
}

/// The mutable settings of one `fio_tls_s`.
///
/// Cloning is cheap (the certificate table is shared): a change of
/// protocols or peer verification is made on a clone that replaces the
/// original only when it builds.
#[derive(Clone)]
pub struct TlsConfig<H> {
    /// The name given to `fio_tls_new`: the client's SNI and host name.
    pub server_name: Option<String>,
    certs: Arc<Certs>,
    /// The certificate a client connection presents: the first one loaded
    /// from files.
    client_slot: Option<usize>,
    /// In the order added = the server's order of preference.
    protocols: Vec<Protocol<H>>,
    /// Peer verification against the union of these sources; empty (the
    /// default) is facil.io's anonymous mode.
    trust: Vec<LoadedTrust>,
    /// Contexts of the last build still valid for these settings.
    server_ctx: Option<SslContext>,
    client_ctx: Option<SslContext>,
}

/// What one step of [`TlsConfig::check`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckStep {
    /// The slot to go on from, when the budget ran out first.
    pub next: Option<usize>,
    /// The contexts of the snapshot changed (the default certificate, the
    /// client certificate or the CA file was reloaded): build and publish
    /// a new snapshot.
    pub rebuilt: bool,
    /// Slots whose certificate was replaced.
    pub reloaded: usize,
    /// Slots looked at.
    pub checked: usize,
}

/// CA bundles and hashed directories of the common Linux distributions
/// (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine), most common first.
const DISTRIBUTION_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
const DISTRIBUTION_CA_DIRS: &[&str] = &["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// Where the system trust store is when OpenSSL's own defaults miss it.
///
/// OpenSSL looks in `SSL_CERT_FILE` / `SSL_CERT_DIR`, else in its
/// compiled-in OPENSSLDIR (`cert.pem`, `certs/`). A distribution's libssl
/// points OPENSSLDIR at the distribution's store; the vendored build's
/// OpenSSL (openssl-src) has `/usr/local/ssl`, which usually does not
/// exist. So: when neither variable is set and neither compiled-in location
/// exists, the first existing distribution CA file and directory; `None`
/// when OpenSSL's defaults apply (a variable set to a missing path still
/// means "that store", e.g. an empty one, as with a system libssl).
fn distribution_store() -> Option<(Option<&'static std::path::Path>, Option<&'static std::path::Path>)> {
    use std::ffi::CStr;
    use std::path::Path;
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return None;
    }
    // SAFETY: both return pointers to static NUL-terminated strings.
    let (default_file, default_dir) = unsafe {
        (
            CStr::from_ptr(openssl_sys::X509_get_default_cert_file()),
            CStr::from_ptr(openssl_sys::X509_get_default_cert_dir()),
        )
    };
    let exists = |c: &CStr| c.to_str().map(|p| Path::new(p).exists()).unwrap_or(false);
    if exists(default_file) || exists(default_dir) {
        return None;
    }
    let file = DISTRIBUTION_CA_FILES.iter().map(Path::new).find(|p| p.is_file());
    let dir = DISTRIBUTION_CA_DIRS.iter().map(Path::new).find(|p| p.is_dir());
    if file.is_none() && dir.is_none() {
        return None;
    }
    Some((file, dir))
}

impl<H: Clone + Send + Sync + 'static> TlsConfig<H> {
    /// Settings with a default certificate: loaded from files, or generated
    /// for `server_name` (or "localhost") when both files are `None`.
    pub fn new(server_name: Option<&str>, key_file: Option<&str>, cert_file: Option<&str>) -> Result<Self, ConfigError> {
        Ok(Self::with_default(server_name, LoadedCert::load(server_name, key_file, cert_file)?))
    }

    /// Settings with a default certificate already loaded.
    pub fn with_default(server_name: Option<&str>, first: LoadedCert) -> Self {
        let client_slot = (!first.entry.self_signed).then_some(0);
        TlsConfig {
            server_name: server_name.map(str::to_string),
            certs: Certs::new(first),
            client_slot,
            protocols: Vec::new(),
            trust: Vec::new(),
            server_ctx: None,
            client_ctx: None,
        }
    }

    /// Adds a certificate chosen when the client's SNI names `server_name`
    /// (or one of the certificate's own DNS names).
    pub fn add_cert(&mut self, server_name: Option<&str>, key_file: Option<&str>, cert_file: Option<&str>) -> Result<(), ConfigError> {
        let loaded = LoadedCert::load(server_name, key_file, cert_file)?;
        self.add_loaded(server_name, loaded).map(|_| ())
    }

    /// Adds a certificate already loaded with [`LoadedCert::load`] (so that
    /// the files can be read before a lock is taken). Amortised O(1): one
    /// slot and its names go into the table; no context is built unless it
    /// is the first certificate loaded from files (the client certificate).
    /// Returns whether the snapshot must be built again.
    pub fn add_loaded(&mut self, server_name: Option<&str>, loaded: LoadedCert) -> Result<bool, ConfigError> {
        // SNI picks the first certificate that answers to a name, so adding
        // one again changes nothing: say so.
        if let Some(name) = server_name.map(str::to_ascii_lowercase) {
            if self.certs.read().knows(&name) {
                log_warning!(
                    "server name \"{name}\" already has a certificate; the one added first keeps serving it \
                     (to renew a certificate, replace its files: they are watched)"
                );
            }
        }
        let becomes_client = self.client_slot.is_none() && !loaded.entry.self_signed;
        let client_ctx = if becomes_client {
            Some(client_builder(&self.protocols, self.trust().as_ref(), Some(&loaded.entry))?.build())
        } else {
            None
        };
        let slot = self.certs.push(loaded);
        if becomes_client {
            self.client_slot = Some(slot);
            self.client_ctx = client_ctx;
        }
        Ok(becomes_client)
    }

    /// Adds an ALPN protocol; a name added again keeps its place and takes
    /// the newer handler.
    pub fn add_protocol(&mut self, name: &str, handler: H) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::msg("ALPN protocol name is empty"));
        }
        if name.len() > MAX_ALPN_NAME {
            return Err(ConfigError::msg(format!(
                "ALPN protocol name is {} bytes long (the limit is {MAX_ALPN_NAME})",
                name.len()
            )));
        }
        match self.protocols.iter_mut().find(|p| p.name == name) {
            Some(p) => p.handler = handler,
            None => {
                let encoded: usize = self.protocols.iter().map(|p| 1 + p.name.len()).sum::<usize>() + 1 + name.len();
                if encoded > MAX_ALPN_LIST {
                    return Err(ConfigError::msg(format!(
                        "adding ALPN protocol \"{name}\" would make the protocol list {encoded} bytes long (the limit is {MAX_ALPN_LIST})"
                    )));
                }
                self.protocols.push(Protocol { name: name.to_string(), handler });
                // Both contexts carry the protocol list.
                self.server_ctx = None;
                self.client_ctx = None;
            }
        }
        Ok(())
    }

    /// Turns on peer verification against `ca_file` (or the system store)
    /// alone, watching the file: replaces every earlier source.
    pub fn set_trust(&mut self, ca_file: Option<&str>) -> Result<(), ConfigError> {
        self.trust_loaded(LoadedTrust::load(ca_file)?);
        Ok(())
    }

    /// Turns on peer verification with `trust` alone (not watched).
    pub fn trust_with(&mut self, trust: Trust) {
        self.trust_loaded(LoadedTrust { trust, origin: TrustOrigin::Memory, file: None });
    }

    /// Turns on peer verification with a [`LoadedTrust`] alone: it
    /// replaces every earlier source (the beta4 build's `fio_tls_trust`).
    pub fn trust_loaded(&mut self, trust: LoadedTrust) {
        self.trust.clear();
        self.trust_added(trust);
    }

    /// Adds a source of peer verification: peers are then verified against
    /// the union of all sources (facil.io 0.7.x's `fio_tls_trust`, which
    /// adds to a trust list). A source of the same origin (the same CA
    /// file path, or the system store) is replaced in place instead.
    pub fn trust_added(&mut self, trust: LoadedTrust) {
        let same = |t: &&mut LoadedTrust| t.origin != TrustOrigin::Memory && t.origin == trust.origin;
        match self.trust.iter_mut().find(same) {
            Some(slot) => *slot = trust,
            None => self.trust.push(trust),
        }
        self.server_ctx = None;
        self.client_ctx = None;
    }

    /// The union of the trust sources; `None`: no peer verification.
    fn trust(&self) -> Option<Trust> {
        Trust::union(self.trust.iter().map(|t| &t.trust))
    }

    /// The certificate table (shared with the dispatcher contexts).
    pub fn table(&self) -> &Arc<Certs> {
        &self.certs
    }

    /// The certificates, in the order added (the first is the default).
    pub fn certs(&self) -> Vec<Arc<CertEntry>> {
        self.certs.all()
    }

    /// The ALPN protocols, in the server's order of preference.
    pub fn protocols(&self) -> &[Protocol<H>] {
        &self.protocols
    }

    /// Builds the snapshot: the dispatcher and client contexts (each only
    /// when a change made it stale) plus the protocol list.
    pub fn build(&mut self) -> Result<Built<H>, ConfigError> {
        let server = match &self.server_ctx {
            Some(c) => c.clone(),
            None => dispatcher(&self.certs, &self.certs.get(0), &self.protocols, self.trust().as_ref())?,
        };
        let client = match &self.client_ctx {
            Some(c) => c.clone(),
            None => {
                let entry = self.client_slot.map(|s| self.certs.get(s));
                client_builder(&self.protocols, self.trust().as_ref(), entry.as_deref())?.build()
            }
        };
        self.server_ctx = Some(server.clone());
        self.client_ctx = Some(client.clone());
        Ok(Built {
            server,
            client,
            protocols: self.protocols.clone(),
            server_name: self.server_name.clone(),
            verify_peer: !self.trust.is_empty(),
        })
    }

    /// Looks at the watched files of slots `from..from + budget` (and, when
    /// `from` is 0, at the CA file) and reloads what changed: the new
    /// certificate serves new handshakes only when its files parse and the
    /// key matches; otherwise the old one keeps serving and one WARNING per
    /// change of the files says why. Also reports expiry (a WARNING per
    /// day within [`super::watch::EXPIRY_WARNING_DAYS`] of notAfter, an
    /// ERROR per day after it) and makes self-signed certificates again
    /// before they expire. `now` is seconds since the epoch; lines go
    /// through `say`; `files` false skips the files (watching off: only
    /// expiry and self-signed renewal). Only the changed slot is rebuilt;
    /// the contexts of the snapshot only when the default certificate, the
    /// client certificate or the CA file changed (then `rebuilt` is set and
    /// the caller publishes [`TlsConfig::build`]).
    pub fn check(&mut self, from: usize, budget: usize, now: i64, say: &Reporter, files: bool) -> CheckStep {
        let mut step = CheckStep::default();
        if from == 0 && files {
            step.rebuilt |= self.check_trust(now, say);
        }
        let certs = self.certs.clone();
        let mut sources = certs.sources();
        let len = sources.len();
        let end = from.saturating_add(budget.max(1)).min(len);
        step.checked = end.saturating_sub(from);
        for (slot, source) in sources.iter_mut().enumerate().take(end).skip(from) {
            match source {
                Source::Files { label, password, watch, next_expiry_report } => {
                    let poll = if files { watch.poll() } else { Poll::Unchanged };
                    if let Poll::Changed(stamps) = poll {
                        let files = watch.files();
                        let (k, c) = (files[0].path().to_string(), files[1].path().to_string());
                        let current = certs.get(slot);
                        let outcome = CertEntry::load_quietly_with(label.as_deref(), Some(&k), Some(&c), password.as_ref())
                            .and_then(|(entry, warnings)| {
                                if entry.same_as(&current) {
                                    return Ok(None);
                                }
                                self.prepare_swap(slot, &entry)?;
                                Ok(Some((entry, warnings)))
                            });
                        match outcome {
                            // Touched, or written again with the same
                            // contents: nothing to say.
                            Ok(None) => watch.loaded(stamps),
                            Ok(Some((entry, warnings))) => {
                                watch.loaded(stamps);
                                *next_expiry_report = now;
                                for w in warnings {
                                    say.say(Level::Warning, format_args!("{w}"));
                                }
                                say.say(
                                    Level::Info,
                                    format_args!(
                                        "server name {}: reloaded certificate file \"{c}\" (and private key file \"{k}\"): \
                                         serial {}, notAfter {}; new handshakes use it",
                                        quoted(label.as_deref()),
                                        entry.serial(),
                                        entry.chain[0].not_after()
                                    ),
                                );
                                step.rebuilt |= slot == 0 || Some(slot) == self.client_slot;
                                certs.replace(slot, entry);
                                step.reloaded += 1;
                            }
                            Err(e) => {
                                if watch.failed(stamps, now) {
                                    say.say(
                                        Level::Warning,
                                        format_args!(
                                            "server name {}: not reloaded: {e}; the certificate loaded before keeps \
                                             serving (serial {}, notAfter {}); the files are tried again when they change",
                                            quoted(label.as_deref()),
                                            current.serial(),
                                            current.chain[0].not_after()
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    let entry = certs.get(slot);
                    if let Some(x) = expiry_due(entry.not_after, now, next_expiry_report) {
                        let c = watch.files()[1].path();
                        let name = quoted(label.as_deref());
                        match x {
                            Expiry::Expired => say.say(
                                Level::Error,
                                format_args!(
                                    "server name {name}: the certificate of \"{c}\" expired on {}; clients refuse it \
                                     (renew it: the file is watched)",
                                    entry.chain[0].not_after()
                                ),
                            ),
                            Expiry::Soon => say.say(
                                Level::Warning,
                                format_args!(
                                    "server name {name}: the certificate of \"{c}\" expires on {} (in {} days); renew it \
                                     (the file is watched)",
                                    entry.chain[0].not_after(),
                                    ((entry.not_after - now).max(0) + 86_399) / 86_400
                                ),
                            ),
                        }
                    }
                }
                Source::SelfSigned { label, renew_at } => {
                    if now < *renew_at {
                        continue;
                    }
                    let made = CertEntry::load_quietly(label.as_deref(), None, None).and_then(|(entry, _)| {
                        self.prepare_swap(slot, &entry)?;
                        Ok(entry)
                    });
                    match made {
                        Ok(entry) => {
                            *renew_at = selfsigned::renew_at(entry.not_before, entry.not_after);
                            say.say(
                                Level::Info,
                                format_args!(
                                    "server name {}: self-signed certificate made again before it expires: serial {}, \
                                     notAfter {}",
                                    quoted(label.as_deref()),
                                    entry.serial(),
                                    entry.chain[0].not_after()
                                ),
                            );
                            step.rebuilt |= slot == 0;
                            certs.replace(slot, entry);
                            step.reloaded += 1;
                        }
                        Err(e) => {
                            // Tried again in a minute, not at every check.
                            *renew_at = now + 60;
                            say.say(Level::Error, format_args!("self-signed certificate not made again: {e}"));
                        }
                    }
                }
            }
        }
        if end < len {
            step.next = Some(end);
        }
        step
    }

    /// Builds what must change with the certificate of `slot` before it is
    /// swapped in (the dispatcher for slot 0, the client context for the
    /// client certificate), so that a failure leaves everything as it was.
    fn prepare_swap(&mut self, slot: usize, entry: &CertEntry) -> Result<(), ConfigError> {
        let server = if slot == 0 { Some(dispatcher(&self.certs, entry, &self.protocols, self.trust().as_ref())?) } else { None };
        let client = if Some(slot) == self.client_slot {
            Some(client_builder(&self.protocols, self.trust().as_ref(), Some(entry))?.build())
        } else {
            None
        };
        if server.is_some() {
            self.server_ctx = server;
        }
        if client.is_some() {
            self.client_ctx = client;
        }
        Ok(())
    }

    /// The CA file part of [`TlsConfig::check`]; true when one was reloaded.
    fn check_trust(&mut self, now: i64, say: &Reporter) -> bool {
        let mut rebuilt = false;
        for i in 0..self.trust.len() {
            rebuilt |= self.check_trust_source(i, now, say);
        }
        rebuilt
    }

    /// Reloads the CA file of trust source `i` when it changed; true when
    /// the contexts were rebuilt with it.
    fn check_trust_source(&mut self, i: usize, now: i64, say: &Reporter) -> bool {
        let Some(file) = self.trust[i].file.clone() else { return false };
        let mut watch = file.lock().unwrap_or_else(|p| p.into_inner());
        let Poll::Changed(stamps) = watch.poll() else { return false };
        let path = watch.files()[0].path().to_string();
        let outcome = Trust::load(Some(&path)).and_then(|trust| {
            if trust.same_as(&self.trust[i].trust) {
                return Ok(None);
            }
            let union = Trust::union(
                self.trust.iter().enumerate().map(|(j, t)| if j == i { &trust } else { &t.trust }),
            );
            let current = self.certs.get(0);
            let server = dispatcher(&self.certs, &current, &self.protocols, union.as_ref())?;
            let client_entry = self.client_slot.map(|s| self.certs.get(s));
            let client = client_builder(&self.protocols, union.as_ref(), client_entry.as_deref())?.build();
            Ok(Some((trust, server, client)))
        });
        match outcome {
            Ok(None) => {
                watch.loaded(stamps);
                false
            }
            Ok(Some((trust, server, client))) => {
                watch.loaded(stamps);
                let n = trust.cas.len();
                say.say(
                    Level::Info,
                    format_args!("reloaded CA file \"{path}\": {n} certificate(s); new handshakes verify peers against them"),
                );
                drop(watch);
                self.trust[i].trust = trust;
                self.server_ctx = Some(server);
                self.client_ctx = Some(client);
                true
            }
            Err(e) => {
                if watch.failed(stamps, now) {
                    say.say(
                        Level::Warning,
                        format_args!(
                            "CA file not reloaded: {e}; the CA certificates loaded before stay in use; the file is \
                             tried again when it changes"
                        ),
                    );
                }
                false
            }
        }
    }
}

/// `"name"`, or `(none)` for a certificate added without a name.
fn quoted(name: Option<&str>) -> String {
    match name {
        Some(n) => format!("\"{n}\""),
        None => "(none)".to_string(),
    }
}

/// The server context new connections start from: the settings, the
/// default certificate `default`, and a ClientHello callback that serves
/// the certificate of `certs` the client's SNI names.
///
/// The certificate is chosen from the ClientHello's SNI before OpenSSL
/// looks at a session the client offers: the callback also sets the
/// session id context of the chosen certificate ([`session_context`]), so
/// a session made under one certificate is not resumed under another.
/// Everything else (ALPN, peer verification, ticket keys) stays the
/// dispatcher's; only the key, the chain and the session id context are
/// set on the connection, and only when it is not the default's.
fn dispatcher<H>(certs: &Arc<Certs>, default: &CertEntry, protocols: &[Protocol<H>], trust: Option<&Trust>) -> Result<SslContext, ConfigError> {
    let trust_digest = Trust::digest(trust)?;
    let mut b = SslContextBuilder::new(SslMethod::tls_server())?;
    common_settings(&mut b)?;
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    b.set_session_id_context(&session_context(&default.leaf_digest, &trust_digest))?;
    super::tickets::install(&mut b);
    b.set_private_key(&default.key)?;
    b.set_certificate(&default.chain[0])?;
    // The chain of this certificate only (not the context's "extra" chain,
    // which OpenSSL would send with any other certificate lacking one).
    for intermediate in &default.chain[1..] {
        super::sys::ctx_add_chain_cert(&mut b, intermediate)?;
    }
    b.check_private_key()?;
    if let Some(trust) = trust {
        trust.apply(&mut b, true)?;
    }
    let alpn: Arc<Vec<Vec<u8>>> = Arc::new(protocols.iter().map(|p| p.name.as_bytes().to_vec()).collect());
    set_alpn_select(&mut b, &alpn);
    let certs = certs.clone();
    b.set_client_hello_callback(move |ssl: &mut SslRef, alert: &mut SslAlert| {
        // (Every closure OpenSSL calls runs inside the panic boundary:
        // a panic must not unwind through OpenSSL's C frames.)
        ffi_boundary!("ClientHello callback", on_panic = Err(ErrorStack::get()), {
            let host = super::sys::client_hello_server_name(ssl);
            // TLS-ALPN-01 (RFC 8737): a validation connection gets the
            // challenge certificate of a pending name, or a handshake
            // failure; never the application's certificate or protocol.
            if super::sys::client_hello_alpn(ssl).is_some_and(super::acme::responder::offers_acme) {
                let Some(ch) = super::acme::responder::decide(host.as_deref()) else {
                    log_debug!(
                        "ClientHello offering ALPN acme-tls/1 for {}: no pending ACME challenge; handshake failure",
                        quoted(host.as_deref())
                    );
                    *alert = SslAlert::HANDSHAKE_FAILURE;
                    return Err(ErrorStack::get());
                };
                let sid = session_context(&sha256(&ch.cert.to_der()?), &trust_digest);
                super::sys::serve_certificate(ssl, &ch.key, std::slice::from_ref(&ch.cert), &sid)?;
                return Ok(ClientHelloResponse::SUCCESS);
            }
            let entry = certs.pick(host.as_deref());
            let serving = ssl.certificate().map(|c| c.as_ptr());
            if serving != Some(entry.chain[0].as_ptr()) {
                let sid = session_context(&entry.leaf_digest, &trust_digest);
                super::sys::serve_certificate(ssl, &entry.key, &entry.chain, &sid)?;
            }
            Ok(ClientHelloResponse::SUCCESS)
        })
    });
    // The ClientHello callback did the switching. OpenSSL acknowledges
    // the client's SNI only when a servername callback accepts it.
    b.set_servername_callback(|_: &mut SslRef, _: &mut SslAlert| Ok(()));
    Ok(b.build())
}

/// The session id context for a certificate: what a session made under it
/// is bound to. OpenSSL resumes a session (ID or ticket; the ticket keys
/// are shared by the whole process) only where this matches, so it covers
/// everything a resumed session skips: the certificate the client saw (the
/// leaf) and the peer verification that admitted the client (the trust
/// settings, [`Trust::digest`]). A session of an object without
/// `fio_tls_trust` therefore never resumes on one that requires client
/// certificates, one made under a.test's certificate never resumes under
/// b.test's, and one made before a certificate was renewed does not resume
/// after. Deterministic (SHA-256 of those inputs), so it is the same in
/// every worker and on every host with the same files.
fn session_context(leaf_digest: &[u8; 32], trust_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fio_tls session context v2\0");
    h.update(leaf_digest);
    h.update(trust_digest);
    h.finish()
}

fn client_builder<H>(protocols: &[Protocol<H>], trust: Option<&Trust>, cert: Option<&CertEntry>) -> Result<SslContextBuilder, ConfigError> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    common_settings(&mut b)?;
    // Anonymous by default, as the seed API documents; peer verification is
    // an explicit opt-in (`fio_tls_trust`).
    match trust {
        Some(trust) => trust.apply(&mut b, false)?,
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if !protocols.is_empty() {
        let mut wire = Vec::new();
        for p in protocols {
            wire.push(p.name.len() as u8);
            wire.extend_from_slice(p.name.as_bytes());
        }
        b.set_alpn_protos(&wire)?;
    }
    // A certificate loaded from files doubles as the client certificate.
    if let Some(entry) = cert {
        b.set_private_key(&entry.key)?;
        b.set_certificate(&entry.chain[0])?;
        for intermediate in &entry.chain[1..] {
            b.add_extra_chain_cert(intermediate.clone())?;
        }
    }
    Ok(b)
}

/// An immutable snapshot: the contexts plus the protocol list they were
/// built with.
pub struct Built<H> {
    /// Server context (default certificate, SNI switching, ALPN selection).
    pub server: SslContext,
    /// Client context (ALPN offer in the order added).
    pub client: SslContext,
    pub protocols: Vec<Protocol<H>>,
    pub server_name: Option<String>,
    /// Peer verification is on (client: chain and host name).
    pub verify_peer: bool,
}

impl<H> Built<H> {
    /// The protocol for an ALPN result: the selected name, or the first
    /// protocol added when none was negotiated.
    pub fn protocol_for(&self, selected: Option<&[u8]>) -> Option<&Protocol<H>> {
        match selected {
            Some(name) => self.protocols.iter().find(|p| p.name.as_bytes() == name),
            None => self.protocols.first(),
        }
    }
}

fn common_settings(b: &mut SslContextBuilder) -> Result<(), ConfigError> {
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    b.set_groups_list(groups())?;
    b.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
    // Return the 2 x ~17 KiB record buffers to the allocator whenever a
    // connection has nothing in flight (idle keep-alive connections).
    b.set_mode(SslMode::RELEASE_BUFFERS);
    // Read as many records as the socket has in one read(2) instead of a
    // header read plus a body read per record. Records read ahead are seen
    // by SSL_has_pending, which the host layer checks after every read.
    b.set_read_ahead(true);
    super::keylog::install(b);
    Ok(())
}

/// Server-side ALPN: the first protocol in our order that the client offers
/// (RFC 7301 server preference). A client offering only unknown protocols
/// gets the fatal `no_application_protocol` alert. With no protocols
/// registered, ALPN is not negotiated at all.
///
/// `acme-tls/1` is selected whenever the client offers it: the ClientHello
/// callback let such a handshake go on only with a challenge certificate
/// (RFC 8737 section 4: the validation offers that protocol alone).
fn set_alpn_select(b: &mut SslContextBuilder, ours: &Arc<Vec<Vec<u8>>>) {
    let ours = ours.clone();
    b.set_alpn_select_callback(move |_ssl, client| {
        ffi_boundary!("ALPN callback", on_panic = Err(AlpnError::ALERT_FATAL), {
            if let Some(acme) = select_alpn(&[super::acme::ALPN.to_vec()], client) {
                return Ok(acme);
            }
            if ours.is_empty() {
                return Err(AlpnError::NOACK);
            }
            select_alpn(&ours, client).ok_or(AlpnError::ALERT_FATAL)
        })
    });
}

/// Picks our most preferred name from a client's ALPN wire list, returning
/// the slice inside the client's list.
pub fn select_alpn<'a>(ours: &[Vec<u8>], client: &'a [u8]) -> Option<&'a [u8]> {
    let mut offered = Vec::new();
    let mut rest = client;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return None; // malformed list
        }
        offered.push(&tail[..len]);
        rest = &tail[len..];
    }
    ours.iter().find_map(|want| offered.iter().copied().find(|o| *o == want.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_uses_server_preference() {
        let ours = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = b"\x08http/1.1\x02h2";
        assert_eq!(select_alpn(&ours, client), Some(&b"h2"[..]));
        assert_eq!(select_alpn(&ours, b"\x06spdy/3"), None);
        assert_eq!(select_alpn(&ours, b"\x09http/1.1"), None, "malformed list");
    }

    #[test]
    fn duplicate_protocol_keeps_one_entry_with_newer_handler() {
        let mut cfg: TlsConfig<u32> = TlsConfig::new(Some("localhost"), None, None).unwrap();
        cfg.add_protocol("http/1.1", 1).unwrap();
        cfg.add_protocol("echo", 2).unwrap();
        cfg.add_protocol("http/1.1", 3).unwrap();
        assert_eq!(cfg.protocols.len(), 2);
        assert_eq!(cfg.protocols[0].name, "http/1.1");
        assert_eq!(cfg.protocols[0].handler, 3);
        let long = "x".repeat(256);
        assert!(cfg.add_protocol(&long, 4).unwrap_err().to_string().contains("255"));
        assert!(cfg.add_protocol("", 4).is_err());
    }

    #[test]
    fn protocol_for_falls_back_to_first() {
        let mut cfg: TlsConfig<u32> = TlsConfig::new(None, None, None).unwrap();
        cfg.add_protocol("a", 1).unwrap();
        cfg.add_protocol("b", 2).unwrap();
        let built = cfg.build().unwrap();
        assert_eq!(built.protocol_for(None).unwrap().handler, 1);
        assert_eq!(built.protocol_for(Some(b"b")).unwrap().handler, 2);
        assert!(built.protocol_for(Some(b"c")).is_none());
    }

    #[test]
    fn oversized_names_and_lists_are_refused() {
        let long = "a".repeat(256);
        let e = TlsConfig::<u32>::new(Some(&long), None, None).err().unwrap().to_string();
        assert!(e.contains("server name is 256 bytes"), "{e}");
        let mut cfg: TlsConfig<u32> = TlsConfig::new(None, None, None).unwrap();
        let name = "p".repeat(254);
        let mut refused = None;
        for i in 0..300u32 {
            if let Err(e) = cfg.add_protocol(&format!("{i:03}{}", &name[3..]), i) {
                refused = Some(e.to_string());
                break;
            }
        }
        let e = refused.expect("a list over 65535 bytes must be refused");
        assert!(e.contains("65535"), "{e}");
        assert!(cfg.build().is_ok(), "what was accepted still builds");
    }

    /// `fio_tls_trust(tls, NULL)` finds the distribution's CA bundle with
    /// any OpenSSL, including the vendored one whose OPENSSLDIR is not the
    /// distribution's. Runs [`system_store_child`] in a child process
    /// without SSL_CERT_FILE / SSL_CERT_DIR (often set in CI and shells).
    #[test]
    fn the_system_trust_store_is_found() {
        let bundle = "/etc/ssl/certs/ca-certificates.crt";
        if !std::path::Path::new(bundle).is_file() {
            eprintln!("{bundle} missing (ca-certificates not installed): nothing to check");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tls::config::tests::system_store_child", "--ignored", "--nocapture"])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    #[test]
    #[ignore = "run by the_system_trust_store_is_found without SSL_CERT_FILE/SSL_CERT_DIR"]
    fn system_store_child() {
        assert!(std::env::var_os("SSL_CERT_FILE").is_none() && std::env::var_os("SSL_CERT_DIR").is_none());
        let mut cfg: TlsConfig<u8> = TlsConfig::new(None, None, None).unwrap();
        cfg.set_trust(None).unwrap();
        let built = cfg.build().unwrap();
        let loaded = built.client.cert_store().all_certificates().len();
        assert!(loaded > 10, "{loaded} CA certificates loaded from the system store");
    }

    use crate::tls::testutil::{self, TempDir, Usage};

    /// Key and certificate files for a server certificate with `sans`.
    fn pair(dir: &TempDir, tag: &str, cn: &str, sans: &[&str], usage: Usage) -> (String, String) {
        let key = testutil::key();
        let cert = testutil::cert(&key, cn, sans, usage, None);
        (
            dir.file(&format!("{tag}.key"), &key.private_key_to_pem_pkcs8().unwrap()),
            dir.file(&format!("{tag}.crt"), &cert.to_pem().unwrap()),
        )
    }

    fn warning_for(name: &str, cert_file: &str) -> Option<String> {
        let chain = pem::load_chain(cert_file).unwrap();
        name_warning(cert_file, name, &chain[0])
    }

    #[test]
    fn a_name_the_certificate_does_not_cover_is_named_with_its_names() {
        let dir = TempDir::new("names");
        let (_, crt) = pair(&dir, "alpha", "alpha.test", &["alpha.test", "*.beta.test", "127.0.0.1"], Usage::Server);
        for covered in ["alpha.test", "ALPHA.test", "www.beta.test", "127.0.0.1"] {
            assert_eq!(warning_for(covered, &crt), None, "{covered}");
        }
        for (wrong, why) in [("wrong.test", "other name"), ("a.b.beta.test", "wildcard covers one label"), ("127.0.0.2", "other IP")] {
            let w = warning_for(wrong, &crt).unwrap_or_else(|| panic!("{wrong}: {why}: no warning"));
            assert!(w.contains(&format!("server name \"{wrong}\"")), "{w}");
            assert!(w.contains(&format!("certificate file \"{crt}\"")), "{w}");
            assert!(w.contains("(the certificate's names: alpha.test, *.beta.test, 127.0.0.1)"), "{w}");
        }
        // No subjectAltName: OpenSSL falls back to the CN, and so do we.
        let (_, cn_only) = pair(&dir, "cn", "gamma.test", &[], Usage::Server);
        assert_eq!(warning_for("gamma.test", &cn_only), None);
        let w = warning_for("delta.test", &cn_only).unwrap();
        assert!(w.contains("names: gamma.test)"), "{w}");
        // A client certificate: the name is the server to connect to.
        let (_, client) = pair(&dir, "client", "client1", &[], Usage::Client);
        assert_eq!(warning_for("server.test", &client), None);
    }

    #[test]
    fn the_name_check_runs_for_new_and_cert_add_but_never_fails_them() {
        let dir = TempDir::new("namecfg");
        let (key, crt) = pair(&dir, "a", "a.test", &["a.test"], Usage::Server);
        // A WARNING, not an error: the pair loads under any name.
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("wrong.test"), Some(&key), Some(&crt)).unwrap();
        cfg.add_cert(Some("gamma.test"), Some(&key), Some(&crt)).unwrap();
        assert!(cfg.build().is_ok());
    }

    #[test]
    fn swapped_files_are_named_as_swapped() {
        let dir = TempDir::new("swap");
        let (key, crt) = pair(&dir, "s", "s.test", &["s.test"], Usage::Server);
        let err = TlsConfig::<u8>::new(Some("s.test"), Some(&crt), Some(&key)).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongContent);
        let m = err.to_string();
        assert!(m.contains(&format!("private key file \"{crt}\" holds a certificate")), "{m}");
        assert!(m.contains(&format!("certificate file \"{key}\" holds a private key")), "{m}");
        assert!(m.contains(&format!("swapped ({SWAP_ORDER})")), "{m}");
        // Only the key file wrong: that file is named, with the order reminder.
        let err = TlsConfig::<u8>::new(Some("s.test"), Some(&crt), Some(&crt)).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongContent);
        assert!(err.to_string().starts_with(&format!("private key file \"{crt}\": holds a certificate")), "{err}");
        // Only the certificate file wrong.
        let err = TlsConfig::<u8>::new(Some("s.test"), Some(&key), Some(&key)).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongContent);
        assert!(err.to_string().starts_with(&format!("certificate file \"{key}\": holds a private key")), "{err}");
        // A right order with another key is a mismatch, not a swap.
        let (other_key, _) = pair(&dir, "o", "o.test", &["o.test"], Usage::Server);
        let err = TlsConfig::<u8>::new(Some("s.test"), Some(&other_key), Some(&crt)).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::KeyMismatch, "{err}");
    }

    #[test]
    fn a_der_chain_is_served_whole() {
        let dir = TempDir::new("derserve");
        let ca_key = testutil::key();
        let ca = testutil::cert(&ca_key, "CA", &[], Usage::Ca, None);
        let leaf_key = testutil::key();
        let leaf = testutil::cert(&leaf_key, "d.test", &["d.test"], Usage::Server, Some((&ca, &ca_key)));
        let der: Vec<u8> = [leaf.to_der().unwrap(), ca.to_der().unwrap()].concat();
        let crt = dir.file("chain.der", &der);
        let key = dir.file("key.der", &leaf_key.private_key_to_der().unwrap());
        let cfg: TlsConfig<u8> = TlsConfig::new(Some("d.test"), Some(&key), Some(&crt)).unwrap();
        let chain = &cfg.certs()[0].chain;
        assert_eq!(chain.len(), 2, "the issuer is kept (server_builder sends chain[1..])");
        assert_eq!(chain[1].to_der().unwrap(), ca.to_der().unwrap());
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let e = TlsConfig::<u32>::new(Some("x"), Some("/k.pem"), None).err().unwrap().to_string();
        assert!(e.contains("without a certificate file"), "{e}");
    }

    // -- the certificate table and the dispatcher ---------------------------

    use crate::log::Level;
    use crate::tls::watch::Reporter;
    use openssl::ssl::Ssl;
    use std::os::unix::net::UnixStream;

    type Lines = crate::tls::watch::CapturedLines;
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);

    fn capture() -> (Reporter, Lines) {
        let lines: Lines = Arc::default();
        (Reporter { loud: true, capture: Some(lines.clone()) }, lines)
    }

    fn take(lines: &Lines) -> Vec<(Level, String)> {
        std::mem::take(&mut *lines.lock().unwrap())
    }

    fn rsa_key() -> PKey<Private> {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
    }

    /// Writes `key` and `cert` (+ `extra` chain) over `tag`.key / `tag`.crt.
    fn write_pair(dir: &TempDir, tag: &str, key: &PKey<Private>, chain: &[&X509]) -> (String, String) {
        let pem: Vec<u8> = chain.iter().flat_map(|c| c.to_pem().unwrap()).collect();
        (
            dir.file(&format!("{tag}.key"), &key.private_key_to_pem_pkcs8().unwrap()),
            dir.file(&format!("{tag}.crt"), &pem),
        )
    }

    /// A handshake against `built` with SNI `sni`: the chain the client saw.
    fn served(built: &Built<u8>, sni: Option<&str>) -> Vec<X509> {
        let (server, client) = handshake_alpn(built, sni, None);
        server.unwrap();
        client.unwrap_or_else(|| panic!("client handshake failed")).0
    }

    /// What the client of [`handshake_alpn`] got: the chain and the
    /// protocol selected.
    type ClientView = Option<(Vec<X509>, Option<Vec<u8>>)>;

    /// A handshake for `sni` offering `alpn` (a wire list): the server's
    /// result and what the client got.
    fn handshake_alpn(built: &Built<u8>, sni: Option<&str>, alpn: Option<&[u8]>) -> (Result<(), String>, ClientView) {
        let (s, c) = UnixStream::pair().unwrap();
        let server_ctx = built.server.clone();
        let server = std::thread::spawn(move || {
            let ssl = Ssl::new(&server_ctx).unwrap();
            ssl.accept(s).map(|_| ()).map_err(|e| e.to_string())
        });
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        if let Some(alpn) = alpn {
            b.set_alpn_protos(alpn).unwrap();
        }
        let mut ssl = Ssl::new(&b.build()).unwrap();
        if let Some(n) = sni {
            ssl.set_hostname(n).unwrap();
        }
        let client = ssl.connect(c).ok().map(|stream| {
            let chain = stream.ssl().peer_cert_chain().unwrap().iter().map(|c| c.to_owned()).collect();
            (chain, stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec))
        });
        (server.join().unwrap(), client)
    }

    #[test]
    fn acme_tls_1_gets_the_challenge_of_a_pending_name_and_a_handshake_failure_otherwise() {
        use crate::tls::acme::{cache, responder};
        let dir = TempDir::new("acme_alpn");
        cache::prepare(&dir.0).unwrap();
        let ch = responder::make("pending.test", &[9u8; 32]).unwrap();
        cache::write_atomic(&cache::challenge_file(&dir.0, "pending.test"), &ch.to_pem().unwrap()).unwrap();
        *responder::TEST_DIR.lock().unwrap() = Some(dir.0.clone());
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("pending.test"), None, None).unwrap();
        cfg.add_cert(Some("other.test"), None, None).unwrap();
        cfg.add_protocol("http/1.1", 1).unwrap();
        let built = cfg.build().unwrap();
        let acme_only = b"\x0aacme-tls/1";
        // pending: the challenge certificate, acme-tls/1 selected
        let (server, client) = handshake_alpn(&built, Some("pending.test"), Some(acme_only));
        server.unwrap();
        let (chain, alpn) = client.expect("handshake done");
        assert_eq!(chain[0].to_der().unwrap(), ch.cert.to_der().unwrap());
        assert_eq!(alpn.as_deref(), Some(&b"acme-tls/1"[..]));
        // no challenge for this name: handshake failure, not the application
        let (server, client) = handshake_alpn(&built, Some("other.test"), Some(acme_only));
        assert!(client.is_none());
        assert!(server.unwrap_err().to_lowercase().contains("callback"), "ClientHello callback refused it");
        // an ordinary ClientHello for the pending name is unaffected
        let (server, client) = handshake_alpn(&built, Some("pending.test"), Some(b"\x08http/1.1"));
        server.unwrap();
        let (chain, alpn) = client.unwrap();
        assert_ne!(chain[0].to_der().unwrap(), ch.cert.to_der().unwrap());
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        *responder::TEST_DIR.lock().unwrap() = None;
    }

    fn serial_of(cert: &X509Ref) -> String {
        cert.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string()
    }

    #[test]
    fn exact_names_beat_wildcards_and_the_first_added_wins() {
        let dir = TempDir::new("lookup");
        let (k0, c0) = pair(&dir, "d", "default.test", &["default.test"], Usage::Server);
        let (k1, c1) = pair(&dir, "w", "wild", &["*.example.test"], Usage::Server);
        let (k2, c2) = pair(&dir, "e", "www.example.test", &["www.example.test"], Usage::Server);
        let (k3, c3) = pair(&dir, "again", "again", &["*.example.test", "www.example.test", "new.test"], Usage::Server);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("default.test"), Some(&k0), Some(&c0)).unwrap();
        cfg.add_cert(None, Some(&k1), Some(&c1)).unwrap();
        cfg.add_cert(Some("www.example.test"), Some(&k2), Some(&c2)).unwrap();
        cfg.add_cert(Some("Other.Test"), Some(&k3), Some(&c3)).unwrap();
        let t = cfg.table().clone();
        assert_eq!(t.slot_for("default.test"), Some(0));
        assert_eq!(t.slot_for("a.example.test"), Some(1), "wildcard");
        assert_eq!(t.slot_for("www.example.test"), Some(2), "an exact name beats a wildcard added before it");
        assert_eq!(t.slot_for("WWW.example.test".to_ascii_lowercase().as_str()), Some(2));
        assert_eq!(t.slot_for("other.test"), Some(3), "names are lower-cased when added");
        assert_eq!(t.slot_for("new.test"), Some(3), "a subjectAltName no one had");
        assert_eq!(t.slot_for("a.b.example.test"), None, "a wildcard covers one label");
        assert_eq!(t.slot_for("example.test"), None, "and not the bare domain");
        assert_eq!(t.slot_for(".example.test"), None, "nor an empty label");
        assert_eq!(t.slot_for("unknown.test"), None);
        // The handshakes agree with the table.
        let built = cfg.build().unwrap();
        let cn = |chain: Vec<X509>| certificate_names(&chain[0]).join(",");
        assert_eq!(cn(served(&built, Some("a.example.test"))), "*.example.test");
        assert_eq!(cn(served(&built, Some("www.example.test"))), "www.example.test");
        assert_eq!(cn(served(&built, Some("unknown.test"))), "default.test");
        assert_eq!(cn(served(&built, None)), "default.test");
    }

    #[test]
    fn a_switched_certificate_replaces_the_default_of_another_key_type_and_its_chain() {
        let dir = TempDir::new("keytypes");
        let ca_key = testutil::key();
        let ca = testutil::cert(&ca_key, "CA", &[], Usage::Ca, None);
        // The default: ECDSA with an intermediate in its file.
        let ec = testutil::key();
        let ec_leaf = testutil::cert(&ec, "ec.test", &["ec.test"], Usage::Server, Some((&ca, &ca_key)));
        let (k0, c0) = write_pair(&dir, "ec", &ec, &[&ec_leaf, &ca]);
        // Another name: RSA, leaf only.
        let rsa = rsa_key();
        let rsa_leaf = testutil::cert(&rsa, "rsa.test", &["rsa.test"], Usage::Server, None);
        let (k1, c1) = write_pair(&dir, "rsa", &rsa, &[&rsa_leaf]);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("ec.test"), Some(&k0), Some(&c0)).unwrap();
        cfg.add_cert(Some("rsa.test"), Some(&k1), Some(&c1)).unwrap();
        let built = cfg.build().unwrap();
        let chain = served(&built, Some("rsa.test"));
        // A client preferring ECDSA still gets the RSA certificate (the
        // default's ECDSA one was dropped), without the default's chain.
        assert_eq!(chain.len(), 1, "only the RSA leaf: the default's intermediate is not sent with it");
        assert_eq!(chain[0].to_der().unwrap(), rsa_leaf.to_der().unwrap());
        let chain = served(&built, Some("ec.test"));
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].to_der().unwrap(), ec_leaf.to_der().unwrap());
    }

    #[test]
    fn adding_certificates_is_amortised_constant_time() {
        // The same pair under many names (parsed once, see parse_cache):
        // the last thousand adds cost about what the first thousand did.
        let dir = TempDir::new("scale");
        let (k, c) = pair(&dir, "s", "*.scale.test", &["*.scale.test"], Usage::Server);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("n0.scale.test"), Some(&k), Some(&c)).unwrap();
        cfg.add_protocol("http/1.1", 1).unwrap();
        let _ = cfg.build().unwrap();
        let mut add = |from: usize, to: usize| {
            let t = std::time::Instant::now();
            for i in from..to {
                let name = format!("n{i}.scale.test");
                let loaded = LoadedCert::load(Some(&name), Some(&k), Some(&c)).unwrap();
                cfg.add_loaded(Some(&name), loaded).unwrap();
            }
            t.elapsed()
        };
        let first = add(1, 1001);
        add(1001, 9001);
        let last = add(9001, 10_001);
        eprintln!("adds: first 1000 {first:?}, last 1000 {last:?}");
        // (The O(n) code this replaces took 4x longer for the 3rd 500 than
        // for the 1st; noise on a shared machine stays well under 3x.)
        assert!(last < first * 3, "first 1000 adds {first:?}, last 1000 {last:?}");
        assert_eq!(cfg.table().len(), 10_001);
        assert_eq!(cfg.table().slot_for("n9999.scale.test"), Some(9999));
        // And the lookup does not scan: a name that is not there costs
        // what it costs in a table of one.
        let small: TlsConfig<u8> = TlsConfig::new(Some("n0.scale.test"), Some(&k), Some(&c)).unwrap();
        let time = |t: &Certs| {
            let start = std::time::Instant::now();
            for i in 0..20_000 {
                let _ = t.pick(Some(if i % 2 == 0 { "unknown.other.test" } else { "x.unknown.test" }));
            }
            start.elapsed()
        };
        let _ = (time(cfg.table()), time(small.table()));
        let (small_t, big_t) = (time(small.table()), time(cfg.table()));
        eprintln!("20000 unknown-name lookups: 10001 names {big_t:?}, 1 name {small_t:?}");
        assert!(big_t < small_t * 4 + std::time::Duration::from_millis(5), "{big_t:?} vs {small_t:?}");
    }

    // -- reloading --------------------------------------------------------

    /// A config over files `tag`.key/.crt in `dir` serving a leaf for
    /// `name` made with `key`.
    fn leaf_for(key: &PKey<Private>, name: &str) -> X509 {
        testutil::cert(key, name, &[name], Usage::Server, None)
    }

    fn check_now(cfg: &mut TlsConfig<u8>, say: &Reporter) -> CheckStep {
        cfg.check(0, usize::MAX, crate::tls::watch::unix_now(), say, true)
    }

    /// Settings with d.test (the default), a.test and b.test, each from
    /// its own files in `dir` (tags "d", "a", "b"); returns them and
    /// a.test's certificate file.
    fn three_names(dir: &TempDir) -> (TlsConfig<u8>, String) {
        let (k0, c0) = pair(dir, "d", "d.test", &["d.test"], Usage::Server);
        let key = testutil::key();
        let (k1, c1) = write_pair(dir, "a", &key, &[&leaf_for(&key, "a.test")]);
        let (k2, c2) = pair(dir, "b", "b.test", &["b.test"], Usage::Server);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("d.test"), Some(&k0), Some(&c0)).unwrap();
        cfg.add_cert(Some("a.test"), Some(&k1), Some(&c1)).unwrap();
        cfg.add_cert(Some("b.test"), Some(&k2), Some(&c2)).unwrap();
        (cfg, c1)
    }

    fn pause() {
        // Distinct mtimes on file systems with coarse timestamps.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    #[test]
    fn a_changed_pair_is_served_by_new_handshakes_and_only_its_slot_changes() {
        let dir = TempDir::new("reload");
        let (mut cfg, c1) = three_names(&dir);
        let built = cfg.build().unwrap();
        let (say, lines) = capture();
        assert_eq!(check_now(&mut cfg, &say), CheckStep { checked: 3, ..Default::default() });
        assert!(take(&lines).is_empty(), "nothing changed, nothing said");

        let before: Vec<_> = cfg.certs();
        pause();
        let new_key = testutil::key();
        let new_leaf = leaf_for(&new_key, "a.test");
        write_pair(&dir, "a", &new_key, &[&new_leaf]);
        let step = check_now(&mut cfg, &say);
        assert_eq!((step.reloaded, step.rebuilt), (1, false), "one slot, no context built");
        let after = cfg.certs();
        assert!(Arc::ptr_eq(&before[0], &after[0]) && Arc::ptr_eq(&before[2], &after[2]), "the others untouched");
        assert!(!Arc::ptr_eq(&before[1], &after[1]));
        // The snapshot built before serves the new certificate too.
        assert_eq!(served(&built, Some("a.test"))[0].to_der().unwrap(), new_leaf.to_der().unwrap());
        let got = take(&lines);
        assert_eq!(got.len(), 1, "{got:?}");
        let (level, line) = &got[0];
        assert_eq!(*level, Level::Info);
        assert!(line.contains("server name \"a.test\""), "{line}");
        assert!(line.contains(&format!("certificate file \"{c1}\"")), "{line}");
        assert!(line.contains(&format!("serial {}", serial_of(&new_leaf))), "{line}");
        assert!(line.contains(&format!("notAfter {}", new_leaf.not_after())), "{line}");
        // Rewritten with the same contents: silent.
        pause();
        write_pair(&dir, "a", &new_key, &[&new_leaf]);
        assert_eq!(check_now(&mut cfg, &say).reloaded, 0);
        assert!(take(&lines).is_empty());
    }

    #[test]
    fn the_default_certificate_reloads_into_a_new_dispatcher() {
        let dir = TempDir::new("reloaddefault");
        let key = testutil::key();
        let (k, c) = write_pair(&dir, "d", &key, &[&leaf_for(&key, "d.test")]);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("d.test"), Some(&k), Some(&c)).unwrap();
        let old = cfg.build().unwrap();
        pause();
        let new_key = testutil::key();
        let new_leaf = leaf_for(&new_key, "d.test");
        write_pair(&dir, "d", &new_key, &[&new_leaf]);
        let (say, _lines) = capture();
        let step = check_now(&mut cfg, &say);
        assert!(step.rebuilt, "the dispatcher and the client context carry the default certificate");
        let new = cfg.build().unwrap();
        // Old snapshot (connections started before) and new one both serve
        // the new certificate to new handshakes.
        for b in [&old, &new] {
            assert_eq!(served(b, None)[0].to_der().unwrap(), new_leaf.to_der().unwrap());
        }
    }

    #[test]
    fn never_worse_the_old_pair_serves_with_one_warning_per_change() {
        let dir = TempDir::new("neverworse");
        let key = testutil::key();
        let leaf = leaf_for(&key, "a.test");
        let (k0, c0) = pair(&dir, "d", "d.test", &["d.test"], Usage::Server);
        let (k, c) = write_pair(&dir, "a", &key, &[&leaf]);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("d.test"), Some(&k0), Some(&c0)).unwrap();
        cfg.add_cert(Some("a.test"), Some(&k), Some(&c)).unwrap();
        let built = cfg.build().unwrap();
        let (say, lines) = capture();
        let pem = leaf.to_pem().unwrap();
        let other_key = testutil::key();
        let cases: Vec<Case> = vec![
            ("truncated", Box::new(|| std::fs::write(&c, &pem[..pem.len() / 2]).unwrap()), "no valid PEM"),
            ("garbage", Box::new(|| std::fs::write(&c, b"garbage\n").unwrap()), "no valid PEM"),
            (
                "mismatched",
                Box::new(|| std::fs::write(&k, other_key.private_key_to_pem_pkcs8().unwrap()).unwrap()),
                "does not match",
            ),
            ("deleted", Box::new(|| std::fs::remove_file(&c).unwrap()), "No such file or directory"),
        ];
        for (what, spoil, reason) in &cases {
            // Start from the good pair each time.
            write_pair(&dir, "a", &key, &[&leaf]);
            pause();
            check_now(&mut cfg, &say);
            take(&lines);
            spoil();
            let mut now = crate::tls::watch::unix_now();
            if *what == "deleted" {
                // The key was written a moment ago: its certificate may be
                // on its way, so the first look is silent...
                let step = cfg.check(0, usize::MAX, now, &say, true);
                assert_eq!(step.reloaded, 0);
                assert!(take(&lines).is_empty(), "deleted: silent within the settle time");
                // ...and a look after the settle time reports it.
                now += crate::tls::watch::PAIR_SETTLE_SECS + 1;
            }
            for round in 0..3 {
                let step = cfg.check(0, usize::MAX, now, &say, true);
                assert_eq!(step.reloaded, 0, "{what}");
                assert_eq!(served(&built, Some("a.test"))[0].to_der().unwrap(), leaf.to_der().unwrap(), "{what}: old one serves");
                let got = take(&lines);
                if round == 0 {
                    assert_eq!(got.len(), 1, "{what}: {got:?}");
                    let (level, line) = &got[0];
                    assert_eq!(*level, Level::Warning, "{what}");
                    assert!(line.contains(reason), "{what}: {line}");
                    assert!(line.contains("server name \"a.test\""), "{line}");
                    assert!(line.contains(&format!("\"{c}\"")) || line.contains(&format!("\"{k}\"")), "{what}: names the file: {line}");
                    assert!(line.contains(&format!("serial {}", serial_of(&leaf))), "{what}: {line}");
                } else {
                    assert!(got.is_empty(), "{what}: once per change, not per check: {got:?}");
                }
            }
            pause();
        }
        // The files come back good: reloaded (same contents: silently).
        write_pair(&dir, "a", &key, &[&leaf]);
        check_now(&mut cfg, &say);
        assert!(take(&lines).is_empty());
    }

    #[test]
    fn a_certificate_written_before_its_key_ends_up_on_the_new_pair() {
        let dir = TempDir::new("certthenkey");
        let key = testutil::key();
        let (k, c) = write_pair(&dir, "a", &key, &[&leaf_for(&key, "a.test")]);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("a.test"), Some(&k), Some(&c)).unwrap();
        let built = cfg.build().unwrap();
        let (say, lines) = capture();
        let new_key = testutil::key();
        let new_leaf = leaf_for(&new_key, "a.test");
        pause();
        std::fs::write(&c, new_leaf.to_pem().unwrap()).unwrap();
        check_now(&mut cfg, &say);
        let got = take(&lines);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.contains("does not match"), "{got:?}");
        check_now(&mut cfg, &say);
        assert!(take(&lines).is_empty(), "still waiting for the key: no second warning");
        pause();
        std::fs::write(&k, new_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert_eq!(check_now(&mut cfg, &say).reloaded, 1);
        assert_eq!(served(&built, None)[0].to_der().unwrap(), new_leaf.to_der().unwrap());
        let got = take(&lines);
        assert!(got.len() == 1 && got[0].0 == Level::Info, "{got:?}");
    }

    #[test]
    fn a_symlink_switch_reloads() {
        let dir = TempDir::new("symlink");
        let key = testutil::key();
        let (k1, c1) = write_pair(&dir, "v1", &key, &[&leaf_for(&key, "a.test")]);
        let new_key = testutil::key();
        let new_leaf = leaf_for(&new_key, "a.test");
        let (k2, c2) = write_pair(&dir, "v2", &new_key, &[&new_leaf]);
        let (lk, lc) = (dir.0.join("privkey.pem"), dir.0.join("fullchain.pem"));
        std::os::unix::fs::symlink(&k1, &lk).unwrap();
        std::os::unix::fs::symlink(&c1, &lc).unwrap();
        let mut cfg: TlsConfig<u8> =
            TlsConfig::new(Some("a.test"), Some(lk.to_str().unwrap()), Some(lc.to_str().unwrap())).unwrap();
        let built = cfg.build().unwrap();
        let (say, lines) = capture();
        for (link, target) in [(&lc, &c2), (&lk, &k2)] {
            let tmp = dir.0.join("tmp-link");
            std::os::unix::fs::symlink(target, &tmp).unwrap();
            std::fs::rename(&tmp, link).unwrap();
            check_now(&mut cfg, &say);
        }
        assert_eq!(served(&built, None)[0].to_der().unwrap(), new_leaf.to_der().unwrap());
        let got = take(&lines);
        assert_eq!(got.last().unwrap().0, Level::Info, "{got:?}");
    }

    #[test]
    fn a_changed_ca_file_applies_to_new_handshakes() {
        let dir = TempDir::new("careload");
        let ca1_key = testutil::key();
        let ca1 = testutil::cert(&ca1_key, "CA one", &[], Usage::Ca, None);
        let ca2_key = testutil::key();
        let ca2 = testutil::cert(&ca2_key, "CA two", &[], Usage::Ca, None);
        let ca_file = dir.file("ca.pem", &ca1.to_pem().unwrap());
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("s.test"), None, None).unwrap();
        cfg.set_trust(Some(&ca_file)).unwrap();
        let (say, lines) = capture();
        assert!(!check_now(&mut cfg, &say).rebuilt);
        pause();
        std::fs::write(&ca_file, b"not a certificate").unwrap();
        assert!(!check_now(&mut cfg, &say).rebuilt);
        assert!(!check_now(&mut cfg, &say).rebuilt);
        let got = take(&lines);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].0 == Level::Warning && got[0].1.contains(&ca_file) && got[0].1.contains("stay in use"), "{got:?}");
        pause();
        std::fs::write(&ca_file, [ca1.to_pem().unwrap(), ca2.to_pem().unwrap()].concat()).unwrap();
        assert!(check_now(&mut cfg, &say).rebuilt, "the contexts carry the CA store");
        let got = take(&lines);
        assert!(got.len() == 1 && got[0].0 == Level::Info && got[0].1.contains("2 certificate(s)"), "{got:?}");
        // The new store admits a client of CA two.
        admits(&cfg.build().unwrap(), &client_of(&ca2, &ca2_key)).expect("a client of the new CA is admitted");
    }

    /// A client key and certificate issued by `ca`.
    fn client_of(ca: &X509, ca_key: &PKey<Private>) -> (PKey<Private>, X509) {
        let key = testutil::key();
        let cert = testutil::cert(&key, "client", &[], Usage::Client, Some((ca, ca_key)));
        (key, cert)
    }

    /// Whether the server context of `built` admits a client presenting
    /// `client` (mutual TLS); the server's reason when it does not.
    fn admits(built: &Built<u8>, client: &(PKey<Private>, X509)) -> Result<(), String> {
        let (s, c) = UnixStream::pair().unwrap();
        let server_ctx = built.server.clone();
        let server = std::thread::spawn(move || Ssl::new(&server_ctx).unwrap().accept(s).map(|_| ()).map_err(|e| e.to_string()));
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_private_key(&client.0).unwrap();
        b.set_certificate(&client.1).unwrap();
        let ctx = b.build();
        let _stream = Ssl::new(&ctx).unwrap().connect(c).map_err(|e| e.to_string());
        server.join().unwrap()
    }

    #[test]
    fn added_trust_sources_verify_as_a_union_and_a_replacing_one_alone() {
        let dir = TempDir::new("trustadd");
        let cas: Vec<(PKey<Private>, X509)> = ["CA one", "CA two", "CA three"]
            .iter()
            .map(|cn| {
                let key = testutil::key();
                let cert = testutil::cert(&key, cn, &[], Usage::Ca, None);
                (key, cert)
            })
            .collect();
        let clients: Vec<_> = cas.iter().map(|(k, c)| client_of(c, k)).collect();
        let f1 = dir.file("ca1.pem", &cas[0].1.to_pem().unwrap());
        let f2 = dir.file("ca2.pem", &cas[1].1.to_pem().unwrap());
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("s.test"), None, None).unwrap();
        cfg.trust_added(LoadedTrust::load(Some(&f1)).unwrap());
        cfg.trust_added(LoadedTrust::load(Some(&f2)).unwrap());
        // The same file again reloads its source; it is not listed twice.
        cfg.trust_added(LoadedTrust::load(Some(&f1)).unwrap());
        assert_eq!(cfg.trust.len(), 2);
        let built = cfg.build().unwrap();
        admits(&built, &clients[0]).expect("added: a client of the first CA file");
        admits(&built, &clients[1]).expect("added: a client of the second CA file");
        assert!(admits(&built, &clients[2]).is_err(), "a client of a CA in neither file");

        // A changed file reloads its own source; the other stays.
        let (say, lines) = capture();
        assert!(!check_now(&mut cfg, &say).rebuilt);
        pause();
        std::fs::write(&f2, cas[2].1.to_pem().unwrap()).unwrap();
        assert!(check_now(&mut cfg, &say).rebuilt);
        let got = take(&lines);
        assert!(got.len() == 1 && got[0].0 == Level::Info && got[0].1.contains(&f2), "{got:?}");
        let built = cfg.build().unwrap();
        admits(&built, &clients[0]).expect("after the reload of the other file: the first CA");
        admits(&built, &clients[2]).expect("after the reload: the CA now in the second file");
        assert!(admits(&built, &clients[1]).is_err(), "the CA no longer in the second file");

        // set_trust (the beta4 build's fio_tls_trust) replaces every source.
        cfg.set_trust(Some(&f1)).unwrap();
        assert_eq!(cfg.trust.len(), 1);
        let built = cfg.build().unwrap();
        admits(&built, &clients[0]).expect("replaced: the CA of the file given last");
        assert!(admits(&built, &clients[2]).is_err(), "replaced: the CA of the file given before");

        // The system store plus a file: the file's CA goes into the
        // context's own store next to the system CAs.
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("s.test"), None, None).unwrap();
        cfg.trust_added(LoadedTrust::load(None).unwrap());
        cfg.trust_added(LoadedTrust::load(Some(&f1)).unwrap());
        let built = cfg.build().unwrap();
        admits(&built, &clients[0]).expect("system store and a file: a client of the file's CA");
        assert!(admits(&built, &clients[1]).is_err(), "system store and a file: a client of an unknown CA");
    }

    #[test]
    fn expiry_is_reported_with_name_file_and_date() {
        let dir = TempDir::new("expiry");
        let key = testutil::key();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "soon.test").unwrap();
        let name = name.build();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(10).unwrap()).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
        let leaf = b.build();
        let (k, c) = write_pair(&dir, "soon", &key, &[&leaf]);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("soon.test"), Some(&k), Some(&c)).unwrap();
        let (say, lines) = capture();
        let now = crate::tls::watch::unix_now();
        cfg.check(0, 10, now, &say, true);
        let got = take(&lines);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Level::Warning);
        let line = &got[0].1;
        assert!(line.contains("server name \"soon.test\"") && line.contains(&c), "{line}");
        assert!(line.contains(&format!("expires on {}", leaf.not_after())) && line.contains("(in 10 days)"), "{line}");
        cfg.check(0, 10, now + 3600, &say, true);
        assert!(take(&lines).is_empty(), "once a day");
        cfg.check(0, 10, now + 86_400, &say, false);
        assert_eq!(take(&lines).len(), 1, "the next day (also with watching off)");
        cfg.check(0, 10, now + 11 * 86_400, &say, true);
        let got = take(&lines);
        assert!(got.len() == 1 && got[0].0 == Level::Error && got[0].1.contains("expired on"), "{got:?}");
    }

    #[test]
    fn the_self_signed_certificate_is_made_again_before_it_expires() {
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("self.test"), None, None).unwrap();
        let built = cfg.build().unwrap();
        let first = cfg.certs()[0].clone();
        let (say, lines) = capture();
        let now = crate::tls::watch::unix_now();
        assert_eq!(cfg.check(0, 10, now, &say, true).reloaded, 0);
        let renew = selfsigned::renew_at(first.not_before, first.not_after);
        assert_eq!(renew, first.not_after - 30 * 86_400);
        let step = cfg.check(0, 10, renew, &say, false);
        assert!(step.reloaded == 1 && step.rebuilt, "{step:?}");
        let second = cfg.certs()[0].clone();
        assert_ne!(second.serial(), first.serial());
        assert!(second.not_after >= first.not_after);
        assert_eq!(second.names, vec!["self.test".to_string()]);
        // New handshakes (also from the snapshot built before) get it.
        assert_eq!(serial_of(&served(&built, None)[0]), second.serial());
        let got = take(&lines);
        assert!(got.len() == 1 && got[0].0 == Level::Info && got[0].1.contains(&second.serial()), "{got:?}");
    }

    #[test]
    fn the_check_goes_in_slices() {
        let dir = TempDir::new("slices");
        let (k, c) = pair(&dir, "s", "*.slice.test", &["*.slice.test"], Usage::Server);
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("a.slice.test"), Some(&k), Some(&c)).unwrap();
        for i in 0..9 {
            cfg.add_cert(Some(&format!("n{i}.slice.test")), Some(&k), Some(&c)).unwrap();
        }
        let say = Reporter::new(true);
        let now = crate::tls::watch::unix_now();
        let mut from = 0;
        let mut slices = 0;
        loop {
            let step = cfg.check(from, 4, now, &say, true);
            slices += 1;
            match step.next {
                Some(n) => {
                    assert_eq!((n, step.checked), (from + 4, 4));
                    from = n;
                }
                None => {
                    assert_eq!(step.checked, 2);
                    break;
                }
            }
        }
        assert_eq!(slices, 3);
    }

    /// One connection to `built` with SNI `sni`, offering `session`:
    /// (whether it was resumed, the session to offer next time, the leaf).
    fn connect_with_session(
        built: &Built<u8>,
        sni: &str,
        version: SslVersion,
        session: Option<&openssl::ssl::SslSession>,
    ) -> (bool, openssl::ssl::SslSession, X509) {
        use std::io::{Read, Write};
        let (s, c) = UnixStream::pair().unwrap();
        let server_ctx = built.server.clone();
        let server = std::thread::spawn(move || {
            let mut stream = Ssl::new(&server_ctx).unwrap().accept(s).unwrap();
            // The client reads this, and with it the TLS 1.3 tickets.
            stream.write_all(b"x").unwrap();
            let _ = stream.read(&mut [0u8; 1]);
        });
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_min_proto_version(Some(version)).unwrap();
        b.set_max_proto_version(Some(version)).unwrap();
        let ctx = b.build();
        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_hostname(sni).unwrap();
        if let Some(sess) = session {
            // SAFETY: the session comes from a context of the same method.
            unsafe { ssl.set_session(sess).unwrap() };
        }
        let mut stream = ssl.connect(c).unwrap();
        stream.read_exact(&mut [0u8; 1]).unwrap();
        let resumed = stream.ssl().session_reused();
        let next = stream.ssl().session().unwrap().to_owned();
        let leaf = stream.ssl().peer_certificate().unwrap();
        stream.shutdown().ok();
        drop(stream);
        server.join().unwrap();
        (resumed, next, leaf)
    }

    #[test]
    fn sessions_resume_only_under_the_certificate_they_were_made_with() {
        let dir = TempDir::new("resume");
        let (mut cfg, _) = three_names(&dir);
        let built = cfg.build().unwrap();
        for version in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
            for name in ["d.test", "a.test"] {
                let (resumed, sess, _) = connect_with_session(&built, name, version, None);
                assert!(!resumed);
                let (resumed, _, _) = connect_with_session(&built, name, version, Some(&sess));
                assert!(resumed, "{version:?} {name}: a session resumes under its own certificate");
            }
            let (_, sess_a, _) = connect_with_session(&built, "a.test", version, None);
            let (resumed, _, leaf) = connect_with_session(&built, "b.test", version, Some(&sess_a));
            assert!(!resumed, "{version:?}: a.test's session is not resumed under b.test's certificate");
            assert_eq!(certificate_names(&leaf), vec!["b.test".to_string()]);
        }
        // After a renewal, a session made under the old certificate gets a
        // full handshake with the new one.
        let (_, old13, _) = connect_with_session(&built, "a.test", SslVersion::TLS1_3, None);
        let (_, old12, _) = connect_with_session(&built, "a.test", SslVersion::TLS1_2, None);
        pause();
        let new_key = testutil::key();
        let new_leaf = leaf_for(&new_key, "a.test");
        write_pair(&dir, "a", &new_key, &[&new_leaf]);
        assert_eq!(check_now(&mut cfg, &Reporter::new(true)).reloaded, 1);
        for (version, old) in [(SslVersion::TLS1_3, &old13), (SslVersion::TLS1_2, &old12)] {
            let (resumed, sess, leaf) = connect_with_session(&built, "a.test", version, Some(old));
            assert!(!resumed, "{version:?}");
            assert_eq!(leaf.to_der().unwrap(), new_leaf.to_der().unwrap());
            let (resumed, _, _) = connect_with_session(&built, "a.test", version, Some(&sess));
            assert!(resumed, "{version:?}: the new certificate's sessions resume");
        }
    }
}
