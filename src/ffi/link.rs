//! Making a wrong link fail early and say so.
//!
//! facil.io defines the six `fio_tls_*` functions as weak stand-ins
//! (`fio_tls_missing.c`, and three more in `http/http.c`) that exit with a
//! FATAL line when called. Two link mistakes used to be silent until then:
//!
//! 1. `libfacil.io.a` before `libfio_tls.a`: the linker has taken facil.io's
//!    stand-ins by the time it reaches our archive, and nothing else it
//!    needs is in there. `fio_tls.h` therefore makes every file that
//!    includes it refer to [`fio_tls_needs_libfio_tls_on_the_link_line`],
//!    which only this library defines: the linker pulls our archive member
//!    (all the functions are in one object), and GNU ld lets its strong
//!    definitions replace the weak ones already seen. Without libfio_tls at
//!    all, the link fails naming that function.
//! 2. A shared `libfio_tls.so` with a static `libfacil.io.a` (the weak
//!    definitions inside the program win), or with `libfacil.io.so` ahead of
//!    it in the search order. Nothing can fix this at link time, so
//!    [`check_at_load`] runs when the library is loaded and logs an ERROR
//!    naming the functions that resolve elsewhere and what to do.

use crate::log;
use libc::{c_char, c_void};
use std::ffi::CStr;

/// Does nothing. `fio_tls.h` makes every file that includes it refer to
/// this function (with GNU-compatible compilers), so a program that
/// includes the header but does not link libfio_tls fails to link with
/// "undefined reference to `fio_tls_needs_libfio_tls_on_the_link_line`",
/// and a static link pulls libfio_tls in even when `libfacil.io.a` comes
/// first on the link line. A program that gets libfio_tls only at run time
/// (`LD_PRELOAD`) defines `FIO_TLS_NO_LINK_CHECK` before including the
/// header. Thread-safe.
#[cfg(not(feature = "api07"))]
#[no_mangle]
pub extern "C" fn fio_tls_needs_libfio_tls_on_the_link_line() {}

/// The release build's link marker (feature `api07`), referred to by
/// `include/fio_tls07.h` as [`fio_tls_needs_libfio_tls_on_the_link_line`]
/// is by `fio_tls.h`: a program including `fio_tls07.h` fails to link
/// without libfio_tls07 (also with the beta4 libfio_tls, whose API it
/// does not have), and a static link pulls libfio_tls07.a in before
/// facil.io's weak stand-ins can win. Thread-safe; does nothing.
/// cbindgen:ignore
#[cfg(feature = "api07")]
#[no_mangle]
pub extern "C" fn fio_tls_needs_libfio_tls07_on_the_link_line() {}

/// The functions facil.io has stand-ins for.
#[cfg(not(feature = "api07"))]
const SEED: [&CStr; 6] =
    [c"fio_tls_new", c"fio_tls_cert_add", c"fio_tls_proto_add", c"fio_tls_accept", c"fio_tls_connect", c"fio_tls_destroy"];
/// The functions facil.io 0.7.x has stand-ins for (`fio_tls_missing.c`,
/// and `fio.c` / `http.c` for some of them).
#[cfg(feature = "api07")]
const SEED: [&CStr; 9] = [
    c"fio_tls_new",
    c"fio_tls_cert_add",
    c"fio_tls_alpn_add",
    c"fio_tls_alpn_count",
    c"fio_tls_trust",
    c"fio_tls_accept",
    c"fio_tls_connect",
    c"fio_tls_dup",
    c"fio_tls_destroy",
];
/// This library's name in messages.
const LIB: &str = if cfg!(feature = "api07") { "libfio_tls07" } else { "libfio_tls" };

/// Where `p` was loaded from: (base address, file name).
fn object_of(p: *const c_void) -> Option<(usize, String)> {
    // SAFETY: Dl_info is plain data that dladdr fills in.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables.
    if unsafe { libc::dladdr(p, &mut info) } == 0 {
        return None;
    }
    let name = if info.dli_fname.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dli_fname as *const c_char) }.to_string_lossy().into_owned()
    };
    Some((info.dli_fbase as usize, name))
}

/// The seed functions that the process resolves to another object than
/// this library, with that object's file name ("" for the program itself).
pub fn resolved_elsewhere() -> Vec<(&'static str, String)> {
    let Some((ours, _)) = object_of(check_at_load as *const c_void) else { return Vec::new() };
    let mut elsewhere = Vec::new();
    for name in SEED {
        // SAFETY: dlsym with a NUL-terminated name only reads the loader's
        // tables; RTLD_DEFAULT is the process's global lookup scope.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        if p.is_null() {
            // Not in the global scope: ours is linked into a program that
            // exports nothing, or loaded privately (dlopen RTLD_LOCAL) into
            // a process without facil.io. Nobody can call another one.
            continue;
        }
        if let Some((base, file)) = object_of(p) {
            if base != ours {
                elsewhere.push((name.to_str().unwrap_or("?"), file));
            }
        }
    }
    elsewhere
}

/// Runs when the library is loaded (or the program linked with the
/// archive starts): one ERROR line when facil.io's stand-ins shadow ours.
extern "C" fn check_at_load() {
    super::boundary::ffi_boundary!("the load-time link check", {
        let release = cfg!(feature = "api07");
        if let Some(host_release) = crate::facil::sys::host_has_release_api() {
            if host_release != release {
                let (ours, theirs, other, how) = if release {
                    ("facil.io 0.7.x's release TLS API", "0.7.0.beta4 (before beta7)", "libfio_tls", "make")
                } else {
                    ("facil.io 0.7.0.beta4's TLS API", "a 0.7.x release (it has fio_local_addr)", "libfio_tls07", "make API=0.7")
                };
                log::write_at_load(
                    log::Level::Error,
                    format_args!(
                        "{LIB} implements {ours}, but this program's facil.io is {theirs}: TLS will not work; \
                         link {other} ({how}) instead (README.md, \"facil.io 0.7.x\")"
                    ),
                );
                return;
            }
        }
        let elsewhere = resolved_elsewhere();
        if elsewhere.is_empty() {
            return;
        }
        let names: Vec<&str> = elsewhere.iter().map(|(n, _)| *n).collect();
        let file = &elsewhere[0].1;
        let place = if file.is_empty() { "the program itself".to_string() } else { format!("\"{file}\"") };
        log::write_at_load(
            log::Level::Error,
            format_args!("{LIB} is loaded but {} resolve to {place}, not to {LIB}: facil.io's stand-ins will run \
             and exit with a FATAL line. A static libfacil.io.a always wins over a \
             shared {LIB}.so, and libfacil.io.so wins when it comes before {LIB}.so in the link order: \
             link {LIB}.a (any order), or link {LIB}.so before libfacil.io.so (README.md, \"Linking\")",
            names.join(", ")),
        );
    })
}

#[used]
#[link_section = ".init_array"]
static CHECK_AT_LOAD: extern "C" fn() = check_at_load;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_program_resolves_nothing_elsewhere() {
        // The test binary holds our code and no facil.io.
        assert!(resolved_elsewhere().is_empty());
        #[cfg(not(feature = "api07"))]
        fio_tls_needs_libfio_tls_on_the_link_line();
        #[cfg(feature = "api07")]
        fio_tls_needs_libfio_tls07_on_the_link_line();
    }
}
