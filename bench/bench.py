#!/usr/bin/env python3
"""bench.py -- libfio_tls side by side with nginx and plaintext facil.io (issue 6).

    python3 bench/bench.py --server-bin build/c_tests/static/fio_server
        [--results bench/results.md] [--work build/bench/run] [--quick]
        [--reps N] [--only fig,fig,...]

Starts each server on 127.0.0.1, drives it, prints one markdown table and
writes it (with the details) to --results. BENCH_QUICK=1 (or --quick) is a
fast smoke run: fewer connections, shorter runs, one repetition.

Method (see bench/README.md):
- the figure is the server's own CPU time per operation: utime+stime from
  /proc/<pid>/stat before and after a run (nginx: master + worker), divided
  by the operations the client completed; throughput is printed alongside;
- servers are pinned to core 0, clients to core 1 (taskset); one worker
  process, one thread (facil.io: fio_start(.threads = 1, .workers = 1);
  nginx: worker_processes 1);
- every figure is repeated (3 times by default) and the median reported; the
  repetitions of the servers are interleaved so that a change in background
  load hits all of them alike; /proc/loadavg is recorded before each figure.

The script also serves as its own load-generating clients (subcommands
_resume, _idle, _stall), run pinned to core 1.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BODY64 = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
BIG_LEN = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = "0"
CLIENT_CORE = "1"
NOFILE = 20000
# the facil.io 0.7.6 release-API rows (issue 14): c_tests/programs/fio07_server.c
# mode bench, linked with our release build (libfio_tls07.a) and with facil.io
# 0.7.6's own OpenSSL backend
API07_KINDS = ("ours07", "upstream07")


# ---------------------------------------------------------------------------
# small HTTP/1.1 helpers shared by the Python clients
# ---------------------------------------------------------------------------
def http_get(sock, path=b"/", with_head=False):
    """Sends one keep-alive GET and reads the whole response; returns the
    body (with_head: the head and the body). The suite checks fio_server's
    mode bench with it too (c_tests/suites/test_bench_server.py)."""
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if not m:
        raise ConnectionError("no content-length in %r" % head[:200])
    want = int(m.group(1))
    while len(body) < want:
        chunk = sock.recv(max(65536, want - len(body)))
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError("status %r" % head.split(b"\r\n")[0])
    return (head, body) if with_head else body


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect(port, ctx=None, session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is None:
        return raw
    # no SNI, like h2load and wrk to an IP address
    return ctx.wrap_socket(raw, server_hostname=None, session=session)


def wait_go():
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        sys.exit(1)


# ---------------------------------------------------------------------------
# client subcommands (run pinned to the client core)
# ---------------------------------------------------------------------------
def client_resume(port, n, mode, threads=32):
    """n connections, one GET each, from `threads` threads (so that the
    server sees concurrent handshakes, as with h2load). mode "resume": each
    connection reuses the session (TLS 1.3 ticket) of its thread's previous
    connection; "full": no session."""
    import threading
    ctx = client_ctx()
    sessions = []
    for _ in range(threads):
        s = connect(port, ctx)
        assert http_get(s) == BODY64
        sessions.append(s.session)
        s.close()
    counts = [0] * threads
    reused = [0] * threads
    errors = []
    lock = threading.Lock()
    todo = [n]

    def work(i):
        session = sessions[i]
        while True:
            with lock:
                if todo[0] <= 0:
                    return
                todo[0] -= 1
            try:
                s = connect(port, ctx, session if mode == "resume" else None)
                if http_get(s) != BODY64:
                    raise ConnectionError("bad body")
                if s.session_reused:
                    reused[i] += 1
                if mode == "resume":
                    session = s.session
                s.close()
                counts[i] += 1
            except Exception as e:  # counted, reported
                errors.append(repr(e))

    wait_go()
    t0 = time.monotonic()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    print(json.dumps({"done": sum(counts), "reused": sum(reused), "seconds": dt,
                      "errors": len(errors), "error": errors[:1]}), flush=True)


def client_idle(port, n, tls):
    """Opens n connections, one GET each, and keeps them open until told."""
    ctx = client_ctx() if tls else None
    socks = []
    wait_go()
    for _ in range(n):
        s = connect(port, ctx)
        if http_get(s) != BODY64:
            raise SystemExit("bad body")
        socks.append(s)
    print(json.dumps({"open": len(socks)}), flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print(json.dumps({"closed": len(socks)}), flush=True)


def client_stall(port, n):
    """n TCP connections that never send a byte, held until told."""
    wait_go()
    socks = [connect(port) for _ in range(n)]
    print(json.dumps({"open": len(socks)}), flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print(json.dumps({"closed": len(socks)}), flush=True)


# ---------------------------------------------------------------------------
# process accounting
# ---------------------------------------------------------------------------
def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


class Cpu(float):
    """utime + stime in seconds (a float), with the split and the
    scheduler's nanosecond count (schedstat) as a cross-check."""

    def __new__(cls, usr, sys_, ns):
        c = float.__new__(cls, usr + sys_)
        c.usr, c.sys, c.ns = usr, sys_, ns
        return c

    def __sub__(self, o):
        return Cpu(self.usr - o.usr, self.sys - o.sys, self.ns - o.ns)


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads) from
    /proc/<pid>/stat, in seconds."""
    usr = sys_ = ns = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        usr += int(fields[11])
        sys_ += int(fields[12])
        try:
            for tid in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    ns += int(f.read().split()[0])
        except OSError:
            pass
    return Cpu(usr / CLK_TCK, sys_ / CLK_TCK, ns)


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def per_op(d, n):
    """CPU figures of a run: d = Cpu difference, n = operations."""
    n = max(n, 1)
    return {"cpu_s": float(d), "us": float(d) / n * 1e6, "sys_share": d.sys / float(d) if float(d) else 0.0,
            "ns_us": d.ns / n / 1e3}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, what, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("%s exited at start (status %s)" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("%s does not listen on 127.0.0.1:%d" % (what, port))


def run(argv, timeout=600, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------
class Server:
    """A server pinned to the server core; kind: ours (facil.io +
    libfio_tls, system OpenSSL) | vendored (the same with the vendored
    build's libfio_tls.a, OpenSSL 3.5 inside) | nginx | plain (facil.io, no
    TLS) | nginx_plain (the same nginx without `ssl` on its listener: only
    for the idle-memory notes)."""

    def __init__(self, kind, cfg, cert=None):
        self.kind, self.cfg, self.cert = kind, cfg, cert
        self.tls = kind in ("ours", "nginx", "vendored") + API07_KINDS
        self.port = free_port()
        self.name = "%s-%s" % (kind, cert or "none")
        self.dir = os.path.join(cfg.work, self.name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.proc = None
        self.start()

    def url(self, path="/"):
        return "%s://127.0.0.1:%d%s" % ("https" if self.tls else "http", self.port, path)

    def start(self):
        cfg = self.cfg
        log = open(os.path.join(self.dir, "server.log"), "ab")
        if self.kind in ("nginx", "nginx_plain"):
            key, crt = cfg.certs[self.cert or "ecdsa"]
            for d in ("tmp", "www", "logs"):
                os.makedirs(os.path.join(self.dir, d), exist_ok=True)
            shutil.copyfile(cfg.big_file, os.path.join(self.dir, "www", "1m"))
            with open(os.path.join(HERE, "nginx.conf")) as f:
                conf = f.read()
            user = "user root;" if os.geteuid() == 0 else ""
            for k, v in (("@USER_LINE@", user), ("@DIR@", self.dir), ("@PORT@", str(self.port)),
                         ("@SSL@", "ssl" if self.tls else ""), ("@CERT@", crt), ("@KEY@", key)):
                conf = conf.replace(k, v)
            conf_path = os.path.join(self.dir, "nginx.conf")
            with open(conf_path, "w") as f:
                f.write(conf)
            argv = [cfg.nginx, "-p", self.dir, "-c", conf_path, "-e", os.path.join(self.dir, "error.log")]
        else:
            binary = {"vendored": cfg.vendored_server_bin, **cfg.api07_bins}.get(self.kind, cfg.server_bin)
            argv = [binary, "-f", cfg.big_file, "bench", str(self.port)]
            if self.kind in ("ours", "vendored") + API07_KINDS:
                argv += list(cfg.certs[self.cert])
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + argv, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        wait_port(self.port, self.proc, self.name)
        if self.kind in ("nginx", "nginx_plain"):
            end = time.monotonic() + 5
            while not children(self.proc.pid) and time.monotonic() < end:
                time.sleep(0.05)
            if not children(self.proc.pid):
                raise SystemExit("nginx started no worker")
        self.check()

    def check(self):
        """The two routes answer as expected (same bodies on every server)."""
        ctx = client_ctx() if self.tls else None
        s = connect(self.port, ctx)
        try:
            if http_get(s) != BODY64:
                raise SystemExit("%s: GET / is not the 64-byte body" % self.name)
            if http_get(s, b"/1m") != b"x" * BIG_LEN:
                raise SystemExit("%s: GET /1m is not the 1 MiB body" % self.name)
            if self.tls and (s.version() != "TLSv1.3"):
                raise SystemExit("%s: negotiated %s, not TLSv1.3" % (self.name, s.version()))
        finally:
            s.close()

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def cpu(self):
        return cpu_seconds(self.pids())

    def rss(self):
        return rss_kib(self.pids())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.kind.startswith("nginx") else signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.port = free_port()
        self.start()


def settle(server, quiet=0.3, limit=5.0):
    """Waits until the server used no CPU for `quiet` seconds (the last
    connections of a run are closed), at most `limit` seconds."""
    end = time.monotonic() + limit
    last = server.cpu()
    while time.monotonic() < end:
        time.sleep(quiet)
        now = server.cpu()
        if now == last:
            return
        last = now


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------
def pinned(argv):
    return ["taskset", "-c", CLIENT_CORE] + argv


def self_client(cfg, *args):
    return subprocess.Popen(pinned([sys.executable, os.path.abspath(__file__)] + [str(a) for a in args]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def expect(proc, what):
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise SystemExit("client %s ended early (status %s)" % (what, proc.returncode))
    return line.strip()


def tell(proc, word, what):
    """Sends a self-client a command line (GO, CLOSE); returns its answer."""
    proc.stdin.write(word + "\n")
    proc.stdin.flush()
    return expect(proc, what)


def server_cpu(server, fn):
    """fn() between two readings of the server's CPU time, each taken once
    the server is quiet (settle); returns (fn's result, the CPU time)."""
    settle(server)
    c0 = server.cpu()
    out = fn()
    settle(server)
    return out, server.cpu() - c0


def h2load(server, n):
    argv = pinned([server.cfg.h2load, "--h1", "-n", str(n), "-c", str(n), server.url()])
    r, cpu = server_cpu(server, lambda: run(argv))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", r.stdout)
    if not m:
        raise SystemExit("h2load output not understood:\n" + r.stdout + r.stderr)
    ok = int(m.group(4))
    if ok != n:
        print("  WARNING: h2load: %d of %d requests succeeded" % (ok, n))
    fin = re.search(r"finished in ([\d.]+)(ms|s)", r.stdout)
    secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1) if fin else float("nan")
    tls = "; ".join(l.strip() for l in r.stdout.splitlines()
                    if l.startswith(("TLS Protocol", "Cipher", "Server Temp Key", "Application protocol")))
    return {"ops": ok, **per_op(cpu, ok), "per_s": ok / secs if secs else 0, "tls": tls}


