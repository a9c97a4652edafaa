//! Session ticket keys (RFC 5077 / RFC 8446 stateless tickets): rotated,
//! shared by every worker, and optionally by every host of a fleet.
//!
//! OpenSSL's own ticket key is made once per context and never changes, so
//! whoever obtains it can decrypt every resumed session for as long as the
//! process lives. Instead, each key period (`FIO_TLS_TICKET_KEY_SECONDS`,
//! default 3600 s) has its own key name, AES-256-CBC key and HMAC-SHA256
//! key, derived with HMAC-SHA256 from one 32-byte master secret:
//!
//! - by default a random secret made when the first server context is
//!   built, which facil.io applications do before `fio_start` forks its
//!   workers, so every worker of one process tree holds the same secret;
//! - with `FIO_TLS_TICKET_KEY_FILE=<path>`, a secret derived from that
//!   file's bytes (at least 32 random bytes, readable by its owner only), so
//!   every host that has the same file (a fleet behind a load balancer)
//!   derives the same keys and a client resumes on whichever host it
//!   reaches. A refused file is an ERROR naming it, and tickets then use the
//!   per-process secret.
//!
//! Tickets are issued under the current period's key. Tickets of the
//! previous and of the next period also resume (clocks of two hosts may be
//! up to one period apart); older or newer ones get a full handshake.
//!
//! Renewal: a resumed TLS 1.3 handshake always gets a fresh ticket (RFC 8446
//! section 4.6.1 and appendix C.4: clients use each ticket once). A resumed
//! TLS 1.2 handshake gets one when its ticket was not sealed under the
//! current period's key of the current secret (RFC 5077 section 3.3).
//!
//! The key file is checked with one `stat` per check by [`check_key_file`],
//! which the host layer runs on a timer in every process: a changed file
//! with a good secret is used for new tickets at once, and the secret it
//! replaces still resumes for one period.

use crate::log::{log_error, log_info, log_warning};
use libc::{c_char, c_int, c_uchar, c_uint, c_void, size_t};
use once_cell::sync::Lazy;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::SslContextBuilder;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default key period in seconds.
pub const DEFAULT_KEY_SECONDS: u64 = 3600;
/// The fewest bytes a ticket key file may hold.
pub const MIN_KEY_FILE_BYTES: usize = 32;
/// The most bytes a ticket key file may hold.
pub const MAX_KEY_FILE_BYTES: usize = 4096;
/// The largest clock offset `FIO_TLS_TEST_TICKET_CLOCK_OFFSET` takes (30 days).
const MAX_CLOCK_OFFSET: i64 = 30 * 86400;

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

/// A test knob: `FIO_TLS_TEST_TICKET_CLOCK_OFFSET=<seconds>` (signed, at
/// most 30 days either way), read once, shifts the clock that picks the key
/// period, and nothing else. The test suite uses it to run two "hosts" whose
/// clocks are one period apart on one machine.
fn clock_offset() -> i64 {
    static VALUE: Lazy<i64> = Lazy::new(|| match std::env::var("FIO_TLS_TEST_TICKET_CLOCK_OFFSET") {
        Ok(v) => match v.trim().parse::<i64>() {
            Ok(n) if n.abs() <= MAX_CLOCK_OFFSET => n,
            _ => {
                log_warning!(
                    "FIO_TLS_TEST_TICKET_CLOCK_OFFSET=\"{v}\" is not a number of seconds from -{MAX_CLOCK_OFFSET} to {MAX_CLOCK_OFFSET}; using 0"
                );
                0
            }
        },
        Err(_) => 0,
    });
    *VALUE
}

/// The time, in seconds since the Unix epoch, that picks the key period.
fn ticket_clock() -> Option<u64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(now.saturating_add_signed(clock_offset()))
}

/// A 32-byte secret that every period's keys derive from; wiped on drop.
struct Master([u8; 32]);

impl Drop for Master {
    fn drop(&mut self) {
        super::sys::cleanse(&mut self.0);
    }
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Master(<secret>)")
    }
}

impl Master {
    /// A random secret from OpenSSL's RNG (`None` if the RNG fails).
    fn random() -> Option<Self> {
        let mut m = Master([0u8; 32]);
        (openssl::rand::rand_bytes(&mut m.0).is_ok() && m.0 != [0u8; 32]).then_some(m)
    }

    /// The secret of a key file's bytes: HMAC-SHA256 keyed with a fixed
    /// label over them (HKDF-Extract of RFC 5869 section 2.2, the label as
    /// salt), so a file of any length from 32 bytes on gives 32 bytes.
    fn from_file_bytes(bytes: &[u8]) -> Option<Self> {
        let key = PKey::hmac(b"fio_tls session ticket key file v1").ok()?;
        let mut s = Signer::new(MessageDigest::sha256(), &key).ok()?;
        s.update(bytes).ok()?;
        let mut out = s.sign_to_vec().ok()?;
        let mut m = Master([0u8; 32]);
        m.0.copy_from_slice(&out[..32]);
        super::sys::cleanse(&mut out);
        Some(m)
    }

