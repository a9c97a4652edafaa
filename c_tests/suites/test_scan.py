"""TLS scanners and interop matrix against facil.io + libfio_tls (issue 5),
marked `scan`: `make scan` runs them, `make check` does not.

Two server runs, both on 127.0.0.1 only:
  default  the demo program (c_tests/programs/demo.c): fio_tls_new(
           "localhost", NULL, NULL), the library's self-signed ECDSA P-256
           certificate;
  test-ca  fio_server "certs" mode with an RSA 2048 leaf for localhost /
           127.0.0.1, issued by a test intermediate under a test root CA
           (fiotest.pki.ScanPki); the scanners are given the root.

test_scanners[run]: testssl.sh (Debian package testssl.sh) and sslyze (PyPI,
in a venv) scan the server, and our own check watches the TLS 1.2 session
ticket key (OpenSSL names it in the first 16 bytes of every ticket). Every
finding of severity MEDIUM or worse is printed in one table with a verdict:
"expected" (the untrusted self-signed chain of the default run), "app"
(HTTP response headers, which the application sets, not the TLS library)
or "UNEXPECTED" (fails the test). sslyze has no severities: the mapping
used is in findings_of_sslyze().

test_interop, against its own test-ca server: curl, openssl s_client
-tls1_2/-tls1_3, gnutls-cli, Python ssl (TLS 1.2 and 1.3) each download
1,000,000 bytes (and curl/Python upload 1 MiB) byte-exact; h2load and wrk
run short bounded loads (h2load checks the exact byte count); crafted
ClientHellos for SSLv2, SSLv3, TLS 1.0, TLS 1.1 and for TLS 1.2 with only
NULL / EXPORT / RC4 / 3DES / CBC / anonymous / static-RSA suites must get a
fatal alert quickly, not a hang (a control hello gets a ServerHello). (The
server suite already covers s_client -tls1/-tls1_1 and a few cipher
refusals; these hellos do not depend on what the local OpenSSL can offer.)

Missing tools are installed (as root) unless SCAN_NO_INSTALL=1: apt-get
install testssl.sh wrk nghttp2-client gnutls-bin; pip install sslyze into
BUILD/scan-venv. A tool still missing fails its check. The scanners' own
output (testssl-*.txt|json, sslyze-*.txt|json) stays in the test's scratch
directory when the test fails.
"""
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import struct
import sys
import time

import pytest

from fiotest.pki import ScanPki
from fiotest.proc import BIG_BODY, fnv1a
from fiotest.proc import run as run_result

pytestmark = [pytest.mark.scan, pytest.mark.facil]

MEDIUM_PLUS = ("MEDIUM", "HIGH", "CRITICAL")
BIG_LEN = 1_000_000
assert len(BIG_BODY) == BIG_LEN


def run(argv, input=b"", timeout=60, env=None):
    """(rc, stdout, stderr); rc is None after a timeout."""
    r = run_result(argv, input=input, timeout=timeout, env=env)
    return r.rc, r.out, r.err


# ---------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------

def ensure_tools(venv, install):
    """Returns {tool: path or None}; installs what is missing if allowed."""
    apt = {"testssl": "testssl.sh", "wrk": "wrk", "h2load": "nghttp2-client",
           "gnutls-cli": "gnutls-bin", "curl": "curl"}
    missing = [pkg for tool, pkg in apt.items() if not shutil.which(tool)]
    if missing and install and os.geteuid() == 0:
        print(f"# installing {missing} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], timeout=600, env=env)
        rc, out, err = run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                            *missing], timeout=900, env=env)
        if rc != 0:
            print(f"# apt-get install failed: {err.decode(errors='replace')[-500:]}")
    tools = {t: shutil.which(t) for t in apt}
    sslyze = os.path.join(venv, "bin", "sslyze")
    if not os.path.exists(sslyze) and install:
        print(f"# installing sslyze into {venv}")
        run([sys.executable, "-m", "venv", venv], timeout=300)
        rc, out, err = run([os.path.join(venv, "bin", "pip"), "install", "-q", "sslyze"],
                           timeout=900)
        if rc != 0:
            print(f"# pip install sslyze failed: {err.decode(errors='replace')[-500:]}")
    tools["sslyze"] = sslyze if os.path.exists(sslyze) else shutil.which("sslyze")
    return tools


