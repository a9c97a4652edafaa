//! Key exchange groups on the wire: which groups our client offers and which
//! one our server picks, read from the handshake bytes themselves (a relay
//! between the two sockets records them) and from OpenSSL's report.
//!
//! The ML-KEM cases need OpenSSL 3.5: they run in the vendored build
//! (`make check OPENSSL=vendored`, `cargo test --features vendored`) and are
//! reported as ignored against an older system OpenSSL.

use super::config::{groups, GROUPS_CLASSICAL, GROUPS_PQ};
use super::{Connection, Handshake, Role, TlsConfig};
use openssl::ssl::{SslContext, SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// TLS group codepoints (IANA "TLS Supported Groups").
const X25519MLKEM768: u16 = 0x11ec;
const X25519: u16 = 0x001d;
const SECP256R1: u16 = 0x0017;
const SECP384R1: u16 = 0x0018;
const SECP521R1: u16 = 0x0019;
const X448: u16 = 0x001e;

/// ServerHello.random of a HelloRetryRequest (RFC 8446 section 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

fn runtime_has_mlkem() -> bool {
    // OPENSSL_VERSION_NUMBER 0xMNN00PP0: 3.5.0 and newer.
    openssl::version::number() >= 0x3050_0000
}

/// The first handshake message carried in `bytes` (TLS records of content
/// type 22), once a whole one has arrived.
fn first_handshake_message(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if rest.len() < 5 + len {
            break;
        }
        if rest[0] == 22 {
            body.extend_from_slice(&rest[5..5 + len]);
        }
        rest = &rest[5 + len..];
        if body.len() >= 4 {
            let msg_len = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
            if body.len() >= 4 + msg_len {
                body.truncate(4 + msg_len);
                return Some(body);
            }
        }
    }
    None
}

/// A ClientHello or ServerHello: its type, random and extensions.
struct Hello {
    kind: u8,
    random: [u8; 32],
    extensions: Vec<(u16, Vec<u8>)>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn parse_hello(msg: &[u8]) -> Hello {
    let kind = msg[0];
    assert!(kind == 1 || kind == 2, "not a ClientHello/ServerHello: type {kind}");
    let b = &msg[4..];
    let mut at = 2; // legacy_version
    let random: [u8; 32] = b[at..at + 32].try_into().unwrap();
    at += 32;
    at += 1 + b[at] as usize; // legacy_session_id
    if kind == 1 {
        at += 2 + u16_at(b, at) as usize; // cipher_suites
        at += 1 + b[at] as usize; // legacy_compression_methods
    } else {
        at += 2 + 1; // cipher_suite, legacy_compression_method
    }
    let end = at + 2 + u16_at(b, at) as usize;
    at += 2;
    let mut extensions = Vec::new();
    while at < end {
        let (ty, len) = (u16_at(b, at), u16_at(b, at + 2) as usize);
        extensions.push((ty, b[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    assert_eq!(at, end, "extensions overrun the message");
    Hello { kind, random, extensions }
}

impl Hello {
    fn extension(&self, ty: u16) -> Option<&[u8]> {
        self.extensions.iter().find(|(t, _)| *t == ty).map(|(_, d)| d.as_slice())
    }

    /// ClientHello supported_groups (extension 10).
    fn supported_groups(&self) -> Vec<u16> {
        let d = self.extension(10).expect("supported_groups extension");
        d[2..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
    }

    /// key_share (extension 51): (group, key length) per share; a
    /// ServerHello has one, a HelloRetryRequest one with no key.
    fn key_shares(&self) -> Vec<(u16, usize)> {
        let d = self.extension(51).expect("key_share extension");
        let mut out = Vec::new();
        match self.kind {
            1 => {
                let mut at = 2;
                while at < d.len() {
                    let len = u16_at(d, at + 2) as usize;
                    out.push((u16_at(d, at), len));
                    at += 4 + len;
                }
            }
            _ if self.random == HRR_RANDOM => out.push((u16_at(d, 0), 0)),
            _ => out.push((u16_at(d, 0), u16_at(d, 2) as usize)),
        }
        out
    }

    fn is_hello_retry_request(&self) -> bool {
        self.kind == 2 && self.random == HRR_RANDOM
    }
}

/// What crossed the wire during one handshake.
struct Wire {
    client_hello: Hello,
    server_hello: Hello,
    server: Connection,
    client: Connection,
}

fn nonblocking_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Moves what `from` has to `to`, appending it to `log`.
fn relay(from: &mut UnixStream, to: &mut UnixStream, log: &mut Vec<u8>) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                log.extend_from_slice(&buf[..n]);
                to.write_all(&buf[..n]).unwrap();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("relay: {e}"),
        }
    }
}

/// Our server (library defaults) against a client using `client_ctx`, with
/// a relay between them that records both directions.
fn handshake_on_the_wire(client_ctx: &SslContext) -> Wire {
    let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("groups.test"), None, None).unwrap();
    cfg.add_protocol("proto", 1).unwrap();
    let built = cfg.build().unwrap();
    let (s_sock, mut s_relay) = nonblocking_pair();
    let (c_sock, mut c_relay) = nonblocking_pair();
    let mut server = Connection::new(&built.server, Role::Server, s_sock.as_raw_fd(), None).unwrap();
    let mut client = Connection::new(client_ctx, Role::Client, c_sock.as_raw_fd(), Some("groups.test")).unwrap();
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let c = client.handshake();
        relay(&mut c_relay, &mut s_relay, &mut to_server);
        let s = server.handshake();
        relay(&mut s_relay, &mut c_relay, &mut to_client);
        if let Handshake::Failed(r) = &c {
            panic!("client failed: {r}");
        }
        if let Handshake::Failed(r) = &s {
            panic!("server failed: {r}");
        }
        if c == Handshake::Done && s == Handshake::Done {
            let client_hello = parse_hello(&first_handshake_message(&to_server).expect("a ClientHello"));
            let server_hello = parse_hello(&first_handshake_message(&to_client).expect("a ServerHello"));
            drop((s_sock, c_sock));
            return Wire { client_hello, server_hello, server, client };
        }
    }
    panic!("handshake did not finish");
}

/// A TLS 1.3 client offering exactly `groups` (OpenSSL list syntax).
fn client_offering(groups: &str) -> SslContext {
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_groups_list(groups).unwrap();
    b.build()
}

/// Our own client context (library defaults).
fn our_client() -> SslContext {
    let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("groups.test"), None, None).unwrap();
    cfg.add_protocol("proto", 1).unwrap();
    cfg.build().unwrap().client
}

