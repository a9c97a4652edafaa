//! JSON Web Signature with ES256 (RFC 7515, RFC 7518 section 3.4) as ACME
//! uses it (RFC 8555 section 6.2: flattened JSON serialization, `jwk` for
//! newAccount, `kid` after it), and the JWK thumbprint (RFC 7638).

use crate::tls::error::ConfigError;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sha::sha256;
use serde_json::{json, Value};

/// base64url without padding (RFC 7515 section 2).
pub fn b64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes).trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// An ACME account key: ECDSA P-256.
pub struct AccountKey {
    key: EcKey<Private>,
    /// The public JWK with its members in lexicographic order and no
    /// whitespace: the RFC 7638 input.
    jwk: String,
}

impl AccountKey {
    pub fn generate() -> Result<Self, ConfigError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        Self::from_ec(EcKey::generate(&group)?)
    }

    /// A P-256 key from PEM; anything else is refused.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let key = PKey::private_key_from_pem(pem)?.ec_key()?;
        if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(ConfigError::msg("the ACME account key is not a P-256 key"));
        }
        Self::from_ec(key)
    }

    fn from_ec(key: EcKey<Private>) -> Result<Self, ConfigError> {
        let mut ctx = BigNumContext::new()?;
        let (mut x, mut y) = (openssl::bn::BigNum::new()?, openssl::bn::BigNum::new()?);
        key.public_key().affine_coordinates(key.group(), &mut x, &mut y, &mut ctx)?;
        let jwk = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64url(&x.to_vec_padded(32)?),
            b64url(&y.to_vec_padded(32)?)
        );
        Ok(AccountKey { key, jwk })
    }

    pub fn to_pem(&self) -> Result<Vec<u8>, ConfigError> {
        Ok(PKey::from_ec_key(self.key.clone())?.private_key_to_pem_pkcs8()?)
    }

    pub fn jwk(&self) -> Value {
        serde_json::from_str(&self.jwk).unwrap_or(Value::Null)
    }

    /// The JWK thumbprint (RFC 7638, SHA-256), base64url.
    pub fn thumbprint(&self) -> String {
        b64url(&sha256(self.jwk.as_bytes()))
    }

    /// The key authorization of a challenge `token` (RFC 8555 section 8.1).
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// A JWS (flattened JSON) over `payload` (`None`: the empty payload of
    /// a POST-as-GET) for `url` with `nonce`, identified by `kid` (the
    /// account URL) or, without one, by the public JWK.
    pub fn sign(&self, url: &str, nonce: &str, kid: Option<&str>, payload: Option<&Value>) -> Result<String, ConfigError> {
        let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = b64url(protected.to_string().as_bytes());
        let payload = match payload {
            Some(p) => b64url(p.to_string().as_bytes()),
            None => String::new(),
        };
        let digest = sha256(format!("{protected}.{payload}").as_bytes());
        let sig = EcdsaSig::sign(&digest, &self.key)?;
        // JWS wants r || s, 32 bytes each (RFC 7518 section 3.4), not DER.
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend_from_slice(&sig.s().to_vec_padded(32)?);
        Ok(json!({"protected": protected, "payload": payload, "signature": b64url(&raw)}).to_string())
    }
}

/// Decodes base64url without padding (tests and the CSR check).
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut t = s.replace('-', "+").replace('_', "/");
    while t.len() % 4 != 0 {
        t.push('=');
    }
    openssl::base64::decode_block(&t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::BigNum;

    #[test]
    fn base64url_has_no_padding_and_the_url_alphabet() {
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
    }

    #[test]
    fn the_thumbprint_is_sha256_of_the_ordered_jwk() {
        let k = AccountKey::generate().unwrap();
        let jwk = k.jwk();
        // RFC 7638: exactly crv, kty, x, y in that order, no whitespace
        let ordered = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(k.thumbprint(), b64url(&sha256(ordered.as_bytes())));
        assert_eq!(b64url_decode(jwk["x"].as_str().unwrap()).unwrap().len(), 32);
        // survives the account key file
        let again = AccountKey::from_pem(&k.to_pem().unwrap()).unwrap();
        assert_eq!(again.thumbprint(), k.thumbprint());
        assert_eq!(k.key_authorization("tok"), format!("tok.{}", k.thumbprint()));
    }

    #[test]
    fn the_signature_verifies_over_protected_dot_payload() {
        let k = AccountKey::generate().unwrap();
        let body: Value = serde_json::from_str(&k.sign("https://ca/x", "n1", Some("https://ca/acct/1"), Some(&json!({"a": 1}))).unwrap()).unwrap();
        let protected: Value =
            serde_json::from_slice(&b64url_decode(body["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(protected["alg"], "ES256");
        assert_eq!(protected["nonce"], "n1");
        assert_eq!(protected["url"], "https://ca/x");
        assert_eq!(protected["kid"], "https://ca/acct/1");
        assert!(protected.get("jwk").is_none());
        let sig = b64url_decode(body["signature"].as_str().unwrap()).unwrap();
        assert_eq!(sig.len(), 64);
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(&sig[..32]).unwrap(),
            BigNum::from_slice(&sig[32..]).unwrap(),
        )
        .unwrap();
        let input = format!("{}.{}", body["protected"].as_str().unwrap(), body["payload"].as_str().unwrap());
        assert!(sig.verify(&sha256(input.as_bytes()), &k.key).unwrap());
        assert!(!sig.verify(&sha256(b"other"), &k.key).unwrap());
        // POST-as-GET: empty payload, and the JWK when there is no kid
        let get: Value = serde_json::from_str(&k.sign("https://ca/y", "n2", None, None).unwrap()).unwrap();
        assert_eq!(get["payload"], "");
        let protected: Value = serde_json::from_slice(&b64url_decode(get["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(protected["jwk"], k.jwk());
    }
}
