#!/usr/bin/env python3
"""API misuse table and secrets checks for libfio_tls (issue 5).

    misuse.py --bin build/misuse/misuse [--bin build/misuse/misuse_facil ...]
              [--levels 0,1,2,3,4,5] [--server build/c_tests/static/fio_server]
              [--tmp-root build]

1. Makes the fixtures of c_tests/misuse.c with the openssl CLI (a key and
   its certificate, another key, an encrypted key, garbage PEM) and odd
   files (a directory, a symlink loop, a FIFO, a 50 MiB junk file, an empty
   file, a file of mode 000).
2. Runs every misuse binary (the table of c_tests/misuse.c) once at the
   default log level; the first binary (the one without facil.io) again at
   every FIO_LOG_LEVEL of --levels, and every binary at level 5 (debug).
   Each table row is one check here.
3. Secrets: no output of any run, at any level, holds a line of the key's
   PEM base64, its DER, or the private scalar in hex.
4. With --server (fio_server, facil.io-linked): the server logs at level 5
   while good and bad clients connect; no key material and no session
   secret appears in its log. SSLKEYLOGFILE: unset, no file appears;
   set, the file gets exactly the secrets that the client's own
   -keylogfile shows for the same sessions, in NSS key log format, and
   the server logs one WARNING about it, however many handshakes.

Ends with "N passed, N failed" (exit status 1 when any check failed).
"""
import argparse
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import free_port  # noqa: E402

UMASK = os.umask(0o022)
os.umask(UMASK)


def sh(*argv, input=None, timeout=60):
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout)


def ossl(*args):
    r = sh("openssl", *args)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr.decode(errors='replace')}")
    return r.stdout


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

def make_fixtures(d):
    os.chmod(d, 0o755)  # rows run as nobody must reach the files
    p = lambda name: os.path.join(d, name)
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


# ---------------------------------------------------------------------------
# the C table
# ---------------------------------------------------------------------------

def run_table(suite, binary, fixdir, level, secrets, tag, per_row):
    """One run of a misuse binary. per_row: one check per table row (else
    one check for the whole run, listing the rows that failed, and the
    rows of known bugs are skipped)."""
    env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    if not per_row:
        env["MISUSE_SKIP_KNOWN_BUGS"] = "1"
    if level is None:
        env.pop("FIO_LOG_LEVEL", None)
    else:
        env["FIO_LOG_LEVEL"] = str(level)
    try:
        r = subprocess.run([binary, fixdir], capture_output=True, env=env, timeout=900)
        out, rc = r.stdout.decode(errors="replace"), r.returncode
        err = r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out, rc, err = (e.stdout or b"").decode(errors="replace"), None, "timed out"
    rows, bad_rows = 0, []
    for line in out.splitlines():
        m = re.match(r"^(ok|not ok) - (.*)$", line)
        if not m:
            if line.startswith("# known library bugs"):
                print(f"# {tag} {line[2:]}")
            continue
        rows += 1
        if "# TODO" in m.group(2):
            if per_row:
                print(line)  # a known bug: shown, not counted
            continue
        if per_row:
            suite.check(f"{tag}: {m.group(2)}", m.group(1) == "ok", _row_detail(out, line))
        elif m.group(1) != "ok":
            bad_rows.append(line + "\n" + _row_detail(out, line))
    if not per_row:
        suite.check(f"{tag}: all {rows} rows as expected", rows > 0 and not bad_rows,
                    "\n".join(bad_rows))
    suite.check(f"{tag}: the table ran to the end (exit status {rc})",
                rows > 0 and re.search(r"^\d+ passed, \d+ failed$", out, re.M) is not None
                and rc is not None, err[-3000:] + out[-2000:])
    bad = leaked(out + err, secrets)
    suite.check(f"{tag}: no key material in any log line", not bad,
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


# ---------------------------------------------------------------------------
# a live server: logs and SSLKEYLOGFILE
# ---------------------------------------------------------------------------

class Server(harness.LoggedProcess):
    def wait_ready(self, port, timeout=10):
        return self.wait_for(rf"^READY {port}$", timeout, 0.05) is not None


def s_client(port, *opts, input=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"):
    try:
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                               "-servername", "localhost", "-ign_eof", *opts],
                              input=input, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, None, e.stdout or b"", e.stderr or b"")


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


