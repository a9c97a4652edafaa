"""The API misuse table and the secrets checks (was c_tests/misuse.py).

c_tests/programs/misuse.c holds a table of wrong calls of the fio_tls API
(bad names, files, objects, uuids); each row runs in a child process and the
program prints `ok - ROW` / `not ok - ROW`. Here:

  test_table        every misuse binary once at the default log level: one
                    check per row, the run ends, no key material in any
                    output line (with MISUSE_CANARY: first, a use-after-free
                    in a child must be reported: the sanitizers work);
  test_table_level  the first binary again at every level of MISUSE_LEVELS,
                    the others at level 5: one check for the whole table,
                    the run ends, no key material in any line;
  test_server_*     (facil.io) fio_server logs at level 5 while good and bad
                    clients connect: no key material and no session secret
                    in its log; no copy of the key file left in its memory;
                    SSLKEYLOGFILE unset: no key log anywhere; set: the file
                    gets exactly the secrets the client's own -keylogfile
                    shows, in NSS key log format, mode 0600, one WARNING.

Options, as environment variables (`make check-asan` sets them):
  MISUSE_BINS    the misuse binaries, separated by spaces (default
                 BUILD/misuse/misuse BUILD/misuse/misuse_facil); a binary
                 whose name holds "facil" needs facil.io (marker `facil`)
  MISUSE_LEVELS  the FIO_LOG_LEVELs of the first binary (default
                 0,1,2,3,4,5); the other binaries run at level 5
  MISUSE_CANARY  1: test_table first checks the sanitizer canary
  MISUSE_SERVER  the facil.io-linked server of test_server_* (default
                 BUILD/c_tests/static/fio_server)
e.g. `make check-asan` runs
  MISUSE_BINS="build/misuse/misuse_asan build/misuse/misuse_facil_asan"
  MISUSE_LEVELS=5 MISUSE_CANARY=1 pytest c_tests/suites/test_misuse.py -k table

Rows as nobody: some rows drop to uid 65534 to meet a file of mode 000, so
the fixture directory and pytest's directories above it get o+x (pytest makes
them 0700); any other directory above that others cannot traverse is an
error of the fixture (use a --basetemp elsewhere).

Tolerance: none. A row misuse.c marks as a known library bug ("# TODO") is
a failed check here, like any other failed row.
"""
import base64
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest

from fiotest.proc import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEVELS = [int(x) for x in os.environ.get("MISUSE_LEVELS", "0,1,2,3,4,5").split(",") if x]
CANARY = os.environ.get("MISUSE_CANARY", "") not in ("", "0")

UMASK = os.umask(0o022)
os.umask(UMASK)


def _binaries(config):
    env = os.environ.get("MISUSE_BINS", "").split()
    if env:
        return [os.path.abspath(b) for b in env]
    d = os.path.join(os.path.abspath(config.getoption("--build-dir")), "misuse")
    return [os.path.join(d, "misuse"), os.path.join(d, "misuse_facil")]


def _param(binary, *more):
    marks = [pytest.mark.facil] if "facil" in os.path.basename(binary) else []
    ids = "-".join([os.path.basename(binary), *(f"level{m}" for m in more)])
    return pytest.param(binary, *more, marks=marks, id=ids)


def pytest_generate_tests(metafunc):
    if "binary" not in metafunc.fixturenames:
        return
    bins = _binaries(metafunc.config)
    if "level" in metafunc.fixturenames:
        pairs = [(bins[0], level) for level in LEVELS] + [(b, 5) for b in bins[1:]]
        metafunc.parametrize(("binary", "level"), [_param(b, l) for b, l in pairs])
    else:
        metafunc.parametrize("binary", [_param(b) for b in bins])


@pytest.fixture
def pki():
    """The shared test PKI is not used here (the table has its own files)."""
    return None


