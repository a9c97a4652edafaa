//! One TLS connection over a non-blocking file descriptor.
//!
//! OpenSSL reads straight from the fd into its record buffer. Application
//! data is encrypted in batches of a few records ([`WRITE_BATCH`]) that are
//! collected in an outgoing buffer and handed to the kernel with one
//! `send(2)` per batch (one per 16 KiB record cost a system call and a
//! loopback/TCP packet each); handshake messages and alerts go straight to
//! the fd. Whatever the kernel refuses (EAGAIN) stays in the outgoing
//! buffer, drained by [`Connection::flush`]. So writing never blocks and
//! never fails for lack of socket space: the caller bounds memory by looking
//! at [`Connection::pending_output`].
//!
//! The type is not thread-safe by itself (an `SSL*` must not be driven from
//! two threads at once); the host layer wraps it in a mutex.

use super::error::first_reason;
use super::sys;
use openssl::ssl::{ErrorCode, ShutdownResult, SslContext, SslStream, SslVerifyMode};
use openssl::x509::X509VerifyResult;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;

/// Plaintext bytes encrypted per batch: four full 16 KiB records, whose
/// ciphertext (about 64 KiB, one loopback segment) leaves in one `send(2)`.
pub const WRITE_BATCH: usize = 64 * 1024;
/// Most plaintext bytes one `write` call takes. Batches continue only while
/// the kernel takes each one whole, so this bounds the time of one call
/// (a few hundred µs of encryption), not memory.
pub const WRITE_LIMIT: usize = 1024 * 1024;
/// Above this much undelivered ciphertext (bytes), `write` makes a short
/// write.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// Ciphertext overhead per record we reserve for: 5-byte header, 16-byte
/// AEAD tag, TLS 1.3's content type byte or TLS 1.2's 8-byte explicit nonce.
const RECORD_OVERHEAD: usize = 32;
/// Largest plaintext per record (OpenSSL's default `max_send_fragment`).
const RECORD_PLAINTEXT: usize = 16 * 1024;
/// What `write` takes when over a limit. Pushing back with a short write
/// rather than an error (or zero) matters to facil.io 0.7.0.beta4: its
/// file sender (`fio_sock_write_from_fd`) turns a -1/EWOULDBLOCK from the
/// write hook into a 0 return, which `fio_flush` takes for a dead peer. A
/// short write ends its loop and makes it wait for the socket instead.
pub const SHORT_WRITE: usize = 1;

/// The most a failed handshake reads and drops before the close (see
/// `FdIo::discard_input`): the rest of a handshake flight plus a request.
pub const DISCARD_LIMIT: usize = 64 * 1024;

/// Which side of the handshake we play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// The raw transport under OpenSSL: the fd plus the ciphertext the kernel
/// has not taken yet.
pub struct FdIo {
    fd: RawFd,
    out: Vec<u8>,
    out_pos: usize,
    /// Collect what OpenSSL writes in `out` instead of sending it (one
    /// batch of records, sent together by `drain`).
    collect: bool,
    /// The first bytes read from the fd (to recognise a plaintext HTTP
    /// request after a failed handshake).
    head: [u8; 8],
    head_len: u8,
}

impl FdIo {
    fn new(fd: RawFd) -> Self {
        FdIo { fd, out: Vec::new(), out_pos: 0, collect: false, head: [0; 8], head_len: 0 }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// One `send(2)` (MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE).
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a live slice; fd is owned by the caller.
            let n = unsafe { libc::send(self.fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not a socket (a pipe in a test): plain write(2).
                Some(libc::ENOTSOCK) => {
                    // SAFETY: as above.
                    let n = unsafe { libc::write(self.fd, buf.as_ptr().cast(), buf.len()) };
                    return if n >= 0 { Ok(n as usize) } else { Err(io::Error::last_os_error()) };
                }
                _ => return Err(e),
            }
        }
    }

    /// Writes buffered ciphertext until done or EAGAIN and, once all is
    /// sent, frees the buffer; returns what is left.
    fn drain(&mut self) -> io::Result<usize> {
        self.send_out()?;
        if self.out_pos == self.out.len() {
            // Drained: give the memory back rather than keep it per idle
            // connection.
            self.out = Vec::new();
            self.out_pos = 0;
        }
        Ok(self.pending())
    }

