#!/usr/bin/env python3
"""Reproduction (facil.io 0.7.0.beta4, no TLS needed): uploads get another
request's bytes when clients close first on a multi-threaded server.

  repro_upload.py FIO_SERVER [--mode plain|tls] [--close client|server]
                  [--clients N] [--runs R]

FIO_SERVER is build/c_tests/static/fio_server; this runs its torture mode
with threads=4 workers=2 (an HTTPS port and a plain HTTP port). N clients
(default 500) start together; each does three requests on one keep-alive
connection, POST /sum with 1..128 KiB bodies (bodies over 8 KiB go to a
temporary file in facil.io) alternating with GET /dyn, all checked, then
closes:
  --close client   the client closes its socket (FIN) right away (default)
  --close server   the last request says "Connection: close" and the client
                   waits for the server to close first
Prints the failures: "BODY MISMATCH" answers from /sum mean facil.io handed
the application a body file whose size/content is not what was sent.

Observed on a loaded 2-core machine: --mode plain --close client gives a
few BODY MISMATCH per run (file sizes such as content-length + 16384, or
twice the length, or fstat failing: another request's writes went into the
same file descriptor) plus a few resets; --close server gives none (which is
why torture item 6 lets the server close first). The likely cause: with
threads > 1, fio_force_close can run twice for one uuid (the reading thread
on EOF, the poller on EPOLLRDHUP); both pass the uuid check before either
clears it, and the second close()s the fd number again after it was handed
to a new connection or a new temporary file.
"""
import argparse
import os
import random
import re
import sys
import threading
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fiotest import torture as T  # noqa: E402


def one_run(args, tmp):
    srv = T.TortureServer(args.server, os.path.join(tmp, "server.log"), threads=4,
                          workers=2, plain=True)
    failures = []
    ok = [0]
    lock = threading.Lock()
    go = threading.Event()
    try:
        srv.wait_ready()

        def client(i):
            rnd = random.Random(i)
            go.wait(60)
            try:
                if args.mode == "tls":
                    c = T.tls_connect(srv.port, timeout=60)
                else:
                    c = T.plain_connect(srv.plain_port, timeout=60)
                try:
                    for r in range(3):
                        last = args.close == "server" and r == 2
                        if (i + r) % 2 == 0:
                            body = rnd.randbytes(rnd.randint(1, 128 * 1024))
                            c.request(T.post("/sum", body, close=last))
                            status, _, got = c.read_response()
                            want = f"len={len(body)} crc32={zlib.crc32(body):08x}\n"
                            if status != 200 or got != want.encode():
                                raise RuntimeError(f"POST {len(body)}: {status} "
                                                   f"{got.decode(errors='replace').strip()}")
                        else:
                            n = rnd.randint(1, 256 * 1024)
                            c.request(T.get(f"/dyn?n={n}", close=last))
                            status, _, got = c.read_response()
                            if status != 200 or got != T.pattern(n):
                                raise RuntimeError(f"GET /dyn?n={n}: {status}, {len(got)} bytes")
                        with lock:
                            ok[0] += 1
                    if args.close == "server":
                        c.wait_server_close()
                finally:
                    c.close()
            except Exception as e:  # noqa: BLE001
                with lock:
                    failures.append(T.failure_text(e))

        threading.stack_size(512 * 1024)
        ts = [threading.Thread(target=client, args=(i,), daemon=True)
              for i in range(args.clients)]
        threading.stack_size(0)
        for t in ts:
            t.start()
        go.set()
        for t in ts:
            t.join(120)
    finally:
        srv.stop(timeout=20)
    mismatch = [f for f in failures if "BODY MISMATCH" in f]
    print(f"{args.mode} --close {args.close}: {ok[0]}/{3 * args.clients} "
          f"requests ok, {len(mismatch)} BODY MISMATCH, "
          f"{len(failures) - len(mismatch)} other failures", flush=True)
    for f in sorted(set(failures))[:4]:
        one_line = re.sub(r"\s+", " ", f)[:160]
        print(f"  {one_line}", flush=True)
    return not failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server", help="build/c_tests/static/fio_server")
    ap.add_argument("--mode", choices=("plain", "tls"), default="plain")
    ap.add_argument("--close", choices=("client", "server"), default="client")
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    return T.repeat_runs(one_run, args, "repro_upload.")


if __name__ == "__main__":
    sys.exit(main())
