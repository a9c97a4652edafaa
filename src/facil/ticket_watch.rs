//! Runs the session ticket key file check ([`tickets::check_key_file`]) in
//! every process that serves TLS, every `FIO_TLS_RELOAD_SECONDS` (the
//! certificate watcher's interval: default 10 s, `0` turns watching off).
//!
//! facil.io's workers are forked processes, each with its own timers, so
//! the check rides on the per-process timer of the handshake deadline
//! sweep (`hooks.rs`), which each process starts at its first TLS
//! connection: [`tick`] runs at that start (so a worker's first ticket is
//! sealed with the file as it is now) and at every sweep, and checks when
//! the interval has passed. Neither runs inside a read/write hook.
//!
//! Merge note: once the certificate watcher has its own per-process timer,
//! `tickets::check_key_file()` belongs on that timer (and in the explicit
//! reload), and this file goes.

use crate::tls::tickets;
use once_cell::sync::Lazy;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const DEFAULT_RELOAD_SECONDS: u64 = 10;

/// `FIO_TLS_RELOAD_SECONDS` (0..=86400), read once per process; a value
/// out of range means the default (the certificate watcher reports it).
fn interval() -> u64 {
    static VALUE: Lazy<u64> = Lazy::new(|| {
        std::env::var("FIO_TLS_RELOAD_SECONDS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n <= 86400)
            .unwrap_or(DEFAULT_RELOAD_SECONDS)
    });
    *VALUE
}

/// The process that checked last, and when.
static LAST: Mutex<Option<(i32, Instant)>> = Mutex::new(None);

/// Checks the key file when this process has not checked it for
/// `FIO_TLS_RELOAD_SECONDS`, or never (a new worker). Cheap otherwise.
pub fn tick() {
    let seconds = interval();
    if seconds == 0 {
        return;
    }
    // SAFETY: getpid(2) has no preconditions.
    let pid = unsafe { libc::getpid() };
    let now = Instant::now();
    {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let due = match *last {
            Some((p, at)) => p != pid || now.duration_since(at) >= Duration::from_secs(seconds),
            None => true,
        };
        if !due {
            return;
        }
        *last = Some((pid, now));
    }
    tickets::check_key_file();
}
