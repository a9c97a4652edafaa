"""Automatic certificates: the library's ACME client (RFC 8555) and its
TLS-ALPN-01 responder (RFC 8737) against Debian's pebble (issue 12).

The server is fio_server's mode `acme` (static link, `-t 2`, 4 workers):
names added with NULL files, every answer "pid=N". pebble's VA validates
TLS-ALPN-01 on the server's own port (`tlsPort`), resolving the names
through pebble-challtestsrv (every name is 127.0.0.1). Certificates reach
the workers through the file watching of issue 11 (FIO_TLS_RELOAD_SECONDS=1
here).

What is tested:
  * two names, four workers: both get certificates; `curl --cacert <pebble's
    root>` verifies the chain for each name; every worker serves them;
    pebble's log has exactly one account and one order per name, and one
    process says it talks to the CA; an acme-tls/1 ClientHello for a name
    with no pending challenge gets a handshake failure;
  * restart with the same cache: the cached certificates serve at once,
    and no new order or account is made;
  * renewal with FIO_TLS_ACME_TEST_RENEW_AFTER: a new certificate is issued
    and served by every worker while keep-alive connections stay open;
  * pebble down: serving goes on with the self-signed certificate, a
    WARNING with the back-off, issuance once pebble is back;
  * a challenge failure for one name (challtestsrv answers a wrong address):
    a WARNING with pebble's problem type and detail; the other name is
    issued;
  * a pending challenge (the cache's challenge file) is answered by
    whichever worker accepts, with ALPN acme-tls/1 and the connection ends without the
    application;
  * the election: SIGKILL of the process that talks to the CA lets
    another worker take over;
  * without ACME: a ClientHello offering acme-tls/1 gets a handshake
    failure, not the application.
"""
import hashlib
import os
import re
import signal
import ssl
import time

import pytest

from fiotest.acme import Pebble, missing_tools
from fiotest.peers import s_client
from fiotest.proc import excerpt, free_port, run
from test_renewal import KeepAlive, WORKERS, check_stop, check_sweep, pem_der, probe, start_renew

NAMES = ("a.acme.test", "b.acme.test")
RELOAD = 1  # FIO_TLS_RELOAD_SECONDS
ISSUE_TIMEOUT = 40


@pytest.fixture
def tools():
    missing = missing_tools(("curl",))
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages pebble, curl; "
                    ".ci/run installs them)")


def start(ctx, pebble, cache, names=NAMES, env=None, label="acme"):
    """fio_server acme on pebble's tlsPort with the cache dir `cache`."""
    acme_env = {"FIO_TLS_ACME_DIRECTORY": pebble.directory, "FIO_TLS_ACME_DIR": cache,
                "FIO_TLS_ACME_CA_FILE": pebble.ca_file, **(env or {})}
    return start_renew(ctx, label, [], RELOAD, mode=["acme", str(WORKERS), *names],
                       env=acme_env, port=pebble.tls01)


@pytest.fixture
def pebble(ctx, tools):
    """A running pebble + challtestsrv; its tlsPort is the test server's."""
    p = Pebble(ctx, tls_port=free_port())
    if not p.ready():
        pytest.fail(f"pebble and challtestsrv do not start:\n{excerpt(p.log())}")
    return p


@pytest.fixture
def cache(ctx):
    """The FIO_TLS_ACME_DIR of the test (made by the library)."""
    return os.path.join(ctx.tmp, "cache")


def cached_der(cache, name):
    try:
        with open(os.path.join(cache, "certs", f"{name}.crt")) as f:
            return pem_der(f.read())
    except OSError:
        return None


def wait_issued(srv, name, count=1, timeout=ISSUE_TIMEOUT):
    """Waits for the `count`-th "issued" line of `name`."""
    pattern = rf'ACME: certificate for "{re.escape(name)}" issued'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, srv.text())) >= count:
            return True
        time.sleep(0.1)
    return False


def curl_verified(port, name, root):
    r = run(["curl", "-sS", "--cacert", root, "--resolve", f"{name}:{port}:127.0.0.1",
             f"https://{name}:{port}/"])
    return r.rc == 0 and r.out.startswith(b"pid="), r.text