    fn duplicate(&self) -> Self {
        Master(self.0)
    }

    fn same_as(&self, other: &Master) -> bool {
        openssl::memcmp::eq(&self.0, &other.0)
    }
}

/// One period's keys.
#[derive(Clone, Copy)]
struct PeriodKeys {
    name: [u8; 16],
    aes: [u8; 32],
    hmac: [u8; 32],
}

impl PeriodKeys {
    fn wipe(&mut self) {
        super::sys::cleanse(&mut self.aes);
        super::sys::cleanse(&mut self.hmac);
    }
}

fn derive(master: &Master, period: u64) -> Option<PeriodKeys> {
    let key = PKey::hmac(&master.0).ok()?;
    let block = |label: &[u8]| -> Option<Vec<u8>> {
        let mut s = Signer::new(MessageDigest::sha256(), &key).ok()?;
        s.update(b"fio_tls session ticket key ").ok()?;
        s.update(label).ok()?;
        s.update(&period.to_be_bytes()).ok()?;
        s.sign_to_vec().ok()
    };
    let (mut a, mut b, mut c) = (block(b"name+aes")?, block(b"hmac")?, block(b"hmac2")?);
    let mut k = PeriodKeys { name: [0; 16], aes: [0; 32], hmac: [0; 32] };
    k.name.copy_from_slice(&a[..16]);
    // The AES key: the rest of block a plus the first half of block b.
    k.aes[..16].copy_from_slice(&a[16..32]);
    k.aes[16..].copy_from_slice(&b[..16]);
    k.hmac[..16].copy_from_slice(&b[16..32]);
    k.hmac[16..].copy_from_slice(&c[..16]);
    for v in [&mut a, &mut b, &mut c] {
        super::sys::cleanse(v);
    }
    Some(k)
}

/// How a ticket's key relates to the key tickets are issued under now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealed {
    /// The current period of the current secret.
    Current,
    /// The previous or next period, or the previous secret: the ticket
    /// resumes and is renewed.
    Other,
}

/// The derived keys of the periods in use.
struct Cache {
    period: u64,
    with_previous: bool,
    issue: PeriodKeys,
    accept: Vec<(PeriodKeys, Sealed)>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.issue.wipe();
        for (k, _) in &mut self.accept {
            k.wipe();
        }
    }
}

/// The secrets tickets are issued and accepted under. Times are seconds of
/// the ticket clock ([`ticket_clock`]); `seconds` is the key period.
struct Ring {
    seconds: u64,
    current: Master,
    /// The secret replaced last, still accepted until the given time.
    previous: Option<(Master, u64)>,
    cache: Option<Cache>,
}

impl Ring {
    fn new(current: Master, seconds: u64) -> Self {
        Ring { seconds: seconds.max(1), current, previous: None, cache: None }
    }

    /// Issues under `master` from now on; the secret it replaces still
    /// resumes for one period. Returns false (and changes nothing) when
    /// `master` is the current secret already.
    fn rotate(&mut self, master: Master, now: u64) -> bool {
        if master.same_as(&self.current) {
            return false;
        }
        let old = std::mem::replace(&mut self.current, master);
        self.previous = Some((old, now.saturating_add(self.seconds)));
        self.cache = None;
        true
    }

    /// Issues and accepts under `master` only, from now on: no ticket of the
    /// replaced secret resumes any more (for a secret that may be exposed).
    fn replace(&mut self, master: Master) {
        self.current = master;
        self.previous = None;
        self.cache = None;
    }

    /// The keys for `now`, derived again when the period changed or the
    /// previous secret expired.
    fn keys(&mut self, now: u64) -> Option<&Cache> {
        if self.previous.as_ref().is_some_and(|(_, until)| now >= *until) {
            self.previous = None;
        }
        let period = now / self.seconds;
        let with_previous = self.previous.is_some();
        let fresh = self.cache.as_ref().is_some_and(|c| c.period == period && c.with_previous == with_previous);
        if !fresh {
            self.cache = None;
            let issue = derive(&self.current, period)?;
            let mut accept = vec![(issue, Sealed::Current)];
            for p in [period.wrapping_sub(1), period.wrapping_add(1)] {
                accept.push((derive(&self.current, p)?, Sealed::Other));
            }
            if let Some((old, _)) = &self.previous {
                for p in [period, period.wrapping_sub(1), period.wrapping_add(1)] {
                    accept.push((derive(old, p)?, Sealed::Other));
                }
            }
            self.cache = Some(Cache { period, with_previous, issue, accept });
        }
        self.cache.as_ref()
    }

