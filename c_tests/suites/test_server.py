"""The facil.io server suite: c_tests/programs/fio_server.c and demo.c in
every link mode of FACIL_IO_NOTES.md, talked to by real TLS peers (curl,
openssl s_client, gnutls-cli, Python's ssl).

  static   libfio_tls.a placed before libfacil.io.a         must work
  shared   libfio_tls.so before libfacil.io.so (DT_NEEDED)   must work
  preload  facil.io shared only, LD_PRELOAD=libfio_tls.so    must work
  broken   libfio_tls.so with libfacil.io.a                  must exit with
           facil.io's "HTTP SSL/TLS required but unavailable!" (FATAL)

Every test starts its own server on 127.0.0.1 (a port the OS chose) through
`ctx`; its checks are `ctx.check` lines (see conftest.py). When the first
request of a test already fails, the test stops there (its failure is
counted) rather than pile up timeouts.
"""
import datetime
import os
import re
import shutil
import socket
import ssl
import threading
import time

import pytest

from fiotest.ctx import FATAL_STUB, check_clean_stop, check_ready
from fiotest.peers import (alpn_session, cert_text, curl, curl_detail, handshake_refused,
                           plain_text_client_dropped, s_client, served_chain)
from fiotest.proc import BIG_BODY, Interactive, excerpt, fnv1a, free_port, run

pytestmark = pytest.mark.facil

HELLO = b"Hello from facil.io over fio_tls\n"
DEMO_BODY = b"Hello, TLS world! (facil.io + libfio_tls)\n"


def abandon(ctx, tag, srv):
    """After a failed first request: the rest of the test would only pile
    up timeouts (the failure is already counted)."""
    print(f"# {tag}: skipping the rest of this test (first request failed)")
    srv.stop()


# ---------------------------------------------------------------------------
# self-signed (fio_tls_new(NAME, NULL, NULL))
# ---------------------------------------------------------------------------
def test_selfsigned(ctx, mode):
    tag = f"[{mode}] self-signed"
    srv = ctx.start(mode, ["selfsigned", "{port}", "localhost"], "selfsigned")
    if not check_ready(ctx, tag, srv):
        return
    ctx.check(f"{tag}: ready within 2 s (in-process certificate generation)",
              srv.wait_for(r"^READY", 0) and time.monotonic() - srv.started < 2.0)
    port = srv.port

    c = curl(ctx, port, opts=["-k"])
    if not ctx.check(f"{tag}: curl -k https://localhost/ gets 200 and the body",
                     c.status == "200" and c.body == HELLO, curl_detail(c)):
        return abandon(ctx, tag, srv)
    c = curl(ctx, port, host="127.0.0.1", opts=["-k"])
    ctx.check(f"{tag}: curl -k https://127.0.0.1/ (no SNI) gets the body",
              c.status == "200" and c.body == HELLO, curl_detail(c))
    ctx.check(f"{tag}: curl negotiated ALPN http/1.1",
              re.search(r"ALPN.*server accepted.*http/1\.1", c.verbose) is not None,
              excerpt(c.verbose))

    r = s_client(port, "-servername", "localhost", "-showcerts")
    chain, pems = served_chain(r.text)
    text, pem_path = cert_text(ctx, pems[0]) if pems else ("", None)
    ctx.check(f"{tag}: certificate is X.509 v3, ECDSA P-256, SAN DNS:localhost",
              "Version: 3 (0x2)" in text and "id-ecPublicKey" in text
              and ("prime256v1" in text or "P-256" in text)
              and re.search(r"DNS:localhost\b", text) is not None,
              excerpt(text or r.text))
    if pem_path:
        nb = run(["openssl", "x509", "-noout", "-startdate", "-enddate", "-in",
                  pem_path]).text
        m = re.search(r"notBefore=(.+?)\s*\n.*notAfter=(.+?)\s*$", nb, re.S)
        ok = False
        if m:
            fmt = "%b %d %H:%M:%S %Y %Z"
            start = datetime.datetime.strptime(" ".join(m.group(1).split()), fmt)
            end = datetime.datetime.strptime(" ".join(m.group(2).split()), fmt)
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            ok = (now - datetime.timedelta(days=2) <= start
                  <= now + datetime.timedelta(seconds=60) and end > now)
        ctx.check(f"{tag}: certificate is valid from about now", ok, nb)
        c = curl(ctx, port, opts=["--cacert", pem_path])
        ctx.check(f"{tag}: curl verifies it when given it as the CA (name matches)",
                  c.status == "200" and c.body == HELLO and c.verify == "0",
                  curl_detail(c))

    c = curl(ctx, port, "/big", opts=["-k"])
    ctx.check(f"{tag}: 1,000,000-byte response arrives intact",
              c.status == "200" and c.body == BIG_BODY,
              f"got {len(c.body)} bytes\n" + curl_detail(c))
    c = curl(ctx, port, "/upload", opts=["-k", "--data-binary", "@" + ctx.pki.post_file,
                                         "-H", "Content-Type: application/octet-stream"])
    ctx.check(f"{tag}: 300,000-byte upload arrives intact",
              c.status == "200" and c.body == upload_reply(ctx.pki.post_body),
              curl_detail(c))
    check_clean_stop(ctx, tag, srv)

    for name, expect in (("-", "localhost"), ("example.test", "example.test")):
        srv = ctx.start(mode, ["selfsigned", "{port}", name], f"selfsigned-{expect}")
        r = s_client(srv.port, "-servername", expect, "-showcerts")
        chain, pems = served_chain(r.text)
        text = cert_text(ctx, pems[0])[0] if pems else r.text
        arg = "NULL" if name == "-" else f'"{name}"'
        ctx.check(f"{tag}: fio_tls_new({arg}, NULL, NULL) certifies {expect}",
                  re.search(rf"DNS:{re.escape(expect)}\b", text) is not None,
                  excerpt(text) + "\n" + excerpt(srv.text()))
        srv.stop()


