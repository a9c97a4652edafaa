//! The few OpenSSL calls the `openssl` / `openssl-sys` crates do not wrap.

use foreign_types::{ForeignType, ForeignTypeRef};
use libc::{c_int, c_void, size_t};
use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslContextRef};

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

/// Overwrites `bytes` with zeros in a way the compiler may not elide.
pub fn cleanse(bytes: &mut [u8]) {
    // SAFETY: the pointer and length come from a live mutable slice.
    unsafe { OPENSSL_cleanse(bytes.as_mut_ptr().cast(), bytes.len()) }
}
