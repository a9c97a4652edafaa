"""Debian's pebble (an ACME test CA) and pebble-challtestsrv (its DNS) on
loopback ports, for the suites that need a real ACME server
(test_acme.py: the library's own client; test_renewal.py: certbot).

No configuration file is shipped: the pebble config JSON is written per
test, with pebble's own HTTPS certificate issued by the test PKI, `tlsPort`
(the port pebble's validation authority connects to for TLS-ALPN-01) and
`httpPort` (HTTP-01) as the caller says. challtestsrv answers every A query
with 127.0.0.1 and no AAAA; `add_a` overrides one name.
"""
import json
import os
import re
import shutil
import socket
import ssl
import time
import urllib.request

from .proc import free_port

TOOLS = ("pebble", "pebble-challtestsrv")


def missing_tools(extra=()):
    """The programs of TOOLS (+ extra) not installed, for a skip reason."""
    return [t for t in (*TOOLS, *extra) if not shutil.which(t)]


class Pebble:
    """pebble + challtestsrv. `tls_port` / `http_port`: where pebble's VA
    validates TLS-ALPN-01 / HTTP-01 (fresh ports when None); `env`: more
    PEBBLE_* settings (PEBBLE_VA_NOSLEEP=1 always)."""

    def __init__(self, ctx, tls_port=None, http_port=None, env=None, start=True):
        self.ctx = ctx
        self.d = os.path.join(ctx.tmp, f"pebble-{ctx.serial}")
        os.makedirs(self.d)
        self.dns, self.chall_mgmt, self.acme, self.mgmt = (free_port() for _ in range(4))
        self.tls01 = tls_port or free_port()
        self.http01 = http_port or free_port()
        pki = ctx.pki
        key, csr, pem = (os.path.join(self.d, f) for f in ("pebble.key", "pebble.csr", "pebble.pem"))
        pki.key(key, "ec")
        pki.ossl("req", "-new", "-key", key, "-subj", "/CN=pebble", "-out", csr)
        pki.sign(csr, pki.int_pem, pki.int_key, pem, [
            "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        chain = os.path.join(self.d, "pebble-chain.pem")
        with open(chain, "w") as out:
            out.write(open(pem).read() + open(pki.int_pem).read())
        self.config = os.path.join(self.d, "pebble.json")
        with open(self.config, "w") as f:
            json.dump({"pebble": {
                "listenAddress": f"127.0.0.1:{self.acme}",
                "managementListenAddress": f"127.0.0.1:{self.mgmt}",
                "certificate": chain, "privateKey": key,
                "httpPort": self.http01, "tlsPort": self.tls01,
                "ocspResponderURL": "", "externalAccountBindingRequired": False}}, f)
        # what trusts pebble's HTTPS (FIO_TLS_ACME_CA_FILE, certbot's bundle)
        self.ca_file = pki.ca_pem
        self.directory = f"https://127.0.0.1:{self.acme}/dir"
        self.chall = ctx.server(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{self.chall_mgmt}"], "challtestsrv", kind="peer",
            port=self.dns)
        self.env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", **(env or {}))
        self.pebble = None
        self.runs = []  # every pebble process started, oldest first
        if start:
            self.start()

    def start(self):
        """Starts pebble (again, on the same ports: a new run has a new root CA)."""
        self.pebble = self.ctx.server(["pebble", "-config", self.config, "-dnsserver",
                                       f"127.0.0.1:{self.dns}"], "pebble", env=self.env,
                                      kind="peer", port=self.acme)
        self.runs.append(self.pebble)
        return self.pebble

    def stop(self):
        if self.pebble and self.pebble.alive():
            self.pebble.stop()

    def ready(self, timeout=15):
        """True once challtestsrv answers and pebble serves its directory."""
        c = ssl.create_default_context(cafile=self.ca_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self.pebble and self.pebble.alive() and self.chall.alive()):
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.dns), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.acme), timeout=2) as raw:
                    with c.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        s.sendall(b"GET /dir HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                        if s.recv(100).startswith(b"HTTP/1.0 200"):
                            return True
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.2)
        return False

    def _mgmt(self, url, data=None):
        c = ssl.create_default_context(cafile=self.ca_file)
        req = urllib.request.Request(url, data=data)
        with urllib.request.urlopen(req, context=c, timeout=10) as r:
            return r.read()

    def root_pem(self):
        """The root CA of the running pebble (its management API: /roots/0),
        written to a file; returns the path."""
        path = os.path.join(self.d, f"root-{len(self.runs)}.pem")
        with open(path, "wb") as f:
            f.write(self._mgmt(f"https://127.0.0.1:{self.mgmt}/roots/0"))
        return path

    def add_a(self, host, addresses):
        """challtestsrv answers A queries for `host` with `addresses`."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": addresses}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.chall_mgmt}/add-a", data=body)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200

    def log(self):
        return "".join(p.text() for p in self.runs)

    def accounts_created(self):
        """How many accounts pebble created (its "There are now N accounts"
        line comes with each new one)."""
        return len(re.findall(r"There are now \d+ accounts in memory", self.log()))

    def orders(self):
        """How many orders pebble added (its log names no identifier there)."""
        return len(re.findall(r'Added order "[^"]+" to the db', self.log()))
