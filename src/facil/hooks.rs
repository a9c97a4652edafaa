//! TLS over facil.io's read/write hooks.
//!
//! A connection gets two things from [`start`]:
//! - the rw hooks, whose udata is an `Arc<HostConn>` released by `cleanup`;
//! - a *handshake protocol* attached to the uuid until the handshake ends.
//!   facil.io delivers data events only to a uuid that has a protocol, so
//!   this is what lets a handshake make progress without polling. Its
//!   `on_data` drives the handshake directly (it never reads application
//!   data);
//! - an entry in the deadline queue, swept by a per-process timer, which
//!   closes a connection whose handshake outlives the deadline even when the
//!   application replaced our protocol with its own.
//!
//! When the handshake finishes, a deferred task restores the uuid's timeout
//! and calls the ALPN-selected protocol callback, which normally attaches
//! the application's protocol (replacing ours; facil.io then calls our
//! `on_close`, which frees it). A data event is forced afterwards, so bytes
//! that arrived together with the client's Finished are not left waiting.
//! A client connection that closes before its handshake finished gets the
//! same task from `cleanup`, and its callback runs on the closed uuid (see
//! [`handover_task`]): this is what lets facil.io's `http_connect` run
//! `on_finish` after a failed handshake.
//!
//! Every function facil.io calls runs inside the panic boundary
//! ([`ffi_boundary!`]). After a panic in a hook the connection is marked
//! broken: that hook and every later one return -1 with `ECONNABORTED`
//! (facil.io's `fio_read` then closes the connection, and `fio_flush` stops
//! retrying), and a data event is forced so that a read comes to close it.
//!
//! Locking: every hook takes the connection's mutex, so the read hook
//! (called by facil.io without its socket lock) and write/flush (called
//! under it, from any thread) never drive the `SSL*` concurrently. Inside
//! the mutex we only call `fio_force_event`, which takes no facil.io lock.

use super::sys::{self, FioProtocol, FioRwHooks, FIO_EVENT_ON_DATA, FIO_EVENT_ON_READY};
use crate::ffi::boundary::{ffi_boundary, set_errno};
use crate::log::{self, log_debug, log_warning, Level};
use crate::tls::{Built, Connection, Handshake, Phase, ReadOutcome, Role};
use libc::{c_void, size_t, ssize_t};
use once_cell::sync::Lazy;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The callback type of `fio_tls_proto_add`.
pub type ProtocolCallback = unsafe extern "C" fn(uuid: isize, udata: *mut c_void);
/// A protocol's handler (facil.io 0.7.0.beta4's `fio_tls_proto_add`);
/// `None` when the application passed NULL.
#[cfg(not(feature = "api07"))]
pub type Handler = Option<ProtocolCallback>;
/// A protocol's handler (facil.io 0.7.x's `fio_tls_alpn_add`).
#[cfg(feature = "api07")]
pub type Handler = super::v076::Alpn;
/// What a connection keeps alive: contexts plus the protocol list.
pub type Snapshot = Built<Handler>;

/// What a protocol's handler does when a connection is handed to it.
pub trait HandOver {
    /// Runs the application's callback for `uuid` with the `udata` of
    /// `fio_tls_accept` / `fio_tls_connect`; `closed`: the connection
    /// closed before it could be handed over (a client whose handshake
    /// failed, see [`handover_task`]).
    ///
    /// # Safety
    /// Calls the application's function pointer.
    unsafe fn hand_over(&self, uuid: isize, closed: bool, udata: *mut c_void);
}

/// beta4: `callback(uuid, udata)`, also on a closed uuid.
impl HandOver for Option<ProtocolCallback> {
    unsafe fn hand_over(&self, uuid: isize, _closed: bool, udata: *mut c_void) {
        if let Some(callback) = self {
            callback(uuid, udata)
        }
    }
}

/// Default handshake deadline in seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: u8 = 10;

/// The handshake deadline: `FIO_TLS_HANDSHAKE_TIMEOUT` (whole seconds,
/// 1..=255) when set and valid, else [`DEFAULT_HANDSHAKE_TIMEOUT`].
pub fn handshake_timeout() -> u8 {
    static VALUE: Lazy<u8> = Lazy::new(|| match std::env::var("FIO_TLS_HANDSHAKE_TIMEOUT") {
        Ok(v) => match v.trim().parse::<u8>() {
            Ok(n) if n > 0 => n,
            _ => {
                crate::log::log_warning!(
                    "FIO_TLS_HANDSHAKE_TIMEOUT=\"{v}\" is not a number of seconds from 1 to 255; using {DEFAULT_HANDSHAKE_TIMEOUT}"
                );
                DEFAULT_HANDSHAKE_TIMEOUT
            }
        },
        Err(_) => DEFAULT_HANDSHAKE_TIMEOUT,
    });
    *VALUE
}

/// The application's udata: an opaque pointer we only pass back.
struct Udata(*mut c_void);
// SAFETY: we never dereference it; the application owns its thread-safety.
unsafe impl Send for Udata {}
unsafe impl Sync for Udata {}

/// Per-connection state shared by the hooks, the handshake protocol and
/// the hand-over task.
pub struct HostConn {
    uuid: isize,
    udata: Udata,
    snapshot: Arc<Snapshot>,
    tls: Mutex<Connection>,
    /// Set once the protocol callback has been scheduled.
    handed_over: AtomicBool,
    /// Set once the hand-over task has run (whether or not a callback took
    /// the connection).
    handover_done: AtomicBool,
    /// Set when we closed the uuid because the handshake deadline passed.
    deadline_hit: AtomicBool,
    /// Set when a hook panicked: the connection state may be half-changed,
    /// so every later hook fails and the connection is closed.
    broken: AtomicBool,
    /// The uuid's timeout before the handshake deadline replaced it.
    saved_timeout: u8,
    started: Instant,
}