def run_scanner(name, argv, out_dir, tag, timeout):
    """Runs the scanner whose command line is argv(json_path) and which
    writes that JSON file; keeps its console output as `<name>-<tag>.txt`.
    Returns (data or None, console text, error or None, seconds)."""
    json_path = os.path.join(out_dir, f"{name}-{tag}.json")
    began = time.monotonic()
    rc, out, err = run(argv(json_path), timeout=timeout)
    took = time.monotonic() - began
    text = (out + err).decode(errors="replace")
    with open(os.path.join(out_dir, f"{name}-{tag}.txt"), "wb") as f:
        f.write(out + err)
    if not os.path.exists(json_path):
        return None, text, f"{name} produced no JSON (exit {rc}): {text[-800:]}", took
    with open(json_path) as f:
        return json.load(f), text, None, took


def run_testssl(tool, port, ca, out_dir, tag):
    def argv(json_path):
        return [tool, "--quiet", "--color", "0", "--warnings", "batch", "--ip", "127.0.0.1",
                "--openssl-timeout", "10", "--jsonfile", json_path,
                *(["--add-ca", ca] if ca else []), f"localhost:{port}"]
    data, _, error, took = run_scanner("testssl", argv, out_dir, tag, 900)
    return data, error, took


def findings_of_testssl(data):
    findings = []
    for item in data:
        sev = item.get("severity", "")
        if sev in MEDIUM_PLUS:
            findings.append((sev, item.get("id", "?"), item.get("finding", "")))
    return findings


def facts_of_testssl(data):
    """A few values worth showing even when they are fine."""
    want = ("TLS1", "TLS1_1", "TLS1_2", "TLS1_3", "SSLv2", "SSLv3", "cipher_order",
            "PFS_ECDHE_curves", "TLS_session_ticket", "sessionresumption_ticket",
            "secure_renego", "secure_client_renego", "CRIME_TLS", "heartbleed",
            "fallback_SCSV", "cert_keySize", "cert_chain_of_trust")
    return [(i["id"], i.get("severity", ""), i.get("finding", "")) for i in data
            if i.get("id") in want]


# ---------------------------------------------------------------------------
# sslyze
# ---------------------------------------------------------------------------

def run_sslyze(tool, port, ca, out_dir, tag):
    def argv(json_path):
        return [tool, "--json_out", json_path, "--mozilla_config", "intermediate",
                *(["--certinfo_ca_file", ca] if ca else []), f"localhost:{port}{{127.0.0.1}}"]
    data, text, error, took = run_scanner("sslyze", argv, out_dir, tag, 600)
    if error:
        return None, None, error, took
    # the compliance verdict is only in the text output
    m = re.search(r"COMPLIANCE AGAINST TLS CONFIGURATION.*", text, re.S)
    return data, (m.group(0) if m else ""), None, took


WEAK_SUITE = re.compile(r"NULL|EXPORT|RC4|DES|anon|MD5|IDEA|RC2|SEED|PSK")


