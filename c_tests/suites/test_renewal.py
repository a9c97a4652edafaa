"""Certificate renewal in a running multi-worker facil.io server (issue 11).

The server is fio_server's mode `renew` (c_tests/programs/fio_server.c),
static link: `fio_start(.threads = 2, .workers = 4)`, every answer names the
worker that served it ("pid=N"), GET /reload and /reload-one call
fio_tls_reload from the request handler, a websocket upgrade echoes, and
SIGHUP reloads through the README's recipe (flag + facil.io timer). It runs
in a session of its own (facil.io signals its whole process group). Clients
tell the certificate a worker serves by its DER; a sweep opens new
connections until it has seen every worker.

What is tested:
  * fio_tls_reload (NULL or one object), from a request handler or the
    SIGHUP task of one process, reaches the root and all four workers (the
    library's DEBUG line of each process);
  * with watching off (FIO_TLS_RELOAD_SECONDS=0) a renewed file changes
    nothing, and fio_tls_reload from one worker's request handler (then
    SIGHUP, then /reload-one) puts all four workers on the new certificate
    at once (within 1 s), the root process too;
  * keep-alive TLS connections and websocket connections stay open across
    three renewals (certbot-style live/ symlink switch, Kubernetes-style
    `..data` switch, rename over), serving every request and echo without
    a failure, while after each renewal every worker serves the new
    certificate within FIO_TLS_RELOAD_SECONDS + 1 and the other names keep
    theirs;
  * a real renewal: Debian's certbot against Debian's pebble (ACME test CA)
    with pebble-challtestsrv as its DNS, all on loopback, HTTP-01 really
    validated (certbot --standalone on the port pebble's VA calls), renews
    into certbot's live/ symlinks while the server runs; the server picks
    the renewed certificate up by watching, or at once through a certbot
    deploy hook that sends SIGHUP (the README's two recipes).

Counts: 50 keep-alive and 20 websocket connections by default; the
issue's full 200 and 50 with --renewal-full (e.g.
`make check PYTEST_ARGS="--renewal-full -k renewal"`).
"""
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fiotest.acme import Pebble, missing_tools
from fiotest.proc import excerpt, run

WORKERS, THREADS = 4, 2
RELOAD_SECONDS = 2  # FIO_TLS_RELOAD_SECONDS of the watching tests
AT_ONCE = 1.0  # seconds: "at once" for fio_tls_reload with watching off
SWEEP_CONNECTIONS = 400  # new connections a sweep may open to meet every worker
IO_TIMEOUT = 10


@pytest.fixture
def counts(request):
    """(keep-alive connections, websocket connections)."""
    return (200, 50) if request.config.getoption("--renewal-full") else (50, 20)


# ---------------------------------------------------------------------------
# certificates and the ways renewal tools put them in place
# ---------------------------------------------------------------------------
class Issuer:
    """Leaf certificates from the test PKI's intermediate, each with a new
    key and a new serial, written under `d`."""

    def __init__(self, ctx, d):
        self.ctx, self.d, self.n = ctx, d, 0
        os.makedirs(d, exist_ok=True)

    def leaf(self, name):
        """Returns (key PEM bytes, chain PEM bytes, leaf DER, serial hex)."""
        self.n += 1
        pki = self.ctx.pki
        base = os.path.join(self.d, f"{name}-{self.n}")
        key, csr, pem = base + ".key", base + ".csr", base + ".pem"
        pki.key(key, "ec")
        pki.ossl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        pki.sign(csr, pki.int_pem, pki.int_key, pem, [
            "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth", f"subjectAltName=DNS:{name}"])
        with open(key, "rb") as f:
            key_pem = f.read()
        with open(pem, "rb") as f:
            leaf_pem = f.read()
        with open(pki.int_pem, "rb") as f:
            chain_pem = leaf_pem + f.read()
        return key_pem, chain_pem, pem_der(leaf_pem), serial_of(pem)


