//! The few OpenSSL calls the `openssl` / `openssl-sys` crates do not wrap.

use libc::{c_int, c_void, size_t};

extern "C" {
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> c_int;
    fn OPENSSL_cleanse(ptr: *mut c_void, len: size_t);
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

/// Overwrites `bytes` with zeros in a way the compiler may not elide.
pub fn cleanse(bytes: &mut [u8]) {
    // SAFETY: the pointer and length come from a live mutable slice.
    unsafe { OPENSSL_cleanse(bytes.as_mut_ptr().cast(), bytes.len()) }
}