def findings_of_sslyze(data, compliance, ca_given):
    """sslyze reports facts, not severities. The mapping used here:
    CRITICAL: certificate not trusted by any store (or the given CA), Heartbleed;
    HIGH: SSL 2/3 accepted, a NULL/EXPORT/RC4/DES/anon suite accepted, CCS
          injection, ROBOT, compression, host name mismatch;
    MEDIUM: TLS 1.0/1.1 accepted, a TLS 1.2 suite without forward secrecy or
          AEAD, insecure or client-initiated renegotiation, no TLS_FALLBACK_SCSV,
          a curve under 256 bits, 0-RTT early data, each failed Mozilla
          "intermediate" rule not already covered above."""
    findings = []
    for server in data.get("server_scan_results", []):
        if server.get("scan_status") != "COMPLETED":
            findings.append(("HIGH", "scan", f"sslyze could not scan: {server.get('connectivity_error_trace')}"))
            continue
        res = server["scan_result"]

        def result(name):
            r = res.get(name) or {}
            if r.get("status") not in (None, "COMPLETED"):
                findings.append(("WARN", name, f"scan command {r.get('status')}: {r.get('error_reason')}"))
                return None
            return r.get("result")

        cert = result("certificate_info")
        if cert:
            for dep in cert.get("certificate_deployments", []):
                trusted = [v for v in dep.get("path_validation_results", [])
                           if v.get("was_validation_successful")]
                if not trusted:
                    reasons = sorted({(v.get("validation_error") or "")[:90]
                                      for v in dep.get("path_validation_results", [])})
                    findings.append(("CRITICAL", "certificate_trust",
                                     f"chain not trusted by any store{' (test CA given)' if ca_given else ''}: "
                                     + "; ".join(reasons)[:240]))
                if dep.get("leaf_certificate_subject_matches_hostname") is False:
                    findings.append(("HIGH", "certificate_hostname", "leaf does not match the host name"))
                if dep.get("received_chain_has_valid_order") is False:
                    findings.append(("MEDIUM", "certificate_chain_order", "chain order is invalid"))
        for name, sev in (("ssl_2_0_cipher_suites", "HIGH"), ("ssl_3_0_cipher_suites", "HIGH"),
                          ("tls_1_0_cipher_suites", "MEDIUM"), ("tls_1_1_cipher_suites", "MEDIUM")):
            r = result(name)
            if r and r.get("accepted_cipher_suites"):
                findings.append((sev, name, f"{len(r['accepted_cipher_suites'])} suites accepted"))
        for name in ("tls_1_2_cipher_suites", "tls_1_3_cipher_suites"):
            r = result(name)
            for s in (r or {}).get("accepted_cipher_suites", []):
                n = s["cipher_suite"]["name"]
                if WEAK_SUITE.search(n):
                    findings.append(("HIGH", name, f"weak suite accepted: {n}"))
                elif name.startswith("tls_1_2") and (not re.search(r"ECDHE|DHE", n)
                                                     or not re.search(r"GCM|CHACHA20|CCM", n)):
                    findings.append(("MEDIUM", name, f"suite without forward secrecy or AEAD: {n}"))
        r = result("heartbleed")
        if r and r.get("is_vulnerable_to_heartbleed"):
            findings.append(("CRITICAL", "heartbleed", "vulnerable"))
        r = result("openssl_ccs_injection")
        if r and r.get("is_vulnerable_to_ccs_injection"):
            findings.append(("HIGH", "openssl_ccs_injection", "vulnerable"))
        r = result("robot")
        if r and "VULNERABLE" in str(r.get("robot_result", "")) and "NOT_VULNERABLE" not in str(r.get("robot_result", "")):
            findings.append(("HIGH", "robot", r.get("robot_result")))
        r = result("tls_compression")
        if r and r.get("supports_compression"):
            findings.append(("HIGH", "tls_compression", "compression enabled (CRIME)"))
        r = result("session_renegotiation")
        if r:
            if r.get("is_vulnerable_to_client_renegotiation_dos"):
                findings.append(("MEDIUM", "session_renegotiation", "client-initiated renegotiation accepted"))
            if r.get("supports_secure_renegotiation") is False:
                findings.append(("MEDIUM", "session_renegotiation", "no secure renegotiation (RFC 5746)"))
        r = result("tls_fallback_scsv")
        if r and r.get("supports_fallback_scsv") is False:
            findings.append(("MEDIUM", "tls_fallback_scsv", "TLS_FALLBACK_SCSV not supported"))
        r = result("elliptic_curves")
        if r:
            for c in r.get("supported_curves", []) or []:
                if c.get("size", 256) < 256:
                    findings.append(("MEDIUM", "elliptic_curves", f"weak curve {c.get('name')}"))
        r = result("tls_1_3_early_data")
        if r and r.get("supports_early_data"):
            findings.append(("MEDIUM", "tls_1_3_early_data", "0-RTT early data accepted (replayable)"))
    # Mozilla "intermediate" rules; certificate trust is counted above
    for line in compliance.splitlines():
        m = re.match(r"\s*\*\s*(\w+):\s*(.*)", line)
        if m and not m.group(1).startswith("certificate_path_validation"):
            findings.append(("MEDIUM", f"mozilla_intermediate.{m.group(1)}", m.group(2)[:200]))
    return findings


