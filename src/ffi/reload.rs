//! Reloading changed certificate and CA files of the live objects, in this
//! process: the watcher's passes ([`crate::facil::watcher`]) and
//! [`recheck_objects`], the entry point of `fio_tls_reload`.

use super::{getpid, lock, fio_tls_s, TlsObject, OBJECTS};
use crate::facil::watcher::{self, Pass};
use crate::ffi::handle::Lookup;
use crate::tls::watch::{reload_seconds, unix_now, Reporter};
use std::sync::Arc;

/// Arms this process's watch timer (see [`watcher::arm`]); called when an
/// object is made.
pub(super) fn arm_timer() {
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
        let say = Reporter::new(getpid() == self.creator);
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

/// Re-checks the watched files of one live `fio_tls_s` (`Some`), or of
/// every live one (`None`), now, in this process, whatever
/// `FIO_TLS_RELOAD_SECONDS` says (watching off included): what changed and
/// loads is served by new handshakes when this returns; what fails to load
/// is reported once per change of its files, and the old certificate keeps
/// serving. Also runs the expiry reports and self-signed renewal that are
/// due. Blocks the calling thread while files are read; handshakes on
/// other threads never wait for it.
///
/// Returns the number of objects checked: 0 for a `target` that is not a
/// live handle (NULL, destroyed, never made), which is not logged here:
/// the caller names its own API in that report.
#[allow(dead_code)] // until fio_tls_reload (the cluster branch) calls it
pub(crate) fn recheck_objects(target: Option<*mut fio_tls_s>) -> usize {
    let objects: Vec<Arc<TlsObject>> = match target {
        None => OBJECTS.live().into_iter().map(|(_, o)| o).collect(),
        Some(tls) => match OBJECTS.get(tls as usize) {
            Lookup::Live(o) => vec![o],
            _ => return 0,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{fio_tls_cert_add, fio_tls_destroy, fio_tls_new};
    use crate::tls::testutil::{self, TempDir, Usage};
    use std::ffi::CString;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn live(tls: *mut fio_tls_s) -> Arc<TlsObject> {
        match OBJECTS.get(tls as usize) {
            Lookup::Live(o) => o,
            _ => panic!("not live"),
        }
    }

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
        assert_eq!(recheck_objects(Some(tls)), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, _, serial) = write_pair(&dir, "a", "a.test");
        assert_eq!(recheck_objects(Some(tls)), 1);
        let served = lock(&live(tls).config).certs()[1].serial();
        assert_eq!(served, serial, "reloaded by the call, not by a timer");
        assert!(recheck_objects(None) >= 1);
        fio_tls_destroy(tls);
        assert_eq!(recheck_objects(Some(tls)), 0, "a destroyed handle is no object");
        assert_eq!(recheck_objects(Some(core::ptr::null_mut())), 0);
    }
}