def python_handshakes(server, n, mode):
    p = self_client(server.cfg, "_resume", server.port, n, mode)
    expect(p, "resume")

    def go():
        res = json.loads(tell(p, "GO", "resume"))
        p.wait(60)
        return res
    res, cpu = server_cpu(server, go)
    done = res["done"]
    if res["errors"]:
        print("  WARNING: %s: %d client errors, e.g. %s" % (server.name, res["errors"], res["error"]))
    if mode == "resume" and res["reused"] != done:
        print("  WARNING: %s: only %d of %d connections resumed" % (server.name, res["reused"], done))
    return {"ops": done, "reused": res["reused"], **per_op(cpu, done), "per_s": done / res["seconds"]}


def rust_handshakes(server, n, groups=None, threads=8):
    """Full handshakes from examples/bench_handshakes.rs (vendored OpenSSL
    3.5, so it can offer X25519MLKEM768): `groups` None = the library's
    client list (X25519MLKEM768 and X25519 key shares)."""
    argv = [server.cfg.pq_client, "127.0.0.1:%d" % server.port, str(n), str(threads)]
    if groups:
        argv.append(groups)
    p = subprocess.Popen(pinned(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def go():
        out, _ = p.communicate("GO\n", timeout=600)
        return json.loads(out.strip().splitlines()[-1])
    settle(server)
    res, cpu = server_cpu(server, go)
    if res["errors"]:
        print("  WARNING: %s: %d client errors, e.g. %s" % (server.name, res["errors"], res["error"]))
    return {"ops": res["done"], **per_op(cpu, res["done"]), "per_s": res["done"] / res["seconds"],
            "tls": "%s, group %s (client: %s)" % (res["version"], res["group"], res["openssl"])}


def wrk(server, conns, secs, path="/"):
    argv = pinned([server.cfg.wrk, "-t1", "-c%d" % conns, "-d%ds" % secs, "--timeout", "10s",
                   server.url(path)])
    r, cpu = server_cpu(server, lambda: run(argv, timeout=secs + 60))
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", r.stdout)
    if not m:
        raise SystemExit("wrk output not understood:\n" + r.stdout + r.stderr)
    n = int(m.group(1))
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
    secs_run = float(m.group(2)) * unit
    notes = [l.strip() for l in r.stdout.splitlines() if "errors" in l or "Non-2xx" in l]
    if notes:
        print("  WARNING: wrk: " + "; ".join(notes))
    return {"ops": n, **per_op(cpu, n), "secs": secs_run, "per_s": n / secs_run, "notes": notes}


def idle_rss(server, n):
    """Fresh server; RSS before and after n idle keep-alive connections
    that made one request each."""
    server.restart()
    # warm-up: lazy initialisation (first connection, first request) is not
    # a per-connection cost
    ctx = client_ctx() if server.tls else None
    for _ in range(10):
        s = connect(server.port, ctx)
        http_get(s)
        s.close()
    p = self_client(server.cfg, "_idle", server.port, n, "tls" if server.tls else "plain")
    expect(p, "idle")
    settle(server)
    time.sleep(0.5)
    r0 = server.rss()
    res = json.loads(tell(p, "GO", "idle"))
    settle(server)
    time.sleep(0.5)
    r1 = server.rss()
    tell(p, "CLOSE", "idle")
    p.wait(60)
    return {"ops": res["open"], "rss0_kib": r0, "rss1_kib": r1, "kib": (r1 - r0) / res["open"]}


def stall(server, n, window):
    """n TCP connections that send nothing: the server's CPU % over
    `window` seconds, starting 1 s after the last one connected."""
    p = self_client(server.cfg, "_stall", server.port, n)
    expect(p, "stall")
    settle(server)
    c_before = server.cpu()
    res = json.loads(tell(p, "GO", "stall"))
    time.sleep(1.0)
    c0 = server.cpu()
    t0 = time.monotonic()
    time.sleep(window)
    c1 = server.cpu()
    dt = time.monotonic() - t0
    tell(p, "CLOSE", "stall")
    p.wait(60)
    return {"ops": res["open"], "cpu_s": float(c1 - c0), "pct": float(c1 - c0) / dt * 100,
            "pct_ns": (c1 - c0).ns / 1e9 / dt * 100,
            "accept_us": float(c0 - c_before) / res["open"] * 1e6}


# ---------------------------------------------------------------------------
# openssl speed (the crypto bound), on the server core
# ---------------------------------------------------------------------------
def openssl_speed(cfg):
    secs = "1" if cfg.quick else "3"
    out = {}
    r = run(["taskset", "-c", SERVER_CORE, "openssl", "speed", "-mr", "-seconds", secs,
             "ecdsap256", "ecdhx25519", "rsa2048"])
    for line in r.stdout.splitlines():
        f = line.split(":")
        if line.startswith("+F4:") and f[2] == "256":
            out["ecdsap256_sign_per_s"] = float(f[3])
        elif line.startswith("+F5:") and f[2] == "253":
            out["x25519_per_s"] = float(f[3])
        elif line.startswith("+F2:") and f[2] == "2048":
            out["rsa2048_sign_per_s"] = float(f[3])
    r = run(["taskset", "-c", SERVER_CORE, "openssl", "speed", "-mr", "-seconds", secs,
             "-bytes", "16384", "-evp", "aes-128-gcm"])
    for line in r.stdout.splitlines():
        if line.startswith("+F:"):
            out["aes128gcm_16k_bytes_per_s"] = float(line.split(":")[3])
    need = ("ecdsap256_sign_per_s", "x25519_per_s", "rsa2048_sign_per_s", "aes128gcm_16k_bytes_per_s")
    if not all(k in out for k in need):
        raise SystemExit("openssl speed output not understood:\n" + r.stdout + r.stderr)
    x = 1e6 / out["x25519_per_s"]
    out["bound_full_ecdsa_us"] = 1e6 / out["ecdsap256_sign_per_s"] + 2 * x
    out["bound_full_rsa_us"] = 1e6 / out["rsa2048_sign_per_s"] + 2 * x
    out["bound_resumed_us"] = 2 * x
    out["bound_ms_per_mib"] = BIG_LEN / out["aes128gcm_16k_bytes_per_s"] * 1e3
    return out


# ---------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------
def gen_certs(cfg):
    d = os.path.join(cfg.work, "certs")
    os.makedirs(d, exist_ok=True)
    certs = {}
    for name, newkey in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                         ("rsa", ["-newkey", "rsa:2048"])):
        key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
        r = run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", crt,
                 "-days", "2", "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        if r.returncode:
            raise SystemExit("openssl req failed:\n" + r.stderr)
        certs[name] = (key, crt)
    return certs


def med(xs, key):
    return statistics.median(x[key] for x in xs)


def stripped_size(path):
    """Size of `path` after `strip --strip-debug` (what make install leaves)."""
    if not path or not os.path.exists(path):
        return None
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".bench-stripped")
    shutil.copyfile(path, tmp)
    try:
        run(["strip", "--strip-debug", tmp])
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


