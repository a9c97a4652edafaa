"""Session tickets against real facil.io servers: a fresh ticket on every
resumed TLS 1.3 handshake, and fleet ticket keys (FIO_TLS_TICKET_KEY_FILE)
shared by separate server process trees ("hosts") on this machine.

Each host is `fio_server -w 2 certs PORT localhost KEY CERT` (facil.io root
plus two worker processes, in its own session) with the test PKI's
localhost certificate; the client is Python's `ssl` (one SSLContext per TLS
version, so that its sessions can be offered again). Which ticket a client
holds is told by `SSLSession.id`: OpenSSL's client names a session it got
from a NewSessionTicket after the ticket's hash, so a new ticket is a new
id, and a resumption that got no ticket leaves the offered session (and id)
in place.

Clock skew between hosts is made with the documented test knob
FIO_TLS_TEST_TICKET_CLOCK_OFFSET (seconds added to the clock that picks the
key period, in that process only). The offsets used are whole periods, so
the period difference between two hosts stays the same even if a period
boundary passes; the steps that hold a ticket across hosts still wait out
the last half minute of a period so that a ticket never ages by a period
in the middle of a step.
"""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from fiotest.proc import excerpt, free_port

pytestmark = pytest.mark.facil

MODE = "static"
PERIOD = 3600  # FIO_TLS_TICKET_KEY_SECONDS, left at its default
HELLO = b"Hello from facil.io over fio_tls\n"  # fio_server's answer on "/"
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
VERSIONS = {"TLS 1.2": ssl.TLSVersion.TLSv1_2, "TLS 1.3": ssl.TLSVersion.TLSv1_3}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
class Client:
    """A Python ssl client of one TLS version that trusts the test CA."""

    def __init__(self, pki, version):
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.load_verify_locations(pki.ca_pem)
        c.minimum_version = c.maximum_version = version
        self.ctx = c

    def get(self, port, session=None):
        """One GET / on a new connection offering `session`. Returns
        (resumed, the session held after the response, error or None)."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with self.ctx.wrap_socket(raw, server_hostname="localhost",
                                          session=session) as s:
                    s.sendall(REQUEST)
                    body = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    # the tickets came before the response: s.session is the
                    # newest one now
                    if HELLO not in body:
                        return s.session_reused, s.session, f"unexpected answer {body[:200]!r}"
                    return s.session_reused, s.session, None
        except (OSError, ssl.SSLError) as e:
            return False, None, f"{type(e).__name__}: {e}"


def make_key_file(path, nbytes=48, mode=None):
    """The README's recipe: `(umask 077 && openssl rand 48 > FILE)`; then
    `mode` (chmod) when given."""
    r = subprocess.run(["sh", "-c", 'umask 077 && openssl rand "$1" > "$2"', "sh",
                        str(nbytes), path], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    if mode is not None:
        os.chmod(path, mode)
    return path


class Hosts:
    """Separate fio_server process trees, each in its own session (facil.io
    signals its whole process group), stopped at the test's end."""

    def __init__(self, ctx):
        self.ctx, self.started = ctx, []

    def start(self, label, key_file=None, offset=None, workers=2, env=None):
        extra = dict(env or {})
        if key_file:
            extra["FIO_TLS_TICKET_KEY_FILE"] = key_file
        if offset is not None:
            extra["FIO_TLS_TEST_TICKET_CLOCK_OFFSET"] = str(offset)
        argv = ["setsid", self.ctx.binary(MODE, "fio_server"), "-w", str(workers),
                "certs", "{port}", "localhost", *self.ctx.pki.localhost]
        for _ in range(3):
            srv = self.ctx.server(argv, f"{MODE}-{label}", env=self.ctx.env(MODE, extra),
                                  port=free_port())
            self.started.append(srv)
            if srv.wait_ready():
                return srv
            srv.stop()
            if "Address already in use" not in srv.text():
                break
        raise AssertionError(f"host {label} did not start:\n{excerpt(srv.text())}")

    def stop_all(self):
        for srv in self.started:
            if srv.alive():
                srv.stop()
            try:  # workers left behind by a root that had to be killed
                os.killpg(srv.proc.pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def hosts(ctx):
    if not shutil.which("setsid"):
        pytest.skip("setsid(1) is not installed (util-linux)")
    h = Hosts(ctx)
    yield h
    h.stop_all()


def away_from_period_boundary(margin=30):
    """Sleeps past the next key period boundary when it is near, so that a
    step never sees a ticket age by one period."""
    left = PERIOD - time.time() % PERIOD
    if left < margin:
        time.sleep(left + 1)


def resumes(ctx, name, client, session, port):
    """Checks that `session` resumes on `port`."""
    resumed, _, err = client.get(port, session)
    return ctx.check(name, resumed and err is None, f"resumed={resumed} error={err}")


def does_not_resume(ctx, name, client, session, port):
    """Checks that `session` gets a full handshake (and an answer) on `port`."""
    resumed, _, err = client.get(port, session)
    return ctx.check(name, not resumed and err is None, f"resumed={resumed} error={err}")


def session_of(ctx, tag, client, port):
    """A new session (full handshake) from `port`."""
    resumed, session, err = client.get(port)
    ctx.check(f"{tag}: full handshake and answer", not resumed and err is None and session,
              f"resumed={resumed} error={err}")
    return session


# ---------------------------------------------------------------------------
# item 8: a fresh ticket on every resumed TLS 1.3 handshake
# ---------------------------------------------------------------------------
def test_tls13_client_using_each_ticket_once_always_resumes(ctx, hosts):
    """Ten connections in a row, each offering the ticket the one before it
    received (each ticket once, as browsers do): all resume, each gets a
    new ticket. TLS 1.2 (control, RFC 5077): a resumption in the same key
    period keeps its ticket."""
    srv = hosts.start("single")
    client = Client(ctx.pki, ssl.TLSVersion.TLSv1_3)
    resumed, session, err = client.get(srv.port)
    ctx.check("TLS 1.3: first connection: full handshake, a ticket received",
              not resumed and err is None and session is not None and session.has_ticket,
              f"resumed={resumed} error={err} session={session}")
    if session is None:
        return
    offered = [session.id]
    results = []
    for i in range(10):
        resumed, new, err = client.get(srv.port, session)
        fresh = new is not None and new.id not in offered
        results.append((i + 1, resumed, fresh, err))
        if new is None:
            break
        session = new
        offered.append(new.id)
    ctx.check("TLS 1.3: 10 connections each offering the previous one's ticket: all resume",
              len(results) == 10 and all(r[1] and r[3] is None for r in results),
              "\n".join(f"connection {n}: resumed={r} error={e}" for n, r, _, e in results))
    ctx.check("TLS 1.3: each resumed handshake received a new ticket (no ticket offered twice)",
              len(results) == 10 and all(r[2] for r in results),
              "\n".join(f"connection {n}: new ticket={f}" for n, _, f, _ in results))

    away_from_period_boundary()
    client = Client(ctx.pki, ssl.TLSVersion.TLSv1_2)
    resumed, session, err = client.get(srv.port)
    same = []
    for _ in range(3):
        resumed, new, err = client.get(srv.port, session)
        same.append((resumed, err, new is not None and new.id == session.id))
    ctx.check("TLS 1.2 (control): resumptions in the current key period resume and keep "
              "their ticket (RFC 5077)", all(r and e is None and s for r, e, s in same),
              repr(same))


# ---------------------------------------------------------------------------
# item 7: fleet ticket keys
# ---------------------------------------------------------------------------
def test_hosts_with_the_same_key_file_resume_each_others_sessions(ctx, hosts):
    """Two hosts with the same key file resume each other's sessions (TLS
    1.2 and 1.3); two hosts without it do not; hosts whose clocks are one
    key period apart still do, two periods apart do not."""
    key = make_key_file(os.path.join(ctx.tmp, "fleet.key"))
    a = hosts.start("A", key_file=key)
    b = hosts.start("B", key_file=key)
    plain1 = hosts.start("plain1", workers=1)
    plain2 = hosts.start("plain2", workers=1)
    ahead = hosts.start("ahead", key_file=key, offset=PERIOD, workers=1)
    far = hosts.start("far", key_file=key, offset=2 * PERIOD, workers=1)
    for srv in (a, b):
        ctx.check(f"{os.path.basename(srv.log_path)}: INFO line names the key file",
                  f'INFO: fio_tls: session ticket keys derive from the ticket key file "{key}"'
                  in srv.text(), excerpt(srv.text()))
    for vname, version in VERSIONS.items():
        client = Client(ctx.pki, version)
        away_from_period_boundary()
        s = session_of(ctx, f"{vname} host A", client, a.port)
        resumes(ctx, f"{vname}: a session from host A resumes on host B", client, s, b.port)
        s = session_of(ctx, f"{vname} host B", client, b.port)
        resumes(ctx, f"{vname}: a session from host B resumes on host A", client, s, a.port)

        s = session_of(ctx, f"{vname} host plain1", client, plain1.port)
        resumes(ctx, f"{vname} (control): without the key file a session resumes on its own host",
                client, s, plain1.port)
        does_not_resume(ctx, f"{vname}: without the key file a session does not resume on "
                        "another host", client, s, plain2.port)
        does_not_resume(ctx, f"{vname}: a session of a host without the key file does not "
                        "resume on a host with it", client, s, a.port)

        s = session_of(ctx, f"{vname} host ahead", client, ahead.port)
        resumes(ctx, f"{vname}: clocks one period apart: a session from the host ahead resumes "
                "on host A (its next period)", client, s, a.port)
        s = session_of(ctx, f"{vname} host A", client, a.port)
        resumes(ctx, f"{vname}: clocks one period apart: a session from host A resumes on the "
                "host ahead (its previous period)", client, s, ahead.port)
        s = session_of(ctx, f"{vname} host far", client, far.port)
        does_not_resume(ctx, f"{vname}: clocks two periods apart: no resumption (the window "
                        "is one period either way)", client, s, a.port)
        resumes(ctx, f"{vname} (control): the far host resumes its own session", client, s,
                far.port)


def test_key_files_open_to_others_or_short_are_refused(ctx, hosts):
    """A key file of mode 0644 (and one of 16 bytes) is an ERROR naming the
    file; the host serves, with tickets under its per-process secret: its
    sessions resume on itself but not on a host that has the same secret in
    a good file."""
    good = make_key_file(os.path.join(ctx.tmp, "good.key"))
    exposed = os.path.join(ctx.tmp, "exposed.key")
    shutil.copyfile(good, exposed)
    os.chmod(exposed, 0o644)
    short = make_key_file(os.path.join(ctx.tmp, "short.key"), nbytes=16)
    a = hosts.start("A", key_file=good, workers=1)
    bad = hosts.start("exposed", key_file=exposed, workers=1)
    tiny = hosts.start("short", key_file=short, workers=1)
    log = bad.text()
    ctx.check("mode 0644: one ERROR line naming the file and its mode",
              log.count(f'ERROR: fio_tls: session ticket key file "{exposed}": readable or '
                        "writable by group or others (mode 0644)") == 1, excerpt(log))
    log = tiny.text()
    ctx.check("16 bytes: one ERROR line naming the file and its size",
              log.count(f'ERROR: fio_tls: session ticket key file "{short}": holds 16 bytes') == 1,
              excerpt(log))
    for vname, version in VERSIONS.items():
        client = Client(ctx.pki, version)
        away_from_period_boundary()
        for label, srv in (("mode 0644", bad), ("16 bytes", tiny)):
            s = session_of(ctx, f"{vname} {label} host", client, srv.port)
            resumes(ctx, f"{vname}: {label}: the host still resumes its own sessions",
                    client, s, srv.port)
            does_not_resume(ctx, f"{vname}: {label}: its session does not resume on a host "
                            "with a good key file", client, s, a.port)


def test_a_changed_key_file_issues_at_once_and_the_old_secret_still_resumes(ctx, hosts):
    """Host A's key file is replaced (a new secret renamed over it) while it
    runs (FIO_TLS_RELOAD_SECONDS=1): within the interval A seals new tickets
    with the new secret (they resume on a host that has only the new file,
    not on one with only the old), and sessions of the old secret still
    resume on A."""
    path = make_key_file(os.path.join(ctx.tmp, "fleet.key"))
    old_copy = os.path.join(ctx.tmp, "old.key")
    shutil.copyfile(path, old_copy)
    os.chmod(old_copy, 0o600)
    new = make_key_file(os.path.join(ctx.tmp, "new.key"))
    a = hosts.start("A", key_file=path, env={"FIO_TLS_RELOAD_SECONDS": "1"})
    old_host = hosts.start("old-only", key_file=old_copy, workers=1)
    new_host = hosts.start("new-only", key_file=new, workers=1)
    away_from_period_boundary()
    clients = {v: Client(ctx.pki, version) for v, version in VERSIONS.items()}
    before = {v: session_of(ctx, f"{v} host A before the change", c, a.port)
              for v, c in clients.items()}
    staged = os.path.join(ctx.tmp, "fleet.key.new")
    shutil.copyfile(new, staged)
    os.chmod(staged, 0o600)
    os.rename(staged, path)
    line = f'INFO: fio_tls: session ticket key file "{path}": new secret'
    # the check runs every second in each worker that has served a
    # connection (and at a worker's first connection): wait for the first
    # worker's line, then give the other one more than an interval
    ctx.check("host A saw the new key file within 10 s", a.wait_for(re.escape(line), 10),
              excerpt(a.text()))
    time.sleep(1.5)
    for v, client in clients.items():
        s = session_of(ctx, f"{v} host A after the change", client, a.port)
        resumes(ctx, f"{v}: after the change, host A's new session resumes on a host with "
                "only the new key file", client, s, new_host.port)
        does_not_resume(ctx, f"{v}: ... and not on a host with only the old one", client, s,
                        old_host.port)
        resumes(ctx, f"{v}: a session host A made before the change still resumes on it",
                client, before[v], a.port)
    log = a.text()
    ctx.check("host A logged the new secret (one INFO line per worker that saw the change)",
              1 <= log.count(line) <= 2, excerpt(log))