def facts_of_sslyze(data):
    facts = []
    for server in data.get("server_scan_results", []):
        res = server.get("scan_result") or {}
        for name in ("tls_1_2_cipher_suites", "tls_1_3_cipher_suites"):
            r = (res.get(name) or {}).get("result") or {}
            facts.append((name, ", ".join(s["cipher_suite"]["name"]
                                          for s in r.get("accepted_cipher_suites", []))))
        r = (res.get("elliptic_curves") or {}).get("result") or {}
        facts.append(("elliptic_curves", ", ".join(c["name"] for c in r.get("supported_curves") or [])))
        r = (res.get("session_resumption") or {}).get("result") or {}
        if r:
            facts.append(("session_resumption",
                          f"session id: {r.get('session_id_resumption_result')}, "
                          f"tickets: {r.get('tls_ticket_resumption_result')}"))
    return facts


# ---------------------------------------------------------------------------
# our own check: TLS 1.2 session ticket key
# ---------------------------------------------------------------------------

def ticket_key_names(port, count=3, pause=1.5, tmp="."):
    """The key name (first 16 bytes of an OpenSSL ticket) of `count` fresh
    TLS 1.2 sessions, `pause` seconds apart."""
    names = []
    for i in range(count):
        sess = os.path.join(tmp, f"sess{i}.pem")
        rc, out, err = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-servername", "localhost", "-tls1_2", "-sess_out", sess],
                           input=b"", timeout=15)
        rc, text, _ = run(["openssl", "sess_id", "-in", sess, "-noout", "-text"], timeout=10)
        m = re.search(rb"TLS session ticket:\s*\n((?:\s*[0-9a-f]{4} - .*\n)+)", text)
        if not m:
            names.append(None)
        else:
            hexes = re.findall(rb"([0-9a-f]{2})[ -]", re.sub(rb"^\s*[0-9a-f]{4} - ", b"",
                                                            m.group(1), flags=re.M))
            names.append(b"".join(hexes[:16]).decode())
        if i + 1 < count:
            time.sleep(pause)
    return names


def ticket_findings(port, tmp):
    names = ticket_key_names(port, tmp=tmp)
    if not all(names):
        return [], f"no TLS 1.2 session ticket issued ({names})"
    if len(set(names)) == 1:
        return [("MEDIUM", "session_ticket_key_rotation",
                 f"every TLS 1.2 ticket is sealed with one key ({names[0][:12]}...) for the "
                 "life of the context: OpenSSL's default ticket key is made when the SSL_CTX "
                 "is built and never rotated, so whoever reads it later can decrypt every "
                 "recorded session resumed with a ticket (no forward secrecy for resumptions)")], \
               f"key name {names[0]} for all {len(names)} tickets"
    return [], f"key names {names}"


def pinned_note(port, venv, tmp):
    """A client may pin the self-signed default certificate as its only
    trust anchor. OpenSSL accepts that; a strict RFC 5280 path validator
    (Python cryptography's, shipped with sslyze) also wants the
    authorityKeyIdentifier extension. Printed as a note (LOW)."""
    rc, pem, _ = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                      "localhost"], input=b"", timeout=15)
    m = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", pem, re.S)
    if not m:
        return
    path = os.path.join(tmp, "selfsigned.pem")
    with open(path, "wb") as f:
        f.write(m.group(0))
    code = ("import sys\nfrom cryptography import x509\n"
            "from cryptography.x509.verification import PolicyBuilder, Store\n"
            "c = x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read())\n"
            "v = PolicyBuilder().store(Store([c])).build_server_verifier(x509.DNSName('localhost'))\n"
            "try:\n    v.verify(c, []); print('verifies')\n"
            "except Exception as e:\n    print('fails:', e)\n")
    rc, out, err = run([os.path.join(venv, "bin", "python"), "-c", code, path], timeout=30)
    text = (out or err).decode(errors="replace").strip().splitlines()
    print(f"#   own check (LOW), the self-signed certificate pinned as its own trust anchor in a "
          f"strict RFC 5280 validator (Python cryptography): {text[-1] if text else '?'}")


# ---------------------------------------------------------------------------
# verdicts
# ---------------------------------------------------------------------------

def verdict(run_name, scanner, ident, finding):
    cert_ids = ("cert_chain_of_trust", "cert_trust", "certificate_trust", "cert_revocation",
                "cert_chain_of_trust_caissuer", "certificate_hostname")
    if run_name == "default" and ident in cert_ids:
        return "expected", "self-signed default certificate (facil.io's anonymous mode)"
    if ident in ("security_headers", "HSTS", "HPKP", "banner_application"):
        return "app", "HTTP response headers are the application's (the demo sends none)"
    return "UNEXPECTED", ""