#[test]
fn the_group_list_follows_the_openssl_in_the_process() {
    if runtime_has_mlkem() {
        assert_eq!(groups(), GROUPS_PQ);
    } else {
        assert_eq!(groups(), GROUPS_CLASSICAL);
    }
    // The vendored build carries OpenSSL 3.5 LTS: it must be the PQ list.
    if cfg!(feature = "vendored") {
        assert!(runtime_has_mlkem(), "vendored build runs on {}", openssl::version::version());
        assert_eq!(groups(), GROUPS_PQ);
    }
}

#[test]
fn our_client_offers_the_groups_in_our_order() {
    let wire = handshake_on_the_wire(&our_client());
    let offered = wire.client_hello.supported_groups();
    let shares: Vec<u16> = wire.client_hello.key_shares().iter().map(|s| s.0).collect();
    if runtime_has_mlkem() {
        assert_eq!(offered, [X25519MLKEM768, X25519, SECP256R1, X448, SECP384R1, SECP521R1]);
        assert_eq!(shares, [X25519MLKEM768, X25519]);
    } else {
        assert_eq!(offered, [X25519, SECP256R1, X448, SECP384R1, SECP521R1]);
        assert_eq!(shares, [X25519]);
    }
}

#[test]
fn our_client_and_server_agree_on_the_most_preferred_group() {
    let wire = handshake_on_the_wire(&our_client());
    assert!(!wire.server_hello.is_hello_retry_request());
    let (group, key_len) = wire.server_hello.key_shares()[0];
    let want = if runtime_has_mlkem() { "X25519MLKEM768" } else { "x25519" };
    if runtime_has_mlkem() {
        assert_eq!(group, X25519MLKEM768);
        // ML-KEM-768 ciphertext (1088 bytes) + X25519 public key (32).
        assert_eq!(key_len, 1088 + 32);
    } else {
        assert_eq!((group, key_len), (X25519, 32));
    }
    // OpenSSL's report (what the DEBUG log line shows) says the same.
    assert!(wire.server.negotiated_group().unwrap().eq_ignore_ascii_case(want), "{:?}", wire.server.negotiated_group());
    assert!(wire.client.negotiated_group().unwrap().eq_ignore_ascii_case(want), "{:?}", wire.client.negotiated_group());
}