    /// The keys to seal a new ticket with at `now`.
    fn issue(&mut self, now: u64) -> Option<PeriodKeys> {
        self.keys(now).map(|c| c.issue)
    }

    /// The keys a ticket named `name` was sealed with, if it still resumes.
    fn find(&mut self, name: &[u8], now: u64) -> Option<(PeriodKeys, Sealed)> {
        self.keys(now)?.accept.iter().find(|(k, _)| k.name[..] == *name).copied()
    }
}

/// Why a ticket key file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyFileError {
    /// It could not be opened or read (the OS's reason).
    Io(String),
    /// A directory, FIFO, device or socket.
    NotRegular,
    /// Group or others may read or write it (the permission bits).
    Exposed(u32),
    /// It holds fewer than [`MIN_KEY_FILE_BYTES`] bytes.
    TooShort(usize),
    /// It holds more than [`MAX_KEY_FILE_BYTES`] bytes.
    TooLong,
    /// OpenSSL failed to derive the secret.
    Derive,
}

impl KeyFileError {
    /// True when the refusal means the secret may have been seen by others.
    fn exposed(&self) -> bool {
        matches!(self, KeyFileError::Exposed(_))
    }
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Io(reason) => f.write_str(reason),
            KeyFileError::NotRegular => f.write_str("not a regular file"),
            KeyFileError::Exposed(mode) => write!(
                f,
                "readable or writable by group or others (mode {mode:04o}); a ticket key file must be readable by its owner only (chmod 600)"
            ),
            KeyFileError::TooShort(n) => write!(
                f,
                "holds {n} bytes; a ticket key file needs at least {MIN_KEY_FILE_BYTES} random bytes (openssl rand 48 > FILE)"
            ),
            KeyFileError::TooLong => write!(f, "holds more than {MAX_KEY_FILE_BYTES} bytes; a ticket key file holds 32 to {MAX_KEY_FILE_BYTES} random bytes"),
            KeyFileError::Derive => f.write_str("OpenSSL could not derive a key from it"),
        }
    }
}

/// Reads a ticket key file (following symlinks) and derives its secret.
/// The file's bytes are wiped once the secret is derived.
fn read_key_file(path: &str) -> Result<Master, KeyFileError> {
    let io = |e: std::io::Error| KeyFileError::Io(super::error::os_reason(&e));
    // O_NONBLOCK: opening a FIFO with no writer must not hang; regular
    // files ignore the flag.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular);
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed(mode));
    }
    let mut bytes = Vec::with_capacity(MAX_KEY_FILE_BYTES + 1);
    let read = file.take(MAX_KEY_FILE_BYTES as u64 + 1).read_to_end(&mut bytes);
    let verdict = match read {
        Err(e) => Err(io(e)),
        Ok(_) if bytes.len() > MAX_KEY_FILE_BYTES => Err(KeyFileError::TooLong),
        Ok(_) if bytes.len() < MIN_KEY_FILE_BYTES => Err(KeyFileError::TooShort(bytes.len())),
        Ok(_) => Master::from_file_bytes(&bytes).ok_or(KeyFileError::Derive),
    };
    super::sys::cleanse(&mut bytes);
    verdict
}

/// What a `stat` of the key file (following symlinks) says; a change of any
/// field means the file is read again. `None`: the file cannot be stat'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &str) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            uid: m.uid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The key file of `FIO_TLS_TICKET_KEY_FILE` and what this process saw of it.
struct KeyFile {
    path: String,
    seen: Option<Stamp>,
    /// The ring's current secret is the file's.
    in_use: bool,
    /// The per-process secret, used while the file is refused.
    process: Master,
}

/// The process-wide ticket state. The handshake path takes only `ring`; the
/// watcher takes `file` for a whole check (stat and read) and `ring` only to
/// swap in a secret already derived, so no handshake waits for the disk.
struct State {
    /// `None`: OpenSSL's RNG failed, tickets are refused.
    ring: Mutex<Option<Ring>>,
    file: Mutex<Option<KeyFile>>,
}

static STATE: Lazy<State> = Lazy::new(|| {
    let process = Master::random();
    let path = std::env::var("FIO_TLS_TICKET_KEY_FILE").ok().filter(|p| !p.is_empty());
    let mut file = None;
    let mut current = process.as_ref().map(Master::duplicate);
    if let (Some(path), Some(process)) = (path, process) {
        let seen = Stamp::of(&path);
        let in_use = match read_key_file(&path) {
            Ok(secret) => {
                log_info!("session ticket keys derive from the ticket key file \"{path}\"");
                current = Some(secret);
                true
            }
            Err(e) => {
                log_error!(
                    "session ticket key file \"{path}\": {e}; session tickets use a per-process secret instead (no resumption across hosts)"
                );
                false
            }
        };
        file = Some(KeyFile { path, seen, in_use, process });
    }
    State { ring: Mutex::new(current.map(|m| Ring::new(m, key_seconds()))), file: Mutex::new(file) }
});