def check_issued(ctx, tag, srv, pebble, cache, workers, names=NAMES):
    """Each name issued, cached 0600, verified by curl against pebble's
    root, served by every worker."""
    for name in names:
        if not ctx.check(f"{tag}: {name} gets a certificate from pebble", wait_issued(srv, name),
                         f"{excerpt(srv.text())}\n--- pebble\n{excerpt(pebble.log())}"):
            return False
    time.sleep(RELOAD + 1)
    root = pebble.root_pem()
    for name in names:
        ok, detail = curl_verified(srv.port, name, root)
        ctx.check(f"{tag}: curl --cacert <pebble's root> verifies {name}", ok, detail)
        der = cached_der(cache, name)
        check_sweep(ctx, f"{tag}: every worker serves the certificate of {name}", srv, name,
                    workers, der, {der: "pebble's certificate"})
    modes = {f: os.stat(os.path.join(cache, "certs", f)).st_mode & 0o777
             for f in os.listdir(os.path.join(cache, "certs"))}
    ctx.check(f"{tag}: cache directory 0700, files 0600",
              os.stat(cache).st_mode & 0o777 == 0o700 and set(modes.values()) == {0o600}, modes)
    return True


def check_acme_alpn_refused(ctx, tag, port, name):
    r = s_client(port, "-servername", name, "-alpn", "acme-tls/1")
    ctx.check(f"{tag}: a ClientHello offering acme-tls/1 for {name} (no pending challenge) "
              f"gets a handshake failure", r.rc != 0 and "alert handshake failure" in r.text
              and "pid=" not in r.text, excerpt(r.text))


@pytest.mark.facil
def test_two_names_four_workers_then_restart_serves_the_cache(ctx, pebble, cache):
    tag = "[static] acme, 2 names, 4 workers"
    srv, root, workers = start(ctx, pebble, cache)
    if not root:
        return
    if not check_issued(ctx, tag, srv, pebble, cache, workers):
        return
    text = srv.text()
    talkers = set(re.findall(r"ACME: process (\d+) talks to", text))
    ctx.check(f"{tag}: exactly one worker process talks to the CA", len(talkers) == 1
              and int(next(iter(talkers))) in workers, f"{talkers} workers {workers}")
    ctx.check(f"{tag}: pebble made exactly one account and one order per name",
              pebble.accounts_created() == 1 and pebble.orders() == len(NAMES),
              f"accounts {pebble.accounts_created()}, orders {pebble.orders()}\n"
              f"{excerpt(pebble.log())}")
    ctx.check(f"{tag}: no WARNING or ERROR", not re.search(r"^(WARNING|ERROR): fio_tls", text, re.M),
              excerpt(text))
    check_acme_alpn_refused(ctx, tag, srv.port, NAMES[0])
    check_stop(ctx, tag, srv)

    # restart over the same cache: served at once, nothing ordered
    tag = "[static] acme, restart"
    srv, root, workers = start(ctx, pebble, cache, label="acme-restart")
    if not root:
        return
    for name in NAMES:
        pid, der = probe(srv.port, name)
        ctx.check(f"{tag}: {name} is served from the cache at once", der == cached_der(cache, name),
                  excerpt(srv.text()))
    time.sleep(3)  # several passes of the client
    ctx.check(f"{tag}: no new account or order", pebble.accounts_created() == 1
              and pebble.orders() == len(NAMES) and "issued" not in srv.text(),
              f"accounts {pebble.accounts_created()}, orders {pebble.orders()}\n{excerpt(srv.text())}")
    check_stop(ctx, tag, srv)


@pytest.mark.facil
def test_renewal_is_served_by_every_worker_while_keepalive_connections_stay_open(ctx, pebble, cache):
    tag = "[static] acme renewal"
    renew_after = 12
    name = NAMES[0]
    srv, root, workers = start(ctx, pebble, cache, names=(name,),
                               env={"FIO_TLS_ACME_TEST_RENEW_AFTER": str(renew_after)})
    if not root or not check_issued(ctx, tag, srv, pebble, cache, workers, names=(name,)):
        return
    first = cached_der(cache, name)
    held = []
    try:
        held = [KeepAlive(srv.port, name) for _ in range(8)]
        before = {c.pid() for c in held}
        if not ctx.check(f"{tag}: a renewal after {renew_after} s is issued",
                         wait_issued(srv, name, count=2, timeout=renew_after + ISSUE_TIMEOUT),
                         excerpt(srv.text())):
            return
        second = cached_der(cache, name)
        time.sleep(RELOAD + 1)
        ctx.check(f"{tag}: the renewed certificate is a new one", second and second != first)
        check_sweep(ctx, f"{tag}: every worker serves the renewed certificate", srv, name, workers,
                    second, {first: "first", second: "renewed"})
        try:
            after = {c.pid() for c in held}
            ok, err = after <= set(workers), ""
        except (OSError, ssl.SSLError, ConnectionError) as e:
            ok, err = False, f"{type(e).__name__}: {e}"
        ctx.check(f"{tag}: 8 keep-alive connections opened before the renewal still answer "
                  f"(workers {sorted(before)})", ok, err)
    finally:
        for c in held:
            c.close()
    check_stop(ctx, tag, srv)