def system_ssl_size():
    total = 0
    for lib in ("libssl.so.3", "libcrypto.so.3"):
        for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
            p = os.path.join(d, lib)
            if os.path.exists(p):
                total += os.path.getsize(os.path.realpath(p))
                break
    return total



def warm_up(h2load_bin, servers):
    """Page cache and lazily initialised code paths, before measuring."""
    for s in servers:
        run(pinned([h2load_bin, "--h1", "-n", "50", "-c", "10", s.url()]))

class Bench:
    def __init__(self, cfg):
        self.cfg = cfg
        self.sizes = {}
        self.res = {}     # figure -> server kind -> [rep dicts]
        self.load = {}    # figure -> loadavg before
        self.servers = []

    def server(self, kind, cert=None):
        s = Server(kind, self.cfg, cert)
        self.servers.append(s)
        return s

    def figure(self, fig, servers, fn):
        if self.cfg.only and fig not in self.cfg.only:
            return
        self.load[fig] = loadavg()
        print("== %s (loadavg %s)" % (fig, self.load[fig]), flush=True)
        out = self.res.setdefault(fig, {})
        for rep in range(self.cfg.reps):
            for s in servers:
                r = fn(s)
                r["load"] = loadavg()
                out.setdefault(s.kind, []).append(r)
                print("  %-6s rep %d: %s" % (s.kind, rep + 1, short(r)), flush=True)

    def run(self):
        cfg = self.cfg
        q = cfg.quick
        n_hs = 200 if q else 2000
        n_py = 200 if q else 1000
        ka_secs = 2 if q else 8
        bulk_secs = 2 if q else 5
        n_idle = 300 if q else 2000
        n_stall = 1000
        stall_secs = 2 if q else 5
        self.params = dict(n_hs=n_hs, n_py=n_py, ka_secs=ka_secs, bulk_secs=bulk_secs,
                           n_idle=n_idle, n_stall=n_stall, stall_secs=stall_secs, reps=cfg.reps)

        if cfg.so:
            self.sizes = {"so": stripped_size(cfg.so), "so_vendored": stripped_size(cfg.so_vendored),
                          "system_ssl": system_ssl_size()}
            print("== sizes " + json.dumps(self.sizes), flush=True)

        print("== openssl speed on core %s" % SERVER_CORE, flush=True)
        self.speed = openssl_speed(cfg)
        print("  " + json.dumps({k: round(v, 2) for k, v in self.speed.items()}), flush=True)

        ours, vend, ngx, tls_all = self.tls_servers("ecdsa")
        plain = self.server("plain")

        self.figure("full_ecdsa", tls_all, lambda s: h2load(s, n_hs))
        if vend and cfg.pq_client:
            self.pq_figures("ecdsa", vend, n_hs)
        self.figure("resumed", tls_all, lambda s: python_handshakes(s, n_py, "resume"))
        self.figure("full_python", tls_all, lambda s: python_handshakes(s, n_py, "full"))
        with_plain = [x for x in (ours, vend, ngx, plain) if x]
        self.figure("keepalive", with_plain, lambda s: wrk(s, 50, ka_secs))
        self.figure("bulk", with_plain, lambda s: wrk(s, 4, bulk_secs, "/1m"))
        # the same file for all three: facil.io's http_sendfile (over TLS:
        # pread + the write hook; plaintext: sendfile(2)), nginx's /1m
        self.figure("bulk_file", with_plain,
                    lambda s: wrk(s, 4, bulk_secs, "/1m" if s.kind == "nginx" else "/1m-file"))
        self.figure("stall", tls_all, lambda s: stall(s, n_stall, stall_secs))
        ngx_plain = self.server("nginx_plain") if not cfg.only or "idle_rss" in cfg.only else None
        self.figure("idle_rss", [x for x in (ours, vend, ngx, plain, ngx_plain) if x], lambda s: idle_rss(s, n_idle))
        for s in (ours, vend, ngx, plain, ngx_plain):
            if s:
                s.stop()

        if not cfg.only or "full_rsa" in cfg.only:
            _, rvend, _, rsa = self.tls_servers("rsa")
            self.figure("full_rsa", rsa, lambda s: h2load(s, n_hs))
            if rvend and cfg.pq_client:
                self.pq_figures("rsa", rvend, n_hs)
            for s in rsa:
                s.stop()

        names_figs = ("names_hs", "names_watch", "names_reload")
        if not cfg.only or any(f in cfg.only for f in names_figs):
            self.run_names()

    def run_api07(self):
        """The release-build rows: the same figures against fio07_server with
        our libfio_tls07.a and with facil.io 0.7.6's own backend, ECDSA
        certificate, in this run."""
        cfg = self.cfg
        q = cfg.quick
        n_hs, ka_secs, bulk_secs = (200, 2, 2) if q else (2000, 8, 5)
        n_idle, stall_secs = (300, 2) if q else (2000, 5)
        self.params07 = dict(n_hs=n_hs, ka_secs=ka_secs, bulk_secs=bulk_secs, n_idle=n_idle,
                             n_stall=1000, stall_secs=stall_secs)
        servers = [self.server(k, "ecdsa") for k in API07_KINDS if k in cfg.api07_bins]
        warm_up(cfg.h2load, servers)
        self.figure("full07", servers, lambda s: h2load(s, n_hs))
        self.figure("keepalive07", servers, lambda s: wrk(s, 50, ka_secs))
        self.figure("bulk07", servers, lambda s: wrk(s, 4, bulk_secs, "/1m"))
        self.figure("stall07", servers, lambda s: stall(s, 1000, stall_secs))
        self.figure("idle_rss07", servers, lambda s: idle_rss(s, n_idle))
        for s in servers:
            s.stop()

    def tls_servers(self, cert):
        """Ours, the vendored build (when there is one) and nginx, serving
        the `cert` kind of certificate, warmed up (page cache, lazily
        initialised code paths): (ours, vendored or None, nginx, all)."""
        ours = self.server("ours", cert)
        ngx = self.server("nginx", cert)
        vend = self.server("vendored", cert) if self.cfg.vendored_server_bin else None
        servers = [x for x in (ours, vend, ngx) if x]
        warm_up(self.cfg.h2load, servers)
        return ours, vend, ngx, servers

    def pq_figures(self, kind, server, n):
        """The same Rust client (OpenSSL 3.5) against the vendored server:
        ML-KEM hybrid, then X25519 only (the cost of ML-KEM)."""
        self.figure(f"pq_{kind}", [server], lambda s: rust_handshakes(s, n))
        self.figure(f"pq_{kind}_x25519", [server], lambda s: rust_handshakes(s, n, "X25519"))

    def run_names(self):
        """Issue 11: 1 vs 10 000 names, watching 10 000 pairs, a reload
        under load."""
        cfg, q = self.cfg, self.cfg.quick
        n_hs = 200 if q else 2000
        window = 12 if q else 30
        self.params.update(names=NAMES, names_n_hs=n_hs, names_window=window, names_renewed=100,
                           names_reload_secs=3 if q else 6)
        cfg.names = {1: names_dir(cfg, 1), NAMES: names_dir(cfg, NAMES)}
        one = NamesServer(cfg, 1, 0)
        many = NamesServer(cfg, NAMES, 0)
        self.servers += [one, many]
        for s in (one, many):
            h2load_sni(s, 50, conns=10)
        self.figure("names_hs", [one, many], lambda s: h2load_sni(s, n_hs))
        watched = NamesServer(cfg, NAMES, 10)
        self.servers.append(watched)
        self.figure("names_watch", [watched], lambda s: watch_cpu(s, many, window))
        one.stop()
        many.stop()
        watched.stop()
        fast = NamesServer(cfg, NAMES, 1)
        self.servers.append(fast)
        self.figure("names_reload", [fast],
                    lambda s: reload_delay(s, self.params["names_reload_secs"], 20, 100))
        fast.stop()

    def stop_all(self):
        for s in self.servers:
            try:
                s.stop()
            except Exception:
                pass

