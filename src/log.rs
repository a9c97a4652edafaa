//! Log lines in facil.io's format (`ERROR: ...`, `WARNING: ...`) on stderr.
//!
//! The level is facil.io's own `FIO_LOG_LEVEL` (0 none .. 5 debug), read at
//! every call so that a host changing it at run time is obeyed. Without
//! facil.io in the process (unit tests) the level is facil.io's release
//! default, INFO. Each line is written with a single `write(2)` so lines from
//! several threads never interleave.

use std::fmt;

/// facil.io's levels (`FIO_LOG_LEVEL_*` in fio.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 2,
    Warning = 3,
    Info = 4,
    Debug = 5,
}

impl Level {
    fn prefix(self) -> &'static str {
        match self {
            Level::Error => "ERROR: ",
            Level::Warning => "WARNING: ",
            Level::Info => "INFO: ",
            Level::Debug => "DEBUG: ",
        }
    }
}

/// True when a line at `level` would be printed now.
pub fn enabled(level: Level) -> bool {
    let current = crate::facil::sys::log_level().unwrap_or(Level::Info as i32);
    (level as i32) <= current
}

/// Writes one line `"<LEVEL>: fio_tls: <message>\n"` if `level` is enabled.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if enabled(level) {
        emit(level, args);
    }
}

/// [`write`] for the checks that run when the library is loaded, before
/// `main`: facil.io 0.7.x's fio.h gives every file that includes it a weak
/// zero `FIO_LOG_LEVEL`, which often wins over fio.c's INFO default, and
/// the application has had no chance to set it yet; a level of 0 then
/// counts as facil.io's default (INFO).
pub fn write_at_load(level: Level, args: fmt::Arguments<'_>) {
    let current = crate::facil::sys::log_level().filter(|&l| l != 0).unwrap_or(Level::Info as i32);
    if (level as i32) <= current {
        emit(level, args);
    }
}

fn emit(level: Level, args: fmt::Arguments<'_>) {
    let mut line = String::with_capacity(128);
    line.push_str(level.prefix());
    line.push_str("fio_tls: ");
    let _ = fmt::write(&mut line, args);
    // One line per event: never let a reason string break the line.
    let mut line = line.replace(['\n', '\r'], " ");
    line.push('\n');
    // Unit tests: through the test harness's capture, so that a line
    // logged by one test never lands inside another test's "test ... ok"
    // line (c_tests/suites/test_rust.py reads those); shown for failures.
    #[cfg(test)]
    eprint!("{line}");
    // SAFETY: plain write(2) of an owned buffer to stderr; a short or failed
    // write of a log line is not worth reporting.
    #[cfg(not(test))]
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
    }
}

macro_rules! log_error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}
macro_rules! log_warning {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warning, format_args!($($arg)*)) };
}
#[allow(unused_macros)] // kept with its siblings; the INFO lines use write()
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}
macro_rules! log_debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}
#[allow(unused_imports)]
pub(crate) use {log_debug, log_error, log_info, log_warning};