def upload_reply(body):
    """What fio_server answers a POST of `body`."""
    return b"received %d bytes fnv1a=%08x\n" % (len(body), fnv1a(body))


# ---------------------------------------------------------------------------
# CA-issued certificates, SNI, resumption, versions and cipher suites
# ---------------------------------------------------------------------------
def start_certs(ctx, mode, label):
    pki = ctx.pki
    return ctx.start(mode, ["-p", pki.public, "certs", "{port}",
                            "localhost", *pki.localhost, "a.test", *pki.a,
                            "b.test", *pki.b], label)


def test_certs(ctx, mode):
    tag = f"[{mode}] CA-issued"
    pki = ctx.pki
    srv = start_certs(ctx, mode, "certs")
    if not check_ready(ctx, tag, srv):
        return
    port = srv.port
    ca = ["--cacert", pki.ca_pem]

    for flags, want in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
                        (["--tlsv1.3"], "TLSv1.3")):
        c = curl(ctx, port, opts=ca + flags)
        version, cipher = c.protocol()
        if not ctx.check(f"{tag}: curl --cacert {' '.join(flags)} verifies and gets 200 + body",
                         c.status == "200" and c.body == HELLO and c.verify == "0"
                         and version == want, curl_detail(c)) and c.status != "200":
            return abandon(ctx, tag, srv)
        ctx.check(f"{tag}: {want} cipher suite is AEAD with forward secrecy ({cipher})",
                  cipher is not None and re.search(r"GCM|CHACHA20|CCM", cipher) is not None
                  and (want == "TLSv1.3" or cipher.startswith("ECDHE-")
                       or cipher.startswith("DHE-")), excerpt(c.verbose))

    for host in ("a.test", "b.test", "www.a.test", "alt-b.test"):
        c = curl(ctx, port, host=host, opts=ca)
        ctx.check(f"{tag}: curl --cacert https://{host}/ verifies (SNI picks its certificate)",
                  c.status == "200" and c.body == HELLO and c.verify == "0",
                  curl_detail(c))

    cases = (("a.test", "a.test"), ("b.test", "b.test"),
             ("www.a.test", "a.test"), ("alt-b.test", "b.test"),
             ("unknown.test", "localhost"), (None, "localhost"))
    for sni, want in cases:
        opts = ["-servername", sni] if sni else ["-noservername"]
        r = s_client(port, *opts, "-showcerts", "-CAfile", pki.ca_pem)
        chain, pems = served_chain(r.text)
        subject = chain[0][0] if chain else None
        what = f"SNI {sni}" if sni else "no SNI"
        ctx.check(f"{tag}: s_client with {what} gets CN={want}",
                  subject is not None
                  and re.search(rf"CN ?= ?{re.escape(want)}$", subject) is not None,
                  f"chain={chain}\n{excerpt(r.text)}")
        ctx.check(f"{tag}: s_client with {what} receives the full chain "
                  "(leaf + intermediate) and verifies",
                  len(pems) == 2 and len(chain) == 2
                  and "Intermediate" in chain[1][0]
                  and "Verify return code: 0 (ok)" in r.text,
                  f"chain={chain}\n{excerpt(r.text)}")

    # Resumption is bound to the certificate a session was made under: the
    # session of a.test resumes with SNI a.test, and a client offering it
    # with SNI b.test gets a full handshake and b.test's certificate.
    for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        sess = os.path.join(ctx.tmp, f"sess-a{flag}.pem")

        def get_via(sni, *opts):
            req = f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode()
            r = s_client(port, "-servername", sni, flag, "-ign_eof", *opts, input=req)
            # the peer certificate s_client reports (also when resumed)
            subject = re.search(r"^subject=(.*)$", r.text, re.M)
            return (r, subject.group(1).strip() if subject else "",
                    HELLO.decode().strip() in r.text)

        r0, _, ok0 = get_via("a.test", "-sess_out", sess)
        r1, cn1, ok1 = get_via("a.test", "-sess_in", sess)
        r2, cn2, ok2 = get_via("b.test", "-sess_in", sess)
        ctx.check(f"{tag}: {want} session of a.test resumes with SNI a.test",
                  ok0 and ok1 and f"Reused, {want}" in r1.text and cn1.endswith("a.test"),
                  f"first:\n{excerpt(r0.text)}\nsecond:\n{excerpt(r1.text)}")
        ctx.check(f"{tag}: {want} session of a.test offered with SNI b.test: "
                  "full handshake, CN=b.test",
                  ok2 and f"New, {want}" in r2.text and cn2.endswith("b.test"),
                  f"subject={cn2!r}\n{excerpt(r2.text)}")

    r = s_client(port, "-servername", "a.test", "-verify_hostname", "a.test",
                 "-CAfile", pki.ca_pem, "-verify_return_error", "-tls1_2")
    ctx.check(f"{tag}: ECDSA certificate (a.test) over TLS 1.2 verifies",
              r.rc == 0 and "Verify return code: 0 (ok)" in r.text, excerpt(r.text))

    c = curl(ctx, port, "/static.bin", opts=ca)
    ctx.check(f"{tag}: static file from public_folder arrives intact through TLS",
              c.status == "200" and c.body == pki.static_body,
              f"got {len(c.body)} bytes\n" + curl_detail(c))

    # TLS 1.2 suites that lack forward secrecy or AEAD must be refused (the
    # RSA certificate of "localhost" would allow them); a good one is the
    # control that shows the client is able to connect at all.
    for cipher, accept in (("ECDHE-RSA-AES128-GCM-SHA256", True),
                           ("AES128-GCM-SHA256", False),
                           ("AES256-SHA256", False),
                           ("ECDHE-RSA-AES128-SHA", False),
                           ("ECDHE-RSA-AES256-SHA384", False)):
        r = s_client(port, "-servername", "localhost", "-tls1_2", "-cipher", cipher)
        if accept:
            ok = r.rc == 0 and re.search(r"Cipher is " + re.escape(cipher), r.text)
        else:
            ok = handshake_refused(r)
        ctx.check(f"{tag}: TLS 1.2 {cipher} {'accepted' if accept else 'refused'}",
                  bool(ok), excerpt(r.text))

    # old protocol versions: the clients are told to allow them (SECLEVEL=0
    # for OpenSSL 3), so a refusal comes from the server
    for flag, name in (("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")):
        r = s_client(port, "-servername", "localhost", flag, "-cipher",
                     "DEFAULT@SECLEVEL=0")
        ctx.check(f"{tag}: {name} refused (openssl s_client {flag})",
                  handshake_refused(r), excerpt(r.text))
    check_clean_stop(ctx, tag, srv)