impl HostConn {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock is caught at the boundary; the
        // connection state is still consistent enough to be closed.
        self.tls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the uuid because the handshake deadline passed; `cleanup`
    /// logs it.
    fn close_for_deadline(&self) {
        self.deadline_hit.store(true, Ordering::Release);
        sys::close(self.uuid);
    }

    /// What a read, write or flush hook returns after a panic, and on every
    /// call after one: -1 with `ECONNABORTED`. The first time, a data event
    /// is forced: the protocol's read then gets this error and facil.io
    /// closes the connection (a hook must not close it itself).
    fn fail_after_panic(&self) -> ssize_t {
        if !self.broken.swap(true, Ordering::AcqRel) {
            sys::force_event(self.uuid, FIO_EVENT_ON_DATA);
        }
        set_errno(libc::ECONNABORTED);
        -1
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
}

/// Addresses of connections whose rw hooks are installed, sharded to keep
/// threads apart.
///
/// facil.io 0.7.0.beta4 calls the read hook *without* its socket lock, so
/// another thread may close the uuid and run `cleanup` while a read is
/// still in progress. The read hook therefore takes its own reference from
/// here (and gives up if the connection is already gone), and `cleanup`
/// removes the connection before releasing the host's reference. So does
/// `before_close`, which `fio_force_close` also calls without the lock.
/// `write` and `flush` run under the socket lock, which `cleanup` cannot
/// overtake.
static LIVE: Lazy<Vec<Mutex<HashSet<usize>>>> = Lazy::new(|| (0..16).map(|_| Mutex::new(HashSet::new())).collect());

fn live_shard(addr: usize) -> MutexGuard<'static, HashSet<usize>> {
    // Allocations are 16-byte aligned: skip the always-zero bits.
    LIVE[(addr >> 4) % LIVE.len()].lock().unwrap_or_else(|p| p.into_inner())
}

/// A counted reference to the connection at `udata`, if it is still live.
unsafe fn live_conn(udata: *mut c_void, uuid: isize) -> Option<Arc<HostConn>> {
    let shard = live_shard(udata as usize);
    if !shard.contains(&(udata as usize)) {
        return None;
    }
    let conn = ManuallyDrop::new(Arc::from_raw(udata as *const HostConn));
    // The address may have been reused by another connection's state: the
    // uuid (which carries facil.io's reuse counter) tells them apart.
    (conn.uuid == uuid).then(|| Arc::clone(&conn))
}

/// Connections still in their handshake, oldest first. The deadline is the
/// same for all, so the queue is ordered by deadline too and a sweep only
/// looks at the expired front. Entries are weak: a connection that ended
/// is simply skipped.
type DeadlineQueue = VecDeque<(Instant, Weak<HostConn>)>;
static HANDSHAKES: Lazy<Mutex<DeadlineQueue>> = Lazy::new(|| Mutex::new(VecDeque::new()));
/// The process that installed the sweep timer (facil.io workers are forked
/// processes, each with its own reactor and timers).
static SWEEPER_PID: AtomicI32 = AtomicI32::new(0);
/// How often the deadline sweep runs, in milliseconds.
const SWEEP_INTERVAL_MS: usize = 250;

/// Enforces the handshake deadline whoever owns the uuid's protocol (an
/// application may replace our handshake protocol with its own, and then
/// facil.io sends our protocol no timeouts).
fn track_deadline(conn: &Arc<HostConn>) {
    // SAFETY: getpid(2) has no preconditions.
    let pid = unsafe { libc::getpid() };
    if SWEEPER_PID.swap(pid, Ordering::AcqRel) != pid {
        if sys::run_every(SWEEP_INTERVAL_MS, sweep_deadlines).is_err() {
            SWEEPER_PID.store(0, Ordering::Release);
        }
        // facil.io 0.7.x: connections waiting for their FIN close before
        // facil.io's shutdown looks at them (see close_waiting)
        #[cfg(feature = "api07")]
        let _ = sys::state_callback_add(super::v076::FIO_CALL_ON_SHUTDOWN, close_waiting_at_shutdown);
        // this process's first TLS connection: its tickets follow the key
        // file as it is now (the sweep then checks it on schedule)
        super::ticket_watch::tick();
    }
    let deadline = conn.started + Duration::from_secs(handshake_timeout() as u64);
    HANDSHAKES.lock().unwrap_or_else(|p| p.into_inner()).push_back((deadline, Arc::downgrade(conn)));
}

unsafe extern "C" fn sweep_deadlines(_arg: *mut c_void) {
    ffi_boundary!("handshake deadline sweep", {
        super::ticket_watch::tick();
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut queue = HANDSHAKES.lock().unwrap_or_else(|p| p.into_inner());
            while queue.front().is_some_and(|(deadline, _)| *deadline <= now) {
                if let Some(conn) = queue.pop_front().and_then(|(_, weak)| weak.upgrade()) {
                    expired.push(conn);
                }
            }
        }
        for conn in expired {
            let handshaking = conn.lock().phase() == Phase::Handshaking;
            if handshaking {
                conn.close_for_deadline();
            }
        }
        #[cfg(feature = "api07")]
        close_waiting(now, !super::pubsub::running());
    });
}