    /// The connection began like a plaintext HTTP/1.x request (a method
    /// and a space). OpenSSL says "http request" for some of them only:
    /// 3.2 and newer check the record length first, so "POST /..." (whose
    /// bytes 4-5 read as a length over 16 KiB) fails as "packet length too
    /// long".
    fn began_with_http_method(&self) -> bool {
        const METHODS: [&[u8]; 9] =
            [b"GET ", b"POST ", b"HEAD ", b"PUT ", b"PATCH ", b"DELETE ", b"OPTIONS ", b"TRACE ", b"CONNECT "];
        let head = &self.head[..self.head_len as usize];
        METHODS.iter().any(|m| {
            let n = m.len().min(head.len());
            n >= 4 && head[..n] == m[..n]
        })
    }

    /// Reads and drops what the peer has already sent, up to
    /// [`DISCARD_LIMIT`] bytes, without waiting. After a failed handshake
    /// this lets the close that follows send a FIN behind our alert: a
    /// socket closed with unread input sends a TCP reset instead, and a
    /// peer that gets the reset before reading (a client sending its
    /// request right after its Finished) sees "connection reset" rather
    /// than the alert's reason ("certificate required"). OpenSSL 3.0 read
    /// those bytes itself (read-ahead); OpenSSL 3.2 and newer ignore
    /// read-ahead until the handshake is done, so they stay in the socket.
    fn discard_input(&self) {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < DISCARD_LIMIT {
            // SAFETY: buf is a live mutable array; fd is owned by the caller.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return; // EOF, EAGAIN, or not a socket
            }
            total += n as usize;
        }
    }

    /// Writes buffered ciphertext until done or EAGAIN, keeping the
    /// buffer's memory for the next batch.
    fn send_out(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.send(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }
}

impl Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a live mutable slice.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                let (have, n) = (self.head_len as usize, n as usize);
                if have < self.head.len() {
                    let take = (self.head.len() - have).min(n);
                    self.head[have..have + take].copy_from_slice(&buf[..take]);
                    self.head_len += take as u8;
                }
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

