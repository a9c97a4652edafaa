"""The client side against real TLS servers (was c_tests/client_suite.py).

c_tests/programs/fio_client.c is a facil.io program that connects with
`fio_connect` + `fio_tls_connect` ("raw") or `http_connect("http://...",
.tls = tls)` ("http"). These tests run it against:

  openssl s_server  TLS 1.2 and 1.3, -rev (line reversing echo), -WWW and
                    -HTTP (files), -trace (shows the SNI and the ALPN list
                    the client sent), -Verify (client certificates)
  gnutls-serv       --echo, --alpn, --sni-hostname-fatal
  Python ssl        echo and HTTPS servers in this process (record the SNI,
                    the selected ALPN protocol and the TLS version)
  fio_server        our own facil.io server (modes echo, alpn, certs;
                    --trust for mutual TLS)

and check: byte-exact round trips, which ALPN callback ran (and its udata),
the SNI the server saw, peer verification (good chain, unknown CA,
self-signed, wrong host name, wrong IP, expired, system store, anonymous
mode), mutual TLS (with curl, openssl s_client and fio_client) and that
every fio_client run exits by itself with as many descriptors open as it
started with.

Link modes: the full set runs in static mode; shared and preload run the
smoke test; the failing mode (`broken`) has its own test. The certificates
are the `client_pki` fixture (fiotest/pki.py ClientPki), which this module
makes its `pki`. Every test needs facil.io (marker `facil`).

Tolerance: none for lost data. The one allowance is `facil_leak_ok` on an
http_connect the client refuses: facil.io 0.7.0.beta4 frees http_connect's
settings only in callbacks that a failed TLS handshake never reaches (the
TLS API has no failure callback), so facil.io's own leak report at exit is
expected there and only there.
"""
import os
import re
import shutil
import socket
import ssl
import threading
import time

import pytest

from fiotest.client import FAIL_FAST, fio_client
from fiotest.ctx import FATAL_STUB, check_clean_stop
from fiotest.peers import HangUpServer, accept_loop, curl, curl_detail, s_client
from fiotest.pki import PING
from fiotest.proc import BIG_BODY, excerpt

pytestmark = pytest.mark.facil

HELLO = b"Hello from facil.io over fio_tls\n"  # fio_server's answer on "/"
ROOT_CA_CN = "fio_tls Test Root CA"
PING_REV = b"oif gnip\n"  # what s_server -rev answers to PING

# the scenarios run in full in static mode; shared and preload run the smoke
# test (a direct parametrization of `mode` overrides conftest's fixture)
FULL = pytest.mark.parametrize("mode", ["static"])
SMOKE = pytest.mark.parametrize("mode", ["shared", "preload"])
VERSIONS = pytest.mark.parametrize("version", ["1.2", "1.3"])


@pytest.fixture
def pki(client_pki):
    """This module's ctx.pki: the client suite's PKI."""
    return client_pki


# the in-process servers (PyTls, HangUpServer) of the running test; closed
# when it ends, however it ends
_OPEN = []


@pytest.fixture(autouse=True)
def _close_in_process_servers():
    yield
    while _OPEN:
        _OPEN.pop().close()


# ---------------------------------------------------------------------------
# the client program (fiotest/client.py runs and parses it)
# ---------------------------------------------------------------------------
def check_exit(ctx, tag, c, facil_leak_ok=False):
    return ctx.check(f"{tag}: fio_client exits by itself, rc 0, no leaked fds "
                     f"(fds {c.fds[0] if c.fds else '?'} -> {c.fds[1] if c.fds else '?'})",
                     c.clean_exit(facil_leak_ok), c.detail())


def check_refused(ctx, tag, c, reason, facil_leak_ok=False):
    """A handshake the client must fail: no callback on an open uuid, one on
    the closed uuid (HANDSHAKE-FAILED), one WARNING naming `reason` (a
    regex), a prompt and clean exit.

    When the server refuses (an alert, then it hangs up), facil.io
    0.7.0.beta4 may close the socket on the hang-up before the client read
    the alert; the library then reads it while closing, so the reason must
    still be named.

    facil_leak_ok: tolerate facil.io's leak report at exit."""
    ctx.check(f"{tag}: the protocol callback ran once, on the closed uuid (HANDSHAKE-FAILED)",
              not c.protos and len(c.failed) == 1 and c.result is not None
              and c.result[1] == 0 and not c.data, c.detail())
    ctx.check(f"{tag}: exactly one WARNING line, naming /{reason}/",
              len(c.warnings) == 1 and re.search(reason, c.warnings[0]) is not None,
              c.detail())
    ctx.check(f"{tag}: exits promptly by itself (took {c.took:.2f} s), rc 0, no leaked fds",
              c.clean_exit(facil_leak_ok) and c.took < FAIL_FAST, c.detail())


# ---------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------
def start_peer(ctx, argv, label, ready, cwd=None):
    """A peer server process (openssl s_server, gnutls-serv), started in
    `cwd` through ctx (stopped at the test's end, its log attached to a
    failed test); .ready: whether its log matched `ready` within 10 s."""
    srv = ctx.server(argv, label, kind="peer", cwd=cwd)
    srv.ready = srv.wait_for(ready, 10) is not None
    return srv


