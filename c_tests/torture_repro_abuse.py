#!/usr/bin/env python3
"""Reproduction: honest clients next to peers that reset their connections.

  torture_repro_abuse.py SERVER_BIN [--threads N] [--seconds S]
                         [--mode tls|plain] [--runs R]

Starts torture_server (workers=1, N threads, default 2; an HTTPS port and a
plain-HTTP port) and for S seconds (default 10) runs at the same time:
  - 8 abusers: connect, send a ClientHello (--mode plain: half an HTTP
    request), then reset the connection (SO_LINGER 0) at once;
  - 4 honest clients: a new connection per request (TLS 1.3 for --mode tls),
    GET /dyn?n=20000 checked byte for byte, then a normal close.
Prints, per run: honest requests ok / failed with the failure kinds, the
server's handshake failures logged with "Bad file descriptor" (I/O on an
fd facil.io already closed) or TLS record errors (bytes of another
connection), and whether the server survived (exit status -11 = SIGSEGV).

What it showed (details in the torture report):
  - library at e488339 (session start), --threads 2: honest TLS clients
    failed with TLS record errors (BAD_RECORD_TYPE, INVALID_SESSION_ID,
    bad record mac: bytes of another connection), hundreds of handshakes
    failed with EBADF, and the server died of SIGSEGV in hook_before_close;
  - library at 2107357 (fd detached in cleanup): no EBADF or record errors
    any more, but the server still aborted once ("malloc(): unaligned
    tcache chunk detected") in ~10 minutes: heap corruption, consistent
    with hook_before_close using freed connection state;
  - library at 49c0aaf: 6 runs x 60 s survived, no EBADF, no record errors;
    a few honest requests (0.1-0.5 %) are still dropped (EOF / reset).
    --mode plain --threads 2 drops some too, i.e. without TLS: that part is
    facil.io's own (fio_poll turns an error event into
    fio_force_close(fd2uuid(fd)), the uuid of the connection that has the
    fd *now*, which may be a newer one). --threads 1 drops nothing.
"""
import argparse
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import torture as T  # noqa: E402


def one_run(args):
    err = tempfile.TemporaryFile()
    p, port, plain = T.bare_server(args.server, args.threads, 1, stderr=err)
    counts = {"abuse": 0, "ok": 0}
    failures = []
    lock = threading.Lock()
    try:
        T.read_ready(p)
        target = port if args.mode == "tls" else plain
        payload = T.client_hello() if args.mode == "tls" else b"GET /dyn?n=2 HT"
        stop = time.monotonic() + args.seconds

        def abuser():
            while time.monotonic() < stop:
                try:
                    s = socket.create_connection(("127.0.0.1", target), 5)
                    s.sendall(payload)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
                    s.close()
                    with lock:
                        counts["abuse"] += 1
                except OSError:
                    pass

        def honest():
            want = T.pattern(20000)
            while time.monotonic() < stop:
                try:
                    if args.mode == "tls":
                        c = T.tls_connect(target, timeout=10, version="1.3")
                    else:
                        c = T.plain_connect(target, timeout=10)
                    try:
                        c.request(T.get("/dyn?n=20000"))
                        status, _, body = c.read_response()
                    finally:
                        c.close()
                    if status != 200 or body != want:
                        raise RuntimeError(f"status {status}, body differs")
                    with lock:
                        counts["ok"] += 1
                except Exception as e:  # noqa: BLE001
                    with lock:
                        failures.append(f"{type(e).__name__}: {e}")

        ts = [threading.Thread(target=abuser) for _ in range(8)]
        ts += [threading.Thread(target=honest) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(args.seconds + 30)
        died = p.poll()
    finally:
        T.stop_process(p, timeout=10, group=True)
    err.seek(0)
    log = err.read().decode("utf-8", "replace")
    ebadf = len(re.findall(r"handshake failed.*Bad file descriptor", log))
    record = len(re.findall(r"handshake failed.*(bad record|decryption failed|"
                            r"wrong version|unexpected message)", log))
    kinds = {}
    for f in failures:
        k = f.split(":")[0] + (":" + f.split("]")[0].split("[SSL: ")[1]
                               if "[SSL: " in f else "")
        kinds[k] = kinds.get(k, 0) + 1
    levels = {}
    for m in re.finditer(r"^(ERROR|WARNING|INFO|DEBUG|FATAL): ", log, re.M):
        levels[m.group(1)] = levels.get(m.group(1), 0) + 1
    errors = re.findall(r"^ERROR: .*$", log, re.M)
    print(f"{args.mode} threads={args.threads} {args.seconds:.0f} s: "
          f"{counts['abuse']} reset connections; honest: {counts['ok']} ok, "
          f"{len(failures)} failed {kinds or ''}; server log: {ebadf} "
          f"handshakes failed with EBADF, {record} with TLS record errors; "
          f"log lines by level {levels}; "
          f"server " + ("survived" if died is None else
                        f"DIED (exit status {died})"), flush=True)
    if errors:
        print(f"  e.g. {errors[0]}", flush=True)
    if died is not None:
        tail = [l for l in log.splitlines() if l.strip()][-6:]
        print("  server log tail: " + " | ".join(tail), flush=True)
    return not failures and not ebadf and not record and died is None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--mode", choices=("tls", "plain"), default="tls")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    clean = [one_run(args) for _ in range(args.runs)]
    return 0 if all(clean) else 1


if __name__ == "__main__":
    sys.exit(main())