impl Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        if self.pending() == 0 && !self.collect {
            match self.send(buf) {
                Ok(n) => done = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // Keep what the kernel did not take, in order, behind older bytes.
        self.out.extend_from_slice(&buf[done..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// OpenSSL 3's reason for a stream that ends without close_notify.
const UNEXPECTED_EOF: &str = "unexpected eof while reading";

/// An end of stream or a reset from the peer, as opposed to a TLS error.
fn is_hangup(e: &openssl::ssl::Error) -> bool {
    if let Some(io) = e.io_error() {
        // EBADF: the host closed the fd under us; the connection is gone.
        return matches!(
            io.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
        ) || io.raw_os_error() == Some(libc::EBADF);
    }
    match e.ssl_error() {
        Some(stack) => stack.errors().iter().any(|x| x.reason() == Some(UNEXPECTED_EOF)),
        None => e.code() == ErrorCode::SYSCALL,
    }
}

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Handshaking,
    Established,
    /// close_notify sent (our side is done writing).
    ShutDown,
    /// A fatal error: nothing more may be written.
    Failed,
}

/// Result of driving the handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Finished now or earlier.
    Done,
    /// Waiting for the peer (or for the socket to drain).
    InProgress,
    /// Failed; the reason is one line of text. Any alert OpenSSL produced is
    /// in the outgoing buffer.
    Failed(String),
}

/// The fd value of a detached connection: every system call on it fails
/// with EBADF, so a detached connection can never touch a reused fd.
const NO_FD: RawFd = -1;

/// Result of a read.
#[derive(Debug)]
pub enum ReadOutcome {
    Data(usize),
    /// Nothing decrypted now; wait for the socket.
    WouldBlock,
    /// The peer closed: close_notify, or end of stream.
    Closed,
    /// A fatal TLS or socket error.
    Error(io::Error),
}

/// A TLS session over an fd. The fd is borrowed: closing it is the owner's
/// job.
pub struct Connection {
    stream: SslStream<FdIo>,
    phase: Phase,
    role: Role,
    /// Plaintext written before the handshake finished, sent right after it.
    early: Vec<u8>,
    /// Plaintext taken by short writes while over [`OUTPUT_HIGH_WATER`],
    /// not encrypted yet (so that push-back does not make 1-byte records);
    /// always shorter than one record.
    held: Vec<u8>,
    /// The failure was the peer hanging up (EOF or reset), not a TLS error.
    peer_hung_up: bool,
}

impl Connection {
    /// Starts a session on `fd`.
    ///
    /// For a client, `peer_name` is the server's expected name: a host name
    /// is sent as SNI (an IP literal is not, RFC 6066 section 3), and when
    /// the context verifies peers, OpenSSL checks the certificate against
    /// it (host name or IP address).
    pub fn new(ctx: &SslContext, role: Role, fd: RawFd, peer_name: Option<&str>) -> Result<Self, String> {
        let mut ssl = sys::new_ssl(ctx).map_err(|e| first_reason(&e))?;
        match role {
            Role::Server => ssl.set_accept_state(),
            Role::Client => {
                if let Some(name) = peer_name {
                    let verify = ctx.verify_mode().contains(SslVerifyMode::PEER);
                    let set = match name.parse::<std::net::IpAddr>() {
                        Ok(ip) if verify => ssl.param_mut().set_ip(ip),
                        Ok(_) => Ok(()),
                        Err(_) if verify => ssl.set_hostname(name).and_then(|()| ssl.param_mut().set_host(name)),
                        Err(_) => ssl.set_hostname(name),
                    };
                    set.map_err(|e| first_reason(&e))?;
                }
                ssl.set_connect_state();
            }
        }
        let stream = SslStream::new(ssl, FdIo::new(fd)).map_err(|e| first_reason(&e))?;
        Ok(Connection { stream, phase: Phase::Handshaking, role, early: Vec::new(), held: Vec::new(), peer_hung_up: false })
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The ALPN protocol agreed on, if any.
    pub fn selected_alpn(&self) -> Option<&[u8]> {
        self.stream.ssl().selected_alpn_protocol()
    }

    /// The SNI name the client sent (server side) or that we sent (client).
    pub fn server_name(&self) -> Option<&str> {
        self.stream.ssl().servername(openssl::ssl::NameType::HOST_NAME)
    }

    /// The negotiated protocol version, e.g. "TLSv1.3".
    pub fn version(&self) -> &'static str {
        self.stream.ssl().version_str()
    }

    /// The key exchange group agreed on, by OpenSSL's name ("X25519MLKEM768",
    /// "x25519", ...); `None` before the key exchange.
    pub fn negotiated_group(&self) -> Option<String> {
        sys::negotiated_group(self.stream.ssl())
    }

    /// Bytes waiting for the socket: ciphertext, plus plaintext taken by
    /// short writes and not encrypted yet.
    pub fn pending_output(&self) -> usize {
        self.stream.get_ref().pending() + self.held.len()
    }

    /// True when a read would return data without new bytes on the fd.
    pub fn has_buffered_input(&self) -> bool {
        sys::has_pending(self.stream.ssl())
    }

    /// Drives the handshake as far as the socket allows.
    pub fn handshake(&mut self) -> Handshake {
        match self.phase {
            Phase::Handshaking => {}
            Phase::Failed if self.is_detached() => return Handshake::Failed("connection closed by the host".into()),
            Phase::Failed => return Handshake::Failed("connection already failed".into()),
            _ => return Handshake::Done,
        }
        // What one step writes (the server's flight, its session tickets,
        // an alert) leaves in one send(2).
        self.stream.get_mut().collect = true;
        let step = self.stream.do_handshake();
        let io = self.stream.get_mut();
        io.collect = false;
        let tls_failed = matches!(&step, Err(e) if !matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE));
        if tls_failed && self.role == Role::Server && io.began_with_http_method() {
            // Plaintext HTTP: OpenSSL 3.2+ may have queued an alert (e.g.
            // record_overflow for "POST /"); the client would read it as
            // garbage in front of the 400 answer.
            io.out.clear();
            io.out_pos = 0;
        }
        if let Err(e) = io.drain() {
            // A TLS failure's own reason says more than the socket's.
            if !tls_failed {
                self.phase = Phase::Failed;
                self.peer_hung_up = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::WriteZero
                ) || e.raw_os_error() == Some(libc::EBADF);
                return Handshake::Failed(super::error::os_reason(&e));
            }
        }
        match step {
            Ok(()) => {
                self.phase = Phase::Established;
                if !self.early.is_empty() {
                    let early = std::mem::take(&mut self.early);
                    if let Err(e) = self.write_all_now(&early) {
                        self.phase = Phase::Failed;
                        return Handshake::Failed(e.to_string());
                    }
                }
                Handshake::Done
            }
            Err(e) => match e.code() {
                ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => Handshake::InProgress,
                _ => {
                    self.phase = Phase::Failed;
                    self.peer_hung_up = is_hangup(&e);
                    if !self.peer_hung_up {
                        // The alert is sent (or queued): let the close
                        // carry a FIN, not a reset that can destroy it.
                        self.stream.get_ref().discard_input();
                    }
                    let mut reason = self.describe_error(&e);
                    if self.role == Role::Server && self.stream.get_ref().began_with_http_method() {
                        reason = "http request".into();
                    }
                    if self.role == Role::Server && reason == "http request" {
                        self.answer_plaintext_http();
                    }
                    Handshake::Failed(reason)
                }
            },
        }
    }