def started(ctx, tag, what, srv):
    """The check that a server under test (fio_server through ctx.start,
    or a peer from start_peer) came up; a failure (with its log excerpt)
    ends the test."""
    ok = srv.ready if hasattr(srv, "ready") else srv.wait_ready(0)
    ctx.require(f"{tag}: {what}", ok, excerpt(srv.text()))


def s_server(ctx, label, *opts, cwd=None):
    pki = ctx.pki
    return start_peer(ctx, ["openssl", "s_server", "-accept", "127.0.0.1:{port}",
                      "-cert", pki.localhost_leaf, "-cert_chain", pki.int_pem,
                      "-key", pki.localhost[0], *opts], label, r"^ACCEPT$", cwd=cwd)


def trace_sni(log):
    """SNI host names in the ClientHellos of an `s_server -trace` log (None
    for a ClientHello without the server_name extension)."""
    names = []
    for hello in re.split(r"ClientHello, Length=", log)[1:]:
        hello = hello.split("Sent Record", 1)[0]
        m = re.search(r"extension_type=server_name\(0\), length=\d+\n((?:\s+[0-9a-f]{4} - .*\n)+)",
                      hello)
        if not m:
            names.append(None)
            continue
        data = bytearray()
        for line in m.group(1).splitlines():
            # "  0000 - 00 0c 00 00 09 6c 6f 63-61 6c 68 6f 73 74   .....localhost"
            rest = line.split(" - ", 1)[1]
            hexpart = re.match(r"(?:[0-9a-f]{2}[ -]){0,15}[0-9a-f]{2}", rest).group(0)
            data += bytes.fromhex(hexpart.replace("-", " "))
        # list length (2), name type (1), name length (2), name
        size = int.from_bytes(data[3:5], "big")
        names.append(data[5:5 + size].decode("ascii", "replace"))
    return names


class PyTls:
    """A Python `ssl` server on 127.0.0.1 (threads in this process), "echo"
    (sends every byte back) or "http" (http.server, serving `http_body` with
    Content-Length). Records per connection: SNI, selected ALPN, version."""

    def __init__(self, cert, key, alpn=None, version=None, http_body=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if version:
            v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
            self.ctx.minimum_version = self.ctx.maximum_version = v
        if alpn:
            self.ctx.set_alpn_protocols(alpn)
        self.ctx.sni_callback = self._on_sni
        self.local = threading.local()
        self.lock = threading.Lock()
        self.sessions = []
        self.http_body = http_body
        if http_body is None:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.thread = threading.Thread(target=self._serve_echo, daemon=True)
        else:
            self.httpd = self._make_httpd()
            self.port = self.httpd.server_address[1]
            self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.closed = False
        _OPEN.append(self)

    def _on_sni(self, sslobj, name, ctx):
        self.local.sni = name

    def handshake(self, raw):
        """Server handshake on an accepted socket; records the session."""
        rec = {"sni": None, "alpn": None, "version": None, "bytes": 0,
               "error": None, "path": None}
        self.local.sni = None
        try:
            raw.settimeout(15)
            conn = self.ctx.wrap_socket(raw, server_side=True)
            rec.update(sni=self.local.sni, alpn=conn.selected_alpn_protocol(),
                       version=conn.version())
            return conn, rec
        except (OSError, ssl.SSLError) as e:
            rec["error"] = repr(e)
            self.record(rec)
            raw.close()
            return None, rec

    def record(self, rec):
        with self.lock:
            self.sessions.append(rec)

    def _serve_echo(self):
        accept_loop(self.sock, lambda raw: threading.Thread(target=self._echo, args=(raw,),
                                                            daemon=True).start())

    def _echo(self, raw):
        conn, rec = self.handshake(raw)
        if not conn:
            return
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                rec["bytes"] += len(data)
                conn.sendall(data)
        except (OSError, ssl.SSLError) as e:
            rec["error"] = repr(e)
        finally:
            conn.close()
            self.record(rec)

    def _make_httpd(self):
        import http.server
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.server.rec["path"] = self.path
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(owner.http_body)))
                self.end_headers()
                self.wfile.write(owner.http_body)
                # keep-alive: the client closes. (A server that hangs up
                # right after its response can lose the response's tail:
                # facil.io 0.7.0.beta4 closes on EPOLLRDHUP without reading
                # what is still in the socket, with or without TLS.)

            def log_message(self, *a):
                pass

        class HTTPS(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                conn, rec = owner.handshake(request)
                if conn:
                    self.rec = rec
                    try:
                        Handler(conn, client_address, self)
                    finally:
                        conn.close()
                        owner.record(rec)

        return HTTPS(("127.0.0.1", 0), Handler)

    def wait_sessions(self, n, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.sessions) >= n:
                    return list(self.sessions)
            time.sleep(0.02)
        with self.lock:
            return list(self.sessions)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.http_body is None:
            self.sock.close()
        else:
            self.httpd.shutdown()
            self.httpd.server_close()


# ---------------------------------------------------------------------------
# openssl s_server, gnutls-serv, Python ssl
# ---------------------------------------------------------------------------
@FULL
@VERSIONS
def test_s_server_rev(ctx, mode, version, pki):
    tag = f"[{mode}] client vs openssl s_server -tls{version.replace('.', '_')}"
    peer = s_server(ctx, f"s_server-rev-{version}", f"-tls{version.replace('.', '_')}",
                    "-rev", "-alpn", "echo-b,echo-a", "-trace", "-naccept", "1")
    started(ctx, tag, "s_server -rev starts", peer)
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "--alpn", "echo-a", "--alpn", "echo-b", "--udata", f"u-{version}",
                   "--payload", pki.text_path, "--expect", str(len(pki.text_reversed)),
                   "raw", "127.0.0.1", str(peer.port))
    peer.wait_exit(5)
    log = peer.text()
    ctx.check(f"{tag}: verified; 1 MB of lines comes back reversed, byte-exact",
              c.data == pki.text_reversed, c.detail())
    ctx.check(f"{tag}: server picked echo-b: the echo-b callback ran (not the first "
              "added), once, with the udata given to fio_tls_connect",
              c.protos == [("echo-b", f"u-{version}")], c.detail())
    ctx.check(f"{tag}: ALPN offered in the order added (echo-a, echo-b)",
              "ALPN protocols advertised by the client: echo-a, echo-b" in log,
              excerpt(log))
    ctx.check(f"{tag}: SNI seen by the server is server_name (localhost)",
              trace_sni(log) == ["localhost"], f"sni={trace_sni(log)}")
    ctx.check(f"{tag}: negotiated TLSv{version}",
              re.search(rf"^Protocol version: TLSv{re.escape(version)}$", log, re.M)
              is not None, excerpt(log))
    check_exit(ctx, tag, c)