#[test]
#[cfg_attr(not(feature = "vendored"), ignore = "needs OpenSSL 3.5 (make check OPENSSL=vendored)")]
fn a_client_offering_only_x25519mlkem768_gets_it_without_a_retry() {
    assert!(runtime_has_mlkem(), "needs OpenSSL 3.5, runs on {}", openssl::version::version());
    let wire = handshake_on_the_wire(&client_offering("X25519MLKEM768"));
    // The ClientHello offers that one group, with a valid 1216-byte share
    // (ML-KEM-768 encapsulation key 1184 + X25519 32).
    assert_eq!(wire.client_hello.supported_groups(), [X25519MLKEM768]);
    assert_eq!(wire.client_hello.key_shares(), [(X25519MLKEM768, 1184 + 32)]);
    assert!(!wire.server_hello.is_hello_retry_request(), "the server asked for another key share");
    assert_eq!(wire.server_hello.key_shares(), [(X25519MLKEM768, 1088 + 32)]);
    assert_eq!(wire.server.negotiated_group().as_deref(), Some("X25519MLKEM768"));
}

#[test]
#[cfg_attr(not(feature = "vendored"), ignore = "needs OpenSSL 3.5 (make check OPENSSL=vendored)")]
fn a_client_that_supports_mlkem_but_sent_an_x25519_share_gets_x25519_without_a_retry() {
    assert!(runtime_has_mlkem(), "needs OpenSSL 3.5, runs on {}", openssl::version::version());
    let wire = handshake_on_the_wire(&client_offering("X25519MLKEM768:*X25519"));
    assert_eq!(wire.client_hello.supported_groups(), [X25519MLKEM768, X25519]);
    assert_eq!(wire.client_hello.key_shares(), [(X25519, 32)]);
    assert!(!wire.server_hello.is_hello_retry_request(), "a retry for ML-KEM costs a round trip");
    assert_eq!(wire.server_hello.key_shares(), [(X25519, 32)]);
}

#[test]
fn a_classical_client_gets_x25519_without_a_retry() {
    // What OpenSSL 3.0 clients (curl, s_client, Python ssl on Debian 12)
    // send: supported groups with an X25519 key share.
    let wire = handshake_on_the_wire(&client_offering("X25519:P-256:P-384"));
    assert_eq!(wire.client_hello.key_shares(), [(X25519, 32)]);
    assert!(!wire.server_hello.is_hello_retry_request());
    assert_eq!(wire.server_hello.key_shares(), [(X25519, 32)]);
    assert!(wire.server.negotiated_group().unwrap().eq_ignore_ascii_case("x25519"));
}

#[test]
fn clients_offering_only_x448_or_p521_are_served() {
    for (list, group, name) in [("X448", X448, "x448"), ("P-521", SECP521R1, "secp521r1"), ("P-384", SECP384R1, "secp384r1")] {
        let wire = handshake_on_the_wire(&client_offering(list));
        assert!(!wire.server_hello.is_hello_retry_request(), "{list}");
        assert_eq!(wire.server_hello.key_shares()[0].0, group, "{list}");
        assert!(wire.server.negotiated_group().unwrap().eq_ignore_ascii_case(name), "{list}");
    }
}

#[test]
fn a_client_without_a_usable_key_share_gets_a_retry_for_our_first_shared_group() {
    // A retry happens only when no key share is usable: here the client's
    // one share is for ffdhe2048, which is not in our list. (This also shows
    // that the relay's HelloRetryRequest check can see one.)
    let wire = handshake_on_the_wire(&client_offering("ffdhe2048:X25519"));
    assert_eq!(wire.client_hello.key_shares()[0].0, 0x0100, "the share is for ffdhe2048");
    assert!(wire.server_hello.is_hello_retry_request(), "no usable share: the server must ask again");
    assert_eq!(wire.server_hello.key_shares()[0].0, X25519);
    assert!(wire.server.negotiated_group().unwrap().eq_ignore_ascii_case("x25519"));
}