@pytest.mark.facil
def test_pebble_down_serving_goes_on_with_back_off_then_issues(ctx, tools, cache):
    tag = "[static] acme, CA down"
    pebble = Pebble(ctx, tls_port=free_port(), start=False)
    name = NAMES[0]
    srv, root, workers = start(ctx, pebble, cache, names=(name,))
    if not root:
        return
    warned = srv.wait_for(r'^WARNING: fio_tls: ACME: no certificate for "a\.acme\.test" '
                          r'\(attempt 1 failed\): ACME server unreachable: .*next attempt in (\d+) s', 15)
    if not ctx.check(f"{tag}: one WARNING with the back-off", warned, excerpt(srv.text())):
        return
    try:
        pid, der = probe(srv.port, name)
        ok, err = pid in workers, ""
    except (OSError, ssl.SSLError, ConnectionError) as e:
        ok, err = False, f"{e}"
    ctx.check(f"{tag}: serving goes on (self-signed) while the CA is down", ok, err)
    pebble.start()
    if not ctx.check(f"{tag}: pebble starts", pebble.ready(), excerpt(pebble.log())):
        return
    wait = int(warned.group(1))
    if not ctx.check(f"{tag}: the certificate is issued once pebble is back (after the "
                     f"{wait} s back-off)", wait_issued(srv, name, timeout=wait + ISSUE_TIMEOUT),
                     excerpt(srv.text())):
        return
    ctx.check(f"{tag}: exactly one WARNING before that",
              len(re.findall(r"^WARNING: fio_tls: ACME", srv.text(), re.M)) == 1, excerpt(srv.text()))
    check_stop(ctx, tag, srv)


@pytest.mark.facil
def test_a_challenge_failure_warns_with_the_problem_and_spares_the_other_name(ctx, pebble, cache):
    tag = "[static] acme, challenge failure"
    bad, good = NAMES
    # nothing listens on 127.0.0.2 at the server's port: the VA fails
    ctx.check(f"{tag}: challtestsrv answers 127.0.0.2 for {bad}", pebble.add_a(bad, ["127.0.0.2"]))
    srv, root, workers = start(ctx, pebble, cache)
    if not root:
        return
    warned = srv.wait_for(rf'^WARNING: fio_tls: ACME: no certificate for "{re.escape(bad)}" '
                          r"\(attempt 1 failed\): problem (urn:ietf:params:acme:error:\S+) "
                          r"\(HTTP \d+\): (.+); next attempt in \d+ s", ISSUE_TIMEOUT)
    detail = warned and warned.group(2)
    ctx.check(f"{tag}: one WARNING with pebble's problem type and detail for {bad}",
              # the address only pebble's VA saw (from challtestsrv)
              warned and f"127.0.0.2:{srv.port}" in detail,
              f"{excerpt(srv.text())}\n--- pebble\n{excerpt(pebble.log())}")
    ctx.check(f"{tag}: {good} is issued", wait_issued(srv, good), excerpt(srv.text()))
    ctx.check(f"{tag}: {bad} is not issued and has no certificate in the cache",
              cached_der(cache, bad) is None and "issued" not in
              "".join(l for l in srv.text().splitlines() if bad in l), excerpt(srv.text()))
    check_stop(ctx, tag, srv)


def write_challenge(ctx, cache, name, digest):
    """What the client writes for a pending name: challenges/<name>.pem
    with a key and an RFC 8737 challenge certificate (made here by the
    openssl command)."""
    d = os.path.join(cache, "challenges")
    os.makedirs(d, exist_ok=True)
    key, cert = os.path.join(ctx.tmp, "ch.key"), os.path.join(ctx.tmp, "ch.pem")
    ctx.pki.ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=challenge",
                 "-addext", f"subjectAltName=DNS:{name}",
                 "-addext", "1.3.6.1.5.5.7.1.31=critical,DER:0420" + digest.hex())
    with open(os.path.join(d, f"{name}.pem"), "wb") as out:
        out.write(open(key, "rb").read() + open(cert, "rb").read())
    return pem_der(open(cert).read())