# ---------------------------------------------------------------------------
# many names: SNI lookup, watching, reload (issue 11)
# ---------------------------------------------------------------------------
NAMES = 10_000


def names_dir(cfg, count):
    """count pairs n<i>.key / n<i>.crt (symlinks to one *.scale.test pair,
    as certbot's live/ links are) plus a second pair for renewals."""
    d = os.path.join(cfg.work, "names-%d" % count)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    pairs = {}
    for tag in ("wild", "renewed"):
        key, crt = os.path.join(d, tag + ".key"), os.path.join(d, tag + ".crt")
        r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=*.scale.test",
                 "-addext", "subjectAltName=DNS:*.scale.test"])
        if r.returncode:
            raise SystemExit("openssl req failed:\n" + r.stderr)
        pairs[tag] = (key, crt)
    for i in range(count):
        os.symlink(pairs["wild"][0], os.path.join(d, "n%d.key" % i))
        os.symlink(pairs["wild"][1], os.path.join(d, "n%d.crt" % i))
    return d, pairs


class NamesServer(Server):
    """fio_server's mode scale: `count` names from names_dir, one facil.io
    thread, FIO_TLS_RELOAD_SECONDS = reload."""

    def __init__(self, cfg, count, reload):
        self.count, self.reload = count, reload
        self.names, self.pairs = cfg.names[count]
        Server.__init__(self, "names%d-reload%d" % (count, reload), cfg)
        self.tls = True

    def start(self):
        self.tls = True
        log = open(os.path.join(self.dir, "server.log"), "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIO_TLS_")}
        env["FIO_TLS_RELOAD_SECONDS"] = str(self.reload)
        argv = [self.cfg.server_bin, "scale", str(self.port), self.names, str(self.count)]
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + argv, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=env)
        wait_port(self.port, self.proc, self.name, timeout=60)

    def check(self):
        pass

    def url(self, path="/", host="nobody.example"):
        return "https://%s:%d%s" % (host, self.port, path)

    def relink(self, first, count, tag):
        """Points names first..first+count-1 at pair `tag` (new links renamed
        over the old ones, certificate then key, as certbot does)."""
        key, crt = self.pairs[tag]
        for i in range(first, first + count):
            for ext, target in (("crt", crt), ("key", key)):
                link = os.path.join(self.names, "n%d.%s" % (i, ext))
                os.symlink(target, link + ".new")
                os.rename(link + ".new", link)


