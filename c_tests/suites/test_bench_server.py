"""fio_server's mode `bench`: the server that `make bench` (bench/bench.py)
measures, checked here so that it cannot rot between benchmark runs.

The bench runs the static build only (build/c_tests/static/fio_server), so
this suite does too. Its routes (c_tests/programs/fio_server.c): GET /1m a
1 MiB body of 'x' from memory, GET /1m-file the file of -f, anything else
the 64-byte body that bench/nginx.conf returns too; no other headers than
facil.io's own (the handler is the lean one whose CPU the bench counts)."""
import os
import re
import ssl
import sys

import pytest

from fiotest.ctx import check_clean_stop, check_ready
from fiotest.proc import excerpt, run

# bench.py's own client helpers and expectations (one copy of each)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))
from bench import BIG_LEN, BODY64, client_ctx, connect, http_get  # noqa: E402


def fetch_routes(port, tls):
    """GET /, /1m and /1m-file on one connection as bench.py's clients do
    (TLS 1.3; /1m-file last: over rw hooks, facil.io 0.7.0.beta4 may stall
    the response after a file). Returns ({path: (head, body)}, the peer
    certificate's DER or None)."""
    sock = connect(port, client_ctx() if tls else None)
    try:
        out = {p: http_get(sock, p.encode(), with_head=True) for p in ("/", "/1m", "/1m-file")}
        return out, (sock.getpeercert(binary_form=True) if tls else None)
    finally:
        sock.close()


@pytest.mark.facil
@pytest.mark.parametrize("tls", (False, True), ids=("plaintext", "tls"))
def test_bench_routes(ctx, tls):
    tag = f"[static] bench {'tls' if tls else 'plaintext'}"
    big_file = os.path.join(ctx.tmp, "1m")
    file_body = bytes(range(256)) * (BIG_LEN // 256)  # not the /1m body
    with open(big_file, "wb") as f:
        f.write(file_body)
    key, chain = ctx.pki.localhost
    srv = ctx.start("static", ["-f", big_file, "bench", "{port}"] + ([key, chain] if tls else []),
                    "bench-tls" if tls else "bench-plain")
    if not check_ready(ctx, tag, srv):
        return
    try:
        routes, served = fetch_routes(srv.port, tls)
    except (OSError, ssl.SSLError) as e:
        ctx.check(f"{tag}: GET /, /1m, /1m-file on one keep-alive connection", False,
                  f"{type(e).__name__}: {e}\n{excerpt(srv.text())}")
        check_clean_stop(ctx, tag, srv)
        return
    head, body = routes["/"]
    ctx.check(f"{tag}: GET / is the 64-byte body of bench/nginx.conf", body == BODY64,
              f"{len(body)} bytes: {body[:80]!r}")
    ctx.check(f"{tag}: GET / has content-type text/plain and no headers of the test routes",
              re.search(rb"^content-type:\s*text/plain", head, re.I | re.M)
              and b"strict-transport-security" not in head.lower(), head.decode("latin-1"))
    body = routes["/1m"][1]
    ctx.check(f"{tag}: GET /1m is 1 MiB of 'x' (from memory)", body == b"x" * BIG_LEN,
              f"{len(body)} bytes, {body[:40]!r}")
    body = routes["/1m-file"][1]
    ctx.check(f"{tag}: GET /1m-file is the -f file", body == file_body,
              f"{len(body)} bytes, {body[:40]!r}")
    if tls:
        with open(chain) as f:
            leaf = ssl.PEM_cert_to_DER_cert(f.read().split("-----END CERTIFICATE-----")[0] +
                                            "-----END CERTIFICATE-----\n")
        ctx.check(f"{tag}: the certificate served is the CERT given", served == leaf,
                  f"served {len(served or b'')} bytes of DER, CERT {len(leaf)}")
    check_clean_stop(ctx, tag, srv)


@pytest.mark.facil
def test_bench_flag_f_belongs_to_bench(ctx):
    """-f with another mode is a usage error (exit 2), before anything runs."""
    key, chain = ctx.pki.localhost
    r = run([ctx.binary("static", "fio_server"), "-f", os.path.join(ctx.tmp, "x"),
             "certs", "0", "localhost", key, chain], timeout=10)
    ctx.check("[static] fio_server -f FILE certs ...: usage error, exit 2",
              r.rc == 2 and "usage:" in r.text and "READY" not in r.text, f"rc={r.rc}\n{excerpt(r.text)}")