@FULL
def test_s_server_ip_literal(ctx, mode, pki):
    tag = f"[{mode}] client vs openssl s_server (IP literal, no server ALPN)"
    peer = s_server(ctx, "s_server-ip", "-rev", "-trace", "-naccept", "1")
    started(ctx, tag, "s_server starts", peer)
    c = fio_client(ctx, mode, "--name", "127.0.0.1", "--trust", pki.ca_pem,
                   "--alpn", "echo-a", "--alpn", "echo-b", "--payload", pki.ping,
                   "--expect", "9", "raw", "127.0.0.1", str(peer.port))
    peer.wait_exit(5)
    log = peer.text()
    ctx.check(f"{tag}: server_name 127.0.0.1 verifies against the IP SAN; echo works",
              c.data == PING_REV, c.detail())
    ctx.check(f"{tag}: no ALPN from the server: the first protocol added (echo-a) ran",
              c.protos == [("echo-a", "client-udata")], c.detail())
    ctx.check(f"{tag}: no SNI sent for an IP literal",
              trace_sni(log) == [None], f"sni={trace_sni(log)}\n{excerpt(log)}")
    check_exit(ctx, tag, c)


@FULL
def test_s_server_www(ctx, mode, pki):
    tag = f"[{mode}] client vs openssl s_server -WWW"
    peer = s_server(ctx, "s_server-www", "-WWW", "-naccept", "1", cwd=pki.www)
    started(ctx, tag, "s_server starts", peer)
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "--payload", pki.get_random, "raw", "127.0.0.1", str(peer.port))
    want = b"HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n" + pki.random_mb
    ctx.check(f"{tag}: 1 MB random file arrives byte-exact (read until the server closed)",
              c.data == want and c.has("CLOSED"),
              f"got {len(c.data)} bytes, want {len(want)}\n" + c.detail())
    check_exit(ctx, tag, c)


@FULL
def test_gnutls(ctx, mode, pki):
    tag = f"[{mode}] client vs gnutls-serv --echo"
    if not shutil.which("gnutls-serv"):
        pytest.skip("gnutls-serv not installed (Debian: gnutls-bin)")
    peer = start_peer(ctx, ["gnutls-serv", "--echo", "--port={port}",
                            f"--x509certfile={pki.localhost[1]}",
                            f"--x509keyfile={pki.localhost[0]}", "--alpn=echo-b",
                            "--sni-hostname=localhost", "--sni-hostname-fatal"],
                      "gnutls-echo", r"listening on IPv4")
    started(ctx, tag, "gnutls-serv starts", peer)
    # gnutls-serv's echo mode handles text (it stops at NUL bytes): 1 MB of lines
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "--alpn", "echo-a", "--alpn", "echo-b", "--payload", pki.text_path,
                   "--expect", str(len(pki.text_mb)), "raw", "127.0.0.1", str(peer.port))
    ctx.check(f"{tag}: verified; 1 MB of text echoed byte-exact", c.data == pki.text_mb,
              f"got {len(c.data)} bytes\n" + c.detail())
    ctx.check(f"{tag}: server's ALPN choice echo-b reached the echo-b callback",
              c.protos == [("echo-b", "client-udata")], c.detail())
    log = peer.text()
    ctx.check(f"{tag}: SNI seen by the server: localhost (and it chose echo-b)",
              re.search(r"Given server name\[1\]: localhost$", log, re.M) is not None
              and "Application protocol: echo-b" in log, excerpt(log[:3000]))
    check_exit(ctx, tag, c)

    c = fio_client(ctx, mode, "--name", "127.0.0.1", "--trust", pki.ca_pem,
                   "--alpn", "echo-a", "--alpn", "echo-b", "--payload", pki.ping,
                   "--expect", "9", "raw", "127.0.0.1", str(peer.port))
    time.sleep(0.1)
    ctx.check(f"{tag}: IP literal: verified, echoed, and gnutls-serv reports no SNI",
              c.data == PING and "client did not include SNI extension"
              in peer.text(), c.detail() + "\n" + excerpt(peer.text()[-2000:]))

    c = fio_client(ctx, mode, "--name", "other.test", "--alpn", "echo-a",
                   "--payload", pki.ping, "--expect", "9", "raw", "127.0.0.1", str(peer.port))
    check_refused(ctx, f"{tag}: SNI other.test refused by --sni-hostname-fatal "
                  "(so the SNI sent is server_name)", c, r"unrecognized name")


