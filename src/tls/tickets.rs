//! Session ticket keys (RFC 5077 / RFC 8446 stateless tickets), rotated.
//!
//! OpenSSL's own ticket key is made once per context and never changes, so
//! whoever obtains it can decrypt every resumed session for as long as the
//! process lives. Instead, one random master secret per process tree is
//! made when the first context is built, which facil.io applications do
//! before `fio_start` forks its workers, so every worker holds the same
//! secret. Each key period (`FIO_TLS_TICKET_KEY_SECONDS`, default 3600 s) has
//! its own key name, AES-256-CBC key and HMAC-SHA256 key, derived from the
//! master with HMAC-SHA256. Tickets are issued under the current period's
//! key; tickets from the previous period still resume (and are renewed);
//! older ones fall back to a full handshake. A client therefore resumes on
//! whichever worker it reaches, with no coordination between workers.

use crate::log::log_warning;
use libc::{c_char, c_int, c_uchar, c_uint, c_void, size_t};
use once_cell::sync::Lazy;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::SslContextBuilder;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default key period in seconds.
pub const DEFAULT_KEY_SECONDS: u64 = 3600;

/// The key period: `FIO_TLS_TICKET_KEY_SECONDS` (1..=86400), read once.
fn key_seconds() -> u64 {
    static VALUE: Lazy<u64> = Lazy::new(|| match std::env::var("FIO_TLS_TICKET_KEY_SECONDS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=86400).contains(&n) => n,
            _ => {
                log_warning!(
                    "FIO_TLS_TICKET_KEY_SECONDS=\"{v}\" is not a number of seconds from 1 to 86400; using {DEFAULT_KEY_SECONDS}"
                );
                DEFAULT_KEY_SECONDS
            }
        },
        Err(_) => DEFAULT_KEY_SECONDS,
    });
    *VALUE
}

/// One period's keys.
#[derive(Clone, Copy)]
struct PeriodKeys {
    period: u64,
    name: [u8; 16],
    aes: [u8; 32],
    hmac: [u8; 32],
}

struct Keys {
    master: [u8; 32],
    cache: Option<(PeriodKeys, PeriodKeys)>,
}

impl Drop for Keys {
    fn drop(&mut self) {
        super::sys::cleanse(&mut self.master);
    }
}

static KEYS: Lazy<Mutex<Keys>> = Lazy::new(|| {
    let mut master = [0u8; 32];
    // A failure of OpenSSL's RNG leaves no safe choice but to abort the
    // ticket path: an all-zero master is detected and tickets are refused.
    if openssl::rand::rand_bytes(&mut master).is_err() {
        master = [0u8; 32];
    }
    Mutex::new(Keys { master, cache: None })
});

fn derive(master: &[u8; 32], period: u64) -> Option<PeriodKeys> {
    let key = PKey::hmac(master).ok()?;
    let block = |label: &[u8]| -> Option<Vec<u8>> {
        let mut s = Signer::new(MessageDigest::sha256(), &key).ok()?;
        s.update(b"fio_tls session ticket key ").ok()?;
        s.update(label).ok()?;
        s.update(&period.to_be_bytes()).ok()?;
        s.sign_to_vec().ok()
    };
    let (a, b) = (block(b"name+aes")?, block(b"hmac")?);
    let mut k = PeriodKeys { period, name: [0; 16], aes: [0; 32], hmac: [0; 32] };
    k.name.copy_from_slice(&a[..16]);
    // The AES key: the rest of block a plus the first half of block b.
    k.aes[..16].copy_from_slice(&a[16..32]);
    k.aes[16..].copy_from_slice(&b[..16]);
    let c = block(b"hmac2")?;
    k.hmac[..16].copy_from_slice(&b[16..32]);
    k.hmac[16..].copy_from_slice(&c[..16]);
    Some(k)
}

/// The keys of the current and the previous period.
fn current_keys() -> Option<(PeriodKeys, PeriodKeys)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let period = now / key_seconds();
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    if keys.master == [0u8; 32] {
        return None;
    }
    match keys.cache {
        Some((cur, prev)) if cur.period == period => Some((cur, prev)),
        _ => {
            let cur = derive(&keys.master, period)?;
            let prev = derive(&keys.master, period.wrapping_sub(1))?;
            keys.cache = Some((cur, prev));
            Some((cur, prev))
        }
    }
}

#[repr(C)]
struct OsslParam {
    key: *const c_char,
    data_type: c_uint,
    data: *mut c_void,
    data_size: size_t,
    return_size: size_t,
}

enum EvpCipherCtx {}
enum EvpMacCtx {}
enum EvpCipher {}