/// Our handshake-time protocol; `proto` must stay the first field.
#[repr(C)]
struct HandshakeProtocol {
    proto: FioProtocol,
    conn: Arc<HostConn>,
}

/// The hook table handed to facil.io: fully populated (the host fills NULL
/// slots in place) and alive for the whole process.
static mut HOOKS: FioRwHooks = FioRwHooks {
    read: Some(hook_read),
    write: Some(hook_write),
    flush: Some(hook_flush),
    before_close: Some(hook_before_close),
    cleanup: Some(hook_cleanup),
};

/// Why [`start`] did not start TLS.
#[derive(Debug)]
pub enum StartError {
    /// A caller's mistake or a setup problem (worth an ERROR line).
    Refused(String),
    /// The connection was already closing when TLS could start: a peer that
    /// hung up right after connecting, which is routine for a server.
    Closing(String),
}

/// Starts TLS on `uuid`: sets the rw hooks, attaches the handshake protocol
/// and schedules the first handshake step. On error nothing is left set.
pub fn start(uuid: isize, snapshot: Arc<Snapshot>, role: Role, udata: *mut c_void) -> Result<(), StartError> {
    if !sys::host_present() {
        return Err(StartError::Refused("facil.io is not linked into this process".into()));
    }
    if sys::is_closed(uuid) {
        // Still the fd's current connection, but closing: facil.io is
        // already closing it (a peer's hang-up seen by its poller).
        if sys::is_valid(uuid) {
            return Err(StartError::Closing(format!("uuid {uuid:#x} was closing before TLS could start")));
        }
        return Err(StartError::Refused(format!("uuid {uuid:#x} is not an open connection")));
    }
    let (ctx, peer_name) = match role {
        Role::Server => (&snapshot.server, None),
        Role::Client => (&snapshot.client, snapshot.server_name.as_deref()),
    };
    let tls = Connection::new(ctx, role, sys::uuid2fd(uuid), peer_name).map_err(StartError::Refused)?;
    let conn = Arc::new(HostConn {
        uuid,
        udata: Udata(udata),
        snapshot: snapshot.clone(),
        tls: Mutex::new(tls),
        handed_over: AtomicBool::new(false),
        handover_done: AtomicBool::new(false),
        deadline_hit: AtomicBool::new(false),
        broken: AtomicBool::new(false),
        saved_timeout: sys::timeout_get(uuid),
        started: Instant::now(),
    });
    let hook_udata = Arc::into_raw(conn.clone()) as *mut c_void;
    live_shard(hook_udata as usize).insert(hook_udata as usize);
    // SAFETY: HOOKS lives for the process; hook_udata is released by
    // hook_cleanup, or below when the host refuses it (facil.io 0.7.0.beta4
    // does not call cleanup on failure).
    let set = unsafe { sys::rw_hook_set(uuid, core::ptr::addr_of_mut!(HOOKS), hook_udata) };
    if set != Ok(0) {
        // The host did not keep the pointer. facil.io 0.7.x documents that
        // a failed fio_rw_hook_set calls `cleanup` (0.7.6's code does not):
        // whichever of the two removes the entry releases the reference.
        if live_shard(hook_udata as usize).remove(&(hook_udata as usize)) {
            // SAFETY: made by Arc::into_raw above, released once.
            drop(unsafe { Arc::from_raw(hook_udata as *const HostConn) });
        }
        return Err(StartError::Closing(format!("uuid {uuid:#x} closed before TLS could start")));
    }
    let conn_for_deadline = conn.clone();
    let had_protocol = sys::current_protocol(uuid) != sys::CurrentProtocol::Gone;
    let proto = Box::new(HandshakeProtocol {
        proto: FioProtocol {
            on_data: Some(hs_on_data),
            on_ready: None,
            on_shutdown: Some(hs_on_shutdown),
            on_close: Some(hs_on_close),
            ping: Some(hs_ping),
            rsv: 0,
        },
        conn,
    });
    // SAFETY: facil.io owns the pointer until it calls hs_on_close (also on
    // failure to attach).
    let _ = unsafe { sys::attach(uuid, Box::into_raw(proto).cast()) };
    sys::timeout_set(uuid, handshake_timeout());
    track_deadline(&conn_for_deadline);
    // A client speaks first. A server waits for the ClientHello, and
    // attaching to a uuid without a protocol registers it with facil.io's
    // poll, which reports bytes already there too: forcing a step as well
    // cost a read(2) that found nothing and a re-arm (epoll_ctl) per
    // handshake. A uuid that had a protocol gets no new registration.
    if role == Role::Client || had_protocol {
        sys::force_event(uuid, FIO_EVENT_ON_DATA);
    }
    Ok(())
}

/// Runs the handshake one step, schedules the hand-over the first time it
/// completes, and arranges a write poll if the socket did not take our
/// output.
fn advance(conn: &Arc<HostConn>, tls: &mut Connection) -> Handshake {
    let step = tls.handshake();
    if tls.pending_output() > 0 {
        sys::force_event(conn.uuid, FIO_EVENT_ON_READY);
    }
    if step == Handshake::Done && !conn.handed_over.swap(true, Ordering::AcqRel) {
        log_done(conn, tls);
        schedule_handover(conn, false);
    }
    step
}

