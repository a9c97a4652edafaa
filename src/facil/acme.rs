//! Where the ACME client runs (see [`crate::tls::acme`]).
//!
//! The client is a thread of its own, started from the watch timer's pass
//! ([`super::watcher::on_each_pass`]), so only once facil.io runs its
//! reactor: after it forked the workers, in a process that forks no more.
//! The root process of a `workers > 1` application forks (and re-forks
//! crashed workers): `fio_is_worker()` is false there and it never starts
//! the thread, so no thread is ever inherited across `fork`. In each
//! worker (or the one process of a `workers == 1` application) a pass
//! tries the election lock without waiting ([`manager::try_elect`]); the
//! process that gets it starts the thread, which blocks on the network and
//! sleeps, never on a facil.io thread. When that process dies the lock is
//! freed and another worker takes over at its next pass.

use super::sys;
use crate::log::{self, Level};
use crate::tls::acme::{self, manager};
use std::sync::atomic::{AtomicI32, Ordering};

/// The process whose client thread runs (0: none here).
static STARTED_IN: AtomicI32 = AtomicI32::new(0);

fn pid() -> i32 {
    // SAFETY: getpid(2) has no preconditions.
    unsafe { libc::getpid() }
}

/// The watch timer's hook (every pass, every process): starts the client
/// thread in the worker that wins the election. Cheap otherwise (an open
/// and a `flock` that fails at once, per pass, in the other workers).
pub fn on_pass(_files: bool) {
    let Some(settings) = acme::settings() else { return };
    let me = pid();
    if STARTED_IN.load(Ordering::Acquire) == me || !sys::is_worker() {
        return;
    }
    let names = acme::names();
    if names.is_empty() {
        return;
    }
    let Some(lock) = manager::try_elect(&settings.dir) else { return };
    let settings = settings.clone();
    let started = std::thread::Builder::new()
        .name("fio_tls acme".into())
        .spawn(move || manager::run(settings, names, lock));
    match started {
        Ok(_) => STARTED_IN.store(me, Ordering::Release),
        Err(e) => log::write(Level::Error, format_args!("ACME: cannot start the client thread: {e}")),
    }
}