def scanner_rows(ctx, table, run_name, scanner, label, found):
    """Adds a scanner's MEDIUM+ findings, with their verdicts, to the table;
    one check (named after label) that none of them is UNEXPECTED."""
    rows = [(run_name, scanner, s, i, *verdict(run_name, scanner, i, f)[:1], f[:150])
            for s, i, f in found if s in MEDIUM_PLUS]
    table.extend(rows)
    bad = [r for r in rows if r[4] == "UNEXPECTED"]
    ctx.check(f"[{run_name}] {label}: no unexpected MEDIUM+ finding "
                f"({len(rows)} MEDIUM+, {len(bad)} unexpected)", not bad,
                "\n".join(map(str, bad)))


def print_table(rows):
    print("")
    print("# Findings of severity MEDIUM or worse")
    head = ("run", "scanner", "severity", "id", "verdict", "finding")
    widths = [8, 8, 9, 36, 11]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |")
    if not rows:
        print("| (none) | | | | | |")
    print("")


# ---------------------------------------------------------------------------
# interop matrix
# ---------------------------------------------------------------------------

def http_split(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    status = head.split(b"\r\n", 1)[0]
    return status, (int(m.group(1)) if m else None), body


def interop(ctx, port, pki, tools, tmp):
    tag = "[interop]"
    req_big = b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    upload = os.urandom(1 << 20)
    up_path = os.path.join(tmp, "upload.bin")
    with open(up_path, "wb") as f:
        f.write(upload)
    want_reply = b"received %d bytes fnv1a=%08x\n" % (len(upload), fnv1a(upload))

    # curl
    for flags, want in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")):
        out = os.path.join(tmp, "curl.big")
        rc, o, e = run(["curl", "-sS", "--cacert", pki.root, *flags, "-o", out,
                        "-w", "%{http_code} %{ssl_verify_result}",
                        f"https://localhost:{port}/big"], timeout=30)
        body = open(out, "rb").read() if os.path.exists(out) else b""
        rc2, o2, e2 = run(["curl", "-sS", "--cacert", pki.root, *flags, "--data-binary",
                           f"@{up_path}", "-H", "Content-Type: application/octet-stream",
                           f"https://localhost:{port}/"], timeout=30)
        rc3, o3, e3 = run(["curl", "-sS", "-v", "--cacert", pki.root, *flags, "-o", "/dev/null",
                           f"https://localhost:{port}/"], timeout=30)
        ctx.check(f"{tag} curl {want}: verified, GET /big byte-exact, 1 MiB POST echoed",
                    rc == 0 and o == b"200 0" and body == BIG_BODY and o2 == want_reply
                    and f"SSL connection using {want}".encode() in e3,
                    f"rc={rc} {o!r} len={len(body)} post={o2!r} {e[-300:]!r} {e2[-300:]!r}")

    # openssl s_client
    for flag in ("-tls1_2", "-tls1_3"):
        rc, o, e = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", flag, "-CAfile", pki.root, "-verify_return_error",
                        "-verify_hostname", "localhost", "-quiet"], input=req_big, timeout=30)
        status, length, body = http_split(o)
        ctx.check(f"{tag} openssl s_client {flag}: verified, GET /big byte-exact",
                    rc == 0 and status.endswith(b"200 OK") and length == BIG_LEN and body == BIG_BODY,
                    f"rc={rc} status={status!r} length={length} got={len(body)} {e[-400:]!r}")

    # gnutls-cli
    if tools.get("gnutls-cli"):
        log = os.path.join(tmp, "gnutls.log")
        rc, o, e = run(["gnutls-cli", f"--x509cafile={pki.root}", f"--port={port}",
                        f"--logfile={log}", "localhost"], input=req_big, timeout=30)
        status, length, body = http_split(o)
        info = open(log, "rb").read() if os.path.exists(log) else b""
        ctx.check(f"{tag} gnutls-cli: verified, GET /big byte-exact",
                    rc == 0 and status.endswith(b"200 OK") and body == BIG_BODY
                    and b"Handshake was completed" in info,
                    f"rc={rc} status={status!r} got={len(body)} {(info + e)[-400:]!r}")
    else:
        ctx.check(f"{tag} gnutls-cli installed", False,
                  "not installed (make scan installs it with apt-get as root)")

    # Python ssl
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        sslctx = ssl.create_default_context(cafile=pki.root)
        sslctx.minimum_version = sslctx.maximum_version = version
        ok, detail = False, ""
        try:
            c = http.client.HTTPSConnection("localhost", port, context=sslctx, timeout=20)
            c.request("GET", "/big")
            r = c.getresponse()
            body = r.read()
            negotiated = c.sock.version()
            c.close()
            c = http.client.HTTPSConnection("localhost", port, context=sslctx, timeout=20)
            c.request("POST", "/", body=upload, headers={"Content-Type": "application/octet-stream"})
            reply = c.getresponse().read()
            c.close()
            ok = r.status == 200 and body == BIG_BODY and reply == want_reply \
                and negotiated == version.name.replace("v1_", "v1.")
            detail = f"status={r.status} got={len(body)} reply={reply!r} version={negotiated}"
        except Exception as e:  # noqa: BLE001 -- any failure is the finding
            detail = repr(e)
        ctx.check(f"{tag} Python ssl {version.name}: verified, GET /big byte-exact, 1 MiB POST echoed",
                    ok, detail)

    # h2load (HTTP/1.1 over TLS: facil.io 0.7 speaks no h2)
    if tools.get("h2load"):
        n = 20
        rc, o, e = run(["h2load", "--h1", "-n", str(n), "-c", "4", "-t", "1",
                        f"https://127.0.0.1:{port}/big"], timeout=60)
        text = o.decode(errors="replace")
        m = re.search(r"traffic: .*?, .*?\((\d+)\) data", text)
        proto = re.search(r"TLS Protocol: (\S+)", text)
        ctx.check(f"{tag} h2load --h1: {n} x GET /big all succeeded, exactly {n * BIG_LEN} body bytes "
                    f"({proto.group(1) if proto else '?'})",
                    rc == 0 and f"{n} succeeded, 0 failed, 0 errored" in text
                    and m is not None and int(m.group(1)) == n * BIG_LEN, text[-800:])
    else:
        ctx.check(f"{tag} h2load installed", False,
                  "not installed (make scan installs it with apt-get as root)")
    if tools.get("wrk"):
        rc, o, e = run(["wrk", "-t1", "-c4", "-d2s", "--timeout", "5s",
                        f"https://127.0.0.1:{port}/"], timeout=60)
        text = o.decode(errors="replace")
        m = re.search(r"(\d+) requests in", text)
        ctx.check(f"{tag} wrk 2 s, 4 connections: {m.group(1) if m else '?'} requests, no socket "
                    "errors, no non-2xx",
                    rc == 0 and m is not None and int(m.group(1)) > 0 and "Socket errors" not in text
                    and "Non-2xx" not in text, text[-800:])
    else:
        ctx.check(f"{tag} wrk installed", False,
                  "not installed (make scan installs it with apt-get as root)")

    refusals(ctx, port)


