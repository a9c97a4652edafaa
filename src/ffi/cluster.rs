//! `fio_tls_reload`: re-check the watched files now, in every process of
//! the application.
//!
//! facil.io forks its workers after the application made its `fio_tls_s`
//! objects, so each process holds its own copy of each object (same handle,
//! see [`super::handle`]), and a change made in one process stays there. A
//! reload request therefore travels as a facil.io cluster message
//! ([`crate::facil::pubsub`]): the process that calls `fio_tls_reload`
//! publishes it, and every process subscribed -- each one that has objects,
//! since `fio_tls_new` subscribes and forked workers inherit the
//! subscription -- runs [`super::recheck_objects`] on its own copy, on one
//! of its facil.io threads.
//!
//! The message names the object by its handle *and* the process that made
//! it: an object made by one worker after the fork has a handle that may
//! name an unrelated object in another worker, which must not be touched.

use super::boundary::ffi_boundary;
use super::handle::Lookup;
use super::{fio_tls_s, object, recheck_objects, TlsObject, OBJECTS};
use crate::facil::pubsub::{self, FioMsg, RELOAD_FILTER};
use crate::log::{log_debug, log_warning};

/// The first bytes of every message (a message of our filter without them
/// comes from someone else using the same filter value).
const MAGIC: [u8; 4] = *b"FTR1";
/// MAGIC, sender pid (u32), handle (u64, 0: every object), maker pid (u32);
/// little-endian.
const MESSAGE_LEN: usize = 20;

/// What a reload message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    /// The process that called `fio_tls_reload` (for the DEBUG line).
    from: u32,
    /// The object's handle; 0 for every live object.
    handle: u64,
    /// The process that made the object (`TlsObject::born_in`); 0 with
    /// handle 0.
    born_in: u32,
}

impl Request {
    fn encode(&self) -> [u8; MESSAGE_LEN] {
        let mut m = [0u8; MESSAGE_LEN];
        m[..4].copy_from_slice(&MAGIC);
        m[4..8].copy_from_slice(&self.from.to_le_bytes());
        m[8..16].copy_from_slice(&self.handle.to_le_bytes());
        m[16..20].copy_from_slice(&self.born_in.to_le_bytes());
        m
    }

    fn decode(m: &[u8]) -> Option<Request> {
        if m.len() != MESSAGE_LEN || m[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().expect("4 bytes"));
        Some(Request {
            from: u32_at(4),
            handle: u64::from_le_bytes(m[8..16].try_into().expect("8 bytes")),
            born_in: u32_at(16),
        })
    }
}

/// Subscribes this process to reload messages (once; no-op without
/// facil.io's pub/sub). Called by `fio_tls_new`.
pub(super) fn listen() {
    let _ = pubsub::subscribe_once(on_message);
}

/// Runs a request on this process's objects.
fn run_here(r: &Request) {
    let me = std::process::id();
    if r.handle == 0 {
        log_debug!(
            "fio_tls_reload: process {me} re-checks the files of every fio_tls_s (asked by process {})",
            r.from
        );
        recheck(None);
        return;
    }
    match OBJECTS.get(r.handle as usize) {
        Lookup::Live(o) if o.born_in == r.born_in => {
            log_debug!(
                "fio_tls_reload: process {me} re-checks the files of fio_tls_s {:#x} (asked by process {})",
                r.handle,
                r.from
            );
            recheck(Some(&o));
        }
        // Made by another worker after the fork, or destroyed here since:
        // nothing of this process to re-check.
        _ => log_debug!(
            "fio_tls_reload: fio_tls_s {:#x} (made by process {}) is not in process {me}; nothing to re-check",
            r.handle,
            r.born_in
        ),
    }
}

/// [`recheck_objects`], seen by the unit tests.
fn recheck(target: Option<&TlsObject>) {
    #[cfg(test)]
    test_support::record(target);
    recheck_objects(target);
}

/// The subscription callback: a reload message reached this process.
unsafe extern "C" fn on_message(msg: *mut FioMsg) {
    ffi_boundary!("fio_tls_reload's cluster message", {
        // SAFETY: facil.io's message, for the duration of this call.
        let Some((filter, bytes)) = (unsafe { pubsub::message_bytes(msg) }) else { return };
        if filter != RELOAD_FILTER {
            return;
        }
        match Request::decode(bytes) {
            Some(r) => run_here(&r),
            None => log_warning!(
                "a facil.io cluster message of filter {RELOAD_FILTER:#x} ({} bytes) is not a fio_tls_reload \
                 request: ignored (this library reserves that filter value)",
                bytes.len()
            ),
        }
    })
}

