//! The slice of facil.io 0.7.0.beta4's ABI that this library touches.
//!
//! The struct layouts mirror `lib/facil/fio.h` of tag 0.7.0.beta4 field for
//! field. The host functions are referenced as **weak** symbols through a
//! small table emitted with `global_asm!`: when facil.io is linked (statically
//! or as a shared object) each slot holds the function's address; when it is
//! not (Rust unit tests, a program that never links facil.io) the slot is
//! NULL and the wrappers below report "no host" instead of failing to link.

use libc::{c_int, c_void, size_t, ssize_t};

/// `fio_protocol_s` (fio.h). The host owns `rsv`; everything else is ours.
#[repr(C)]
pub struct FioProtocol {
    pub on_data: Option<unsafe extern "C" fn(uuid: isize, protocol: *mut FioProtocol)>,
    pub on_ready: Option<unsafe extern "C" fn(uuid: isize, protocol: *mut FioProtocol)>,
    pub on_shutdown: Option<unsafe extern "C" fn(uuid: isize, protocol: *mut FioProtocol) -> u8>,
    pub on_close: Option<unsafe extern "C" fn(uuid: isize, protocol: *mut FioProtocol)>,
    pub ping: Option<unsafe extern "C" fn(uuid: isize, protocol: *mut FioProtocol)>,
    pub rsv: size_t,
}

/// `fio_rw_hook_s` (fio.h): read, write, flush, before_close, cleanup.
#[repr(C)]
pub struct FioRwHooks {
    pub read: Option<unsafe extern "C" fn(isize, *mut c_void, *mut c_void, size_t) -> ssize_t>,
    pub write: Option<unsafe extern "C" fn(isize, *mut c_void, *const c_void, size_t) -> ssize_t>,
    pub flush: Option<unsafe extern "C" fn(isize, *mut c_void) -> ssize_t>,
    pub before_close: Option<unsafe extern "C" fn(isize, *mut c_void) -> ssize_t>,
    pub cleanup: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// `FIO_PR_LOCK_STATE` of `enum fio_protocol_lock_e` (fio.h): the lock that
/// promises to read static protocol data only; no host task takes it.
pub const FIO_PR_LOCK_STATE: c_int = 2;

/// `FIO_CALL_ON_SHUTDOWN` of `callback_type_e` (fio.h; the same in 0.7.6).
pub const FIO_CALL_ON_SHUTDOWN: c_int = 8;

/// `enum fio_io_event` (fio.h).
pub const FIO_EVENT_ON_DATA: c_int = 0;
pub const FIO_EVENT_ON_READY: c_int = 1;

/// `fio_uuid2fd` is a macro in fio.h: the descriptor is the uuid shifted by 8.
pub fn uuid2fd(uuid: isize) -> c_int {
    ((uuid as usize) >> 8) as c_int
}

/// Addresses of the host symbols we use; NULL where the host is absent.
#[repr(C)]
struct HostTable {
    rw_hook_set: Option<unsafe extern "C" fn(isize, *mut FioRwHooks, *mut c_void) -> c_int>,
    attach: Option<unsafe extern "C" fn(isize, *mut FioProtocol)>,
    defer: Option<
        unsafe extern "C" fn(Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>, *mut c_void, *mut c_void) -> c_int,
    >,
    force_event: Option<unsafe extern "C" fn(isize, c_int)>,
    close: Option<unsafe extern "C" fn(isize)>,
    timeout_set: Option<unsafe extern "C" fn(isize, u8)>,
    timeout_get: Option<unsafe extern "C" fn(isize) -> u8>,
    is_closed: Option<unsafe extern "C" fn(isize) -> c_int>,
    is_valid: Option<unsafe extern "C" fn(isize) -> c_int>,
    run_every: Option<
        unsafe extern "C" fn(
            size_t,
            size_t,
            Option<unsafe extern "C" fn(*mut c_void)>,
            *mut c_void,
            Option<unsafe extern "C" fn(*mut c_void)>,
        ) -> c_int,
    >,
    log_level: *const c_int,
    protocol_try_lock: Option<unsafe extern "C" fn(isize, c_int) -> *mut FioProtocol>,
    protocol_unlock: Option<unsafe extern "C" fn(*mut FioProtocol, c_int)>,
    is_worker: Option<unsafe extern "C" fn() -> c_int>,
    state_callback_add: Option<unsafe extern "C" fn(c_int, Option<unsafe extern "C" fn(*mut c_void)>, *mut c_void)>,
    /// Only whether it exists: facil.io has it from 0.7.0.beta7 on, the
    /// release whose TLS API the `api07` build implements.
    local_addr: Option<unsafe extern "C" fn()>,
}

// Weak references: a missing definition resolves to 0 instead of a link error.
// The table is hidden, so it never leaves libfio_tls.so's export list.
core::arch::global_asm!(
    ".weak fio_rw_hook_set",
    ".weak fio_attach",
    ".weak fio_defer",
    ".weak fio_force_event",
    ".weak fio_close",
    ".weak fio_timeout_set",
    ".weak fio_timeout_get",
    ".weak fio_is_closed",
    ".weak fio_is_valid",
    ".weak fio_run_every",
    ".weak FIO_LOG_LEVEL",
    ".weak fio_protocol_try_lock",
    ".weak fio_protocol_unlock",
    ".weak fio_is_worker",
    ".weak fio_state_callback_add",
    ".weak fio_local_addr",
    ".pushsection .data.rel.ro.fio_tls_host_table,\"aw\"",
    ".balign 8",
    ".globl fio_tls_private_host_table",
    ".hidden fio_tls_private_host_table",
    "fio_tls_private_host_table:",
    ".8byte fio_rw_hook_set",
    ".8byte fio_attach",
    ".8byte fio_defer",
    ".8byte fio_force_event",
    ".8byte fio_close",
    ".8byte fio_timeout_set",
    ".8byte fio_timeout_get",
    ".8byte fio_is_closed",
    ".8byte fio_is_valid",
    ".8byte fio_run_every",
    ".8byte FIO_LOG_LEVEL",
    ".8byte fio_protocol_try_lock",
    ".8byte fio_protocol_unlock",
    ".8byte fio_is_worker",
    ".8byte fio_state_callback_add",
    ".8byte fio_local_addr",
    ".popsection",
);

extern "C" {
    static fio_tls_private_host_table: HostTable;
}

fn host() -> &'static HostTable {
    // SAFETY: the table is a read-only (after relocation) static defined above.
    unsafe { &*core::ptr::addr_of!(fio_tls_private_host_table) }
}

