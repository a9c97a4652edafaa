#!/usr/bin/env python3
"""facil.io integration suite for libfio_tls (Python 3 standard library only).

The Makefile builds c_tests/fio_server.c and c_tests/demo.c once per link
mode into BIN_DIR/<mode>/ and then runs:

  facil_suite.py --bin-dir build/c_tests --preload-lib /abs/build/libfio_tls.so

Link modes (see FACIL_IO_NOTES.md):
  static   libfio_tls.a placed before libfacil.io.a        -> must work
  shared   libfio_tls.so before libfacil.io.so (DT_NEEDED)  -> must work
  preload  facil.io shared only, LD_PRELOAD=libfio_tls.so   -> must work
  broken   libfio_tls.so with libfacil.io.a                 -> must exit with
           facil.io's "HTTP SSL/TLS required but unavailable!" (FATAL)

Every scenario starts a real server on 127.0.0.1 (a port the OS chose) and
talks to it with real peers: curl, openssl s_client and gnutls-cli. The
certificates are made here, with the openssl command, in a temporary
directory. One line per check (`ok - ...` / `FAIL - ...`), then
`N passed, N failed`; the exit status is 1 when anything failed.
"""
import argparse
import atexit
import datetime
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BIG_BODY, fnv1a, free_port  # noqa: E402

HELLO = b"Hello from facil.io over fio_tls\n"
DEMO_BODY = b"Hello, TLS world! (facil.io + libfio_tls)\n"
FATAL_STUB = "HTTP SSL/TLS required but unavailable!"
WORKING_MODES = ("static", "shared", "preload")
STEP_TIMEOUT = 20  # seconds for any one client command


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------
def excerpt(text, limit=3000):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:1000] + "\n[...]\n" + text[-2000:]


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------
class Result:
    """What a finished client command gave back."""

    def __init__(self, rc, out, err, timed_out=False):
        self.rc, self.out, self.err, self.timed_out = rc, out, err, timed_out

    @property
    def text(self):
        return (self.out + b"\n" + self.err).decode("utf-8", "replace")


def run(argv, input=b"", timeout=STEP_TIMEOUT, env=None):
    try:
        p = subprocess.run(argv, input=input, capture_output=True,
                           timeout=timeout, env=env)
        return Result(p.returncode, p.stdout, p.stderr)
    except subprocess.TimeoutExpired as e:
        return Result(None, e.stdout or b"", (e.stderr or b"") +
                      f"\n[timed out after {timeout}s]".encode(), True)


LIVE = set()


@atexit.register
def _kill_leftovers():
    for p in list(LIVE):
        if p.poll() is None:
            p.kill()
            p.wait()


class Server(harness.LoggedProcess):
    """A fio_server/demo process (kind "server"), or another server program
    (client_suite: kind "peer"), logging to ctx.tmp/<kind>-<serial>-<label>.log.
    "{port}" in argv stands for its port."""

    def __init__(self, ctx, argv, label, env=None, port=None, kind="server", cwd=None):
        self.ctx = ctx
        self.port = port or free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        ctx.serial += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        self.started = time.monotonic()
        super().__init__(self.argv, os.path.join(ctx.tmp, f"{kind}-{ctx.serial:03d}-{safe}.log"),
                         env, cwd)
        LIVE.add(self.proc)
        self.rc = None

    def wait_ready(self, timeout=10):
        return self.wait_for(r"^READY \d+$", timeout) is not None

    def alive(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        LIVE.discard(self.proc)
        return self.rc

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s. Returns (rc, clean)."""
        clean = super().stop(signal.SIGTERM, 5)
        self.rc = self.proc.returncode
        LIVE.discard(self.proc)
        return self.rc, clean


class Interactive:
    """A client process fed through a pipe while its output is collected,
    for peers that must stay connected until the server answers."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        LIVE.add(self.proc)
        self.buf = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            with self.lock:
                self.buf += chunk

    def output(self):
        with self.lock:
            return self.buf

    def wait_for(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output(), re.M)
            if m:
                return m
            if self.proc.poll() is not None:
                self.reader.join(1)
                return re.search(pattern, self.output(), re.M)
            time.sleep(0.02)
        return None

    def send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def close(self, timeout=3):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(2)
        LIVE.discard(self.proc)
        return self.output().decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------
class Curl:
    def __init__(self, status, body, verbose, verify, rc):
        self.status, self.body, self.verbose = status, body, verbose
        self.verify, self.rc = verify, rc

    def protocol(self):
        m = re.search(r"SSL connection using (TLSv[\d.]+) / (\S+)", self.verbose)
        return (m.group(1), m.group(2)) if m else (None, None)


def curl(ctx, port, path="/", host="localhost", opts=(), timeout=10):
    """GET (or whatever opts say) https://host:port/path, host -> 127.0.0.1."""
    ctx.serial += 1
    body_path = os.path.join(ctx.tmp, f"curl-{ctx.serial:04d}.body")
    argv = ["curl", "-sS", "-v", "--max-time", str(timeout), "-o", body_path,
            "-w", "%{http_code} %{ssl_verify_result}"]
    if not re.match(r"^[\d.]+$", host):
        argv += ["--resolve", f"{host}:{port}:127.0.0.1"]
    argv += [*opts, f"https://{host}:{port}{path}"]
    r = run(argv, timeout=timeout + 5)
    fields = r.out.decode("ascii", "replace").split()
    body = b""
    if os.path.exists(body_path):
        with open(body_path, "rb") as f:
            body = f.read()
        os.unlink(body_path)
    return Curl(fields[0] if fields else None, body,
                r.err.decode("utf-8", "replace"),
                fields[1] if len(fields) > 1 else None, r.rc)


def curl_detail(c):
    return (f"curl rc={c.rc} status={c.status} verify={c.verify} "
            f"body={excerpt(c.body, 300)!r}\n{excerpt(c.verbose)}")


def s_client(port, *opts, input=b""):
    return run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *opts],
               input=input, timeout=10)