/// DEBUG: what a finished handshake agreed on (the key exchange group shows
/// whether it was post-quantum).
fn log_done(conn: &HostConn, tls: &Connection) {
    if !log::enabled(Level::Debug) {
        return;
    }
    let side = if tls.role() == Role::Server { "server" } else { "client" };
    let alpn = tls.selected_alpn().map(String::from_utf8_lossy);
    log_debug!(
        "TLS handshake done ({side}, uuid {:#x}): {}, group {}, ALPN {}",
        conn.uuid,
        tls.version(),
        tls.negotiated_group().as_deref().unwrap_or("none"),
        alpn.as_deref().unwrap_or("none")
    );
}

/// How a failed handshake is logged: WARNING on a client; INFO on a
/// server, except DEBUG for a peer that simply hung up (scanners, health
/// checks: routine for a server). A close by the handshake deadline is the
/// server's decision, not a hang-up: INFO.
fn failure_level(role: Role, peer_hung_up: bool, deadline: bool) -> Level {
    match role {
        Role::Client => Level::Warning,
        Role::Server if peer_hung_up && !deadline => Level::Debug,
        Role::Server => Level::Info,
    }
}

fn log_failure(conn: &HostConn, tls: &Connection, reason: &str) {
    let role = tls.role();
    let side = if role == Role::Server { "server" } else { "client" };
    let level = failure_level(role, tls.peer_hung_up(), conn.deadline_hit.load(Ordering::Acquire));
    log::write(level, format_args!("TLS handshake failed ({side}, uuid {:#x}): {reason}", conn.uuid));
}

/// Schedules [`handover_task`]; `after_close`: scheduled by `cleanup` for
/// a client whose connection ended before its handshake did.
fn schedule_handover(conn: &Arc<HostConn>, after_close: bool) {
    let raw = Arc::into_raw(conn.clone()) as *mut c_void;
    // SAFETY: the task takes the reference back; if scheduling fails we do.
    let ok = unsafe { sys::defer(handover_task, raw, after_close as usize as *mut c_void) };
    if ok != Ok(0) {
        drop(unsafe { Arc::from_raw(raw as *const HostConn) });
    }
}

/// Deferred: hands the connection to the ALPN-selected protocol (the first
/// one added when none was negotiated).
///
/// A client's callback runs exactly once per `fio_tls_connect`, whether or
/// not the handshake succeeded: after a failure (`after_close`, scheduled
/// by `cleanup`) or a close right after the handshake, it runs with the
/// uuid already closed. That is how the application learns of the failure
/// and gets its udata back: a protocol it attaches to the closed uuid gets
/// its `on_close` from facil.io at once, and facil.io's `http_connect`
/// then runs the request's `on_finish` (its "http/1.1" callback attaches
/// the HTTP client protocol, whose `on_close` calls `on_finish`). Nothing
/// the callback writes reaches the wire: the uuid is closed. A server
/// connection that closed first gets no callback (its udata is shared by
/// the listener, and failed handshakes are routine there).
unsafe extern "C" fn handover_task(arg: *mut c_void, after_close: *mut c_void) {
    let conn = Arc::from_raw(arg as *const HostConn);
    let after_close = !after_close.is_null();
    ffi_boundary!("protocol hand-over", {
        let closed = sys::is_closed(conn.uuid);
        let client = conn.lock().role() == Role::Client;
        if after_close && !closed {
            // cleanup ran because the uuid got other rw hooks (a second
            // fio_tls_connect on it): the uuid is someone else's now.
            log_debug!("uuid {:#x}: TLS hooks replaced before the handshake finished", conn.uuid);
            return;
        }
        if closed && !after_close {
            // E.g. a TLS 1.3 server that refused our certificate after our
            // side of the handshake was done.
            let msg = "connection closed right after the TLS handshake";
            if !client {
                log_debug!("uuid {:#x}: {msg}; no protocol was started", conn.uuid);
                return;
            }
            log_warning!("uuid {:#x}: {msg}; the protocol callback runs on the closed uuid", conn.uuid);
        }
        // The uuid's timeout goes back to what it was before the handshake,
        // unless someone set another meanwhile: facil.io 0.7.x's
        // fio_connect runs on_connect (http_connect's sets its .timeout)
        // right after fio_tls_connect, while the handshake runs.
        if !closed && sys::timeout_get(conn.uuid) == handshake_timeout() {
            sys::timeout_set(conn.uuid, conn.saved_timeout);
        }
        let selected = conn.lock().selected_alpn().map(<[u8]>::to_vec);
        if selected.as_deref() == Some(crate::tls::acme::ALPN) && !client {
            // A TLS-ALPN-01 validation (RFC 8737): the handshake was the
            // whole answer; no application callback, close (close_notify).
            log_debug!("uuid {:#x}: ACME TLS-ALPN-01 validation handshake done; closing", conn.uuid);
            conn.handover_done.store(true, Ordering::Release);
            if !closed {
                sys::close(conn.uuid);
            }
            return;
        }
        if let Some(protocol) = conn.snapshot.protocol_for(selected.as_deref()) {
            protocol.handler.hand_over(conn.uuid, closed, conn.udata.0);
        }
        conn.handover_done.store(true, Ordering::Release);
        // Records that came with the handshake may already be inside
        // OpenSSL, where no poll sees them. Bytes still in the socket are
        // reported by the poll (our on_data re-armed it when it returned).
        if !closed && conn.lock().has_buffered_input() {
            sys::force_event(conn.uuid, FIO_EVENT_ON_DATA);
        }
    });
}

