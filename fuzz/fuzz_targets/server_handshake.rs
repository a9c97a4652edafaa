//! Arbitrary bytes as the client's side of a server handshake.
//!
//! The library's engine (`fio_tls::tls::Connection`, server role) runs over
//! one end of a non-blocking UnixStream socketpair; the fuzzer's bytes are
//! written into the other end, and the handshake and reads are driven the
//! way the facil.io hooks drive them. No facil.io.
//!
//! Input layout: `flags, chunk, payload...`
//! - flags bit 0: the settings verify clients (mutual TLS with a CA file):
//!   client Certificate messages reach chain parsing and verification;
//! - flags bit 1: first complete a real handshake with the library's own
//!   client, then send the payload raw after it (garbage records to an
//!   established session: the read path);
//! - flags bit 2: hang up (shutdown the write half) after the payload;
//! - flags bit 3: the application writes a response while handshaking and
//!   after (early plaintext buffer, write path);
//! - chunk: 0 delivers the payload at once, else in pieces of chunk*7 bytes
//!   with a handshake step after each (partial records).
//!
//! The settings have two certificates (SNI switching) and two ALPN
//! protocols, so the SNI and ALPN callbacks see the fuzzer's extensions.
#![no_main]

include!("server_handshake_body.rs");

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(input));