@FULL
@VERSIONS
def test_python_echo(ctx, mode, version, pki):
    tag = f"[{mode}] client vs Python ssl echo (TLS {version})"
    srv = PyTls(pki.localhost_leaf_chain, pki.localhost[0], alpn=["echo-b", "echo-a"],
                version=version)
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "--alpn", "echo-a", "--alpn", "echo-b", "--payload", pki.random_path,
                   "--expect", str(len(pki.random_mb)), "raw", "127.0.0.1", str(srv.port))
    sessions = srv.wait_sessions(1)
    ctx.check(f"{tag}: verified; 1 MB random echoed byte-exact",
              c.data == pki.random_mb, f"got {len(c.data)} bytes\n" + c.detail())
    ctx.check(f"{tag}: server selected echo-b and the echo-b callback ran",
              c.protos == [("echo-b", "client-udata")] and sessions
              and sessions[0]["alpn"] == "echo-b", f"sessions={sessions}\n" + c.detail())
    ctx.check(f"{tag}: server saw SNI localhost over TLSv{version}",
              sessions and sessions[0]["error"] is None and sessions[0]["sni"] == "localhost"
              and sessions[0]["version"] == f"TLSv{version}", f"sessions={sessions}")
    check_exit(ctx, tag, c)


@FULL
def test_python_echo_no_alpn(ctx, mode, pki):
    tag = f"[{mode}] client vs Python ssl echo (no server ALPN)"
    srv = PyTls(pki.localhost_leaf_chain, pki.localhost[0])
    c = fio_client(ctx, mode, "--name", "127.0.0.1", "--trust", pki.ca_pem,
                   "--alpn", "echo-b", "--alpn", "echo-a", "--payload", pki.ping,
                   "--expect", "9", "raw", "127.0.0.1", str(srv.port))
    sessions = srv.wait_sessions(1)
    ctx.check(f"{tag}: the first protocol added (echo-b) ran; echo intact",
              c.protos == [("echo-b", "client-udata")] and c.data == PING,
              c.detail())
    ctx.check(f"{tag}: server_name 127.0.0.1: the server saw no SNI",
              sessions and sessions[0]["error"] is None and sessions[0]["version"]
              and sessions[0]["sni"] is None and sessions[0]["alpn"] is None,
              f"sessions={sessions}")
    check_exit(ctx, tag, c)


# ---------------------------------------------------------------------------
# our own server
# ---------------------------------------------------------------------------
@FULL
def test_own_server_echo(ctx, mode, pki):
    tag = f"[{mode}] client vs fio_server echo"
    srv = ctx.start(mode, ["echo", "{port}", "localhost", *pki.localhost], "client-echo")
    started(ctx, tag, "server starts", srv)
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "--payload", pki.random_path, "--expect", str(len(pki.random_mb)),
                   "raw", "127.0.0.1", str(srv.port))
    ctx.check(f"{tag}: verified; 1 MB random echoed byte-exact",
              c.data == pki.random_mb and c.protos == [("echo", "client-udata")],
              f"got {len(c.data)} bytes\n" + c.detail())
    ctx.check(f"{tag}: the server's echo callback ran once",
              re.findall(r"^CALLBACK .*$", srv.text(), re.M) == ["CALLBACK echo exact"],
              excerpt(srv.text()))
    check_exit(ctx, tag, c)
    check_clean_stop(ctx, tag, srv)


@FULL
def test_own_server_alpn(ctx, mode, pki):
    tag = f"[{mode}] client vs fio_server alpn"
    srv = ctx.start(mode, ["alpn", "{port}"], "client-alpn")
    started(ctx, tag, "server starts", srv)
    # the server prefers echo-a (added first); a client offering only echo-b gets it
    for offer, want in ((["echo-b", "echo-a"], "echo-a"), (["echo-b"], "echo-b")):
        args = []
        for p in offer:
            args += ["--alpn", p]
        c = fio_client(ctx, mode, *args, "--payload", pki.ping, "--expect",
                       str(len(b"a:" + PING)), "raw", "127.0.0.1", str(srv.port))
        prefix = want[-1].encode() + b":"
        ctx.check(f"{tag}: offering {','.join(offer)}: the {want} callbacks ran on both sides "
                  f"(reply {prefix.decode()}...)",
                  c.protos == [(want, "client-udata")] and c.data == prefix + PING,
                  c.detail())
        check_exit(ctx, tag + f" ({','.join(offer)})", c)
    check_clean_stop(ctx, tag, srv)


