//! The panic boundary: no Rust panic unwinds into C.
//!
//! Every function that C calls -- the exported `fio_tls_*` functions, the rw
//! hooks and protocol callbacks handed to facil.io, the tasks it defers and
//! the callbacks OpenSSL runs -- wraps its body in [`ffi_boundary!`]:
//!
//! ```ignore
//! pub unsafe extern "C" fn fio_tls_new(...) -> *mut fio_tls_s {
//!     ffi_boundary!("fio_tls_new", { ...plain Rust... })
//! }
//! ```
//!
//! A panic in the body is caught, logged as one `ERROR: fio_tls: internal
//! error in <what>` line, and the function returns the value that its
//! return *type* gives for a failure ([`OnPanic`]): nothing for `()`, NULL
//! for pointers, `-1` with `errno = ECONNABORTED` for `ssize_t` (the rw
//! hooks: facil.io's `fio_read` closes a connection on any errno other than
//! EAGAIN / EWOULDBLOCK / ENOTCONN / EINTR, and `fio_flush` stops retrying,
//! where a stale EAGAIN left in errno would make it poll the socket again
//! and again). A body whose failure needs more than a value (the rw hooks
//! also mark their connection broken) names it:
//! `ffi_boundary!("write hook", on_panic = conn.fail_after_panic(), { ... })`.
//!
//! The library is built with `panic = "unwind"` (Cargo.toml): with
//! `panic = "abort"` nothing could be caught and the host would die.

use libc::{c_int, ssize_t};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a function returns to C when its body panicked.
pub trait OnPanic {
    fn on_panic() -> Self;
}

impl OnPanic for () {
    fn on_panic() {}
}

impl<T> OnPanic for *mut T {
    fn on_panic() -> Self {
        core::ptr::null_mut()
    }
}

impl<T> OnPanic for *const T {
    fn on_panic() -> Self {
        core::ptr::null()
    }
}

/// `read(2)`-style results (the rw hooks): -1 with an errno that makes
/// facil.io give up on the connection instead of retrying it.
impl OnPanic for ssize_t {
    fn on_panic() -> Self {
        set_errno(libc::ECONNABORTED);
        -1
    }
}

/// Counts (`uintptr_t`, facil.io 0.7.x's `fio_tls_alpn_count`): 0.
impl OnPanic for usize {
    fn on_panic() -> Self {
        0
    }
}

/// OpenSSL callbacks returning `int`: -1 is their "error".
impl OnPanic for c_int {
    fn on_panic() -> Self {
        -1
    }
}

/// facil.io's `on_shutdown` (`uint8_t`): 0 lets the shutdown go ahead.
impl OnPanic for u8 {
    fn on_panic() -> Self {
        0
    }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(code: c_int) {
    // SAFETY: errno is thread-local; __errno_location always returns the
    // calling thread's.
    unsafe { *libc::__errno_location() = code };
}

/// The calling thread's `errno`.
pub fn errno() -> c_int {
    // SAFETY: as in set_errno.
    unsafe { *libc::__errno_location() }
}

/// Runs `body`; after a panic logs one ERROR line naming `what` and returns
/// `on_panic()`. Use it through [`ffi_boundary!`].
#[doc(hidden)]
pub fn run<R>(what: &str, on_panic: impl FnOnce() -> R, body: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    let body = || {
        test_support::maybe_panic(what);
        body()
    };
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            crate::log::log_error!("internal error in {what}; the operation was abandoned");
            on_panic()
        }
    }
}

/// Wraps the body of a function called from C: see the module doc.
///
/// - `ffi_boundary!(what, { body })`: after a panic the function returns
///   [`OnPanic::on_panic`] of its return type.
/// - `ffi_boundary!(what, on_panic = expr, { body })`: after a panic `expr`
///   is evaluated and returned instead.
macro_rules! ffi_boundary {
    ($what:expr, on_panic = $fallback:expr, $body:block) => {
        $crate::ffi::boundary::run($what, || $fallback, || $body)
    };
    ($what:expr, $body:block) => {
        $crate::ffi::boundary::run($what, $crate::ffi::boundary::OnPanic::on_panic, || $body)
    };
}
pub(crate) use ffi_boundary;

/// Unit tests make a chosen boundary panic, to check what C gets back.
#[cfg(test)]
pub mod test_support {
    use std::cell::RefCell;

    thread_local! {
        static PANIC_IN: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// The next boundary named `what` entered on this thread panics.
    pub fn panic_next(what: &str) {
        PANIC_IN.with(|p| *p.borrow_mut() = Some(what.to_string()));
    }

    pub(super) fn maybe_panic(what: &str) {
        let hit = PANIC_IN.with(|p| {
            let mut p = p.borrow_mut();
            if p.as_deref() == Some(what) {
                *p = None;
                true
            } else {
                false
            }
        });
        if hit {
            panic!("test: injected panic in {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn read_like(panic: bool) -> ssize_t {
        ffi_boundary!("read-like test function", {
            if panic {
                panic!("test panic");
            }
            5
        })
    }

    extern "C" fn pointer_like() -> *mut u32 {
        ffi_boundary!("pointer-like test function", {
            test_support::panic_next("nested");
            ffi_boundary!("nested", {});
            Box::into_raw(Box::new(7u32))
        })
    }

    #[test]
    fn ssize_t_fallback_is_minus_one_with_a_closing_errno() {
        // A stale EAGAIN must not survive: facil.io would retry forever.
        set_errno(libc::EAGAIN);
        assert_eq!(read_like(true), -1);
        assert_eq!(errno(), libc::ECONNABORTED);
        set_errno(libc::EAGAIN);
        assert_eq!(read_like(false), 5);
        assert_eq!(errno(), libc::EAGAIN, "no panic: errno untouched");
    }

    #[test]
    fn a_nested_panic_stays_inside_its_own_boundary() {
        let p = pointer_like();
        assert!(!p.is_null());
        // SAFETY: made by Box::into_raw above.
        assert_eq!(*unsafe { Box::from_raw(p) }, 7);
    }

    #[test]
    fn explicit_fallback_runs_only_after_a_panic() {
        let mut ran = 0;
        let r = ffi_boundary!("explicit", on_panic = { ran += 1; 9 }, { 1 });
        assert_eq!((r, ran), (1, 0));
        test_support::panic_next("explicit");
        let r = ffi_boundary!("explicit", on_panic = { ran += 1; 9 }, { 1 });
        assert_eq!((r, ran), (9, 1));
        assert!(<*mut u8 as OnPanic>::on_panic().is_null());
        assert_eq!(<u8 as OnPanic>::on_panic(), 0);
        assert_eq!(<c_int as OnPanic>::on_panic(), -1);
    }
}