/// Extension (not in facil.io): re-checks the watched files of `tls` now --
/// the key and certificate files of each of its certificates and the CA
/// file of `fio_tls_trust` -- in every process of the application. `tls`
/// NULL: of every live `fio_tls_s`.
///
/// Each process applies what changed as its periodic check
/// (`FIO_TLS_RELOAD_SECONDS`) would: a changed pair that loads and matches
/// serves new handshakes from then on, connections already established
/// keep theirs, and an unusable change keeps the old certificate with a
/// WARNING. Nothing is re-read when nothing changed. Use it with watching
/// off (`FIO_TLS_RELOAD_SECONDS=0`), or to apply a renewal at once (from
/// an admin route, a certbot deploy hook that signals the server, ...).
///
/// Which processes: while facil.io runs (from `fio_start` until its
/// shutdown begins) the request goes out as a facil.io cluster message to
/// the root process and every worker, the caller included, and each one
/// re-checks its own copy on one of its facil.io threads shortly after; the
/// call itself returns at once, without reading any file. The message is a
/// pub/sub *filter* message (filter `0x46544C52`, reserved by this
/// library): pattern subscriptions and pub/sub engines (Redis) never see
/// it. A handle names the same object in every process when it was made
/// before `fio_start` forked the workers; one made by a worker after that
/// is re-checked in that worker only. Before `fio_start`, after facil.io
/// stopped, without facil.io, or with a facil.io built without pub/sub,
/// the calling process re-checks its objects before the call returns.
///
/// Errors: a destroyed or never-made `tls` logs one ERROR line and nothing
/// is re-checked. Problems with the files are logged by each process that
/// finds them (WARNING, the old certificate stays).
///
/// Thread-safety: callable from any thread, facil.io request handlers,
/// deferred tasks and timers included. Not async-signal-safe (it allocates
/// and takes locks): from a signal handler, set a flag and call
/// `fio_tls_reload` from a facil.io task (README, "Renewing certificates").
///
/// `tls` may be any value: anything but NULL or a live handle from
/// `fio_tls_new` (destroyed, never made) is reported, never acted on (see
/// `fio_tls_destroy`).
#[no_mangle]
pub extern "C" fn fio_tls_reload(tls: *mut fio_tls_s) {
    const API: &str = "fio_tls_reload";
    ffi_boundary!(API, {
        let from = std::process::id();
        let request = if tls.is_null() {
            Request { from, handle: 0, born_in: 0 }
        } else {
            let Some(o) = object(API, tls) else { return };
            Request { from, handle: tls as u64, born_in: o.born_in }
        };
        if pubsub::publish_to_cluster(&request.encode()).is_err() {
            // Not running (or no pub/sub): this process is the application.
            run_here(&request);
        }
    })
}

#[cfg(test)]
pub(super) mod test_support {
    use super::TlsObject;
    use std::cell::RefCell;

    thread_local! {
        /// Targets of the re-checks run on this thread (object address,
        /// None for every object).
        static SEEN: RefCell<Vec<Option<usize>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record(target: Option<&TlsObject>) {
        SEEN.with(|s| s.borrow_mut().push(target.map(|o| o as *const TlsObject as usize)));
    }

    /// The re-checks run on this thread since the last call (the tests
    /// that read them use the beta4 API).
    #[cfg_attr(feature = "api07", allow(dead_code))]
    pub fn take() -> Vec<Option<usize>> {
        SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

#[cfg(all(test, not(feature = "api07")))]
mod tests {
    use super::*;
    use crate::facil::pubsub::FioStrInfo;
    use crate::ffi::{fio_tls_destroy, fio_tls_new};

    fn new_anon() -> *mut fio_tls_s {
        // SAFETY: NULL strings.
        let tls = unsafe { fio_tls_new(core::ptr::null(), core::ptr::null(), core::ptr::null()) };
        assert!(!tls.is_null());
        tls
    }

    fn address(tls: *mut fio_tls_s) -> usize {
        match OBJECTS.get(tls as usize) {
            Lookup::Live(o) => &*o as *const TlsObject as usize,
            _ => panic!("not live"),
        }
    }

    fn deliver(filter: i32, bytes: &[u8]) {
        let mut msg = FioMsg {
            filter,
            channel: FioStrInfo { capa: 0, len: 0, data: core::ptr::null_mut() },
            msg: FioStrInfo { capa: 0, len: bytes.len(), data: bytes.as_ptr() as *mut _ },
            udata1: core::ptr::null_mut(),
            udata2: core::ptr::null_mut(),
            is_json: 0,
        };
        // SAFETY: a message laid out as facil.io's, valid for the call.
        unsafe { on_message(&mut msg) };
    }

    #[test]
    fn messages_round_trip_and_foreign_bytes_are_refused() {
        let r = Request { from: 7, handle: 0xF715_0000_1000_0010, born_in: 9 };
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[0] = b'X';
        assert_eq!(Request::decode(&bad), None);
        assert_eq!(Request::decode(&r.encode()[..19]), None);
        assert_eq!(Request::decode(b""), None);
    }

    #[test]
    fn without_facil_io_the_caller_rechecks_at_once() {
        test_support::take();
        let tls = new_anon();
        fio_tls_reload(core::ptr::null_mut());
        fio_tls_reload(tls);
        assert_eq!(test_support::take(), vec![None, Some(address(tls))]);
        fio_tls_destroy(tls);
        // a destroyed or made-up handle is reported, nothing re-checked
        fio_tls_reload(tls);
        fio_tls_reload(0x1234 as *mut fio_tls_s);
        assert_eq!(test_support::take(), vec![]);
    }

    #[test]
    fn a_message_rechecks_the_object_it_names_only_if_made_by_the_same_process() {
        test_support::take();
        let tls = new_anon();
        let me = std::process::id();
        let ours = Request { from: me + 1, handle: tls as u64, born_in: me };
        deliver(RELOAD_FILTER, &ours.encode());
        assert_eq!(test_support::take(), vec![Some(address(tls))]);
        // the same handle made by another worker after the fork
        let theirs = Request { born_in: me + 1, ..ours };
        deliver(RELOAD_FILTER, &theirs.encode());
        // every object
        deliver(RELOAD_FILTER, &Request { from: me + 1, handle: 0, born_in: 0 }.encode());
        assert_eq!(test_support::take(), vec![None]);
        // not ours: another filter, foreign bytes, a destroyed object
        deliver(RELOAD_FILTER + 1, &ours.encode());
        deliver(RELOAD_FILTER, b"hello, world: not a reload request");
        fio_tls_destroy(tls);
        deliver(RELOAD_FILTER, &ours.encode());
        // SAFETY: NULL is what a confused host could pass.
        unsafe { on_message(core::ptr::null_mut()) };
        assert_eq!(test_support::take(), vec![]);
    }
}
