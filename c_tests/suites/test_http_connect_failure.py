"""A failed TLS handshake must reach the application (issue 10, item 2).

facil.io 0.7.0.beta4's `http_connect` calls `on_finish` only from the
`on_close` of its HTTP client protocol, which its "http/1.1" ALPN callback
attaches. libfio_tls runs a client's protocol callback once per
`fio_tls_connect`, also after a failed handshake (on the closed uuid), so
`on_finish` runs and a client program ends by itself. These tests run
`fio_client --no-watchdog` (nothing but the application's own callbacks and
its `--timeout` can end it, as in a real program) against a facil.io server
(`fio_server`) whose certificate the client must refuse, and against a
server that hangs up mid-handshake.

Self-contained (standard library + pytest + the openssl command):

    make c-tests
    python3 -m pytest c_tests/suites/test_http_connect_failure.py

Binaries are found through environment variables (paths relative to the
repository root unless absolute):

    FIO_TLS_BIN_DIR      directory holding <mode>/fio_client and
                         <mode>/fio_server (default build/c_tests, i.e.
                         build/c_tests/static/fio_client ...)
    FIO_TLS_PRELOAD_LIB  the library for the "preload" link mode
                         (default build/libfio_tls.so)
    FIO_TLS_MODES        link modes to run (default "static shared preload");
                         a mode whose binaries are missing is skipped, with
                         the path in the reason

Servers are started in their own session (facil.io signals its whole
process group when it stops).
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.path.join(ROOT, os.environ.get("FIO_TLS_BIN_DIR", "build/c_tests"))
PRELOAD_LIB = os.path.join(ROOT, os.environ.get("FIO_TLS_PRELOAD_LIB", "build/libfio_tls.so"))
MODES = os.environ.get("FIO_TLS_MODES", "static shared preload").split()

# the client's own deadline; a client that learns of the failure ends long
# before it (FAIL_FAST), one that is never told hits it
CLIENT_TIMEOUT = 15
FAIL_FAST = 5.0
FACIL_LEAK = "WARNING: facil.io detected memory traces remaining after cleanup"


def binary(mode, name):
    path = os.path.join(BIN_DIR, mode, name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (make c-tests)")
    if mode == "preload" and not os.path.exists(PRELOAD_LIB):
        pytest.skip(f"{PRELOAD_LIB} not built (make)")
    return path


def env_for(mode):
    env = dict(os.environ)
    env.pop("SSLKEYLOGFILE", None)
    if mode == "preload":
        env["LD_PRELOAD"] = PRELOAD_LIB
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace')}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a leaf for localhost (key, cert), and another CA."""
    d = tmp_path_factory.mktemp("pki")
    p = lambda name: str(d / name)  # noqa: E731
    for ca in ("ca", "other_ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", p(f"{ca}.key"), "-out", p(f"{ca}.pem"),
                "-subj", f"/CN=fio_tls test {ca}", "-days", "3")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", p("localhost.key"), "-out", p("localhost.csr"),
            "-subj", "/CN=localhost")
    with open(p("leaf.ext"), "w") as f:
        f.write("[v3]\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", p("localhost.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
            "-set_serial", "7", "-days", "3", "-extfile", p("leaf.ext"), "-extensions", "v3",
            "-out", p("localhost.pem"))
    return {"ca": p("ca.pem"), "other_ca": p("other_ca.pem"),
            "key": p("localhost.key"), "cert": p("localhost.pem")}


class Server:
    """fio_server certs PORT localhost KEY CERT, in its own session."""

    def __init__(self, mode, pki, tmp_path):
        self.port = free_port()
        self.log_path = tmp_path / f"fio_server-{mode}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary(mode, "fio_server"), "certs", str(self.port), "localhost",
             pki["key"], pki["cert"]],
            stdout=self.log, stderr=subprocess.STDOUT, env=env_for(mode),
            start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if re.search(rb"^READY \d+$", self.log_path.read_bytes(), re.M):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"fio_server did not start:\n{self.text()}")

    def text(self):
        return self.log_path.read_bytes().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def server(mode, pki, tmp_path):
    srv = Server(mode, pki, tmp_path)
    yield srv
    srv.stop()