def h2load_sni(server, n, host="nobody.example", conns=None):
    """h2load --h1, one new connection per request, SNI `host` (an unknown
    name unless it is one of the server's)."""
    argv = pinned([server.cfg.h2load, "--h1", "-n", str(n), "-c", str(conns or n),
                   "--connect-to=127.0.0.1:%d" % server.port, "https://%s:%d/" % (host, server.port)])
    r, cpu = server_cpu(server, lambda: run(argv))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", r.stdout)
    if not m:
        raise SystemExit("h2load output not understood:\n" + r.stdout + r.stderr)
    ok = int(m.group(4))
    return {"ops": ok, **per_op(cpu, ok)}


def watch_cpu(server, idle, window):
    """Server CPU spent watching: the server's CPU over `window` seconds
    minus that of `idle` (the same server, watching off) over the same
    window, in % of one core (scheduler ns: passes are milliseconds)."""
    settle(server)
    settle(idle)
    a, b = server.cpu(), idle.cpu()
    time.sleep(window)
    da, db = server.cpu() - a, idle.cpu() - b
    ns = max(da.ns - db.ns, 0)
    return {"pct_ns": ns / 1e9 / window * 100, "ms_per_pass": ns / 1e6 / max(window / server.reload, 1)}


def reload_delay(server, secs, batch, names):
    """The longest connect-to-first-byte time of h2load over `secs` seconds
    of back-to-back batches (`-n batch -c batch`: one new connection per
    request, SNI n9999, a name not renewed) while names n0..n<names-1> are
    renewed 0.5 s in; the same without a renewal as the reference.
    `renewed_in_run`: reload lines logged while the batches ran."""
    out = {}
    log = os.path.join(server.dir, "server.log")
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def reloads():
        with open(log, errors="replace") as f:
            return sum(1 for l in f if "reloaded certificate file" in l)
    argv = pinned([server.cfg.h2load, "--h1", "-n", str(batch), "-c", str(batch),
                   "--connect-to=127.0.0.1:%d" % server.port, "https://n9999.scale.test:%d/" % server.port])
    for label, renew in (("quiet", False), ("reload", True)):
        before = reloads()
        worst, ok, start, renewed = 0.0, 0, time.monotonic(), False
        while time.monotonic() - start < secs:
            if renew and not renewed and time.monotonic() - start >= 0.5:
                server.renewed = not getattr(server, "renewed", False)
                server.relink(0, names, "renewed" if server.renewed else "wild")
                renewed = True
            r = run(argv)
            m = re.search(r"time to 1st byte:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", r.stdout)
            if m:
                worst = max(worst, float(m.group(3)) * unit[m.group(4)])
            k = re.search(r"(\d+) succeeded", r.stdout)
            ok += int(k.group(1)) if k else 0
        out[label + "_max_ms"] = worst
        out[label + "_ok"] = ok
        if renew:
            out["renewed_in_run"] = reloads() - before
    out["ops"] = out["reload_ok"]
    return out


def short(r):
    keys = ("ops", "us", "ns_us", "sys_share", "per_s", "kib", "pct", "pct_ns", "reused", "cpu_s", "accept_us",
            "ms_per_pass", "quiet_max_ms", "reload_max_ms", "renewed_in_run")
    return ", ".join("%s=%s" % (k, fmt(r[k])) for k in keys if k in r)


def fmt(v):
    if isinstance(v, float):
        if v != v:
            return "nan"
        return "%.3g" % v if abs(v) < 100 else "%.0f" % v
    return str(v)


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def versions(cfg):
    def first(argv):
        try:
            r = run(argv, timeout=30)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as e:
            return "? (%s)" % e
    return {
        "nginx": first([cfg.nginx, "-v"]),
        "h2load": first([cfg.h2load, "--version"]),
        "wrk": first([cfg.wrk, "-v"]).split("Copyright")[0].strip(),
        "openssl": first(["openssl", "version"]),
        "python ssl": ssl.OPENSSL_VERSION,
        "kernel": os.uname().release,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": str(os.cpu_count()),
    }


def report07(b):
    """The release-build rows (issue 14): (text table, markdown section)."""
    R, P = b.res, getattr(b, "params07", None)
    if not P:
        return "", ""

    def m(fig, kind, key):
        try:
            return med(R[fig][kind], key)
        except KeyError:
            return None

    def cell(v, nd):
        return "—" if v is None else "%.*f" % (nd, v)

    rows = (("full07", "us", 0, "server CPU µs per full TLS 1.3 handshake, ECDSA P-256 "
             "(`h2load --h1 -n %d -c %d`)" % (P["n_hs"], P["n_hs"])),
            ("keepalive07", "us", 1, "server CPU µs per keep-alive request (`wrk -t1 -c50 -d%ds`, "
             "64-byte body)" % P["ka_secs"]),
            ("bulk07", "us", 0, "server CPU µs per 1 MiB response (`wrk -t1 -c4 -d%ds` GET /1m, "
             "http_send_body from memory)" % P["bulk_secs"]),
            ("idle_rss07", "kib", 1, "idle RSS KiB per connection (%d connections, one GET each, "
             "kept open)" % P["n_idle"]),
            ("stall07", "pct", 2, "server CPU %% of a core while %d TCP connections stall their "
             "handshake (%d s window)" % (P["n_stall"], P["stall_secs"])))
    out = ["| figure (facil.io 0.7.6, release API) | ours: libfio_tls07.a | facil.io 0.7.6 own "
           "OpenSSL backend | ours / upstream |", "|---|---|---|---|"]
    for fig, key, nd, label in rows:
        if fig not in R:
            continue
        a, u = m(fig, "ours07", key), m(fig, "upstream07", key)
        ratio = "—" if a is None or not u else "%.2f" % (a / u)
        out.append("| %s | %s | %s | %s |" % (label, cell(a, nd), cell(u, nd), ratio))
    table = "\n".join(out) + "\n"
    reps = "".join("- %s / %s: %s\n" % (fig, kind, " · ".join(
        "[" + short(r) + "; load " + r["load"] + "]" for r in R[fig][kind]))
        for fig, _, _, _ in rows if fig in R for kind in R[fig])
    md = ("\n## facil.io 0.7.6 release API (issue 14)\n\n"
          "fio07_server mode bench (c_tests/programs/fio07_server.c, facil.io 0.7.6 static) with our "
          "release build and with facil.io's own backend (build-openssl, Debian's OpenSSL), same "
          "certificate and client, same run (%s%s); median of %d repetition(s).\n\n"
          % (time.strftime("%Y-%m-%d %H:%M:%S %Z"), ", **BENCH_QUICK smoke run**" if b.cfg.quick else "",
             b.cfg.reps) + table + "\nEvery repetition:\n\n" + reps)
    return table, md


