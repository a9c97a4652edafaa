//! facil.io 0.7.0.beta4's cluster messaging, the slice `fio_tls_reload`
//! uses: one *filter* subscription per process and filter messages
//! published to the whole cluster.
//!
//! facil.io's workers are forked processes, connected to the root process
//! by a Unix socket. A message published with a non-zero `filter` and no
//! engine goes to every process of the application: the root forwards it to
//! every worker but the sender, keeps a copy, and the sender delivers it to
//! itself too (beta4 `fio_publish` with `FIO_PUBSUB_CLUSTER`). Delivery runs
//! the subscription's callback as a deferred task on a facil.io thread.
//!
//! A *filter* message, unlike a pub/sub *channel* message, is never matched
//! against pattern subscriptions and never leaves the machine through a
//! pub/sub engine (Redis): an application subscribed to `"*"`, or
//! forwarding channels to websocket clients, never sees ours. The filter
//! value [`RELOAD_FILTER`] is taken by this library (facil.io reserves the
//! negative ones for itself).
//!
//! The symbols are weak references in a table of our own (the same scheme as
//! [`super::sys`]): without facil.io, or with a facil.io built without
//! pub/sub (`FIO_PUBSUB_SUPPORT 0`), every call reports [`NoHost`].
//! Subscriptions are facil.io heap objects, so a subscription made before
//! `fio_start` is inherited by every worker that facil.io forks afterwards.

use super::sys::NoHost;
use libc::{c_char, c_void, size_t};
use std::sync::atomic::{AtomicBool, Ordering};

/// The filter of our messages: "FTLR" read as a big-endian `int32_t`
/// (positive: facil.io reserves negative filters).
pub const RELOAD_FILTER: i32 = 0x4654_4C52;
const _: () = assert!(RELOAD_FILTER > 0, "facil.io reserves negative filters");

/// `fio_str_info_s` (fio.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FioStrInfo {
    pub capa: size_t,
    pub len: size_t,
    pub data: *mut c_char,
}

impl FioStrInfo {
    const EMPTY: FioStrInfo = FioStrInfo { capa: 0, len: 0, data: core::ptr::null_mut() };
}

/// `fio_msg_s` (fio.h): what a subscription callback receives.
#[repr(C)]
pub struct FioMsg {
    pub filter: i32,
    pub channel: FioStrInfo,
    pub msg: FioStrInfo,
    pub udata1: *mut c_void,
    pub udata2: *mut c_void,
    pub is_json: u8,
}

/// A subscription callback.
pub type OnMessage = unsafe extern "C" fn(msg: *mut FioMsg);

/// `subscribe_args_s` (fio.h), passed by value.
#[repr(C)]
struct SubscribeArgs {
    filter: i32,
    channel: FioStrInfo,
    match_fn: Option<unsafe extern "C" fn(FioStrInfo, FioStrInfo) -> libc::c_int>,
    on_message: Option<OnMessage>,
    on_unsubscribe: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
    udata1: *mut c_void,
    udata2: *mut c_void,
}

/// `fio_publish_args_s` (fio.h), passed by value.
#[repr(C)]
struct PublishArgs {
    /// `fio_pubsub_engine_s const *`; NULL with a filter means the cluster.
    engine: *const c_void,
    filter: i32,
    channel: FioStrInfo,
    message: FioStrInfo,
    is_json: u8,
}

#[repr(C)]
struct PubSubTable {
    subscribe: Option<unsafe extern "C" fn(SubscribeArgs) -> *mut c_void>,
    publish: Option<unsafe extern "C" fn(PublishArgs)>,
    is_running: Option<unsafe extern "C" fn() -> i16>,
}

// Weak references, hidden table (see sys.rs for why).
core::arch::global_asm!(
    ".weak fio_subscribe",
    ".weak fio_publish",
    ".weak fio_is_running",
    ".pushsection .data.rel.ro.fio_tls_pubsub_table,\"aw\"",
    ".balign 8",
    ".globl fio_tls_private_pubsub_table",
    ".hidden fio_tls_private_pubsub_table",
    "fio_tls_private_pubsub_table:",
    ".8byte fio_subscribe",
    ".8byte fio_publish",
    ".8byte fio_is_running",
    ".popsection",
);

extern "C" {
    static fio_tls_private_pubsub_table: PubSubTable;
}

fn table() -> &'static PubSubTable {
    // SAFETY: a read-only (after relocation) static defined above.
    unsafe { &*core::ptr::addr_of!(fio_tls_private_pubsub_table) }
}

