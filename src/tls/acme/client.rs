//! The ACME protocol (RFC 8555) as far as one TLS-ALPN-01 certificate for
//! one DNS name needs it: directory, nonces (with badNonce retries),
//! newAccount, newOrder, authorization, challenge, finalize with a CSR,
//! certificate download.

use super::http::{self, Response};
use super::jws::{b64url, AccountKey};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509Req};
use serde_json::{json, Value};
use std::fmt;
use std::time::{Duration, Instant};

const JOSE: &str = "application/jose+json";
const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
/// Attempts of one request while the CA answers badNonce (a CA may reject
/// a fraction of good nonces on purpose, as pebble does).
const NONCE_ATTEMPTS: usize = 10;
/// How long an authorization or an order may stay in processing.
const POLL_LIMIT: Duration = Duration::from_secs(90);

/// Why an ACME step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeError {
    /// The CA could not be reached or spoke no HTTP (the text says where).
    Transport(String),
    /// The CA's problem document (RFC 7807 / RFC 8555 section 6.7).
    Problem { kind: String, detail: String, status: u16 },
    /// The CA answered something this client does not understand.
    Protocol(String),
    /// Local trouble (key generation, the cache directory).
    Local(String),
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Transport(t) => write!(f, "ACME server unreachable: {t}"),
            AcmeError::Problem { kind, detail, status } => write!(f, "problem {kind} (HTTP {status}): {detail}"),
            AcmeError::Protocol(t) => write!(f, "unexpected answer from the ACME server: {t}"),
            AcmeError::Local(t) => write!(f, "{t}"),
        }
    }
}

impl From<crate::tls::error::ConfigError> for AcmeError {
    fn from(e: crate::tls::error::ConfigError) -> Self {
        AcmeError::Local(e.to_string())
    }
}

impl From<openssl::error::ErrorStack> for AcmeError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        AcmeError::Local(e.to_string())
    }
}

/// A problem document from a JSON value (an error response, or the
/// `error` of a challenge / authorization).
fn problem(v: &Value, status: u16) -> AcmeError {
    AcmeError::Problem {
        kind: v["type"].as_str().unwrap_or("about:blank").to_string(),
        detail: v["detail"].as_str().unwrap_or("").to_string(),
        status,
    }
}

fn json_of(r: &Response) -> Result<Value, AcmeError> {
    serde_json::from_slice(&r.body).map_err(|e| AcmeError::Protocol(format!("HTTP {}: body is not JSON ({e})", r.status)))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, AcmeError> {
    v[name].as_str().ok_or_else(|| AcmeError::Protocol(format!("no \"{name}\" in {v}")))
}

/// A session with one ACME server under one account.
pub struct Session {
    http: http::Client,
    key: AccountKey,
    new_nonce: String,
    new_account: String,
    new_order: String,
    /// The account URL, once newAccount answered.
    kid: Option<String>,
    nonce: Option<String>,
    /// What the requests so far cost, for tests: (newAccount, newOrder,
    /// badNonce answers retried).
    pub counts: (usize, usize, usize),
}

/// A CSR for `name` (the only subjectAltName) signed with `key`, DER.
pub fn csr(name: &str, key: &PKey<Private>) -> Result<Vec<u8>, AcmeError> {
    let mut b = X509Req::builder()?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_nid(openssl::nid::Nid::COMMONNAME, name)?;
    b.set_subject_name(&subject.build())?;
    b.set_pubkey(key)?;
    let mut exts = Stack::new()?;
    exts.push(SubjectAlternativeName::new().dns(name).build(&b.x509v3_context(None))?)?;
    b.add_extensions(&exts)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build().to_der()?)
}

impl Session {
    /// Reads the directory at `url`.
    pub fn open(url: &str, ca_file: Option<&str>, key: AccountKey) -> Result<Self, AcmeError> {
        let http = http::Client::new(ca_file).map_err(AcmeError::Local)?;
        let r = http.request("GET", url, None).map_err(AcmeError::Transport)?;
        if r.status != 200 {
            return Err(AcmeError::Protocol(format!("directory {url}: HTTP {}", r.status)));
        }
        let d = json_of(&r)?;
        Ok(Session {
            new_nonce: field(&d, "newNonce")?.to_string(),
            new_account: field(&d, "newAccount")?.to_string(),
            new_order: field(&d, "newOrder")?.to_string(),
            http,
            key,
            kid: None,
            nonce: None,
            counts: (0, 0, 0),
        })
    }

    pub fn key(&self) -> &AccountKey {
        &self.key
    }