def pem_der(pem):
    text = pem.decode() if isinstance(pem, bytes) else pem
    block = text.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(block)


def serial_of(pem_path):
    r = run(["openssl", "x509", "-noout", "-serial", "-in", pem_path])
    m = re.search(r"serial=([0-9A-Fa-f]+)", r.text)
    return m.group(1).upper() if m else "?"


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


class CertbotLayout:
    """/etc/letsencrypt-style: live/NAME/{privkey,fullchain}.pem are
    relative symlinks into archive/NAME/{privkey,fullchain}N.pem; a renewal
    writes the next N and switches the links one after the other."""

    def __init__(self, root, name):
        self.name, self.n = name, 0
        self.archive = os.path.join(root, "archive", name)
        self.live = os.path.join(root, "live", name)
        os.makedirs(self.archive)
        os.makedirs(self.live)
        self.key = os.path.join(self.live, "privkey.pem")
        self.cert = os.path.join(self.live, "fullchain.pem")

    def install(self, key_pem, chain_pem):
        self.n += 1
        write(os.path.join(self.archive, f"privkey{self.n}.pem"), key_pem)
        write(os.path.join(self.archive, f"fullchain{self.n}.pem"), chain_pem)
        for link, kind in ((self.key, "privkey"), (self.cert, "fullchain")):
            tmp = link + ".new"
            os.symlink(f"../../archive/{self.name}/{kind}{self.n}.pem", tmp)
            os.replace(tmp, link)


class KubernetesLayout:
    """A Kubernetes secret volume: tls.key and tls.crt are symlinks to
    ..data/tls.*, ..data a symlink to a timestamped directory; an update
    writes a new directory and renames a new ..data link over the old one
    (one atomic switch of both files)."""

    def __init__(self, root):
        self.root, self.n = root, 0
        os.makedirs(root)
        self.key = os.path.join(root, "tls.key")
        self.cert = os.path.join(root, "tls.crt")

    def install(self, key_pem, chain_pem):
        self.n += 1
        old = os.readlink(os.path.join(self.root, "..data")) if self.n > 1 else None
        d = f"..2026_01_0{self.n}_12_00_00.{1000 + self.n}"
        os.makedirs(os.path.join(self.root, d))
        write(os.path.join(self.root, d, "tls.key"), key_pem)
        write(os.path.join(self.root, d, "tls.crt"), chain_pem)
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(d, tmp)
        os.replace(tmp, os.path.join(self.root, "..data"))
        if old is None:
            os.symlink("..data/tls.key", self.key)
            os.symlink("..data/tls.crt", self.cert)
        else:
            shutil.rmtree(os.path.join(self.root, old))


class RenameLayout:
    """Plain files; a renewal writes new files next to them and renames
    each one over the old (key first, then certificate)."""

    def __init__(self, root):
        os.makedirs(root)
        self.key = os.path.join(root, "key.pem")
        self.cert = os.path.join(root, "cert.pem")

    def install(self, key_pem, chain_pem):
        for path, data in ((self.key, key_pem), (self.cert, chain_pem)):
            write(path + ".tmp", data)
            os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------
def client_context():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # what is checked is which certificate is served
    return c


CLIENT = client_context()


