//! Arbitrary bytes as a private key file and a certificate file.
//!
//! Input layout: `key_len (2 bytes, little endian), key bytes, cert bytes`
//! (a key_len past the end takes the whole rest as the key). Both parts are
//! written to files in a private temporary directory, then loaded the ways
//! the C API loads them: `pem::load_private_key`, `pem::load_chain`,
//! `TlsConfig::new` (key/certificate match), `add_cert`, the certificate
//! file as a CA file (`set_trust`), and `build()` of whatever loaded.
//! Every error must be a one-line message naming the file.
#![no_main]

include!("key_cert_files_body.rs");

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(input));