# ---------------------------------------------------------------------------
# http_connect
# ---------------------------------------------------------------------------
def fio_server_round(ctx, mode, tag, label, what, kind):
    """One fio_server and one fio_client run against it, verified against
    the test CA: `kind` "http" is `certs` mode and an http_connect for /big;
    "mtls" is `echo` mode requiring client certificates and a 1 MB echo with
    the test client certificate. (server, client run); a server that does
    not start (the failed check `what`) ends the test."""
    pki = ctx.pki
    server, client = {
        "http": (["certs"], lambda port: ["http", f"http://127.0.0.1:{port}/big"]),
        "mtls": (["--trust", pki.ca_pem, "echo"],
                 lambda port: ["--cert", *pki.client, "--payload", pki.random_path,
                               "--expect", str(len(pki.random_mb)), "raw", "127.0.0.1",
                               str(port)]),
    }[kind]
    srv = ctx.start(mode, [*server, "{port}", "localhost", *pki.localhost], label)
    started(ctx, tag, what, srv)
    return srv, fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                           *client(srv.port))


@FULL
def test_http_own_server(ctx, mode, pki):
    tag = f"[{mode}] http_connect(\"http://...\", .tls) to fio_server"
    srv, c = fio_server_round(ctx, mode, tag, "client-http", "server starts", "http")
    ctx.check(f"{tag}: verified; 200 and the 1,000,000-byte body",
              c.status == 200 and c.data == BIG_BODY and c.protos == [("http/1.1", "-")],
              f"got {len(c.data)} bytes\n" + c.detail())
    check_exit(ctx, tag, c)
    c = fio_client(ctx, mode, "--name", "wrong.test", "--trust", pki.ca_pem,
                   "http", f"http://127.0.0.1:{srv.port}/")
    # the failure callback lets facil.io run on_finish and free its settings
    check_refused(ctx, f"{tag} as wrong.test", c, r"hostname mismatch")
    ctx.check(f"{tag} as wrong.test: no response", c.status is None, c.detail())
    check_clean_stop(ctx, tag, srv)


@FULL
def test_http_python(ctx, mode, pki):
    tag = f"[{mode}] http_connect(\"http://...\", .tls) to Python https"
    srv = PyTls(pki.localhost_leaf_chain, pki.localhost[0], alpn=["http/1.1"],
                http_body=pki.http_body)
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "http", f"http://127.0.0.1:{srv.port}/some/path?x=1")
    sessions = srv.wait_sessions(1)
    ctx.check(f"{tag}: verified; 200 and the 300,000-byte body",
              c.status == 200 and c.data == pki.http_body, c.detail())
    ctx.check(f"{tag}: server saw SNI localhost, ALPN http/1.1, the URL's path",
              sessions and sessions[0]["error"] is None and sessions[0]["sni"] == "localhost"
              and sessions[0]["alpn"] == "http/1.1"
              and sessions[0]["path"] == "/some/path?x=1", f"sessions={sessions}")
    check_exit(ctx, tag, c)


@FULL
def test_http_s_server(ctx, mode, pki):
    tag = f"[{mode}] http_connect(\"http://...\", .tls) to openssl s_server -HTTP"
    peer = s_server(ctx, "s_server-http", "-HTTP", "-alpn", "http/1.1", "-naccept", "1",
                    cwd=pki.www)
    started(ctx, tag, "s_server starts", peer)
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem,
                   "http", f"http://127.0.0.1:{peer.port}/page.http")
    ctx.check(f"{tag}: verified; 200 and the 300,000-byte body",
              c.status == 200 and c.data == pki.http_body, c.detail())
    check_exit(ctx, tag, c)


