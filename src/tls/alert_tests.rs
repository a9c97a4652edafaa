//! What a TCP peer sees after a failed handshake: the alert (not a reset),
//! or for plaintext HTTP the 400 answer.
//!
//! TLS 1.3 client authentication fails on the server after the client has
//! finished its side and (typically) sent its request. If the server closes
//! with those bytes unread, the kernel answers with a reset and the client
//! reports "connection reset" instead of the alert. With OpenSSL 3.0 our
//! read-ahead swallowed them; OpenSSL 3.2+ ignores read-ahead during the
//! handshake, so the connection drops them itself (`FdIo::discard_input`).

use super::config::Trust;
use super::{Connection, Handshake, ReadOutcome, Role, TlsConfig};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_nonblocking(true).unwrap();
        s.set_nodelay(true).unwrap();
    }
    (server, client)
}

#[test]
fn a_client_without_the_required_certificate_reads_the_alert_not_a_reset() {
    let mut server_cfg: TlsConfig<u8> = TlsConfig::new(Some("mtls.test"), None, None).unwrap();
    let ca = server_cfg.certs()[0].chain[0].clone();
    server_cfg.trust_with(Trust::cas(vec![ca]));
    let server_ctx = server_cfg.build().unwrap().server;
    let client_ctx = TlsConfig::<u8>::new(None, None, None).unwrap().build().unwrap().client;

    let (s_sock, c_sock) = tcp_pair();
    let mut server = Connection::new(&server_ctx, Role::Server, s_sock.as_raw_fd(), None).unwrap();
    let mut client = Connection::new(&client_ctx, Role::Client, c_sock.as_raw_fd(), Some("mtls.test")).unwrap();

    // Until the client is done (TLS 1.3: after its empty Certificate and
    // Finished), without letting the server see that last flight.
    let mut client_done = false;
    for _ in 0..200 {
        if client.handshake() == Handshake::Done {
            client_done = true;
            break;
        }
        assert_eq!(server.handshake(), Handshake::InProgress);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(client_done, "the client side of the handshake did not finish");
    std::thread::sleep(Duration::from_millis(20));

    match server.handshake() {
        Handshake::Failed(r) => assert!(r.contains("certificate"), "{r}"),
        other => panic!("the server accepted a client without a certificate: {other:?}"),
    }
    // Nothing the client sent is left unread in the server's socket...
    let mut peek = [0u8; 1];
    // SAFETY: a live socket and buffer.
    let left = unsafe {
        libc::recv(s_sock.as_raw_fd(), peek.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    assert_eq!(left, -1, "client bytes left unread in the server's socket at close");
    // ... so the host's close sends a FIN, not a reset.
    drop(server);
    drop(s_sock);
    std::thread::sleep(Duration::from_millis(20));
    // The client sends its request now (as curl does) and then reads: with
    // a reset the send fails and the alert is lost.
    client.write(b"GET / HTTP/1.1\r\nHost: mtls.test\r\n\r\n").expect("the request is sent (no reset)");
    assert_eq!(client.flush().expect("the request is sent (no reset)"), 0);

    let mut buf = [0u8; 1024];
    let mut outcome = ReadOutcome::WouldBlock;
    for _ in 0..200 {
        outcome = client.read(&mut buf);
        if !matches!(outcome, ReadOutcome::WouldBlock) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match outcome {
        ReadOutcome::Error(e) => {
            let text = e.to_string();
            assert!(text.contains("certificate required"), "the client did not get the alert: {e:?} ({text})");
        }
        other => panic!("expected the alert as an error, got {other:?}"),
    }
}

/// Plain HTTP to the TLS port gets a 400 whatever the method: OpenSSL 3.2+
/// reports "POST /..." as "packet length too long", not "http request".
#[test]
fn any_plaintext_http_request_gets_the_400_answer() {
    let built = TlsConfig::<u8>::new(Some("plain.test"), None, None).unwrap().build().unwrap();
    for request in [
        &b"POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
        b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (s, c) = tcp_pair();
        let mut server = Connection::new(&built.server, Role::Server, s.as_raw_fd(), None).unwrap();
        (&c).write_all(request).unwrap();
        (&c).write_all(&[b'x'; 4096]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let what = String::from_utf8_lossy(&request[..6]).into_owned();
        match server.handshake() {
            Handshake::Failed(reason) => assert_eq!(reason, "http request", "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        drop(server);
        drop(s);
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = Vec::new();
        (&c).read_to_end(&mut answer).unwrap_or_else(|e| panic!("{what}: {e} (a reset instead of the answer?)"));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{what}: {text}");
    }
}