def server_checks(suite, server_bin, fixdir, tmp, secrets):
    key, cert = os.path.join(fixdir, "key.pem"), os.path.join(fixdir, "cert.pem")
    base_env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}

    # --- unset: no key log anywhere, debug log free of secrets -------------
    port = free_port()
    decoy = os.path.join(tmp, "keylog-unset.txt")
    srv = Server([server_bin, "-l", "5", "certs", str(port), "localhost", key, cert],
                 os.path.join(tmp, "server-unset.log"), base_env)
    try:
        if not suite.check("server (FIO_LOG_LEVEL=5, SSLKEYLOGFILE unset) starts",
                           srv.wait_ready(port), srv.text()):
            return
        client_log = os.path.join(tmp, "client-unset.keys")
        r1 = s_client(port, "-tls1_3", "-keylogfile", client_log)
        r2 = s_client(port, "-tls1_2", "-keylogfile", client_log)
        bad = [s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"),
               s_client(port, "-alpn", "nothing-known")]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # plain text to the TLS port
            s.recv(4096)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(bytes.fromhex("16030100") + os.urandom(64))  # junk handshake
            try:
                s.recv(4096)
            except OSError:
                pass
        ok = all(b"Hello from facil.io" in r.stdout for r in (r1, r2))
        suite.check("server: TLS 1.3 and 1.2 clients served while logging at level 5", ok,
                    (r1.stdout + r1.stderr + r2.stderr).decode(errors="replace")[-2000:])
        time.sleep(0.5)
        holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                                   "data = open(sys.argv[1]).read()\nprint('read', flush=True)\n"
                                   "time.sleep(30)", key], stdout=subprocess.PIPE)
        holder.stdout.readline()
        control = key_copies_in_memory(holder.pid, key)
        holder.kill()
        holder.wait()
        found = key_copies_in_memory(srv.proc.pid, key)
        if found is None or control is None:
            suite.skip("server: key file bytes wiped after loading", "/proc/PID/mem not readable")
        else:
            suite.check("server: the memory search finds the key file in a process that keeps "
                        "it (control)", bool(control), str(control))
            suite.check("server: no copy of the key file (PEM text, DER) left in the server's "
                        "memory after loading and two handshakes", not found, str(found))
    finally:
        srv.stop()
    log = srv.text()
    client_secrets = [l.split()[-1] for l in keylog_lines(client_log)]
    suite.check("server: the handshakes left session secrets in the client's own key log "
                "(control for the next check)", len(client_secrets) >= 5,
                f"{len(client_secrets)} lines")
    bad = leaked(log, secrets + client_secrets)
    suite.check("server: no private key or session secret in its level-5 log "
                f"({len(log.splitlines())} lines, good and bad clients)", not bad,
                f"found: {[b[:24] + '...' for b in bad]}\n{log[-2000:]}")
    suite.check("server: SSLKEYLOGFILE unset: no key log warning", "SSLKEYLOGFILE" not in log,
                log[-2000:])
    suite.check("server: SSLKEYLOGFILE unset: no key log file written", not os.path.exists(decoy))
    new_files = [f for f in os.listdir(tmp) if re.search(r"key.?log", f, re.I)
                 and f not in ("client-unset.keys",)]
    suite.check("server: SSLKEYLOGFILE unset: no stray key log in the working directory",
                not new_files, str(new_files))

    # --- set: NSS key log, identical to the client's; one warning ----------
    port = free_port()
    keylog = os.path.join(tmp, "server.keylog")
    env = dict(base_env, SSLKEYLOGFILE=keylog)
    srv = Server([server_bin, "certs", str(port), "localhost", key, cert],
                 os.path.join(tmp, "server-keylog.log"), env)
    client_log = os.path.join(tmp, "client-set.keys")
    try:
        if not suite.check("server with SSLKEYLOGFILE set starts", srv.wait_ready(port),
                           srv.text()):
            return
        runs = [s_client(port, "-tls1_3", "-keylogfile", client_log),
                s_client(port, "-tls1_2", "-keylogfile", client_log),
                s_client(port, "-tls1_3", "-keylogfile", client_log)]
        suite.check("keylog: three handshakes served",
                    all(b"Hello from facil.io" in r.stdout for r in runs),
                    b"".join(r.stderr for r in runs).decode(errors="replace")[-2000:])
        time.sleep(0.3)
    finally:
        srv.stop()
    log = srv.text()
    ours, theirs = keylog_lines(keylog), keylog_lines(client_log)
    labels = {l.split()[0] for l in ours}
    nss = all(re.match(r"^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]{64,}$", l) for l in ours)
    suite.check(f"keylog: the file holds NSS key log lines ({len(ours)} lines, labels "
                f"{sorted(labels)})", ours and nss
                and {"CLIENT_RANDOM", "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                     "SERVER_TRAFFIC_SECRET_0"} <= labels, "\n".join(ours[:10]))
    suite.check("keylog: exactly the secrets the client logged for the same sessions",
                sorted(ours) == sorted(theirs),
                f"server-only: {sorted(set(ours) - set(theirs))[:4]}\n"
                f"client-only: {sorted(set(theirs) - set(ours))[:4]}")
    warnings = [l for l in log.splitlines() if "SSLKEYLOGFILE" in l]
    suite.check("keylog: one WARNING names the file, for three handshakes",
                len(warnings) == 1 and warnings[0].startswith("WARNING: fio_tls: ")
                and keylog in warnings[0], "\n".join(warnings) or log[-1500:])
    mode = os.stat(keylog).st_mode & 0o777 if os.path.exists(keylog) else None
    suite.check(f"keylog: the file is private to its owner (mode "
                f"{oct(mode) if mode is not None else None}, umask {oct(UMASK)})",
                mode is not None and mode & 0o077 == 0)
    bad = leaked(log, secrets + [l.split()[-1] for l in theirs])
    suite.check("keylog: the secrets go to the file only, never to the log", not bad,
                f"found: {[b[:24] + '...' for b in bad]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", action="append", required=True,
                    help="a misuse binary (the first one is run at every level)")
    ap.add_argument("--levels", default="0,1,2,3,4,5")
    ap.add_argument("--server", help="fio_server (facil.io-linked) for the log and keylog checks")
    ap.add_argument("--tmp-root", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--canary", action="store_true",
                    help="sanitizer builds: first check that a use-after-free is caught")
    args = ap.parse_args()

    suite = harness.Report("not ok", harness.first_lines(40))
    tmp = harness.make_tmp("fio_tls_misuse.", args.tmp_root)
    began = time.monotonic()
    try:
        os.chmod(tmp, 0o755)  # rows run as nobody read the fixtures
        fixdir = os.path.join(tmp, "fix")
        os.mkdir(fixdir)
        make_fixtures(fixdir)
        secrets = key_secrets(fixdir)
        for i, binary in enumerate(args.bin):
            name = os.path.relpath(binary)
            if args.canary:
                r = subprocess.run([binary, fixdir, "--canary"], capture_output=True)
                suite.check(f"[{name}] a use-after-free in a child is reported (sanitizers work)",
                            r.returncode == 0, r.stdout.decode(errors="replace"))
            run_table(suite, binary, fixdir, None, secrets, f"[{name}]", True)
            levels = [int(x) for x in args.levels.split(",") if x] if i == 0 else [5]
            for level in levels:
                run_table(suite, binary, fixdir, level, secrets,
                          f"[{name} FIO_LOG_LEVEL={level}]", False)
        if args.server:
            server_checks(suite, args.server, fixdir, tmp, secrets)
    finally:
        for root, dirs, files in os.walk(tmp):
            for x in dirs:
                os.chmod(os.path.join(root, x), 0o755)
        harness.drop_tmp(tmp, suite.failed or args.keep, "files")
        print(f"# misuse suite took {time.monotonic() - began:.1f} s")
    return suite.summary()


if __name__ == "__main__":
    sys.exit(main())