@pytest.mark.facil
def test_a_pending_challenge_is_answered_by_whichever_worker_and_closed_without_the_application(
        ctx, cache):
    """A challenge file in the cache (as the client writes it) is served by
    whichever worker accepts an acme-tls/1 ClientHello; the connection ends
    after the handshake and no request on it reaches the application. The
    CA is unreachable here: serving goes on regardless."""
    tag = "[static] acme responder"
    name = "c.acme.test"
    srv, root, workers = start_renew(
        ctx, "acme-responder", [], RELOAD, mode=["acme", str(WORKERS), name],
        env={"FIO_TLS_ACME_DIRECTORY": f"https://127.0.0.1:{free_port()}/dir",
             "FIO_TLS_ACME_DIR": cache})
    if not root:
        return
    want = write_challenge(ctx, cache, name, hashlib.sha256(b"token.thumbprint").digest())
    served, answered, alpn = set(), [], []
    for _ in range(12):
        r = s_client(srv.port, "-servername", name, "-alpn", "acme-tls/1", "-showcerts",
                     input=f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.text, re.S)
        served.add(pem_der(m.group(0)) if m else None)
        alpn.append("ALPN protocol: acme-tls/1" in r.text)
        answered += ["pid=" in r.text]
    ctx.check(f"{tag}: 12 acme-tls/1 handshakes get the challenge certificate and ALPN acme-tls/1",
              served == {want} and all(alpn), excerpt(r.text))
    ctx.check(f"{tag}: no request on them reaches the application", not any(answered),
              excerpt(r.text))
    pid, der = probe(srv.port, name)
    ctx.check(f"{tag}: an ordinary ClientHello for the name gets its own certificate",
              pid in workers and der != want)
    others = [l for l in srv.text().splitlines()
              if re.match(r"(WARNING|ERROR): ", l) and not l.startswith("WARNING: fio_tls: ACME:")]
    ctx.check(f"{tag}: the validation connections leave no WARNING (only the unreachable "
              f"CA's)", not others, "\n".join(others))
    check_stop(ctx, tag, srv)


@pytest.mark.facil
def test_another_worker_takes_over_when_the_client_process_dies(ctx, cache):
    """The election lock frees with its process: after SIGKILL of the worker
    that talks to the CA, another worker (or its respawned successor) takes
    over at its next watch pass. The CA is unreachable here (no pebble
    needed): what is looked at is who talks."""
    tag = "[static] acme election"
    srv, root, workers = start_renew(
        ctx, "acme-election", [], RELOAD, mode=["acme", str(WORKERS), NAMES[0]],
        env={"FIO_TLS_ACME_DIRECTORY": f"https://127.0.0.1:{free_port()}/dir",
             "FIO_TLS_ACME_DIR": cache})
    if not root:
        return
    first = srv.wait_for(r"ACME: process (\d+) talks to", 10)
    if not ctx.check(f"{tag}: one worker talks to the CA", first and int(first.group(1)) in workers,
                     excerpt(srv.text())):
        return
    os.kill(int(first.group(1)), signal.SIGKILL)
    deadline = time.monotonic() + 5 * RELOAD + 5
    talkers = []
    while time.monotonic() < deadline:
        talkers = re.findall(r"ACME: process (\d+) talks to", srv.text())
        if len(talkers) >= 2:
            break
        time.sleep(0.1)
    ctx.check(f"{tag}: after SIGKILL of {first.group(1)} exactly one other process takes over",
              len(talkers) == 2 and talkers[1] != talkers[0] and int(talkers[1]) != root,
              excerpt(srv.text()))
    srv.stop()


@pytest.mark.facil
def test_acme_tls_1_without_acme_is_a_handshake_failure(ctx):
    tag = "[static] no ACME"
    srv = ctx.start("static", ["selfsigned", "{port}", "a.test"], "acme-off")
    if not ctx.check(f"{tag}: server starts", srv.alive(), excerpt(srv.text())):
        return
    check_acme_alpn_refused(ctx, tag, srv.port, "a.test")
    r = s_client(srv.port, "-servername", "a.test", "-alpn", "http/1.1")
    ctx.check(f"{tag}: an ordinary ClientHello still completes", r.rc == 0, excerpt(r.text))