/// True while facil.io's reactor runs (`fio_is_running`): between
/// `fio_start` and the start of its shutdown. Before that, facil.io's
/// `fio_publish` refuses cluster messages with an ERROR of its own.
pub fn running() -> bool {
    match table().is_running {
        // SAFETY: plain host call, no arguments.
        Some(f) => unsafe { f() != 0 },
        None => false,
    }
}

/// Set once this process (or the process it was forked from) subscribed.
static SUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// Subscribes `on_message` to [`RELOAD_FILTER`] messages, once per process
/// image: a worker forked afterwards inherits the subscription (and this
/// flag). Thread-safe. `Err(NoHost)` without facil.io's pub/sub.
pub fn subscribe_once(on_message: OnMessage) -> Result<(), NoHost> {
    let Some(subscribe) = table().subscribe else { return Err(NoHost) };
    if SUBSCRIBED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let args = SubscribeArgs {
        filter: RELOAD_FILTER,
        channel: FioStrInfo::EMPTY,
        match_fn: None,
        on_message: Some(on_message),
        on_unsubscribe: None,
        udata1: core::ptr::null_mut(),
        udata2: core::ptr::null_mut(),
    };
    // SAFETY: a host call with a fully initialised argument struct; the
    // callback is a 'static function. facil.io only fails (NULL) without
    // an on_message, which we always pass; the subscription lives as long
    // as the process (facil.io frees it at exit).
    let subscription = unsafe { subscribe(args) };
    if subscription.is_null() {
        SUBSCRIBED.store(false, Ordering::Release);
        return Err(NoHost);
    }
    Ok(())
}

/// Whether [`subscribe_once`] ran in this process image.
pub fn subscribed() -> bool {
    SUBSCRIBED.load(Ordering::Acquire)
}

/// Publishes `message` as a [`RELOAD_FILTER`] message to every process of
/// the application, this one included (facil.io copies the bytes before
/// returning). Only while [`running`]: `Err(NoHost)` otherwise, or without
/// facil.io's pub/sub.
pub fn publish_to_cluster(message: &[u8]) -> Result<(), NoHost> {
    let Some(publish) = table().publish else { return Err(NoHost) };
    if !running() {
        return Err(NoHost);
    }
    let args = PublishArgs {
        engine: core::ptr::null(),
        filter: RELOAD_FILTER,
        channel: FioStrInfo::EMPTY,
        message: FioStrInfo { capa: 0, len: message.len(), data: message.as_ptr() as *mut c_char },
        is_json: 0,
    };
    // SAFETY: a host call; facil.io copies the message into its own buffer
    // (fio_pubsub_create_message / fio_cluster_wrap_message) and never
    // writes through `data` (capa 0: not writable).
    unsafe { publish(args) };
    Ok(())
}

/// The bytes of a message facil.io handed to a subscription callback.
///
/// # Safety
/// `msg` must be NULL or the pointer facil.io passed to the callback, used
/// only during that call.
pub unsafe fn message_bytes<'a>(msg: *const FioMsg) -> Option<(i32, &'a [u8])> {
    let m = msg.as_ref()?;
    let bytes = if m.msg.len == 0 || m.msg.data.is_null() {
        &[][..]
    } else {
        core::slice::from_raw_parts(m.msg.data as *const u8, m.msg.len)
    };
    Some((m.filter, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_facil_io_beta4() {
        // x86-64 / AArch64 LP64, as fio.h lays them out.
        assert_eq!(core::mem::size_of::<FioStrInfo>(), 24);
        assert_eq!(core::mem::offset_of!(FioMsg, channel), 8);
        assert_eq!(core::mem::offset_of!(FioMsg, msg), 32);
        assert_eq!(core::mem::offset_of!(FioMsg, udata1), 56);
        assert_eq!(core::mem::offset_of!(FioMsg, is_json), 72);
        assert_eq!(core::mem::size_of::<FioMsg>(), 80);
        assert_eq!(core::mem::size_of::<SubscribeArgs>(), 72);
        assert_eq!(core::mem::offset_of!(SubscribeArgs, on_message), 40);
        assert_eq!(core::mem::offset_of!(PublishArgs, filter), 8);
        assert_eq!(core::mem::offset_of!(PublishArgs, message), 40);
        assert_eq!(core::mem::offset_of!(PublishArgs, is_json), 64);
        assert_eq!(core::mem::size_of::<PublishArgs>(), 72);
    }

    #[test]
    fn without_facil_io_nothing_is_sent() {
        assert!(!running());
        assert_eq!(publish_to_cluster(b"x"), Err(NoHost));
        unsafe extern "C" fn cb(_: *mut FioMsg) {}
        assert_eq!(subscribe_once(cb), Err(NoHost));
        assert!(!subscribed());
    }
}
