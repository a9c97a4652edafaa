//! A minimal synchronous HTTPS/1.1 client for the ACME protocol: one
//! request per connection (`Connection: close`), a body with
//! `Content-Length`, chunked or delimited by the close, peer verification
//! against the system store plus `FIO_TLS_ACME_CA_FILE`, host name checked
//! by OpenSSL. Runs on the ACME thread only, with socket timeouts.

use openssl::ssl::{SslConnector, SslMethod};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Larger answers are refused (a certificate chain is a few KiB).
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub struct Client {
    connector: SslConnector,
}

/// `https://host[:port]/path` split up.
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| format!("\"{url}\" is not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port in \"{url}\""));
    let (host, port) = match authority.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, 443),
            Some((h, p)) => (h, port_of(p.strip_prefix(':').unwrap_or(p))?),
            None => return Err(format!("bad host in \"{url}\"")),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (authority, 443),
        },
    };
    if host.is_empty() {
        return Err(format!("no host in \"{url}\""));
    }
    Ok((host.to_string(), port, path.to_string()))
}

impl Client {
    /// Trusts the system store, plus the PEM certificates of `ca_file`.
    pub fn new(ca_file: Option<&str>) -> Result<Self, String> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        if let Some(f) = ca_file {
            b.set_ca_file(f).map_err(|e| format!("FIO_TLS_ACME_CA_FILE \"{f}\": {e}"))?;
        }
        Ok(Client { connector: b.build() })
    }

    /// Sends one request; `body` is (content type, bytes). Errors are
    /// transport errors (the caller reports them as such); any HTTP status
    /// is a response.
    pub fn request(&self, method: &str, url: &str, body: Option<(&str, &[u8])>) -> Result<Response, String> {
        let (host, port, path) = split_url(url)?;
        let addrs: Vec<_> = (host.as_str(), port).to_socket_addrs().map_err(|e| format!("{host}: {e}"))?.collect();
        let mut last = format!("{host}: no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connect to {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_read_timeout(Some(TIMEOUT)).and_then(|_| tcp.set_write_timeout(Some(TIMEOUT))).map_err(|e| e.to_string())?;
        let mut tls = self.connector.connect(&host, tcp).map_err(|e| format!("TLS to {host}:{port}: {e}"))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fio_tls/{}\r\nAccept: */*\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some((ctype, b)) = body {
            req.push_str(&format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut wire = req.into_bytes();
        if let Some((_, b)) = body {
            wire.extend_from_slice(b);
        }
        tls.write_all(&wire).map_err(|e| format!("{url}: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(r) = parse(&buf, false)? {
                let _ = tls.shutdown();
                return Ok(r);
            }
            match tls.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // a peer that closes without close_notify ends the body too
                Err(e) if !buf.is_empty() && e.kind() != std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("{url}: {e}")),
            }
            if buf.len() > MAX_RESPONSE {
                return Err(format!("{url}: response larger than {MAX_RESPONSE} bytes"));
            }
        }
        parse(&buf, true)?.ok_or_else(|| format!("{url}: truncated response"))
    }
}

/// Parses a response from `buf`: `Ok(None)` while incomplete; `eof`: the
/// connection ended (a body without a length ends there).
fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "response header is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line \"{status_line}\""))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut r = Response { status, headers, body: Vec::new() };
    let rest = &buf[end + 4..];
    if r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = rest;
        loop {
            let Some(eol) = at.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
            let size_text = std::str::from_utf8(&at[..eol]).unwrap_or("").split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size \"{size_text}\""))?;
            at = &at[eol + 2..];
            if size == 0 {
                break;
            }
            if at.len() < size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&at[..size]);
            at = &at[size + 2..];
        }
        r.body = body;
    } else if let Some(len) = r.header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length \"{len}\""))?;
        if rest.len() < len {
            return Ok(None);
        }
        r.body = rest[..len].to_vec();
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
    } else if eof {
        r.body = rest.to_vec();
    } else {
        return Ok(None);
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_path() {
        assert_eq!(split_url("https://a.test/dir").unwrap(), ("a.test".into(), 443, "/dir".into()));
        assert_eq!(split_url("https://127.0.0.1:14000/dir").unwrap(), ("127.0.0.1".into(), 14000, "/dir".into()));
        assert_eq!(split_url("https://[::1]:8/x?y").unwrap(), ("::1".into(), 8, "/x?y".into()));
        assert!(split_url("http://a.test/").is_err());
    }

    #[test]
    fn bodies_by_length_chunks_and_close() {
        let r = parse(b"HTTP/1.1 201 Created\r\nLocation: /o/1\r\nContent-Length: 2\r\n\r\n{}", false).unwrap().unwrap();
        assert_eq!((r.status, r.header("location"), r.body.as_slice()), (201, Some("/o/1"), &b"{}"[..]));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", false).unwrap().is_none());
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(c, false).unwrap().unwrap().body, b"abcde");
        assert!(parse(&c[..c.len() - 9], false).unwrap().is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\n\r\nall", false).unwrap().is_none());
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\nall", true).unwrap().unwrap().body, b"all");
    }
}
