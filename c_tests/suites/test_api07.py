"""The facil.io 0.7.x release API (issue 14) against a real facil.io 0.7.6.

Programs (c_tests/api07.mk): c_tests/programs/fio07_server.c and
fio07_client.c, which include facil.io 0.7.6's own fio_tls.h only, and
facil.io's own examples/http-chat.c compiled unchanged; each linked per
backend (fiotest/api07.py): our release build libfio_tls07 static, shared and
LD_PRELOAD, the failing link mode `broken`, and `upstream`, facil.io 0.7.6's
own OpenSSL backend (build-openssl).

Our backends must pass every test. The upstream backend runs the same tests:
where its known faults (issue 14; make compare07 prints them side by side)
make a test fail, the test is reported as xfail with what failed, never as
a pass. Tests need facil.io 0.7.6 (and the release build, for ours) and skip
with the reason otherwise.
"""
import os
import re
import socket
import ssl
import threading
import time

import pytest

from fiotest.acme import Pebble, missing_tools
from fiotest.api07 import FATAL_STUB07, NONE, OURS, UPSTREAM
from fiotest.ctx import FATAL_STUB
from fiotest.peers import alpn_session, curl, curl_detail, s_client
from fiotest.proc import excerpt, free_port, run
from test_acme import wait_issued
from test_torture import WsClient

BACKENDS = (*OURS, UPSTREAM)
HELLO = b"hello fio07\n"


@pytest.fixture
def pki(client_pki):
    """The client suite's PKI (client certificates, encrypted keys): ctx.pki."""
    return client_pki


@pytest.fixture(scope="module")
def bundle(client_pki, tmp_path_factory):
    """The root and the intermediate CA in one file: a peer trusting it
    verifies a leaf sent without its chain, so the tests of other features
    do not depend on the chain (test_https_get does)."""
    path = str(tmp_path_factory.mktemp("api07") / "root+intermediate.pem")
    with open(path, "w") as out:
        for pem in (client_pki.ca_pem, client_pki.int_pem):
            with open(pem) as f:
                out.write(f.read())
    return path


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def need(p7, backend, program="fio07_server"):
    why = p7.unavailable(backend, program)
    if why:
        pytest.skip(why)


def start(ctx, p7, backend, args, label, ready=True, program="fio07_server"):
    """A fio07 server ("{port}" in args) of `backend` in its own session;
    waits for READY (retries on a port taken meanwhile)."""
    need(p7, backend, program)
    return ctx.start(backend, args, label, program=program, ready=ready, builds=p7)


def client(p7, backend, *args, timeout=20):
    """fio07_client's run: (exit status, output)."""
    need(p7, backend, "fio07_client")
    r = run([p7.binary(backend, "fio07_client"), *args], env=p7.env(backend), timeout=timeout)
    return r.rc, r.text


def upstream_fault(ctx, backend, what):
    """On the upstream backend, failed checks are facil.io's own backend's
    known fault `what`: xfail with them. `what` None: no fault is known
    there, so a failed check fails the test as it does for our backends."""
    if backend == UPSTREAM and what and ctx.failed:
        pytest.xfail(f"facil.io 0.7.6's own backend: {what} "
                     f"({'; '.join(n for n, _ in ctx.failed)})")


def served_subject(port, name):
    r = s_client(port, "-servername", name)
    m = re.search(r"^subject=.*CN ?= ?([\w.-]+)", r.text, re.M)
    return (m.group(1) if m else None), r.text


def log_lines(text, word):
    return [l for l in text.splitlines() if l.startswith(word)]


def clean_stop(ctx, tag, srv):
    rc, clean = srv.stop()
    text = srv.text()
    ctx.check(f"{tag}: exits cleanly on SIGTERM after fio_tls_destroy",
              clean and rc == 0 and "STOPPED" in text, f"rc={rc}\n{excerpt(text)}")
    return text


# ---------------------------------------------------------------------------
def test_https_get(ctx, paths07, backend):
    """http_listen(.tls) over fio_tls_new(name, cert chain, key, NULL):
    curl verifies the chain against the root CA alone."""
    p = ctx.pki
    key, chain = p.localhost
    srv = start(ctx, paths07, backend, ["https", "{port}", "localhost", chain, key], "https")
    if ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        c = curl(ctx, srv.port, opts=("--cacert", p.ca_pem))
        ctx.check("GET / over TLS, chain verified", c.status == "200" and c.body == HELLO,
                  curl_detail(c))
        clean_stop(ctx, "https", srv)
    upstream_fault(ctx, backend, "sends the leaf only, not the chain file's intermediate")


