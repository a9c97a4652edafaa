#!/usr/bin/env python3
"""make compare07: the faults of facil.io 0.7.6's own OpenSSL backend
(issue 14), probed against it and against our release build, side by side.

Both columns run the same programs (c_tests/programs/fio07_server.c and
fio07_client.c, built by c_tests/api07.mk): "ours" linked with
libfio_tls07.a before the static libfacil.io.a, "upstream" with facil.io
0.7.6 built with HAVE_OPENSSL (build-openssl) and -lssl -lcrypto. Every cell
is measured in this run; a column whose programs are missing says so.

  1. two names by SNI: localhost and b.test (both RSA, leaf-only files) on
     one listener; which certificate each ClientHello's server_name gets
  2. http_connect to https://localhost:PORT/ with fio_tls_trust (root and
     intermediate) while the server (same backend) presents b.test's
     certificate of the same CA: refused or answered
  3. server CPU while 400 handshakes stall (200 TCP connections that send
     nothing, 200 that send half a ClientHello): % of one core over 5 s,
     from 1 s after the last connect; and how many of the 400 the server
     closed within 12 s (a handshake deadline)
"""
import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(ROOT, "bench")]

from bench import cpu_seconds  # noqa: E402 - bench/bench.py's /proc accounting
from fiotest.pki import Pki  # noqa: E402
from fiotest.proc import free_port, run  # noqa: E402

COLUMNS = (("ours", "static", "ours (libfio_tls07.a)"),
           ("upstream", "upstream", "facil.io 0.7.6 own backend"))
STALL_SILENT = 200
STALL_HALF = 200
STALL_WINDOW = 5.0


class Server:
    def __init__(self, binary, args, log):
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([binary, *[a.replace("{port}", str(self.port)) for a in args]],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end and self.proc.poll() is None:
            if re.search(r"^READY \d+", self.text(), re.M):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.text()}")

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def served_name(port, name):
    r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name],
            timeout=10)
    m = re.search(r"^subject=.*CN ?= ?([\w.-]+)", r.text, re.M)
    return m.group(1) if m else "handshake failure"


def probe_sni(binary, pki, work):
    srv = Server(binary, ["https", "{port}", "localhost", pki.p("localhost.pem"), pki.localhost[0],
                          "b.test", pki.p("b.test.pem"), pki.b[0]], os.path.join(work, "sni.log"))
    try:
        got = {n: served_name(srv.port, n) for n in ("localhost", "b.test")}
    finally:
        srv.stop()
    ok = all(got[n] == n for n in got)
    return ok, "; ".join(f"{n} -> {got[n]}" for n in got)


def probe_wrong_name(server_bin, client_bin, pki, bundle, work):
    srv = Server(server_bin, ["https", "{port}", "b.test", pki.b[1], pki.b[0]],
                 os.path.join(work, "wrong-name.log"))
    try:
        r = run([client_bin, "--name", "localhost", "--trust", bundle,
                 f"https://localhost:{srv.port}/"], timeout=20)
    finally:
        srv.stop()
    refused = r.rc == 3 and "STATUS" not in r.text
    m = re.search(r"^STATUS (\d+)", r.text, re.M)
    return refused, "refused" if refused else (f"answered (HTTP {m.group(1)})" if m
                                               else f"client rc={r.rc}")


def half_client_hello():
    """The first half of a real ClientHello (Python's ssl, memory BIOs)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = c.wrap_bio(inc, out, server_hostname="localhost")
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    return hello[:len(hello) // 2]


def probe_stall(binary, pki, work):
    srv = Server(binary, ["https", "{port}", "localhost", pki.localhost[1], pki.localhost[0]],
                 os.path.join(work, "stall.log"))
    socks = []
    try:
        half = half_client_hello()
        for i in range(STALL_SILENT + STALL_HALF):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            if i >= STALL_SILENT:
                s.sendall(half)
            socks.append(s)
        time.sleep(1.0)
        c0, t0 = cpu_seconds([srv.proc.pid]), time.monotonic()
        time.sleep(STALL_WINDOW)
        c1, t1 = cpu_seconds([srv.proc.pid]), time.monotonic()
        pct = float(c1 - c0) / (t1 - t0) * 100
        # which of them did the server close (EOF or reset) by 12 s after the start
        deadline = t0 - 1.0 + 12.0
        time.sleep(max(0.0, deadline - time.monotonic()))
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                closed += s.recv(1 << 16) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
    finally:
        for s in socks:
            s.close()
        srv.stop()
    n = len(socks)
    return pct, f"{pct:.1f} % of a core; {closed}/{n} closed by 12 s"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct07-dir", default=os.path.join(ROOT, "build", "c_tests07"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "compare07"))
    cfg = ap.parse_args()
    os.makedirs(cfg.work, exist_ok=True)
    pki = Pki(os.path.join(cfg.work, "pki"))
    shutil.rmtree(pki.d, ignore_errors=True)  # a fresh test PKI per run
    os.makedirs(pki.d)
    pki.make()
    bundle = os.path.join(cfg.work, "root+intermediate.pem")
    with open(bundle, "w") as out:
        for pem in (pki.ca_pem, pki.int_pem):
            with open(pem) as f:
                out.write(f.read())

    rows = {"sni": {}, "name": {}, "stall": {}}
    for key, sub, _ in COLUMNS:
        server = os.path.join(cfg.ct07_dir, sub, "fio07_server")
        client = os.path.join(cfg.ct07_dir, sub, "fio07_client")
        if not (os.path.exists(server) and os.path.exists(client)):
            why = "not built" + (" (make API=0.7, then make check-programs07)" if key == "ours" else "")
            for r in rows.values():
                r[key] = (None, why)
            continue
        work = os.path.join(cfg.work, key)
        os.makedirs(work, exist_ok=True)
        print(f"== {key}: probing", flush=True)
        rows["sni"][key] = probe_sni(server, pki, work)
        rows["name"][key] = probe_wrong_name(server, client, pki, bundle, work)
        rows["stall"][key] = probe_stall(server, pki, work)

    titles = (("sni", "1. second SNI certificate served for its name"),
              ("name", "2. http_connect, wrong host name, trust on"),
              ("stall", f"3. server CPU while {STALL_SILENT + STALL_HALF} handshakes stall"))
    head = ["probe"] + [t for _, _, t in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, title in titles:
        cells = []
        for col, _, _ in COLUMNS:
            ok, text = rows[key][col]
            mark = "" if ok is None or key == "stall" else ("ok: " if ok else "FAULT: ")
            cells.append(mark + text)
        lines.append("| " + " | ".join([title] + cells) + " |")
    print()
    print("\n".join(lines))
    with open(os.path.join(cfg.work, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\n(also in {os.path.join(cfg.work, 'table.md')}; server logs under {cfg.work})")


if __name__ == "__main__":
    main()