# ---------------------------------------------------------------------------
# peer verification
# ---------------------------------------------------------------------------
@FULL
def test_verify(ctx, mode, pki):
    tag = f"[{mode}] verification"
    srv = ctx.start(mode, ["echo", "{port}", "localhost", *pki.localhost,
                           "expired.test", *pki.expired, "unknown.test", *pki.unknown,
                           "selfsigned.test", *pki.selfsigned], "client-verify")
    started(ctx, tag, "fio_server echo with four certificates (SNI) starts", srv)
    port = str(srv.port)

    accepted = [0]

    def attempt(name, trust=None, env=None):
        args = ["--name", name]
        if trust:
            args += ["--trust", trust]
        c = fio_client(ctx, mode, *args, "--payload", pki.ping, "--expect", "9",
                       "raw", "127.0.0.1", port, env=env)
        accepted[0] += bool(c.protos)
        return c

    for name, what in (("localhost", "good chain"),
                       ("127.0.0.1", "good chain, IP literal (IP SAN)")):
        c = attempt(name, pki.ca_pem)
        ctx.check(f"{tag}: {what}, trusted CA, name {name}: passes and echoes",
                  c.protos == [("echo", "client-udata")] and c.data == PING
                  and not c.warnings, c.detail())
        check_exit(ctx, f"{tag}: {name}", c)

    no_store = {"SSL_CERT_FILE": os.path.join(ctx.tmp, "no-such-store.pem"),
                "SSL_CERT_DIR": os.path.join(ctx.tmp, "no-such-dir")}
    for name, trust, env, reason, what in (
            ("wrong.test", pki.ca_pem, None, r"hostname mismatch", "wrong host name"),
            ("expired.test", pki.ca_pem, None, r"certificate has expired", "expired certificate"),
            ("unknown.test", pki.ca_pem, None, r"unable to get local issuer certificate",
             "unknown CA"),
            ("selfsigned.test", pki.ca_pem, None, r"self[- ]signed certificate",
             "self-signed certificate"),
            ("localhost", "system", no_store, r"unable to get local issuer certificate",
             "system store without our CA")):
        c = attempt(name, trust, env)
        check_refused(ctx, f"{tag}: {what} ({name})", c, reason)

    c = attempt("localhost", "system", {"SSL_CERT_FILE": pki.ca_pem})
    ctx.check(f"{tag}: fio_tls_trust(tls, NULL) uses the default store "
              "(SSL_CERT_FILE=ca.pem): passes",
              c.protos == [("echo", "client-udata")] and c.data == PING, c.detail())

    for name in ("wrong.test", "expired.test", "unknown.test", "selfsigned.test", "127.0.0.1"):
        c = attempt(name)
        ctx.check(f"{tag}: anonymous (no fio_tls_trust) connects to {name} and echoes",
                  c.protos == [("echo", "client-udata")] and c.data == PING
                  and not c.warnings and c.clean_exit(), c.detail())
    callbacks = len(re.findall(r"^CALLBACK echo exact$", srv.text(), re.M))
    ctx.check(f"{tag}: the server ran its callback only for the {accepted[0]} connections "
              "the client accepted", callbacks == accepted[0] == 8,
              f"{callbacks} callbacks\n{excerpt(srv.text())}")
    check_clean_stop(ctx, tag, srv)


@FULL
def test_verify_s_server_tls12(ctx, mode, pki):
    """The TLS 1.2 code path, and another server."""
    tag = f"[{mode}] verification vs openssl s_server -tls1_2"
    peer = start_peer(ctx, ["openssl", "s_server", "-accept", "127.0.0.1:{port}", "-tls1_2",
                            "-cert", pki.p("expired.test.pem"), "-cert_chain", pki.int_pem,
                            "-key", pki.expired[0], "-rev"], "s_server-expired", r"^ACCEPT$")
    started(ctx, tag, "s_server with the expired certificate starts", peer)
    c = fio_client(ctx, mode, "--name", "expired.test", "--trust", pki.ca_pem,
                   "--payload", pki.ping, "--expect", "9", "raw", "127.0.0.1",
                   str(peer.port))
    check_refused(ctx, f"{tag}: expired certificate", c, r"certificate has expired")
    c = fio_client(ctx, mode, "--name", "expired.test", "--payload", pki.ping,
                   "--expect", "9", "raw", "127.0.0.1", str(peer.port))
    ctx.check(f"{tag}: anonymous mode connects to it", c.data == PING_REV
              and c.clean_exit(), c.detail())


@FULL
def test_verify_python_names(ctx, mode, pki):
    tag = f"[{mode}] verification vs Python ssl (a.test certificate)"
    srv = PyTls(pki.a[1], pki.a[0])
    c = fio_client(ctx, mode, "--name", "127.0.0.1", "--trust", pki.ca_pem,
                   "--payload", pki.ping, "--expect", "9", "raw", "127.0.0.1", str(srv.port))
    check_refused(ctx, f"{tag}: IP literal not in the certificate", c, r"IP address mismatch")
    c = fio_client(ctx, mode, "--name", "www.a.test", "--trust", pki.ca_pem,
                   "--payload", pki.ping, "--expect", "9", "raw", "127.0.0.1", str(srv.port))
    ctx.check(f"{tag}: www.a.test (second DNS SAN) passes", c.data == PING
              and c.clean_exit(), c.detail())


