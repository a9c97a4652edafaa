//! libfio_tls: TLS over OpenSSL for facil.io 0.7.0.beta4 applications.
//!
//! Implements facil.io's `fio_tls_*` C API (see `include/fio_tls.h`). The
//! code is in three rooms, data flowing one way:
//! - [`ffi`]: the C boundary (the `fio_tls_*` functions, the handles C
//!   holds, the panic boundary every function called from C runs in, and
//!   the link checks);
//! - [`facil`]: facil.io's ABI and the rw hooks that run TLS in its loop;
//! - [`tls`]: the OpenSSL engine, usable over any fd without facil.io.
//!
//! The hooks, deferred tasks and OpenSSL callbacks of the other rooms use
//! the panic boundary of [`ffi::boundary`] too: they are called from C.

#![allow(non_camel_case_types)]

// What the code assumes about the platform, said once, here.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!(
    "libfio_tls supports 64-bit Linux only: it mirrors the struct layouts of facil.io 0.7.0.beta4 \
     as built there, emits 8-byte weak references to facil.io with ELF assembler directives, uses \
     glibc's __errno_location, dlsym and dladdr, and packs fio_tls_s handles into 64-bit pointers"
);

pub mod log;
pub mod facil;
pub mod ffi;
pub mod tls;