def test_two_names_by_sni(ctx, paths07, backend, bundle):
    """fio_tls_new for localhost, fio_tls_cert_add for b.test (both RSA):
    each name gets its own certificate, verified."""
    p = ctx.pki
    (k1, c1), (k2, c2) = p.localhost, p.b
    srv = start(ctx, paths07, backend,
                ["https", "{port}", "localhost", c1, k1, "b.test", c2, k2], "sni")
    if ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        for name in ("localhost", "b.test"):
            got, text = served_subject(srv.port, name)
            ctx.check(f"SNI {name}: its own certificate", got == name,
                      f"served {got}\n{excerpt(text)}")
            c = curl(ctx, srv.port, host=name, opts=("--cacert", bundle))
            ctx.check(f"SNI {name}: GET / verified", c.status == "200" and c.body == HELLO,
                      curl_detail(c))
        clean_stop(ctx, "sni", srv)
    upstream_fault(ctx, backend, "every certificate in one SSL_CTX, no servername callback")


def test_websocket_over_tls(ctx, paths07, backend):
    p = ctx.pki
    key, chain = p.localhost
    srv = start(ctx, paths07, backend, ["https", "{port}", "localhost", chain, key], "ws")
    if not ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        return
    try:
        ws = WsClient(srv.port, timeout=10)
        got = []
        for i in range(3):
            # 11 B, ~1.6 KiB, ~3.2 KiB: facil.io sends each as one frame
            msg = f"message {i} ".encode() * (i * 150 + 1)
            ws.send(msg, opcode=1)
            got.append(ws.read_frame() == (1, b"echo:" + msg))
        ws.close(3)
        ctx.check("three websocket messages echoed over TLS", all(got), repr(got))
    except Exception as e:  # noqa: BLE001 - a failed check with the reason
        ctx.check("websocket over TLS", False, repr(e))
    clean_stop(ctx, "ws", srv)


@pytest.mark.parametrize("case", ("good", "wrong_name", "unknown_ca"))
def test_http_connect_trust(ctx, paths07, backend, case, bundle):
    """http_connect(https://localhost:PORT/, .tls) with fio_tls_trust(root and
    intermediate CA):
    answered by a server whose chain names localhost; refused when the server
    (same CA) is b.test, or self-signed (unknown CA)."""
    p = ctx.pki
    certs = {"good": ["localhost", p.localhost[1], p.localhost[0]],
             "wrong_name": ["b.test", p.b[1], p.b[0]],
             "unknown_ca": ["localhost", "-", "-"]}[case]
    # the server is always upstream's when ours is not built: the client is
    # what is tested; our server when it can (it sends the chain)
    srv_backend = backend if not paths07.unavailable(backend) else UPSTREAM
    srv = start(ctx, paths07, srv_backend, ["https", "{port}", *certs], f"server-{case}")
    if not ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        return
    rc, out = client(paths07, backend, "-l", "4", "--name", "localhost", "--trust", bundle,
                     f"https://localhost:{srv.port}/")
    if case == "good":
        ctx.check("answered (200, the body)", rc == 0 and "STATUS 200" in out
                  and "BODY 12 hello fio07" in out, out)
    else:
        ctx.check(f"{case}: refused, no response", rc == 3 and "STATUS" not in out, out)
    ctx.check("client ends (on_finish, then fio_tls_destroy)",
              "FINISH" in out and "DONE" in out, out)
    upstream_fault(ctx, backend, {"wrong_name": "peer verification without a host name check"}.get(case))


