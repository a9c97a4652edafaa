//! Full-handshake load client for `make bench` (bench/bench.py): the only
//! client here that can offer X25519MLKEM768, since it is built against the
//! vendored OpenSSL 3.5 (h2load, curl and Python use Debian's 3.0).
//!
//!     bench_handshakes HOST:PORT CONNECTIONS THREADS [GROUPS]
//!
//! Each connection: TCP connect, a full TLS 1.3 handshake (no session
//! reuse, no verification), `GET /` with `Connection: close`, the whole
//! response read, close. GROUPS is an OpenSSL group list; without it, the
//! library's own client list (`fio_tls::tls::config::groups()`: key shares
//! for X25519MLKEM768 and X25519 on OpenSSL 3.5). Waits for a line on
//! stdin before starting, so the caller can read the server's CPU time
//! first; prints one JSON line: done, errors, seconds, group, version.

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

extern "C" {
    fn SSL_group_to_name(ssl: *mut openssl_sys::SSL, id: libc::c_int) -> *const libc::c_char;
}

/// `SSL_get_negotiated_group` (a macro over `SSL_ctrl`) + `SSL_group_to_name`.
fn group_name(ssl: &openssl::ssl::SslRef) -> String {
    use foreign_types::ForeignTypeRef;
    // SAFETY: a live SSL; the name is a static string, copied at once.
    unsafe {
        let id = openssl_sys::SSL_ctrl(ssl.as_ptr(), 134, 0, std::ptr::null_mut());
        let name = SSL_group_to_name(ssl.as_ptr(), id as libc::c_int);
        if name.is_null() {
            return "none".into();
        }
        std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

fn one(connector: &SslConnector, addr: &str) -> Result<(String, String), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut config = connector.configure().map_err(|e| e.to_string())?;
    config.set_verify_hostname(false);
    let mut tls = config.connect("localhost", tcp).map_err(|e| e.to_string())?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A peer closing without close_notify after the response is fine here.
    let _ = tls.read_to_end(&mut response);
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(format!("response {:?}", String::from_utf8_lossy(&response[..response.len().min(40)])));
    }
    Ok((group_name(tls.ssl()), tls.ssl().version_str().to_string()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: {} HOST:PORT CONNECTIONS THREADS [GROUPS]", args[0]);
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let total: usize = args[2].parse().expect("CONNECTIONS is a number");
    let threads: usize = args[3].parse().expect("THREADS is a number");
    let groups = args.get(4).cloned().unwrap_or_else(|| fio_tls::tls::config::groups().to_string());

    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("SSL_CTX_new");
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    b.set_groups_list(&groups).unwrap_or_else(|e| panic!("groups {groups:?}: {e}"));
    // A full handshake every time: no session cache, no tickets kept.
    b.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::OFF);
    let connector = Arc::new(b.build());

    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");

    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new((String::new(), String::new(), String::new())));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (connector, addr, next, errors, last) =
                (connector.clone(), addr.clone(), next.clone(), errors.clone(), last.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    match one(&connector, &addr) {
                        Ok((g, v)) => {
                            let mut l = last.lock().unwrap();
                            l.0 = g;
                            l.1 = v;
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            last.lock().unwrap().2 = e;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    let (group, version, error) = last.lock().unwrap().clone();
    println!(
        "{{\"done\": {}, \"errors\": {errors}, \"seconds\": {secs:.6}, \"group\": \"{group}\", \"version\": \"{version}\", \"error\": {:?}, \"openssl\": {:?}}}",
        total - errors,
        error,
        openssl::version::version()
    );
}
