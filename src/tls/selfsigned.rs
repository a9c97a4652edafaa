//! In-process self-signed certificates for `fio_tls_new(name, NULL, NULL)`.
//!
//! ECDSA P-256 key, X.509 v3, valid from now for 365 days (the test knob
//! `FIO_TLS_SELF_SIGNED_SECONDS` shortens that, see [`lifetime_seconds`];
//! the watcher makes a new one before it expires), subjectAltName =
//! the name (a DNS name, or an IP address when the name parses as one),
//! basicConstraints CA:FALSE, keyUsage digitalSignature, extendedKeyUsage
//! serverAuth, random 128-bit serial, SHA-256 signature. Generating one takes
//! well under a millisecond.

use super::error::ConfigError;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509};
use crate::log::log_warning;
use once_cell::sync::Lazy;

/// Days a generated certificate stays valid.
pub const VALID_DAYS: u32 = 365;

const DAY: i64 = 86_400;

/// How long a generated certificate stays valid, in seconds: 365 days, or
/// `FIO_TLS_SELF_SIGNED_SECONDS` (a whole number of seconds from 2 to
/// 31536000, read once per process) -- a test knob that makes the
/// regeneration of the self-signed certificate observable in seconds. A
/// value out of range is reported with one WARNING and the default is used.
pub fn lifetime_seconds() -> i64 {
    static VALUE: Lazy<i64> = Lazy::new(|| {
        let default = i64::from(VALID_DAYS) * DAY;
        match std::env::var("FIO_TLS_SELF_SIGNED_SECONDS") {
            Ok(v) => match v.trim().parse::<i64>() {
                Ok(n) if (2..=default).contains(&n) => n,
                _ => {
                    log_warning!(
                        "FIO_TLS_SELF_SIGNED_SECONDS=\"{v}\" is not a number of seconds from 2 to {default}; using {default}"
                    );
                    default
                }
            },
            Err(_) => default,
        }
    });
    *VALUE
}

/// When a self-signed certificate valid from `not_before` to `not_after`
/// (seconds since the Unix epoch) is made again: 30 days before it expires,
/// or half-way through its life when that is shorter (the test knob).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (30 * DAY).min((not_after - not_before) / 2)
}

/// Generates a key and a self-signed certificate for `name`, valid from
/// now for [`lifetime_seconds`].
pub fn generate(name: &str) -> Result<(PKey<Private>, X509), ConfigError> {
    generate_for(name, lifetime_seconds())
}

/// [`generate`] with a lifetime of `seconds`.
pub fn generate_for(name: &str, seconds: i64) -> Result<(PKey<Private>, X509), ConfigError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;

    let mut subject = X509NameBuilder::new()?;
    // CN is limited to 64 characters; the SAN carries the full name.
    let cn: String = name.chars().take(64).collect();
    subject.append_entry_by_nid(Nid::COMMONNAME, &cn)?;
    let subject = subject.build();

    let mut serial = BigNum::new()?;
    serial.rand(128, MsbOption::MAYBE_ZERO, false)?;

    let mut b = X509::builder()?;
    b.set_version(2)?; // v3
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    // OpenSSL's clock (time(3), which may lag the precise clock by a few
    // ms) for the start, as for everything it compares with "now".
    let not_before = Asn1Time::days_from_now(0)?;
    let start = super::watch::unix_time(&not_before).unwrap_or_else(super::watch::unix_now);
    let not_after = Asn1Time::from_unix(start + seconds)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    if name.parse::<std::net::IpAddr>().is_ok() {
        san.ip(name);
    } else {
        san.dns(name);
    }
    let san = san.build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    // Key identifiers (RFC 5280 4.2.1.1-2): strict validators that pin the
    // certificate require them.
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new().keyid(true).build(&b.x509v3_context(None, None))?;
    b.append_extension(aki)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((key, b.build()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_matches_the_name_and_key() {
        let (key, cert) = generate("www.example.test").unwrap();
        assert!(cert.public_key().unwrap().public_eq(&key));
        assert!(cert.verify(&key).unwrap(), "self-signature must verify");
        let sans: Vec<String> = cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.dnsname().map(str::to_string))
            .collect();
        assert_eq!(sans, vec!["www.example.test".to_string()]);
        assert_eq!(cert.version(), 2);
        let now = Asn1Time::days_from_now(0).unwrap();
        assert!(cert.not_before() <= now);
        assert!(cert.not_after() > now);
    }

    #[test]
    fn lifetimes_and_renewal_times() {
        let (_, cert) = generate_for("short.test", 6).unwrap();
        let now = crate::tls::watch::unix_now();
        let not_after = crate::tls::watch::unix_time(cert.not_after()).unwrap();
        let not_before = crate::tls::watch::unix_time(cert.not_before()).unwrap();
        assert!((now - 1..=now + 1).contains(&not_before), "{not_before} vs {now}");
        assert_eq!(not_after - not_before, 6);
        // Half-way through a short life, 30 days before the end of a long one.
        assert_eq!(renew_at(1000, 1006), 1003);
        assert_eq!(renew_at(0, 365 * DAY), 335 * DAY);
        if std::env::var_os("FIO_TLS_SELF_SIGNED_SECONDS").is_none() {
            assert_eq!(lifetime_seconds(), 365 * DAY, "the default without the knob");
        }
    }

    #[test]
    fn ip_names_become_ip_sans() {
        let (_, cert) = generate("127.0.0.1").unwrap();
        let ip = cert.subject_alt_names().unwrap().iter().find_map(|n| n.ipaddress().map(<[u8]>::to_vec));
        assert_eq!(ip, Some(vec![127, 0, 0, 1]));
    }
}
