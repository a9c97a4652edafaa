//! The few OpenSSL calls the `openssl` / `openssl-sys` crates do not wrap.

use foreign_types::{ForeignType, ForeignTypeRef};
use libc::{c_char, c_int, c_long, c_uchar, c_uint, c_void, size_t};
use openssl::error::ErrorStack;
use openssl::pkey::{PKeyRef, Private};
use openssl::ssl::{Ssl, SslContextBuilder, SslContextRef, SslRef};
use openssl::x509::{X509Ref, X509};

extern "C" {
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> c_int;
    fn OPENSSL_cleanse(ptr: *mut c_void, len: size_t);
    fn SSL_group_to_name(ssl: *mut openssl_sys::SSL, id: c_int) -> *const c_char;
    fn SSL_certs_clear(ssl: *mut openssl_sys::SSL);
    fn SSL_set_session_id_context(ssl: *mut openssl_sys::SSL, sid_ctx: *const c_uchar, sid_ctx_len: c_uint) -> c_int;
}

/// `SSL_CTRL_GET_NEGOTIATED_GROUP` (ssl.h; `SSL_get_negotiated_group` is a
/// macro over `SSL_ctrl`), the same number in OpenSSL 3.0 to 3.5.
const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;

/// The key exchange group of the handshake, by OpenSSL's name for it
/// (`SSL_get_negotiated_group` + `SSL_group_to_name`): "X25519MLKEM768",
/// "x25519", "secp256r1", ... `None` before the key exchange or when OpenSSL
/// has no name for it.
pub fn negotiated_group(ssl: &openssl::ssl::SslRef) -> Option<String> {
    // SAFETY: ssl is live; the control only reads the connection's state.
    let id: c_long = unsafe { openssl_sys::SSL_ctrl(ssl.as_ptr(), SSL_CTRL_GET_NEGOTIATED_GROUP, 0, core::ptr::null_mut()) };
    if id <= 0 {
        return None;
    }
    // SAFETY: ssl is live; the name is a static string of OpenSSL's or of
    // a provider's, copied at once.
    let name = unsafe { SSL_group_to_name(ssl.as_ptr(), id as c_int) };
    if name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string (see above).
    Some(unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

/// `SSL_CTX_add1_chain_cert`: adds `cert` to the chain of the context's
/// current certificate (not to the context-wide "extra" chain, which
/// OpenSSL sends with any certificate that has no chain of its own).
pub fn ctx_add_chain_cert(b: &mut SslContextBuilder, cert: &X509Ref) -> Result<(), ErrorStack> {
    // SAFETY: b is a live context being built; add1 takes its own
    // reference to cert (SSL_CTX_add1_chain_cert is this SSL_CTX_ctrl).
    let r = unsafe {
        openssl_sys::SSL_CTX_ctrl(b.as_ptr(), openssl_sys::SSL_CTRL_CHAIN_CERT, 1, cert.as_ptr().cast())
    };
    if r == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// Makes a server connection (inside its ClientHello callback) serve `key`
/// with `chain` (leaf first) instead of the certificates its context gave
/// it, and binds its sessions to `sid_ctx`. Every certificate it had is
/// dropped first, so a default certificate of another key type cannot be
/// picked instead of this one.
pub fn serve_certificate(ssl: &mut SslRef, key: &PKeyRef<Private>, chain: &[X509], sid_ctx: &[u8]) -> Result<(), ErrorStack> {
    // SAFETY: ssl is the live connection of the callback; SSL_certs_clear
    // drops the certificates and keys of its own CERT copy only (the
    // context keeps its own).
    unsafe { SSL_certs_clear(ssl.as_ptr()) };
    ssl.set_certificate(&chain[0])?;
    ssl.set_private_key(key)?;
    for intermediate in &chain[1..] {
        ssl.add_chain_cert(intermediate.clone())?;
    }
    let len = c_uint::try_from(sid_ctx.len()).unwrap_or(c_uint::MAX);
    // SAFETY: sid_ctx is a live slice of len bytes; OpenSSL copies it (and
    // refuses more than 32 bytes).
    if unsafe { SSL_set_session_id_context(ssl.as_ptr(), sid_ctx.as_ptr(), len) } != 1 {
        return Err(ErrorStack::get());
    }
    Ok(())
}

/// `SSL_has_pending`: true when OpenSSL holds received bytes (decrypted or
/// still to be processed) that a read would return without touching the fd.
pub fn has_pending(ssl: &openssl::ssl::SslRef) -> bool {
    // A `&SslRef` points at the `SSL` itself (it is a foreign-types opaque
    // reference), so the cast is what `ForeignTypeRef::as_ptr` does.
    let ptr = (ssl as *const openssl::ssl::SslRef).cast::<openssl_sys::SSL>();
    // SAFETY: ptr is a live SSL object borrowed for the call.
    unsafe { SSL_has_pending(ptr) == 1 }
}

/// `SSL_new(ctx)`: a new connection object holding its own references to
/// `ctx` (OpenSSL counts them), owned by the returned `Ssl`.
///
/// Unlike `openssl::ssl::Ssl::new`, it does not also store a clone of `ctx`
/// in the SSL's ex_data: that slot costs 3 allocations (128 bytes of heap)
/// per connection and is read only by rust-openssl's trampolines for
/// closures set with `set_verify_callback`, the PSK callbacks and the
/// session cache callbacks (`set_new_session_callback`,
/// `set_get_session_callback`), which would panic without it. The library
/// sets none of those (its callbacks, SNI, ALPN, key log and the raw ticket
/// key callback, look at the SSL's current context or take no context);
/// switching to one of them means going back to `Ssl::new`.
pub fn new_ssl(ctx: &SslContextRef) -> Result<Ssl, ErrorStack> {
    // SAFETY: ctx is a live context; SSL_new takes its own references to it
    // and returns a new object (one reference) or NULL with the error queue set.
    unsafe {
        let ptr = openssl_sys::SSL_new(ctx.as_ptr());
        if ptr.is_null() {
            return Err(ErrorStack::get());
        }
        Ok(Ssl::from_ptr(ptr))
    }
}

/// The host name a ClientHello asks for (its server_name extension, RFC 6066
/// section 3), read inside a ClientHello callback, before OpenSSL has parsed
/// the extensions. `None` without the extension, outside a ClientHello
/// callback, or when the extension is malformed (OpenSSL rejects those
/// itself later).
pub fn client_hello_server_name(ssl: &openssl::ssl::SslRef) -> Option<String> {
    let mut data: *const u8 = core::ptr::null();
    let mut len: size_t = 0;
    // SAFETY: ssl is live; on success OpenSSL points `data` at `len` bytes
    // owned by the SSL object, valid for the rest of the callback.
    let found = unsafe { openssl_sys::SSL_client_hello_get0_ext(ssl.as_ptr(), 0, &mut data, &mut len) } == 1;
    if !found || data.is_null() {
        return None;
    }
    // SAFETY: see above; the slice does not outlive this call.
    let ext = unsafe { std::slice::from_raw_parts(data, len) };
    host_name_of(ext).map(str::to_ascii_lowercase)
}

/// The body of the ClientHello's ALPN extension (RFC 7301: a 2-byte list
/// length, then 1-byte length + name entries), if it has one. Only valid
/// in the ClientHello callback.
pub fn client_hello_alpn(ssl: &openssl::ssl::SslRef) -> Option<&[u8]> {
    let mut data: *const u8 = core::ptr::null();
    let mut len: size_t = 0;
    // SAFETY: ssl is live; on success OpenSSL points `data` at `len` bytes
    // owned by the SSL object, valid while the ClientHello is processed
    // (the borrow of `ssl` bounds the slice).
    let found = unsafe { openssl_sys::SSL_client_hello_get0_ext(ssl.as_ptr(), 16, &mut data, &mut len) } == 1;
    if !found || data.is_null() {
        return None;
    }
    // SAFETY: see above.
    Some(unsafe { std::slice::from_raw_parts(data, len) })
}

/// The host_name entry of a server_name extension body: a 2-byte list
/// length, then entries of a 1-byte type (0 = host_name), a 2-byte length
/// and the name. Only a list that is well formed and whose name is
/// non-empty printable ASCII without '/' or NUL counts.
fn host_name_of(ext: &[u8]) -> Option<&str> {
    let (list_len, mut rest) = (u16::from_be_bytes([*ext.first()?, *ext.get(1)?]) as usize, ext.get(2..)?);
    if list_len != rest.len() {
        return None;
    }
    while !rest.is_empty() {
        let kind = rest[0];
        let n = u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]) as usize;
        let name = rest.get(3..3 + n)?;
        rest = &rest[3 + n..];
        if kind == 0 {
            let ok = !name.is_empty() && name.iter().all(|&c| c.is_ascii_graphic() && c != b'/');
            return if ok { std::str::from_utf8(name).ok() } else { None };
        }
    }
    None
}

/// Parses DER certificates laid end to end (`cat leaf.der ca.der`), one
/// `d2i_X509` call per certificate. Returns the certificates parsed and the
/// number of bytes they took: fewer than `der.len()` means the rest is not
/// a DER certificate.
pub fn der_certificates(der: &[u8]) -> (Vec<openssl::x509::X509>, usize) {
    let mut certs = Vec::new();
    let mut used = 0usize;
    while used < der.len() {
        let rest = &der[used..];
        let Ok(len) = libc::c_long::try_from(rest.len()) else { break };
        let mut p = rest.as_ptr();
        // SAFETY: p and len describe a live slice; on success d2i_X509
        // returns a new certificate (owned by the X509 made from it) and
        // moves p past the bytes it parsed, never beyond the slice.
        let x = unsafe { openssl_sys::d2i_X509(core::ptr::null_mut(), &mut p, len) };
        if x.is_null() {
            // Drop the parse errors OpenSSL queued on this thread.
            let _ = ErrorStack::get();
            break;
        }
        // SAFETY: x is a new, owned certificate.
        certs.push(unsafe { openssl::x509::X509::from_ptr(x) });
        let took = p as usize - rest.as_ptr() as usize;
        if took == 0 {
            break;
        }
        used += took;
    }
    (certs, used)
}

/// Whether `cert` is valid for `name` as OpenSSL's peer verification
/// checks it (`X509_check_ip_asc` for an IP literal, else
/// `X509_check_host` with the default flags our client uses: the
/// subjectAltName entries, or the subject CN when the certificate has no
/// DNS name; `*.` wildcards cover one label).
pub fn certificate_covers(cert: &openssl::x509::X509Ref, name: &str) -> bool {
    let Ok(c_name) = std::ffi::CString::new(name) else { return false };
    // SAFETY: cert is a live certificate (the calls only read it, the
    // pointer is *mut for historical reasons); c_name is NUL-terminated and
    // outlives the call; no peername is requested.
    let r = unsafe {
        if name.parse::<std::net::IpAddr>().is_ok() {
            openssl_sys::X509_check_ip_asc(cert.as_ptr(), c_name.as_ptr(), 0)
        } else {
            openssl_sys::X509_check_host(cert.as_ptr(), c_name.as_ptr(), name.len(), 0, core::ptr::null_mut())
        }
    };
    if r < 0 {
        let _ = ErrorStack::get();
    }
    r == 1
}

/// Overwrites `bytes` with zeros in a way the compiler may not elide.
pub fn cleanse(bytes: &mut [u8]) {
    // SAFETY: the pointer and length come from a live mutable slice.
    unsafe { OPENSSL_cleanse(bytes.as_mut_ptr().cast(), bytes.len()) }
}

#[cfg(test)]
mod tests {
    use super::host_name_of;

    fn ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, name) in entries {
            body.push(*kind);
            body.extend_from_slice(&(name.len() as u16).to_be_bytes());
            body.extend_from_slice(name);
        }
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn server_name_extension_is_parsed_strictly() {
        assert_eq!(host_name_of(&ext(&[(0, b"b.test")])), Some("b.test"));
        assert_eq!(host_name_of(&ext(&[(7, b"x"), (0, b"c.test")])), Some("c.test"));
        assert_eq!(host_name_of(&ext(&[(7, b"x")])), None);
        assert_eq!(host_name_of(&ext(&[(0, b"")])), None);
        assert_eq!(host_name_of(&ext(&[(0, b"a\0b")])), None);
        assert_eq!(host_name_of(&ext(&[(0, b"a/b")])), None);
        let mut short = ext(&[(0, b"b.test")]);
        short.pop();
        assert_eq!(host_name_of(&short), None);
        assert_eq!(host_name_of(&[0]), None);
        assert_eq!(host_name_of(&[]), None);
        assert_eq!(host_name_of(&[0, 9, 0, 0, 20, b'a']), None);
    }
}