def test_certs_gnutls(ctx, mode):
    """The CA-issued server seen by GnuTLS (skipped without gnutls-cli)."""
    if not shutil.which("gnutls-cli"):
        pytest.skip("gnutls-cli not installed (Debian: gnutls-bin)")
    tag = f"[{mode}] CA-issued"
    pki = ctx.pki
    srv = start_certs(ctx, mode, "certs-gnutls")
    if not (srv.alive() and srv.wait_ready(0)):
        pytest.fail(f"the server did not start:\n{excerpt(srv.text())}")
    port = srv.port
    for vers, name in (("VERS-TLS1.0", "TLS 1.0"), ("VERS-TLS1.1", "TLS 1.1")):
        r = run(["gnutls-cli", "--insecure", f"--port={port}",
                 f"--priority=NORMAL:-VERS-ALL:+{vers}", "127.0.0.1"], timeout=10)
        ctx.check(f"{tag}: {name} refused (gnutls-cli)",
                  r.rc not in (None, 0) and "Connecting to" in r.text
                  and re.search(r"alert|Handshake has failed|protocol version",
                                r.text) is not None, excerpt(r.text))
    ic = Interactive(["gnutls-cli", f"--x509cafile={pki.ca_pem}",
                      "--sni-hostname=b.test", "--verify-hostname=b.test",
                      f"--port={port}", "127.0.0.1"])
    ok = False
    if ic.wait_for(rb"Handshake was completed", 10):
        ic.send(b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
        ok = ic.wait_for(re.escape(HELLO.strip()), 10) is not None
    out = ic.close()
    ctx.check(f"{tag}: gnutls-cli verifies b.test and gets the body", ok, excerpt(out))


# ---------------------------------------------------------------------------
# two TLS objects in one process
# ---------------------------------------------------------------------------
def test_pair(ctx, mode):
    """Two TLS objects with the same certificate in one process: port A
    verifies no peer, port B requires a client certificate. A session made
    on A (tickets: the keys are shared by the process) must not let a client
    without a certificate resume on B."""
    tag = f"[{mode}] session across objects"
    pki = ctx.pki
    port2 = free_port()
    srv = ctx.start(mode, ["--trust", pki.ca_pem, "pair", "{port}", str(port2),
                           "a.test", *pki.a], "pair")
    if not check_ready(ctx, tag, srv):
        return
    for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        sess = os.path.join(ctx.tmp, f"sess-pair{flag}.pem")
        req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        common = ["-servername", "a.test", flag, "-ign_eof"]
        r0 = s_client(srv.port, *common, "-sess_out", sess, input=req)
        r1 = s_client(srv.port, *common, "-sess_in", sess, input=req)
        got = HELLO.decode().strip()
        ctx.check(f"{tag}: {want} session of the open port resumes there (control)",
                  got in r0.text and f"Reused, {want}" in r1.text and got in r1.text,
                  f"first:\n{excerpt(r0.text)}\nsecond:\n{excerpt(r1.text)}")
        r2 = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port2}", *common,
                  "-sess_in", sess], input=req, timeout=10)
        ctx.check(f"{tag}: {want} same session offered to the mTLS port without a "
                  "client certificate: not resumed, no response",
                  f"Reused, {want}" not in r2.text and got not in r2.text
                  and "CONNECTED(" in r2.text,
                  excerpt(r2.text))
    check_clean_stop(ctx, tag, srv)