    /// A plain HTTP request reached the TLS port: say so in plain HTTP
    /// before the connection closes (best effort, like nginx's 400 "The
    /// plain HTTP request was sent to HTTPS port").
    fn answer_plaintext_http(&mut self) {
        const BODY: &str = "This port speaks HTTPS (TLS). Use an https:// URL.\n";
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = self.stream.get_mut().write(response.as_bytes());
    }

    /// Stops all I/O for good: the fd's owner is about to close it (and the
    /// number may then be reused by another connection). Later calls fail
    /// or report the connection closed; nothing is written.
    pub fn detach(&mut self) {
        let io = self.stream.get_mut();
        io.fd = NO_FD;
        io.out = Vec::new();
        io.out_pos = 0;
        self.held = Vec::new();
        if self.phase == Phase::Handshaking {
            self.peer_hung_up = true;
        }
        self.phase = Phase::Failed;
    }

    /// True once [`Connection::detach`] ran.
    pub fn is_detached(&self) -> bool {
        self.stream.get_ref().fd == NO_FD
    }

    /// True when the handshake failed because the peer hung up (scanners,
    /// health checks, impatient clients) rather than on a TLS error.
    pub fn peer_hung_up(&self) -> bool {
        self.peer_hung_up
    }

    fn describe_error(&self, e: &openssl::ssl::Error) -> String {
        // Without peer verification (anonymous mode) OpenSSL still records
        // why it would have refused the certificate: not our failure then.
        let verify = self.stream.ssl().verify_result();
        if verify != X509VerifyResult::OK && self.stream.ssl().verify_mode().contains(SslVerifyMode::PEER) {
            return format!("certificate verify failed: {}", verify.error_string());
        }
        if let Some(stack) = e.ssl_error() {
            return first_reason(stack);
        }
        match e.io_error() {
            Some(io) => super::error::os_reason(io),
            None if e.code() == ErrorCode::SYSCALL => "peer closed the connection".into(),
            None if e.code() == ErrorCode::ZERO_RETURN => "peer sent close_notify".into(),
            None => format!("OpenSSL error code {}", e.code().as_raw()),
        }
    }

    fn write_all_now(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.stream.ssl_write(buf).map_err(|e| self.fail_io(e))?;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn fail_io(&mut self, e: openssl::ssl::Error) -> io::Error {
        let reason = self.describe_error(&e);
        self.phase = Phase::Failed;
        match e.into_io_error() {
            Ok(io) => io,
            Err(_) => io::Error::new(io::ErrorKind::ConnectionAborted, reason),
        }
    }

    /// Decrypts into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> ReadOutcome {
        match self.phase {
            Phase::Handshaking => return ReadOutcome::WouldBlock,
            Phase::Failed if self.is_detached() => return ReadOutcome::Closed,
            Phase::Failed => return ReadOutcome::Error(io::ErrorKind::ConnectionAborted.into()),
            _ => {}
        }
        if buf.is_empty() {
            return ReadOutcome::Data(0);
        }
        match self.stream.ssl_read(buf) {
            Ok(n) => ReadOutcome::Data(n),
            Err(e) => match e.code() {
                ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => ReadOutcome::WouldBlock,
                ErrorCode::ZERO_RETURN => ReadOutcome::Closed,
                ErrorCode::SYSCALL if e.io_error().is_none() => ReadOutcome::Closed,
                _ => {
                    if e.ssl_error().is_some() && is_hangup(&e) {
                        // A peer that closes without close_notify: an end of
                        // stream to the application (as HTTP/1.1 clients do).
                        self.phase = Phase::Failed;
                        return ReadOutcome::Closed;
                    }
                    ReadOutcome::Error(self.fail_io(e))
                }
            },
        }
    }