class Conn:
    """A TLS connection with its own read buffer."""

    def __init__(self, port, sni):
        raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        try:
            self.s = CLIENT.wrap_socket(raw, server_hostname=sni)
        except BaseException:
            raw.close()
            raise
        self.sni = sni
        self.der = self.s.getpeercert(binary_form=True)
        self.buf = b""

    def recv_until(self, sep):
        while sep not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server (waiting for {sep!r})")
            self.buf += chunk
        head, self.buf = self.buf.split(sep, 1)
        return head

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server ({len(self.buf)} of {n} bytes)")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class KeepAlive(Conn):
    def get(self, path="/", close=False):
        """One request on this connection; returns (status, body)."""
        self.s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            path.encode(), self.sni.encode(), b"Connection: close\r\n" if close else b""))
        head = self.recv_until(b"\r\n\r\n").decode("latin-1")
        status = int(head.split(" ", 2)[1])
        m = re.search(r"^content-length:\s*(\d+)", head, re.I | re.M)
        if not m:
            raise ConnectionError(f"no content-length in {head!r}")
        return status, self.recv_exact(int(m.group(1)))

    def pid(self):
        status, body = self.get()
        m = re.match(rb"pid=(\d+)\n$", body)
        if status != 200 or not m:
            raise ConnectionError(f"unexpected answer {status} {body!r}")
        return int(m.group(1))


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket(Conn):
    def __init__(self, port, sni):
        super().__init__(port, sni)
        key = base64.b64encode(os.urandom(16))
        self.s.sendall(b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       b"Sec-WebSocket-Version: 13\r\n\r\n" % (sni.encode(), key))
        head = self.recv_until(b"\r\n\r\n").decode("latin-1")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head:
            raise ConnectionError(f"websocket upgrade refused: {head!r}")
        self.n = 0

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def echo(self):
        """Sends a numbered text message; returns the worker pid of the echo."""
        self.n += 1
        msg = b"renewal-%d" % self.n
        self.send_frame(0x1, msg)
        while True:
            b0, b1 = self.recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.recv_exact(8))[0]
            payload = self.recv_exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping (facil.io's ws_timeout): answer, go on
                self.send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError(f"websocket closed by the server: {payload!r}")
            m = re.match(rb"pid=(\d+) (.*)$", payload, re.S)
            if opcode != 0x1 or not m or m.group(2) != msg:
                raise ConnectionError(f"unexpected frame {opcode} {payload!r} (sent {msg!r})")
            return int(m.group(1))


def probe(port, sni):
    """One new connection: (pid of the worker that served it, leaf DER)."""
    c = KeepAlive(port, sni)
    try:
        status, body = c.get(close=True)
    finally:
        c.close()
    m = re.match(rb"pid=(\d+)", body)
    if status != 200 or not m:
        raise ConnectionError(f"unexpected answer {status} {body!r}")
    return int(m.group(1)), c.der


def sweep(port, sni, pids, limit=SWEEP_CONNECTIONS):
    """New connections, four at a time (the kernel then spreads them over
    the workers better than one by one), until every worker in `pids` served
    one, at most `limit`. Returns {pid: set of leaf DERs served}, and the
    errors."""
    seen, errors = {}, []

    def one(_):
        try:
            return probe(port, sni)
        except (OSError, ssl.SSLError, ConnectionError) as e:
            return f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(4) as pool:
        made = 0
        while made < limit and not set(pids) <= set(seen):
            for r in pool.map(one, range(8)):
                if isinstance(r, str):
                    errors.append(r)
                else:
                    seen.setdefault(r[0], set()).add(r[1])
            made += 8
    return seen, errors


def check_sweep(ctx, tag, srv, sni, pids, want, names):
    """Every worker serves `want` (a DER) for `sni`; `names` maps DERs to
    labels for the report."""
    seen, errors = sweep(srv.port, sni, pids)
    served = {p: sorted(names.get(d, "unknown") for d in ds) for p, ds in seen.items()}
    missing = sorted(set(pids) - set(seen))
    ok = not missing and not errors and all(ds == {want} for ds in seen.values())
    return ctx.check(tag, ok, f"want {names.get(want)}; served per worker: {served}; "
                              f"workers not reached: {missing}; errors: {errors[:5]}\n"
                              f"{excerpt(srv.text())}")


class Load(threading.Thread):
    """Cycles over `conns` calling `op(conn)` until stopped; counts every
    answer per connection and keeps every failure."""

    def __init__(self, conns, op):
        super().__init__(daemon=True)
        self.conns, self.op = conns, op
        self.done = [0] * len(conns)
        self.failures = []
        self.stopping = threading.Event()

    def run(self):
        dead = set()
        while not self.stopping.is_set():
            for i, c in enumerate(self.conns):
                if self.stopping.is_set():
                    break
                if i in dead:
                    continue
                try:
                    self.op(c)
                    self.done[i] += 1
                except (OSError, ssl.SSLError, ConnectionError, ValueError, IndexError) as e:
                    dead.add(i)
                    self.failures.append(f"connection {i}: {type(e).__name__}: {e}")
            if len(dead) == len(self.conns):
                break

    def snapshot(self):
        return list(self.done)

    def wait_all_past(self, snap, timeout):
        """True once every connection answered again since `snap`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(a > b for a, b in zip(self.done, snap)):
                return True
            if not self.is_alive():
                break
            time.sleep(0.05)
        return all(a > b for a, b in zip(self.done, snap))

    def stop(self):
        self.stopping.set()
        self.join(IO_TIMEOUT * 2)


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------
def start_renew(ctx, label, certs, reload_seconds, level=None, mode=None, env=None, port=None):
    """fio_server renew with `certs` [(name, key, cert)...] in a session of
    its own (or `mode`: another mode's arguments after the port, such as
    ["acme", "4", "a.test"]; `env`: more environment; `port`: a fixed port).
    Returns (server, root pid, [worker pids]) or (server, None, [])."""
    argv = [ctx.binary("static", "fio_server"), "-t", str(THREADS)]
    if level is not None:
        argv += ["-l", str(level)]
    mode = mode or ["renew", str(WORKERS)] + [x for c in certs for x in c]
    argv += [mode[0], "{port}", *mode[1:]]
    env = ctx.env("static", {"FIO_TLS_RELOAD_SECONDS": str(reload_seconds), **(env or {})})
    for _ in range(3):
        srv = ctx.server(argv, f"static-{label}", env=env, new_session=True, port=port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and srv.alive():
            text = srv.text()
            if len(re.findall(r"^READY \d+$", text, re.M)) >= WORKERS:
                break
            time.sleep(0.05)
        text = srv.text()
        root = re.search(r"^ROOT (\d+)$", text, re.M)
        workers = [int(p) for p in re.findall(r"^WORKER (\d+)$", text, re.M)]
        if srv.alive() and root and len(workers) == WORKERS:
            return srv, int(root.group(1)), workers
        srv.stop()
        if "Address already in use" not in srv.text():
            break
    ctx.check(f"[{label}] fio_server {mode[0]} starts {WORKERS} workers", False, excerpt(srv.text()))
    return srv, None, []


def check_stop(ctx, tag, srv):
    """The server stops cleanly, no worker ever died (facil.io respawns one
    that crashes: a fifth WORKER line) and nothing panicked."""
    text_before = srv.text()
    rc, clean = srv.stop()
    text = srv.text()
    workers = re.findall(r"^WORKER (\d+)$", text_before, re.M)
    ctx.check(f"{tag}: no worker crashed or was respawned; exits cleanly on SIGTERM",
              clean and rc == 0 and "STOPPED" in text and len(workers) == WORKERS
              and "panicked" not in text and "crashed" not in text,
              f"rc={rc} clean={clean} WORKER lines={workers}\n{excerpt(text)}")


def reload_lines(text, serial):
    """INFO lines of the library that name `serial` (in any usual form:
    hex with or without colons, any case, or decimal)."""
    hexs = serial.upper().lstrip("0") or "0"
    colon = ":".join(re.findall("..", serial.upper().rjust(len(serial) + len(serial) % 2, "0")))
    forms = {hexs, serial.upper(), colon, str(int(serial, 16))}
    pat = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return [l for l in text.splitlines()
            if l.startswith("INFO: fio_tls:") and re.search(rf"(?i)(?<![0-9A-F:])(0x)?({pat})(?![0-9A-F:])", l)]


def get_once(port, sni, path):
    c = KeepAlive(port, sni)
    try:
        return c.get(path, close=True)
    finally:
        c.close()


# ---------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------
@pytest.mark.facil
def test_reload_message_reaches_every_process(ctx):
    """fio_tls_reload's cluster message reaches the root and all four
    workers: from a request handler (NULL and one object) and from the
    SIGHUP task of the root and of a worker. Watching off; the library's
    DEBUG line of each process is the witness (this test does not depend on
    what the re-check does)."""
    tag = "[static] fio_tls_reload message"
    key, chain = ctx.pki.localhost
    srv, root, workers = start_renew(ctx, "reload-message", [("localhost", key, chain)], 0, level=5)
    if not root:
        return
    everyone = sorted([root] + workers)

    def asked(by, what, since):
        # each process's DEBUG line for this request (logged after `since`)
        pat = (rf"^DEBUG: fio_tls: fio_tls_reload: process (\d+) re-checks the files of "
               rf"{what} \(asked by process {by}\)$")
        deadline = time.monotonic() + 5
        while True:
            got = sorted(int(p) for p in re.findall(pat, srv.text()[since:], re.M))
            if got == everyone or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    since = len(srv.text())
    status, body = get_once(srv.port, "localhost", "/reload")
    m = re.match(rb"pid=(\d+) reload=all", body)
    by = int(m.group(1)) if m else None
    got = asked(by, "every fio_tls_s", since)
    ctx.check(f"{tag}: GET /reload in worker {by}: fio_tls_reload(NULL) reaches the root "
              f"and the {WORKERS} workers, once each", status == 200 and by in workers and got == everyone,
              f"answer {status} {body!r}; processes {got}, want {everyone}")

    since = len(srv.text())
    status, body = get_once(srv.port, "localhost", "/reload-one")
    m = re.match(rb"pid=(\d+) reload=one", body)
    by = int(m.group(1)) if m else None
    got = asked(by, r"fio_tls_s 0x[0-9a-f]+", since)
    ctx.check(f"{tag}: GET /reload-one in worker {by}: fio_tls_reload(tls) reaches every process, "
              f"where the handle names the object made before fio_start", status == 200 and got == everyone,
              f"answer {status} {body!r}; processes {got}, want {everyone}")

    for target, who in ((root, "the root"), (workers[1], "a worker")):
        since = len(srv.text())
        os.kill(target, signal.SIGHUP)
        got = asked(target, "every fio_tls_s", since)
        ctx.check(f"{tag}: SIGHUP to {who} ({target}): the README's flag + timer recipe "
                  f"reaches every process", got == everyone and
                  re.search(rf"^SIGHUP-RELOAD {target}$", srv.text()[since:], re.M),
                  f"processes {got}, want {everyone}\n{excerpt(srv.text())}")
    check_stop(ctx, tag, srv)


@pytest.mark.facil
def test_reload_from_a_request_handler_reaches_every_worker_with_watching_off(ctx):
    """FIO_TLS_RELOAD_SECONDS=0: a renewed file changes nothing until
    fio_tls_reload, which from one worker's request handler (then from the
    SIGHUP task, then /reload-one) puts every worker on the new
    certificate at once; the root process reloads too (its INFO line)."""
    tag = "[static] watching off"
    issuer = Issuer(ctx, os.path.join(ctx.tmp, "issued"))
    files = RenameLayout(os.path.join(ctx.tmp, "plain"))
    name = "reload.test"
    gens = [issuer.leaf(name) for _ in range(4)]
    names = {g[2]: f"certificate {i} (serial {g[3]})" for i, g in enumerate(gens)}
    files.install(gens[0][0], gens[0][1])
    srv, root, workers = start_renew(ctx, "watching-off", [(name, files.key, files.cert)], 0)
    if not root:
        return
    check_sweep(ctx, f"{tag}: every worker serves certificate 0", srv, name, workers, gens[0][2], names)

    files.install(gens[1][0], gens[1][1])
    time.sleep(RELOAD_SECONDS + 1)
    check_sweep(ctx, f"{tag}: renewed files, no fio_tls_reload: every worker still serves "
                     f"certificate 0 ({RELOAD_SECONDS + 1} s later)", srv, name, workers, gens[0][2], names)

    ways = (("GET /reload (fio_tls_reload(NULL) in a request handler)", "/reload"),
            ("SIGHUP to the root (flag + timer -> fio_tls_reload(NULL))", None),
            ("GET /reload-one (fio_tls_reload(tls) in a request handler)", "/reload-one"))
    for i, (how, path) in enumerate(ways, start=1):
        if i > 1:
            files.install(gens[i][0], gens[i][1])
        if path:
            status, body = get_once(srv.port, name, path)
            ctx.check(f"{tag}: {how} answers", status == 200 and b"reload=" in body,
                      f"{status} {body!r}")
        else:
            os.kill(root, signal.SIGHUP)
        time.sleep(AT_ONCE)
        check_sweep(ctx, f"{tag}: {how}: every worker serves certificate {i} within {AT_ONCE} s",
                    srv, name, workers, gens[i][2], names)
        lines = reload_lines(srv.text(), gens[i][3])
        # every process reloads (check_sweep above); the one that made the
        # object reports it at INFO, its forked workers at DEBUG only
        ctx.check(f"{tag}: {how}: one INFO line for the application reports the reload "
                  f"of certificate {i} (naming serial {gens[i][3]})", len(lines) == 1,
                  "\n".join(lines) or excerpt(srv.text()))
    check_stop(ctx, tag, srv)


@pytest.mark.facil
def test_connections_stay_open_across_three_renewals_in_every_worker(ctx, counts):
    """threads=2, workers=4, FIO_TLS_RELOAD_SECONDS=2: keep-alive TLS and
    websocket connections serve requests and echoes without one failure
    while three names are renewed the ways renewal tools do it (certbot
    live/ symlinks, Kubernetes ..data, rename over); after each renewal,
    every worker serves the new certificate within 3 s and the other names
    keep theirs."""
    n_keepalive, n_ws = counts
    tag = f"[static] {n_keepalive} keep-alive + {n_ws} websocket connections, three renewals"
    issuer = Issuer(ctx, os.path.join(ctx.tmp, "issued"))
    layouts = [("certbot.test", "certbot live/ symlink switch",
                CertbotLayout(os.path.join(ctx.tmp, "letsencrypt"), "certbot.test")),
               ("k8s.test", "Kubernetes ..data switch",
                KubernetesLayout(os.path.join(ctx.tmp, "secret"))),
               ("rename.test", "rename over", RenameLayout(os.path.join(ctx.tmp, "plain")))]
    current, names = {}, {}
    for name, _, layout in layouts:
        k, c, der, serial = issuer.leaf(name)
        layout.install(k, c)
        current[name] = der
        names[der] = f"{name} #1 (serial {serial})"
    srv, root, workers = start_renew(ctx, "three-renewals",
                                     [(n, l.key, l.cert) for n, _, l in layouts], RELOAD_SECONDS)
    if not root:
        return
    for name, _, _ in layouts:
        check_sweep(ctx, f"{tag}: every worker serves {name} #1", srv, name, workers,
                    current[name], names)

    sni = [n for n, _, _ in layouts]
    keepalive, sockets = [], []
    try:
        try:
            keepalive = [KeepAlive(srv.port, sni[i % 3]) for i in range(n_keepalive)]
            sockets = [WebSocket(srv.port, sni[i % 3]) for i in range(n_ws)]
        except (OSError, ssl.SSLError, ConnectionError) as e:
            ctx.check(f"{tag}: open the connections", False, f"{type(e).__name__}: {e}\n"
                      f"{excerpt(srv.text())}")
            return
        http_pids = {c.pid() for c in keepalive}
        ws_pids = {w.echo() for w in sockets}
        ctx.check(f"{tag}: the connections are spread over the workers",
                  len(http_pids | ws_pids) >= 2 and (http_pids | ws_pids) <= set(workers),
                  f"keep-alive on {sorted(http_pids)}, websockets on {sorted(ws_pids)}, "
                  f"workers {workers}")
        loads = [Load(keepalive, KeepAlive.pid), Load(sockets, WebSocket.echo)]
        for load in loads:
            load.start()

        for step, (name, how, layout) in enumerate(layouts, start=1):
            snaps = [load.snapshot() for load in loads]
            k, c, der, serial = issuer.leaf(name)
            names[der] = f"{name} #2 (serial {serial})"
            layout.install(k, c)
            t0 = time.monotonic()
            time.sleep(max(0.0, t0 + RELOAD_SECONDS + 1 - time.monotonic()))
            renewed = check_sweep(ctx, f"{tag}: renewal {step} ({how}): every worker serves the "
                                       f"new {name} within {RELOAD_SECONDS + 1} s",
                                  srv, name, workers, der, names)
            for other in sni:
                if other != name and current[other]:
                    check_sweep(ctx, f"{tag}: renewal {step}: {other} unchanged in every worker",
                                srv, other, workers, current[other], names)
            # after a failed renewal, what that name serves is not known
            current[name] = der if renewed else None
            for load, snap, what in zip(loads, snaps, ("keep-alive", "websocket")):
                ctx.check(f"{tag}: renewal {step}: every {what} connection answered again since",
                          load.wait_all_past(snap, 15) and not load.failures,
                          f"failures: {load.failures[:10]}")
        for load in loads:
            load.stop()
        ctx.check(f"{tag}: zero failed requests or echoes, zero dropped connections",
                  all(not load.failures for load in loads),
                  "\n".join(f for load in loads for f in load.failures[:20]))
        totals = [sum(load.done) for load in loads]
        print(f"# {totals[0]} requests on {n_keepalive} keep-alive connections, "
              f"{totals[1]} echoes on {n_ws} websockets")
    finally:
        for c in keepalive + sockets:
            c.close()
    check_stop(ctx, tag, srv)


# ---------------------------------------------------------------------------
# certbot + pebble
# ---------------------------------------------------------------------------
DOMAIN = "renew.fio-tls.test"


class Acme(Pebble):
    """pebble and pebble-challtestsrv (fiotest.acme), and certbot pointed at
    them with its directories under the test's tmp dir."""

    def __init__(self, ctx):
        super().__init__(ctx, env={"PEBBLE_WFE_NONCEREJECT": "0"})
        d = os.path.join(ctx.tmp, "acme")
        os.makedirs(d)
        self.etc = os.path.join(d, "letsencrypt")
        self.dirs = ["--config-dir", self.etc, "--work-dir", os.path.join(d, "work"),
                     "--logs-dir", os.path.join(d, "logs")]
        # certbot trusts the test root (pebble's HTTPS certificate)
        self.env = dict(os.environ, REQUESTS_CA_BUNDLE=ctx.pki.ca_pem)
        self.live = os.path.join(self.etc, "live", DOMAIN)

    def certbot(self, *args):
        """certbot with our directories; HTTP-01 answered by its standalone
        server on the port pebble's VA calls."""
        return run(["certbot", *args, *self.dirs, "--non-interactive"], env=self.env,
                   timeout=120)

    def issue(self):
        return self.certbot("certonly", "--standalone", "--http-01-address", "127.0.0.1",
                            "--http-01-port", str(self.http01), "-d", DOMAIN,
                            "--server", self.directory, "--agree-tos",
                            "--register-unsafely-without-email")

    def renew(self, *extra):
        # renews with the settings of the first run (renewal/DOMAIN.conf)
        return self.certbot("renew", "--force-renewal", "--no-random-sleep-on-renew", *extra)

    def leaf_der(self):
        with open(os.path.join(self.live, "cert.pem")) as f:
            return pem_der(f.read())