# ---------------------------------------------------------------------------
# mutual TLS
# ---------------------------------------------------------------------------
@FULL
def test_mtls_http(ctx, mode, pki):
    tag = f"[{mode}] mutual TLS (fio_server --trust ca.pem)"
    srv = ctx.start(mode, ["--trust", pki.ca_pem, "certs", "{port}", "localhost",
                           *pki.localhost], "mtls-http")
    started(ctx, tag, "server starts", srv)
    port = srv.port
    ca = ["--cacert", pki.ca_pem]
    cases = (("no client certificate", [], False),
             ("certificate from another CA", ["--cert", pki.client_other[1],
                                              "--key", pki.client_other[0]], False),
             ("certificate via the intermediate (chain file)",
              ["--cert", pki.client[1], "--key", pki.client[0]], True),
             ("certificate signed by the root", ["--cert", pki.client_root[1],
                                                 "--key", pki.client_root[0]], True))
    for what, opts, ok in cases:
        for flags in (["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]):
            c = curl(ctx, port, opts=ca + opts + flags)
            v = "1.2" if "1.2" in flags else "1.3"
            if ok:
                ctx.check(f"{tag}: curl TLS {v} with {what}: 200 + body",
                          c.status == "200" and c.body == HELLO, curl_detail(c))
            else:
                ctx.check(f"{tag}: curl TLS {v} with {what}: refused",
                          c.status != "200" and c.rc not in (None, 0) and not c.body
                          and re.search(r"alert|handshake failure|certificate required",
                                        c.verbose, re.I) is not None, curl_detail(c))
    log = srv.text()
    ctx.check(f"{tag}: the server logged why (no certificate / unknown issuer)",
              re.search(r"^INFO: fio_tls: TLS handshake failed \(server.*"
                        r"(peer did not return a certificate|certificate required)", log, re.M)
              and re.search(r"^INFO: fio_tls: TLS handshake failed \(server.*"
                            r"unable to get local issuer certificate", log, re.M),
              excerpt(log))

    r = s_client(port, "-servername", "localhost", "-CAfile", pki.ca_pem)
    m = re.search(r"^Acceptable client certificate CA names\n((?:[A-Za-z]+ ?= ?[^\n]*\n)+)",
                  r.text, re.M)
    names = m.group(1).splitlines() if m else []
    ctx.check(f"{tag}: CertificateRequest names the trusted CA ({ROOT_CA_CN}) and only it",
              len(names) == 1 and re.search(rf"CN ?= ?{re.escape(ROOT_CA_CN)}$", names[0]),
              f"names={names}\n{excerpt(r.text)}")

    for what, cert, ok in (("no client certificate", None, False),
                           ("certificate from another CA", pki.client_other, False),
                           ("certificate via the intermediate (chain file)", pki.client, True),
                           ("certificate signed by the root", pki.client_root, True)):
        args = ["--cert", *cert] if cert else []
        c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem, *args,
                       "http", f"http://127.0.0.1:{port}/")
        if ok:
            ctx.check(f"{tag}: fio_client http_connect with {what}: 200 + body",
                      c.status == 200 and c.data == HELLO, c.detail())
        else:
            # TLS 1.3: the client's handshake may complete before the server
            # rejects its certificate, so "refused" = no response at all
            ctx.check(f"{tag}: fio_client http_connect with {what}: refused (no response)",
                      c.status is None and not c.data, c.detail())
        check_exit(ctx, f"{tag}: fio_client with {what}", c)
    check_clean_stop(ctx, tag, srv)


@FULL
def test_mtls_echo(ctx, mode, pki):
    tag = f"[{mode}] mutual TLS (fio_server --trust, echo)"
    srv, c = fio_server_round(ctx, mode, tag, "mtls-echo", "server starts", "mtls")
    ctx.check(f"{tag}: right CA: 1 MB random echoed byte-exact", c.data == pki.random_mb,
              f"got {len(c.data)} bytes\n" + c.detail())
    for what, cert in (("no client certificate", None),
                       ("certificate from another CA", pki.client_other)):
        args = ["--cert", *cert] if cert else []
        c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem, *args,
                       "--payload", pki.random_path, "--expect", str(len(pki.random_mb)),
                       "raw", "127.0.0.1", str(srv.port))
        ctx.check(f"{tag}: {what}: refused, nothing echoed", not c.data
                  and (c.has("NO-CALLBACK") or c.has("CLOSED")), c.detail())
        check_exit(ctx, f"{tag}: {what}", c)
    callbacks = re.findall(r"^CALLBACK .*$", srv.text(), re.M)
    ctx.check(f"{tag}: the server's callback ran only for the accepted client",
              callbacks == ["CALLBACK echo exact"], excerpt(srv.text()))
    check_clean_stop(ctx, tag, srv)


@FULL
def test_mtls_system_store(ctx, mode, pki):
    tag = f"[{mode}] fio_server --trust system"
    srv = ctx.start(mode, ["--trust", "system", "certs", "{port}", "localhost",
                           *pki.localhost], "mtls-system")
    started(ctx, tag, "server starts", srv)
    r = s_client(srv.port, "-servername", "localhost", "-CAfile", pki.ca_pem)
    ctx.check(f"{tag}: a certificate is requested, with no CA names",
              "No client certificate CA names sent" in r.text, excerpt(r.text))
    c = curl(ctx, srv.port, opts=["--cacert", pki.ca_pem, "--cert", pki.client[1],
                                  "--key", pki.client[0]])
    ctx.check(f"{tag}: our CA is not a system CA: curl with a client certificate refused",
              c.status != "200" and not c.body, curl_detail(c))
    check_clean_stop(ctx, tag, srv)


@FULL
@VERSIONS
@pytest.mark.parametrize("what", ["certificate via the intermediate",
                                  "no client certificate"])
