"""Post-quantum key exchange and the vendored OpenSSL build (issue 13).

Part of make check's pytest run, for either build:

    make check                    # system OpenSSL: the classical checks
    make check OPENSSL=vendored   # OpenSSL 3.5 LTS inside: all checks

conftest.py's options say which build this is: --build-dir (libfio_tls.so,
libfio_tls.a, c_tests/static/{fio_server,fio_client,isolation}), --openssl
(system or vendored) and --cargo-target-dir (whose compiled build.rs is
checked). Tests that need the vendored build (ML-KEM, symbol isolation) are
skipped, with the reason, on the system build. Every server binds
127.0.0.1 only and runs in its own session (facil.io signals its process
group).
"""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

# set from conftest's paths by the autouse fixture below
BUILD = TMP = STATIC = OPENSSL = TARGET = None


def header_functions(header):
    """The functions fio_tls.h declares: all that libfio_tls may export."""
    with open(header) as f:
        return set(re.findall(r"^[a-z][a-z_ *]*[ *](fio_tls_[a-z_]+)\(", f.read(), re.M))


@pytest.fixture(autouse=True)
def _build(paths, tmp_path):
    global BUILD, TMP, STATIC, OPENSSL, TARGET
    BUILD, TMP, OPENSSL = paths.build, str(tmp_path), paths.openssl
    STATIC = os.path.join(paths.ct, "static")
    TARGET = paths.target


@pytest.fixture
def vendored(paths):
    if paths.openssl != "vendored":
        pytest.skip("needs the vendored build (OpenSSL 3.5 LTS): make check OPENSSL=vendored")


@pytest.fixture
def seed_functions(paths):
    return header_functions(paths.header)