/// True when facil.io is linked into the process.
pub fn host_present() -> bool {
    host().rw_hook_set.is_some() && host().attach.is_some()
}

/// facil.io's `FIO_LOG_LEVEL`, or `None` when facil.io is not linked.
pub fn log_level() -> Option<c_int> {
    let p = host().log_level;
    if p.is_null() {
        None
    } else {
        // SAFETY: p is the address of facil.io's exported `int FIO_LOG_LEVEL`.
        Some(unsafe { core::ptr::read_volatile(p) })
    }
}

/// The TLS API of the facil.io in the process: `Some(true)` for a release
/// API (0.7.0.beta7 to 0.7.6: it has `fio_local_addr`), `Some(false)` for
/// the 0.7.0.beta4 API (and beta5, beta6), `None` without facil.io.
pub fn host_has_release_api() -> Option<bool> {
    host_present().then(|| host().local_addr.is_some())
}

/// `fio_is_worker`: true in a worker process once facil.io runs, and in
/// the one process of a `workers == 1` application; false in the root
/// process of a multi-worker application (the one that forks) and without
/// facil.io.
pub fn is_worker() -> bool {
    // SAFETY: facil.io's function takes nothing and reads its state.
    host().is_worker.is_some_and(|f| unsafe { f() } != 0)
}

/// Error returned when a host function is called without facil.io linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHost;

/// `fio_rw_hook_set`: 0 on success, -1 when the uuid is already closed.
///
/// # Safety
/// `hooks` must stay valid for the life of the process (the host keeps it and
/// fills NULL slots in place); `udata` must stay valid until `cleanup`.
pub unsafe fn rw_hook_set(uuid: isize, hooks: *mut FioRwHooks, udata: *mut c_void) -> Result<c_int, NoHost> {
    host().rw_hook_set.map(|f| f(uuid, hooks, udata)).ok_or(NoHost)
}

/// `fio_attach`: replaces the uuid's protocol (the old one's `on_close` is
/// scheduled by the host).
///
/// # Safety
/// `protocol` must stay valid until the host calls its `on_close`.
pub unsafe fn attach(uuid: isize, protocol: *mut FioProtocol) -> Result<(), NoHost> {
    host().attach.map(|f| f(uuid, protocol)).ok_or(NoHost)
}

/// `fio_defer`: schedules `task(a, b)` on a facil.io worker thread.
///
/// # Safety
/// `a` and `b` must stay valid until `task` runs.
pub unsafe fn defer(task: unsafe extern "C" fn(*mut c_void, *mut c_void), a: *mut c_void, b: *mut c_void) -> Result<c_int, NoHost> {
    host().defer.map(|f| f(Some(task), a, b)).ok_or(NoHost)
}