def report(b):
    cfg, R, P, S = b.cfg, b.res, b.params, b.speed

    def m(fig, kind, key):
        try:
            return med(R[fig][kind], key)
        except KeyError:
            return None

    def f1(v, nd=1):
        return "—" if v is None else ("%.*f" % (nd, v))

    def ratio(a, c):
        return "—" if a is None or not c else "%.2f" % (a / c)

    rows = []
    for fig, label, bound in (
        ("full_ecdsa", "server CPU µs per full TLS 1.3 handshake, ECDSA P-256 cert "
         "(`h2load --h1 -n %d -c %d`: one new, non-resumed connection per request)" % (P["n_hs"], P["n_hs"]),
         S["bound_full_ecdsa_us"]),
        ("full_rsa", "same, RSA-2048 cert", S["bound_full_rsa_us"]),
        ("resumed", "server CPU µs per resumed TLS 1.3 handshake (session ticket, psk_dhe_ke; Python `ssl` "
         "client reusing each connection's session, %d connections, one GET each)" % P["n_py"],
         S["bound_resumed_us"]),
        ("full_python", "reference for the row above: full handshake (ECDSA) with the same Python client, "
         "no session", S["bound_full_ecdsa_us"]),
    ):
        if fig not in R:
            continue
        a, n, v = m(fig, "ours", "us"), m(fig, "nginx", "us"), m(fig, "vendored", "us")
        rows.append((label + " — crypto bound %.0f µs" % bound, f1(a, 0), f1(v, 0), f1(n, 0), "n/a",
                     ratio(a, n), ratio(v, n)))
    for fig, ref, label in (
        ("pq_ecdsa", "pq_ecdsa_x25519", "server CPU µs per full TLS 1.3 handshake with **X25519MLKEM768**, ECDSA "
         "cert (`examples/bench_handshakes.rs` on OpenSSL 3.5, %d connections, 8 threads, one GET each)" % P["n_hs"]),
        ("pq_ecdsa_x25519", None, "same client, X25519 only (ML-KEM's cost = the row above − this one)"),
        ("pq_rsa", "pq_rsa_x25519", "same as the X25519MLKEM768 row, RSA-2048 cert"),
        ("pq_rsa_x25519", None, "same client, RSA-2048 cert, X25519 only"),
    ):
        if fig not in R:
            continue
        v = m(fig, "vendored", "us")
        r = m(ref, "vendored", "us") if ref else None
        rows.append((label, "n/a (OpenSSL 3.0: no ML-KEM)" if ref else "—", f1(v, 0), "n/a", "n/a", "—",
                     "%s× X25519, same client" % ratio(v, r) if r else "—"))
    if "keepalive" in R:
        cells = []
        for k in ("ours", "vendored", "nginx", "plain"):
            cells.append("%s req/s, %s µs/req" % (f1(m("keepalive", k, "per_s"), 0), f1(m("keepalive", k, "us"), 1)))
        a, n, v = m("keepalive", "ours", "us"), m("keepalive", "nginx", "us"), m("keepalive", "vendored", "us")
        kp = m("keepalive", "plain", "us")
        rows.append(("keep-alive: req/s and server CPU µs per request, 64-byte body (`wrk -t1 -c50 -d%ds`)"
                     % P["ka_secs"], *cells, "%s (CPU/req); %s× plaintext" % (ratio(a, n), ratio(a, kp)),
                     "%s (CPU/req); %s× plaintext" % (ratio(v, n), ratio(v, kp))))
    if "bulk" in R:
        cells = []
        for k in ("ours", "vendored", "nginx", "plain"):
            per_s = m("bulk", k, "per_s")  # 1 MiB responses per second = MiB/s
            ms = m("bulk", k, "us")
            cells.append("%s MiB/s, %s ms/MiB" % (f1(per_s, 0), "—" if ms is None else "%.2f" % (ms / 1000)))
        a, n, v = m("bulk", "ours", "us"), m("bulk", "nginx", "us"), m("bulk", "vendored", "us")
        rows.append(("bulk: MiB/s and server CPU ms per MiB, 1 MiB responses over 4 connections "
                     "(`wrk -t1 -c4 -d%ds`, GET /1m: facil.io sends a 1 MiB body from memory with "
                     "`http_send_body`, nginx the same bytes as a static file) — crypto bound %.2f ms/MiB "
                     "(AES-128-GCM)" % (P["bulk_secs"], S["bound_ms_per_mib"]), *cells, ratio(a, n), ratio(v, n)))
    if "bulk_file" in R:
        cells = []
        stalled = {}
        for k in ("ours", "vendored", "nginx", "plain"):
            reps = R["bulk_file"].get(k, [])
            # 4 connections: fewer than 3 responses each is a stall, not a rate
            stalled[k] = bool(reps) and statistics.median(x["ops"] for x in reps) < 12
            if stalled[k]:
                cells.append("**stalls**: %d responses in %d s (4 connections)" %
                             (statistics.median(x["ops"] for x in reps), P["bulk_secs"]))
                continue
            per_s, ms = m("bulk_file", k, "per_s"), m("bulk_file", k, "us")
            cells.append("%s MiB/s, %s ms/MiB" % (f1(per_s, 0), "—" if ms is None else "%.2f" % (ms / 1000)))
        a, n, v = m("bulk_file", "ours", "us"), m("bulk_file", "nginx", "us"), m("bulk_file", "vendored", "us")
        rows.append(("reference: bulk from the same 1 MiB file (facil.io `http_sendfile`, GET /1m-file: over TLS "
                     "pread + write hook, plaintext sendfile(2); nginx GET /1m), `wrk -t1 -c4 -d%ds`" % P["bulk_secs"],
                     *cells, "—" if stalled.get("ours") or stalled.get("nginx") else ratio(a, n),
                     "—" if stalled.get("vendored") or stalled.get("nginx") else ratio(v, n)))
    if "idle_rss" in R:
        cells = [f1(m("idle_rss", k, "kib"), 1) + " KiB" for k in ("ours", "vendored", "nginx", "plain")]
        rows.append(("RSS growth per idle established connection (%d idle, one GET each; server RSS delta / count)"
                     % P["n_idle"], *cells, ratio(m("idle_rss", "ours", "kib"), m("idle_rss", "nginx", "kib")),
                     ratio(m("idle_rss", "vendored", "kib"), m("idle_rss", "nginx", "kib"))))
    if "stall" in R:
        a, n, v = m("stall", "ours", "pct"), m("stall", "nginx", "pct"), m("stall", "vendored", "pct")
        rows.append(("server CPU %% while %d handshakes stall (TCP connected, nothing sent; %d s window from 1 s "
                     "after the last connect)" % (P["n_stall"], P["stall_secs"]),
                     f1(a, 2) + " %", f1(v, 2) + " %", f1(n, 2) + " %", "n/a", ratio(a, n) if n else "—",
                     ratio(v, n) if n else "—"))
    if b.sizes:
        sz = b.sizes
        rows.append(("installed `libfio_tls.so`, stripped (`make install`); the system build also loads the "
                     "system's libssl + libcrypto (shared with other programs)",
                     "%.2f MB (+ %.2f MB libssl/libcrypto)" % (sz["so"] / 1e6, sz["system_ssl"] / 1e6),
                     "%.2f MB" % (sz["so_vendored"] / 1e6) if sz.get("so_vendored") else "—", "n/a", "n/a", "—",
                     "—"))

    if "names_hs" in R:
        h1, hn = m("names_hs", "names1-reload0", "us"), m("names_hs", "names%d-reload0" % NAMES, "us")
        rows.append(("server CPU µs per full TLS 1.3 handshake with an unknown SNI, 1 name vs %d names "
                     "(`h2load --h1 -n %d`, mode scale, watching off; columns: 1 name | %d names)"
                     % (NAMES, P["names_n_hs"], NAMES), f1(h1, 0), f1(hn, 0), "n/a", "n/a",
                     "%s (%d/1 names)" % (ratio(hn, h1), NAMES), "—"))
    if "names_watch" in R:
        w = "names%d-reload10" % NAMES
        rows.append(("server CPU %% of one core spent watching %d key/certificate pairs (default 10 s interval, "
                     "%d s window, minus the same server with watching off; scheduler ns)" % (NAMES, P["names_window"]),
                     "%s %% (%s ms per pass)" % (f1(m("names_watch", w, "pct_ns"), 3),
                                                f1(m("names_watch", w, "ms_per_pass"), 1)), "n/a", "n/a", "n/a", "—", "—"))
    if "names_reload" in R:
        w = "names%d-reload1" % NAMES
        rows.append(("longest connect-to-first-byte of h2load (%d s of back-to-back `h2load --h1 -n 20 -c 20`: "
                     "a new connection per request, SNI of a name not renewed) while %d of %d names are renewed "
                     "(FIO_TLS_RELOAD_SECONDS=1), vs the same without renewal"
                     % (P["names_reload_secs"], P["names_renewed"], NAMES),
                     "%s ms (quiet: %s ms; %s reloads logged during the run)" % (
                         f1(m("names_reload", w, "reload_max_ms"), 1), f1(m("names_reload", w, "quiet_max_ms"), 1),
                         f1(m("names_reload", w, "renewed_in_run"), 0)), "n/a", "n/a", "n/a", "—", "—"))

    head = ("| figure | facil.io + libfio_tls (system OpenSSL) | facil.io + libfio_tls (vendored OpenSSL 3.5) | nginx "
            "(system OpenSSL) | facil.io plaintext | ratio us/nginx | ratio vendored/nginx |\n"
            "|---|---|---|---|---|---|---|\n")
    table = head + "".join("| " + " | ".join(r) + " |\n" for r in rows)

    crypto = (
        "Crypto bound (`openssl speed`, same run, core %s, per CPU second): ECDSA P-256 sign %.0f/s (%.1f µs), "
        "X25519 %.0f/s (%.1f µs), RSA-2048 sign %.0f/s (%.1f µs), AES-128-GCM at 16 KiB %.0f MB/s "
        "(%.3f ms per MiB). Full handshake ≥ sign + 2× X25519 = %.0f µs (ECDSA), %.0f µs (RSA); resumed "
        "(psk_dhe_ke) ≥ 2× X25519 = %.0f µs.\n" % (
            SERVER_CORE, S["ecdsap256_sign_per_s"], 1e6 / S["ecdsap256_sign_per_s"],
            S["x25519_per_s"], 1e6 / S["x25519_per_s"], S["rsa2048_sign_per_s"], 1e6 / S["rsa2048_sign_per_s"],
            S["aes128gcm_16k_bytes_per_s"] / 1e6, S["bound_ms_per_mib"], S["bound_full_ecdsa_us"],
            S["bound_full_rsa_us"], S["bound_resumed_us"]))

    split = ""
    ia, inn, ip, inp = (m("idle_rss", k, "kib") for k in ("ours", "nginx", "plain", "nginx_plain"))
    if None not in (ia, inn, ip, inp):
        split = ("Idle connection memory split (same figure, medians): facil.io plaintext %.1f KiB + TLS %.1f KiB "
                 "(ours − plaintext); nginx plaintext %.1f KiB + TLS %.1f KiB (nginx − nginx plaintext, same nginx "
                 "config without `ssl`).\n" % (ip, ia - ip, inp, inn - inp))

    # targets (issue 6)
    t = []

    def target(name, val, limit, ok):
        t.append("| %s | %s | %s | %s |\n" % (name, val, limit, "met" if ok else "**missed**"))

    def have(*xs):
        return all(x is not None for x in xs)

    fe, fn = m("full_ecdsa", "ours", "us"), m("full_ecdsa", "nginx", "us")
    if have(fe, fn):
        target("full handshake CPU, ECDSA", "%.2f× nginx" % (fe / fn), "≤ 0.9× nginx", fe <= 0.9 * fn)
    re_, rn = m("full_rsa", "ours", "us"), m("full_rsa", "nginx", "us")
    if have(re_, rn):
        target("full handshake CPU, RSA", "%.2f× nginx" % (re_ / rn), "≤ 0.9× nginx", re_ <= 0.9 * rn)
    fv, rv = m("full_ecdsa", "vendored", "us"), m("full_rsa", "vendored", "us")
    if have(fv, fn):
        target("vendored build: full handshake CPU, ECDSA (issue 13)", "%.2f× nginx" % (fv / fn),
               "≤ 0.85× nginx (Debian's OpenSSL)", fv <= 0.85 * fn)
    if have(rv, rn):
        target("vendored build: full handshake CPU, RSA (issue 13)", "%.2f× nginx" % (rv / rn),
               "≤ 0.85× nginx (Debian's OpenSSL)", rv <= 0.85 * rn)
    ru, fp = m("resumed", "ours", "us"), m("full_python", "ours", "us")
    if have(ru, fe):
        target("resumed handshake CPU", "%.2f× our full (h2load)" % (ru / fe), "≤ 0.5× our full", ru <= 0.5 * fe)
    if have(ru, fp):
        target("resumed handshake CPU, same client", "%.2f× our full (Python)" % (ru / fp), "≤ 0.5× our full",
               ru <= 0.5 * fp)
    ka, kn, kp = m("keepalive", "ours", "us"), m("keepalive", "nginx", "us"), m("keepalive", "plain", "us")
    if have(ka, kn, kp):
        target("keep-alive CPU per request", "%.2f× plaintext, %.2f× nginx" % (ka / kp, ka / kn),
               "≤ 1.5× plaintext and < nginx", ka <= 1.5 * kp and ka < kn)
    ba, bn = m("bulk", "ours", "us"), m("bulk", "nginx", "us")
    if have(ba, bn):
        target("bulk CPU per MiB", "%.2f× nginx" % (ba / bn), "≤ 0.9× nginx", ba <= 0.9 * bn)
    ia, inn = m("idle_rss", "ours", "kib"), m("idle_rss", "nginx", "kib")
    if have(ia, inn):
        target("idle connection RSS", "%.2f× nginx" % (ia / inn) if inn > 0 else "%.1f KiB" % ia,
               "≤ 0.75× nginx", inn > 0 and ia <= 0.75 * inn)
    sa = m("stall", "ours", "pct")
    if have(sa):
        target("stalled-handshake CPU", "%.2f %%" % sa, "< 1 %", sa < 1.0)
    wa = m("names_watch", "names%d-reload10" % NAMES, "pct_ns")
    if have(wa):
        target("watching %d pairs (issue 11)" % NAMES, "%.3f %% of a core" % wa, "< 1 %", wa < 1.0)
    targets = "| target (issue 6, 13) | measured | limit | |\n|---|---|---|---|\n" + "".join(t)

    v = versions(cfg)
    load_lines = "".join("- %s: %s\n" % (k, b.load[k]) for k in b.load)
    detail = []
    for fig, per in R.items():
        for kind, reps in per.items():
            detail.append("- %s / %s: %s\n" % (fig, kind, " · ".join("[" + short(r) + "; load " + r["load"] + "]"
                                                                      for r in reps)))
    tls_info = ""
    for fig in ("full_ecdsa", "full_rsa", "pq_ecdsa", "pq_ecdsa_x25519", "pq_rsa", "pq_rsa_x25519"):
        for kind in ("ours", "vendored", "nginx"):
            try:
                tls_info += "- %s / %s: %s\n" % (fig, kind, R[fig][kind][0]["tls"])
            except (KeyError, IndexError):
                pass

    md = ("# libfio_tls benchmarks (issues 6 and 13)\n\n"
          "Generated by `make bench` (bench/bench.py) on %s%s. Median of %d repetition(s); servers pinned to core %s, "
          "clients to core %s; one worker process, one thread each. CPU = the server's utime+stime from "
          "/proc/<pid>/stat (nginx: master + worker) over the operations completed.\n\n"
          % (time.strftime("%Y-%m-%d %H:%M:%S %Z"), " (**BENCH_QUICK smoke run**)" if cfg.quick else "",
             cfg.reps, SERVER_CORE, CLIENT_CORE)
          + table + "\n" + crypto + ("\n" + split if split else "") + "\n## Targets\n\n" + targets
          + "\n## Load (1/5/15-min loadavg before each figure; other jobs share these 2 cores, so throughput "
            "figures are noisy, CPU per operation much less so)\n\n" + load_lines
          + "\n## Negotiated (h2load; pq_*: examples/bench_handshakes.rs)\n\n" + tls_info
          + "\n## Every repetition\n\n" + "".join(detail)
          + "\n## Versions\n\n" + "".join("- %s: %s\n" % kv for kv in v.items())
          + "\n## Notes\n\n"
            "- A handshake figure includes the TCP accept, the one HTTP request and the close of its connection; "
            "the resumed row also measures a full handshake with the same Python client (reference row) so that "
            "resumed/full compares like with like.\n"
            "- Resumption uses TLS 1.3 session tickets with (EC)DHE (psk_dhe_ke, what OpenSSL clients offer), so a "
            "resumed handshake still does one X25519 key pair and one shared secret on the server; each connection "
            "reuses the session (ticket) of the previous one, and every resumption is checked (`session_reused`).\n"
            "- MiB/s in the bulk row = 1 MiB responses completed per second; `ms/MiB` is server CPU per response.\n"
            "- RSS: VmRSS of the server (nginx: master + worker) after 10 warm-up connections, before and after the "
            "idle connections were opened; fresh server per repetition.\n")
    return table + "\n" + crypto + ("\n" + split if split else "") + "\n" + targets, md


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, args = sys.argv[1], sys.argv[2:]
        if cmd == "_resume":
            return client_resume(int(args[0]), int(args[1]), args[2])
        if cmd == "_idle":
            return client_idle(int(args[0]), int(args[1]), args[2] == "tls")
        if cmd == "_stall":
            return client_stall(int(args[0]), int(args[1]))
        raise SystemExit("unknown client " + cmd)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", required=True,
                    help="fio_server linked with libfio_tls.a (static); run in its mode `bench`")
    ap.add_argument("--vendored-server-bin", default=None,
                    help="the same fio_server linked with the vendored build's libfio_tls.a "
                         "(the vendored column)")
    ap.add_argument("--pq-client", default=None,
                    help="examples/bench_handshakes built with --features vendored (the X25519MLKEM768 rows)")
    ap.add_argument("--so", default=None, help="the system build's libfio_tls.so (size row)")
    ap.add_argument("--so-vendored", default=None, help="the vendored build's libfio_tls.so (size row)")
    ap.add_argument("--api07-server-bins", nargs=2, metavar=("OURS", "UPSTREAM"), default=None,
                    help="fio07_server linked with libfio_tls07.a and with facil.io 0.7.6's own "
                         "backend (the release-API rows; a missing file leaves its column out)")
    ap.add_argument("--api07-only", action="store_true",
                    help="only the release-API rows (make bench07)")
    ap.add_argument("--results", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--work", default="build/bench/run")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated figures (full_ecdsa,full_rsa,resumed,"
                    "full_python,pq_ecdsa,pq_ecdsa_x25519,pq_rsa,pq_rsa_x25519,keepalive,bulk,bulk_file,stall,"
                    "idle_rss,names_hs,names_watch,names_reload)")
    cfg = ap.parse_args()
    cfg.reps = cfg.reps or (1 if cfg.quick else 3)
    cfg.only = [x for x in cfg.only.split(",") if x]
    cfg.work = os.path.abspath(cfg.work)
    cfg.server_bin = os.path.abspath(cfg.server_bin)
    cfg.vendored_server_bin = cfg.vendored_server_bin and os.path.abspath(cfg.vendored_server_bin)
    cfg.pq_client = cfg.pq_client and os.path.abspath(cfg.pq_client)
    cfg.api07_bins = {k: os.path.abspath(v) for k, v in zip(API07_KINDS, cfg.api07_server_bins or ())
                      if os.path.exists(v)}
    for k, v in zip(API07_KINDS, cfg.api07_server_bins or ()):
        if k not in cfg.api07_bins:
            print("note: %s not built (%s): its release-API column is left out" % (v, k), flush=True)
    cfg.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cfg.h2load, cfg.wrk = shutil.which("h2load"), shutil.which("wrk")
    missing = [n for n, p in (("nginx", cfg.nginx if cfg.api07_only or os.path.exists(cfg.nginx) else None),
                              ("h2load", cfg.h2load),
                              ("wrk", cfg.wrk), ("taskset", shutil.which("taskset")),
                              ("openssl", shutil.which("openssl"))) if not p]
    if missing:
        raise SystemExit("missing tools: %s (apt-get install nginx nghttp2-client wrk util-linux openssl)"
                         % " ".join(missing))
    if os.cpu_count() < 2:
        raise SystemExit("needs 2 cores (server on core 0, client on core 1)")
    # every server and client inherits this; the idle figure holds 2000+
    # sockets on each side
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard) if hard != resource.RLIM_INFINITY else hard))
    except (ValueError, OSError):
        pass
    os.makedirs(cfg.work, exist_ok=True)
    cfg.certs = gen_certs(cfg)
    cfg.big_file = os.path.join(cfg.work, "1m")
    with open(cfg.big_file, "wb") as f:
        f.write(b"x" * BIG_LEN)

    t0 = time.monotonic()
    b = Bench(cfg)
    try:
        if not cfg.api07_only:
            b.run()
        if cfg.api07_bins:
            b.run_api07()
    finally:
        b.stop_all()
    summary, md = report(b) if not cfg.api07_only else ("", "# libfio_tls benchmarks\n")
    summary07, md07 = report07(b)
    summary, md = summary + ("\n" + summary07 if summary07 else ""), md + md07
    print()
    print(summary)
    with open(cfg.results, "w") as f:
        f.write(md)
    print("written to %s (%.0f s)" % (cfg.results, time.monotonic() - t0))


if __name__ == "__main__":
    main()