def program(name):
    path = os.path.join(STATIC, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it with make check-programs OPENSSL={OPENSSL}")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """fio_server at DEBUG log level; its output is collected in a file."""

    def __init__(self, *args):
        os.makedirs(TMP, exist_ok=True)
        self.port = free_port()
        self.log_path = os.path.join(TMP, f"server-{self.port}.log")
        self.log = open(self.log_path, "w+b")
        argv = [program("fio_server"), "-l", "5", *args[:1], str(self.port), *args[1:]]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while f"READY {self.port}" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"fio_server did not start:\n{self.text()}")
            time.sleep(0.05)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def handshakes(self):
        """(version, group) of each finished server handshake (DEBUG lines)."""
        return re.findall(r"TLS handshake done \(server, uuid \S+\): (\S+), group (\S+),",
                          self.text())

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def server(_build):
    srv = Server("selfsigned", "localhost")
    yield srv
    srv.stop()


def wait_for(pred, timeout=5):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(argv, timeout=30, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


REQUEST = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def s_client(port, *args):
    """openssl s_client (the system's) sending one request and reading the
    whole response: a client that hangs up right after its Finished may be
    gone before the server has read it (facil.io then just closes)."""
    res = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
               "-servername", "localhost", "-brief", "-ign_eof", *args], input=REQUEST)
    return res.stdout + res.stderr


# ---------------------------------------------------------------------------
# build.rs: the OpenSSL version gate
# ---------------------------------------------------------------------------
def build_script():
    """The compiled build.rs of this build (the newest, if cargo kept
    several)."""
    found = []
    root = os.path.join(TARGET, "release", "build")
    for d in os.listdir(root) if os.path.isdir(root) else []:
        p = os.path.join(root, d, "build-script-build")
        if d.startswith("fio_tls-") and os.access(p, os.X_OK):
            found.append(p)
    if not found:
        pytest.fail(f"no fio_tls build script under {root}: build first")
    return max(found, key=os.path.getmtime)


@pytest.mark.parametrize("number,version,accepted", [
    ("1010117f", "1.1.1w", False),
    ("1000214f", "1.0.2t", False),
    ("30000000", "3.0.0", True),
    ("30500050", "3.5.5", True),
])
def test_build_script_reports_the_openssl_version_and_refuses_older_than_3(tmp_path, number, version,
                                                                           accepted):
    # an empty manifest dir and OUT_DIR: nothing of the source tree is touched
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEP_OPENSSL", "CARGO_FEATURE"))}
    env.update(DEP_OPENSSL_VERSION_NUMBER=number, OUT_DIR=str(tmp_path),
               CARGO_MANIFEST_DIR=str(tmp_path))
    res = run([build_script()], env=env)
    out = res.stdout + res.stderr
    if accepted:
        assert f"cargo:warning=fio_tls: building against OpenSSL {version} (system)" in out, out
    else:
        assert res.returncode != 0, out
        assert "needs OpenSSL 3.0 or newer" in out, out
        assert f"the OpenSSL found is {version} " in out, out
        assert "OPENSSL=vendored" in out, out
        assert "cargo:warning=fio_tls: building against" not in out, out


# ---------------------------------------------------------------------------
# The artefacts of the vendored build
# ---------------------------------------------------------------------------
def test_static_library_defines_only_fio_tls_globals(vendored, seed_functions):
    res = run(["nm", "-g", "--defined-only", os.path.join(BUILD, "libfio_tls.a")])
    assert res.returncode == 0, res.stderr
    defined = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            defined[parts[2]] = parts[1]
    assert set(defined) == seed_functions, sorted(set(defined) ^ seed_functions)
    assert set(defined.values()) == {"T"}, defined
    members = run(["ar", "t", os.path.join(BUILD, "libfio_tls.a")]).stdout.split()
    assert len(members) == 1, members
    # and it needs nothing from another OpenSSL: every OpenSSL function it
    # calls is inside (libc, pthread, libgcc's unwinder and facil.io remain)
    undefined = run(["nm", "-u", os.path.join(BUILD, "libfio_tls.a")]).stdout.split()
    openssl_like = [u for u in undefined if re.match(
        r"(SSL|EVP|OPENSSL|CRYPTO|BIO|X509|ERR|OSSL|PEM|RAND|BN|EC|ASN1|TLS|DTLS)_", u)]
    assert not openssl_like, openssl_like
    assert "fio_rw_hook_set" in undefined, "facil.io's functions stay undefined (weak)"


def test_shared_library_carries_its_own_openssl(vendored, seed_functions):
    so = os.path.join(BUILD, "libfio_tls.so")
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", run(["readelf", "-d", so]).stdout)
    assert needed and not [n for n in needed if "libssl" in n or "libcrypto" in n], needed
    exports = {line.split()[-1].split("@")[0]
               for line in run(["nm", "-D", "--defined-only", so]).stdout.splitlines()
               if len(line.split()) >= 3 and line.split()[-2] != "A"}
    assert exports == seed_functions, sorted(exports ^ seed_functions)
    # OpenSSL 3.5 is inside (its version string is in the read-only data)
    assert b"OpenSSL 3.5." in open(so, "rb").read()


@pytest.mark.facil
def test_one_process_two_openssls(vendored):
    """An application linking libfio_tls.a and the system's libssl: each
    OpenSSL serves its own caller. Our library's server runs on 3.5, the
    program's own client on the system's 3.0 (so the pair agrees on X25519,
    not ML-KEM, which only 3.5 has)."""
    system_version = run(["openssl", "version"]).stdout.strip()
    # The executable exports no OpenSSL function of its own, so the system
    # libssl/libcrypto cannot bind to the copy inside (without localisation
    # the linker exports every one that libssl.so.3 references)
    exported = run(["nm", "-D", "--defined-only", program("isolation")]).stdout.split()
    leaked = [x for x in exported if re.match(r"(SSL|EVP|OPENSSL|CRYPTO|BIO|X509|ERR|OSSL|RAND|BN|EC)_", x)]
    assert not leaked, leaked[:20]
    port = free_port()
    res = run([program("isolation"), str(port)], timeout=60, start_new_session=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    app = re.search(r"^APP-OPENSSL (.*)$", out, re.M).group(1)
    assert app.split()[:2] == system_version.split()[:2], (app, system_version)
    assert not app.startswith("OpenSSL 3.5"), app
    assert re.search(r"^APP-SSL_CTX_new \S*/libssl\.so\.3$", out, re.M), out
    assert re.search(r"^APP-OpenSSL_version \S*/libcrypto\.so\.3$", out, re.M), out
    lib = re.search(r"DEBUG: fio_tls: (OpenSSL \S+) .*\(built against OpenSSL (\S+) \(vendored", out)
    assert lib and lib.group(1).startswith("OpenSSL 3.5.") and lib.group(2).startswith("3.5."), out
    assert re.search(r"TLS handshake done \(server, [^)]*\): TLSv1\.3, group x25519,", out), out
    client = re.search(r"^CLIENT version=(\S+) group=(\S+) status=(.*) body=(\S+)$", out, re.M)
    assert client, out
    assert client.groups() == ("TLSv1.3", "x25519", "HTTP/1.1 200 OK", "isolated"), out


# ---------------------------------------------------------------------------
# Post-quantum key exchange
# ---------------------------------------------------------------------------
@pytest.mark.facil
def test_our_client_and_server_negotiate_x25519mlkem768(vendored, server):
    res = run([program("fio_client"), "-l", "5", "--name", "localhost", "http",
               f"http://127.0.0.1:{server.port}/"])
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "STATUS 200" in out, out
    assert re.search(r"TLS handshake done \(client, [^)]*\): TLSv1\.3, group X25519MLKEM768,", out), out
    assert wait_for(lambda: server.handshakes()), server.text()
    assert server.handshakes() == [("TLSv1.3", "X25519MLKEM768")], server.text()


# ---------------------------------------------------------------------------
# Classical clients on Debian's OpenSSL 3.0 (both builds)
# ---------------------------------------------------------------------------
@pytest.mark.facil
def test_openssl_s_client_gets_x25519(server):
    out = s_client(server.port)
    assert "Hello from facil.io" in out, out
    assert re.search(r"(Server Temp Key|Peer Temp Key): X25519", out), out
    assert wait_for(lambda: server.handshakes()), server.text()
    assert server.handshakes() == [("TLSv1.3", "x25519")], server.text()


@pytest.mark.facil
def test_curl_gets_x25519(server):
    if not shutil.which("curl"):
        pytest.skip("curl not installed")
    res = run(["curl", "-sS", "-k", "--max-time", "10",
               "--resolve", f"localhost:{server.port}:127.0.0.1",
               f"https://localhost:{server.port}/"])
    assert res.returncode == 0 and "Hello from facil.io" in res.stdout, res.stdout + res.stderr
    assert wait_for(lambda: server.handshakes()), server.text()
    assert server.handshakes() == [("TLSv1.3", "x25519")], server.text()


@pytest.mark.facil
def test_python_ssl_gets_x25519(server):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := tls.recv(65536):
                body += chunk
            assert tls.version() == "TLSv1.3"
    assert b"200 OK" in body and b"Hello from facil.io" in body, body
    assert wait_for(lambda: server.handshakes()), server.text()
    assert server.handshakes() == [("TLSv1.3", "x25519")], (ssl.OPENSSL_VERSION, server.text())


@pytest.mark.facil
def test_a_p521_only_client_is_served(server):
    """X448 and P-521 were missing from the group list before issue 13."""
    for group, name in (("P-521", "secp521r1"), ("X448", "x448")):
        out = s_client(server.port, "-groups", group)
        assert "CONNECTION ESTABLISHED" in out and "Hello from facil.io" in out, out
        assert wait_for(lambda: name in [g for _, g in server.handshakes()]), server.text()