# crafted ClientHellos ---------------------------------------------------------

GOOD_SUITES = [0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
REFUSED = {
    "NULL suites only": [0x003B, 0x0002, 0x0001, 0xC010, 0xC006, 0x002C],
    "EXPORT suites only": [0x0003, 0x0006, 0x0008, 0x000E, 0x0014, 0x0062, 0x0064],
    "RC4 suites only": [0x0005, 0x0004, 0xC011, 0xC007],
    "3DES suites only": [0x000A, 0xC012, 0xC008, 0x0016],
    "CBC suites only (ECDHE and RSA)": [0xC013, 0xC014, 0xC027, 0xC028, 0xC009, 0xC00A, 0xC023,
                                        0xC024, 0x002F, 0x0035, 0x003C, 0x003D],
    "anonymous suites only": [0xC018, 0xC017, 0x00A6, 0x006C, 0x0034],
    "static RSA AEAD only (no forward secrecy)": [0x009C, 0x009D],
}
ALERTS = {0: "close_notify", 10: "unexpected_message", 40: "handshake_failure",
          47: "illegal_parameter", 50: "decode_error", 70: "protocol_version",
          71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
          109: "missing_extension", 112: "unrecognized_name", 120: "no_application_protocol"}


def client_hello(version, record_version, suites, extensions=True):
    body = struct.pack(">H", version) + os.urandom(32) + b"\x00"
    body += struct.pack(">H", 2 * len(suites)) + b"".join(struct.pack(">H", s) for s in suites)
    body += b"\x01\x00"
    if extensions:
        sni = b"localhost"
        exts = b""
        exts += struct.pack(">HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
        groups = [0x001D, 0x0017, 0x0018]
        g = b"".join(struct.pack(">H", x) for x in groups)
        exts += struct.pack(">HHH", 10, len(g) + 2, len(g)) + g
        exts += struct.pack(">HHB", 11, 2, 1) + b"\x00"
        sig = [0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0201, 0x0203]
        s = b"".join(struct.pack(">H", x) for x in sig)
        exts += struct.pack(">HHH", 13, len(s) + 2, len(s)) + s
        exts += struct.pack(">HHB", 0xFF01, 1, 0)
        body += struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16" + struct.pack(">HH", record_version, len(hs)) + hs


def sslv2_hello():
    specs = bytes.fromhex("0700c0" "050080" "030080" "010080" "060040" "040080" "020080")
    challenge = os.urandom(16)
    body = b"\x01" + struct.pack(">HHHH", 0x0002, len(specs), 0, len(challenge)) + specs + challenge
    return struct.pack(">H", 0x8000 | len(body)) + body


def answer_to(port, hello, timeout=5.0):
    """What the server sends back: (first bytes, seconds, closed?)."""
    began = time.monotonic()
    data = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(hello)
        s.settimeout(timeout)
        try:
            while len(data) < 7:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                data += chunk
            if data and not closed:
                # after a fatal alert the server must close the connection
                s.settimeout(2)
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        closed = True
                        break
        except (socket.timeout, TimeoutError):
            pass
        except ConnectionResetError:
            closed = True
    return data, time.monotonic() - began, closed


def describe(data):
    if len(data) >= 7 and data[0] == 0x15:
        return f"fatal alert {data[6]} ({ALERTS.get(data[6], '?')})" if data[5] == 2 \
            else f"alert level {data[5]} desc {data[6]}"
    if data[:1] == b"\x16":
        return "a handshake record (ServerHello)"
    return f"{data[:16].hex() or 'nothing'}"


def refusals(ctx, port):
    tag = "[interop]"
    data, took, closed = answer_to(port, client_hello(0x0303, 0x0301, GOOD_SUITES))
    ctx.check(f"{tag} control: a crafted TLS 1.2 ClientHello with ECDHE AEAD suites gets a "
                f"ServerHello ({describe(data)})", data[:1] == b"\x16" and data[5:6] == b"\x02",
                data[:32].hex())
    cases = [("SSLv3 ClientHello", client_hello(0x0300, 0x0300, [0x000A, 0x0005, 0x002F, 0x0035], False)),
             ("TLS 1.0 ClientHello", client_hello(0x0301, 0x0301, [0xC013, 0xC014, 0x002F, 0x0035, 0x000A])),
             ("TLS 1.1 ClientHello", client_hello(0x0302, 0x0301, [0xC013, 0xC014, 0x002F, 0x0035, 0x000A]))]
    cases += [(f"TLS 1.2 ClientHello, {name}", client_hello(0x0303, 0x0301, suites))
              for name, suites in REFUSED.items()]
    for name, hello in cases:
        data, took, closed = answer_to(port, hello)
        alert = len(data) >= 7 and data[0] == 0x15 and data[5] == 2
        ctx.check(f"{tag} {name}: refused with {describe(data)} in {took:.2f} s, then closed",
                    alert and closed and took < 4, f"got {data[:32].hex()} closed={closed}")
    data, took, closed = answer_to(port, sslv2_hello())
    ctx.check(f"{tag} SSLv2 ClientHello: refused ({describe(data) if data else 'closed'}) in "
                f"{took:.2f} s, no hang (SSLv2 has no TLS alert format)",
                closed and took < 4 and (not data or data[0] == 0x15), f"got {data[:32].hex()}")


# ---------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tools(paths):
    t = ensure_tools(os.path.join(paths.build, "scan-venv"),
                     install=os.environ.get("SCAN_NO_INSTALL", "") in ("", "0"))
    print("# tools: " + ", ".join(f"{k}={'yes' if v else 'MISSING'}" for k, v in t.items()))
    return t


@pytest.fixture(scope="module")
def scan_pki(tmp_path_factory):
    p = ScanPki(str(tmp_path_factory.mktemp("scan-pki")))
    p.make()
    return p


def start(ctx, name, scan_pki):
    """The server of run `name`; waits until it accepts connections (the
    demo prints no READY line). Returns (server, listening?)."""
    if name == "default":
        argv = [ctx.binary("static", "demo"), "{port}", "127.0.0.1"]
    else:
        argv = [ctx.binary("static", "fio_server"), "certs", "{port}", "localhost",
                scan_pki.key, scan_pki.fullchain]
    # should the library grow a ticket key rotation period setting, this name
    # is what the ticket check expects (1 s: it waits 1.5 s between tickets);
    # unknown variables are ignored
    srv = ctx.server(argv, name, env=ctx.env("static", {"FIO_TLS_TICKET_KEY_SECONDS": "1"}))
    end = time.monotonic() + 15
    while time.monotonic() < end and srv.alive():
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=1):
                return srv, True
        except OSError:
            time.sleep(0.1)
    return srv, False


def check_survived(ctx, label, srv):
    srv.stop()
    log = srv.text()
    crashes = [l for l in log.splitlines() if re.search(r"FATAL|panicked|Sanitizer", l)]
    ctx.check(label, srv.rc == 0 and not crashes,
              f"exit {srv.rc}\n" + "\n".join(crashes[:10]) + log[-1500:])


@pytest.mark.parametrize("name", ["default", "test-ca"])
def test_scanners(ctx, tools, scan_pki, name):
    srv, listening = start(ctx, name, scan_pki)
    if not ctx.check(f"[{name}] server listens on 127.0.0.1:{srv.port}", listening, srv.text()):
        return
    port, tmp = srv.port, ctx.tmp
    ca = scan_pki.root if name == "test-ca" else None
    table = []
    print(f"# [{name}] scanning localhost:{port} (127.0.0.1)"
          f"{' with the test root CA' if ca else ''}")
    if tools.get("testssl"):
        data, err, took = run_testssl(tools["testssl"], port, ca, tmp, name)
        if ctx.check(f"[{name}] testssl.sh completed ({took:.0f} s)", data is not None, err):
            for fact in facts_of_testssl(data):
                print(f"#   testssl {fact[0]}: {fact[1]} {fact[2][:110]}")
            scanner_rows(ctx, table, name, "testssl", "testssl.sh", findings_of_testssl(data))
    else:
        ctx.check(f"[{name}] testssl.sh available", False, "not installed")
    if tools.get("sslyze"):
        data, compliance, err, took = run_sslyze(tools["sslyze"], port, ca, tmp, name)
        if ctx.check(f"[{name}] sslyze completed ({took:.0f} s)", data is not None, err):
            for fact in facts_of_sslyze(data):
                print(f"#   sslyze {fact[0]}: {fact[1][:160]}")
            for line in compliance.strip().splitlines()[2:]:
                if line.strip() and "Warning" not in line and "x509_store" not in line:
                    print(f"#   sslyze {line.strip()}")
            scanner_rows(ctx, table, name, "sslyze", "sslyze",
                         findings_of_sslyze(data, compliance, bool(ca)))
    else:
        ctx.check(f"[{name}] sslyze available", False, "not installed")
    if not ca and tools.get("sslyze"):
        pinned_note(port, os.path.dirname(os.path.dirname(tools["sslyze"])), tmp)
    found, detail = ticket_findings(port, tmp)
    print(f"#   own check, TLS 1.2 session tickets: {detail}")
    rows = [(name, "own", s, i, "UNEXPECTED", f[:150]) for s, i, f in found]
    table += rows
    ctx.check(f"[{name}] session ticket key rotation", not rows, "\n".join(r[5] for r in rows))
    print_table(table)
    check_survived(ctx, f"[{name}] server survived the scans and stopped cleanly", srv)


def test_interop(ctx, tools, scan_pki):
    srv, listening = start(ctx, "test-ca", scan_pki)
    if not listening:
        pytest.fail(f"the test-ca server does not listen:\n{srv.text()[-2000:]}")
    interop(ctx, srv.port, scan_pki, tools, ctx.tmp)
    check_survived(ctx, "[interop] server survived the interop matrix and stopped cleanly", srv)