def ossl(*args):
    r = run(["openssl", *args], timeout=60)
    if r.rc != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.text}")
    return r.out


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------
def make_fixtures(d):
    os.chmod(d, 0o755)  # rows run as nobody must reach the files
    p = lambda name: os.path.join(d, name)  # noqa: E731
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", p("key.pem"))
    ossl("req", "-new", "-x509", "-key", p("key.pem"), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-days", "30", "-out", p("cert.pem"))
    shutil.copy(p("cert.pem"), p("ca.pem"))
    # a leaf followed by a certificate that did not issue it
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", p("stranger_key.pem"))
    ossl("req", "-new", "-x509", "-key", p("stranger_key.pem"), "-subj", "/CN=stranger",
         "-days", "30", "-out", p("stranger.pem"))
    # an expired certificate (valid until a day before it was made)
    ossl("req", "-new", "-key", p("key.pem"), "-subj", "/CN=localhost", "-out", p("expired.csr"))
    ossl("x509", "-req", "-in", p("expired.csr"), "-signkey", p("key.pem"), "-days", "-1",
         "-out", p("expired.pem"))
    # a key too small for OpenSSL's security level
    ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
         "-out", p("rsa1024_key.pem"))
    ossl("req", "-new", "-x509", "-key", p("rsa1024_key.pem"), "-subj", "/CN=localhost",
         "-days", "30", "-out", p("rsa1024.pem"))
    with open(p("wrong_chain.pem"), "w") as f:
        f.write(open(p("cert.pem")).read() + open(p("stranger.pem")).read())
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", p("other_key.pem"))
    ossl("pkey", "-in", p("key.pem"), "-aes-128-cbc", "-passout", "pass:secret",
         "-out", p("enc_key.pem"))
    # DER forms: key, certificate, encrypted PKCS#8 key, a two-certificate
    # chain (out of order), a certificate followed by 5 junk bytes
    ossl("pkey", "-in", p("key.pem"), "-outform", "DER", "-out", p("key.der"))
    ossl("x509", "-in", p("cert.pem"), "-outform", "DER", "-out", p("cert.der"))
    ossl("pkcs8", "-topk8", "-in", p("key.pem"), "-outform", "DER", "-v2", "aes-128-cbc",
         "-passout", "pass:secret", "-out", p("enc_key.der"))
    cert_der = open(p("cert.der"), "rb").read()
    with open(p("wrong_chain.der"), "wb") as f:
        f.write(cert_der + ossl("x509", "-in", p("stranger.pem"), "-outform", "DER"))
    with open(p("trailing.der"), "wb") as f:
        f.write(cert_der + b"junk\n")
    with open(p("garbage.pem"), "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n")
    os.mkdir(p("dir"))
    os.symlink("loop_b", p("loop_a"))
    os.symlink("loop_a", p("loop_b"))
    os.mkfifo(p("fifo"))
    with open(p("junk50m"), "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(50):
            f.write(chunk)
    open(p("empty"), "wb").close()
    shutil.copy(p("key.pem"), p("mode000"))
    os.chmod(p("mode000"), 0)
    for name in ("key.pem", "cert.pem", "ca.pem", "other_key.pem", "enc_key.pem",
                 "wrong_chain.pem", "stranger.pem", "stranger_key.pem",
                 "rsa1024.pem", "rsa1024_key.pem", "expired.pem",
                 "garbage.pem", "junk50m", "empty", "key.der", "cert.der", "enc_key.der",
                 "wrong_chain.der", "trailing.der"):
        os.chmod(p(name), 0o644)


def key_secrets(d):
    """Strings that must never show up in a log: every base64 line of the
    key PEM files, the DER in hex, and the private scalar in hex."""
    secrets = []
    for name in ("key.pem", "other_key.pem"):
        pem = open(os.path.join(d, name)).read()
        secrets += [l for l in pem.splitlines() if l and not l.startswith("-----")]
        der = ossl("pkey", "-in", os.path.join(d, name), "-outform", "DER")
        secrets.append(der.hex())
        secrets.append(base64.b64encode(der).decode()[:40])
        text = ossl("pkey", "-in", os.path.join(d, name), "-noout", "-text").decode()
        m = re.search(r"priv:\s*((?:[0-9a-f]{2}:?\s*)+)", text)
        if m:
            scalar = re.sub(r"[^0-9a-f]", "", m.group(1)).lstrip("0")
            secrets += [scalar, scalar.upper()]
    return [s for s in secrets if len(s) >= 16]


def leaked(text, secrets):
    flat = re.sub(r"\s", "", text)
    return [s for s in secrets if s in text or s in flat]


class Fixtures:
    def __init__(self, d, secrets):
        self.d, self.secrets = d, secrets
        self.key, self.cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")


def let_others_traverse(d, ours):
    """Gives others search (x) permission on `d` and on those of its parent
    directories that are in `ours`; returns the parents others still cannot
    traverse."""
    blocked = []
    p = os.path.abspath(d)
    while True:
        mode = os.stat(p).st_mode
        if not mode & stat.S_IXOTH:
            if p == d or p in ours:
                os.chmod(p, stat.S_IMODE(mode) | stat.S_IXOTH)
            else:
                blocked.append(p)
        if p == os.path.dirname(p):
            return blocked
        p = os.path.dirname(p)


@pytest.fixture(scope="module")
def fix(tmp_path_factory):
    """The files of misuse.c's table (FIXDIR) and the key secrets."""
    d = os.path.join(tmp_path_factory.mktemp("misuse"), "fix")
    os.mkdir(d)
    # the AS_NOBODY rows must reach FIXDIR: open pytest's own directories
    # (pytest makes them 0700) for traversal, not for listing
    base = str(tmp_path_factory.getbasetemp())
    ours = {os.path.dirname(d), base}
    if os.path.basename(os.path.dirname(base)).startswith("pytest-of-"):
        ours.add(os.path.dirname(base))
    blocked = let_others_traverse(d, ours)
    if blocked:
        raise RuntimeError(f"the AS_NOBODY rows cannot reach {d}: others may not traverse "
                           f"{blocked}; give pytest a --basetemp under a directory they can")
    make_fixtures(d)
    yield Fixtures(d, key_secrets(d))
    # 50 MiB nobody needs to look at after a failure
    os.unlink(os.path.join(d, "junk50m"))


# ---------------------------------------------------------------------------
# the C table
# ---------------------------------------------------------------------------
def tag_of(binary, level=None):
    name = os.path.relpath(binary, ROOT)
    return f"[{name}]" if level is None else f"[{name} FIO_LOG_LEVEL={level}]"


def run_table(ctx, binary, fix, level, tag, per_row):
    """One run of a misuse binary. per_row: one check per table row (else
    one check for the whole run, listing the rows that failed; the rows of
    known bugs are left out: they fail in the per-row run)."""
    env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    if not per_row:
        env["MISUSE_SKIP_KNOWN_BUGS"] = "1"
    if level is None:
        env.pop("FIO_LOG_LEVEL", None)
    else:
        env["FIO_LOG_LEVEL"] = str(level)
    try:
        r = subprocess.run([binary, fix.d], capture_output=True, env=env, timeout=900)
        out, rc = r.stdout.decode(errors="replace"), r.returncode
        err = r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out, rc, err = (e.stdout or b"").decode(errors="replace"), None, "timed out"
    rows, bad_rows = 0, []
    for line in out.splitlines():
        m = re.match(r"^(ok|not ok) - (.*)$", line)
        if not m:
            continue
        rows += 1
        if per_row:
            # a row marked as a known library bug ("# TODO") fails too
            ctx.check(f"{tag}: {m.group(2)}", m.group(1) == "ok", _row_detail(out, line))
        elif m.group(1) != "ok":
            bad_rows.append(line + "\n" + _row_detail(out, line))
    if not per_row:
        ctx.check(f"{tag}: all {rows} rows as expected", rows > 0 and not bad_rows,
                  "\n".join(bad_rows))
    ctx.check(f"{tag}: the table ran to the end (exit status {rc})",
              rows > 0 and re.search(r"^\d+ passed, \d+ failed$", out, re.M) is not None
              and rc is not None, err[-3000:] + out[-2000:])
    bad = leaked(out + err, fix.secrets)
    ctx.check(f"{tag}: no key material in any log line", not bad,
              f"found: {[b[:24] + '...' for b in bad]}")
    return out


def _row_detail(out, line):
    lines = out.splitlines()
    i = lines.index(line)
    detail = []
    for l in lines[i + 1:]:
        if not l.startswith("#   "):
            break
        detail.append(l)
    return "\n".join(detail)


def test_table(ctx, fix, binary):
    tag = tag_of(binary)
    if CANARY:
        r = subprocess.run([binary, fix.d, "--canary"], capture_output=True)
        ctx.check(f"[{os.path.relpath(binary, ROOT)}] a use-after-free in a child is "
                  "reported (sanitizers work)", r.returncode == 0,
                  r.stdout.decode(errors="replace"))
    run_table(ctx, binary, fix, None, tag, True)


def test_table_level(ctx, fix, binary, level):
    run_table(ctx, binary, fix, level, tag_of(binary, level), False)


# ---------------------------------------------------------------------------
# a live server: logs, memory, SSLKEYLOGFILE
# ---------------------------------------------------------------------------
@pytest.fixture
def server_bin(paths):
    return os.path.abspath(os.environ.get("MISUSE_SERVER")
                           or paths.binary("static", "fio_server"))


def server_env(ctx, extra=None):
    env = ctx.env("static")
    env.pop("SSLKEYLOGFILE", None)
    env.update(extra or {})
    return env


def s_client(port, *opts, input=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"):
    try:
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                               "-servername", "localhost", "-ign_eof", *opts],
                              input=input, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, None, e.stdout or b"", e.stderr or b"")


