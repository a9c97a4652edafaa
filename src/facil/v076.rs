//! facil.io 0.7.x's host ABI (the release API, checked against tag 0.7.6),
//! beside 0.7.0.beta4's in [`super::sys`] and [`super::pubsub`].
//!
//! What this library touches of the host, compared field by field and
//! signature by signature between beta4's and 0.7.6's `lib/facil/fio.h`:
//!
//! | item | beta4 | 0.7.6 |
//! |---|---|---|
//! | `fio_rw_hook_s` | read, write, flush, before_close, cleanup | the same five, same types and order |
//! | `fio_protocol_s` | on_data, on_ready, on_shutdown (`uint8_t`), on_close, ping, `size_t rsv` | the same |
//! | `fio_rw_hook_set(uuid, hooks, udata)` | `int`; no `cleanup` on failure | `int`; the header says `cleanup` runs on failure too, the code does not (its test is inverted) |
//! | `fio_attach`, `fio_defer`, `fio_force_event`, `fio_close`, `fio_timeout_set/get`, `fio_is_closed`, `fio_is_valid` | | same signatures |
//! | `fio_run_every(ms, repetitions, task, arg, on_finish)` | | same |
//! | `fio_protocol_try_lock` / `_unlock`, `FIO_PR_LOCK_STATE` = 2 | | same |
//! | `enum fio_io_event` (ON_DATA 0, ON_READY 1) | | same, plus ON_TIMEOUT 2 |
//! | `callback_type_e` of `fio_state_callback_add` (ON_SHUTDOWN = 8) | | same |
//! | `FIO_LOG_LEVEL` | `extern int` | `int` defined in fio.c (the header declares it weak) |
//! | `fio_str_info_s`, `fio_msg_s`, `subscribe_args_s`, `fio_publish_args_s` (by value), `fio_subscribe`, `fio_publish`, `fio_is_running` | | same layouts |
//! | uuid to fd | `uuid >> 8` | `uuid >> 8` |
//!
//! So the weak host tables of [`super::sys`] and [`super::pubsub`] serve
//! both releases unchanged (re-exported below under this module's name),
//! and the hooks tolerate both behaviours of a failed `fio_rw_hook_set`.
//! What differs is the TLS API itself: facil.io 0.7.x's `fio.c` calls
//! `fio_tls_alpn_count`, `fio_tls_dup`, `fio_tls_accept` /
//! `fio_tls_connect` and `fio_tls_destroy` for the `.tls` of `fio_listen`
//! and `fio_connect`, and an ALPN protocol carries a TLS-level udata and a
//! cleanup callback: [`Alpn`].

pub use super::pubsub::{FioMsg, FioStrInfo};
pub use super::sys::{
    uuid2fd, FioProtocol, FioRwHooks, FIO_CALL_ON_SHUTDOWN, FIO_EVENT_ON_DATA, FIO_EVENT_ON_READY, FIO_PR_LOCK_STATE,
};

use super::hooks::HandOver;
use crate::ffi::boundary::ffi_boundary;
use libc::c_void;
use std::sync::Arc;

/// `on_selected(uuid, udata_connection, udata_tls)` of `fio_tls_alpn_add`.
pub type OnSelected = unsafe extern "C" fn(uuid: isize, udata_connection: *mut c_void, udata_tls: *mut c_void);
/// `on_cleanup(udata_tls)` of `fio_tls_alpn_add`.
pub type OnCleanup = unsafe extern "C" fn(udata_tls: *mut c_void);

/// One `fio_tls_alpn_add` registration. Shared (by `Arc`) by the object's
/// settings and every connection started while it was registered; its
/// `on_cleanup` runs when the last of them lets go (see [`Registration`]).
pub struct Registration {
    on_selected: Option<OnSelected>,
    udata_tls: *mut c_void,
    on_cleanup: Option<OnCleanup>,
}

// SAFETY: udata_tls is never dereferenced here, only passed back to the
// application's callbacks; the application owns its thread-safety.
unsafe impl Send for Registration {}
unsafe impl Sync for Registration {}

impl Registration {
    pub fn new(on_selected: Option<OnSelected>, udata_tls: *mut c_void, on_cleanup: Option<OnCleanup>) -> Self {
        Registration { on_selected, udata_tls, on_cleanup }
    }
}

/// `on_cleanup(udata_tls)` exactly once, when nothing can call
/// `on_selected` any more: the object was destroyed (its reference count
/// reached 0) or the name was registered again, *and* every connection
/// started with this registration has ended. It runs on the thread that
/// lets go last: the caller of `fio_tls_destroy` or `fio_tls_alpn_add`, or
/// a facil.io thread closing the last such connection (inside its rw hook
/// `cleanup`, where facil.io asks not to call functions that take the
/// socket lock, such as `fio_write` or `fio_close` on that connection).
impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(cleanup) = self.on_cleanup {
            let udata = self.udata_tls;
            // SAFETY: the application's callback with its own pointer.
            ffi_boundary!("ALPN on_cleanup", { unsafe { cleanup(udata) } })
        }
    }
}

/// The handler of a protocol in the 0.7.x build.
pub type Alpn = Arc<Registration>;

/// 0.7.x: `on_selected(uuid, udata_connection, udata_tls)`, with `uuid`
/// -1 when the connection closed before it could be handed over (what
/// facil.io 0.7.6's own backend passes for a connection that is gone).
impl HandOver for Alpn {
    unsafe fn hand_over(&self, uuid: isize, closed: bool, udata: *mut c_void) {
        if let Some(on_selected) = self.on_selected {
            on_selected(if closed { -1 } else { uuid }, udata, self.udata_tls)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    static SELECTED: Mutex<Vec<(isize, usize, usize)>> = Mutex::new(Vec::new());
    static CLEANED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn on_selected(uuid: isize, conn: *mut c_void, tls: *mut c_void) {
        SELECTED.lock().unwrap().push((uuid, conn as usize, tls as usize));
    }
    unsafe extern "C" fn on_cleanup(tls: *mut c_void) {
        assert_eq!(tls as usize, 0x7150);
        CLEANED.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn hand_over_passes_both_udata_and_minus_one_when_closed_and_cleans_up_once() {
        let alpn: Alpn = Arc::new(Registration::new(Some(on_selected), 0x7150 as *mut c_void, Some(on_cleanup)));
        let held_by_a_connection = alpn.clone();
        // SAFETY: our own test callbacks.
        unsafe {
            alpn.hand_over(0x500, false, 0xc0 as *mut c_void);
            alpn.hand_over(0x600, true, 0xc1 as *mut c_void);
        }
        assert_eq!(*SELECTED.lock().unwrap(), vec![(0x500, 0xc0, 0x7150), (-1, 0xc1, 0x7150)]);
        drop(alpn);
        assert_eq!(CLEANED.load(Ordering::SeqCst), 0, "a connection still holds the registration");
        drop(held_by_a_connection);
        assert_eq!(CLEANED.load(Ordering::SeqCst), 1);
    }
}