type TicketCb = unsafe extern "C" fn(
    *mut openssl_sys::SSL,
    *mut c_uchar,
    *mut c_uchar,
    *mut EvpCipherCtx,
    *mut EvpMacCtx,
    c_int,
) -> c_int;

extern "C" {
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx: *mut openssl_sys::SSL_CTX, cb: TicketCb) -> c_int;
    fn EVP_aes_256_cbc() -> *const EvpCipher;
    fn EVP_EncryptInit_ex(
        ctx: *mut EvpCipherCtx,
        cipher: *const EvpCipher,
        engine: *mut c_void,
        key: *const c_uchar,
        iv: *const c_uchar,
    ) -> c_int;
    fn EVP_DecryptInit_ex(
        ctx: *mut EvpCipherCtx,
        cipher: *const EvpCipher,
        engine: *mut c_void,
        key: *const c_uchar,
        iv: *const c_uchar,
    ) -> c_int;
    fn EVP_MAC_CTX_set_params(ctx: *mut EvpMacCtx, params: *const OsslParam) -> c_int;
    fn OSSL_PARAM_construct_utf8_string(key: *const c_char, buf: *mut c_char, bsize: size_t) -> OsslParam;
    fn OSSL_PARAM_construct_octet_string(key: *const c_char, buf: *mut c_void, bsize: size_t) -> OsslParam;
    fn OSSL_PARAM_construct_end() -> OsslParam;
}

unsafe fn set_hmac_key(hctx: *mut EvpMacCtx, key: &[u8; 32]) -> bool {
    let mut digest = *b"SHA256\0";
    let mut key = *key;
    let params = [
        OSSL_PARAM_construct_utf8_string(c"digest".as_ptr(), digest.as_mut_ptr().cast(), 0),
        OSSL_PARAM_construct_octet_string(c"key".as_ptr(), key.as_mut_ptr().cast(), key.len()),
        OSSL_PARAM_construct_end(),
    ];
    let ok = EVP_MAC_CTX_set_params(hctx, params.as_ptr()) == 1;
    super::sys::cleanse(&mut key);
    ok
}

/// OpenSSL's ticket key callback: 1 = use (encrypt, or decrypt with the
/// current key), 2 = decrypted with an old key (issue a fresh ticket),
/// 0 = unknown key (full handshake), -1 = error.
unsafe extern "C" fn ticket_key_cb(
    _ssl: *mut openssl_sys::SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut EvpCipherCtx,
    hctx: *mut EvpMacCtx,
    enc: c_int,
) -> c_int {
    let run = || -> c_int {
        let Some((cur, prev)) = current_keys() else { return -1 };
        let name = std::slice::from_raw_parts_mut(key_name, 16);
        let iv = std::slice::from_raw_parts_mut(iv, 16);
        if enc == 1 {
            if openssl::rand::rand_bytes(iv).is_err() {
                return -1;
            }
            name.copy_from_slice(&cur.name);
            let ok = EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), core::ptr::null_mut(), cur.aes.as_ptr(), iv.as_ptr()) == 1
                && set_hmac_key(hctx, &cur.hmac);
            return if ok { 1 } else { -1 };
        }
        let (keys, verdict) = if name == cur.name {
            (cur, 1)
        } else if name == prev.name {
            (prev, 2)
        } else {
            return 0;
        };
        let ok = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), core::ptr::null_mut(), keys.aes.as_ptr(), iv.as_ptr()) == 1
            && set_hmac_key(hctx, &keys.hmac);
        if ok {
            verdict
        } else {
            -1
        }
    };
    crate::ffi::boundary::ffi_boundary!("session ticket callback", { run() })
}

/// Makes `b` issue and accept tickets under the rotated, shared keys.
pub fn install(b: &mut SslContextBuilder) {
    // Create the master now (before any fork), not at the first ticket.
    Lazy::force(&KEYS);
    let ctx = b.as_ptr();
    // SAFETY: ctx is the live context being built; the callback is static.
    unsafe {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_have_distinct_keys_and_derivation_is_stable() {
        let master = [7u8; 32];
        let a = derive(&master, 10).unwrap();
        let a2 = derive(&master, 10).unwrap();
        let b = derive(&master, 11).unwrap();
        assert_eq!(a.name, a2.name);
        assert_eq!(a.aes, a2.aes);
        assert_ne!(a.name, b.name);
        assert_ne!(a.aes, b.aes);
        assert_ne!(a.hmac, b.hmac);
        assert_ne!(&a.aes[..], &a.hmac[..]);
    }
}