def good_and_bad_clients(port, client_log):
    """A TLS 1.3 and a TLS 1.2 client (their secrets go to client_log),
    then bad ones: TLS 1.1, an unknown ALPN protocol, plain text, a junk
    handshake. Returns the two good runs."""
    r1 = s_client(port, "-tls1_3", "-keylogfile", client_log)
    r2 = s_client(port, "-tls1_2", "-keylogfile", client_log)
    s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    s_client(port, "-alpn", "nothing-known")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # plain text to the TLS port
        s.recv(4096)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes.fromhex("16030100") + os.urandom(64))  # junk handshake
        try:
            s.recv(4096)
        except OSError:
            pass
    return r1, r2


def key_copies_in_memory(pid, key_path):
    """Where the key file's bytes (a PEM base64 line, the armour line, the
    DER) still sit in the process's writable memory; None when it cannot be
    read. The library wipes the file bytes after parsing (OPENSSL_cleanse)."""
    pem = open(key_path).read()
    needles = {f"PEM line {i + 1}": l.encode()
               for i, l in enumerate(l for l in pem.splitlines() if l and not l.startswith("-----"))}
    needles["PEM armour"] = pem.splitlines()[0].encode()
    needles["DER"] = ossl("pkey", "-in", key_path, "-outform", "DER")
    found = {}
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb")
    except OSError:
        return None
    with mem:
        for m in maps:
            parts = m.split()
            if "rw" not in parts[1]:
                continue  # code and read-only data cannot hold a loaded file
            start, end = (int(x, 16) for x in parts[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            for name, needle in needles.items():
                if needle in data:
                    found.setdefault(name, []).append(parts[5] if len(parts) > 5 else parts[0])
    return found


def keylog_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def key_log_files(d):
    return [f for f in os.listdir(d) if re.search(r"key.?log", f, re.I)]


@pytest.mark.facil
def test_server_log_without_keylog(ctx, fix, server_bin):
    """Level 5 with SSLKEYLOGFILE unset: no secret in the log, no key log."""
    # the server runs in an empty directory of its own: nothing may appear there
    cwd = os.path.join(ctx.tmp, "server-cwd")
    os.mkdir(cwd)
    srv = ctx.server([server_bin, "-l", "5", "certs", "{port}", "localhost", fix.key, fix.cert],
                     "level5-unset", env=server_env(ctx), cwd=cwd)
    if not ctx.check("server (FIO_LOG_LEVEL=5, SSLKEYLOGFILE unset) starts",
                     srv.wait_ready(), srv.text()):
        return
    client_log = os.path.join(ctx.tmp, "client-unset.keys")
    r1, r2 = good_and_bad_clients(srv.port, client_log)
    ctx.check("server: TLS 1.3 and 1.2 clients served while logging at level 5",
              all(b"Hello from facil.io" in r.stdout for r in (r1, r2)),
              (r1.stdout + r1.stderr + r2.stderr).decode(errors="replace")[-2000:])
    time.sleep(0.5)
    srv.stop()
    log = srv.text()
    client_secrets = [l.split()[-1] for l in keylog_lines(client_log)]
    ctx.check("server: the handshakes left session secrets in the client's own key log "
              "(control for the next check)", len(client_secrets) >= 5,
              f"{len(client_secrets)} lines")
    bad = leaked(log, fix.secrets + client_secrets)
    ctx.check("server: no private key or session secret in its level-5 log "
              f"({len(log.splitlines())} lines, good and bad clients)", not bad,
              f"found: {[b[:24] + '...' for b in bad]}\n{log[-2000:]}")
    ctx.check("server: SSLKEYLOGFILE unset: no key log warning", "SSLKEYLOGFILE" not in log,
              log[-2000:])
    ctx.check("server: SSLKEYLOGFILE unset: no key log file written",
              not os.listdir(cwd), f"in the server's working directory: {os.listdir(cwd)}")
    stray = [f for f in key_log_files(ctx.tmp) if f != os.path.basename(client_log)]
    ctx.check("server: SSLKEYLOGFILE unset: no stray key log in the working directory",
              not stray and not key_log_files(cwd), str(stray + key_log_files(cwd)))


@pytest.mark.facil
def test_server_key_wiped(ctx, fix, server_bin):
    """The key file's bytes do not stay in the server's memory."""
    srv = ctx.server([server_bin, "-l", "5", "certs", "{port}", "localhost", fix.key, fix.cert],
                     "key-wiped", env=server_env(ctx))
    assert srv.wait_ready(), f"fio_server did not start:\n{srv.text()}"
    good_and_bad_clients(srv.port, os.path.join(ctx.tmp, "client.keys"))
    time.sleep(0.5)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "data = open(sys.argv[1]).read()\nprint('read', flush=True)\n"
                               "time.sleep(30)", fix.key], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        control = key_copies_in_memory(holder.pid, fix.key)
    finally:
        holder.kill()
        holder.wait()
    found = key_copies_in_memory(srv.proc.pid, fix.key)
    if found is None or control is None:
        pytest.skip("/proc/PID/mem not readable")
    ctx.check("server: the memory search finds the key file in a process that keeps "
              "it (control)", bool(control), str(control))
    ctx.check("server: no copy of the key file (PEM text, DER) left in the server's "
              "memory after loading and two handshakes", not found, str(found))


@pytest.mark.facil
def test_server_keylog(ctx, fix, server_bin):
    """SSLKEYLOGFILE set: an NSS key log identical to the client's; one
    warning."""
    keylog = os.path.join(ctx.tmp, "server.keylog")
    srv = ctx.server([server_bin, "certs", "{port}", "localhost", fix.key, fix.cert],
                     "keylog-set", env=server_env(ctx, {"SSLKEYLOGFILE": keylog}))
    client_log = os.path.join(ctx.tmp, "client-set.keys")
    if not ctx.check("server with SSLKEYLOGFILE set starts", srv.wait_ready(), srv.text()):
        return
    runs = [s_client(srv.port, "-tls1_3", "-keylogfile", client_log),
            s_client(srv.port, "-tls1_2", "-keylogfile", client_log),
            s_client(srv.port, "-tls1_3", "-keylogfile", client_log)]
    ctx.check("keylog: three handshakes served",
              all(b"Hello from facil.io" in r.stdout for r in runs),
              b"".join(r.stderr for r in runs).decode(errors="replace")[-2000:])
    time.sleep(0.3)
    srv.stop()
    log = srv.text()
    ours, theirs = keylog_lines(keylog), keylog_lines(client_log)
    labels = {l.split()[0] for l in ours}
    nss = all(re.match(r"^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]{64,}$", l) for l in ours)
    ctx.check(f"keylog: the file holds NSS key log lines ({len(ours)} lines, labels "
              f"{sorted(labels)})", ours and nss
              and {"CLIENT_RANDOM", "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                   "SERVER_TRAFFIC_SECRET_0"} <= labels, "\n".join(ours[:10]))
    ctx.check("keylog: exactly the secrets the client logged for the same sessions",
              sorted(ours) == sorted(theirs),
              f"server-only: {sorted(set(ours) - set(theirs))[:4]}\n"
              f"client-only: {sorted(set(theirs) - set(ours))[:4]}")
    warnings = [l for l in log.splitlines() if "SSLKEYLOGFILE" in l]
    ctx.check("keylog: one WARNING names the file, for three handshakes",
              len(warnings) == 1 and warnings[0].startswith("WARNING: fio_tls: ")
              and keylog in warnings[0], "\n".join(warnings) or log[-1500:])
    mode = os.stat(keylog).st_mode & 0o777 if os.path.exists(keylog) else None
    ctx.check(f"keylog: the file is private to its owner (mode "
              f"{oct(mode) if mode is not None else None}, umask {oct(UMASK)})",
              mode is not None and mode & 0o077 == 0)
    bad = leaked(log, fix.secrets + [l.split()[-1] for l in theirs])
    ctx.check("keylog: the secrets go to the file only, never to the log", not bad,
              f"found: {[b[:24] + '...' for b in bad]}")
