//! Watching the files a configuration was loaded from.
//!
//! A [`Watch`] remembers what `stat(2)` said about each file of a group (a
//! private key and certificate pair, or one CA file) when the group was
//! last loaded. [`Watch::poll`] asks again: `stat` follows symlinks, so a
//! certbot-style `live/` link moved to a new file in `archive/`, a
//! Kubernetes-style `..data` directory link switched to a new directory,
//! a file renamed over the old one and a file rewritten in place all show
//! up as a different device/inode, size, mtime or ctime (nanoseconds). A
//! poll costs one `stat` per file and no allocation.
//!
//! The "never worse" bookkeeping is here too: a group that failed to load
//! remembers the stamps it failed with, so the failure is reported once per
//! change of the files, not once per check, and the next change is tried
//! again. Expiry reports ([`expiry_due`]) and the check interval
//! ([`reload_seconds`]) complete the policy; [`super::config`] applies it.

use crate::log::{self, Level};
use once_cell::sync::Lazy;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

/// Default check interval, seconds.
pub const DEFAULT_RELOAD_SECONDS: u64 = 10;
/// Longest check interval accepted, seconds (a day).
pub const MAX_RELOAD_SECONDS: u64 = 86_400;

/// The check interval: `FIO_TLS_RELOAD_SECONDS` (whole seconds, 0 to
/// 86400; 0 turns watching off), read once per process (a forked worker
/// inherits what its parent read), else [`DEFAULT_RELOAD_SECONDS`]. A
/// value that is not such a number is reported with one WARNING and the
/// default is used.
pub fn reload_seconds() -> u64 {
    static VALUE: Lazy<u64> = Lazy::new(|| parse_reload_seconds(std::env::var("FIO_TLS_RELOAD_SECONDS").ok().as_deref()));
    *VALUE
}