    /// Encrypts `buf` in batches of [`WRITE_BATCH`] bytes, one `send(2)`
    /// per batch, and returns how many bytes were taken (0 only for an empty
    /// `buf`). It stops after the first batch the kernel did not take whole
    /// (its rest waits in the outgoing buffer) or after [`WRITE_LIMIT`]
    /// bytes. While too much is undelivered it takes just [`SHORT_WRITE`]
    /// bytes, kept as plaintext until the socket drains (they lead the next
    /// record): a short write is the back-pressure signal. Errors only when
    /// the connection can no longer carry data.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.phase {
            // Everything written before the handshake is kept until it ends.
            // No limit: facil.io would answer any push-back with a write
            // poll, and the socket is writable, so it would spin until the
            // handshake is done (or its deadline passes).
            Phase::Handshaking => {
                self.early.extend_from_slice(buf);
                return Ok(buf.len());
            }
            Phase::Failed | Phase::ShutDown => return Err(io::ErrorKind::BrokenPipe.into()),
            Phase::Established => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let io = self.stream.get_mut();
        let over = io.pending() >= OUTPUT_HIGH_WATER && io.drain()? >= OUTPUT_HIGH_WATER;
        if over {
            let n = buf.len().min(SHORT_WRITE);
            self.held.extend_from_slice(&buf[..n]);
            if self.held.len() >= RECORD_PLAINTEXT {
                // A full record's worth (after thousands of short writes).
                let held = std::mem::take(&mut self.held);
                self.write_all_now(&held)?;
            }
            return Ok(n);
        }
        let mut taken = 0;
        if !self.held.is_empty() {
            // Held bytes go first, in one record topped up from `buf`.
            taken = (RECORD_PLAINTEXT - self.held.len()).min(buf.len());
            let mut first = std::mem::take(&mut self.held);
            first.extend_from_slice(&buf[..taken]);
            self.write_all_now(&first)?;
        }
        while taken < buf.len() && taken < WRITE_LIMIT {
            if taken > 0 && self.pending_output() > 0 {
                // The socket is full.
                break;
            }
            let n = (buf.len() - taken).min(WRITE_BATCH);
            self.write_batch(&buf[taken..taken + n])?;
            taken += n;
        }
        if self.pending_output() == 0 {
            self.stream.get_mut().out = Vec::new();
        }
        Ok(taken)
    }

    /// Encrypts `buf` into the outgoing buffer, behind anything still
    /// waiting there, then sends what the kernel takes.
    fn write_batch(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() <= RECORD_PLAINTEXT {
            // One record: nothing to gather, so no copy.
            return self.write_all_now(buf);
        }
        let io = self.stream.get_mut();
        let records = buf.len().div_ceil(RECORD_PLAINTEXT);
        io.out.reserve(buf.len() + records * RECORD_OVERHEAD);
        io.collect = true;
        let written = self.write_all_now(buf);
        let io = self.stream.get_mut();
        io.collect = false;
        written?;
        io.send_out()
    }

    /// Sends buffered ciphertext, and held plaintext once the socket has
    /// room for it; returns the bytes still waiting (as
    /// [`Connection::pending_output`]).
    pub fn flush(&mut self) -> io::Result<usize> {
        if self.phase != Phase::Established {
            // Nothing more may be encrypted (and held bytes were written
            // before close_notify).
            self.held = Vec::new();
        }
        let left = self.stream.get_mut().drain()?;
        if !self.held.is_empty() && left < OUTPUT_HIGH_WATER && self.phase == Phase::Established {
            let held = std::mem::take(&mut self.held);
            self.write_all_now(&held)?;
            self.stream.get_mut().drain()?;
        }
        Ok(self.pending_output())
    }

    /// Asks the kernel to hold the connection's last partial TCP segment
    /// (`TCP_CORK`) until the fd is closed, so that what is written from now
    /// on (the close_notify) reaches the peer together with the FIN, not
    /// earlier. Call it only when the fd's owner closes it right after: the
    /// kernel sends held bytes after 200 ms anyway. Harmless (ignored) on
    /// sockets that are not TCP.
    pub fn hold_until_close(&mut self) {
        let fd = self.stream.get_ref().fd;
        if fd == NO_FD {
            return;
        }
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a valid pointer and length; failure (not
        // TCP, fd already gone) changes nothing we rely on.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// Sends close_notify once (if the session is healthy) and tries to
    /// deliver it. Returns the bytes still waiting.
    pub fn shutdown(&mut self) -> usize {
        if self.phase == Phase::Established {
            // Held plaintext goes before close_notify.
            let held = std::mem::take(&mut self.held);
            if self.write_all_now(&held).is_err() {
                return self.flush().unwrap_or(0);
            }
            self.phase = Phase::ShutDown;
            match self.stream.shutdown() {
                Ok(ShutdownResult::Sent) | Ok(ShutdownResult::Received) => {}
                Err(_) => self.phase = Phase::Failed,
            }
        }
        self.flush().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::config::{Built, TlsConfig};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Drives both handshakes over a socket pair until both are done.
    fn connect(server: &mut Connection, client: &mut Connection) {
        for _ in 0..100 {
            let c = client.handshake();
            let s = server.handshake();
            if let Handshake::Failed(r) = &c {
                panic!("client failed: {r}");
            }
            if let Handshake::Failed(r) = &s {
                panic!("server failed: {r}");
            }
            if c == Handshake::Done && s == Handshake::Done {
                return;
            }
        }
        panic!("handshake did not finish");
    }

    fn read_all(conn: &mut Connection, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        for _ in 0..10_000 {
            match conn.read(&mut buf) {
                ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
                ReadOutcome::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => panic!("unexpected {other:?}"),
            }
            if got.len() >= want {
                break;
            }
        }
        got
    }

    fn peer_common_name(conn: &Connection) -> String {
        let peer = conn.stream.ssl().peer_certificate().unwrap();
        let entry = peer.subject_name().entries().next().unwrap();
        String::from_utf8(entry.data().as_slice().to_vec()).unwrap()
    }

    /// A server and a client connection over a fresh socket pair (kept
    /// open with them), from [`configs`]; the client sends `sni`.
    struct Peers {
        server: Connection,
        client: Connection,
        _sockets: (UnixStream, UnixStream),
    }

    fn peers(sni: Option<&str>) -> Peers {
        let built = configs().build().unwrap();
        let (s, c) = pair();
        let server = Connection::new(&built.server, Role::Server, s.as_raw_fd(), None).unwrap();
        let client = Connection::new(&built.client, Role::Client, c.as_raw_fd(), sni).unwrap();
        Peers { server, client, _sockets: (s, c) }
    }

    fn configs() -> TlsConfig<u8> {
        let mut cfg = TlsConfig::new(Some("one.test"), None, None).unwrap();
        cfg.add_cert(Some("two.test"), None, None).unwrap();
        cfg.add_protocol("proto-a", 1).unwrap();
        cfg.add_protocol("proto-b", 2).unwrap();
        cfg
    }

    #[test]
    fn handshake_alpn_sni_and_data_round_trip() {
        let Peers { mut server, mut client, _sockets } = peers(Some("two.test"));
        connect(&mut server, &mut client);
        assert_eq!(server.selected_alpn(), Some(&b"proto-a"[..]), "server preference");
        assert_eq!(server.server_name(), Some("two.test"));
        assert_eq!(server.version(), "TLSv1.3");
        // The certificate the client saw is the one for two.test.
        let cn = peer_common_name(&client);
        assert_eq!(cn, "two.test");

        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        let mut received = Vec::new();
        let mut buf = vec![0u8; 16384];
        while received.len() < payload.len() {
            if sent < payload.len() {
                match client.write(&payload[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            client.flush().unwrap();
            if let ReadOutcome::Data(n) = server.read(&mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(received, payload);
    }

    #[test]
    fn unknown_sni_gets_the_default_certificate() {
        let Peers { mut server, mut client, _sockets } = peers(Some("other.test"));
        connect(&mut server, &mut client);
        let cn = peer_common_name(&client);
        assert_eq!(cn, "one.test");
    }

    #[test]
    fn early_writes_are_sent_after_the_handshake() {
        let Peers { mut server, mut client, _sockets } = peers(None);
        assert_eq!(server.write(b"hello before handshake").unwrap(), 22);
        connect(&mut server, &mut client);
        assert_eq!(read_all(&mut client, 22), b"hello before handshake");
    }

    #[test]
    fn close_notify_reads_as_closed() {
        let Peers { mut server, mut client, _sockets } = peers(None);
        connect(&mut server, &mut client);
        assert_eq!(client.shutdown(), 0);
        assert_eq!(client.phase(), Phase::ShutDown);
        let mut buf = [0u8; 64];
        let mut outcome = server.read(&mut buf);
        for _ in 0..100 {
            if !matches!(outcome, ReadOutcome::WouldBlock) {
                break;
            }
            outcome = server.read(&mut buf);
        }
        assert!(matches!(outcome, ReadOutcome::Closed), "{outcome:?}");
        assert!(client.write(b"x").is_err(), "no writes after close_notify");
    }

    #[test]
    fn contexts_built_earlier_follow_later_protocols_and_certificates() {
        let mut cfg: TlsConfig<u8> = TlsConfig::new(Some("one.test"), None, None).unwrap();
        cfg.add_cert(Some("two.test"), None, None).unwrap();
        let _before = cfg.build().unwrap(); // builds (and keeps) both server contexts
        cfg.add_protocol("late", 1).unwrap();
        cfg.add_cert(Some("three.test"), None, None).unwrap();
        let built = cfg.build().unwrap();
        for name in ["one.test", "two.test", "three.test"] {
            let (s, c) = pair();
            let mut server = Connection::new(&built.server, Role::Server, s.as_raw_fd(), None).unwrap();
            let mut client = Connection::new(&built.client, Role::Client, c.as_raw_fd(), Some(name)).unwrap();
            connect(&mut server, &mut client);
            assert_eq!(server.selected_alpn(), Some(&b"late"[..]), "{name}");
            assert_eq!(peer_common_name(&client), name);
        }
    }

    /// Client settings that trust `ca` (a self-signed certificate acting as
    /// its own root).
    fn verifying_client(ca: &openssl::x509::X509) -> Built<u8> {
        let mut cfg: TlsConfig<u8> = TlsConfig::new(None, None, None).unwrap();
        cfg.trust_with(crate::tls::config::Trust::cas(vec![ca.clone()]));
        cfg.build().unwrap()
    }

    fn client_result(server_cfg: &mut TlsConfig<u8>, client: &Built<u8>, name: &str) -> Handshake {
        let built = server_cfg.build().unwrap();
        let (s, c) = pair();
        let mut server = Connection::new(&built.server, Role::Server, s.as_raw_fd(), None).unwrap();
        let mut client = Connection::new(&client.client, Role::Client, c.as_raw_fd(), Some(name)).unwrap();
        for _ in 0..100 {
            let r = client.handshake();
            let _ = server.handshake();
            if r != Handshake::InProgress {
                return r;
            }
        }
        Handshake::InProgress
    }

    #[test]
    fn verification_checks_chain_and_host_name() {
        let mut cfg = configs();
        let trusted = cfg.certs()[0].chain[0].clone();
        let client = verifying_client(&trusted);
        assert_eq!(client_result(&mut cfg, &client, "one.test"), Handshake::Done);
        match client_result(&mut cfg, &client, "wrong.test") {
            Handshake::Failed(r) => assert!(r.contains("hostname mismatch"), "{r}"),
            other => panic!("{other:?}"),
        }
        let (_, stranger) = crate::tls::selfsigned::generate("one.test").unwrap();
        match client_result(&mut cfg, &verifying_client(&stranger), "one.test") {
            Handshake::Failed(r) => assert!(r.starts_with("certificate verify failed: "), "{r}"),
            other => panic!("{other:?}"),
        }
        // Anonymous mode connects to the same server under any name.
        let anonymous: Built<u8> = TlsConfig::new(None, None, None).unwrap().build().unwrap();
        assert_eq!(client_result(&mut cfg, &anonymous, "wrong.test"), Handshake::Done);
    }

    #[test]
    fn garbage_fails_the_handshake_with_a_reason() {
        let built = configs().build().unwrap();
        let (s, c) = pair();
        let mut server = Connection::new(&built.server, Role::Server, s.as_raw_fd(), None).unwrap();
        (&c).write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        match server.handshake() {
            Handshake::Failed(reason) => assert!(reason.contains("http request"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let mut answer = [0u8; 512];
        let n = (&c).read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        assert!(answer.contains("speaks HTTPS"), "{answer}");
        assert_eq!(server.phase(), Phase::Failed);
        assert!(!server.peer_hung_up(), "a protocol error is not a hang-up");
        assert!(server.write(b"x").is_err());
    }

    #[test]
    fn a_peer_hanging_up_mid_handshake_is_classified_as_such() {
        let built = configs().build().unwrap();
        let (s, c) = pair();
        let mut server = Connection::new(&built.server, Role::Server, s.as_raw_fd(), None).unwrap();
        (&c).write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap();
        assert_eq!(server.handshake(), Handshake::InProgress);
        drop(c);
        assert!(matches!(server.handshake(), Handshake::Failed(_)));
        assert!(server.peer_hung_up());
    }

    #[test]
    fn a_detached_connection_never_touches_its_old_fd() {
        let Peers { mut server, mut client, _sockets } = peers(None);
        connect(&mut server, &mut client);
        server.detach();
        assert!(server.is_detached());
        assert!(server.write(b"must not be sent").is_err());
        assert_eq!(server.shutdown(), 0);
        assert!(matches!(server.read(&mut [0u8; 16]), ReadOutcome::Closed));
        // The peer sees neither data nor close_notify: the fd was left alone.
        let mut buf = [0u8; 64];
        assert!(matches!(client.read(&mut buf), ReadOutcome::WouldBlock));
        let built = configs().build().unwrap();
        let mut fresh = Connection::new(&built.server, Role::Server, _sockets.0.as_raw_fd(), None).unwrap();
        fresh.detach();
        assert!(matches!(fresh.handshake(), Handshake::Failed(_)));
        assert!(fresh.peer_hung_up(), "a host close is not a TLS error worth logging");
    }

    #[test]
    fn output_is_bounded_when_the_peer_does_not_read() {
        let Peers { mut server, mut client, _sockets } = peers(None);
        connect(&mut server, &mut client);
        let chunk = vec![7u8; 1 << 20];
        let mut short = false;
        for _ in 0..64 {
            let n = server.write(&chunk).unwrap();
            assert!(n > 0, "a write never takes nothing (facil.io reads 0 as a dead peer)");
            if n == SHORT_WRITE {
                short = true;
                break;
            }
        }
        assert!(short, "a peer that never reads must push back with a short write");
        assert!(server.pending_output() < OUTPUT_HIGH_WATER + WRITE_BATCH + 1024);
    }

    #[test]
    fn push_back_holds_plaintext_instead_of_making_tiny_records() {
        let Peers { mut server, mut client, _sockets } = peers(None);
        connect(&mut server, &mut client);
        let payload: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while server.write(&payload[sent..]).map(|n| sent += n).is_ok() && server.pending_output() < OUTPUT_HIGH_WATER {}
        // Over the high-water mark: each write takes one byte and encrypts
        // nothing.
        let ciphertext = server.stream.get_ref().pending();
        assert!(ciphertext >= OUTPUT_HIGH_WATER);
        for _ in 0..10 {
            assert_eq!(server.write(&payload[sent..]).unwrap(), SHORT_WRITE);
            sent += SHORT_WRITE;
        }
        assert_eq!(server.stream.get_ref().pending(), ciphertext, "no record while over the mark");
        assert_eq!(server.pending_output(), ciphertext + 10, "held bytes count as pending");
        // The peer reads; flush sends the held bytes in order, then the
        // writer goes on.
        let mut received = Vec::new();
        let mut buf = vec![0u8; 65536];
        while received.len() < sent {
            server.flush().unwrap();
            match client.read(&mut buf) {
                ReadOutcome::Data(n) => received.extend_from_slice(&buf[..n]),
                ReadOutcome::WouldBlock => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(server.pending_output(), 0);
        assert_eq!(received, &payload[..sent]);
        let n = server.write(&payload[sent..]).unwrap();
        assert!(n > SHORT_WRITE, "{n}");
    }
}