unsafe extern "C" fn hs_on_data(uuid: isize, pr: *mut FioProtocol) {
    ffi_boundary!("handshake", {
        let conn = (*(pr as *mut HandshakeProtocol)).conn.clone();
        if conn.is_broken() {
            sys::close(uuid);
            return;
        }
        let mut tls = conn.lock();
        if tls.is_detached() {
            return;
        }
        let step = advance(&conn, &mut tls);
        if let Handshake::Failed(reason) = &step {
            log_failure(&conn, &tls, reason);
        }
        drop(tls);
        match step {
            Handshake::InProgress => {}
            Handshake::Done if conn.handover_done.load(Ordering::Acquire) => close_if_abandoned(uuid, pr),
            Handshake::Done => {}
            Handshake::Failed(_) => sys::close(uuid),
        }
    });
}

/// Our `on_data` after the hand-over ran. Being here proves nothing by
/// itself: facil.io looks the protocol up before it calls `on_data`, and the
/// hand-over runs on another thread, so an event may reach us just after
/// the application attached its own protocol. Only when ours is *still* the
/// uuid's protocol did no callback take the connection (none added, a NULL
/// callback, or a callback that attached nothing); then nothing would ever
/// read it, so it is closed.
fn close_if_abandoned(uuid: isize, ours: *mut FioProtocol) {
    match sys::current_protocol(uuid) {
        sys::CurrentProtocol::Is(pr) if pr == ours => {
            log_warning!(
                "uuid {uuid:#x}: TLS handshake done but no protocol took the connection \
                 (the callback of the protocol ALPN chose, added with fio_tls_proto_add, must \
                 fio_attach one; a protocol attached before fio_tls_accept is replaced by the \
                 handshake); closing"
            );
            sys::close(uuid);
        }
        // Replaced: the application's protocol gets its own data event.
        sys::CurrentProtocol::Is(_) | sys::CurrentProtocol::Gone => {}
        // The host's protocol lock is busy: look again on a later pass.
        sys::CurrentProtocol::Busy => sys::force_event(uuid, FIO_EVENT_ON_DATA),
    }
}

/// facil.io's timeout ping. The deadline sweep alone decides when a
/// handshake has taken too long (facil.io may ping a fresh uuid early: its
/// idle clock can start at 0), and without a `ping` of ours facil.io would
/// install one that closes the connection.
unsafe extern "C" fn hs_ping(_uuid: isize, _pr: *mut FioProtocol) {
    ffi_boundary!("handshake ping", {})
}

unsafe extern "C" fn hs_on_shutdown(_uuid: isize, _pr: *mut FioProtocol) -> u8 {
    ffi_boundary!("handshake shutdown", { 0 })
}

unsafe extern "C" fn hs_on_close(_uuid: isize, pr: *mut FioProtocol) {
    // Frees the protocol object and its reference to the connection.
    ffi_boundary!("handshake close", { drop(Box::from_raw(pr as *mut HandshakeProtocol)) })
}

fn fail_with(e: &io::Error) -> ssize_t {
    let code = match e.raw_os_error() {
        Some(c) => c,
        None => match e.kind() {
            io::ErrorKind::WouldBlock => libc::EWOULDBLOCK,
            io::ErrorKind::BrokenPipe => libc::EPIPE,
            io::ErrorKind::WriteZero => libc::ECONNRESET,
            _ => libc::ECONNABORTED,
        },
    };
    set_errno(code);
    -1
}

/// Views the hook udata (made by `Arc::into_raw`) as an `Arc` without
/// taking or releasing a reference: the host's reference is released only
/// by `hook_cleanup`.
unsafe fn conn_of(udata: *mut c_void) -> ManuallyDrop<Arc<HostConn>> {
    ManuallyDrop::new(Arc::from_raw(udata as *const HostConn))
}

/// What the read and write hooks answer before touching the connection,
/// as read(2) / write(2) would: -1 for a connection broken by a panic
/// (see [`HostConn::fail_after_panic`]), 0 for a zero `count` (`buf` is
/// not looked at), -1 with `EFAULT` for a NULL `buf`; `None`: go on.
fn data_hook_prologue(conn: &HostConn, count: size_t, buf_is_null: bool) -> Option<ssize_t> {
    if conn.is_broken() {
        return Some(conn.fail_after_panic());
    }
    if count == 0 {
        return Some(0);
    }
    if buf_is_null {
        set_errno(libc::EFAULT);
        return Some(-1);
    }
    None
}

/// The read hook: `read(2)` over TLS. A `count` of 0 returns 0 without
/// touching `buf` or the connection (as `read(2)` does; facil.io's
/// `fio_read` never asks for 0 bytes); a NULL `buf` with a non-zero `count`
/// is -1 with `EFAULT`.
unsafe extern "C" fn hook_read(uuid: isize, udata: *mut c_void, buf: *mut c_void, count: size_t) -> ssize_t {
    ffi_boundary!("read hook (connection lookup)", {
        let Some(conn) = live_conn(udata, uuid) else {
            set_errno(libc::EBADF);
            return -1;
        };
        ffi_boundary!("read hook", on_panic = conn.fail_after_panic(), {
            if let Some(early) = data_hook_prologue(&conn, count, buf.is_null()) {
                return early;
            }
            let mut tls = conn.lock();
            if tls.phase() == Phase::Handshaking {
                // An application protocol replaced ours early: drive from here.
                match advance(&conn, &mut tls) {
                    Handshake::Done => {}
                    Handshake::InProgress => {
                        set_errno(libc::EAGAIN);
                        return -1;
                    }
                    Handshake::Failed(reason) => {
                        log_failure(&conn, &tls, &reason);
                        set_errno(libc::ECONNABORTED);
                        return -1;
                    }
                }
            }
            // SAFETY: facil.io passes a buffer of `count` writable bytes
            // (checked non-NULL above).
            let out = std::slice::from_raw_parts_mut(buf as *mut u8, count);
            let result = match tls.read(out) {
                ReadOutcome::Data(n) => {
                    if tls.has_buffered_input() {
                        // facil.io reads one buffer per event; more is already
                        // here, so ask for another event.
                        sys::force_event(uuid, FIO_EVENT_ON_DATA);
                    }
                    n as ssize_t
                }
                ReadOutcome::WouldBlock => {
                    set_errno(libc::EAGAIN);
                    -1
                }
                ReadOutcome::Closed => 0,
                ReadOutcome::Error(e) => fail_with(&e),
            };
            // Reading can make OpenSSL answer (session tickets, key updates).
            if tls.pending_output() > 0 {
                sys::force_event(uuid, FIO_EVENT_ON_READY);
            }
            result
        })
    })
}