fn ring() -> MutexGuard<'static, Option<Ring>> {
    STATE.ring.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one check of the key file did.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    /// The file's stat is what the last check saw.
    Unchanged,
    /// The file changed but holds the secret in use (touched, rewritten
    /// with the same bytes, a symlink switched to a copy).
    Same,
    /// A new secret seals new tickets; the replaced one (the file's, or the
    /// per-process one) still resumes for one period.
    Rotated { was_file: bool },
    /// Refused; the keys stay as they were.
    Refused(KeyFileError),
    /// Refused because others may read it: its secret is no longer used
    /// (`was_file`: it was in use until now).
    Dropped { error: KeyFileError, was_file: bool },
}

/// One check of `file` at ticket-clock time `now`: a `stat`, and when it
/// changed, a read of the file outside `ring`'s lock, then a swap under it.
fn check_file(file: &mut KeyFile, ring: &Mutex<Option<Ring>>, now: u64) -> Checked {
    let stamp = Stamp::of(&file.path);
    if stamp == file.seen {
        return Checked::Unchanged;
    }
    file.seen = stamp;
    let lock = || ring.lock().unwrap_or_else(|p| p.into_inner());
    match read_key_file(&file.path) {
        Ok(secret) => {
            let mut ring = lock();
            let Some(ring) = ring.as_mut() else { return Checked::Same };
            let was_file = std::mem::replace(&mut file.in_use, true);
            if ring.rotate(secret, now) {
                Checked::Rotated { was_file }
            } else {
                Checked::Same
            }
        }
        Err(error) if error.exposed() => {
            let was_file = std::mem::replace(&mut file.in_use, false);
            if was_file {
                if let Some(ring) = lock().as_mut() {
                    ring.replace(file.process.duplicate());
                }
            }
            Checked::Dropped { error, was_file }
        }
        Err(error) => Checked::Refused(error),
    }
}

/// Checks the ticket key file of `FIO_TLS_TICKET_KEY_FILE` now, in this
/// process: one `stat` (following symlinks) when nothing changed. When the
/// file changed, it is read again:
/// - a good new secret seals new tickets at once and the replaced secret
///   still resumes for one key period (one INFO line);
/// - a refused file is one ERROR line per change, naming the file and the
///   reason; the keys stay as they were (a half-written file is retried at
///   its next change), except for a file that group or others may read:
///   its secret may be known to others, so it is no longer used at all and
///   tickets use the per-process secret.
///
/// A no-op without the variable, before the first server context exists,
/// and while another thread runs a check. Meant for a per-process timer and
/// for an explicit reload request; never call it from a read/write hook (it
/// may read the disk). Thread-safe.
pub fn check_key_file() {
    let Some(state) = Lazy::get(&STATE) else { return };
    let Ok(mut guard) = state.file.try_lock() else { return };
    let Some(file) = guard.as_mut() else { return };
    let Some(now) = ticket_clock() else { return };
    let path = file.path.clone();
    match check_file(file, &state.ring, now) {
        Checked::Unchanged | Checked::Same => {}
        Checked::Rotated { was_file } => log_info!(
            "session ticket key file \"{path}\": new secret; new tickets are sealed with it, and tickets of the {} secret still resume for {} s",
            if was_file { "previous" } else { "per-process" },
            key_seconds()
        ),
        Checked::Refused(e) => log_error!(
            "session ticket key file \"{path}\": {e}; the session ticket keys stay as they were (the file is read again when it changes)"
        ),
        Checked::Dropped { error, was_file: true } => log_error!(
            "session ticket key file \"{path}\": {error}; its secret is no longer used: session tickets use a per-process secret instead (no resumption across hosts)"
        ),
        Checked::Dropped { error, was_file: false } => {
            log_error!("session ticket key file \"{path}\": {error}; session tickets keep using a per-process secret")
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

// the cipher context and the AES calls are openssl-sys's; the MAC context
// and OSSL_PARAM (OpenSSL 3.0's) are not in it
use openssl_sys::{EVP_CIPHER_CTX as EvpCipherCtx, EVP_DecryptInit_ex, EVP_EncryptInit_ex, EVP_aes_256_cbc};
enum EvpMacCtx {}

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

/// The ticket callback's answer for a ticket that decrypts: 1 resumes
/// without a new ticket, 2 resumes and issues a fresh one. TLS 1.3 always
/// gets a fresh ticket (clients use each one once); TLS 1.2 gets one when
/// the ticket was not sealed with the current key (RFC 5077 renewal).
fn resume_verdict(tls13: bool, sealed: Sealed) -> c_int {
    if tls13 || sealed == Sealed::Other {
        2
    } else {
        1
    }
}

/// OpenSSL's ticket key callback: 1 = use (encrypt, or decrypt and resume),
/// 2 = decrypt, resume and issue a fresh ticket, 0 = unknown key (full
/// handshake), -1 = error.
unsafe extern "C" fn ticket_key_cb(
    ssl: *mut openssl_sys::SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut EvpCipherCtx,
    hctx: *mut EvpMacCtx,
    enc: c_int,
) -> c_int {
    let run = || -> c_int {
        let Some(now) = ticket_clock() else { return -1 };
        let name = std::slice::from_raw_parts_mut(key_name, 16);
        let iv = std::slice::from_raw_parts_mut(iv, 16);
        if enc == 1 {
            let Some(mut keys) = ring().as_mut().and_then(|r| r.issue(now)) else { return -1 };
            let ok = openssl::rand::rand_bytes(iv).is_ok() && {
                name.copy_from_slice(&keys.name);
                EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), core::ptr::null_mut(), keys.aes.as_ptr(), iv.as_ptr()) == 1
                    && set_hmac_key(hctx, &keys.hmac)
            };
            keys.wipe();
            return if ok { 1 } else { -1 };
        }
        let Some((mut keys, sealed)) = ring().as_mut().and_then(|r| r.find(name, now)) else { return 0 };
        let ok = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), core::ptr::null_mut(), keys.aes.as_ptr(), iv.as_ptr()) == 1
            && set_hmac_key(hctx, &keys.hmac);
        keys.wipe();
        if !ok {
            return -1;
        }
        // The protocol version is settled before the ticket is read (TLS
        // 1.3: the pre_shared_key extension comes after supported_versions).
        resume_verdict(openssl_sys::SSL_version(ssl) == openssl_sys::TLS1_3_VERSION, sealed)
    };
    crate::ffi::boundary::ffi_boundary!("session ticket callback", { run() })
}