class SilentTlsServer:
    """Python ssl on loopback: completes each handshake, reads the request
    and never answers (the connection stays open until stop())."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held, self.requests = [], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                raw, _ = self.sock.accept()
                conn = self.ctx.wrap_socket(raw, server_side=True)
                self.held.append(conn)
                conn.settimeout(5)
                self.requests.append(conn.recv(4096))
            except (OSError, ssl.SSLError):
                if self.sock.fileno() == -1:
                    return

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()


def test_http_connect_timeout_survives_the_handshake(ctx, paths07, backend, bundle):
    """http_connect(.timeout = 2) to a server that takes the request and
    never answers: facil.io's timeout closes the connection after about
    2 s and on_finish runs. facil.io 0.7.6's fio_connect runs on_connect
    (which sets the 2 s) right after fio_tls_connect, during the
    handshake; the end of the handshake must not put back the timeout the
    uuid had before it (0 here)."""
    key, chain = ctx.pki.localhost
    srv = SilentTlsServer(chain, key)
    try:
        t0 = time.monotonic()
        rc, out = client(paths07, backend, "-l", "4", "--name", "localhost", "--trust", bundle,
                         "--timeout", "2", f"https://localhost:{srv.port}/")
        took = time.monotonic() - t0
    finally:
        srv.stop()
    ctx.check("the request reached the server over TLS",
              any(r.startswith(b"GET / HTTP/1.1") for r in srv.requests), repr(srv.requests))
    ctx.check("facil.io's 2 s timeout closed the connection: on_finish, no response, "
              "before the client's own 8 s guard",
              rc == 3 and "FINISH" in out and "TIMEOUT" not in out and "STATUS" not in out,
              f"{took:.1f} s\n{out}")


def test_response_then_close(ctx, paths07, backend, bundle):
    """The server follows its response with its close ("Connection: close"):
    facil.io 0.7.6's http_connect client drops data that arrives with the
    FIN, so the TLS layer must send close_notify first and the FIN later.
    20 runs, every response delivered. Over plain HTTP (no TLS, the same
    programs) the host loses most of them: printed as the baseline, not
    asserted (it is facil.io's)."""
    key, chain = ctx.pki.localhost
    srv = start(ctx, paths07, backend, ["https", "{port}", "localhost", chain, key], "close")
    plain = start(ctx, paths07, backend, ["plain", "{port}"], "plain")
    if not ctx.check("servers start", srv.alive() and plain.alive(), excerpt(srv.text())):
        return
    runs, lost, lost_plain, outs = 20, 0, 0, []
    for _ in range(runs):
        rc, out = client(paths07, backend, "--close", "1", "--name", "localhost", "--trust",
                         bundle, f"https://localhost:{srv.port}/")
        lost += rc != 0 or "STATUS 200" not in out
        outs.append(out)
        rc, _ = client(paths07, backend, "--close", "1", f"http://localhost:{plain.port}/")
        lost_plain += rc != 0
    print(f"# baseline: plain HTTP lost {lost_plain} of {runs} responses (facil.io's client)")
    ctx.check(f"TLS, Connection: close: {runs} of {runs} responses delivered "
              f"(plain-HTTP baseline lost {lost_plain})", lost == 0,
              f"lost {lost}\n" + "\n".join(o for o in outs if "STATUS 200" not in o)[:3000])


def test_mtls(ctx, paths07, backend, bundle):
    """fio_tls_trust on the server: a client certificate of the CA is
    required; curl without one is refused, with one answered; so is
    fio07_client with --cert."""
    p = ctx.pki
    key, chain = p.localhost
    srv = start(ctx, paths07, backend,
                ["--trust", p.ca_pem, "https", "{port}", "localhost", chain, key], "mtls")
    if not ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        return
    c = curl(ctx, srv.port, opts=("-k",))
    ctx.check("no client certificate: refused", c.status != "200", curl_detail(c))
    ck, cc = p.client
    c = curl(ctx, srv.port, opts=("-k", "--cert", cc, "--key", ck))
    ctx.check("client certificate of the CA: answered", c.status == "200" and c.body == HELLO,
              curl_detail(c))
    ok, ok_c = p.client_other
    c = curl(ctx, srv.port, opts=("-k", "--cert", ok_c, "--key", ok))
    ctx.check("client certificate of another CA: refused", c.status != "200", curl_detail(c))
    url = f"https://localhost:{srv.port}/"
    rc, out = client(paths07, backend, "--trust", bundle, "--cert", cc, "--key", ck, url)
    ctx.check("fio07_client (http_connect) with --cert: answered",
              rc == 0 and "STATUS 200" in out, out)
    rc, out = client(paths07, backend, "--trust", bundle, url)
    ctx.check("fio07_client without a certificate: refused", rc == 3 and "STATUS" not in out, out)
    clean_stop(ctx, "mtls", srv)
    upstream_fault(ctx, backend, "SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT")


def test_mtls_trust_adds(ctx, paths07, backend):
    """fio_tls_trust called twice adds to the trust list, as facil.io 0.7.6
    documents ("Adds a certificate to the trust list"): a client certificate
    of either CA file is answered, one of neither is refused."""
    p = ctx.pki
    key, chain = p.localhost
    srv = start(ctx, paths07, backend, ["--trust", f"{p.ca_pem},{p.other_ca_pem}", "https", "{port}",
                                        "localhost", chain, key], "mtls-two")
    if not ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        return
    for what, (k, c), admitted in (("the first CA file", p.client, True),
                                   ("the second CA file", p.client_other, True),
                                   ("neither CA file (self-signed)", p.selfsigned, False)):
        r = curl(ctx, srv.port, opts=("-k", "--cert", c, "--key", k))
        ok = (r.status == "200" and r.body == HELLO) if admitted else r.status != "200"
        ctx.check(f"client certificate of {what}: {'answered' if admitted else 'refused'}", ok,
                  curl_detail(r))
    clean_stop(ctx, "mtls-two", srv)
    upstream_fault(ctx, backend, None)


def test_pk_password(ctx, paths07, backend, bundle):
    """An encrypted PKCS#8 key with the right pk_password serves; the wrong
    password is one ERROR line naming the key, no exit(), nothing served."""
    p = ctx.pki
    chain = p.localhost[1]
    srv = start(ctx, paths07, backend, ["--password", "fio-secret", "https", "{port}",
                                        "localhost", chain, p.encrypted_key], "password")
    if ctx.check("right password: server starts", srv.alive(), excerpt(srv.text())):
        c = curl(ctx, srv.port, opts=("--cacert", bundle))
        ctx.check("right password: GET / verified", c.status == "200" and c.body == HELLO,
                  curl_detail(c))
        clean_stop(ctx, "password", srv)
    if backend == UPSTREAM:
        upstream_fault(ctx, backend, "fio_tls_new hands the certificate and key files to "
                       "fio_tls_cert_add swapped (fio_tls_openssl.c:865), so pk_password "
                       "never reaches the key")
        return
    bad = start(ctx, paths07, backend, ["-l", "3", "--password", "wrong", "https", "{port}",
                                        "localhost", chain, p.encrypted_key], "bad-password",
                ready=False)
    rc = bad.wait_exit(15)
    text = bad.text()
    errors = log_lines(text, "ERROR:")
    ctx.check("wrong password: the program runs on (fio_tls_new returns, no exit())",
              rc == 0 and ("TLS_NEW" in text) and "FATAL" not in text, f"rc={rc}\n{text}")
    ctx.check("wrong password: one ERROR line naming the key file",
              len(errors) == 1 and os.path.basename(p.encrypted_key) in errors[0], text)
    ctx.check("wrong password: no certificate served",
              "NOT_LISTENING" in text or "READY" not in text, text)


def test_dup_destroy_counting(ctx, paths07, backend):
    """fio_tls_dup +1, fio_tls_destroy -1: on_cleanup runs once, at the last
    fio_tls_destroy, not before."""
    need(paths07, backend)
    r = run([paths07.binary(backend, "fio07_server"), "refs"], env=paths07.env(backend))
    steps = dict(re.findall(r"^STEP (\S+) cleanups=(\d+)$", r.text, re.M))
    want = {"new+alpn_add": "0", "dup1": "0", "dup2": "0", "destroy1": "0",
            "destroy2": "0", "destroy3": "1"}
    ctx.check("on_cleanup only at the third fio_tls_destroy (after two fio_tls_dup)",
              r.rc == 0 and steps == want, f"rc={r.rc} steps={steps}\n{r.text}")


def test_alpn_udata_and_cleanup(ctx, paths07, backend):
    """fio_tls_alpn_add with udata_tls and on_cleanup, fio_listen(.tls) with
    no on_open: on_selected sees (uuid, the listener's udata, the protocol's
    udata_tls); the first protocol added is the default; re-adding a name
    cleans up the replaced registration at once; the last reference cleans
    up each protocol exactly once."""
    key, chain = ctx.pki.localhost
    srv = start(ctx, paths07, backend, ["alpn", "{port}", chain, key], "alpn")
    if not ctx.check("server starts", srv.alive(), excerpt(srv.text())):
        return
    head = srv.text()
    ctx.check("fio_tls_alpn_count: 1, 1 (same name again), 2",
              re.findall(r"^ALPN_COUNT (\d+)", head, re.M) == ["1", "1", "2"], head)
    before = head.split("READY")[0]
    ctx.check("re-adding echo-a: its old udata_tls cleaned up at once, only it",
              log_lines(before, "CLEANUP") == ["CLEANUP a-old"], before)
    for offer, proto, udata in (("echo-b", "echo-b", "b"), ("echo-a", "echo-a", "a-new"),
                                (None, "echo-a", "a-new")):
        got, echo, out = alpn_session(srv.port, offer, message=b"ping07\n")
        tag = f"offer {offer or 'no ALPN'}"
        ctx.check(f"{tag}: {proto} chosen and its protocol answers",
                  echo == proto and (offer is None or got == proto), f"{got} {echo}\n{excerpt(out)}")
        m = srv.wait_for(rf"^SELECTED {proto} conn=\S+ tls={udata}$", 5)
        sel = [l for l in log_lines(srv.text(), "SELECTED")]
        ctx.check(f"{tag}: on_selected saw conn=conn-udata tls={udata}",
                  m is not None and sel and sel[-1] == f"SELECTED {proto} conn=conn-udata tls={udata}",
                  "\n".join(sel))
    text = clean_stop(ctx, "alpn", srv)
    after = text.split("READY")[-1]
    cleanups = log_lines(after, "CLEANUP")
    ctx.check("at the last reference: on_cleanup once per protocol (a-new, b), never a-old again",
              sorted(cleanups) == ["CLEANUP a-new", "CLEANUP b"], after)
    ctx.check("on_cleanup not before the application's own fio_tls_destroy",
              "DESTROY" in after and after.index("DESTROY") < min(
                  (after.index(c) for c in cleanups), default=len(after)), after)
    upstream_fault(ctx, backend, "ALPN / on_cleanup")


def test_broken_link_mode(ctx, paths07):
    """libfio_tls07.so with the static libfacil.io.a: facil.io's own weak
    TLS fallbacks (http.c's fio_tls_alpn_add, fio.c's fio_tls_dup/accept/
    connect...) are inside the program and win over the shared library, so
    http_listen(.tls) ends the program at its first TLS call, http.c's
    fio_tls_alpn_add, with that stub's FATAL line (the fix: link
    libfio_tls07.a before libfacil.io.a, or facil.io shared)."""
    key, chain = ctx.pki.localhost
    srv = start(ctx, paths07, "broken", ["-l", "4", "https", "{port}", "localhost", chain, key],
                "broken", ready=False)
    rc = srv.wait_exit(15)
    text = srv.text()
    ctx.check("documented failing mode: http.c's stub message and exit",
              rc not in (None, 0) and f"FATAL: {FATAL_STUB}" in text and "READY" not in text,
              f"rc={rc}\n{text}")
    ctx.check("before it, the library's load-time ERROR names the shadowed functions and the "
              "fix (shown although FIO_LOG_LEVEL is not set yet before main)",
              re.search(r"^ERROR: fio_tls: libfio_tls07 is loaded but .*fio_tls_alpn_add.* "
                        r"link libfio_tls07\.a", text, re.M) is not None, text)


@pytest.mark.facil
def test_beta4_library_in_a_release_program(ctx, paths, paths07, tmp_path):
    """The beta4 build (libfio_tls.a) linked into a facil.io 0.7.6 program
    links (the function names are the same) but cannot work: one ERROR at
    load names the mistake and the library to link (libfio_tls07), before
    facil.io's own FATAL line."""
    need(paths07, "static")
    exe = str(tmp_path / "fio07_server_beta4lib")
    r = run(["cc", os.path.join(paths07.ct, "fio07_server.o"), paths.a, paths07.static,
             "-lssl", "-lcrypto", "-lpthread", "-ldl", "-lm", "-o", exe])
    ctx.require("links (same function names)", r.rc == 0, r.text)
    r = run([exe, "https", str(free_port()), "localhost", "-", "-"], timeout=15)
    ctx.check("one load-time ERROR: the beta4 API in a 0.7.x program, link libfio_tls07",
              len(re.findall(r"^ERROR: fio_tls: libfio_tls implements facil.io 0.7.0.beta4's TLS "
                             r"API, but this program's facil.io is a 0.7.x release.*link "
                             r"libfio_tls07 \(make API=0.7\)", r.text, re.M)) == 1, r.text)


def test_without_a_tls_library(ctx, paths07):
    """facil.io 0.7.6 alone (the weak stubs of its fio_tls_missing.c): the
    first TLS call ends the program with facil.io's FATAL line -- what an
    application gets when our library is not linked."""
    key, chain = ctx.pki.localhost
    # -l 4: a program compiled with 0.7.6's fio.h carries its own weak,
    # zero FIO_LOG_LEVEL, which the linker may pick over fio.c's
    srv = start(ctx, paths07, NONE, ["-l", "4", "https", "{port}", "localhost", chain, key], "none",
                ready=False)
    rc = srv.wait_exit(15)
    text = srv.text()
    ctx.check("no TLS library: facil.io's stub message and exit",
              rc not in (None, 0) and FATAL_STUB07 in text and "READY" not in text,
              f"rc={rc}\n{text}")


def wait_port(port, srv, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end and srv.alive():
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def test_example_http_chat(ctx, paths07, backend):
    """facil.io 0.7.6's own examples/http-chat.c, unchanged, run with -tls
    (its self-signed certificate): HTTPS answers, and two websocket clients
    over TLS chat through its pub/sub."""
    need(paths07, backend, "http-chat")
    port = free_port()
    srv = ctx.server([paths07.binary(backend, "http-chat"), "-tls", "-p", str(port), "-b",
                      "127.0.0.1", "-t", "1", "-w", "1"], f"{backend}-http-chat",
                     env=paths07.env(backend), port=port, new_session=True)
    if not ctx.check("http-chat -tls listens", wait_port(port, srv), excerpt(srv.text())):
        return
    c = curl(ctx, port, host="127.0.0.1", opts=("-k",))
    ctx.check("GET / over TLS: Hello World!", c.status == "200" and c.body == b"Hello World!",
              curl_detail(c))
    try:
        a, b = WsClient(port, timeout=10), WsClient(port, timeout=10)
        for w in (a, b):
            assert w.read_frame() == (1, b"Welcome to the chat-room.")
        a.send(b"hello over TLS", opcode=1)
        seen = []
        while len(seen) < 8:
            op, msg = b.read_frame()
            seen.append(msg)
            if msg == b"ws: hello over TLS":
                break
        ctx.check("a websocket message reaches the other client over TLS",
                  b"ws: hello over TLS" in seen, repr(seen))
        a.close(2)
        b.close(2)
    except Exception as e:  # noqa: BLE001 - a failed check with the reason
        ctx.check("websocket chat over TLS", False, repr(e))


@pytest.mark.facil
def test_acme_names_without_files(ctx, paths07):
    """ACME (issue 12) in the release build: a 2-worker fio07_server whose
    names come with NULL files (fio_tls_new(name, NULL, NULL, NULL), then
    fio_tls_cert_add(tls, name, NULL, NULL, NULL)) gets a certificate for
    each from Debian's pebble by TLS-ALPN-01 on its own port; curl verifies
    each against pebble's root and gets the application's answer."""
    need(paths07, "static")
    missing = missing_tools(("curl",))
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages pebble, curl)")
    names = ("a.acme.test", "b.acme.test")
    pebble = Pebble(ctx, tls_port=free_port())
    ctx.require("pebble and challtestsrv start", pebble.ready(), excerpt(pebble.log()))
    cache = os.path.join(ctx.tmp, "acme-cache")
    env = {"FIO_TLS_ACME_DIRECTORY": pebble.directory, "FIO_TLS_ACME_DIR": cache,
           "FIO_TLS_ACME_CA_FILE": pebble.ca_file, "FIO_TLS_RELOAD_SECONDS": "1"}
    args = ["-l", "4", "-w", "2", "https", "{port}"] + [a for n in names for a in (n, "-", "-")]
    srv = ctx.start("static", args, "acme", program="fio07_server", env=env, builds=paths07,
                    port=pebble.tls01)
    ctx.require("server starts on pebble's tlsPort", srv.alive() and srv.port == pebble.tls01,
                excerpt(srv.text()))
    for name in names:
        ctx.require(f"{name}: certificate issued by pebble", wait_issued(srv, name),
                    f"{excerpt(srv.text())}\n--- pebble\n{excerpt(pebble.log())}")
    time.sleep(2)  # FIO_TLS_RELOAD_SECONDS=1: every worker has loaded it
    root = pebble.root_pem()
    for name in names:
        r = run(["curl", "-sS", "--cacert", root, "--resolve", f"{name}:{srv.port}:127.0.0.1",
                 f"https://{name}:{srv.port}/"])
        ctx.check(f"{name}: curl --cacert <pebble's root> verifies it and gets the answer",
                  r.rc == 0 and r.out == HELLO, r.text)
    ctx.check("one account and one order per name at pebble",
              pebble.accounts_created() == 1 and pebble.orders() == len(names),
              f"accounts {pebble.accounts_created()}, orders {pebble.orders()}")
    ctx.check("no WARNING or ERROR from the library",
              not re.search(r"^(WARNING|ERROR): fio_tls", srv.text(), re.M), excerpt(srv.text()))
    clean_stop(ctx, "acme", srv)