    fn fresh_nonce(&mut self) -> Result<String, AcmeError> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let r = self.http.request("HEAD", &self.new_nonce.clone(), None).map_err(AcmeError::Transport)?;
        r.header("replay-nonce").map(str::to_string).ok_or_else(|| AcmeError::Protocol("newNonce gave no Replay-Nonce".into()))
    }

    /// A signed POST (`payload` `None`: POST-as-GET). A badNonce problem is
    /// retried with the nonce that came with it (RFC 8555 section 6.5),
    /// up to [`NONCE_ATTEMPTS`] attempts in all; other problems are returned.
    pub fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Response, AcmeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let nonce = self.fresh_nonce()?;
            let body = self.key.sign(url, &nonce, self.kid.as_deref(), payload)?;
            let r = self.http.request("POST", url, Some((JOSE, body.as_bytes()))).map_err(AcmeError::Transport)?;
            self.nonce = r.header("replay-nonce").map(str::to_string);
            if r.status < 400 {
                return Ok(r);
            }
            let p = json_of(&r).map(|v| problem(&v, r.status))?;
            match &p {
                AcmeError::Problem { kind, .. } if kind == BAD_NONCE && attempt < NONCE_ATTEMPTS => {
                    self.counts.2 += 1;
                    continue;
                }
                _ => return Err(p),
            }
        }
    }

    /// newAccount (creates the account, or finds the one of this key).
    pub fn account(&mut self, email: Option<&str>) -> Result<(), AcmeError> {
        let mut payload = json!({"termsOfServiceAgreed": true});
        if let Some(e) = email {
            payload["contact"] = json!([format!("mailto:{e}")]);
        }
        self.kid = None;
        let url = self.new_account.clone();
        let r = self.post(&url, Some(&payload))?;
        self.counts.0 += 1;
        let kid = r.header("location").ok_or_else(|| AcmeError::Protocol("newAccount gave no Location".into()))?;
        self.kid = Some(kid.to_string());
        Ok(())
    }

    fn get(&mut self, url: &str) -> Result<Value, AcmeError> {
        let r = self.post(url, None)?;
        json_of(&r)
    }

    /// Polls `url` until its status leaves `pending` / `processing`.
    fn poll(&mut self, url: &str) -> Result<Value, AcmeError> {
        let start = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            let v = self.get(url)?;
            match v["status"].as_str() {
                Some("pending") | Some("processing") if start.elapsed() < POLL_LIMIT => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(3));
                }
                _ => return Ok(v),
            }
        }
    }

    /// Orders a certificate for `name` with `cert_key`, proving control by
    /// TLS-ALPN-01: `publish(token digest)` must make the challenge
    /// certificate available before the CA is told to validate, and
    /// `withdraw()` runs when the authorization is over (valid or not).
    /// Returns the PEM chain.
    pub fn issue(
        &mut self,
        name: &str,
        cert_key: &PKey<Private>,
        publish: &mut dyn FnMut(&[u8; 32]) -> Result<(), AcmeError>,
        withdraw: &mut dyn FnMut(),
    ) -> Result<Vec<u8>, AcmeError> {
        let url = self.new_order.clone();
        let r = self.post(&url, Some(&json!({"identifiers": [{"type": "dns", "value": name}]})))?;
        self.counts.1 += 1;
        let order_url = r.header("location").ok_or_else(|| AcmeError::Protocol("newOrder gave no Location".into()))?.to_string();
        let order = json_of(&r)?;
        let authzs: Vec<String> = order["authorizations"]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for authz_url in authzs {
            let authz = self.get(&authz_url)?;
            if authz["status"] == "valid" {
                continue;
            }
            let challenge = authz["challenges"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "tls-alpn-01"))
                .cloned()
                .ok_or_else(|| AcmeError::Protocol(format!("no tls-alpn-01 challenge for {name}")))?;
            let token = field(&challenge, "token")?;
            let digest = openssl::sha::sha256(self.key.key_authorization(token).as_bytes());
            publish(&digest)?;
            let result = (|| {
                self.post(field(&challenge, "url")?, Some(&json!({})))?;
                let done = self.poll(&authz_url)?;
                if done["status"] == "valid" {
                    return Ok(());
                }
                // The challenge's error says why (RFC 8555 section 8).
                let err = done["challenges"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "tls-alpn-01"))
                    .map(|c| c["error"].clone())
                    .filter(|e| e.is_object());
                Err(match err {
                    Some(e) => problem(&e, 403),
                    None => AcmeError::Protocol(format!("authorization for {name} is {}", done["status"])),
                })
            })();
            withdraw();
            result?;
        }
        let der = csr(name, cert_key)?;
        let finalize = field(&order, "finalize")?.to_string();
        self.post(&finalize, Some(&json!({"csr": b64url(&der)})))?;
        let done = self.poll(&order_url)?;
        if done["status"] != "valid" {
            return Err(match done.get("error").filter(|e| e.is_object()) {
                Some(e) => problem(e, 403),
                None => AcmeError::Protocol(format!("order for {name} is {}", done["status"])),
            });
        }
        let cert_url = field(&done, "certificate")?.to_string();
        let r = self.post(&cert_url, None)?;
        Ok(r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509;

    #[test]
    fn the_csr_names_only_the_name_and_is_signed_by_the_key() {
        let key = crate::tls::testutil::key();
        let der = csr("a.test", &key).unwrap();
        let req = X509Req::from_der(&der).unwrap();
        assert!(req.verify(&key).unwrap());
        let text = String::from_utf8(req.to_text().unwrap()).unwrap();
        assert!(text.contains("DNS:a.test"), "{text}");
    }

    /// Debian's pebble on loopback ports, with its HTTPS certificate from a
    /// CA made here; killed when dropped.
    struct Pebble {
        child: std::process::Child,
        directory: String,
        ca_file: String,
        _dir: crate::tls::testutil::TempDir,
    }

    impl Drop for Pebble {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// pebble with every authorization valid (PEBBLE_VA_ALWAYS_VALID: this
    /// tests the protocol, test_acme.py the TLS-ALPN-01 validation) and 30 %
    /// of good nonces refused (PEBBLE_WFE_NONCEREJECT), so that badNonce
    /// retries happen.
    fn pebble() -> Pebble {
        use crate::tls::testutil::{cert, key, TempDir, Usage};
        let bin = "/usr/bin/pebble";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install Debian's pebble package (.ci/run does)"
        );
        let dir = TempDir::new("pebble");
        let (ca_key, leaf_key) = (key(), key());
        let ca = cert(&ca_key, "pebble test CA", &[], Usage::Ca, None);
        let leaf = cert(&leaf_key, "pebble", &["127.0.0.1"], Usage::Server, Some((&ca, &ca_key)));
        let ca_file = dir.file("ca.pem", &ca.to_pem().unwrap());
        let cert_file = dir.file("pebble.pem", &leaf.to_pem().unwrap());
        let key_file = dir.file("pebble.key", &leaf_key.private_key_to_pem_pkcs8().unwrap());
        let (port, mgmt) = (free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert_file, "privateKey": key_file,
            "httpPort": free_port(), "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false}});
        let config_file = dir.file("pebble.json", config.to_string().as_bytes());
        let child = std::process::Command::new(bin)
            .args(["-config", &config_file])
            .env("PEBBLE_VA_ALWAYS_VALID", "1")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "30")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let p = Pebble { child, directory: format!("https://127.0.0.1:{port}/dir"), ca_file, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    #[test]
    fn a_session_gets_certificates_from_a_real_pebble_through_bad_nonces() {
        let p = pebble();
        // the CA file is required: pebble's HTTPS is from our CA
        let no_trust = Session::open(&p.directory, None, AccountKey::generate().unwrap());
        assert!(matches!(no_trust, Err(AcmeError::Transport(_))), "{:?}", no_trust.err());
        let mut s = Session::open(&p.directory, Some(&p.ca_file), AccountKey::generate().unwrap()).unwrap();
        s.account(Some("admin@a.test")).unwrap();
        for name in ["one.acme.test", "two.acme.test"] {
            let key = crate::tls::testutil::key();
            let (mut published, mut withdrawn) = (Vec::new(), 0);
            let chain = s
                .issue(
                    name,
                    &key,
                    &mut |d| {
                        published.push(*d);
                        Ok(())
                    },
                    &mut || withdrawn += 1,
                )
                .unwrap();
            let certs = X509::stack_from_pem(&chain).unwrap();
            assert!(certs.len() >= 2, "leaf and intermediate");
            assert!(certs[0].public_key().unwrap().public_eq(&key));
            let sans: Vec<_> = certs[0].subject_alt_names().unwrap().iter().filter_map(|g| g.dnsname().map(str::to_string)).collect();
            assert_eq!(sans, vec![name.to_string()]);
            // pebble may reuse a valid authorization; when it did not, the
            // digest was published and withdrawn once
            assert_eq!(published.len(), withdrawn);
            assert!(published.len() <= 1);
        }
        assert_eq!((s.counts.0, s.counts.1), (1, 2), "one account, one order per name");
        assert!(s.counts.2 > 0, "pebble refused 30 % of the nonces: some badNonce answers were retried");
        // the same key finds the same account (no second one)
        let kid = s.kid.clone();
        s.account(None).unwrap();
        assert_eq!(s.kid, kid);
    }

    #[test]
    fn problems_render_type_and_detail() {
        let p = problem(&json!({"type": "urn:ietf:params:acme:error:connection", "detail": "no route"}), 400);
        assert_eq!(p.to_string(), "problem urn:ietf:params:acme:error:connection (HTTP 400): no route");
    }
}
