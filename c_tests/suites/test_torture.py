"""The torture suite (issue 4: survive hostile and heavy traffic): one test
per item, against `fio_server torture` (c_tests/programs/fio_server.c;
facil.io 0.7.0.beta4 + libfio_tls, static link mode) driven by real peers:
Python's ssl over raw sockets (for partial and abusive behaviour), curl,
and valgrind for the leak check.

  1. no busy loop while handshakes wait (CPU from /proc over 10 s)
  2. handshake deadline (default 10 s and FIO_TLS_HANDSHAKE_TIMEOUT=3)
  3. abrupt peers at every stage (log lines, callbacks, fds, RSS)
  4. plaintext HTTP/1.1 to the TLS port (400 that says HTTPS, clean close)
  5. no stalls: 16 MiB POST, 64 MiB dynamic, 100 MiB static, 1 000
     pipelined requests in one write, a slow reader
  6. thread safety: threads=4 workers=2, concurrent checksummed clients and
     a websocket broadcast over TLS to hundreds of clients
  7. graceful close: close_notify from the server (Connection: close and
     SIGTERM), a client's close_notify, nothing written after a fatal alert
  8. memory: valgrind (0 bytes definitely lost in the library's frames) and
     RSS per idle established connection vs. plain HTTP

Each test prints its item's line, `ok - <n>. ...` or `FAIL - <n>. ...`, with
the measured figures (pytest -s or -rA shows them; `make torture` does).
`make check` runs the quick counts (~2 min, item 8's valgrind run is most
of it); `--torture-full` (`make torture`) the full ones, see COUNTS.

facil.io's fd race: with threads > 1, facil.io 0.7.0.beta4 can close a
healthy connection because the fd number it closes belonged to another
connection a moment earlier (its poller acting on that one's hang-up, or a
thread whose read found that one gone). The server diagnoses each such
close (an FD_RACE line naming the client's port, see fio_server.c); items 3
and 6 let a dropped connection pass only when such a line names it. Item 6
also lets a request body pass that facil.io handed over with a closed fd
(the server answers stored=-1). Every other dropped connection, empty body
or reset fails its item.
"""
import filecmp
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import threading
import time
import zlib

import pytest

from fiotest.torture import (HELLO, MiB, ClientError, RawTLS, TortureServer, attribute_drops,
                             client_hello, curl, failure_text, get, pattern, plain_connect, post,
                             run_pool, set_rst, tls_connect, with_port)

pytestmark = pytest.mark.facil

# counts per mode: (quick, full)
COUNTS = {
    "abrupt": (1000, 10000),
    "slow_reader_s": (4, 10),
    "http_clients": (100, 500),
    "ws_clients": (60, 250),
    "ws_msgs_each": (2, 2),
    "valgrind_conns": (1000, 10000),
    "idle_conns": (500, 2000),
}


class Torture:
    """What an item works with: the test's ctx, the counts, its servers."""

    def __init__(self, ctx, full):
        self.ctx = ctx
        self.full = full
        self.binary = ctx.binary("static", "fio_server")
        self.started = time.monotonic()

    def n(self, key):
        return COUNTS[key][1 if self.full else 0]

    def server(self, label, **kw):
        """A torture server, stopped at the test's end (log attached to a
        failure). Not yet ready: call wait_ready()."""
        self.ctx.serial += 1
        log = os.path.join(self.ctx.tmp, f"server-{self.ctx.serial:03d}-{label}.log")
        return TortureServer(self.binary, log, ctx=self.ctx, **kw)

    def report(self, n, text, ok, details=()):
        """Item n's line; its details (figures) are printed when it passed
        too, and are the failure's detail when it did not."""
        details = [d for d in details if d]
        if ok:
            for d in details:
                print(f"#   {d}", flush=True)
        self.ctx.check(f"{n}. {text}", ok, "\n".join(details))
        print(f"# item {n} took {time.monotonic() - self.started:.1f} s "
              f"({'full' if self.full else 'quick'} counts)", flush=True)


@pytest.fixture
def t(ctx, request):
    return Torture(ctx, request.config.getoption("--torture-full"))


def check_served(port):
    """A normal curl request: (ok, seconds, detail)."""
    t0 = time.monotonic()
    p = curl([f"https://127.0.0.1:{port}/"], timeout=15)
    dt = time.monotonic() - t0
    return p.returncode == 0 and p.stdout == HELLO, dt, \
        f"curl rc={p.returncode} out={p.stdout[:80]!r} err={p.stderr[:200]!r}"