/// The write hook: `write(2)` over TLS. A `count` of 0 returns 0 without
/// touching `buf` (facil.io's `fio_write(uuid, NULL, 0)` gets here); a NULL
/// `buf` with a non-zero `count` is -1 with `EFAULT`.
unsafe extern "C" fn hook_write(uuid: isize, udata: *mut c_void, buf: *const c_void, count: size_t) -> ssize_t {
    ffi_boundary!("write hook (connection lookup)", {
        let conn = conn_of(udata);
        ffi_boundary!("write hook", on_panic = conn.fail_after_panic(), {
            if let Some(early) = data_hook_prologue(&conn, count, buf.is_null()) {
                return early;
            }
            let mut tls = conn.lock();
            // SAFETY: facil.io passes `count` readable bytes (checked
            // non-NULL above).
            let data = std::slice::from_raw_parts(buf as *const u8, count);
            match tls.write(data) {
                // A short write is back-pressure (the socket is full, or one
                // call's WRITE_LIMIT was reached): facil.io's fio_flush returns
                // 1 and polls for writability. Forcing an event here would call
                // us straight back on a full socket (a busy loop).
                Ok(n) if n < count => n as ssize_t,
                Ok(n) => {
                    // A full write. facil.io 0.7.0.beta4's file sender
                    // (fio_sock_write_from_fd) drops a finished file packet only
                    // on a later fio_flush: after the last chunk it reads past
                    // the end and then looks at errno. A "try later" errno it
                    // does not retry itself (a stale EAGAIN would make it spin)
                    // makes fio_flush report more to send, so the poller comes
                    // back for that packet; buffer packets never read errno.
                    // Forcing a write event instead would run a second
                    // concurrent fio_flush, and two flushes of a closing
                    // connection both close(2) its fd (facil.io's double close).
                    set_errno(libc::ENOTCONN);
                    // Ciphertext the kernel did not take is sent only by our
                    // flush hook, which facil.io calls when no packet is left.
                    if tls.pending_output() > 0 {
                        sys::force_event(uuid, FIO_EVENT_ON_READY);
                    }
                    n as ssize_t
                }
                Err(e) => fail_with(&e),
            }
        })
    })
}

unsafe extern "C" fn hook_flush(_uuid: isize, udata: *mut c_void) -> ssize_t {
    ffi_boundary!("flush hook (connection lookup)", {
        let conn = conn_of(udata);
        ffi_boundary!("flush hook", on_panic = conn.fail_after_panic(), {
            if conn.is_broken() {
                return conn.fail_after_panic();
            }
            let mut tls = conn.lock();
            match tls.flush() {
                Ok(left) => left as ssize_t,
                // While closing, report "drained" so facil.io finishes the close
                // instead of waiting on a dead peer.
                Err(_) if tls.phase() == Phase::ShutDown => 0,
                Err(e) => fail_with(&e),
            }
        })
    })
}

/// Returns 0 (close now) after a panic or on a broken connection: no
/// close_notify is owed on a connection whose state is in doubt.
unsafe extern "C" fn hook_before_close(uuid: isize, udata: *mut c_void) -> ssize_t {
    ffi_boundary!("close hook", on_panic = 0, {
        // fio_force_close calls this without the socket lock too.
        let Some(conn) = live_conn(udata, uuid) else {
            return 0;
        };
        if conn.is_broken() {
            return 0;
        }
        let mut tls = conn.lock();
        send_close_notify(uuid, &mut tls)
    })
}

/// beta4: the close_notify and our FIN leave together; non-zero (bytes
/// still to send) makes facil.io wait for flush to report 0 first.
#[cfg(not(feature = "api07"))]
fn send_close_notify(_uuid: isize, tls: &mut Connection) -> ssize_t {
    close_notify_with_fin(tls)
}

/// The close_notify leaves together with our FIN.
fn close_notify_with_fin(tls: &mut Connection) -> ssize_t {
    // facil.io 0.7.0.beta4 closes an fd whose peer hung up from its
    // poller by fd *number*, racing any other thread that is closing
    // the same connection (the second close(2) can hit an fd number
    // already reused by a new connection or a request body's temporary
    // file). A close_notify that reached the peer before our close(2)
    // invites exactly that: the peer answers with its FIN at once. So
    // the close_notify leaves together with our FIN, as a plain-TCP
    // close would.
    tls.hold_until_close();
    let left = tls.shutdown();
    (left > 0) as ssize_t
}

