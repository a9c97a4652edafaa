//! Reloading changed certificate and CA files of the live objects, in this
//! process: the watcher's passes ([`crate::facil::watcher`]) and
//! [`recheck_objects`], the entry point of `fio_tls_reload`.

use super::{lock, TlsObject, OBJECTS};
use crate::facil::watcher::{self, Pass};
use crate::tls::watch::{reload_seconds, unix_now, Reporter};
use std::sync::Arc;

/// Arms this process's watch timer (see [`watcher::arm`]); called when an
/// object is made.
pub(super) fn arm_timer() {
    watcher::on_each_pass(crate::facil::acme::on_pass);
    watcher::arm(reload_seconds(), new_pass);
}

fn new_pass(files: bool) -> Box<dyn Pass> {
    Box::new(ObjectsPass { objects: OBJECTS.live(), index: 0, slot: 0, now: unix_now(), files })
}

impl TlsObject {
    /// Checks up to `budget` certificates from `from` (see
    /// [`crate::tls::TlsConfig::check`]) and publishes a new snapshot when
    /// its contexts changed. Returns (certificates looked at, where to go
    /// on from).
    fn check_files(&self, from: usize, budget: usize, now: i64, files: bool) -> (usize, Option<usize>) {
        let mut config = lock(&self.config);
        let say = Reporter::new(std::process::id() == self.born_in);
        let step = config.check(from, budget, now, &say, files);
        if step.rebuilt {
            self.publish(config, "certificate reload");
        }
        (step.checked, step.next)
    }
}

/// One pass of the timer over the objects alive when it started.
struct ObjectsPass {
    objects: Vec<(usize, Arc<TlsObject>)>,
    index: usize,
    slot: usize,
    now: i64,
    files: bool,
}

impl Pass for ObjectsPass {
    fn step(&mut self, budget: usize) -> bool {
        let mut left = budget;
        while left > 0 && self.index < self.objects.len() {
            let (handle, object) = &self.objects[self.index];
            // Destroyed since the pass began: nothing to keep current.
            let next = if OBJECTS.is_current(*handle, object) {
                let (checked, next) = object.check_files(self.slot, left, self.now, self.files);
                left = left.saturating_sub(checked.max(1));
                next
            } else {
                None
            };
            match next {
                Some(slot) => self.slot = slot,
                None => {
                    self.index += 1;
                    self.slot = 0;
                }
            }
        }
        self.index < self.objects.len()
    }
}

/// Re-checks the watched files of `target` (of every live object when
/// `None`) now, in this process, whatever `FIO_TLS_RELOAD_SECONDS` says
/// (watching off included): a changed key/certificate pair or CA file that
/// loads replaces the old one for new handshakes when this returns; what
/// fails to load is reported once per change of its files, and the old one
/// keeps serving. Also runs the expiry reports and self-signed renewal that
/// are due. Runs on the caller's thread (a facil.io thread, or the
/// application's) and takes the objects' configuration locks, never a lock
/// that handshakes take; the caller must hold no lock of ours. Returns the
/// number of objects checked.
pub(crate) fn recheck_objects(target: Option<&TlsObject>) -> usize {
    let all: Vec<Arc<TlsObject>>;
    let objects: Vec<&TlsObject> = match target {
        Some(o) => vec![o],
        None => {
            all = OBJECTS.live().into_iter().map(|(_, o)| o).collect();
            all.iter().map(|o| &**o).collect()
        }
    };
    let now = unix_now();
    for object in &objects {
        let mut from = 0;
        while let (_, Some(next)) = object.check_files(from, usize::MAX, now, true) {
            from = next;
        }
    }
    objects.len()
}

#[cfg(all(test, not(feature = "api07")))]
mod tests {
    use super::*;
    use crate::ffi::tests::{c, live};
    use crate::ffi::{fio_tls_cert_add, fio_tls_destroy, fio_tls_new};
    use crate::tls::testutil::{self, TempDir, Usage};


    fn write_pair(dir: &TempDir, tag: &str, name: &str) -> (String, String, String) {
        let key = testutil::key();
        let cert = testutil::cert(&key, name, &[name], Usage::Server, None);
        let serial = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string();
        let k = dir.file(&format!("{tag}.key"), &key.private_key_to_pem_pkcs8().unwrap());
        let crt = dir.file(&format!("{tag}.crt"), &cert.to_pem().unwrap());
        (k, crt, serial)
    }

    #[test]
    fn recheck_reloads_now_and_adds_do_not_rebuild_the_snapshot() {
        let dir = TempDir::new("recheck");
        let (k0, c0, _) = write_pair(&dir, "d", "d.test");
        let (k1, c1, _) = write_pair(&dir, "a", "a.test");
        // SAFETY: C strings valid for the calls; handles from fio_tls_new.
        let tls = unsafe { fio_tls_new(c("d.test").as_ptr(), c(&k0).as_ptr(), c(&c0).as_ptr()) };
        assert!(!tls.is_null());
        let before = live(tls).snapshot();
        unsafe { fio_tls_cert_add(tls, c("a.test").as_ptr(), c(&k1).as_ptr(), c(&c1).as_ptr()) };
        assert!(Arc::ptr_eq(&before, &live(tls).snapshot()), "an add builds no context");
        assert_eq!(recheck_objects(Some(&live(tls))), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, _, serial) = write_pair(&dir, "a", "a.test");
        assert_eq!(recheck_objects(Some(&live(tls))), 1);
        let served = lock(&live(tls).config).certs()[1].serial();
        assert_eq!(served, serial, "reloaded by the call, not by a timer");
        // None: every live object, this one included.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, _, serial) = write_pair(&dir, "a", "a.test");
        assert!(recheck_objects(None) >= 1);
        assert_eq!(lock(&live(tls).config).certs()[1].serial(), serial);
        fio_tls_destroy(tls);
    }
}