def handshake_refused(r):
    """s_client connected (TCP) but no TLS session came of it, in time."""
    return (r.rc not in (None, 0) and "CONNECTED(" in r.text
            and "Cipher is (NONE)" in r.text)


def served_chain(text):
    """[(subject, issuer)] from `s_client -showcerts`, and the PEM blocks."""
    chain = re.findall(r"^\s*\d+ s:(.*)\n\s+i:(.*)$", text, re.M)
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                      text, re.S)
    return chain, pems


def cert_text(ctx, pem):
    ctx.serial += 1
    path = os.path.join(ctx.tmp, f"peer-{ctx.serial:04d}.pem")
    with open(path, "w") as f:
        f.write(pem + "\n")
    return run(["openssl", "x509", "-noout", "-text", "-in", path]).text, path


def alpn_session(port, alpn=None, extra=(), message=b"ping fio\n"):
    """One s_client session: handshake, send `message`, wait for the echo.
    Returns (negotiated protocol or None, echo prefix or None, output)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
            "-servername", "localhost", *extra]
    if alpn:
        argv += ["-alpn", alpn]
    ic = Interactive(argv)
    prefix = None
    if ic.wait_for(rb"Verify return code:", 10):
        ic.send(message)
        m = ic.wait_for(rb"^([\w-]+):" + re.escape(message.strip()) + rb"$", 10)
        prefix = m.group(1).decode() if m else None
    out = ic.close()
    m = re.search(r"^ALPN protocol: (\S+)", out, re.M)
    return (m.group(1) if m else None), prefix, out


def plain_text_client_dropped(port, seconds=5):
    """Sends an HTTP request in clear text; True when the server hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if not s.recv(4096):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
    return False