# ---------------------------------------------------------------------------
# 1. no busy loop
# ---------------------------------------------------------------------------
def test_item1_no_busy_loop(t):
    srv = t.server("item1", threads=2, workers=2, env={"FIO_TLS_HANDSHAKE_TIMEOUT": "60"})
    socks = []
    try:
        srv.wait_ready()
        ok0, _, d0 = check_served(srv.port)
        hello = client_hello()
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), 10))
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", srv.port), 10)
            s.sendall(hello[:len(hello) // 2])
            socks.append(s)
        time.sleep(1.0)  # let the server take them all in
        fds_open = srv.fds()
        c0, t0 = srv.cpu(), time.monotonic()
        time.sleep(5)
        served, curl_s, detail = check_served(srv.port)
        time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
        c1, t1 = srv.cpu(), time.monotonic()
        pct = 100.0 * (c1 - c0) / (t1 - t0)
        # every waiting connection must still be open (deadline is 60 s)
        still = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1):
                    still += 1  # data is not a close
            except BlockingIOError:
                still += 1
            except OSError:
                pass
        ok = ok0 and served and pct < 2.0 and still == 400
        t.report(1, f"no busy loop: 400 waiting handshakes (200 silent, 200 half "
                    f"ClientHello of {len(hello)} bytes), server CPU {pct:.2f}% of "
                    f"one core over {t1 - t0:.1f} s (master + 2 workers, "
                    f"{c1 - c0:.2f} s CPU); curl served meanwhile in "
                    f"{curl_s * 1000:.0f} ms; {still}/400 still open; server fds "
                    f"{fds_open}", ok,
                 [] if ok else [f"first request: {d0}", f"mid request: {detail}"])
    finally:
        for s in socks:
            s.close()
        srv.stop()


# ---------------------------------------------------------------------------
# 2. handshake deadline
# ---------------------------------------------------------------------------
def wait_closed_silent(port, result, key, limit):
    s = socket.create_connection(("127.0.0.1", port), 10)
    t0 = time.monotonic()
    s.settimeout(limit)
    how = "?"
    try:
        d = s.recv(100)
        how = "EOF" if not d else f"data {d[:20]!r}"
    except socket.timeout:
        how = "still open"
    except OSError as e:
        how = f"{type(e).__name__}"
    result[key] = (time.monotonic() - t0, how)
    s.close()


def wait_closed_drip(port, result, key, limit):
    hello = client_hello()
    s = socket.create_connection(("127.0.0.1", port), 10)
    t0 = time.monotonic()
    i = 0
    how = "still open"
    sent = 0
    try:
        while time.monotonic() - t0 < limit and i < len(hello):
            try:
                s.send(hello[i:i + 1])
                sent += 1
            except OSError as e:
                how = type(e).__name__
                break
            i += 1
            s.settimeout(1.0)
            try:
                d = s.recv(100)
                how = "EOF" if not d else f"data {d[:20]!r}"
                break
            except socket.timeout:
                continue
            except OSError as e:
                how = type(e).__name__
                break
    finally:
        result[key] = (time.monotonic() - t0, f"{how} after {sent} bytes")
        s.close()


def test_item2_handshake_deadline(t):
    srv_def = t.server("item2-default", threads=2, workers=1)
    srv_3 = t.server("item2-timeout3", threads=2, workers=1,
                     env={"FIO_TLS_HANDSHAKE_TIMEOUT": "3"})
    srv_def.wait_ready()
    srv_3.wait_ready()
    base = {"def": srv_def.fds(), "3": srv_3.fds()}
    result = {}
    threads = []
    for key, srv, limit in (("def", srv_def, 30), ("3", srv_3, 20)):
        threads.append(threading.Thread(target=wait_closed_silent,
                                        args=(srv.port, result, key + "-silent", limit)))
        threads.append(threading.Thread(target=wait_closed_drip,
                                        args=(srv.port, result, key + "-drip", limit)))
    for th in threads:
        th.start()
    time.sleep(1.5)
    during = {"def": srv_def.fds(), "3": srv_3.fds()}
    for th in threads:
        th.join(40)
    after = {"def": srv_def.wait_fds(base["def"], 3), "3": srv_3.wait_fds(base["3"], 3)}
    served = check_served(srv_def.port)[0] and check_served(srv_3.port)[0]
    ok = served
    parts = []
    for key, deadline in (("def", 10), ("3", 3)):
        for kind in ("silent", "drip"):
            secs, how = result.get(f"{key}-{kind}", (None, "no result"))
            good = (secs is not None and deadline - 0.5 <= secs <= deadline + 3
                    and how.split()[0] in ("EOF", "ConnectionResetError"))
            ok &= good
            parts.append(f"{kind} {secs:.2f} s ({how})" if secs is not None
                         else f"{kind}: no result")
        ok &= after[key] <= base[key]
    srv_def.stop()
    srv_3.stop()
    t.report(2, f"handshake deadline: default 10 s: {parts[0]}, {parts[1]}; "
                f"FIO_TLS_HANDSHAKE_TIMEOUT=3: {parts[2]}, {parts[3]}; "
                f"server fds default {base['def']} -> {during['def']} -> "
                f"{after['def']}, timeout=3 {base['3']} -> {during['3']} -> "
                f"{after['3']} (baseline -> during -> after)", ok)


# ---------------------------------------------------------------------------
# 3. abrupt peers (the stages are also item 8's)
# ---------------------------------------------------------------------------
STAGES = ["connect", "mid_hello", "after_hello", "after_server_hello",
          "mid_request", "mid_response"]
HELLO_CACHE = {}


def abrupt(port, stage, rst, version):
    """One connection that dies (FIN, or RST when `rst`) at `stage`. Returns
    True when the connection sent a whole request (the server must count
    exactly one request for it). A failure names the connection's port
    (ClientError)."""
    if stage == "connect":
        s = socket.create_connection(("127.0.0.1", port), timeout=15)
        if rst:
            set_rst(s)
        s.close()
        return False
    if stage == "mid_hello":
        hello = HELLO_CACHE.get(version)
        if hello is None:
            hello = HELLO_CACHE[version] = client_hello(version)
        s = socket.create_connection(("127.0.0.1", port), timeout=15)
        try:
            with_port(s.getsockname()[1], s.sendall, hello[:len(hello) // 2])
            if rst:
                set_rst(s)
        finally:
            s.close()
        return False
    c = RawTLS(port, version)
    try:
        return with_port(c.port, abrupt_tls, c, stage, rst)
    finally:
        c.die(rst)


def abrupt_tls(c, stage, rst):
    if stage == "after_hello":
        try:
            c.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c.send_pending()
        return False
    c.handshake_until_server_flight()
    if stage == "after_server_hello":
        return False
    c.handshake()
    if stage == "mid_request":
        c.write(b"GET /dyn?n=1000 HTTP/1.1\r\nHost: loc")
        return False
    if stage == "mid_response":
        c.write(get("/dyn?n=1048576"))
        got = 0
        deadline = time.monotonic() + 15
        while got < 20000 and time.monotonic() < deadline:
            got += len(c.read_some())
        if got < 20000:
            raise RuntimeError(f"mid_response: only {got} bytes arrived")
        return True
    if stage == "full":
        c.write(get("/dyn?n=20000"))
        want = 20000
        got = 0
        deadline = time.monotonic() + 60
        while got < want and time.monotonic() < deadline:
            got += len(c.read_some())
        if got < want:
            raise RuntimeError(f"full: only {got} bytes arrived")
        if not rst:  # a polite client: close_notify first
            try:
                c.obj.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            c.send_pending()
        return True
    raise ValueError(stage)


def abrupt_job_factory(port, n, seed):
    rnd = random.Random(seed)
    plan = []
    for i in range(n):
        stage = STAGES[i % len(STAGES)]
        rst = (i // len(STAGES)) % 2 == 1
        version = "1.2" if rnd.random() < 0.3 else None
        plan.append((stage, rst, version))

    def job(i):
        stage, rst, version = plan[i]
        return abrupt(port, stage, rst, version)
    return plan, job


class Honest:
    """Well-behaved clients running next to the abusive ones: a fresh TLS
    connection per request (1.2 and 1.3), GET /dyn?n=20000 checked byte for
    byte. Hostile peers must not hurt them. `failed`: [(port, text)]."""

    def __init__(self, port, n_threads=4):
        self.port = port
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True)
                        for i in range(n_threads)]

    def request(self, version, want):
        c = tls_connect(self.port, timeout=15, version=version)
        try:
            with_port(c.port, c.request, get("/dyn?n=20000"))
            status, _, body = with_port(c.port, c.read_response)
        finally:
            c.close()
        if status != 200 or body != want:
            raise ClientError(c.port, RuntimeError(
                f"status {status}, {len(body)} bytes, not the pattern"))

    def loop(self, i):
        want = pattern(20000)
        k = 0
        while not self.stop_flag.is_set():
            k += 1
            version = "1.2" if (i + k) % 3 == 0 else "1.3"
            try:
                self.request(version, want)
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported
                with self.lock:
                    self.failed.append((getattr(e, "port", None),
                                        f"TLS {version}: {failure_text(e)}"))

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for th in self.threads:
            th.join(30)


def test_item3_abrupt_peers(t):
    n = t.n("abrupt")
    # TORTURE_ITEM3_THREADS: run the item with another thread count (default
    # 2: the read hook and the write hooks of one connection can then run
    # at once)
    srv = t.server("item3", threads=int(os.environ.get("TORTURE_ITEM3_THREADS", "2")),
                   workers=2)
    srv.wait_ready()
    # warm-up (allocator, lazy state): not in the counters, but its client
    # errors count
    _, warm_job = abrupt_job_factory(srv.port, 240, 1)
    _, werr, _ = run_pool(240, 12, warm_job, 60)
    time.sleep(2)
    fds0, rss0 = srv.fds(), srv.rss_kb()
    st0 = srv.stats()
    lines0 = len(srv.log_lines())
    plan, job = abrupt_job_factory(srv.port, n, 2)
    t0 = time.monotonic()
    with Honest(srv.port) as honest:
        results, errors, timed_out = run_pool(n, 16, job, 600)
    dt = time.monotonic() - t0
    time.sleep(1)
    fds1 = srv.wait_fds(fds0, 15)
    time.sleep(1)
    rss1 = srv.rss_kb()
    st1 = srv.stats()
    log = srv.log_lines()
    crashes = srv.crash_lines()
    alive = srv.healthy()
    races = srv.race_ports()
    client_errs = [(port, e) for _, port, e in werr + errors] + honest.failed
    # a dropped connection passes only when the server diagnosed it as
    # facil.io's fd race (an FD_RACE line names its port)
    diagnosed, bad = attribute_drops(client_errs, races)
    whole_requests = sum(1 for r in results if r)
    n_mid_req = sum(1 for p in plan if p[0] == "mid_request")
    req_delta = st1["requests"] - st0["requests"] - 1  # our /stats
    cb_delta = st1["callbacks"] - st0["callbacks"] - 1
    # a diagnosed dropped connection may or may not have reached the server
    req_lo = whole_requests + honest.ok
    req_hi = req_lo + len(diagnosed)
    cb_lo, cb_hi = req_lo, req_hi + n_mid_req
    log_delta = len(log) - lines0
    new_log = log[lines0:]
    ebadf = sum("Bad file descriptor" in l for l in new_log)
    record_err = sum(bool(re.search(r"handshake failed.*(bad record|decryption failed|"
                                    r"wrong version|packet length|unexpected message)", l))
                     for l in new_log)
    rss_slack = 4 * 1024
    served, _, sdetail = check_served(srv.port)
    ok = (not bad and not timed_out and served and alive and not crashes
          and req_lo <= req_delta <= req_hi
          and cb_lo <= cb_delta <= cb_hi
          and log_delta <= n and ebadf == 0 and record_err == 0
          and fds1 <= fds0 and rss1 <= rss0 + rss_slack)
    details = []
    if bad:
        details.append(f"{len(bad)} client failures (a dropped connection the server did not "
                       f"diagnose as facil.io's fd race is one), e.g. "
                       + "; ".join(f"port {p}: {e}" for p, e in sorted(set(bad), key=str)[:6]))
    if diagnosed:
        details.append(f"{len(diagnosed)} dropped connections that FD_RACE lines name: "
                       + "; ".join(f"port {p}: {e}" for p, e in diagnosed[:4]))
    if timed_out:
        details.append("the abrupt peers did not finish within 600 s")
    if crashes:
        details.append("crash: " + " | ".join(crashes[:5]))
    if not alive:
        details.append(f"server process gone (rc={srv.proc.poll()})")
    if not served:
        details.append(sdetail)
    if ebadf or record_err:
        details.append(f"server log: {ebadf} handshakes failed with 'Bad file descriptor' "
                       f"(I/O on an fd facil.io already closed), {record_err} with TLS "
                       f"record errors (bytes of another connection); see "
                       f"c_tests/tools/repro_abuse.py")
    srv.stop()
    t.report(3, f"abrupt peers: {n} connections (6 stages x FIN/RST, 30% TLS "
                f"1.2) in {dt:.1f} s, meanwhile {honest.ok} honest requests "
                f"ok; client failures: {len(bad)} errors, {len(diagnosed)} "
                f"dropped by facil.io's fd race as the server diagnosed them "
                f"({len(races)} FD_RACE lines); log "
                f"lines +{log_delta} (limit {n}; {ebadf} EBADF, {record_err} "
                f"record errors); requests +{req_delta} (expected "
                f"{req_lo}..{req_hi}: mid-response + honest); protocol "
                f"callbacks +{cb_delta} (allowed {cb_lo}..{cb_hi}: completed "
                f"handshakes only); fds {fds0} -> {fds1}; RSS {rss0} -> "
                f"{rss1} KB ({rss1 - rss0:+d} KB, slack {rss_slack} KB); "
                f"server alive: {alive}", ok, details)


# ---------------------------------------------------------------------------
# 4. plaintext HTTP/1.1 to the TLS port
# ---------------------------------------------------------------------------
def test_item4_plaintext_http(t):
    srv = t.server("item4", threads=2, workers=1)
    srv.wait_ready()
    results = []
    ok = True
    requests = {
        "GET": b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"User-Agent: torture/1.0\r\nAccept: */*\r\n\r\n",
        "POST+4KiB": post("/sum", b"x" * 4096),
    }
    for name, req in requests.items():
        s = socket.create_connection(("127.0.0.1", srv.port), 10)
        s.settimeout(5)
        s.sendall(req)
        data = b""
        end = "?"
        t0 = time.monotonic()
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    end = "EOF"
                    break
                data += d
        except socket.timeout:
            end = "no close within 5 s"
        except OSError as e:
            end = type(e).__name__
        s.close()
        good = (data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
                and b"HTTPS" in data and end == "EOF")
        ok &= good
        first = data.split(b"\r\n")[0].decode(errors="replace") or "nothing"
        rbody = data.partition(b"\r\n\r\n")[2].strip()[:60]
        results.append(f"{name}: {first}, body {rbody!r}, "
                       f"{end} after {time.monotonic() - t0:.2f} s")
    p = curl([f"http://127.0.0.1:{srv.port}/"], timeout=10)
    ok &= p.returncode == 0 and b"HTTPS" in p.stdout
    results.append(f"curl http://: rc={p.returncode} body {p.stdout.strip()[:60]!r}")
    served = check_served(srv.port)[0]
    ok &= served
    srv.stop()
    t.report(4, "plaintext HTTP/1.1 to the TLS port: " + "; ".join(results)
             + f"; TLS still served: {served}", ok)


# ---------------------------------------------------------------------------
# 5. no stalls
# ---------------------------------------------------------------------------
def timed_curl(args, timeout=60):
    t0 = time.monotonic()
    p = curl(args, timeout)
    return p, time.monotonic() - t0


def test_item5_no_stalls(t):
    public = os.path.join(t.ctx.tmp, "public")
    os.makedirs(public)
    static = os.path.join(public, "big.bin")
    with open(static, "wb") as f:
        f.write(random.Random(100).randbytes(100 * MiB))
    srv = t.server("item5", threads=2, workers=1, public=public)
    try:
        srv.wait_ready()
        item5(t, srv, static)
    finally:
        srv.stop()
        shutil.rmtree(public, ignore_errors=True)


def item5(t, srv, static):
    limit = 10.0  # seconds per big transfer
    ok = True
    parts = []
    details = []
    tmp = t.ctx.tmp
    # 16 MiB POST
    body = random.Random(5).randbytes(16 * MiB)
    up = os.path.join(tmp, "post16.bin")
    with open(up, "wb") as f:
        f.write(body)
    p, dt = timed_curl(["--data-binary", f"@{up}", "-H",
                        "Content-Type: application/octet-stream",
                        f"https://127.0.0.1:{srv.port}/sum"])
    want = f"len={len(body)} crc32={zlib.crc32(body):08x}\n".encode()
    good = p.returncode == 0 and p.stdout == want and dt < limit
    ok &= good
    parts.append(f"16 MiB POST {dt:.2f} s "
                 f"({'checksum matches' if p.stdout == want else 'MISMATCH'})")
    if not good:
        details.append(f"POST: rc={p.returncode} got {p.stdout[:80]!r} want {want!r} "
                       f"err {p.stderr[:200]!r}")
    # 64 MiB dynamic
    n = 64 * MiB
    down = os.path.join(tmp, "dyn64.bin")
    p, dt = timed_curl(["-o", down, f"https://127.0.0.1:{srv.port}/dyn?n={n}"])
    got = b""
    if os.path.exists(down):
        with open(down, "rb") as f:
            got = f.read()
    exact = got == pattern(n)
    good = p.returncode == 0 and exact and dt < limit
    ok &= good
    parts.append(f"64 MiB dynamic {dt:.2f} s ({len(got)} bytes, "
                 f"{'byte-exact' if exact else 'MISMATCH'})")
    if not good:
        details.append(f"dyn: rc={p.returncode} len={len(got)} err {p.stderr[:200]!r}")
    del got
    # 100 MiB static
    down = os.path.join(tmp, "static100.bin")
    p, dt = timed_curl(["-o", down, f"https://127.0.0.1:{srv.port}/big.bin"])
    exact = os.path.exists(down) and filecmp.cmp(static, down, shallow=False)
    good = p.returncode == 0 and exact and dt < limit
    ok &= good
    parts.append(f"100 MiB static {dt:.2f} s ({'byte-exact' if exact else 'MISMATCH'})")
    if not good:
        size = os.path.getsize(down) if os.path.exists(down) else None
        details.append(f"static: rc={p.returncode} size={size} err {p.stderr[:200]!r}")
    for path in (up, down, os.path.join(tmp, "dyn64.bin")):
        if os.path.exists(path):
            os.unlink(path)
    # 1 000 pipelined requests in one write
    c = tls_connect(srv.port, timeout=20)
    count = 0
    t0 = time.monotonic()
    err = ""
    try:
        c.request(get("/") * 1000)
        while count < 1000:
            status, _, b = c.read_response()
            if status != 200 or b != HELLO:
                err = f"response {count}: {status} {b[:40]!r}"
                break
            count += 1
    except Exception as e:  # noqa: BLE001 - reported
        err = f"after {count} responses: {type(e).__name__}: {e}"
    finally:
        c.close()
    dt = time.monotonic() - t0
    ok &= count == 1000 and dt < limit and not err
    parts.append(f"1000 pipelined GETs in one write: {count} responses in {dt:.2f} s")
    if err:
        details.append(f"pipelined: {err}")
    # slow reader
    secs = t.n("slow_reader_s")
    n = 16 * MiB
    c = tls_connect(srv.port, timeout=30, rcvbuf=4096)
    err = ""
    got = bytearray()
    slow_bytes = 0
    try:
        c.request(get(f"/dyn?n={n}"))
        c0, t0 = srv.cpu(), time.monotonic()
        # 1 KiB a second: read the TLS socket 1 KiB at a time
        for _ in range(secs):
            got += c.s.recv(1024)
            time.sleep(1)
        slow_bytes = len(got)
        c1, t1 = srv.cpu(), time.monotonic()
        t2 = time.monotonic()
        c.buf = got
        got = None
        status, _, b = c.read_response()
        drain = time.monotonic() - t2
        exact = status == 200 and b == pattern(n)
    except Exception as e:  # noqa: BLE001 - reported
        err = f"{type(e).__name__}: {e}"
        exact, drain, c0, c1, t0, t1 = False, 0, 0, 0, 0, 1
    finally:
        c.close()
    ok &= exact and drain < limit and not err
    parts.append(f"slow reader {slow_bytes} bytes in {secs} s (server CPU "
                 f"{100 * (c1 - c0) / (t1 - t0):.1f}% meanwhile), then drained "
                 f"16 MiB in {drain:.2f} s ({'byte-exact' if exact else 'MISMATCH'})")
    if err:
        details.append(f"slow reader: {err}")
    t.report(5, "no stalls (limit 10 s each): " + "; ".join(parts), ok, details)


# ---------------------------------------------------------------------------
# 6. thread safety: concurrent clients and a websocket broadcast
# ---------------------------------------------------------------------------
def ws_mask(payload, mask):
    n = len(payload)
    if not n:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def ws_frame(payload, opcode=2):
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + ws_mask(payload, mask)


class WsClient:
    def __init__(self, port, timeout=60):
        self.c = tls_connect(port, timeout=timeout)
        key = os.urandom(16).hex()[:22] + "=="
        self.c.request((f"GET /ws HTTP/1.1\r\nHost: localhost\r\n"
                        f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = self.c.buf
        while b"\r\n\r\n" not in buf:
            self.c.fill()
        i = buf.index(b"\r\n\r\n")
        head = bytes(buf[:i])
        del buf[:i + 4]
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:60]!r}")

    def need(self, n):
        while len(self.c.buf) < n:
            self.c.fill()

    def read_frame(self):
        """(opcode, payload) of the next complete message."""
        while True:
            self.need(2)
            b0, b1 = self.c.buf[0], self.c.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                self.need(4)
                n = struct.unpack(">H", self.c.buf[2:4])[0]
                off = 4
            elif n == 127:
                self.need(10)
                n = struct.unpack(">Q", self.c.buf[2:10])[0]
                off = 10
            if b1 & 0x80:
                raise RuntimeError("server frame is masked")
            self.need(off + n)
            payload = bytes(self.c.buf[off:off + n])
            del self.c.buf[:off + n]
            op = b0 & 0x0F
            if not b0 & 0x80:
                raise RuntimeError("fragmented frame (not expected)")
            if op == 9:
                self.c.request(ws_frame(payload, 10))
                continue
            if op == 10:
                continue
            return op, payload

    def send(self, payload, opcode=2):
        self.c.request(ws_frame(payload, opcode))

    def close(self, timeout=10):
        """Close handshake; the server closes the TCP connection first."""
        try:
            self.c.request(ws_frame(b"\x03\xe8", 8))
            self.c.s.settimeout(timeout)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                self.c.fill()
                self.c.buf.clear()
        except (OSError, EOFError, ssl.SSLError):
            pass
        self.c.close()


def ws_message(cid, seq, size, rnd):
    body = rnd.randbytes(size)
    head = struct.pack(">III", cid, seq, size)
    return head + body + struct.pack(">I", zlib.crc32(head + body))


def ws_verify(msg):
    if len(msg) < 16:
        return None
    cid, seq, size = struct.unpack(">III", msg[:12])
    if len(msg) != 16 + size:
        return None
    if struct.unpack(">I", msg[-4:])[0] != zlib.crc32(msg[:-4]):
        return None
    return cid, seq


# Item 6 lets the server close first (the last request of each HTTP client
# says "Connection: close"; websocket clients wait for the server to close
# after the close handshake). When a client closes first, facil.io
# 0.7.0.beta4 with threads > 1 can run fio_force_close twice for the same
# uuid (the reading thread on EOF and the poller on EPOLLRDHUP); the second
# one close()s the fd number again, by then owned by another connection or
# by a request body's temporary file. Without TLS (plain HTTP, same server,
# same load) that corrupts uploads ("BODY MISMATCH" from /sum: another
# request's bytes in the body file) and drops connections, so it would hide
# what this item is about: the library's own thread safety. Client-first
# closes are exercised by items 3 and 7 (tools/repro_upload.py shows the
# uploads going wrong without TLS).
BODY_MISMATCH = re.compile(r"BODY MISMATCH content-length=(\d+) body_object=yes "
                           r"stored=(-?\d+)")


def body_fd_closed(err):
    """A /sum answer saying the request body facil.io handed over has an fd
    that no longer answers fstat (stored=-1): it was closed under the
    request. The library never closes an fd (it closes connections with
    fio_close), so that is facil.io's double close. A body of any other
    wrong length is not excused: I/O on a stale fd could be ours."""
    m = BODY_MISMATCH.search(err)
    return bool(m) and int(m.group(2)) == -1


def test_item6_thread_safety(t):
    n_http = t.n("http_clients")
    n_ws = t.n("ws_clients")
    k = t.n("ws_msgs_each")
    total_msgs = n_ws * k
    budget = 300 if t.full else 120
    srv = t.server("item6", threads=4, workers=2)
    lock = threading.Lock()
    http_err = []
    http_stats = {"requests": 0, "up": 0, "down": 0}
    ws_err = []
    ws_stats = {"delivered": 0, "corrupt": 0, "complete": 0}
    ws_ready = threading.Barrier(n_ws + 1, timeout=budget)
    go = threading.Event()
    deadline = time.monotonic() + budget
    try:
        srv.wait_ready()
        pids0 = srv.pids()

        def http_client(i):
            rnd = random.Random(1000 + i)
            go.wait(budget)
            port = None
            try:
                c = tls_connect(srv.port, timeout=60)
                port = c.port
                try:
                    for r in range(3):
                        # the last request asks the server to close: see the
                        # note on item 6 about who closes first
                        last = r == 2
                        if (i + r) % 2 == 0:
                            body = rnd.randbytes(rnd.randint(1, 128 * 1024))
                            c.request(post("/sum", body, close=last))
                            status, _, got = c.read_response()
                            want = f"len={len(body)} crc32={zlib.crc32(body):08x}\n".encode()
                            if status != 200 or got != want:
                                raise RuntimeError(f"POST {len(body)}: {status} {got[:160]!r}")
                            with lock:
                                http_stats["up"] += len(body)
                        else:
                            n = rnd.randint(1, 256 * 1024)
                            c.request(get(f"/dyn?n={n}", close=last))
                            status, _, got = c.read_response()
                            if status != 200 or got != pattern(n):
                                raise RuntimeError(f"GET /dyn?n={n}: {status}, {len(got)} "
                                                   "bytes, not the pattern")
                            with lock:
                                http_stats["down"] += n
                        with lock:
                            http_stats["requests"] += 1
                    c.wait_server_close()
                finally:
                    c.close()
            except Exception as e:  # noqa: BLE001 - reported
                with lock:
                    http_err.append((getattr(e, "port", port), failure_text(e)))

        def ws_client(i):
            rnd = random.Random(5000 + i)
            ws = None
            seen = set()
            try:
                ws = WsClient(srv.port, timeout=60)
                op, p = ws.read_frame()
                if p != b"hello":
                    raise RuntimeError(f"first message {p[:20]!r}")
            except Exception as e:  # noqa: BLE001 - reported
                with lock:
                    ws_err.append(f"ws#{i} setup: {failure_text(e)}")
                try:
                    ws_ready.abort()
                except threading.BrokenBarrierError:
                    pass
                return
            try:
                ws_ready.wait()
                for seq in range(k):
                    # one 60 KiB message (several TLS records per frame;
                    # facil.io 0.7.0.beta4 mis-encodes the length of frames
                    # over 65535 bytes, even without TLS)
                    size = 60 * 1024 if (i == 0 and seq == 0) else rnd.randint(8, 2048)
                    ws.send(ws_message(i, seq, size, rnd))
                while len(seen) < total_msgs and time.monotonic() < deadline:
                    op, p = ws.read_frame()
                    v = ws_verify(p)
                    if v is None or v in seen:
                        with lock:
                            ws_stats["corrupt"] += 1
                        continue
                    seen.add(v)
                    with lock:
                        ws_stats["delivered"] += 1
                with lock:
                    if len(seen) == total_msgs:
                        ws_stats["complete"] += 1
            except Exception as e:  # noqa: BLE001 - reported
                with lock:
                    ws_err.append(f"ws#{i}: {failure_text(e)} (had {len(seen)}/{total_msgs})")
            finally:
                ws.close()

        threading.stack_size(512 * 1024)
        ws_threads = [threading.Thread(target=ws_client, args=(i,), daemon=True)
                      for i in range(n_ws)]
        http_threads = [threading.Thread(target=http_client, args=(i,), daemon=True)
                        for i in range(n_http)]
        threading.stack_size(0)
        t0 = time.monotonic()
        for th in ws_threads + http_threads:
            th.start()
        try:
            ws_ready.wait()  # every websocket subscribed and greeted
        except threading.BrokenBarrierError:
            pass
        time.sleep(0.5)  # subscriptions reach the pub/sub cluster
        go.set()
        for th in http_threads + ws_threads:
            th.join(max(0.1, deadline - time.monotonic()))
        hung = sum(th.is_alive() for th in http_threads + ws_threads)
        dt = time.monotonic() - t0
        served, _, sdetail = check_served(srv.port)
        crashes = srv.crash_lines()
        same_workers = srv.healthy() and srv.pids() == pids0
        st = srv.stats()
        # a body whose fd facil.io closed under the request (stored=-1) is
        # facil.io's (see body_fd_closed), and so is a dropped connection an
        # FD_RACE line names; tolerated at a low rate, reported
        host_races = [(p, e) for p, e in http_err if body_fd_closed(e)]
        dropped, own_err = attribute_drops([pe for pe in http_err if pe not in host_races],
                                           srv.race_ports())
        host_races += dropped
        race_limit = max(1, (3 * n_http) // 100)
        ok = (not own_err and len(host_races) <= race_limit and not ws_err
              and hung == 0 and served
              and not crashes and same_workers and ws_stats["corrupt"] == 0
              and ws_stats["complete"] == n_ws
              and http_stats["requests"] >= 3 * n_http - 3 * len(host_races))
        details = ([f"port {p}: {e}" for p, e in http_err[:5]] + ws_err[:5] + crashes[:5]
                   + ([sdetail] if not served else []))
        t.report(6, f"thread safety (threads=4 workers=2): {n_http} concurrent "
                    f"clients, {http_stats['requests']}/{3 * n_http} checksummed "
                    f"requests ok ({http_stats['up'] / MiB:.1f} MiB up, "
                    f"{http_stats['down'] / MiB:.1f} MiB down, {len(own_err)} "
                    f"errors, {len(host_races) - len(dropped)} request bodies whose fd "
                    f"facil.io closed under them (stored=-1) and {len(dropped)} "
                    f"connections an FD_RACE line names (limit {race_limit} in all)); "
                    f"websocket "
                    f"broadcast: {n_ws} clients x {k} messages, "
                    f"{ws_stats['delivered']}/{n_ws * total_msgs} deliveries "
                    f"verified, {ws_stats['complete']}/{n_ws} clients got all, "
                    f"{ws_stats['corrupt']} corrupt/duplicate, {len(ws_err)} errors "
                    f"(server ws_in={st.get('ws_in')}); {dt:.1f} s, {hung} hung "
                    f"clients, workers unchanged: {same_workers}, crash lines: "
                    f"{len(crashes)}", ok, details)
    finally:
        go.set()
        srv.stop()


# ---------------------------------------------------------------------------
# 7. graceful close
# ---------------------------------------------------------------------------
def read_until_close(c, timeout):
    """Reads plaintext until the TLS session ends. Returns (plaintext,
    "close_notify" | "EOF without close_notify" | "reset" | "timeout" |
    "TLS error: ...")."""
    data = bytearray()
    c.sock.settimeout(timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            d = c.obj.read(65536)
            if not d:  # CPython's SSLObject: b"" once close_notify arrived
                return data, "close_notify"
            data += d
            continue
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return data, "close_notify"
        except ssl.SSLEOFError:
            return data, "EOF without close_notify"
        except ssl.SSLError as e:
            return data, f"TLS error: {e.reason or e}"
        try:
            d = c.sock.recv(65536)
        except socket.timeout:
            return data, "timeout"
        except ConnectionResetError:
            return data, "reset"
        if d:
            c.inc.write(d)
        else:
            c.inc.write_eof()
    return data, "timeout"


def split_records(raw):
    recs = []
    i = 0
    while i + 5 <= len(raw):
        n = struct.unpack(">H", raw[i + 3:i + 5])[0]
        recs.append(raw[i:i + 5 + n])
        i += 5 + n
    return recs, raw[i:]


def fatal_alert_case(port, version):
    """Handshake, then one write with a request for a 4 MiB response followed
    by a forged application-data record (bad MAC). Reads every byte the
    server sends until it closes and decrypts record by record: after the
    alert record, nothing more may arrive."""
    c = RawTLS(port, version)
    try:
        c.handshake()
        c.obj.write(get("/dyn?n=4194304"))
        forged = b"\x17\x03\x03\x00\x28" + os.urandom(40)
        c.sock.sendall(c.out.read() + forged)
        time.sleep(1.0)  # let the server hit the bad record while writing
        raw = bytearray()
        c.sock.settimeout(10)
        end = "?"
        try:
            while True:
                d = c.sock.recv(65536)
                if not d:
                    end = "EOF"
                    break
                raw += d
        except socket.timeout:
            end = "timeout"
        except ConnectionResetError:
            end = "reset"
        recs, tail = split_records(bytes(raw))
        alert_at = None
        reason = ""
        app = 0
        for idx, rec in enumerate(recs):
            c.inc.write(rec)
            try:
                while True:
                    app += len(c.obj.read(65536))
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLError as e:
                alert_at = idx
                reason = str(e.reason or e)
                break
        after = (len(recs) - alert_at - 1) if alert_at is not None else None
        types = sorted(set(r[0] for r in recs))
        ok = alert_at is not None and after == 0 and not tail and end in ("EOF", "reset")
        if version == "1.2" and alert_at is not None:
            ok &= recs[alert_at][0] == 21
        return ok, (f"TLS {version}: {len(recs)} records (types {types}), "
                    f"{app} plaintext bytes, then alert '{reason}' at record "
                    f"{alert_at}, {after} records + {len(tail)} bytes after it, {end}")
    finally:
        c.die(False)


def test_item7_graceful_close(t):
    srv = t.server("item7", threads=2, workers=1)
    srv.wait_ready()
    ok = True
    parts = []
    # a) server-initiated close: Connection: close
    for version in ("1.3", "1.2"):
        c = RawTLS(srv.port, version)
        try:
            c.handshake()
            c.write(get("/close"))
            data, how = read_until_close(c, 10)
        finally:
            c.die(False)
        ok &= data.endswith(HELLO) and how == "close_notify"
        parts.append(f"/close TLS {version}: {how}")
    # b) SIGTERM with an idle keep-alive connection
    term = t.server("item7-sigterm", threads=1, workers=1)
    try:
        term.wait_ready()
        idle = RawTLS(term.port, "1.3")
        idle.served_once()
        t0 = time.monotonic()
        term.proc.send_signal(signal.SIGTERM)
        data, how = read_until_close(idle, 10)
        dt = time.monotonic() - t0
        idle.die(False)
        rc = term.proc.wait(20)
        ok &= how == "close_notify"
        parts.append(f"SIGTERM: idle keep-alive got {how} after {dt:.2f} s, server rc={rc}")
    finally:
        term.stop()
    # c) the client's close_notify ends the connection
    base = srv.wait_fds(10 ** 9, 0)
    c = RawTLS(srv.port, "1.3")
    try:
        c.served_once()
        during = srv.fds()
        t0 = time.monotonic()
        try:
            c.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        c.send_pending()  # our close_notify; our socket stays open
        data, how = read_until_close(c, 10)
        dt = time.monotonic() - t0
        after = srv.wait_fds(base, 5)
    finally:
        c.die(False)
    ok &= how in ("close_notify", "EOF without close_notify") and dt < 3 and after <= base
    parts.append(f"client close_notify: server answered {how} and closed in "
                 f"{dt:.2f} s, server fds {base} -> {during} -> {after}")
    # d) fatal alert: nothing written afterwards
    for version in ("1.2", "1.3"):
        good, text = fatal_alert_case(srv.port, version)
        ok &= good
        parts.append("fatal alert " + text)
    ok &= check_served(srv.port)[0]
    srv.stop()
    t.report(7, "graceful close: " + "; ".join(parts), ok)


# ---------------------------------------------------------------------------
# 8. memory
# ---------------------------------------------------------------------------
def valgrind_records(text):
    """Splits a valgrind log into records: lists of lines between blank
    '==PID== ' lines."""
    recs, cur = [], []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not body.strip():
            if cur:
                recs.append(cur)
            cur = []
        else:
            cur.append(body)
    if cur:
        recs.append(cur)
    return recs


def test_item8_memory(t):
    valgrind = os.environ.get("VALGRIND", "valgrind")
    if shutil.which(valgrind) is None:
        pytest.skip(f"item 8 needs valgrind ({valgrind}: not found; set VALGRIND)")
    # the library's frames: its crate and source tree, and OpenSSL called by it
    our_frame = re.compile(r"fio_tls|openssl::|openssl_sys|hooks::|tls::conn|libfio_tls|"
                           + re.escape(os.path.join(t.ctx.paths.root, "src") + os.sep))
    ok = True
    parts = []
    details = []
    # a) valgrind
    n = t.n("valgrind_conns")
    vlog = os.path.join(t.ctx.tmp, "item8-valgrind.log")
    wrapper = [valgrind, "--leak-check=full", "--errors-for-leak-kinds=definite",
               "--num-callers=40", f"--log-file={vlog}"]
    srv = t.server("item8-valgrind", threads=1, workers=1, wrapper=wrapper)
    t0 = time.monotonic()
    srv.wait_ready(timeout=120)
    startup = time.monotonic() - t0
    rnd = random.Random(8)
    stages = STAGES + ["full"] * 6
    plan = [(rnd.choice(stages), rnd.random() < 0.5, "1.2" if rnd.random() < 0.3 else None)
            for _ in range(n)]

    def job(i):
        return abrupt(srv.port, *plan[i])
    t1 = time.monotonic()
    _, errors, timed_out = run_pool(n, 4, job, 900)
    conn_s = time.monotonic() - t1
    st = srv.stats()
    rc, _ = srv.stop(signal.SIGINT, timeout=120)
    with open(vlog, errors="replace") as f:
        text = f.read()
    m = re.search(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
    total_def = int(m.group(1).replace(",", "")) if m else None
    m2 = re.search(r"indirectly lost: ([\d,]+) bytes", text)
    m3 = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    ours_leak = 0
    ours_records = []
    other_errors = []
    for rec in valgrind_records(text):
        head = rec[0]
        ours = any(our_frame.search(line) for line in rec)
        lm = re.match(r"([\d,]+) (?:\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ "
                      r"blocks are definitely lost", head)
        if lm:
            if ours:
                ours_leak += int(lm.group(1).replace(",", ""))
                ours_records.append(rec)
        elif re.match(r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|"
                      r"Mismatched free|Syscall param)", head):
            if ours:
                other_errors.append(rec)
    ok &= (total_def is not None and ours_leak == 0 and not other_errors
           and not errors and not timed_out)
    parts.append(f"valgrind (threads=1 workers=1, {n} connections with random "
                 f"early closes in {conn_s:.1f} s after {startup:.1f} s start-up; "
                 f"{st.get('requests', 0) - 1} requests, "
                 f"{st.get('callbacks', 0) - 1} hand-overs): definitely lost in "
                 f"the library's frames {ours_leak} bytes; whole process "
                 f"definitely lost {total_def} bytes, indirectly "
                 f"{m2.group(1) if m2 else '?'}; {len(other_errors)} memory "
                 f"errors in the library's frames (valgrind error summary: "
                 f"{m3.group(1) if m3 else '?'}); server rc={rc}; "
                 f"{len(errors)} client errors")
    for rec in (ours_records + other_errors)[:4]:
        details.append(" / ".join(rec[:14]))
    if errors:
        details.append(f"client errors: {[e for _, _, e in errors[:3]]}")
    if timed_out:
        details.append("the connections did not finish within 900 s")
    if total_def is None:
        details.append(f"no leak summary in {vlog}")
    # b) RSS per idle established connection, TLS vs plain HTTP
    k = t.n("idle_conns")
    per = {}
    for kind in ("plain", "tls"):
        s = t.server(f"item8-idle-{kind}", threads=1, workers=1, plain=True)
        conns = []
        try:
            s.wait_ready()
            port = s.plain_port if kind == "plain" else s.port
            connect = plain_connect if kind == "plain" else tls_connect
            for _ in range(5):  # warm-up
                c = connect(port)
                c.request(get("/"))
                c.read_response()
                c.close()
            time.sleep(0.5)
            rss0 = s.rss_kb()
            want = pattern(65536)
            for _ in range(k):
                # one 64 KiB response each: OpenSSL's record buffers and the
                # library's output buffer were all in use once
                c = connect(port)
                conns.append(c)
                c.request(get("/dyn?n=65536"))
                status, _, b = c.read_response()
                if b != want:
                    raise RuntimeError(f"{kind}: bad response ({status}, {len(b)} bytes)")
            time.sleep(1.0)
            rss1 = s.rss_kb()
            per[kind] = (rss1 - rss0) / k
            per[kind + "_text"] = f"{kind} {rss0} -> {rss1} KB"
        finally:
            for c in conns:
                c.close()
            s.stop()
    overhead = per["tls"] - per["plain"]
    limit = t.ctx.paths.idle_limit_kib
    ok &= overhead < limit
    parts.append(f"idle RSS over {k} established connections after one 64 KiB "
                 f"response each: TLS {per['tls']:.1f} KB/connection, plain HTTP "
                 f"{per['plain']:.1f} KB/connection (facil.io's own), TLS "
                 f"overhead {overhead:.1f} KB/connection (limit {limit:g} KiB; "
                 f"{per['plain_text']}, {per['tls_text']})")
    t.report(8, "memory: " + "; ".join(parts), ok, details)
