"""What the torture suite (suites/test_torture.py) and the reproduction
tools (tools/repro_*.py) share: the `fio_server torture` process with its
/proc figures, and clients that control exactly what is sent and when
(blocking HTTP/1.1 over ssl or plain sockets, a raw TLS client over memory
BIOs, the /dyn pattern, the server's facil.io fd race lines)."""
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

from .proc import LIVE, free_port, stop_process

# fio_server.c's HELLO_BODY: GET / and GET /close
HELLO = b"Hello from facil.io over fio_tls\n"
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# /proc figures; a process that is gone (a crashed worker) counts as 0, the
# items check TortureServer.healthy() separately
# ---------------------------------------------------------------------------
def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except FileNotFoundError:
        return 0.0
    rest = data[data.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------
# a line of the server's log that says facil.io closed a healthy connection
# for an error event or a failed read of the fd's previous owner
# (fio_server.c, torture mode)
FD_RACE = re.compile(r"^FD_RACE fd=(\d+) peer_port=(-?\d+) (events=0x[0-9a-f]+|read=-?\d+)$",
                     re.M)
# lines of the server's own (stdout) protocol, not log lines
MARKERS = re.compile(r"^(READY \d+|WORKER \d+|STOPPED|FD_RACE .*)$")


def torture_argv(binary, port, threads=1, workers=1, public=None, plain_port=None,
                 log_level=None):
    argv = [binary, "-t", str(threads)]
    if public:
        argv += ["-p", public]
    if log_level is not None:
        argv += ["-l", str(log_level)]
    argv += ["torture", str(port), "-w", str(workers)]
    if plain_port:
        argv += ["-P", str(plain_port)]
    return argv


class TortureServer:
    """`fio_server torture` in its own session (with workers > 1 facil.io
    signals its whole process group when it stops); stdout and stderr go to
    one log. With a `ctx` it is one of the test's servers: stopped at the
    test's end, its log attached to a failed test's report."""

    def __init__(self, binary, log_path, threads=1, workers=1, env=None,
                 public=None, plain=False, wrapper=None, log_level=None, ctx=None):
        self.port = free_port()
        self.plain_port = free_port() if plain else None
        argv = list(wrapper or []) + torture_argv(binary, self.port, threads, workers,
                                                  public, self.plain_port, log_level)
        full_env = {k: v for k, v in os.environ.items()
                    if k != "LD_PRELOAD" and not k.startswith("FIO_TLS_")
                    and k != "SSLKEYLOGFILE"}
        full_env.update(env or {})
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        LIVE.add(self.proc)
        self.workers = []
        self.rc = None
        if ctx is not None:
            ctx.servers.append(self)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        """The log lines so far (facil.io's and the library's), without the
        server's marker lines."""
        return [l for l in self.text().splitlines() if not MARKERS.match(l)]

    def race_ports(self, since=0):
        """Client ports of the FD_RACE lines (after the first `since` of them)."""
        return [int(m.group(2)) for m in FD_RACE.finditer(self.text())][since:]

    def crash_lines(self):
        return [l for l in self.text().splitlines()
                if re.search(r"crash|FATAL|panic|Segmentation|internal error in ", l, re.I)]

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(r"^READY \d+$", text, re.M):
                self.workers = [int(p) for p in re.findall(r"^WORKER (\d+)$", text, re.M)]
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"torture server did not start: rc={self.proc.poll()} "
                           f"log:\n{self.text()[-2000:]}")

    def pids(self):
        return sorted(set([self.proc.pid] + self.workers))

    def alive(self):
        """The root process runs (what Ctx.finish asks before stopping)."""
        return self.proc.poll() is None

    def healthy(self):
        """The root process and every worker run."""
        return self.alive() and all(os.path.exists(f"/proc/{p}") for p in self.pids())

    def cpu(self):
        return sum(proc_cpu_seconds(p) for p in self.pids())

    def rss_kb(self):
        return sum(proc_rss_kb(p) for p in self.pids())

    def fds(self):
        return sum(proc_fds(p) for p in self.pids())

    def wait_fds(self, limit, timeout):
        """Waits until the fd count is <= limit; returns the last count."""
        deadline = time.monotonic() + timeout
        n = self.fds()
        while n > limit and time.monotonic() < deadline:
            time.sleep(0.1)
            n = self.fds()
        return n

    def stats(self):
        conn = tls_connect(self.port)
        try:
            conn.request(b"GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, _, body = conn.read_response()
        finally:
            conn.close()
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", body.decode())}

    def stop(self, sig=signal.SIGINT, timeout=20):
        """Stops the server (then kills what is left of its process group).
        Returns (rc, clean) like fiotest's Server.stop."""
        clean = stop_process(self.proc, sig, timeout, group=True)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind
        except (ProcessLookupError, PermissionError):
            pass
        if not self.log.closed:
            self.log.close()
        LIVE.discard(self.proc)
        self.rc = self.proc.returncode
        return self.rc, clean


# ---------------------------------------------------------------------------
# TLS and HTTP clients
# ---------------------------------------------------------------------------
_CTX = {}


def client_ctx(version=None):
    """version: None (TLS 1.2 or 1.3, i.e. 1.3), "1.2" or "1.3"."""
    if version not in _CTX:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        c.set_alpn_protocols(["http/1.1"])
        if version == "1.2":
            c.maximum_version = ssl.TLSVersion.TLSv1_2
        elif version == "1.3":
            c.minimum_version = ssl.TLSVersion.TLSv1_3
        _CTX[version] = c
    return _CTX[version]


class ClientError(Exception):
    """A client's failure with the client's local port (what the server's
    FD_RACE lines name)."""

    def __init__(self, port, error):
        super().__init__(f"{type(error).__name__}: {error}")
        self.port = port
        self.error = error


def failure_text(e):
    """"Kind: message" of a client's exception (a ClientError: of the
    exception it carries)."""
    return str(e) if isinstance(e, ClientError) else f"{type(e).__name__}: {e}"


def with_port(port, fn, *args):
    """fn(*args); any exception comes out as a ClientError naming `port`."""
    try:
        return fn(*args)
    except ClientError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the port
        raise ClientError(port, e) from e


class HttpConn:
    """An HTTP/1.1 keep-alive connection over a blocking SSLSocket (or a
    plain socket); `port` is its local port."""

    def __init__(self, sock, port):
        self.s = sock
        self.port = port
        self.buf = bytearray()

    def request(self, data):
        self.s.sendall(data)

    def fill(self):
        d = self.s.recv(256 * 1024)
        if not d:
            raise EOFError("connection closed by the server")
        self.buf += d

    def read_response(self):
        start = 0
        while True:
            i = self.buf.find(b"\r\n\r\n", start)
            if i >= 0:
                break
            start = max(0, len(self.buf) - 3)
            self.fill()
        head = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self.fill()
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return status, headers, body

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def wait_server_close(self, timeout=10):
        """After a "Connection: close" response: the server closes first.
        Raises if anything but the end of the stream arrives."""
        self.s.settimeout(timeout)
        try:
            self.fill()
        except EOFError:
            return
        raise RuntimeError(f"data after the last response: {bytes(self.buf[:40])!r}")


def tls_connect(port, timeout=30, version=None, rcvbuf=None):
    """A handshaken connection; a failure raises ClientError."""
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", port))
    local = raw.getsockname()[1]
    try:
        s = client_ctx(version).wrap_socket(raw, server_hostname="localhost")
    except Exception as e:  # noqa: BLE001 - re-raised with the port
        raw.close()
        raise ClientError(local, e) from e
    return HttpConn(s, local)


def plain_connect(port, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return HttpConn(s, s.getsockname()[1])


def get(path, close=False):
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


def post(path, body, close=False):
    extra = "Connection: close\r\n" if close else ""
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {len(body)}\r\n{extra}"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + body


_PATTERN = bytearray()
_PATTERN_LOCK = threading.Lock()


def pattern(n):
    """What GET /dyn?n=N returns: 16-byte records "%015x\\n" cut to n."""
    with _PATTERN_LOCK:
        have = len(_PATTERN) // 16
        need = (n + 15) // 16
        if need > have:
            _PATTERN.extend(b"".join(b"%015x\n" % i for i in range(have, need)))
        return bytes(_PATTERN[:n])


def memory_tls(version=None):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(version).wrap_bio(inc, out, server_hostname="localhost")
    return obj, inc, out


def client_hello(version=None):
    obj, _, out = memory_tls(version)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def set_rst(s):
    """close() then sends a reset, not a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def curl(args, timeout=60):
    return subprocess.run(["curl", "-sS", "-k", "--max-time", str(timeout)] + args,
                          capture_output=True, timeout=timeout + 10)


# ---------------------------------------------------------------------------
# a raw TLS client over a socket, through memory BIOs (exact control of what
# is sent and when)
# ---------------------------------------------------------------------------
class RawTLS:
    def __init__(self, port, version=None, timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = self.sock.getsockname()[1]
        self.obj, self.inc, self.out = memory_tls(version)

    def send_pending(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def recv_raw(self):
        d = self.sock.recv(65536)
        if not d:
            self.inc.write_eof()
        else:
            self.inc.write(d)
        return d

    def handshake_until_server_flight(self):
        """Sends the ClientHello and reads until the client has processed the
        server's flight, sending nothing more. True when the client side of
        the handshake finished (TLS 1.3), False when it waits for the
        server's Finished (TLS 1.2)."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.send_pending()
        while True:
            if not self.recv_raw():
                raise EOFError("server closed during the handshake")
            try:
                self.obj.do_handshake()
                return True
            except ssl.SSLWantReadError:
                if self.out.pending:
                    return False

    def handshake(self):
        self.send_pending()
        while True:
            try:
                self.obj.do_handshake()
                self.send_pending()
                return
            except ssl.SSLWantReadError:
                self.send_pending()
                if not self.recv_raw():
                    raise EOFError("server closed during the handshake")

    def write(self, data):
        self.obj.write(data)
        self.send_pending()

    def served_once(self):
        """Handshake, GET / and its whole response: a keep-alive connection
        that has been served once."""
        self.handshake()
        self.write(get("/"))
        got = bytearray()
        while not got.endswith(HELLO):
            got += self.read_some()

    def read_some(self):
        """Plaintext bytes available now or after one socket read (b"" on a
        WantRead after a read)."""
        try:
            return self.obj.read(65536)
        except ssl.SSLWantReadError:
            pass
        if not self.recv_raw():
            data = self.obj.read(65536)  # raises at an unclean EOF
            if not data:  # the peer's close_notify, then EOF
                raise EOFError("connection closed by the server (close_notify)")
            return data
        try:
            return self.obj.read(65536)
        except ssl.SSLWantReadError:
            return b""

    def die(self, rst):
        if rst:
            set_rst(self.sock)
        self.sock.close()


def run_pool(n_jobs, n_threads, job, deadline_s):
    """Runs job(i) for i in range(n_jobs) on n_threads threads; returns
    (results list, errors list of (i, port or None, text), timed_out)."""
    results = [None] * n_jobs
    errors = []
    lock = threading.Lock()
    next_i = [0]
    deadline = time.monotonic() + deadline_s

    def worker():
        while time.monotonic() < deadline:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n_jobs:
                return
            try:
                results[i] = job(i)
            except Exception as e:  # noqa: BLE001 - reported
                with lock:
                    errors.append((i, getattr(e, "port", None), failure_text(e)))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    timed_out = any(t.is_alive() for t in threads) or next_i[0] < n_jobs
    return results, errors, timed_out


# A connection the server dropped (EOF, reset) rather than corrupted.
DROPPED = re.compile(r"^(TLS 1\.[23]: )?(EOFError|SSLEOFError|ConnectionResetError|"
                     r"BrokenPipeError|ConnectionAbortedError)\b")


def attribute_drops(failures, race_ports):
    """Splits client failures [(port, text)] into (diagnosed, other): a
    dropped connection (DROPPED) is `diagnosed` when an FD_RACE line of the
    server names its port (each line excuses one connection); everything
    else, and every drop the server did not diagnose, is `other`."""
    left = {}
    for p in race_ports:
        left[p] = left.get(p, 0) + 1
    diagnosed, other = [], []
    for port, text in failures:
        if DROPPED.match(text) and port is not None and left.get(port, 0) > 0:
            left[port] -= 1
            diagnosed.append((port, text))
        else:
            other.append((port, text))
    return diagnosed, other


def repeat_runs(one_run, args, prefix):
    """A reproduction tool's main loop: `one_run(args, tmp)` args.runs
    times in one scratch directory; exit status 0 when every run was clean."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        clean = [one_run(args, tmp) for _ in range(args.runs)]
    return 0 if all(clean) else 1