# ---------------------------------------------------------------------------
# test PKI, made with the openssl command
# ---------------------------------------------------------------------------
class Pki:
    def __init__(self, d):
        self.d = d
        self._serial = random.randrange(1 << 32, 1 << 62)

    def p(self, name):
        return os.path.join(self.d, name)

    def ossl(self, *args):
        r = run(["openssl", *args], timeout=60)
        if r.rc != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.text}")

    def key(self, path, kind):
        if kind == "rsa":
            self.ossl("genpkey", "-algorithm", "RSA",
                      "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
        else:
            self.ossl("genpkey", "-algorithm", "EC",
                      "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)

    def sign(self, csr, issuer_pem, issuer_key, out, extensions):
        ext = out + ".ext"
        with open(ext, "w") as f:
            f.write("[v3]\n" + "\n".join(extensions) + "\n")
        self._serial += 1
        self.ossl("x509", "-req", "-in", csr, "-CA", issuer_pem,
                  "-CAkey", issuer_key, "-set_serial", str(self._serial),
                  "-days", "30", "-sha256", "-extfile", ext, "-extensions",
                  "v3", "-out", out)

    def leaf(self, name, sans, kind):
        """<name>.key, <name>.pem (leaf only), <name>-chain.pem (+ intermediate)."""
        key, csr, pem = self.p(f"{name}.key"), self.p(f"{name}.csr"), self.p(f"{name}.pem")
        self.key(key, kind)
        self.ossl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        usage = "digitalSignature,keyEncipherment" if kind == "rsa" else "digitalSignature"
        self.sign(csr, self.int_pem, self.int_key, pem, [
            "basicConstraints=critical,CA:FALSE",
            f"keyUsage=critical,{usage}",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(sans),
        ])
        chain = self.p(f"{name}-chain.pem")
        with open(chain, "w") as out:
            out.write(open(pem).read() + open(self.int_pem).read())
        return key, chain

    def make(self):
        self.ca_key, self.ca_pem = self.p("ca.key"), self.p("ca.pem")
        self.ossl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.ca_key,
                  "-out", self.ca_pem, "-days", "30", "-subj",
                  "/CN=fio_tls Test Root CA", "-addext",
                  "basicConstraints=critical,CA:TRUE", "-addext",
                  "keyUsage=critical,keyCertSign,cRLSign")
        self.int_key, self.int_pem = self.p("intermediate.key"), self.p("intermediate.pem")
        self.key(self.int_key, "ec")
        csr = self.p("intermediate.csr")
        self.ossl("req", "-new", "-key", self.int_key, "-subj",
                  "/CN=fio_tls Test Intermediate CA", "-out", csr)
        self.sign(csr, self.ca_pem, self.ca_key, self.int_pem, [
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        # localhost: RSA (so TLS 1.2 RSA-only suites can be offered to it);
        # a.test: ECDSA, also valid for www.a.test; b.test: RSA, + alt-b.test
        self.localhost = self.leaf("localhost", ["DNS:localhost", "IP:127.0.0.1"], "rsa")
        self.a = self.leaf("a.test", ["DNS:a.test", "DNS:www.a.test"], "ec")
        self.b = self.leaf("b.test", ["DNS:b.test", "DNS:alt-b.test"], "rsa")
        # bad inputs
        self.other_key = self.p("other.key")  # matches no certificate
        self.key(self.other_key, "rsa")
        self.encrypted_key = self.p("encrypted-pkcs8.key")
        self.ossl("pkey", "-in", self.localhost[0], "-aes-256-cbc", "-passout",
                  "pass:fio-secret", "-out", self.encrypted_key)
        self.encrypted_trad_key = self.p("encrypted-traditional.key")
        self.ossl("rsa", "-in", self.localhost[0], "-aes256", "-traditional",
                  "-passout", "pass:fio-secret", "-out", self.encrypted_trad_key)
        self.garbage = self.p("garbage.pem")
        with open(self.garbage, "w") as f:
            f.write("this file holds no certificate and no key\n" * 20)
        self.directory = self.p("a-directory")
        os.mkdir(self.directory)
        self.missing = self.p("does-not-exist.pem")
        self.public = self.p("public")
        os.mkdir(self.public)
        self.static_body = random.Random(7).randbytes(300_000)
        with open(os.path.join(self.public, "static.bin"), "wb") as f:
            f.write(self.static_body)
        self.post_body = random.Random(11).randbytes(300_000)
        self.post_file = self.p("post.bin")
        with open(self.post_file, "wb") as f:
            f.write(self.post_body)


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------
class Ctx:
    def __init__(self, suite, tmp, pki, bin_dir, preload_lib):
        self.suite, self.tmp, self.pki = suite, tmp, pki
        self.bin_dir, self.preload_lib = bin_dir, preload_lib
        self.serial = 0

    def binary(self, mode, program):
        return os.path.join(self.bin_dir, mode, program)

    def env(self, mode, extra=None):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.pop("FIO_TLS_HANDSHAKE_TIMEOUT", None)
        if mode == "preload":
            env["LD_PRELOAD"] = self.preload_lib
        env.update(extra or {})
        return env

    def start(self, mode, args, label, program="fio_server", ready=True, env=None):
        """Starts a server; retries on a port taken in the meantime."""
        for _ in range(3):
            srv = Server(self, [self.binary(mode, program), *args],
                         f"{mode}-{label}", env=self.env(mode, env))
            if not ready or srv.wait_ready():
                return srv
            srv.stop()
            if "Address already in use" not in srv.text():
                break
        return srv

    def check(self, *a, **k):
        return self.suite.check(*a, **k)


def check_ready(ctx, tag, srv):
    """Checks that the server listens; stops it when it does not."""
    if ctx.check(f"{tag}: server starts and listens", srv.alive() and
                 srv.wait_ready(0), excerpt(srv.text())):
        return True
    srv.stop()
    return False


def abandon(ctx, tag, srv):
    """After a failed first request: the rest of the scenario would only
    pile up timeouts, so it is skipped (the failure is already counted)."""
    print(f"# {tag}: skipping the rest of this scenario (first request failed)")
    srv.stop()


def check_clean_stop(ctx, tag, srv):
    rc, clean = srv.stop()
    text = srv.text()
    ctx.check(f"{tag}: server exits cleanly on SIGTERM (after fio_tls_destroy)",
              clean and rc == 0 and "STOPPED" in text and "panicked" not in text,
              f"rc={rc} clean={clean}\n{excerpt(text)}")


def scenario_selfsigned(ctx, mode):
    tag = f"[{mode}] self-signed"
    srv = ctx.start(mode, ["selfsigned", "{port}", "localhost"], "selfsigned")
    if not check_ready(ctx, tag, srv):
        return
    ctx.check(f"{tag}: ready within 2 s (in-process certificate generation)",
              srv.wait_for(r"^READY", 0) and time.monotonic() - srv.started < 2.0)
    port = srv.port

    c = curl(ctx, port, opts=["-k"])
    if not ctx.check(f"{tag}: curl -k https://localhost/ gets 200 and the body",
                     c.status == "200" and c.body == HELLO, curl_detail(c)):
        return abandon(ctx, tag, srv)
    c = curl(ctx, port, host="127.0.0.1", opts=["-k"])
    ctx.check(f"{tag}: curl -k https://127.0.0.1/ (no SNI) gets the body",
              c.status == "200" and c.body == HELLO, curl_detail(c))
    ctx.check(f"{tag}: curl negotiated ALPN http/1.1",
              re.search(r"ALPN.*server accepted.*http/1\.1", c.verbose) is not None,
              excerpt(c.verbose))

    r = s_client(port, "-servername", "localhost", "-showcerts")
    chain, pems = served_chain(r.text)
    text, pem_path = cert_text(ctx, pems[0]) if pems else ("", None)
    ctx.check(f"{tag}: certificate is X.509 v3, ECDSA P-256, SAN DNS:localhost",
              "Version: 3 (0x2)" in text and "id-ecPublicKey" in text
              and ("prime256v1" in text or "P-256" in text)
              and re.search(r"DNS:localhost\b", text) is not None,
              excerpt(text or r.text))
    if pem_path:
        nb = run(["openssl", "x509", "-noout", "-startdate", "-enddate", "-in",
                  pem_path]).text
        m = re.search(r"notBefore=(.+?)\s*\n.*notAfter=(.+?)\s*$", nb, re.S)
        ok = False
        if m:
            fmt = "%b %d %H:%M:%S %Y %Z"
            start = datetime.datetime.strptime(" ".join(m.group(1).split()), fmt)
            end = datetime.datetime.strptime(" ".join(m.group(2).split()), fmt)
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            ok = (now - datetime.timedelta(days=2) <= start
                  <= now + datetime.timedelta(seconds=60) and end > now)
        ctx.check(f"{tag}: certificate is valid from about now", ok, nb)
        c = curl(ctx, port, opts=["--cacert", pem_path])
        ctx.check(f"{tag}: curl verifies it when given it as the CA (name matches)",
                  c.status == "200" and c.body == HELLO and c.verify == "0",
                  curl_detail(c))

    c = curl(ctx, port, "/big", opts=["-k"])
    ctx.check(f"{tag}: 1,000,000-byte response arrives intact",
              c.status == "200" and c.body == BIG_BODY,
              f"got {len(c.body)} bytes\n" + curl_detail(c))
    c = curl(ctx, port, "/upload", opts=["-k", "--data-binary", "@" + ctx.pki.post_file,
                                         "-H", "Content-Type: application/octet-stream"])
    want = b"received %d bytes fnv1a=%08x\n" % (len(ctx.pki.post_body), fnv1a(ctx.pki.post_body))
    ctx.check(f"{tag}: 300,000-byte upload arrives intact",
              c.status == "200" and c.body == want, curl_detail(c))
    check_clean_stop(ctx, tag, srv)

    for name, expect in (("-", "localhost"), ("example.test", "example.test")):
        srv = ctx.start(mode, ["selfsigned", "{port}", name], f"selfsigned-{expect}")
        r = s_client(srv.port, "-servername", expect, "-showcerts")
        chain, pems = served_chain(r.text)
        text = cert_text(ctx, pems[0])[0] if pems else r.text
        arg = "NULL" if name == "-" else f'"{name}"'
        ctx.check(f"{tag}: fio_tls_new({arg}, NULL, NULL) certifies {expect}",
                  re.search(rf"DNS:{re.escape(expect)}\b", text) is not None,
                  excerpt(text) + "\n" + excerpt(srv.text()))
        srv.stop()


def scenario_certs(ctx, mode):
    tag = f"[{mode}] CA-issued"
    pki = ctx.pki
    srv = ctx.start(mode, ["-p", pki.public, "certs", "{port}",
                           "localhost", *pki.localhost, "a.test", *pki.a,
                           "b.test", *pki.b], "certs")
    if not check_ready(ctx, tag, srv):
        return
    port = srv.port
    ca = ["--cacert", pki.ca_pem]

    for flags, want in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
                        (["--tlsv1.3"], "TLSv1.3")):
        c = curl(ctx, port, opts=ca + flags)
        version, cipher = c.protocol()
        if not ctx.check(f"{tag}: curl --cacert {' '.join(flags)} verifies and gets 200 + body",
                         c.status == "200" and c.body == HELLO and c.verify == "0"
                         and version == want, curl_detail(c)) and c.status != "200":
            return abandon(ctx, tag, srv)
        ctx.check(f"{tag}: {want} cipher suite is AEAD with forward secrecy ({cipher})",
                  cipher is not None and re.search(r"GCM|CHACHA20|CCM", cipher) is not None
                  and (want == "TLSv1.3" or cipher.startswith("ECDHE-")
                       or cipher.startswith("DHE-")), excerpt(c.verbose))

    for host in ("a.test", "b.test", "www.a.test", "alt-b.test"):
        c = curl(ctx, port, host=host, opts=ca)
        ctx.check(f"{tag}: curl --cacert https://{host}/ verifies (SNI picks its certificate)",
                  c.status == "200" and c.body == HELLO and c.verify == "0",
                  curl_detail(c))

    cases = (("a.test", "a.test"), ("b.test", "b.test"),
             ("www.a.test", "a.test"), ("alt-b.test", "b.test"),
             ("unknown.test", "localhost"), (None, "localhost"))
    for sni, want in cases:
        opts = ["-servername", sni] if sni else ["-noservername"]
        r = s_client(port, *opts, "-showcerts", "-CAfile", pki.ca_pem)
        chain, pems = served_chain(r.text)
        subject = chain[0][0] if chain else None
        what = f"SNI {sni}" if sni else "no SNI"
        ctx.check(f"{tag}: s_client with {what} gets CN={want}",
                  subject is not None and re.search(rf"CN ?= ?{re.escape(want)}$", subject) is not None,
                  f"chain={chain}\n{excerpt(r.text)}")
        ctx.check(f"{tag}: s_client with {what} receives the full chain (leaf + intermediate) and verifies",
                  len(pems) == 2 and len(chain) == 2
                  and "Intermediate" in chain[1][0]
                  and "Verify return code: 0 (ok)" in r.text,
                  f"chain={chain}\n{excerpt(r.text)}")

    # Resumption is bound to the certificate a session was made under: the
    # session of a.test resumes with SNI a.test, and a client offering it
    # with SNI b.test gets a full handshake and b.test's certificate.
    for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        sess = os.path.join(ctx.tmp, f"sess-a{flag}.pem")

        def get_via(sni, *opts):
            req = f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode()
            r = s_client(port, "-servername", sni, flag, "-ign_eof", *opts, input=req)
            # the peer certificate s_client reports (also when resumed)
            subject = re.search(r"^subject=(.*)$", r.text, re.M)
            return r, (subject.group(1).strip() if subject else ""), HELLO.decode().strip() in r.text

        r0, _, ok0 = get_via("a.test", "-sess_out", sess)
        r1, cn1, ok1 = get_via("a.test", "-sess_in", sess)
        r2, cn2, ok2 = get_via("b.test", "-sess_in", sess)
        ctx.check(f"{tag}: {want} session of a.test resumes with SNI a.test",
                  ok0 and ok1 and f"Reused, {want}" in r1.text and cn1.endswith("a.test"),
                  f"first:\n{excerpt(r0.text)}\nsecond:\n{excerpt(r1.text)}")
        ctx.check(f"{tag}: {want} session of a.test offered with SNI b.test: full handshake, CN=b.test",
                  ok2 and f"New, {want}" in r2.text and cn2.endswith("b.test"),
                  f"subject={cn2!r}\n{excerpt(r2.text)}")

    r = s_client(port, "-servername", "a.test", "-verify_hostname", "a.test",
                 "-CAfile", pki.ca_pem, "-verify_return_error", "-tls1_2")
    ctx.check(f"{tag}: ECDSA certificate (a.test) over TLS 1.2 verifies",
              r.rc == 0 and "Verify return code: 0 (ok)" in r.text, excerpt(r.text))

    c = curl(ctx, port, "/static.bin", opts=ca)
    ctx.check(f"{tag}: static file from public_folder arrives intact through TLS",
              c.status == "200" and c.body == pki.static_body,
              f"got {len(c.body)} bytes\n" + curl_detail(c))

    # TLS 1.2 suites that lack forward secrecy or AEAD must be refused (the
    # RSA certificate of "localhost" would allow them); a good one is the
    # control that shows the client is able to connect at all.
    for cipher, accept in (("ECDHE-RSA-AES128-GCM-SHA256", True),
                           ("AES128-GCM-SHA256", False),
                           ("AES256-SHA256", False),
                           ("ECDHE-RSA-AES128-SHA", False),
                           ("ECDHE-RSA-AES256-SHA384", False)):
        r = s_client(port, "-servername", "localhost", "-tls1_2", "-cipher", cipher)
        if accept:
            ok = r.rc == 0 and re.search(r"Cipher is " + re.escape(cipher), r.text)
        else:
            ok = handshake_refused(r)
        ctx.check(f"{tag}: TLS 1.2 {cipher} {'accepted' if accept else 'refused'}",
                  bool(ok), excerpt(r.text))

    # old protocol versions: the clients are told to allow them (SECLEVEL=0
    # for OpenSSL 3), so a refusal comes from the server
    for flag, name in (("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")):
        r = s_client(port, "-servername", "localhost", flag, "-cipher",
                     "DEFAULT@SECLEVEL=0")
        ctx.check(f"{tag}: {name} refused (openssl s_client {flag})",
                  handshake_refused(r), excerpt(r.text))
    if shutil.which("gnutls-cli"):
        for vers, name in (("VERS-TLS1.0", "TLS 1.0"), ("VERS-TLS1.1", "TLS 1.1")):
            r = run(["gnutls-cli", "--insecure", f"--port={port}",
                     f"--priority=NORMAL:-VERS-ALL:+{vers}", "127.0.0.1"], timeout=10)
            ctx.check(f"{tag}: {name} refused (gnutls-cli)",
                      r.rc not in (None, 0) and "Connecting to" in r.text
                      and re.search(r"alert|Handshake has failed|protocol version",
                                    r.text) is not None, excerpt(r.text))
        ic = Interactive(["gnutls-cli", f"--x509cafile={pki.ca_pem}",
                          "--sni-hostname=b.test", "--verify-hostname=b.test",
                          f"--port={port}", "127.0.0.1"])
        ok = False
        if ic.wait_for(rb"Handshake was completed", 10):
            ic.send(b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
            ok = ic.wait_for(re.escape(HELLO.strip()), 10) is not None
        out = ic.close()
        ctx.check(f"{tag}: gnutls-cli verifies b.test and gets the body", ok, excerpt(out))
    else:
        print(f"ok - {tag}: gnutls-cli checks # SKIP gnutls-cli not installed")

    check_clean_stop(ctx, tag, srv)


def scenario_threads(ctx, mode):
    tag = f"[{mode}] 4 threads"
    srv = ctx.start(mode, ["-t", "4", "selfsigned", "{port}", "localhost"], "threads")
    if not check_ready(ctx, tag, srv):
        return
    c = curl(ctx, srv.port, opts=["-k"], timeout=8)
    if not ctx.check(f"{tag}: first request answered", c.status == "200", curl_detail(c)):
        return abandon(ctx, tag, srv)
    results = []
    lock = threading.Lock()

    def worker():
        # two requests on one kept-alive connection, then an upload
        r1 = run(["curl", "-sS", "-k", "--max-time", "30", "--resolve",
                  f"localhost:{srv.port}:127.0.0.1",
                  f"https://localhost:{srv.port}/", f"https://localhost:{srv.port}/big"],
                 timeout=40)
        c2 = curl(ctx, srv.port, "/upload", opts=["-k", "--data-binary",
                                                  "@" + ctx.pki.post_file], timeout=30)
        with lock:
            results.append((r1, c2))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want_up = b"received %d bytes fnv1a=%08x\n" % (len(ctx.pki.post_body),
                                                    fnv1a(ctx.pki.post_body))
    # An upload that got no answer (curl status 000) or whose body the server
    # saw empty was hit by facil.io 0.7.0.beta4's double close of a reused fd
    # (its poller closes a hung-up fd by number while another thread closes
    # the same connection; torture_repro_upload.py shows it without TLS).
    # At most one per run is reported as such; anything else fails.
    lost = [c2 for r1, c2 in results if r1.out == HELLO + BIG_BODY
            and (c2.status == "000" or c2.body.startswith(b"received 0 bytes "))]
    bad = [(r1.rc, r1.err[-300:], c2.status, c2.body[:100]) for r1, c2 in results
           if (r1.out != HELLO + BIG_BODY or c2.body != want_up) and c2 not in lost]
    ctx.check(f"{tag}: 8 concurrent clients (keep-alive GETs + uploads) intact "
              f"({len(lost)} upload(s) lost to facil.io's double-close race, limit 1)",
              len(results) == 8 and not bad and len(lost) <= 1,
              f"{len(results)} finished; bad: {bad}; lost: "
              f"{[(c.status, c.body[:60]) for c in lost]}")
    check_clean_stop(ctx, tag, srv)


def scenario_alpn(ctx, mode):
    tag = f"[{mode}] ALPN"
    srv = ctx.start(mode, ["alpn", "{port}"], "alpn")
    if not check_ready(ctx, tag, srv):
        return
    port = srv.port
    sessions = 0
    first = True
    for offer, want_proto, want_prefix, extra in (
            ("echo-b", "echo-b", "b", ()),
            ("echo-a", "echo-a", "a", ()),
            (None, None, "a", ()),
            ("echo-b,echo-a", "echo-a", "a", ()),
            ("echo-b", "echo-b", "b", ("-tls1_2",))):
        proto, prefix, out = alpn_session(port, offer, extra)
        what = f"-alpn {offer}" if offer else "no -alpn"
        what += " " + " ".join(extra) if extra else ""
        if want_proto:
            ok = proto == want_proto
            desc = f"ALPN protocol: {want_proto}"
        else:
            ok = proto is None and "No ALPN negotiated" in out
            desc = "no ALPN negotiated"
        ctx.check(f"{tag}: s_client {what}: {desc}", ok, excerpt(out))
        ctx.check(f"{tag}: s_client {what}: echo comes from the '{want_prefix}' callback",
                  prefix == want_prefix, f"prefix={prefix}\n{excerpt(out)}\n{excerpt(srv.text())}")
        if prefix:
            sessions += 1
        elif first:
            return abandon(ctx, tag, srv)
        first = False

    # handshakes that fail must not run any callback
    ctx.check(f"{tag}: plain-text client gets disconnected",
              plain_text_client_dropped(port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes.fromhex("160301020001"))  # start of a ClientHello, then gone
    r = s_client(port, "-servername", "localhost", "-alpn", "echo-a",
                 "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    ctx.check(f"{tag}: TLS 1.1 handshake refused", handshake_refused(r), excerpt(r.text))
    r = s_client(port, "-servername", "localhost", "-alpn", "h2,spdy/3")
    ctx.check(f"{tag}: only unknown ALPN offered: handshake fails (no_application_protocol)",
              handshake_refused(r) and re.search(r"no application protocol|alert number 120",
                                                 r.text) is not None, excerpt(r.text))
    time.sleep(0.3)
    proto, prefix, out = alpn_session(port, "echo-b")
    ctx.check(f"{tag}: still serving after failed handshakes", prefix == "b", excerpt(out))
    if prefix:
        sessions += 1

    # TLS 1.2 renegotiation ("R" asks s_client to start one) is refused
    ic = Interactive(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                      "-servername", "localhost", "-tls1_2", "-alpn", "echo-b"])
    before = after = False
    if ic.wait_for(rb"Verify return code:", 10):
        ic.send(b"before\n")
        before = ic.wait_for(rb"^b:before$", 10) is not None
        ic.send(b"R\n")
        ic.wait_for(rb"^RENEGOTIATING", 5)
        time.sleep(0.5)
        ic.send(b"after\n")
        after = ic.wait_for(rb"^b:after$", 3) is not None
    out = ic.close()
    if before:
        sessions += 1
    ctx.check(f"{tag}: TLS 1.2 renegotiation refused",
              before and not after and "RENEGOTIATING" in out
              and "no renegotiation" in out, excerpt(out))
    log = srv.text()
    callbacks = re.findall(r"^CALLBACK (\S+) (\S+)$", log, re.M)
    ctx.check(f"{tag}: one callback per completed handshake, none for failed ones "
              f"({sessions} sessions)",
              len(callbacks) == sessions, f"callbacks={callbacks}")
    ctx.check(f"{tag}: re-adding echo-a replaced its callback; udata passed through",
              not any(p in ("stale:", "wrong-udata") for _, p in callbacks),
              f"callbacks={callbacks}")
    check_clean_stop(ctx, tag, srv)


def scenario_handshake_timeout(ctx, mode):
    tag = f"[{mode}] handshake deadline"
    srv = ctx.start(mode, ["alpn", "{port}"], "handshake-timeout",
                    env={"FIO_TLS_HANDSHAKE_TIMEOUT": "1"})
    if not check_ready(ctx, tag, srv):
        return
    began = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", srv.port), timeout=8) as s:
        try:
            closed = s.recv(16) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
    took = time.monotonic() - began
    ctx.check(f"{tag}: silent client dropped (FIO_TLS_HANDSHAKE_TIMEOUT=1, took {took:.1f} s)",
              closed and took < 5, f"closed={closed} took={took:.1f}s")
    ctx.check(f"{tag}: no callback for it",
              "CALLBACK" not in srv.text(), excerpt(srv.text()))
    check_clean_stop(ctx, tag, srv)


def scenario_alpn_once(ctx, mode):
    tag = f"[{mode}] destroy with live connection"
    srv = ctx.start(mode, ["alpn", "{port}", "once"], "alpn-once")
    if not check_ready(ctx, tag, srv):
        return
    ic = Interactive(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}",
                      "-servername", "localhost", "-alpn", "echo-b"])
    ok1 = ok2 = False
    if ic.wait_for(rb"Verify return code:", 10):
        destroyed = srv.wait_for(r"^DESTROYED", 5) is not None
        ic.send(b"first\n")
        ok1 = destroyed and ic.wait_for(rb"^b:first$", 10) is not None
        time.sleep(0.2)
        ic.send(b"second\n")
        ok2 = ic.wait_for(rb"^b:second$", 10) is not None
    out = ic.close()
    ctx.check(f"{tag}: connection accepted before fio_tls_destroy keeps working",
              ok1 and ok2, excerpt(out) + "\n" + excerpt(srv.text()))
    ctx.check(f"{tag}: server still running", srv.alive(), excerpt(srv.text()))
    check_clean_stop(ctx, tag, srv)


BAD_CASES = (
    # name, result, [texts the one error line must contain], exact count
    ("new-missing-key", "NULL", ["{missing}", "No such file or directory"]),
    ("new-missing-cert", "NULL", ["{missing}", "No such file or directory"]),
    ("new-directory-cert", "NULL", ["{directory}", "Is a directory"]),
    ("new-garbage-key", "NULL", ["{garbage}", "no valid PEM"]),
    ("new-garbage-cert", "NULL", ["{garbage}", "no valid PEM"]),
    ("new-mismatched-key", "NULL", ["does not match"]),
    ("new-encrypted-key", "NULL", ["{encrypted}", "encrypted"]),
    ("new-key-without-cert", "NULL", []),
    ("new-null-name-selfsigned", "object", None),  # None: no error at all
    ("cert-add-missing", "returned", ["{missing}", "No such file or directory"]),
    ("cert-add-garbage", "returned", ["{garbage}", "no valid PEM"]),
    ("cert-add-mismatched-key", "returned", ["does not match"]),
    ("cert-add-null-tls", "returned", ["NULL"]),
    ("proto-add-null-tls", "returned", ["NULL"]),
    ("proto-add-null-name", "returned", []),
    ("accept-null-tls", "returned", ["NULL"]),
    ("connect-null-tls", "returned", ["NULL"]),
    ("destroy-null", "returned", "optional"),  # like free(NULL): may be silent
)


def scenario_badinput(ctx, mode, quiet=False):
    pki = ctx.pki
    tag = f"[{mode}] bad input" + (" (FIO_LOG_LEVEL=1)" if quiet else "")
    args = (["-l", "1"] if quiet else []) + [
        "badinput", "{port}", *pki.localhost, pki.garbage, pki.other_key,
        pki.encrypted_key, pki.directory, pki.missing]
    srv = ctx.start(mode, args, "badinput-quiet" if quiet else "badinput")
    if not check_ready(ctx, tag, srv):
        return
    log = srv.text()  # the cases all ran before the server got ready
    subst = {"missing": pki.missing, "directory": pki.directory,
             "garbage": pki.garbage, "encrypted": pki.encrypted_key}
    lines = log.splitlines()
    err_re = re.compile(r"^ERROR: fio_tls: ")

    if quiet:
        ctx.check(f"{tag}: no error lines at all", not any(
            l.startswith("ERROR:") for l in lines), excerpt(log))
        results = dict(re.findall(r"^RESULT (\S+) (\S+)$", log, re.M))
        ctx.check(f"{tag}: every case still returned as before",
                  all(results.get(n) == res for n, res, _ in BAD_CASES), results)
    else:
        in_case = set()
        for name, want_result, texts in BAD_CASES:
            try:
                start = lines.index(f"CASE {name} -")
                end = next(i for i in range(start, len(lines))
                           if lines[i].startswith(f"RESULT {name} "))
            except (ValueError, StopIteration):
                ctx.check(f"{tag}: {name}: case ran to its end", False, excerpt(log))
                continue
            block = lines[start + 1:end]
            in_case.update(range(start + 1, end))
            errors = [l for l in block if err_re.match(l)]
            result = lines[end].split()[2]
            if texts is None:
                ok = not errors
                want = "no error line"
            elif texts == "optional":
                ok = len(errors) <= 1
                want = "at most one error line"
            else:
                need = [t.format(**subst) for t in texts]
                ok = len(errors) == 1 and all(t in errors[0] for t in need)
                shown = [os.path.basename(t) if t.startswith("/") else t for t in need]
                want = "one 'ERROR: fio_tls: ' line" + (
                    f" containing {', '.join(repr(t) for t in shown)}" if need else "")
            ctx.check(f"{tag}: {name}: {want}; result {want_result}",
                      ok and result == want_result,
                      f"result={result}\nblock:\n" + "\n".join(block))
        stray = [l for i, l in enumerate(lines) if err_re.match(l) and i not in in_case]
        ctx.check(f"{tag}: no fio_tls error line outside the cases", not stray, stray)
        ctx.check(f"{tag}: nothing fatal, no panic", not re.search(
            r"^FATAL|panicked", log, re.M), excerpt(log))

    c = curl(ctx, srv.port, opts=["--cacert", pki.ca_pem])
    if not ctx.check(f"{tag}: still serving HTTPS afterwards (curl --cacert)",
                     c.status == "200" and c.body == HELLO and c.verify == "0",
                     curl_detail(c)):
        return abandon(ctx, tag, srv)
    r = s_client(srv.port, "-servername", "bad.test", "-showcerts")
    chain, _ = served_chain(r.text)
    ctx.check(f"{tag}: failed fio_tls_cert_add calls added nothing (bad.test gets localhost)",
              bool(chain) and re.search(r"CN ?= ?localhost$", chain[0][0]) is not None,
              f"chain={chain}\n{excerpt(r.text)}")
    check_clean_stop(ctx, tag, srv)


def scenario_encrypted_traditional(ctx, mode):
    pki = ctx.pki
    tag = f"[{mode}] encrypted key (traditional PEM)"
    srv = ctx.start(mode, ["certs", "{port}", "localhost", pki.encrypted_trad_key,
                           pki.localhost[1]], "encrypted-trad", ready=False)
    rc = srv.wait_exit(10)
    log = srv.text()
    errors = [l for l in log.splitlines() if l.startswith("ERROR: fio_tls: ")]
    ctx.check(f"{tag}: fio_tls_new returns NULL at once, without prompting",
              rc == 1 and "could not start" in log, f"rc={rc}\n{excerpt(log)}")
    ctx.check(f"{tag}: one error line naming the file and 'encrypted'",
              len(errors) == 1 and pki.encrypted_trad_key in errors[0]
              and "encrypted" in errors[0], excerpt(log))
    srv.stop()


def scenario_demo(ctx, mode):
    tag = f"[{mode}] demo"
    port = free_port()
    srv = Server(ctx, [ctx.binary(mode, "demo"), str(port)], f"{mode}-demo",
                 env=ctx.env(mode), port=port)
    m = srv.wait_for(r"curl -k (https://localhost:\d+/)", 10)
    ctx.check(f"{tag}: prints the curl command to try",
              m is not None and m.group(1) == f"https://localhost:{port}/",
              excerpt(srv.text()))
    if m:
        c = curl(ctx, port, opts=["-k"])
        ctx.check(f"{tag}: curl -k https://localhost:{port}/ gets the demo body",
                  c.status == "200" and c.body == DEMO_BODY,
                  curl_detail(c) + "\n" + excerpt(srv.text()))
    srv.stop()


def scenario_link_layout(ctx):
    r = run(["readelf", "-d", ctx.binary("shared", "fio_server")])
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", r.text)
    ok = ("libfio_tls.so.0" in needed and "libfacil.io.so" in needed and
          needed.index("libfio_tls.so.0") < needed.index("libfacil.io.so"))
    ctx.check("[shared] binary needs libfio_tls.so.0 before libfacil.io.so", ok, needed)
    r = run(["readelf", "-d", ctx.binary("preload", "fio_server")])
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", r.text)
    ctx.check("[preload] binary links facil.io only (libfio_tls comes from LD_PRELOAD)",
              "libfacil.io.so" in needed and not any("fio_tls" in n for n in needed),
              needed)


def scenario_broken(ctx):
    for program, args in (("fio_server", ["selfsigned", "{port}", "localhost"]),
                          ("demo", ["{port}"])):
        tag = f"[broken: facil.io static + libfio_tls shared] {program}"
        srv = Server(ctx, [ctx.binary("broken", program), *args], f"broken-{program}",
                     env=ctx.env("broken"))
        rc = srv.wait_exit(10)
        log = srv.text()
        ctx.check(f"{tag}: exits with FATAL \"{FATAL_STUB}\" (documented failing row)",
                  rc not in (None, 0) and FATAL_STUB in log
                  and re.search(r"^FATAL: .*" + re.escape(FATAL_STUB), log, re.M) is not None,
                  f"rc={rc}\n{excerpt(log)}")
        srv.stop()


def scenario_pair(ctx, mode):
    """Two TLS objects with the same certificate in one process: port A
    verifies no peer, port B requires a client certificate. A session made
    on A (tickets: the keys are shared by the process) must not let a client
    without a certificate resume on B."""
    tag = f"[{mode}] session across objects"
    pki = ctx.pki
    port2 = free_port()
    srv = ctx.start(mode, ["--trust", pki.ca_pem, "pair", "{port}", str(port2),
                           "a.test", *pki.a], "pair")
    if not check_ready(ctx, tag, srv):
        return
    for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        sess = os.path.join(ctx.tmp, f"sess-pair{flag}.pem")
        req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        common = ["-servername", "a.test", flag, "-ign_eof"]
        r0 = s_client(srv.port, *common, "-sess_out", sess, input=req)
        r1 = s_client(srv.port, *common, "-sess_in", sess, input=req)
        got = HELLO.decode().strip()
        ctx.check(f"{tag}: {want} session of the open port resumes there (control)",
                  got in r0.text and f"Reused, {want}" in r1.text and got in r1.text,
                  f"first:\n{excerpt(r0.text)}\nsecond:\n{excerpt(r1.text)}")
        r2 = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port2}", *common,
                  "-sess_in", sess], input=req, timeout=10)
        ctx.check(f"{tag}: {want} same session offered to the mTLS port without a "
                  "client certificate: not resumed, no response",
                  f"Reused, {want}" not in r2.text and got not in r2.text
                  and "CONNECTED(" in r2.text,
                  excerpt(r2.text))
    check_clean_stop(ctx, tag, srv)


