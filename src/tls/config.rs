//! TLS settings (certificates by SNI name, ALPN protocols) and the OpenSSL
//! contexts built from them.
//!
//! [`TlsConfig`] is the mutable description a `fio_tls_s` holds; every change
//! produces a new immutable [`Built`] snapshot. Connections keep an `Arc` of
//! the snapshot they started with, so changing or destroying the settings
//! never pulls a context from under a live connection.
//!
//! Defaults (server and client): TLS 1.2 and 1.3 only; TLS 1.2 suites are
//! ECDHE with AES-GCM or ChaCha20-Poly1305 (forward secret AEAD only), in the
//! server's order; key exchange groups as [`groups`] picks them for the
//! OpenSSL in the process (X25519MLKEM768 first where it has ML-KEM); no compression; no
//! renegotiation; session tickets (keys rotated, see [`super::tickets`])
//! and the server session cache on; a session resumes only under the
//! certificate and peer-verification settings it was made with.

use super::error::{first_reason, ConfigError, ErrorKind};
use crate::ffi::boundary::ffi_boundary;
use openssl::error::ErrorStack;
use crate::log::{log_debug, log_warning};
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::x509::{X509ExtendedKeyUsage, X509Ref, X509VerifyResult};
use super::{pem, selfsigned};
use openssl::sha::Sha256;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    AlpnError, ClientHelloResponse, SslAlert, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslRef, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use std::sync::Arc;

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

/// Warns (once per load) about a certificate file that OpenSSL accepts but
/// clients will not: an expired or not yet valid leaf, or a chain whose
/// certificates are not in leaf-then-issuer order.
fn warn_about_chain(path: &str, chain: &[X509]) {
    let leaf = &chain[0];
    if let Ok(now) = Asn1Time::days_from_now(0) {
        if leaf.not_after() < now {
            log_warning!("certificate file \"{path}\": the certificate expired on {}; clients will refuse it", leaf.not_after());
        } else if leaf.not_before() > now {
            log_warning!("certificate file \"{path}\": the certificate is not valid before {}; clients will refuse it until then", leaf.not_before());
        }
    }
    for (i, pair) in chain.windows(2).enumerate() {
        if pair[1].issued(&pair[0]) != X509VerifyResult::OK {
            log_warning!(
                "certificate file \"{path}\": certificate {} did not issue certificate {} before it; \
                 clients may fail to verify the chain (put the leaf first, then each issuer in turn)",
                i + 2,
                i + 1
            );
            break;
        }
    }
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
/// under its security level), so that a refusal names the file.
fn check_usable(path: &str, leaf: &X509) -> Result<(), ConfigError> {
    let mut probe = SslContextBuilder::new(SslMethod::tls_server())?;
    probe
        .set_certificate(leaf)
        .map_err(|e| {
            ConfigError::file(ErrorKind::Refused, "certificate file", path, format!("OpenSSL refuses it: {}", first_reason(&e)))
        })
}

/// A certificate chain with its key, and the SNI names it answers to.
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
}

