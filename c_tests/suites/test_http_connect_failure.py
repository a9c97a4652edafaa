"""A failed TLS handshake must reach the application (issue 10, item 2).

facil.io 0.7.0.beta4's `http_connect` calls `on_finish` only from the
`on_close` of its HTTP client protocol, which its "http/1.1" ALPN callback
attaches. libfio_tls runs a client's protocol callback once per
`fio_tls_connect`, also after a failed handshake (on the closed uuid), so
`on_finish` runs and a client program ends by itself. These tests run
`fio_client --no-watchdog` (nothing but the application's own callbacks and
its `--timeout` can end it, as in a real program) against a facil.io server
(`fio_server certs`, started through ctx in its own session) whose
certificate the client must refuse, and against a server that hangs up
mid-handshake.

Link modes: static, shared, preload (conftest's `mode`). The certificates
are the `client_pki` fixture (its localhost leaf via the intermediate, the
root CA, and another root CA that signed none of it), which this module
makes its `pki`. Every test needs facil.io (marker `facil`).

    make check-programs
    /usr/bin/python3 -m pytest c_tests/suites/test_http_connect_failure.py
"""
import re

import pytest

from fiotest.client import FACIL_LEAK, FAIL_FAST, fio_client
from fiotest.ctx import check_ready
from fiotest.peers import HangUpServer

pytestmark = pytest.mark.facil

# the client's own deadline; a client that learns of the failure ends long
# before it (FAIL_FAST), one that is never told hits it
CLIENT_TIMEOUT = 15
HTTP_FAILED = "HANDSHAKE-FAILED http/1.1 udata=-"


@pytest.fixture
def pki(client_pki):
    """This module's ctx.pki: the client suite's PKI (it has the other CA)."""
    return client_pki


def start_server(ctx, mode):
    """fio_server certs PORT localhost KEY CERT; None when it does not start
    (a failed check)."""
    srv = ctx.start(mode, ["certs", "{port}", "localhost", *ctx.pki.localhost], "certs")
    return srv if check_ready(ctx, f"[{mode}] fio_server certs", srv) else None


def client(ctx, mode, *args):
    """fio_client --no-watchdog --timeout CLIENT_TIMEOUT ARGS (no --out)."""
    return fio_client(ctx, mode, "--no-watchdog", *args, out=False, timeout=CLIENT_TIMEOUT)


def lines(c):
    return c.out.splitlines()


def count(c, line):
    return lines(c).count(line)


def fio_tls_warnings(c):
    return [l for l in c.err.splitlines() if l.startswith("WARNING: fio_tls: ")]


def check_told_of_failure(ctx, tag, c, callback_line, reason):
    """The callback ran once on the closed uuid, the program ended by
    itself long before its deadline, one WARNING named `reason`."""
    d = c.detail()
    ctx.check(f"{tag}: the callback ran once, on the closed uuid ({callback_line})",
              count(c, callback_line) == 1, d)
    ctx.check(f"{tag}: no callback on an open uuid (no PROTO line)",
              not any(l.startswith("PROTO ") for l in lines(c)), d)
    ctx.check(f"{tag}: its own deadline did not end it (no TIMEOUT)",
              "TIMEOUT" not in lines(c), d)
    ctx.check(f"{tag}: ends by itself, rc 0, within {FAIL_FAST:g} s",
              c.rc == 0 and c.took < FAIL_FAST, d)
    warnings = fio_tls_warnings(c)
    ctx.check(f"{tag}: exactly one 'WARNING: fio_tls:' line, naming /{reason}/",
              len(warnings) == 1 and re.search(reason, warnings[0]) is not None, d)
    ctx.check(f"{tag}: no facil.io leak report at exit", FACIL_LEAK not in c.err, d)
    ctx.check(f"{tag}: as many descriptors open at the end as at the start",
              c.fds is not None and c.fds[0] >= 0 and c.fds[0] == c.fds[1], d)


@pytest.mark.parametrize("case", ["unknown CA", "wrong host name"])
def test_http_connect_failed_handshake_runs_on_finish(ctx, mode, case):
    pki = ctx.pki
    name, ca, reason = {
        "unknown CA": ("localhost", pki.other_ca_pem, "unable to get local issuer certificate"),
        "wrong host name": ("wrong.test", pki.ca_pem, "hostname mismatch")}[case]
    srv = start_server(ctx, mode)
    if not srv:
        return
    c = client(ctx, mode, "--name", name, "--trust", ca, "http", f"http://127.0.0.1:{srv.port}/")
    tag = f"[{mode}] http_connect, {case}"
    check_told_of_failure(ctx, tag, c, HTTP_FAILED, reason)
    ctx.check(f"{tag}: on_finish ran once, with no response before it (FINISH, NO-RESPONSE)",
              count(c, "FINISH") == 1 and count(c, "NO-RESPONSE") == 1, c.detail())
    ctx.check(f"{tag}: no response status",
              not any(l.startswith("STATUS ") for l in lines(c)), c.detail())


def test_http_connect_server_hangs_up_mid_handshake(ctx, mode):
    srv = HangUpServer()
    try:
        c = client(ctx, mode, "--name", "localhost", "http", f"http://127.0.0.1:{srv.port}/")
    finally:
        srv.close()
    tag = f"[{mode}] http_connect, the server hangs up mid-handshake"
    check_told_of_failure(ctx, tag, c, HTTP_FAILED, r"TLS handshake failed \(client")
    ctx.check(f"{tag}: on_finish ran once, with no response before it (FINISH, NO-RESPONSE)",
              count(c, "FINISH") == 1 and count(c, "NO-RESPONSE") == 1, c.detail())


def test_fio_tls_connect_failed_handshake_runs_the_callback_once(ctx, mode):
    srv = start_server(ctx, mode)
    if not srv:
        return
    c = client(ctx, mode, "--name", "localhost", "--trust", ctx.pki.other_ca_pem,
               "--alpn", "http/1.1", "--udata", "mine", "raw", "127.0.0.1", str(srv.port))
    # the callback got the udata back on the closed uuid; the protocol it
    # attached there got its on_close
    tag = f"[{mode}] fio_tls_connect, unknown CA"
    check_told_of_failure(ctx, tag, c, "HANDSHAKE-FAILED http/1.1 udata=mine",
                          "unable to get local issuer certificate")
    ctx.check(f"{tag}: the protocol the callback attached got its on_close once (CLOSED)",
              count(c, "CLOSED") == 1, c.detail())


def test_http_connect_control_verified_request(ctx, mode):
    """The same client and server with the right CA and name: a response,
    and on_finish once at the end (no failure callback)."""
    srv = start_server(ctx, mode)
    if not srv:
        return
    c = client(ctx, mode, "--name", "localhost", "--trust", ctx.pki.ca_pem, "http",
               f"http://127.0.0.1:{srv.port}/")
    tag = f"[{mode}] http_connect, verified (control)"
    d = c.detail()
    ctx.check(f"{tag}: the http/1.1 callback ran once and the status is 200",
              count(c, "PROTO http/1.1 udata=-") == 1 and count(c, "STATUS 200") == 1, d)
    ctx.check(f"{tag}: no failure callback (no HANDSHAKE-FAILED)",
              not any(l.startswith("HANDSHAKE-FAILED") for l in lines(c)), d)
    ctx.check(f"{tag}: on_finish ran once, after the response (FINISH, no NO-RESPONSE)",
              count(c, "FINISH") == 1 and count(c, "NO-RESPONSE") == 0, d)
    ctx.check(f"{tag}: rc 0, no 'WARNING: fio_tls:' line",
              c.rc == 0 and not fio_tls_warnings(c), d)