fn parse_reload_seconds(v: Option<&str>) -> u64 {
    let Some(v) = v else { return DEFAULT_RELOAD_SECONDS };
    match v.trim().parse::<u64>() {
        Ok(n) if n <= MAX_RELOAD_SECONDS => n,
        _ => {
            crate::log::log_warning!(
                "FIO_TLS_RELOAD_SECONDS=\"{v}\" is not a number of seconds from 0 (off) to {MAX_RELOAD_SECONDS}; \
                 using {DEFAULT_RELOAD_SECONDS}"
            );
            DEFAULT_RELOAD_SECONDS
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An ASN.1 time as seconds since the Unix epoch.
pub fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// What `stat(2)` (following symlinks) said about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    File { dev: u64, ino: u64, size: i64, mtime: (i64, i64), ctime: (i64, i64) },
    /// `stat` failed with this errno (ENOENT for a deleted file or a
    /// dangling link).
    Error(i32),
}

/// `stat(2)` of `path`, following symlinks.
pub fn stamp_of(path: &CStr) -> Stamp {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: path is NUL-terminated; st is written by stat on success.
    if unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Stamp::Error(crate::ffi::boundary::errno());
    }
    // SAFETY: stat returned 0, so st is initialised.
    let st = unsafe { st.assume_init() };
    Stamp::File {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
    }
}

/// One watched file: its path and the stamp of the copy in use.
pub struct WatchedFile {
    path: String,
    c_path: CString,
    stamp: Stamp,
}

impl WatchedFile {
    fn new(path: &str) -> Self {
        // A path with a NUL byte cannot have been loaded; it stats as
        // missing, and is never reloaded.
        let c_path = CString::new(path).unwrap_or_default();
        let stamp = stamp_of(&c_path);
        WatchedFile { path: path.to_string(), c_path, stamp }
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// The stamps of a group of files at one moment, in the group's order.
pub type Stamps = [Stamp; 2];

/// What [`Watch::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Every file is as it was when the group was loaded.
    Unchanged,
    /// Changed, but to a state that already failed to load (and was
    /// reported): nothing to do until the files change again.
    StillFailing,
    /// Changed: load the group again, and report the outcome with
    /// [`Watch::loaded`] or [`Watch::failed`] passing these stamps.
    Changed(Stamps),
}

/// How long after one file of a pair appears the other may still be
/// missing without a report, in seconds.
pub const PAIR_SETTLE_SECS: i64 = 2;

/// A group of one or two files that load together.
pub struct Watch {
    files: Vec<WatchedFile>,
    /// The stamps of the last load that failed and was reported.
    failed: Option<Stamps>,
}

impl Watch {
    /// Starts watching `paths` (one or two). Call it *before* reading the
    /// files: a change made while they are read then shows up at the next
    /// poll instead of being missed.
    pub fn new(paths: &[&str]) -> Self {
        Watch { files: paths.iter().map(|p| WatchedFile::new(p)).collect(), failed: None }
    }

    pub fn files(&self) -> &[WatchedFile] {
        &self.files
    }

    /// The stamps of the files now.
    pub fn stamps_now(&self) -> Stamps {
        let mut out = [Stamp::Error(0); 2];
        for (o, f) in out.iter_mut().zip(&self.files) {
            *o = stamp_of(&f.c_path);
        }
        out
    }

    fn stamps_loaded(&self) -> Stamps {
        let mut out = [Stamp::Error(0); 2];
        for (o, f) in out.iter_mut().zip(&self.files) {
            *o = f.stamp;
        }
        out
    }

    /// One `stat` per file: did anything change since the last load?
    pub fn poll(&self) -> Poll {
        let now = self.stamps_now();
        if now == self.stamps_loaded() {
            Poll::Unchanged
        } else if self.failed == Some(now) {
            Poll::StillFailing
        } else {
            Poll::Changed(now)
        }
    }

    /// The files as of `stamps` are in use now.
    pub fn loaded(&mut self, stamps: Stamps) {
        for (f, s) in self.files.iter_mut().zip(stamps) {
            f.stamp = s;
        }
        self.failed = None;
    }

    /// Loading the files as of `stamps` failed. Returns whether to report
    /// it: not when the files changed again while they were read (a writer
    /// still at work: the next poll tries again), not while one file of a
    /// pair is missing and the other was put in place less than
    /// [`PAIR_SETTLE_SECS`] ago (see [`Watch::pair_being_created`]), nor
    /// when this very state was reported before. `now`: seconds since the
    /// epoch.
    pub fn failed(&mut self, stamps: Stamps, now: i64) -> bool {
        if self.stamps_now() != stamps {
            return false;
        }
        if self.pair_being_created(&stamps, now) {
            return false;
        }
        if self.failed == Some(stamps) {
            return false;
        }
        self.failed = Some(stamps);
        true
    }

    /// A pair whose one file is missing (ENOENT) while the other was
    /// created, renamed or written (its ctime) at most [`PAIR_SETTLE_SECS`]
    /// before `now`: a writer that puts the files in place one at a time
    /// (ACME's first certificate of a name, `cp key.pem ...; cp cert.pem
    /// ...`) is most likely between the two. The poll after the settle time
    /// loads again and reports a file that is still missing.
    fn pair_being_created(&self, stamps: &Stamps, now: i64) -> bool {
        let group = &stamps[..self.files.len()];
        group.len() == 2
            && group.contains(&Stamp::Error(libc::ENOENT))
            && group.iter().any(|s| matches!(s, Stamp::File { ctime, .. } if now - ctime.0 <= PAIR_SETTLE_SECS))
    }
}

/// Days before its notAfter from which a served certificate is reported.
pub const EXPIRY_WARNING_DAYS: i64 = 14;
const DAY: i64 = 86_400;

/// What an expiry check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Expired: an ERROR.
    Expired,
    /// Expires within [`EXPIRY_WARNING_DAYS`]: a WARNING.
    Soon,
}

/// The expiry report of a certificate whose notAfter is `not_after`, when
/// `now >= *next` (both seconds since the epoch); moves `*next` to the time
/// of the next report: a day later while it is reported, else the moment it
/// enters the warning window.
pub fn expiry_due(not_after: i64, now: i64, next: &mut i64) -> Option<Expiry> {
    if now < *next {
        return None;
    }
    if now >= not_after {
        *next = now + DAY;
        Some(Expiry::Expired)
    } else if not_after - now <= EXPIRY_WARNING_DAYS * DAY {
        // Daily, and once more when it expires.
        *next = (now + DAY).min(not_after);
        Some(Expiry::Soon)
    } else {
        *next = not_after - EXPIRY_WARNING_DAYS * DAY;
        None
    }
}

/// Where the reload lines of a check go. The process that made an object
/// reports at the line's own level; every other process that watches the
/// same object (facil.io's forked workers) checks and reloads it too, but
/// says so at DEBUG only, prefixed with its pid, so that one change gives
/// one line per application instead of one per process.
#[derive(Clone, Default)]
pub struct Reporter {
    pub loud: bool,
    /// Unit tests collect the lines instead.
    #[cfg(test)]
    pub capture: Option<CapturedLines>,
}

/// Lines a unit test collects from a [`Reporter`].
#[cfg(test)]
pub type CapturedLines = std::sync::Arc<std::sync::Mutex<Vec<(Level, String)>>>;

impl Reporter {
    /// Lines at their own level (`loud`) or at DEBUG.
    pub fn new(loud: bool) -> Self {
        #[allow(clippy::needless_update)] // not needless in unit tests
        Reporter { loud, ..Default::default() }
    }

    pub fn say(&self, level: Level, args: std::fmt::Arguments<'_>) {
        #[cfg(test)]
        if let Some(c) = &self.capture {
            c.lock().unwrap().push((level, args.to_string()));
            return;
        }
        if self.loud {
            log::write(level, args);
        } else {
            // SAFETY: getpid(2) has no preconditions.
            let pid = unsafe { libc::getpid() };
            log::write(Level::Debug, format_args!("(pid {pid}) {args}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::TempDir;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_interval_is_parsed_with_a_default() {
        assert_eq!(parse_reload_seconds(None), 10);
        assert_eq!(parse_reload_seconds(Some("0")), 0);
        assert_eq!(parse_reload_seconds(Some(" 3 ")), 3);
        assert_eq!(parse_reload_seconds(Some("86400")), 86_400);
        for bad in ["86401", "-1", "1.5", "soon", ""] {
            assert_eq!(parse_reload_seconds(Some(bad)), 10, "{bad}");
        }
    }

    fn watch_one(path: &str) -> Watch {
        Watch::new(&[path])
    }

    #[test]
    fn changes_are_seen_through_symlinks_renames_and_in_place_writes() {
        let dir = TempDir::new("watch");
        let a = dir.file("a.pem", b"first");
        let b = dir.file("b.pem", b"second");
        let link = dir.0.join("live.pem");
        symlink(&a, &link).unwrap();
        let link = link.to_str().unwrap().to_string();
        let mut w = watch_one(&link);
        assert_eq!(w.poll(), Poll::Unchanged);

        // certbot: the link moves to another file.
        let tmp = dir.0.join("live.tmp");
        symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        let Poll::Changed(s) = w.poll() else { panic!("symlink switch not seen") };
        w.loaded(s);
        assert_eq!(w.poll(), Poll::Unchanged);

        // Kubernetes: a directory link (..data) switches to a new directory.
        let v1 = dir.0.join("v1");
        let v2 = dir.0.join("v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("tls.crt"), b"one").unwrap();
        std::fs::write(v2.join("tls.crt"), b"two").unwrap();
        let data = dir.0.join("..data");
        symlink("v1", &data).unwrap();
        let crt = dir.0.join("tls.crt");
        symlink("..data/tls.crt", &crt).unwrap();
        let mut k = watch_one(crt.to_str().unwrap());
        let tmp = dir.0.join("..data_tmp");
        symlink("v2", &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        let Poll::Changed(s) = k.poll() else { panic!("..data switch not seen") };
        k.loaded(s);

        // A new file renamed over the old one.
        let target = dir.file("t.pem", b"old");
        let mut t = watch_one(&target);
        let new = dir.file("t.new", b"new");
        std::fs::rename(&new, &target).unwrap();
        assert!(matches!(t.poll(), Poll::Changed(_)), "rename over not seen");
        let Poll::Changed(s) = t.poll() else { unreachable!() };
        t.loaded(s);

        // Rewritten in place, same size.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&target, b"NEW").unwrap();
        assert!(matches!(t.poll(), Poll::Changed(_)), "in-place write not seen");

        // Deleted.
        let Poll::Changed(s) = t.poll() else { unreachable!() };
        t.loaded(s);
        std::fs::remove_file(&target).unwrap();
        match t.poll() {
            Poll::Changed([Stamp::Error(e), _]) => assert_eq!(e, libc::ENOENT),
            other => panic!("deletion not seen: {other:?}"),
        }
    }

    /// A key and a certificate file (contents "key v1", "crt v1") in a
    /// new temporary directory, watched as a pair.
    fn watched_pair(tag: &str) -> (TempDir, String, String, Watch) {
        let dir = TempDir::new(tag);
        let key = dir.file("k.pem", b"key v1");
        let crt = dir.file("c.pem", b"crt v1");
        let w = Watch::new(&[&key, &crt]);
        (dir, key, crt, w)
    }

    #[test]
    fn a_failure_is_reported_once_per_change() {
        let (_dir, key, crt, mut w) = watched_pair("watchfail");
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&crt, b"crt v2 (the key is not written yet)").unwrap();
        let Poll::Changed(s) = w.poll() else { panic!() };
        assert!(w.failed(s, unix_now()), "the first failure of a state is reported");
        assert_eq!(w.poll(), Poll::StillFailing, "no retry, no report, while nothing changes");
        assert!(!w.failed(s, unix_now()), "never twice for one state");
        // The second file of the pair arrives: tried again.
        std::fs::write(&key, b"key v2").unwrap();
        let Poll::Changed(s2) = w.poll() else { panic!("the next change is tried again") };
        assert_ne!(s, s2);
        w.loaded(s2);
        assert_eq!(w.poll(), Poll::Unchanged);
    }

    #[test]
    fn a_file_changing_while_it_is_read_is_retried_silently() {
        let dir = TempDir::new("watchflux");
        let crt = dir.file("c.pem", b"v1");
        let mut w = watch_one(&crt);
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&crt, b"v2 half").unwrap();
        let Poll::Changed(s) = w.poll() else { panic!() };
        // ... the writer goes on while we read ...
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&crt, b"v2 half and the rest").unwrap();
        assert!(!w.failed(s, unix_now()), "not reported: the file moved on");
        assert!(matches!(w.poll(), Poll::Changed(_)), "and tried again");
    }

    #[test]
    fn a_pair_whose_second_file_is_not_there_yet_is_reported_only_after_the_settle_time() {
        let (_dir, key, crt, mut w) = watched_pair("watchpair");
        // The key is replaced first; the certificate is not there yet.
        std::fs::remove_file(&crt).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(format!("{key}.new"), b"new key").unwrap();
        std::fs::rename(format!("{key}.new"), &key).unwrap();
        let Poll::Changed(s) = w.poll() else { panic!() };
        let now = unix_now();
        assert!(!w.failed(s, now), "not reported: the certificate may be on its way");
        assert!(matches!(w.poll(), Poll::Changed(_)), "and tried again at the next poll");
        assert!(w.failed(s, now + PAIR_SETTLE_SECS + 1), "still missing after the settle time: reported");
        assert_eq!(w.poll(), Poll::StillFailing);
        // Both files present but not loadable: reported at once.
        let mut w = Watch::new(&[&key, &key]);
        std::fs::write(&key, b"garbage").unwrap();
        let Poll::Changed(s) = w.poll() else { panic!() };
        assert!(w.failed(s, now), "no file missing: reported at once");
    }

    #[test]
    fn expiry_is_reported_daily_within_the_window() {
        let not_after = 100 * DAY;
        let mut next = 0;
        // Far away: silent, next look when the window opens.
        assert_eq!(expiry_due(not_after, 10 * DAY, &mut next), None);
        assert_eq!(next, 86 * DAY);
        assert_eq!(expiry_due(not_after, 50 * DAY, &mut next), None);
        // In the window: once, then not again for a day.
        assert_eq!(expiry_due(not_after, 90 * DAY, &mut next), Some(Expiry::Soon));
        assert_eq!(expiry_due(not_after, 90 * DAY + 3600, &mut next), None);
        assert_eq!(expiry_due(not_after, 91 * DAY, &mut next), Some(Expiry::Soon));
        // The last day: the next report is the expiry itself.
        assert_eq!(expiry_due(not_after, 99 * DAY + 10, &mut next), Some(Expiry::Soon));
        assert_eq!(next, not_after);
        assert_eq!(expiry_due(not_after, not_after, &mut next), Some(Expiry::Expired));
        assert_eq!(expiry_due(not_after, not_after + 60, &mut next), None);
        assert_eq!(expiry_due(not_after, not_after + DAY, &mut next), Some(Expiry::Expired));
    }

    #[test]
    fn asn1_times_convert_to_unix_seconds() {
        let t = Asn1Time::from_unix(1_700_000_123).unwrap();
        assert_eq!(unix_time(&t), Some(1_700_000_123));
        let now = unix_now();
        let t = Asn1Time::days_from_now(0).unwrap();
        assert!((unix_time(&t).unwrap() - now).abs() <= 1);
    }
}