# ---------------------------------------------------------------------------
# four threads, concurrent clients
# ---------------------------------------------------------------------------
# facil.io 0.7.0.beta4 with threads > 1 can close a socket's fd twice when a
# connection ends (README, Known limitations); the second close(2) hits the
# number's next owner: a connection or a request body's temporary file opened
# meanwhile. So the clients here never open while a connection ends: every
# connection is made first, then all requests run concurrently on them
# (keep-alive, no connection ends), then all are closed together (nothing
# new is opened any more). Nothing is tolerated: any dropped connection,
# reset or wrong body fails.
THREAD_CLIENTS = 8


class HttpsConn:
    """One HTTP/1.1 keep-alive connection over Python's ssl (OpenSSL)."""

    def __init__(self, port, timeout=30):
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed
        c.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.s = c.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()

    def _fill(self):
        data = self.s.recv(256 * 1024)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    def request(self, method, path, body=b""):
        """Sends one request, returns (status, body) of the response."""
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        if method == "POST":
            head += (f"Content-Length: {len(body)}\r\n"
                     "Content-Type: application/octet-stream\r\n")
        self.s.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        status = int(head.split()[1])
        m = re.search(r"^content-length:\s*(\d+)", head, re.M | re.I)
        if not m:
            raise RuntimeError(f"response without content-length: {head!r}")
        n = int(m.group(1))
        while len(self.buf) < n:
            self._fill()
        got = bytes(self.buf[:n])
        del self.buf[:n]
        return status, got

    def close(self):
        self.s.close()


