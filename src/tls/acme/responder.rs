//! The TLS-ALPN-01 responder (RFC 8737).
//!
//! The process that talks to the CA writes the challenge material of a
//! pending name into the cache (`challenges/<name>.pem`: a fresh P-256 key
//! and the challenge certificate); every process reads it when a
//! ClientHello for that name offers ALPN `acme-tls/1` ([`decide`]), so the
//! worker that happens to accept the CA's validation connection answers
//! it. Such a ClientHello is rare (one per validation), so reading a small
//! file then costs nothing worth caching.

use super::{cache, settings};
use crate::tls::error::ConfigError;
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Extension, X509NameBuilder, X509};
use std::path::Path;

/// id-pe-acmeIdentifier (RFC 8737 section 6.1).
pub const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// The challenge key and certificate of a pending name.
pub struct Challenge {
    pub key: PKey<Private>,
    pub cert: X509,
}

/// Makes the challenge certificate for `name`: self-signed with a fresh
/// P-256 key, subjectAltName = the one dNSName `name`, and the critical
/// acmeIdentifier extension whose value is the DER OCTET STRING of
/// `digest` = SHA-256 of the key authorization (RFC 8737 section 3).
pub fn make(name: &str, digest: &[u8; 32]) -> Result<Challenge, ConfigError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_nid(Nid::COMMONNAME, "ACME TLS-ALPN-01 challenge")?;
    let subject = subject.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(128, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(7)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let san = SubjectAlternativeName::new().dns(name).build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    // extnValue holds the DER encoding of an OCTET STRING of the digest
    let mut der = vec![0x04, 0x20];
    der.extend_from_slice(digest);
    let oid = Asn1Object::from_str(ACME_IDENTIFIER_OID)?;
    let value = Asn1OctetString::new_from_bytes(&der)?;
    b.append_extension(X509Extension::new_from_der(&oid, true, &value)?)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(Challenge { key, cert: b.build() })
}

impl Challenge {
    /// Key then certificate, PEM (the `challenges/<name>.pem` file).
    pub fn to_pem(&self) -> Result<Vec<u8>, ConfigError> {
        let mut out = self.key.private_key_to_pem_pkcs8()?;
        out.extend_from_slice(&self.cert.to_pem()?);
        Ok(out)
    }

    pub fn from_pem(pem: &[u8]) -> Option<Challenge> {
        let key = PKey::private_key_from_pem(pem).ok()?;
        let cert = X509::from_pem(pem).ok()?;
        cert.public_key().ok()?.public_eq(&key).then_some(Challenge { key, cert })
    }
}

/// Whether an ALPN extension body (2-byte list length, then 1-byte length
/// + name entries) offers `acme-tls/1`.
pub fn offers_acme(alpn_ext: &[u8]) -> bool {
    let Some(mut rest) = alpn_ext.get(2..) else { return false };
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == super::ALPN {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// The pending challenge of `name` in cache directory `dir`, if any.
pub fn pending_in(dir: &Path, name: &str) -> Option<Challenge> {
    if !super::eligible(name) {
        return None;
    }
    let pem = std::fs::read(cache::challenge_file(dir, name)).ok()?;
    Challenge::from_pem(&pem)
}

/// What a ClientHello offering `acme-tls/1` for SNI `host` gets: the
/// pending challenge of the name (ACME on and an authorization under way
/// in some process of the application), or `None`: the handshake fails.
pub fn decide(host: Option<&str>) -> Option<Challenge> {
    #[cfg(test)]
    if let Some(dir) = TEST_DIR.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return pending_in(&dir, host?);
    }
    pending_in(&settings()?.dir, host?)
}

/// Unit tests: the cache directory [`decide`] reads instead of the
/// environment's (which would turn ACME on for every test's names).
#[cfg(test)]
pub static TEST_DIR: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_certificate_has_the_critical_identifier_and_only_the_name() {
        let digest = [7u8; 32];
        let ch = make("a.test", &digest).unwrap();
        let names: Vec<_> = ch.cert.subject_alt_names().unwrap().iter().map(|g| g.dnsname().unwrap().to_string()).collect();
        assert_eq!(names, vec!["a.test".to_string()]);
        // Find the extension in the DER text dump: OpenSSL prints unknown
        // extensions with their OID and "critical".
        let text = String::from_utf8(ch.cert.to_text().unwrap()).unwrap();
        let at = text.find(ACME_IDENTIFIER_OID).expect("acmeIdentifier present");
        assert!(text[at..].lines().next().unwrap().contains("critical"), "{text}");
        // The extension's value is 04 20 + digest.
        let der = ch.cert.to_der().unwrap();
        let mut want = vec![0x04, 0x22, 0x04, 0x20];
        want.extend_from_slice(&digest);
        assert!(der.windows(want.len()).any(|w| w == want.as_slice()), "OCTET STRING(OCTET STRING(digest)) in the DER");
        // round trip through the cache file format
        let back = Challenge::from_pem(&ch.to_pem().unwrap()).unwrap();
        assert_eq!(back.cert.to_der().unwrap(), der);
    }

    #[test]
    fn acme_tls_1_is_found_in_an_alpn_list() {
        let list = |names: &[&[u8]]| {
            let mut v = vec![0, 0];
            for n in names {
                v.push(n.len() as u8);
                v.extend_from_slice(n);
            }
            let l = (v.len() - 2) as u16;
            v[..2].copy_from_slice(&l.to_be_bytes());
            v
        };
        assert!(offers_acme(&list(&[b"acme-tls/1"])));
        assert!(offers_acme(&list(&[b"h2", b"acme-tls/1"])));
        assert!(!offers_acme(&list(&[b"h2", b"http/1.1"])));
        assert!(!offers_acme(&list(&[b"acme-tls/10"])));
        assert!(!offers_acme(&[0, 5, 20, b'a']), "malformed");
    }

    #[test]
    fn a_pending_challenge_is_read_from_the_cache_and_only_for_its_name() {
        let tmp = crate::tls::testutil::TempDir::new("acme_responder");
        cache::prepare(&tmp.0).unwrap();
        assert!(pending_in(&tmp.0, "a.test").is_none());
        let ch = make("a.test", &[1u8; 32]).unwrap();
        cache::write_atomic(&cache::challenge_file(&tmp.0, "a.test"), &ch.to_pem().unwrap()).unwrap();
        let got = pending_in(&tmp.0, "a.test").expect("pending");
        assert_eq!(got.cert.to_der().unwrap(), ch.cert.to_der().unwrap());
        assert!(pending_in(&tmp.0, "b.test").is_none());
        assert!(pending_in(&tmp.0, "../challenges/a.test").is_none(), "no path from the SNI");
    }
}