/// facil.io 0.7.x: the close_notify goes out now, and our FIN after the
/// next deadline sweep: [`close_waiting`] calls `fio_close` again.
///
/// facil.io 0.7.x's poller closes a connection whose peer hung up as soon
/// as it sees the hang-up, without reading what arrived with it (EPOLLRDHUP
/// next to EPOLLIN): a FIN right behind a response (a "Connection: close"
/// request answered at once) made a facil.io 0.7.6 client drop that
/// response about every other time on loopback. Returning non-zero here
/// makes facil.io 0.7.x keep the connection (its flush never closes it);
/// facil.io calls `before_close` again only if the connection is closed
/// once more, and then gets 0: close now. The sweep's `fio_close` is that
/// second close; a uuid closed meanwhile (the peer's own FIN) is ignored
/// by facil.io, as is one whose fd was reused (the uuid differs).
///
/// While facil.io shuts down (`fio_is_running()` is 0) the connection
/// closes at once, as in the beta4 build.
#[cfg(feature = "api07")]
fn send_close_notify(uuid: isize, tls: &mut Connection) -> ssize_t {
    if tls.phase() == Phase::ShutDown {
        return 0;
    }
    if !super::pubsub::running() || tls.phase() != Phase::Established {
        return close_notify_with_fin(tls);
    }
    tls.shutdown();
    CLOSING.lock().unwrap_or_else(|p| p.into_inner()).push_back((Instant::now(), uuid));
    1
}

/// Connections whose close_notify went out and whose FIN waits for the
/// next deadline sweep (facil.io 0.7.x, see [`send_close_notify`]), in the
/// order they were closed.
#[cfg(feature = "api07")]
unsafe extern "C" fn close_waiting_at_shutdown(_arg: *mut c_void) {
    ffi_boundary!("close at shutdown", { close_waiting(Instant::now(), true) })
}

#[cfg(feature = "api07")]
static CLOSING: Lazy<Mutex<VecDeque<(Instant, isize)>>> = Lazy::new(|| Mutex::new(VecDeque::new()));

/// The second `fio_close` of [`send_close_notify`]: for the connections
/// that waited at least one sweep interval (time for the peer's reactor to
/// read what came before our FIN; a deferred task, with no delay, was not
/// enough for a facil.io 0.7.6 client on a busy machine), or for all of
/// them (`all`) when facil.io begins to shut down: facil.io 0.7.6's
/// shutdown never finished (fio_cycle_unwind kept counting a connection)
/// when a websocket connection was still waiting here.
#[cfg(feature = "api07")]
fn close_waiting(now: Instant, all: bool) {
    let due = now.checked_sub(Duration::from_millis(SWEEP_INTERVAL_MS as u64)).unwrap_or(now);
    let mut ready = Vec::new();
    {
        let mut closing = CLOSING.lock().unwrap_or_else(|p| p.into_inner());
        while closing.front().is_some_and(|(at, _)| all || *at <= due) {
            ready.extend(closing.pop_front().map(|(_, uuid)| uuid));
        }
    }
    for uuid in ready {
        sys::close(uuid);
    }
}