def test_threads(ctx, mode):
    tag = f"[{mode}] 4 threads"
    srv = ctx.start(mode, ["-t", "4", "selfsigned", "{port}", "localhost"], "threads")
    if not check_ready(ctx, tag, srv):
        return
    body = ctx.pki.post_body
    conns = []
    try:
        conns.append(HttpsConn(srv.port, timeout=8))
        first = conns[0].request("GET", "/")
    except Exception as e:  # noqa: BLE001 (the check says what happened)
        first = repr(e)
    if not ctx.check(f"{tag}: first request answered", first == (200, HELLO),
                     f"{first!r}\n{excerpt(srv.text())}"):
        for c in conns:
            c.close()
        return abandon(ctx, tag, srv)

    results = []
    lock = threading.Lock()
    # all connections are open before the first request, all requests are
    # answered before the first close (see above)
    opened = threading.Barrier(THREAD_CLIENTS, timeout=60)
    answered = threading.Barrier(THREAD_CLIENTS, timeout=60)

    def client():
        # two requests on one kept-alive connection, an upload on another
        got = []
        mine = []
        try:
            try:
                mine.append(HttpsConn(srv.port))
                mine.append(HttpsConn(srv.port))
            finally:
                opened.wait()
            got.append(mine[0].request("GET", "/"))
            got.append(mine[0].request("GET", "/big"))
            got.append(mine[1].request("POST", "/upload", body))
        except Exception as e:  # noqa: BLE001
            got.append(f"{type(e).__name__}: {e}")
        try:
            answered.wait()
        except threading.BrokenBarrierError:
            pass
        for c in mine:
            c.close()
        with lock:
            results.append(got)

    threads = [threading.Thread(target=client) for _ in range(THREAD_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for c in conns:
        c.close()
    intact = [(200, HELLO), (200, BIG_BODY), (200, upload_reply(body))]
    bad = [[x if isinstance(x, str) else (x[0], x[1][:100]) for x in g]
           for g in results if g != intact]
    ctx.check(f"{tag}: {THREAD_CLIENTS} concurrent clients (keep-alive GETs + uploads) intact",
              len(results) == THREAD_CLIENTS and not bad,
              f"{len(results)} finished; bad: {bad}")
    check_clean_stop(ctx, tag, srv)


# ---------------------------------------------------------------------------
# ALPN (raw fio_listen + fio_tls_accept)
# ---------------------------------------------------------------------------
def test_alpn(ctx, mode):
    tag = f"[{mode}] ALPN"
    srv = ctx.start(mode, ["alpn", "{port}"], "alpn")
    if not check_ready(ctx, tag, srv):
        return
    port = srv.port
    sessions = 0
    first = True
    for offer, want_proto, want_prefix, extra in (
            ("echo-b", "echo-b", "b", ()),
            ("echo-a", "echo-a", "a", ()),
            (None, None, "a", ()),
            ("echo-b,echo-a", "echo-a", "a", ()),
            ("echo-b", "echo-b", "b", ("-tls1_2",))):
        proto, prefix, out = alpn_session(port, offer, extra)
        what = f"-alpn {offer}" if offer else "no -alpn"
        what += " " + " ".join(extra) if extra else ""
        if want_proto:
            ok = proto == want_proto
            desc = f"ALPN protocol: {want_proto}"
        else:
            ok = proto is None and "No ALPN negotiated" in out
            desc = "no ALPN negotiated"
        ctx.check(f"{tag}: s_client {what}: {desc}", ok, excerpt(out))
        ctx.check(f"{tag}: s_client {what}: echo comes from the '{want_prefix}' callback",
                  prefix == want_prefix,
                  f"prefix={prefix}\n{excerpt(out)}\n{excerpt(srv.text())}")
        if prefix:
            sessions += 1
        elif first:
            return abandon(ctx, tag, srv)
        first = False

    # handshakes that fail must not run any callback
    ctx.check(f"{tag}: plain-text client gets disconnected",
              plain_text_client_dropped(port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes.fromhex("160301020001"))  # start of a ClientHello, then gone
    r = s_client(port, "-servername", "localhost", "-alpn", "echo-a",
                 "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    ctx.check(f"{tag}: TLS 1.1 handshake refused", handshake_refused(r), excerpt(r.text))
    r = s_client(port, "-servername", "localhost", "-alpn", "h2,spdy/3")
    ctx.check(f"{tag}: only unknown ALPN offered: handshake fails (no_application_protocol)",
              handshake_refused(r) and re.search(r"no application protocol|alert number 120",
                                                 r.text) is not None, excerpt(r.text))
    time.sleep(0.3)
    proto, prefix, out = alpn_session(port, "echo-b")
    ctx.check(f"{tag}: still serving after failed handshakes", prefix == "b", excerpt(out))
    if prefix:
        sessions += 1

    # TLS 1.2 renegotiation ("R" asks s_client to start one) is refused
    ic = Interactive(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                      "-servername", "localhost", "-tls1_2", "-alpn", "echo-b"])
    before = after = False
    if ic.wait_for(rb"Verify return code:", 10):
        ic.send(b"before\n")
        before = ic.wait_for(rb"^b:before$", 10) is not None
        ic.send(b"R\n")
        ic.wait_for(rb"^RENEGOTIATING", 5)
        time.sleep(0.5)
        ic.send(b"after\n")
        after = ic.wait_for(rb"^b:after$", 3) is not None
    out = ic.close()
    if before:
        sessions += 1
    ctx.check(f"{tag}: TLS 1.2 renegotiation refused",
              before and not after and "RENEGOTIATING" in out
              and "no renegotiation" in out, excerpt(out))
    log = srv.text()
    callbacks = re.findall(r"^CALLBACK (\S+) (\S+)$", log, re.M)
    ctx.check(f"{tag}: one callback per completed handshake, none for failed ones "
              f"({sessions} sessions)",
              len(callbacks) == sessions, f"callbacks={callbacks}")
    ctx.check(f"{tag}: re-adding echo-a replaced its callback; udata passed through",
              not any(p in ("stale:", "wrong-udata") for _, p in callbacks),
              f"callbacks={callbacks}")
    check_clean_stop(ctx, tag, srv)


def test_handshake_timeout(ctx, mode):
    tag = f"[{mode}] handshake deadline"
    srv = ctx.start(mode, ["alpn", "{port}"], "handshake-timeout",
                    env={"FIO_TLS_HANDSHAKE_TIMEOUT": "1"})
    if not check_ready(ctx, tag, srv):
        return
    began = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", srv.port), timeout=8) as s:
        try:
            closed = s.recv(16) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
    took = time.monotonic() - began
    ctx.check(f"{tag}: silent client dropped (FIO_TLS_HANDSHAKE_TIMEOUT=1, took {took:.1f} s)",
              closed and took < 5, f"closed={closed} took={took:.1f}s")
    ctx.check(f"{tag}: no callback for it",
              "CALLBACK" not in srv.text(), excerpt(srv.text()))
    check_clean_stop(ctx, tag, srv)


def test_alpn_once(ctx, mode):
    tag = f"[{mode}] destroy with live connection"
    srv = ctx.start(mode, ["alpn", "{port}", "once"], "alpn-once")
    if not check_ready(ctx, tag, srv):
        return
    ic = Interactive(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}",
                      "-servername", "localhost", "-alpn", "echo-b"])
    ok1 = ok2 = False
    if ic.wait_for(rb"Verify return code:", 10):
        destroyed = srv.wait_for(r"^DESTROYED", 5) is not None
        ic.send(b"first\n")
        ok1 = destroyed and ic.wait_for(rb"^b:first$", 10) is not None
        time.sleep(0.2)
        ic.send(b"second\n")
        ok2 = ic.wait_for(rb"^b:second$", 10) is not None
    out = ic.close()
    ctx.check(f"{tag}: connection accepted before fio_tls_destroy keeps working",
              ok1 and ok2, excerpt(out) + "\n" + excerpt(srv.text()))
    ctx.check(f"{tag}: server still running", srv.alive(), excerpt(srv.text()))
    check_clean_stop(ctx, tag, srv)


# ---------------------------------------------------------------------------
# bad input: one clear log line per mistake, the host keeps running
# ---------------------------------------------------------------------------
BAD_CASES = (
    # name, result, [texts the one error line must contain]
    ("new-missing-key", "NULL", ["{missing}", "No such file or directory"]),
    ("new-missing-cert", "NULL", ["{missing}", "No such file or directory"]),
    ("new-directory-cert", "NULL", ["{directory}", "Is a directory"]),
    ("new-garbage-key", "NULL", ["{garbage}", "no valid PEM"]),
    ("new-garbage-cert", "NULL", ["{garbage}", "no valid PEM"]),
    ("new-mismatched-key", "NULL", ["does not match"]),
    ("new-encrypted-key", "NULL", ["{encrypted}", "encrypted"]),
    ("new-key-without-cert", "NULL", []),
    ("new-null-name-selfsigned", "object", None),  # None: no error at all
    ("cert-add-missing", "returned", ["{missing}", "No such file or directory"]),
    ("cert-add-garbage", "returned", ["{garbage}", "no valid PEM"]),
    ("cert-add-mismatched-key", "returned", ["does not match"]),
    ("cert-add-null-tls", "returned", ["NULL"]),
    ("proto-add-null-tls", "returned", ["NULL"]),
    ("proto-add-null-name", "returned", []),
    ("accept-null-tls", "returned", ["NULL"]),
    ("connect-null-tls", "returned", ["NULL"]),
    ("destroy-null", "returned", "optional"),  # like free(NULL): may be silent
)


@pytest.mark.parametrize("quiet", (False, True), ids=("log", "quiet"))
def test_badinput(ctx, mode, quiet):
    pki = ctx.pki
    tag = f"[{mode}] bad input" + (" (FIO_LOG_LEVEL=1)" if quiet else "")
    args = (["-l", "1"] if quiet else []) + [
        "badinput", "{port}", *pki.localhost, pki.garbage, pki.other_key,
        pki.encrypted_key, pki.directory, pki.missing]
    srv = ctx.start(mode, args, "badinput-quiet" if quiet else "badinput")
    if not check_ready(ctx, tag, srv):
        return
    log = srv.text()  # the cases all ran before the server got ready
    subst = {"missing": pki.missing, "directory": pki.directory,
             "garbage": pki.garbage, "encrypted": pki.encrypted_key}
    lines = log.splitlines()
    err_re = re.compile(r"^ERROR: fio_tls: ")

    if quiet:
        ctx.check(f"{tag}: no error lines at all", not any(
            line.startswith("ERROR:") for line in lines), excerpt(log))
        results = dict(re.findall(r"^RESULT (\S+) (\S+)$", log, re.M))
        ctx.check(f"{tag}: every case still returned as before",
                  all(results.get(n) == res for n, res, _ in BAD_CASES), results)
    else:
        in_case = set()
        for name, want_result, texts in BAD_CASES:
            try:
                start = lines.index(f"CASE {name} -")
                end = next(i for i in range(start, len(lines))
                           if lines[i].startswith(f"RESULT {name} "))
            except (ValueError, StopIteration):
                ctx.check(f"{tag}: {name}: case ran to its end", False, excerpt(log))
                continue
            block = lines[start + 1:end]
            in_case.update(range(start + 1, end))
            errors = [line for line in block if err_re.match(line)]
            result = lines[end].split()[2]
            if texts is None:
                ok = not errors
                want = "no error line"
            elif texts == "optional":
                ok = len(errors) <= 1
                want = "at most one error line"
            else:
                need = [t.format(**subst) for t in texts]
                ok = len(errors) == 1 and all(t in errors[0] for t in need)
                shown = [os.path.basename(t) if t.startswith("/") else t for t in need]
                want = "one 'ERROR: fio_tls: ' line" + (
                    f" containing {', '.join(repr(t) for t in shown)}" if need else "")
            ctx.check(f"{tag}: {name}: {want}; result {want_result}",
                      ok and result == want_result,
                      f"result={result}\nblock:\n" + "\n".join(block))
        stray = [line for i, line in enumerate(lines)
                 if err_re.match(line) and i not in in_case]
        ctx.check(f"{tag}: no fio_tls error line outside the cases", not stray, stray)
        ctx.check(f"{tag}: nothing fatal, no panic", not re.search(
            r"^FATAL|panicked", log, re.M), excerpt(log))

    c = curl(ctx, srv.port, opts=["--cacert", pki.ca_pem])
    if not ctx.check(f"{tag}: still serving HTTPS afterwards (curl --cacert)",
                     c.status == "200" and c.body == HELLO and c.verify == "0",
                     curl_detail(c)):
        return abandon(ctx, tag, srv)
    r = s_client(srv.port, "-servername", "bad.test", "-showcerts")
    chain, _ = served_chain(r.text)
    ctx.check(f"{tag}: failed fio_tls_cert_add calls added nothing (bad.test gets localhost)",
              bool(chain) and re.search(r"CN ?= ?localhost$", chain[0][0]) is not None,
              f"chain={chain}\n{excerpt(r.text)}")
    check_clean_stop(ctx, tag, srv)


def test_encrypted_traditional(ctx, mode):
    pki = ctx.pki
    tag = f"[{mode}] encrypted key (traditional PEM)"
    srv = ctx.start(mode, ["certs", "{port}", "localhost", pki.encrypted_trad_key,
                           pki.localhost[1]], "encrypted-trad", ready=False)
    rc = srv.wait_exit(10)
    log = srv.text()
    errors = [line for line in log.splitlines() if line.startswith("ERROR: fio_tls: ")]
    ctx.check(f"{tag}: fio_tls_new returns NULL at once, without prompting",
              rc == 1 and "could not start" in log, f"rc={rc}\n{excerpt(log)}")
    ctx.check(f"{tag}: one error line naming the file and 'encrypted'",
              len(errors) == 1 and pki.encrypted_trad_key in errors[0]
              and "encrypted" in errors[0], excerpt(log))
    srv.stop()


# ---------------------------------------------------------------------------
# the demo, the failing link mode and the link layout
# ---------------------------------------------------------------------------
def test_demo(ctx, mode):
    tag = f"[{mode}] demo"
    port = free_port()
    srv = ctx.server([ctx.binary(mode, "demo"), str(port)], f"{mode}-demo",
                     env=ctx.env(mode), port=port)
    m = srv.wait_for(r"curl -k (https://localhost:\d+/)", 10)
    ctx.check(f"{tag}: prints the curl command to try",
              m is not None and m.group(1) == f"https://localhost:{port}/",
              excerpt(srv.text()))
    if m:
        c = curl(ctx, port, opts=["-k"])
        ctx.check(f"{tag}: curl -k https://localhost:{port}/ gets the demo body",
                  c.status == "200" and c.body == DEMO_BODY,
                  curl_detail(c) + "\n" + excerpt(srv.text()))
    srv.stop()


@pytest.mark.parametrize("program, args", (
    ("fio_server", ["selfsigned", "{port}", "localhost"]),
    ("demo", ["{port}"])), ids=("fio_server", "demo"))
def test_broken(ctx, program, args):
    """facil.io static + libfio_tls shared: http.c's weak stubs win (the
    documented failing row of the link table)."""
    tag = f"[broken: facil.io static + libfio_tls shared] {program}"
    srv = ctx.server([ctx.binary("broken", program), *args], f"broken-{program}",
                     env=ctx.env("broken"))
    rc = srv.wait_exit(10)
    log = srv.text()
    ctx.check(f"{tag}: exits with FATAL \"{FATAL_STUB}\" (documented failing row)",
              rc not in (None, 0) and FATAL_STUB in log
              and re.search(r"^FATAL: .*" + re.escape(FATAL_STUB), log, re.M) is not None,
              f"rc={rc}\n{excerpt(log)}")
    srv.stop()


def test_link_layout(ctx):
    r = run(["readelf", "-d", ctx.binary("shared", "fio_server")])
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", r.text)
    ok = ("libfio_tls.so.0" in needed and "libfacil.io.so" in needed and
          needed.index("libfio_tls.so.0") < needed.index("libfacil.io.so"))
    ctx.check("[shared] binary needs libfio_tls.so.0 before libfacil.io.so", ok, needed)
    r = run(["readelf", "-d", ctx.binary("preload", "fio_server")])
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", r.text)
    ctx.check("[preload] binary links facil.io only (libfio_tls comes from LD_PRELOAD)",
              "libfacil.io.so" in needed and not any("fio_tls" in n for n in needed),
              needed)
