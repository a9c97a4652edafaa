//! The election and the issuance / renewal loop.
//!
//! Exactly one process of an application talks to the CA: the one holding
//! an exclusive `flock(2)` on `lock` in the cache directory. The lock is
//! taken without waiting ([`try_elect`]); the process that gets it runs
//! [`run`] on a thread of its own for the rest of its life and keeps the
//! descriptor open (close-on-exec). When that process dies the kernel frees
//! the lock and the next process that tries takes over.
//!
//! Each name is looked at once a second: a name without a certificate in
//! the cache, or whose certificate is past [`renew_at`], is ordered. A
//! failure is logged as one WARNING (with the CA's problem `type` and
//! `detail`) and the name waits [`backoff`] before the next attempt.

use super::client::{AcmeError, Session};
use super::jws::AccountKey;
use super::responder;
use super::{cache, Settings};
use crate::log::{self, Level};
use crate::tls::watch::{unix_now, unix_time};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// First wait after a failure, seconds; doubled per failure in a row.
pub const BACKOFF_BASE: i64 = 10;
/// Longest wait between attempts, seconds (6 hours).
pub const BACKOFF_CAP: i64 = 6 * 3600;

/// Takes the election lock of `dir` without waiting: `Some(file)` (keep it
/// open to keep the lock) in the one process that gets it.
pub fn try_elect(dir: &Path) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(cache::lock_file(dir))
        .ok()?;
    // SAFETY: flock on a descriptor we own.
    (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(f)
}

/// The wait after `failures` failures in a row (1 or more): BACKOFF_BASE
/// doubled per failure, capped at BACKOFF_CAP, then moved by a random
/// -20%..+20% (`jitter` in 0..1) so that many servers do not retry in step.
pub fn backoff(failures: u32, jitter: f64) -> i64 {
    let exp = failures.saturating_sub(1).min(30);
    let wait = BACKOFF_BASE.saturating_mul(1i64 << exp).min(BACKOFF_CAP) as f64;
    (wait * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))).round() as i64
}

fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = openssl::rand::rand_bytes(&mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// at two thirds of its lifetime, or `renew_after` seconds after
/// notBefore (the test knob).
pub fn renew_at(not_before: i64, not_after: i64, renew_after: Option<i64>) -> i64 {
    match renew_after {
        Some(s) => not_before + s,
        None => not_before + (not_after - not_before) * 2 / 3,
    }
}

/// The validity of the cached certificate of `name`, if it parses.
fn cached_validity(dir: &Path, name: &str) -> Option<(i64, i64)> {
    let pem = std::fs::read(cache::cert_files(dir, name).1).ok()?;
    let leaf = X509::from_pem(&pem).ok()?;
    Some((unix_time(leaf.not_before())?, unix_time(leaf.not_after())?))
}

fn load_or_make_key(path: &Path) -> Result<(PKey<Private>, bool), AcmeError> {
    if let Ok(pem) = std::fs::read(path) {
        if let Ok(k) = PKey::private_key_from_pem(&pem) {
            if k.ec_key().ok().and_then(|e| e.group().curve_name()) == Some(Nid::X9_62_PRIME256V1) {
                return Ok((k, false));
            }
        }
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok((PKey::from_ec_key(EcKey::generate(&group)?)?, true))
}

fn account_key(dir: &Path) -> Result<AccountKey, AcmeError> {
    let path = cache::account_key(dir);
    if let Ok(pem) = std::fs::read(&path) {
        return AccountKey::from_pem(&pem).map_err(|e| AcmeError::Local(format!("\"{}\": {e}", path.display())));
    }
    let key = AccountKey::generate()?;
    cache::write_atomic(&path, &key.to_pem()?).map_err(|e| AcmeError::Local(format!("\"{}\": {e}", path.display())))?;
    Ok(key)
}

/// The issuance state of one process's client.
pub struct Manager {
    settings: Settings,
    session: Option<Session>,
    /// Per name: (next attempt or check, seconds since the epoch; failures in a row).
    state: Vec<(String, i64, u32)>,
}

impl Manager {
    pub fn new(settings: Settings, names: Vec<String>) -> Self {
        Manager { settings, session: None, state: names.into_iter().map(|n| (n, 0, 0)).collect() }
    }

    fn session(&mut self) -> Result<&mut Session, AcmeError> {
        if self.session.is_none() {
            let key = account_key(&self.settings.dir)?;
            let mut s = Session::open(&self.settings.directory, self.settings.ca_file.as_deref(), key)?;
            s.account(self.settings.email.as_deref())?;
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("just set"))
    }

    /// Gets a certificate for `name` and writes it into the cache.
    fn obtain(&mut self, name: &str) -> Result<X509, AcmeError> {
        let dir = self.settings.dir.clone();
        let (key_path, cert_path) = cache::cert_files(&dir, name);
        let (cert_key, new_key) = load_or_make_key(&key_path)?;
        let challenge_path = cache::challenge_file(&dir, name);
        let session = self.session()?;
        let chain = session.issue(
            name,
            &cert_key,
            &mut |digest| {
                let ch = responder::make(name, digest)?;
                cache::write_atomic(&challenge_path, &ch.to_pem()?)
                    .map_err(|e| AcmeError::Local(format!("\"{}\": {e}", challenge_path.display())))
            },
            &mut || {
                let _ = std::fs::remove_file(&challenge_path);
            },
        )?;
        let leaf = X509::from_pem(&chain).map_err(|e| AcmeError::Protocol(format!("certificate for {name}: {e}")))?;
        if !leaf.public_key()?.public_eq(&cert_key) {
            return Err(AcmeError::Protocol(format!("the certificate issued for {name} is not for our key")));
        }
        let write = |p: &Path, b: &[u8]| cache::write_atomic(p, b).map_err(|e| AcmeError::Local(format!("\"{}\": {e}", p.display())));
        // The key first (a new key only with a first certificate): the
        // watchers load the pair when the certificate arrives.
        if new_key {
            write(&key_path, &cert_key.private_key_to_pem_pkcs8()?)?;
        }
        write(&cert_path, &chain)?;
        Ok(leaf)
    }

    /// One look at every name (see the module docs); `now` in seconds
    /// since the epoch.
    pub fn step(&mut self, now: i64) {
        for i in 0..self.state.len() {
            let (name, next, failures) = self.state[i].clone();
            if now < next {
                continue;
            }
            let renew_after = self.settings.renew_after;
            if let Some((nb, na)) = cached_validity(&self.settings.dir, &name) {
                let at = renew_at(nb, na, renew_after);
                if now < at {
                    self.state[i].1 = at.min(now + 60);
                    continue;
                }
            }
            match self.obtain(&name) {
                Ok(leaf) => {
                    log::write(
                        Level::Info,
                        format_args!(
                            "ACME: certificate for \"{name}\" issued and cached: serial {}, notAfter {}",
                            leaf.serial_number().to_bn().and_then(|b| b.to_hex_str().map(|s| s.to_string())).unwrap_or_default(),
                            leaf.not_after()
                        ),
                    );
                    self.state[i] = (name, now + 1, 0);
                }
                Err(e) => {
                    if matches!(e, AcmeError::Transport(_) | AcmeError::Protocol(_)) {
                        // a new directory and account next time
                        self.session = None;
                    }
                    let failures = failures + 1;
                    let wait = backoff(failures, jitter());
                    log::write(
                        Level::Warning,
                        format_args!(
                            "ACME: no certificate for \"{name}\" (attempt {failures} failed): {e}; next attempt in {wait} s; \
                             the certificate in use keeps serving"
                        ),
                    );
                    self.state[i] = (name, now + wait, failures);
                }
            }
        }
    }

}

/// The client thread's body: [`Manager::step`] once a second, forever.
/// `_lock` is the election lock, held as long as this runs.
pub fn run(settings: Settings, names: Vec<String>, _lock: File) {
    log::write(
        Level::Info,
        format_args!(
            "ACME: process {} talks to {} for {} name(s): {}; it orders a certificate only for a name \
             without a cached one or whose cached one is due for renewal",
            std::process::id(),
            settings.directory,
            names.len(),
            names.join(", ")
        ),
    );
    let mut m = Manager::new(settings, names);
    loop {
        m.step(unix_now());
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        assert_eq!(backoff(1, 0.5), BACKOFF_BASE);
        assert_eq!(backoff(2, 0.5), 2 * BACKOFF_BASE);
        assert_eq!(backoff(4, 0.5), 8 * BACKOFF_BASE);
        assert_eq!(backoff(60, 0.5), BACKOFF_CAP);
        assert_eq!(backoff(1, 0.0), 8);
        assert_eq!(backoff(1, 1.0), 12);
        assert_eq!(backoff(60, 1.0), BACKOFF_CAP * 6 / 5);
    }

    #[test]
    fn renewal_is_at_two_thirds_or_the_knob() {
        assert_eq!(renew_at(0, 90 * 86_400, None), 60 * 86_400);
        assert_eq!(renew_at(1000, 90 * 86_400, Some(20)), 1020);
    }

    #[test]
    fn one_process_holds_the_election_until_it_lets_go() {
        let tmp = crate::tls::testutil::TempDir::new("acme_elect");
        let first = try_elect(&tmp.0).expect("first wins");
        // flock locks belong to the open file: a second open is another
        // contender, as another process would be
        assert!(try_elect(&tmp.0).is_none());
        drop(first);
        assert!(try_elect(&tmp.0).is_some());
    }
}