impl CertEntry {
    /// Loads `key_file` and `cert_file` (or generates a self-signed pair when
    /// both are `None`) and checks that the key matches the certificate.
    pub fn load(server_name: Option<&str>, key_file: Option<&str>, cert_file: Option<&str>) -> Result<Self, ConfigError> {
        check_server_name(server_name)?;
        let (key, chain, self_signed) = match (key_file, cert_file) {
            (None, None) => {
                let (key, cert) = selfsigned::generate(server_name.unwrap_or("localhost"))?;
                (key, vec![cert], true)
            }
            (Some(k), Some(c)) => {
                let key = match pem::load_private_key(k) {
                    Ok(key) => key,
                    // Both files hold the other half: name the swap once.
                    Err(e) if e.kind() == ErrorKind::WrongContent && pem::load_private_key(c).is_ok() => {
                        return Err(ConfigError::new(
                            ErrorKind::WrongContent,
                            format!(
                                "private key file \"{k}\" holds a certificate and certificate file \"{c}\" \
                                 holds a private key: the two are swapped (pass the private key file first, \
                                 then the certificate file)"
                            ),
                        ));
                    }
                    Err(e) => return Err(e),
                };
                let chain = pem::load_chain(c)?;
                check_usable(c, &chain[0])?;
                warn_about_chain(c, &chain);
                let leaf_key = chain[0].public_key()?;
                if !leaf_key.public_eq(&key) {
                    return Err(ConfigError::new(
                        ErrorKind::KeyMismatch,
                        format!("private key file \"{k}\" does not match certificate file \"{c}\""),
                    ));
                }
                if let Some(warning) = server_name.and_then(|name| name_warning(c, name, &chain[0])) {
                    log_warning!("{warning}");
                }
                (key, chain, false)
            }
            (Some(k), None) => {
                return Err(ConfigError::msg(format!(
                    "private key file \"{k}\" given without a certificate file (pass both, or neither for a self-signed certificate)"
                )))
            }
            (None, Some(c)) => {
                return Err(ConfigError::msg(format!(
                    "certificate file \"{c}\" given without a private key file (pass both, or neither for a self-signed certificate)"
                )))
            }
        };
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
        Ok(CertEntry { names, key, chain, self_signed })
    }
}

/// Exact, case-insensitive match, or a `*.` wildcard covering one label.
fn name_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        _ => false,
    }
}

/// An ALPN protocol name and the caller's handler for it.
#[derive(Clone)]
pub struct Protocol<H> {
    pub name: String,
    pub handler: H,
}

/// The mutable settings of one `fio_tls_s`.
#[derive(Clone)]
pub struct TlsConfig<H> {
    /// The name given to `fio_tls_new`: the client's SNI and host name.
    pub server_name: Option<String>,
    /// Changed only through the methods (they keep `built_certs` valid).
    certs: Vec<CertEntry>,
    /// In the order added = the server's order of preference.
    protocols: Vec<Protocol<H>>,
    /// Peer verification, off by default (facil.io's anonymous mode).
    trust: Option<Trust>,
    /// Server contexts already built for the first `certs` (same order),
    /// valid for the current `protocols` and `trust`: adding a certificate
    /// builds one context, not all of them again.
    built_certs: Vec<SslContext>,
}

/// Where trusted CA certificates come from.
#[derive(Clone)]
pub enum Trust {
    /// The CA certificates of one PEM file.
    Cas(Vec<X509>),
    /// OpenSSL's default verify paths (the system trust store).
    System,
}

impl Trust {
    /// Loads `ca_file` (PEM or DER, one or more certificates), or the system store
    /// when `None`.
    pub fn load(ca_file: Option<&str>) -> Result<Self, ConfigError> {
        match ca_file {
            None => Ok(Trust::System),
            Some(path) => pem::load_ca_certificates(path).map(Trust::Cas),
        }
    }