/// Makes `b` issue and accept tickets under the rotated, shared keys.
pub fn install(b: &mut SslContextBuilder) {
    // Make the secret (and read FIO_TLS_TICKET_KEY_FILE) now, before any
    // fork, not at the first ticket.
    Lazy::force(&STATE);
    let ctx = b.as_ptr();
    // SAFETY: ctx is the live context being built; the callback is static.
    unsafe {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::TempDir;
    use openssl::ssl::{Ssl, SslContext, SslMethod, SslSession, SslSessionCacheMode, SslVerifyMode, SslVersion};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key file of `bytes` with permission bits `mode`.
    fn key_file(dir: &TempDir, name: &str, bytes: &[u8], mode: u32) -> String {
        let path = dir.file(name, bytes);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        openssl::rand::rand_bytes(&mut v).unwrap();
        v
    }

    #[test]
    fn periods_have_distinct_keys_and_derivation_is_stable() {
        let master = Master([7u8; 32]);
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

    #[test]
    fn hosts_with_the_same_key_file_derive_the_same_keys() {
        let dir = TempDir::new("tickets-derive");
        let secret = random_bytes(48);
        // two hosts: two copies of the file, read independently
        let host_a = read_key_file(&key_file(&dir, "a.key", &secret, 0o600)).unwrap();
        let host_b = read_key_file(&key_file(&dir, "b.key", &secret, 0o400)).unwrap();
        assert!(host_a.same_as(&host_b));
        let (ka, kb) = (derive(&host_a, 123_456).unwrap(), derive(&host_b, 123_456).unwrap());
        assert_eq!((ka.name, ka.aes, ka.hmac), (kb.name, kb.aes, kb.hmac));
        // another secret, or one more byte, is another key
        let other = read_key_file(&key_file(&dir, "c.key", &random_bytes(48), 0o600)).unwrap();
        assert!(!other.same_as(&host_a));
        let mut longer = secret.clone();
        longer.push(0);
        assert!(!read_key_file(&key_file(&dir, "d.key", &longer, 0o600)).unwrap().same_as(&host_a));
        // the file's secret is not the file's bytes, nor a per-process secret
        assert_ne!(&host_a.0[..], &secret[..32]);
        assert!(!Master::random().unwrap().same_as(&host_a));
    }

    #[test]
    fn key_file_derivation_matches_its_definition() {
        // Known answers computed independently (Python: hmac.new(label,
        // secret, sha256)), so that every version of the library in a
        // fleet derives the same keys from one file.
        let dir = TempDir::new("tickets-kat");
        let secret: Vec<u8> = (0u8..48).collect();
        let master = read_key_file(&key_file(&dir, "kat.key", &secret, 0o600)).unwrap();
        assert_eq!(hex(&master.0), "6d06ed80342fd64f87d48f084f852fee81fb122a3a127092f63f0ac8cfec4158");
        assert_eq!(hex(&derive(&master, 480_000).unwrap().name), "2bc04e5384635cccc3cfedde2152e915");
    }

    #[test]
    fn tickets_of_the_previous_and_next_period_are_accepted() {
        const P: u64 = 60;
        let secret = Master::random().unwrap();
        let mut host_a = Ring::new(secret.duplicate(), P);
        let mut host_b = Ring::new(secret, P);
        let now = 100 * P + 17;
        let ticket = host_a.issue(now).unwrap();
        // same period: the current key, no renewal needed
        let (k, sealed) = host_b.find(&ticket.name, now).unwrap();
        assert_eq!((k.aes, k.hmac, sealed), (ticket.aes, ticket.hmac, Sealed::Current));
        // B's clock one period behind (A's ticket is of B's next period),
        // or one ahead (of B's previous period): accepted, renewed
        for b_now in [now - P, now + P, 99 * P, 101 * P + P - 1] {
            let (k, sealed) = host_b.find(&ticket.name, b_now).unwrap_or_else(|| panic!("refused at {b_now}"));
            assert_eq!((k.aes, sealed), (ticket.aes, Sealed::Other), "at {b_now}");
        }
        // two periods apart: a full handshake
        for b_now in [now - 2 * P, now + 2 * P, 98 * P + P - 1, 102 * P] {
            assert!(host_b.find(&ticket.name, b_now).is_none(), "accepted at {b_now}");
        }
        // a host with another secret accepts none of them
        let mut stranger = Ring::new(Master::random().unwrap(), P);
        for t in [now - P, now, now + P] {
            assert!(stranger.find(&ticket.name, t).is_none());
        }
    }

    #[test]
    fn a_new_secret_issues_at_once_and_the_old_one_resumes_for_one_period() {
        const P: u64 = 60;
        let (old, new) = (Master::random().unwrap(), Master::random().unwrap());
        let mut ring = Ring::new(old.duplicate(), P);
        let mut old_only = Ring::new(old, P);
        let mut new_only = Ring::new(new.duplicate(), P);
        let t0 = 500 * P + 30;
        let old_ticket = ring.issue(t0).unwrap();
        assert!(!ring.rotate(old_only.current.duplicate(), t0), "the same secret is no rotation");
        assert!(ring.rotate(new.duplicate(), t0 + 1));
        // new tickets: sealed with the new secret right away (same period)
        let new_ticket = ring.issue(t0 + 1).unwrap();
        assert_ne!(new_ticket.name, old_ticket.name);
        assert!(new_only.find(&new_ticket.name, t0 + 1).is_some());
        assert!(old_only.find(&new_ticket.name, t0 + 1).is_none());
        assert_eq!(ring.find(&new_ticket.name, t0 + 1).unwrap().1, Sealed::Current);
        // the old secret's ticket: resumes (renewed) for one period after
        // the change, then no more
        assert_eq!(ring.find(&old_ticket.name, t0 + 1).unwrap().1, Sealed::Other);
        assert_eq!(ring.find(&old_ticket.name, t0 + P).unwrap().1, Sealed::Other);
        assert!(ring.find(&old_ticket.name, t0 + 1 + P).is_none());
        // while the new secret's tickets of that time still resume
        assert!(ring.find(&new_ticket.name, t0 + 1 + P).is_some());
        // a replaced (exposed) secret stops at once
        ring.replace(Master::random().unwrap());
        assert!(ring.find(&new_ticket.name, t0 + 2).is_none());
    }

    #[test]
    fn exposed_short_long_and_odd_key_files_are_refused() {
        let dir = TempDir::new("tickets-refuse");
        let good = random_bytes(48);
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let path = key_file(&dir, &format!("m{mode:o}.key"), &good, mode);
            assert_eq!(read_key_file(&path).err(), Some(KeyFileError::Exposed(mode)), "mode {mode:o}");
        }
        let e = read_key_file(&key_file(&dir, "open.key", &good, 0o644)).unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
        for n in [0, 1, 16, 31] {
            let path = key_file(&dir, &format!("short{n}.key"), &random_bytes(n), 0o600);
            assert_eq!(read_key_file(&path).err(), Some(KeyFileError::TooShort(n)));
        }
        let long = key_file(&dir, "long.key", &vec![1u8; MAX_KEY_FILE_BYTES + 1], 0o600);
        assert_eq!(read_key_file(&long).err(), Some(KeyFileError::TooLong));
        for (n, mode) in [(32, 0o600), (48, 0o400), (MAX_KEY_FILE_BYTES, 0o600)] {
            let path = key_file(&dir, &format!("ok{n}.key"), &random_bytes(n), mode);
            assert!(read_key_file(&path).is_ok(), "{n} bytes, mode {mode:o}");
        }
        let missing = dir.0.join("missing.key");
        assert_eq!(
            read_key_file(missing.to_str().unwrap()).err(),
            Some(KeyFileError::Io("No such file or directory".into()))
        );
        let sub = dir.0.join("a-directory");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(read_key_file(sub.to_str().unwrap()).err(), Some(KeyFileError::NotRegular));
        // a FIFO without a writer: refused, without hanging
        let fifo = dir.0.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_key_file(fifo.to_str().unwrap()).err(), Some(KeyFileError::NotRegular));
        // a symlink to a good file is followed
        let target = key_file(&dir, "target.key", &good, 0o600);
        let link = dir.0.join("link.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_key_file(link.to_str().unwrap()).unwrap().same_as(&read_key_file(&target).unwrap()));
    }

    /// A watched key file as the process-wide state holds one, for `path`
    /// read at start-up (as `STATE` does).
    fn watched(path: &str, seconds: u64) -> (KeyFile, Mutex<Option<Ring>>, Master) {
        let process = Master::random().unwrap();
        let (current, in_use) = match read_key_file(path) {
            Ok(m) => (m, true),
            Err(_) => (process.duplicate(), false),
        };
        let file = KeyFile { path: path.into(), seen: Stamp::of(path), in_use, process: process.duplicate() };
        (file, Mutex::new(Some(Ring::new(current, seconds))), process)
    }

    fn issue(ring: &Mutex<Option<Ring>>, now: u64) -> [u8; 16] {
        ring.lock().unwrap().as_mut().unwrap().issue(now).unwrap().name
    }

    fn resumes(ring: &Mutex<Option<Ring>>, name: &[u8; 16], now: u64) -> bool {
        ring.lock().unwrap().as_mut().unwrap().find(name, now).is_some()
    }

    #[test]
    fn the_watched_file_rotates_and_refusals_keep_or_drop_the_secret() {
        const P: u64 = 60;
        let dir = TempDir::new("tickets-watch");
        let path = key_file(&dir, "fleet.key", &random_bytes(48), 0o600);
        let (mut file, ring, process) = watched(&path, P);
        let now = 1000 * P + 5;
        assert!(file.in_use);
        let first = issue(&ring, now);
        assert_eq!(check_file(&mut file, &ring, now), Checked::Unchanged);

        // a new secret renamed over the file (how a deploy tool replaces it)
        let staged = key_file(&dir, "fleet.key.new", &random_bytes(48), 0o600);
        std::fs::rename(&staged, &path).unwrap();
        assert_eq!(check_file(&mut file, &ring, now + 1), Checked::Rotated { was_file: true });
        assert_eq!(check_file(&mut file, &ring, now + 2), Checked::Unchanged, "one reload per change");
        let second = issue(&ring, now + 2);
        assert_ne!(second, first, "the new secret seals at once");
        assert!(resumes(&ring, &first, now + 2) && resumes(&ring, &first, now + 1 + P - 1));
        assert!(!resumes(&ring, &first, now + 1 + P), "the old secret resumes one period only");

        // the same bytes written again: no rotation, the old secret is kept
        // for its period
        let bytes = random_bytes(48);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(check_file(&mut file, &ring, now + 3), Checked::Rotated { .. }));
        let third = issue(&ring, now + 3);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(check_file(&mut file, &ring, now + 4), Checked::Same);
        assert!(resumes(&ring, &second, now + 4));

        // half-written (short) or deleted: refused, keys unchanged, retried
        // at the next change
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(check_file(&mut file, &ring, now + 5), Checked::Refused(KeyFileError::TooShort(10)));
        assert_eq!(check_file(&mut file, &ring, now + 6), Checked::Unchanged, "one ERROR per change");
        assert_eq!(issue(&ring, now + 6), third);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(check_file(&mut file, &ring, now + 7), Checked::Refused(KeyFileError::Io(_))));
        assert_eq!(check_file(&mut file, &ring, now + 8), Checked::Unchanged);
        assert_eq!(issue(&ring, now + 8), third);
        key_file(&dir, "fleet.key", &bytes, 0o600);
        assert_eq!(check_file(&mut file, &ring, now + 9), Checked::Same);

        // made readable by others: the secret is dropped at once
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check_file(&mut file, &ring, now + 10),
            Checked::Dropped { error: KeyFileError::Exposed(0o644), was_file: true }
        );
        assert!(!resumes(&ring, &third, now + 10));
        assert_eq!(issue(&ring, now + 10), derive(&process, (now + 10) / P).unwrap().name);
        // fixed again: back to the file's secret, the per-process one kept
        // for a period
        let fourth_bytes = random_bytes(64);
        key_file(&dir, "fleet.key.2", &fourth_bytes, 0o600);
        std::fs::rename(dir.0.join("fleet.key.2"), &path).unwrap();
        let before = issue(&ring, now + 11);
        assert_eq!(check_file(&mut file, &ring, now + 11), Checked::Rotated { was_file: false });
        assert!(resumes(&ring, &before, now + 12));
        assert_ne!(issue(&ring, now + 12), before);
    }

    #[test]
    fn a_file_refused_at_start_leaves_the_per_process_secret_until_fixed() {
        const P: u64 = 60;
        let dir = TempDir::new("tickets-start");
        let secret = random_bytes(48);
        let path = key_file(&dir, "fleet.key", &secret, 0o644);
        let (mut file, ring, process) = watched(&path, P);
        assert!(!file.in_use);
        let now = 77 * P;
        assert_eq!(issue(&ring, now), derive(&process, 77).unwrap().name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check_file(&mut file, &ring, now), Checked::Rotated { was_file: false });
        let from_file = read_key_file(&path).unwrap();
        assert_eq!(issue(&ring, now), derive(&from_file, 77).unwrap().name);
    }

    #[test]
    fn tls13_resumptions_get_a_fresh_ticket_tls12_renews_other_periods_only() {
        assert_eq!(resume_verdict(true, Sealed::Current), 2);
        assert_eq!(resume_verdict(true, Sealed::Other), 2);
        assert_eq!(resume_verdict(false, Sealed::Current), 1);
        assert_eq!(resume_verdict(false, Sealed::Other), 2);
    }

    /// A client context that keeps every session (ticket) it receives.
    fn client(version: SslVersion, got: Arc<Mutex<Vec<SslSession>>>) -> SslContext {
        let mut b = SslContext::builder(SslMethod::tls_client()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_min_proto_version(Some(version)).unwrap();
        b.set_max_proto_version(Some(version)).unwrap();
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        b.set_new_session_callback(move |_, s| got.lock().unwrap().push(s));
        b.build()
    }

    /// One connection offering `session`: (resumed, tickets received).
    fn connect(server: &SslContext, client: &SslContext, got: &Mutex<Vec<SslSession>>, session: Option<&SslSession>) -> (bool, usize) {
        let before = got.lock().unwrap().len();
        let (a, b) = UnixStream::pair().unwrap();
        let server = server.clone();
        let t = std::thread::spawn(move || {
            let mut s = Ssl::new(&server).unwrap().accept(a).unwrap();
            std::io::Write::write_all(&mut s, b"hi").unwrap();
            let mut buf = [0u8; 1];
            let _ = std::io::Read::read(&mut s, &mut buf); // until the client's close_notify
        });
        let mut ssl = Ssl::new(client).unwrap();
        ssl.set_hostname("localhost").unwrap();
        if let Some(sess) = session {
            // SAFETY: the session comes from this client context.
            unsafe { ssl.set_session(sess).unwrap() };
        }
        let mut c = ssl.connect(b).unwrap();
        let mut buf = [0u8; 2];
        std::io::Read::read_exact(&mut c, &mut buf).unwrap(); // tickets arrive before the data
        let resumed = c.ssl().session_reused();
        c.shutdown().unwrap();
        drop(c);
        t.join().unwrap();
        (resumed, got.lock().unwrap().len() - before)
    }

    #[test]
    fn a_resumed_tls13_handshake_gets_a_fresh_ticket_each_time() {
        let mut cfg: crate::tls::TlsConfig<u8> = crate::tls::TlsConfig::new(Some("localhost"), None, None).unwrap();
        let server = cfg.build().unwrap().server;
        let got = Arc::new(Mutex::new(Vec::new()));
        let cl = client(SslVersion::TLS1_3, got.clone());
        let (resumed, n) = connect(&server, &cl, &got, None);
        assert!(!resumed && n >= 1, "full handshake, {n} tickets");
        // each connection offers the newest ticket once
        let mut used = Vec::new();
        for i in 0..5 {
            let ticket = got.lock().unwrap().last().unwrap().clone();
            let id = ticket.id().to_vec();
            assert!(!used.contains(&id), "ticket offered twice");
            used.push(id);
            let (resumed, n) = connect(&server, &cl, &got, Some(&ticket));
            assert!(resumed, "connection {i} did not resume");
            assert_eq!(n, 1, "connection {i}: a resumed TLS 1.3 handshake gets one fresh ticket");
        }
    }

    #[test]
    fn a_resumed_tls12_handshake_in_the_same_period_keeps_its_ticket() {
        let mut cfg: crate::tls::TlsConfig<u8> = crate::tls::TlsConfig::new(Some("localhost"), None, None).unwrap();
        let server = cfg.build().unwrap().server;
        let got = Arc::new(Mutex::new(Vec::new()));
        let cl = client(SslVersion::TLS1_2, got.clone());
        assert_eq!(connect(&server, &cl, &got, None), (false, 1));
        let ticket = got.lock().unwrap()[0].clone();
        // RFC 5077: no new ticket while the key period is current (a period
        // boundary between the two connections would renew it; the default
        // period is an hour)
        assert_eq!(connect(&server, &cl, &got, Some(&ticket)), (true, 0));
    }
}
