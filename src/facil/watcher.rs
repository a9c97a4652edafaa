//! The per-process timer that checks watched certificate and CA files.
//!
//! facil.io forks its workers after the application made its `fio_tls_s`
//! objects, and each process has its own reactor, timers and copy of the
//! objects: every process must check its own copies. facil.io 0.7.0.beta4
//! keeps the timers made before `fio_start` in the forked workers (its
//! `fio_on_fork` resets the timer lock, not the list), so one
//! `fio_run_every` made when the first object is created runs in the root
//! and in every worker. A process that makes an object and has not run
//! the timer yet (an object made in a worker) arms its own; a second timer
//! inherited from the parent is then harmless: a tick that comes less than
//! half a period after the last one, or while a pass is still under way,
//! does nothing.
//!
//! A pass over many files runs in slices of [`SLICE`] certificates, each
//! slice a facil.io task of its own (`fio_defer`), so that a server with
//! ten thousand watched pairs keeps serving between slices even with
//! `fio_start(.threads = 1)`. No thread is made (a thread alive in the root
//! process when facil.io forks could leave a lock held forever in the
//! child).

use super::sys;
use crate::ffi::boundary::ffi_boundary;
use libc::c_void;
use once_cell::sync::OnceCell;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Certificates looked at per slice of a pass (two `stat` calls each).
pub const SLICE: usize = 256;
/// The period of the maintenance-only timer when watching is off
/// (`FIO_TLS_RELOAD_SECONDS=0`): expiry reports and self-signed renewal.
pub const MAINTENANCE_SECONDS: u64 = 3600;

/// One pass over every live object; `step` does up to `budget`
/// certificates and returns whether there is more to do.
pub trait Pass: Send {
    fn step(&mut self, budget: usize) -> bool;
}

/// Makes a new pass; `files` is false when only maintenance is due
/// (watching is off).
pub type PassMaker = fn(files: bool) -> Box<dyn Pass>;

struct Timer {
    make: PassMaker,
    period: Duration,
    files: bool,
}

static TIMER: OnceCell<Timer> = OnceCell::new();
/// The process whose reactor has a timer (armed here or inherited).
static ARMED_PID: AtomicI32 = AtomicI32::new(0);
/// The process running a pass now (0: none).
static RUNNING_PID: AtomicI32 = AtomicI32::new(0);
/// When this process last started a pass.
static LAST_PASS: Mutex<Option<(i32, Instant)>> = Mutex::new(None);

/// What else runs at the start of every pass (see [`on_each_pass`]).
static HOOKS: Mutex<Vec<fn(bool)>> = Mutex::new(Vec::new());

/// Registers `hook` to run at the start of every pass of the watch timer,
/// in every process, on a facil.io thread, with `files` (false when
/// watching is off and only maintenance runs). For other watched files
/// (a ticket key file, say): [`crate::tls::watch::Watch`] does the stat
/// bookkeeping. The timer exists once a `fio_tls_s` was made (and
/// facil.io runs). A hook should be quick: it holds up that facil.io
/// thread. A panic in it is caught by the timer's panic boundary (one
/// ERROR line; that pass is skipped). Registering the same hook twice
/// keeps one.
pub fn on_each_pass(hook: fn(bool)) {
    let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    if !hooks.iter().any(|h| *h as usize == hook as usize) {
        hooks.push(hook);
    }
}

/// Runs the hooks of [`on_each_pass`].
fn run_hooks(files: bool) {
    let hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for hook in hooks {
        hook(files);
    }
}

fn pid() -> i32 {
    // SAFETY: getpid(2) has no preconditions.
    unsafe { libc::getpid() }
}

/// How often the timer fires at most (see `arm`).
const TICK: Duration = Duration::from_millis(1000);

/// Arms the timer in this process unless it has one: every `reload_seconds`
/// (watching on), or every [`MAINTENANCE_SECONDS`] (watching off). Does
/// nothing without facil.io.
pub fn arm(reload_seconds: u64, make: PassMaker) {
    if !sys::host_present() {
        return;
    }
    let timer = TIMER.get_or_init(|| {
        let (secs, files) = if reload_seconds == 0 { (MAINTENANCE_SECONDS, false) } else { (reload_seconds, true) };
        Timer { make, period: Duration::from_secs(secs), files }
    });
    let me = pid();
    if ARMED_PID.swap(me, Ordering::AcqRel) == me {
        return;
    }
    // facil.io 0.7.0.beta4 fires intervals above one second late (about
    // twice the interval: fio_timer_calc_due): tick every second at most
    // and start a pass when the period has passed (see `tick`).
    let ms = timer.period.as_millis().min(TICK.as_millis()) as usize;
    if sys::run_every(ms, tick).is_err() {
        ARMED_PID.store(0, Ordering::Release);
    }
}

unsafe extern "C" fn tick(_arg: *mut c_void) {
    ffi_boundary!("certificate watch timer", on_panic = RUNNING_PID.store(0, Ordering::Release), {
        let Some(timer) = TIMER.get() else { return };
        let me = pid();
        // The timer runs here (inherited ones included): no second one.
        ARMED_PID.store(me, Ordering::Release);
        if RUNNING_PID.load(Ordering::Acquire) == me {
            return;
        }
        {
            let mut last = LAST_PASS.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some((p, t)) = *last {
                // half a tick of slack, so that a period of N ticks is N
                // ticks and not N + 1
                if p == me && now.duration_since(t) + TICK / 2 < timer.period {
                    return;
                }
            }
            *last = Some((me, now));
        }
        RUNNING_PID.store(me, Ordering::Release);
        run_hooks(timer.files);
        run_slice((timer.make)(timer.files));
    })
}

/// Runs one slice; schedules the next one as a facil.io task, or ends the
/// pass.
fn run_slice(mut pass: Box<dyn Pass>) {
    while pass.step(SLICE) {
        let raw = Box::into_raw(Box::new(pass));
        // SAFETY: raw is a leaked Box, taken back by next_slice (or below
        // when facil.io refuses the task).
        match unsafe { sys::defer(next_slice, raw.cast(), core::ptr::null_mut()) } {
            Ok(0) => return,
            _ => {
                // SAFETY: not handed over.
                pass = *unsafe { Box::from_raw(raw) };
            }
        }
    }
    RUNNING_PID.store(0, Ordering::Release);
}

unsafe extern "C" fn next_slice(arg: *mut c_void, _unused: *mut c_void) {
    ffi_boundary!("certificate watch timer", on_panic = RUNNING_PID.store(0, Ordering::Release), {
        // SAFETY: made by Box::into_raw in run_slice, handed to us once.
        let pass: Box<dyn Pass> = *unsafe { Box::from_raw(arg.cast::<Box<dyn Pass>>()) };
        run_slice(pass);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static RAN: AtomicUsize = AtomicUsize::new(0);

    fn hook(files: bool) {
        RAN.fetch_add(if files { 1 } else { 100 }, Ordering::SeqCst);
    }

    #[test]
    fn hooks_run_once_each_per_pass() {
        on_each_pass(hook);
        on_each_pass(hook);
        run_hooks(true);
        run_hooks(false);
        assert_eq!(RAN.load(Ordering::SeqCst), 101);
    }
}