class HangUpServer:
    """Accepts, reads the ClientHello, hangs up without a word."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


class Run:
    """One fio_client run, parsed."""

    def __init__(self, mode, *args):
        argv = [binary(mode, "fio_client"), "--no-watchdog", "--timeout", str(CLIENT_TIMEOUT),
                *args]
        began = time.monotonic()
        r = subprocess.run(argv, capture_output=True, env=env_for(mode),
                           timeout=CLIENT_TIMEOUT + 15)
        self.took = time.monotonic() - began
        self.rc = r.returncode
        self.out = r.stdout.decode(errors="replace")
        self.err = r.stderr.decode(errors="replace")
        self.lines = self.out.splitlines()
        self.warnings = [l for l in self.err.splitlines() if l.startswith("WARNING: fio_tls: ")]
        self.argv = argv

    def count(self, line):
        return self.lines.count(line)

    def __str__(self):
        return (f"{' '.join(self.argv)}\nrc={self.rc} took={self.took:.2f}s\n"
                f"--- stdout\n{self.out}\n--- stderr\n{self.err}")

    def assert_told_of_failure(self, callback_line, reason):
        """The callback ran once on the closed uuid, the program ended by
        itself long before its deadline, one WARNING named `reason`."""
        assert self.count(callback_line) == 1, self
        assert not any(l.startswith("PROTO ") for l in self.lines), self
        assert "TIMEOUT" not in self.lines, self
        assert self.rc == 0 and self.took < FAIL_FAST, self
        assert len(self.warnings) == 1 and re.search(reason, self.warnings[0]), self
        assert FACIL_LEAK not in self.err, self
        fds = re.search(r"^FDS start=(\d+) end=(\d+)$", self.out, re.M)
        assert fds and fds.group(1) == fds.group(2), self


@pytest.mark.parametrize("case", ["unknown CA", "wrong host name"])
def test_http_connect_failed_handshake_runs_on_finish(mode, server, pki, case):
    name, ca = {"unknown CA": ("localhost", pki["other_ca"]),
                "wrong host name": ("wrong.test", pki["ca"])}[case]
    reason = {"unknown CA": "unable to get local issuer certificate",
              "wrong host name": "hostname mismatch"}[case]
    c = Run(mode, "--name", name, "--trust", ca, "http", f"http://127.0.0.1:{server.port}/")
    c.assert_told_of_failure("HANDSHAKE-FAILED http/1.1 udata=-", reason)
    # on_finish ran once, with no response before it
    assert c.count("FINISH") == 1 and c.count("NO-RESPONSE") == 1, c
    assert not any(l.startswith("STATUS ") for l in c.lines), c


def test_http_connect_server_hangs_up_mid_handshake(mode):
    srv = HangUpServer()
    try:
        c = Run(mode, "--name", "localhost", "http", f"http://127.0.0.1:{srv.port}/")
    finally:
        srv.close()
    c.assert_told_of_failure("HANDSHAKE-FAILED http/1.1 udata=-", r"TLS handshake failed \(client")
    assert c.count("FINISH") == 1 and c.count("NO-RESPONSE") == 1, c


def test_fio_tls_connect_failed_handshake_runs_the_callback_once(mode, server, pki):
    c = Run(mode, "--name", "localhost", "--trust", pki["other_ca"], "--alpn", "http/1.1",
            "--udata", "mine", "raw", "127.0.0.1", str(server.port))
    # the callback got the udata back on the closed uuid; the protocol it
    # attached there got its on_close
    c.assert_told_of_failure("HANDSHAKE-FAILED http/1.1 udata=mine",
                             "unable to get local issuer certificate")
    assert c.count("CLOSED") == 1, c


def test_http_connect_control_verified_request(mode, server, pki):
    """The same client and server with the right CA and name: a response,
    and on_finish once at the end (no failure callback)."""
    c = Run(mode, "--name", "localhost", "--trust", pki["ca"], "http",
            f"http://127.0.0.1:{server.port}/")
    assert c.count("PROTO http/1.1 udata=-") == 1 and c.count("STATUS 200") == 1, c
    assert not any(l.startswith("HANDSHAKE-FAILED") for l in c.lines), c
    assert c.count("FINISH") == 1 and c.count("NO-RESPONSE") == 0, c
    assert c.rc == 0 and not c.warnings, c