/// `fio_force_event`: schedules an event for the uuid; takes no socket lock,
/// so it is safe inside a read/write hook.
pub fn force_event(uuid: isize, event: c_int) {
    if let Some(f) = host().force_event {
        // SAFETY: plain host call; an invalid uuid is ignored by the host.
        unsafe { f(uuid, event) }
    }
}

/// `fio_close`: graceful close (our `before_close` hook gets to send
/// close_notify). Must not be called from inside a read/write hook.
pub fn close(uuid: isize) {
    if let Some(f) = host().close {
        // SAFETY: plain host call; an invalid uuid is ignored by the host.
        unsafe { f(uuid) }
    }
}

/// `fio_timeout_set` (seconds, 0..=255; 0 means the host default).
pub fn timeout_set(uuid: isize, seconds: u8) {
    if let Some(f) = host().timeout_set {
        // SAFETY: plain host call; the host validates the uuid.
        unsafe { f(uuid, seconds) }
    }
}

/// `fio_timeout_get` (seconds; 0 when unset). Only valid for a valid uuid.
pub fn timeout_get(uuid: isize) -> u8 {
    match (host().timeout_get, host().is_valid) {
        // SAFETY: timeout_get indexes the host's fd table, so check validity first.
        (Some(get), Some(valid)) => unsafe {
            if valid(uuid) != 0 {
                get(uuid)
            } else {
                0
            }
        },
        _ => 0,
    }
}

/// `fio_run_every(ms, 0, task, NULL, NULL)`: runs `task` every `ms`
/// milliseconds on a facil.io thread, for as long as the reactor runs.
pub fn run_every(ms: usize, task: unsafe extern "C" fn(*mut c_void)) -> Result<(), NoHost> {
    match host().run_every {
        // SAFETY: plain host call; the task ignores its argument.
        Some(f) => unsafe {
            f(ms, 0, Some(task), core::ptr::null_mut(), None);
        },
        None => return Err(NoHost),
    }
    Ok(())
}

/// `fio_state_callback_add(event, task, NULL)`: runs `task` when the
/// host reaches `event` (a `callback_type_e` value).
pub fn state_callback_add(event: c_int, task: unsafe extern "C" fn(*mut c_void)) -> Result<(), NoHost> {
    match host().state_callback_add {
        // SAFETY: plain host call; the task ignores its argument.
        Some(f) => unsafe { f(event, Some(task), core::ptr::null_mut()) },
        None => return Err(NoHost),
    }
    Ok(())
}

/// `fio_is_valid`: true while the uuid names the fd's current connection
/// (facil.io's reuse counter matches), even if it is closing.
pub fn is_valid(uuid: isize) -> bool {
    match host().is_valid {
        // SAFETY: plain host call.
        Some(f) => unsafe { f(uuid) != 0 },
        None => false,
    }
}

/// `fio_is_closed`: true when the uuid is invalid, closed or closing.
pub fn is_closed(uuid: isize) -> bool {
    match host().is_closed {
        // SAFETY: plain host call.
        Some(f) => unsafe { f(uuid) != 0 },
        None => true,
    }
}

/// Which protocol a uuid has right now, as seen by
/// `fio_protocol_try_lock(uuid, FIO_PR_LOCK_STATE)` (immediately unlocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentProtocol {
    /// The uuid's protocol is the given object.
    Is(*mut FioProtocol),
    /// No protocol, or the uuid is closed (`EBADF`).
    Gone,
    /// The host's protocol lock was busy (`EWOULDBLOCK`): ask again later.
    Busy,
}

/// The uuid's current protocol (see [`CurrentProtocol`]); `Gone` without a
/// host. Takes and releases the host's per-fd protocol spin lock, never the
/// socket lock, so it may be called from inside a protocol callback.
pub fn current_protocol(uuid: isize) -> CurrentProtocol {
    let (Some(lock), Some(unlock)) = (host().protocol_try_lock, host().protocol_unlock) else {
        return CurrentProtocol::Gone;
    };
    // SAFETY: plain host calls; the host validates the uuid, and we unlock
    // exactly what it locked.
    unsafe {
        *libc::__errno_location() = 0;
        let pr = lock(uuid, FIO_PR_LOCK_STATE);
        if pr.is_null() {
            return if *libc::__errno_location() == libc::EWOULDBLOCK {
                CurrentProtocol::Busy
            } else {
                CurrentProtocol::Gone
            };
        }
        unlock(pr, FIO_PR_LOCK_STATE);
        CurrentProtocol::Is(pr)
    }
}