    fn apply(&self, b: &mut SslContextBuilder, server: bool) -> Result<(), ConfigError> {
        match self {
            Trust::System => {
                b.set_default_verify_paths()?;
                if let Some((file, dir)) = distribution_store() {
                    b.load_verify_locations(file, dir)?;
                }
            }
            Trust::Cas(cas) => {
                let mut store = X509StoreBuilder::new()?;
                for ca in cas {
                    store.add_cert(ca.clone())?;
                }
                b.set_verify_cert_store(store.build())?;
                if server {
                    // Name the acceptable CAs in the CertificateRequest.
                    let mut names = Stack::new()?;
                    for ca in cas {
                        names.push(ca.subject_name().to_owned()?)?;
                    }
                    b.set_client_ca_list(names);
                }
            }
        }
        let mode = if server {
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
        } else {
            SslVerifyMode::PEER
        };
        b.set_verify(mode);
        Ok(())
    }
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
        let first = CertEntry::load(server_name, key_file, cert_file)?;
        Ok(TlsConfig {
            server_name: server_name.map(str::to_string),
            certs: vec![first],
            protocols: Vec::new(),
            trust: None,
            built_certs: Vec::new(),
        })
    }

    /// Adds a certificate chosen when the client's SNI names `server_name`
    /// (or one of the certificate's own DNS names).
    pub fn add_cert(&mut self, server_name: Option<&str>, key_file: Option<&str>, cert_file: Option<&str>) -> Result<(), ConfigError> {
        let entry = CertEntry::load(server_name, key_file, cert_file)?;
        self.add_entry(server_name, entry);
        Ok(())
    }

    /// Adds a certificate already loaded with [`CertEntry::load`] (so that
    /// the files can be read before a lock is taken).
    pub fn add_entry(&mut self, server_name: Option<&str>, entry: CertEntry) {
        // SNI picks the first certificate that answers to a name, so adding
        // one again (a renewal, say) changes nothing: say so.
        if let Some(name) = server_name.map(str::to_ascii_lowercase) {
            if self.certs.iter().any(|e| e.names.contains(&name)) {
                log_warning!(
                    "server name \"{name}\" already has a certificate; the one added first keeps serving it \
                     (to replace a certificate, build a new fio_tls_s)"
                );
            }
        }
        self.certs.push(entry);
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
                // Every server context carries the protocol list.
                self.built_certs.clear();
            }
        }
        Ok(())
    }

    /// Turns on peer verification against `ca_file` (or the system store).
    pub fn set_trust(&mut self, ca_file: Option<&str>) -> Result<(), ConfigError> {
        self.trust_with(Trust::load(ca_file)?);
        Ok(())
    }

    /// Turns on peer verification with `trust`.
    pub fn trust_with(&mut self, trust: Trust) {
        self.trust = Some(trust);
        // Every server context carries the verification settings.
        self.built_certs.clear();
    }

    /// The certificates, in the order added (the first is the default).
    pub fn certs(&self) -> &[CertEntry] {
        &self.certs
    }

    /// The ALPN protocols, in the server's order of preference.
    pub fn protocols(&self) -> &[Protocol<H>] {
        &self.protocols
    }

    /// Builds the OpenSSL contexts for these settings (reusing the
    /// per-certificate contexts of earlier builds that are still valid).
    pub fn build(&mut self) -> Result<Built<H>, ConfigError> {
        let alpn_names: Arc<Vec<Vec<u8>>> = Arc::new(self.protocols.iter().map(|p| p.name.as_bytes().to_vec()).collect());

        // One context per certificate; a context for the first one also
        // carries the callbacks that switch a handshake to another.
        while self.built_certs.len() < self.certs.len() {
            let entry = &self.certs[self.built_certs.len()];
            let mut b = server_builder(entry, self.trust.as_ref())?;
            set_alpn_select(&mut b, &alpn_names);
            self.built_certs.push(b.build());
        }
        let entries: Arc<Vec<(Vec<String>, SslContext)>> = Arc::new(
            self.certs.iter().zip(&self.built_certs).map(|(e, c)| (e.names.clone(), c.clone())).collect(),
        );
        let mut b = server_builder(&self.certs[0], self.trust.as_ref())?;
        set_alpn_select(&mut b, &alpn_names);
        // The certificate is chosen from the ClientHello's SNI before
        // OpenSSL looks at a session the client offers. Each certificate's
        // context has its own session id context, so a session made under
        // one certificate is not resumed under another (OpenSSL would
        // otherwise decide on resumption before the SNI callback ran).
        let hello_entries = entries.clone();
        b.set_client_hello_callback(move |ssl: &mut SslRef, _alert: &mut SslAlert| {
            // (Every closure OpenSSL calls runs inside the panic boundary:
            // a panic must not unwind through OpenSSL's C frames.)
            ffi_boundary!("ClientHello callback", on_panic = Err(ErrorStack::get()), {
                if let Some(i) = super::sys::client_hello_server_name(ssl).and_then(|h| pick_entry(&hello_entries, &h)) {
                    ssl.set_ssl_context(&hello_entries[i].1)?;
                }
                Ok(ClientHelloResponse::SUCCESS)
            })
        });
        // The ClientHello callback did the switching. OpenSSL acknowledges
        // the client's SNI only when a servername callback accepts it.
        b.set_servername_callback(|_: &mut SslRef, _: &mut SslAlert| Ok(()));
        let server = b.build();

        let client = client_builder(self)?.build();
        Ok(Built {
            server,
            client,
            protocols: self.protocols.clone(),
            server_name: self.server_name.clone(),
            verify_peer: self.trust.is_some(),
        })
    }
}