SCENARIOS = {
    "selfsigned": scenario_selfsigned,
    "certs": scenario_certs,
    "pair": scenario_pair,
    "alpn": scenario_alpn,
    "alpn-once": scenario_alpn_once,
    "handshake-timeout": scenario_handshake_timeout,
    "badinput": scenario_badinput,
    "badinput-quiet": lambda ctx, mode: scenario_badinput(ctx, mode, quiet=True),
    "encrypted-traditional": scenario_encrypted_traditional,
    "threads": scenario_threads,
    "demo": scenario_demo,
}


def suite_main(description, bin_help, tmp_prefix, label, pki_class, run_modes,
               guard=None):
    """The main() of this suite and of client_suite.py: their common flags,
    the PKI in a scratch directory, run_modes(ctx, modes, only), then the
    summary. With guard, an exception in run_modes is a failed check of
    that name (the summary line still comes); without, it propagates."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--bin-dir", required=True, help=bin_help)
    ap.add_argument("--preload-lib", required=True,
                    help="absolute path of libfio_tls.so for LD_PRELOAD")
    ap.add_argument("--tmp-root", default=None,
                    help="where to make the temporary directory")
    ap.add_argument("--modes", default=",".join(WORKING_MODES) + ",broken")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    missing = [t for t in ("curl", "openssl") if not shutil.which(t)]
    if missing:
        print(f"FAIL - required tools missing: {missing}")
        print("0 passed, 1 failed")
        return 1

    suite = harness.Report("FAIL", harness.head_and_tail)
    tmp = harness.make_tmp(tmp_prefix, args.tmp_root)
    began = time.monotonic()
    try:
        pki = pki_class(tmp)
        pki.make()
        ctx = Ctx(suite, tmp, pki, os.path.abspath(args.bin_dir),
                  os.path.abspath(args.preload_lib))
        modes = [m for m in args.modes.split(",") if m]
        only = [s for s in args.only.split(",") if s]
        run_modes(ctx, modes, only)
    except Exception:
        if guard is None:
            raise
        suite.check(guard, False, traceback.format_exc())
    finally:
        _kill_leftovers()
        elapsed = time.monotonic() - began
        harness.drop_tmp(tmp, suite.failed or args.keep, "logs and certificates")
        print(f"# {label} took {elapsed:.1f} s")
    return suite.summary()


def run_modes(ctx, modes, only):
    for mode in modes:
        if mode == "broken":
            if not only:
                scenario_broken(ctx)
            continue
        for name, fn in SCENARIOS.items():
            if not only or name in only:
                fn(ctx, mode)
    if not only and {"shared", "preload"} <= set(modes):
        scenario_link_layout(ctx)


def main():
    return suite_main("libfio_tls facil.io integration suite",
                      "directory with <mode>/fio_server and <mode>/demo",
                      "fio_tls_suite.", "facil.io suite", Pki, run_modes)

if __name__ == "__main__":
    sys.exit(main())