@pytest.mark.facil
@pytest.mark.parametrize("recipe", ("watch", "deploy-hook"))
def test_certbot_renews_against_pebble_while_the_server_runs(ctx, recipe):
    """certbot (Debian) issues a certificate from pebble (Debian's ACME test
    CA) into live/, the server loads live/privkey.pem + live/fullchain.pem,
    certbot renews while it runs, and every worker serves the renewed
    certificate: by watching (FIO_TLS_RELOAD_SECONDS=1, nothing else to
    do), or with watching off through `--deploy-hook 'kill -HUP <root>'`
    (the SIGHUP recipe) at once. A keep-alive connection and a websocket
    stay open across the renewal."""
    for tool in missing_tools(("certbot",)):
        pytest.skip(f"{tool} is not installed (Debian packages certbot, pebble; .ci/run installs them)")
    tag = f"[static] certbot + pebble, {recipe}"
    acme = Acme(ctx)
    if not ctx.check(f"{tag}: pebble and pebble-challtestsrv run on loopback", acme.ready(),
                     excerpt(acme.pebble.text() + acme.chall.text())):
        return
    r = acme.issue()
    if not ctx.check(f"{tag}: certbot certonly --standalone gets a certificate from pebble",
                     r.rc == 0 and os.path.islink(os.path.join(acme.live, "fullchain.pem")),
                     f"rc={r.rc}\n{excerpt(r.text)}\n{excerpt(acme.pebble.text())}"):
        return
    first = acme.leaf_der()
    seconds = 1 if recipe == "watch" else 0
    key, cert = os.path.join(acme.live, "privkey.pem"), os.path.join(acme.live, "fullchain.pem")
    srv, root, workers = start_renew(ctx, f"certbot-{recipe}", [(DOMAIN, key, cert)], seconds)
    if not root:
        return
    names = {first: "certbot's first certificate"}
    check_sweep(ctx, f"{tag}: every worker serves certbot's certificate from live/", srv, DOMAIN,
                workers, first, names)
    try:
        held = KeepAlive(srv.port, DOMAIN)
        ws = WebSocket(srv.port, DOMAIN)
        held.pid(), ws.echo()
    except (OSError, ssl.SSLError, ConnectionError) as e:
        ctx.check(f"{tag}: a keep-alive connection and a websocket", False, f"{e}")
        return
    try:
        hook = ("--deploy-hook", f"kill -HUP {root}") if recipe == "deploy-hook" else ()
        r = acme.renew(*hook)
        done = time.monotonic()
        renewed = acme.leaf_der() if r.rc == 0 else None
        if not ctx.check(f"{tag}: certbot renew --force-renewal renews into live/ while the "
                         f"server runs", r.rc == 0 and renewed != first,
                         f"rc={r.rc}\n{excerpt(r.text)}"):
            return
        names[renewed] = "certbot's renewed certificate"
        wait = AT_ONCE if recipe == "deploy-hook" else seconds + 1
        time.sleep(max(0.0, done + wait - time.monotonic()))
        check_sweep(ctx, f"{tag}: every worker serves the renewed certificate within {wait} s "
                         f"of certbot's end", srv, DOMAIN, workers, renewed, names)
        try:
            ok = held.pid() in workers and ws.echo() in workers
            err = ""
        except (OSError, ssl.SSLError, ConnectionError) as e:
            ok, err = False, f"{type(e).__name__}: {e}"
        ctx.check(f"{tag}: the keep-alive connection and the websocket opened before the "
                  f"renewal still answer", ok, err)
        if recipe == "deploy-hook":
            ctx.check(f"{tag}: the deploy hook's SIGHUP reached the root's task",
                      re.search(rf"^SIGHUP-RELOAD {root}$", srv.text(), re.M), excerpt(srv.text()))
    finally:
        held.close()
        ws.close()
    check_stop(ctx, tag, srv)
