// The body of the `server_handshake` fuzz target, shared with the replay of
// fuzz/seeds and fuzz/regressions in tests/fuzz_regressions.rs.
//
// Arbitrary bytes as the client's side of a server handshake.
//
// The library's engine (`fio_tls::tls::Connection`, server role) runs over
// one end of a non-blocking UnixStream socketpair; the fuzzer's bytes are
// written into the other end, and the handshake and reads are driven the
// way the facil.io hooks drive them. No facil.io.
//
// Input layout: `flags, chunk, payload...`
// - flags bit 0: the settings verify clients (mutual TLS with a CA file):
//   client Certificate messages reach chain parsing and verification;
// - flags bit 1: first complete a real handshake with the library's own
//   client, then send the payload raw after it (garbage records to an
//   established session: the read path);
// - flags bit 2: hang up (shutdown the write half) after the payload;
// - flags bit 3: the application writes a response while handshaking and
//   after (early plaintext buffer, write path);
// - chunk: 0 delivers the payload at once, else in pieces of chunk*7 bytes
//   with a handshake step after each (partial records).
//
// The settings have two certificates (SNI switching) and two ALPN
// protocols, so the SNI and ALPN callbacks see the fuzzer's extensions.

use fio_tls::tls::{Built, Connection, Handshake, ReadOutcome, Role, TlsConfig};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

struct Settings {
    plain: Built<u8>,
    mutual: Built<u8>,
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let mut cfg = TlsConfig::<u8>::new(Some("localhost"), None, None).expect("self-signed");
        cfg.add_cert(Some("a.test"), None, None).expect("second certificate");
        cfg.add_protocol("http/1.1", 1).expect("alpn");
        cfg.add_protocol("h2", 2).expect("alpn");
        let plain = cfg.build().expect("build");
        // A CA file for mutual TLS: the default certificate itself.
        let dir = std::env::temp_dir().join(format!("fio_tls_fuzz_ca_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cfg.certs()[0].chain[0].to_pem().expect("pem")).expect("write CA");
        cfg.set_trust(Some(ca.to_str().expect("utf-8 path"))).expect("trust");
        let mutual = cfg.build().expect("build mutual");
        let _ = std::fs::remove_dir_all(&dir);
        Settings { plain, mutual }
    })
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// Reads and drops whatever the server sent, so its socket never fills.
fn drain(peer: &UnixStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = (&*peer).read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Writes all of `data` into the server's socket, draining its replies
/// when the socket is full.
fn feed(peer: &UnixStream, server: &mut Connection, mut data: &[u8]) {
    let mut stuck = 0;
    while !data.is_empty() && stuck < 64 {
        match (&*peer).write(data) {
            Ok(n) => data = &data[n..],
            Err(_) => {
                stuck += 1;
                step(server, peer, false);
            }
        }
    }
}

/// One round: handshake, then reads until nothing is left.
fn step(server: &mut Connection, peer: &UnixStream, respond: bool) {
    for _ in 0..4 {
        match server.handshake() {
            Handshake::Done => {
                let _ = server.selected_alpn();
                let _ = server.server_name();
                let _ = server.version();
                let mut buf = [0u8; 4096];
                for _ in 0..64 {
                    match server.read(&mut buf) {
                        ReadOutcome::Data(0) | ReadOutcome::WouldBlock => break,
                        ReadOutcome::Data(_) => {
                            if respond {
                                let _ = server.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                            }
                        }
                        ReadOutcome::Closed | ReadOutcome::Error(_) => break,
                    }
                    if !server.has_buffered_input() {
                        break;
                    }
                }
                let _ = server.flush();
                break;
            }
            Handshake::InProgress => {}
            Handshake::Failed(reason) => {
                assert!(!reason.is_empty(), "a failure always has a reason");
                let _ = server.peer_hung_up();
                break;
            }
        }
        drain(peer);
    }
    drain(peer);
}

/// Completes a real handshake between `server` and the library's client.
fn real_handshake(server: &mut Connection, client: &mut Connection) -> bool {
    for _ in 0..64 {
        let c = client.handshake();
        let s = server.handshake();
        match (c, s) {
            (Handshake::Done, Handshake::Done) => return true,
            (Handshake::Failed(_), _) | (_, Handshake::Failed(_)) => return false,
            _ => {}
        }
    }
    false
}

/// One input; panics (or a sanitizer report) on a bug.
pub fn run(input: &[u8]) {
    if input.len() < 2 {
        return;
    }
    let (flags, chunk, payload) = (input[0], input[1] as usize * 7, &input[2..]);
    let s = settings();
    let built = if flags & 1 != 0 { &s.mutual } else { &s.plain };
    let (server_end, client_end) = pair();
    let mut server =
        Connection::new(&built.server, Role::Server, server_end.as_raw_fd(), None).expect("server connection");
    let respond = flags & 8 != 0;
    if respond {
        let _ = server.write(b"early response bytes");
    }

    if flags & 2 != 0 {
        // An established session gets the payload as raw records.
        let mut client = Connection::new(&s.plain.client, Role::Client, client_end.as_raw_fd(), Some("localhost"))
            .expect("client connection");
        if !real_handshake(&mut server, &mut client) {
            // (mutual settings refuse our anonymous client: also fine)
            step(&mut server, &client_end, respond);
            return;
        }
        let _ = client.write(b"GET / HTTP/1.1\r\n\r\n");
        let _ = client.flush();
    }

    if chunk == 0 {
        feed(&client_end, &mut server, payload);
        step(&mut server, &client_end, respond);
    } else {
        for piece in payload.chunks(chunk) {
            feed(&client_end, &mut server, piece);
            step(&mut server, &client_end, respond);
        }
    }
    if flags & 4 != 0 {
        let _ = client_end.shutdown(std::net::Shutdown::Write);
        step(&mut server, &client_end, respond);
    }
    let _ = server.shutdown();
    drain(&client_end);
    server.detach();
    assert!(server.is_detached());
}