/// facil.io calls this just before it `close()`s the fd (or when the hooks
/// are replaced). Detaching under the connection's mutex waits for any
/// handshake step or read still running on another thread, and guarantees
/// none starts afterwards: the fd number may be reused as soon as we return.
unsafe extern "C" fn hook_cleanup(udata: *mut c_void) {
    ffi_boundary!("cleanup hook", {
        if !live_shard(udata as usize).remove(&(udata as usize)) {
            // Released already (a failed fio_rw_hook_set, see `start`).
            return;
        }
        let conn = Arc::from_raw(udata as *const HostConn);
        let mut tls = conn.lock();
        // facil.io closes on a peer's hang-up without a read, so this is
        // where such handshakes end: log them once, here. The fd is still
        // open, so one last step can read the peer's alert.
        let unfinished = match tls.phase() {
            Phase::Handshaking if conn.deadline_hit.load(Ordering::Acquire) => {
                Some(format!("handshake deadline ({} s) passed", handshake_timeout()))
            }
            Phase::Handshaking => match tls.handshake() {
                Handshake::Failed(reason) => Some(reason),
                Handshake::InProgress => Some("connection closed before the handshake finished".to_string()),
                Handshake::Done => None,
            },
            _ => None,
        };
        tls.detach();
        if let Some(reason) = unfinished {
            log_failure(&conn, &tls, &reason);
        }
        let client = tls.role() == Role::Client;
        drop(tls);
        // A client whose connection ended before its handshake did still
        // gets its protocol callback, on the closed uuid (see handover_task).
        if client && !conn.handed_over.swap(true, Ordering::AcqRel) {
            schedule_handover(&conn, true);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::{errno, test_support::panic_next};
    use crate::tls::TlsConfig;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A connection as `start` makes it, minus facil.io: the rw hooks'
    /// udata, registered as live.
    fn host_conn(snapshot: &Arc<Snapshot>, role: Role, sock: &UnixStream) -> (isize, *mut c_void) {
        let fd = sock.as_raw_fd();
        let uuid = (fd as isize) << 8;
        let ctx = if role == Role::Server { &snapshot.server } else { &snapshot.client };
        let conn = Arc::new(HostConn {
            uuid,
            udata: Udata(core::ptr::null_mut()),
            snapshot: snapshot.clone(),
            tls: Mutex::new(Connection::new(ctx, role, fd, None).unwrap()),
            handed_over: AtomicBool::new(false),
            handover_done: AtomicBool::new(false),
            deadline_hit: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            saved_timeout: 0,
            started: Instant::now(),
        });
        let udata = Arc::into_raw(conn) as *mut c_void;
        live_shard(udata as usize).insert(udata as usize);
        (uuid, udata)
    }

    struct Pair {
        server: (isize, *mut c_void),
        client: (isize, *mut c_void),
        _sockets: (UnixStream, UnixStream),
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            // SAFETY: the udata values came from host_conn.
            unsafe {
                hook_cleanup(self.server.1);
                hook_cleanup(self.client.1);
            }
        }
    }

    fn phase(udata: *mut c_void) -> Phase {
        // SAFETY: a live udata of host_conn.
        unsafe { conn_of(udata) }.lock().phase()
    }

    /// A server and a client connection with their handshake done, driven
    /// through the read hooks alone.
    fn established() -> Pair {
        let snapshot = Arc::new(TlsConfig::<Handler>::new(None, None, None).unwrap().build().unwrap());
        let (s, c) = UnixStream::pair().unwrap();
        s.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let pair = Pair {
            server: host_conn(&snapshot, Role::Server, &s),
            client: host_conn(&snapshot, Role::Client, &c),
            _sockets: (s, c),
        };
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            for (uuid, udata) in [pair.client, pair.server] {
                // SAFETY: live udata, a real buffer.
                let r = unsafe { hook_read(uuid, udata, buf.as_mut_ptr().cast(), buf.len()) };
                assert_eq!((r, errno()), (-1, libc::EAGAIN), "no data is sent yet");
            }
            if phase(pair.server.1) == Phase::Established && phase(pair.client.1) == Phase::Established {
                return pair;
            }
        }
        panic!("handshake did not finish");
    }

    /// Sends `data` from the client and reads it on the server.
    fn round_trip(pair: &Pair, data: &[u8]) -> Vec<u8> {
        let (cu, cd) = pair.client;
        let (su, sd) = pair.server;
        // SAFETY: live udata values and real buffers.
        unsafe {
            assert_eq!(hook_write(cu, cd, data.as_ptr().cast(), data.len()), data.len() as ssize_t);
            assert_eq!(hook_flush(cu, cd), 0);
            let mut buf = [0u8; 64];
            let n = hook_read(su, sd, buf.as_mut_ptr().cast(), buf.len());
            assert!(n > 0, "read returned {n}, errno {}", errno());
            buf[..n as usize].to_vec()
        }
    }

    #[test]
    fn null_and_empty_buffers_reaching_the_hooks() {
        let pair = established();
        let (cu, cd) = pair.client;
        let (su, sd) = pair.server;
        // SAFETY: live udata values; the NULL buffers are what is tested.
        unsafe {
            // Zero bytes: 0, as read(2) and write(2) give, and nothing else
            // happens (facil.io's fio_write(uuid, NULL, 0) reaches the
            // write hook like this).
            assert_eq!(hook_write(cu, cd, core::ptr::null(), 0), 0);
            assert_eq!(hook_read(su, sd, core::ptr::null_mut(), 0), 0);
            // NULL with a length: EFAULT, as the system calls say.
            assert_eq!((hook_write(cu, cd, core::ptr::null(), 5), errno()), (-1, libc::EFAULT));
            assert_eq!((hook_read(su, sd, core::ptr::null_mut(), 5), errno()), (-1, libc::EFAULT));
        }
        // The connection is unharmed.
        assert_eq!(round_trip(&pair, b"hello"), b"hello");
        assert_eq!(phase(pair.server.1), Phase::Established);
    }

    #[test]
    fn a_panic_in_a_hook_fails_the_connection_with_a_closing_errno() {
        let pair = established();
        let (cu, cd) = pair.client;
        let (su, sd) = pair.server;
        let mut buf = [0u8; 16];
        // SAFETY: live udata values, real buffers.
        unsafe {
            panic_next("write hook");
            // A stale EAGAIN would make facil.io retry the connection.
            set_errno(libc::EAGAIN);
            assert_eq!(hook_write(cu, cd, b"x".as_ptr().cast(), 1), -1);
            assert_eq!(errno(), libc::ECONNABORTED);
            // Broken for good: every later hook fails the same way, and
            // before_close owes no close_notify.
            set_errno(libc::EAGAIN);
            assert_eq!((hook_read(cu, cd, buf.as_mut_ptr().cast(), buf.len()), errno()), (-1, libc::ECONNABORTED));
            assert_eq!((hook_flush(cu, cd), errno()), (-1, libc::ECONNABORTED));
            assert_eq!(hook_before_close(cu, cd), 0);

            // Same for the read hook.
            panic_next("read hook");
            set_errno(libc::EAGAIN);
            assert_eq!((hook_read(su, sd, buf.as_mut_ptr().cast(), buf.len()), errno()), (-1, libc::ECONNABORTED));
            assert_eq!((hook_write(su, sd, b"x".as_ptr().cast(), 1), errno()), (-1, libc::ECONNABORTED));
        }
    }

    #[test]
    fn a_deadline_close_is_logged_at_info_like_other_server_failures() {
        // The connection closed by the deadline looks hung up (it was
        // detached mid-handshake), but the server chose to close it.
        assert_eq!(failure_level(Role::Server, true, true), Level::Info);
        assert_eq!(failure_level(Role::Server, false, true), Level::Info);
        assert_eq!(failure_level(Role::Server, false, false), Level::Info);
        assert_eq!(failure_level(Role::Server, true, false), Level::Debug);
        assert_eq!(failure_level(Role::Client, true, true), Level::Warning);
        assert_eq!(failure_level(Role::Client, false, false), Level::Warning);
    }
}