def test_mtls_s_server(ctx, mode, version, what, pki):
    """Client certificates against another server, TLS 1.2 (where a refusal
    fails the client's own handshake) and TLS 1.3."""
    cert, ok = {"certificate via the intermediate": (pki.client, True),
                "no client certificate": (None, False)}[what]
    tag = f"[{mode}] client certificate vs openssl s_server -Verify -tls{version}"
    peer = start_peer(ctx, ["openssl", "s_server", "-accept", "127.0.0.1:{port}",
                            f"-tls{version.replace('.', '_')}", "-cert", pki.localhost_leaf,
                            "-cert_chain", pki.int_pem, "-key", pki.localhost[0],
                            "-Verify", "3", "-CAfile", pki.ca_pem, "-verify_return_error",
                            "-rev", "-naccept", "1"], "s_server-verify", r"^ACCEPT$")
    started(ctx, tag, f"s_server starts ({what})", peer)
    args = ["--cert", *cert] if cert else []
    c = fio_client(ctx, mode, "--name", "localhost", "--trust", pki.ca_pem, *args,
                   "--payload", pki.ping, "--expect", "9", "raw", "127.0.0.1",
                   str(peer.port))
    peer.wait_exit(3)
    log = peer.text()
    if ok:
        ctx.check(f"{tag}: {what}: accepted (server verified CN=client1); echo works",
                  c.data == PING_REV
                  and re.search(r"^Peer certificate: CN ?= ?client1$", log, re.M)
                  and "Verification: OK" in log, c.detail() + "\n" + excerpt(log))
        check_exit(ctx, f"{tag}: {what}", c)
    elif version == "1.2":
        check_refused(ctx, f"{tag}: {what}", c, r"handshake failure|certificate required")
    else:
        ctx.check(f"{tag}: {what}: refused, nothing echoed",
                  not c.data and (c.has("NO-CALLBACK") or c.has("CLOSED")), c.detail())
        check_exit(ctx, f"{tag}: {what}", c)


# ---------------------------------------------------------------------------
# a server that hangs up; the other link modes; the failing link mode
# ---------------------------------------------------------------------------
@FULL
def test_hangup(ctx, mode):
    tag = f"[{mode}] server hangs up mid-handshake"
    srv = HangUpServer()
    _OPEN.append(srv)
    runs = [fio_client(ctx, mode, "--name", "localhost", "--payload", ctx.pki.ping,
                       "raw", "127.0.0.1", str(srv.port)) for _ in range(10)]
    srv.close()
    bad = [c for c in runs if c.protos or len(c.failed) != 1 or not c.clean_exit()
           or c.took >= FAIL_FAST or len(c.warnings) != 1]
    ctx.check(f"{tag}: 10 clients: only the failure callback, exactly one WARNING each, prompt clean exit, "
              "no leaked fds", not bad, "\n\n".join(c.detail() for c in bad[:2]))


@SMOKE
def test_smoke_mtls_echo(ctx, mode, pki):
    """Other link modes: one verified mTLS round trip and one verification
    failure."""
    tag = f"[{mode}] client"
    srv, c = fio_server_round(ctx, mode, tag, "client-smoke",
                              "fio_server --trust echo starts", "mtls")
    ctx.check(f"{tag}: fio_tls_connect + fio_tls_trust + client certificate: "
              "1 MB echoed byte-exact", c.data == pki.random_mb
              and c.protos == [("echo", "client-udata")] and c.clean_exit(), c.detail())
    c = fio_client(ctx, mode, "--name", "wrong.test", "--trust", pki.ca_pem,
                   "--cert", *pki.client, "--payload", pki.ping, "raw", "127.0.0.1",
                   str(srv.port))
    ctx.check(f"{tag}: wrong host name refused: HANDSHAKE-FAILED, one WARNING "
              "'hostname mismatch', clean exit",
              len(c.failed) == 1 and not c.protos and len(c.warnings) == 1
              and "hostname mismatch" in c.warnings[0] and c.clean_exit(), c.detail())
    check_clean_stop(ctx, tag, srv)


@SMOKE
def test_smoke_http(ctx, mode):
    """Other link modes: one http_connect."""
    tag = f"[{mode}] client"
    srv, c = fio_server_round(ctx, mode, tag, "client-smoke-http", "fio_server certs starts",
                              "http")
    ctx.check(f"{tag}: http_connect with .tls gets 200 and the 1,000,000-byte body",
              c.status == 200 and c.data == BIG_BODY and c.clean_exit(), c.detail())
    check_clean_stop(ctx, tag, srv)


@pytest.mark.parametrize("kind", ["http_connect", "fio_tls_connect"])
def test_broken_link_mode(ctx, kind, pki):
    tag = "[broken: facil.io static + libfio_tls shared] fio_client"
    srv = ctx.start("static", ["certs", "{port}", "localhost", *pki.localhost], "broken-target")
    args = {"http_connect": ["http", f"http://127.0.0.1:{srv.port}/"],
            "fio_tls_connect": ["raw", "127.0.0.1", str(srv.port)]}[kind]
    c = fio_client(ctx, "broken", "--name", "localhost", *args)
    ctx.check(f"{tag}: {kind} exits with FATAL \"{FATAL_STUB}\" (documented failing row)",
              c.rc not in (None, 0) and re.search(r"^FATAL: .*" + re.escape(FATAL_STUB),
                                                  c.err, re.M) is not None, c.detail())