/// The certificate entry for `host` other than the default (entry 0, the
/// context the handshake starts with): `None` keeps the default.
fn pick_entry(entries: &[(Vec<String>, SslContext)], host: &str) -> Option<usize> {
    entries
        .iter()
        .position(|(names, _)| names.iter().any(|n| name_matches(n, host)))
        .filter(|&i| i > 0)
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

/// The session id context of a server context: what a session made under
/// it is bound to. OpenSSL resumes a session (ID or ticket; the ticket keys
/// are shared by the whole process) only where this matches, so it covers
/// everything a resumed session skips: the certificate the client saw (the
/// leaf) and the peer verification that admitted the client (the trust
/// settings). A session of an object without `fio_tls_trust` therefore
/// never resumes on one that requires client certificates, and one made
/// under a.test's certificate never resumes under b.test's. Deterministic
/// (SHA-256 of those inputs), so it is the same in every worker and after
/// a rebuild.
fn session_context(entry: &CertEntry, trust: Option<&Trust>) -> Result<[u8; 32], ConfigError> {
    let mut h = Sha256::new();
    h.update(b"fio_tls session context v1\0");
    h.update(&entry.chain[0].to_der()?);
    match trust {
        None => h.update(b"\0no peer verification"),
        Some(Trust::System) => h.update(b"\0system trust store"),
        Some(Trust::Cas(cas)) => {
            h.update(b"\0CA file");
            for ca in cas {
                let der = ca.to_der()?;
                h.update(&(der.len() as u64).to_be_bytes());
                h.update(&der);
            }
        }
    }
    Ok(h.finish())
}

fn server_builder(entry: &CertEntry, trust: Option<&Trust>) -> Result<SslContextBuilder, ConfigError> {
    let mut b = SslContextBuilder::new(SslMethod::tls_server())?;
    common_settings(&mut b)?;
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    b.set_session_id_context(&session_context(entry, trust)?)?;
    super::tickets::install(&mut b);
    b.set_private_key(&entry.key)?;
    b.set_certificate(&entry.chain[0])?;
    for intermediate in &entry.chain[1..] {
        b.add_extra_chain_cert(intermediate.clone())?;
    }
    b.check_private_key()?;
    if let Some(trust) = trust {
        trust.apply(&mut b, true)?;
    }
    Ok(b)
}

/// Server-side ALPN: the first protocol in our order that the client offers
/// (RFC 7301 server preference). A client offering only unknown protocols
/// gets the fatal `no_application_protocol` alert. With no protocols
/// registered, ALPN is not negotiated at all.
fn set_alpn_select(b: &mut SslContextBuilder, ours: &Arc<Vec<Vec<u8>>>) {
    if ours.is_empty() {
        return;
    }
    let ours = ours.clone();
    b.set_alpn_select_callback(move |_ssl, client| {
        ffi_boundary!("ALPN callback", on_panic = Err(AlpnError::ALERT_FATAL), {
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

fn client_builder<H>(cfg: &TlsConfig<H>) -> Result<SslContextBuilder, ConfigError> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    common_settings(&mut b)?;
    // Anonymous by default, as the seed API documents; peer verification is
    // an explicit opt-in (`fio_tls_trust`).
    match &cfg.trust {
        Some(trust) => trust.apply(&mut b, false)?,
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if !cfg.protocols.is_empty() {
        let mut wire = Vec::new();
        for p in &cfg.protocols {
            wire.push(p.name.len() as u8);
            wire.extend_from_slice(p.name.as_bytes());
        }
        b.set_alpn_protos(&wire)?;
    }
    // A certificate loaded from files doubles as the client certificate.
    if let Some(entry) = cfg.certs.iter().find(|e| !e.self_signed) {
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
    fn wildcard_names() {
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("Example.COM", "example.com"));
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
        assert!(m.contains("swapped (pass the private key file first"), "{m}");
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
}
