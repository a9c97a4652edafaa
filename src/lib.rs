//! libfio_tls: TLS over OpenSSL for facil.io 0.7.0.beta4 applications.
//!
//! Implements facil.io's `fio_tls_*` C API (see `include/fio_tls.h`). The
//! code is in three rooms, data flowing one way:
//! - [`ffi`]: the C boundary (the six `fio_tls_*` functions);
//! - [`facil`]: facil.io's ABI and the rw hooks that run TLS in its loop;
//! - [`tls`]: the OpenSSL engine, usable over any fd without facil.io.

#![allow(non_camel_case_types)]

pub mod log;
pub mod facil;
pub mod ffi;
pub mod tls;
