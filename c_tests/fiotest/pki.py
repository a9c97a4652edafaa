"""The test PKIs, made with the openssl command: `Pki` (a root CA, an
intermediate, leaf certificates for localhost, a.test and b.test, and bad
inputs), the client suite's additions (`ClientPki`) and `ScanPki` (the scan
suite's CA-issued-like chain)."""
import datetime
import os
import random
import string
import subprocess

from .proc import run


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
# the client suite's PKI
# ---------------------------------------------------------------------------
OTHER_CA_CN = "fio_tls Other Test CA"
PING = b"ping fio\n"  # the contents of ClientPki.ping


class ClientPki(Pki):
    """The test PKI above plus what the client suite (suites/test_client.py)
    needs: an expired leaf, a leaf from another CA, a self-signed leaf,
    client certificates, and the payloads its peers serve or echo."""

    def ca_sign(self, csr, issuer_pem, issuer_key, out, extensions, start, end):
        """Like Pki.sign, with explicit validity dates (`openssl ca`; the
        openssl 3.0 `x509` command cannot set notBefore/notAfter)."""
        db = self.p("cadb")
        if not os.path.isdir(db):
            os.mkdir(db)
            open(os.path.join(db, "index.txt"), "w").close()
            with open(os.path.join(db, "serial"), "w") as f:
                # an even number of hex digits, or openssl cannot read it
                f.write("%016x\n" % random.randrange(1 << 56, 1 << 63))
        cnf = os.path.join(db, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(f"[ca]\ndefault_ca = tmpca\n[tmpca]\ndir = {db}\n"
                    "database = $dir/index.txt\nnew_certs_dir = $dir\n"
                    "serial = $dir/serial\ndefault_md = sha256\npolicy = pol\n"
                    "unique_subject = no\n[pol]\ncommonName = supplied\n")
        ext = out + ".ext"
        with open(ext, "w") as f:
            f.write("[v3]\n" + "\n".join(extensions) + "\n")
        fmt = "%Y%m%d%H%M%SZ"
        self.ossl("ca", "-batch", "-config", cnf, "-cert", issuer_pem,
                  "-keyfile", issuer_key, "-in", csr, "-out", out, "-notext",
                  "-startdate", start.strftime(fmt), "-enddate", end.strftime(fmt),
                  "-extfile", ext, "-extensions", "v3")

    def issue(self, name, issuer, extensions, kind="ec", chain=True, dates=None):
        """<name>.key and <name>.pem signed by issuer=(pem, key); with
        chain, <name>-chain.pem = leaf + intermediate. Returns (key, cert)."""
        key, csr, pem = self.p(f"{name}.key"), self.p(f"{name}.csr"), self.p(f"{name}.pem")
        self.key(key, kind)
        self.ossl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        if dates:
            self.ca_sign(csr, issuer[0], issuer[1], pem, extensions, *dates)
        else:
            self.sign(csr, issuer[0], issuer[1], pem, extensions)
        if not chain:
            return key, pem
        out = self.p(f"{name}-chain.pem")
        with open(out, "w") as f:
            f.write(open(pem).read() + open(self.int_pem).read())
        return key, out

    def make(self):
        super().make()
        self.localhost_leaf = self.p("localhost.pem")  # leaf only (s_server: -cert_chain)
        self.localhost_leaf_chain = self.localhost[1]
        server = ["basicConstraints=critical,CA:FALSE",
                  "keyUsage=critical,digitalSignature",
                  "extendedKeyUsage=serverAuth"]
        client = ["basicConstraints=critical,CA:FALSE",
                  "keyUsage=critical,digitalSignature",
                  "extendedKeyUsage=clientAuth"]
        inter = (self.int_pem, self.int_key)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.expired_dates = (now - datetime.timedelta(days=30),
                              now - datetime.timedelta(days=1))
        self.expired = self.issue("expired.test", inter,
                                  server + ["subjectAltName=DNS:expired.test"],
                                  dates=self.expired_dates)
        # another root CA, not trusted by anybody here
        self.other_ca_key, self.other_ca_pem = self.p("other-ca.key"), self.p("other-ca.pem")
        self.ossl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.other_ca_key,
                  "-out", self.other_ca_pem, "-days", "30", "-subj",
                  f"/CN={OTHER_CA_CN}", "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        other = (self.other_ca_pem, self.other_ca_key)
        self.unknown = self.issue("unknown.test", other,
                                  server + ["subjectAltName=DNS:unknown.test"], chain=False)
        self.selfsigned = (self.p("selfsigned.test.key"), self.p("selfsigned.test.pem"))
        self.ossl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.selfsigned[0],
                  "-out", self.selfsigned[1], "-days", "30", "-subj",
                  "/CN=selfsigned.test", "-addext", "subjectAltName=DNS:selfsigned.test")
        # client certificates: via the intermediate (the chain file carries
        # it), straight from the root, and from the other CA
        self.client = self.issue("client1", inter, client)
        self.client_root = self.issue("client-root", (self.ca_pem, self.ca_key),
                                      client, chain=False)
        self.client_other = self.issue("client-other", other, client, chain=False)
        # payloads
        rnd = random.Random(1234)
        self.random_mb = rnd.randbytes(1_000_000)
        self.random_path = self.p("random-1mb.bin")
        with open(self.random_path, "wb") as f:
            f.write(self.random_mb)
        alphabet = string.ascii_letters + string.digits + " .,;:-_=+/"
        lines, size = [], 0
        while size < 1_000_000:
            line = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 200)))
            if line == "CLOSE":  # s_server -rev would hang up
                continue
            lines.append(line)
            size += len(line) + 1
        self.text_mb = "".join(l + "\n" for l in lines).encode()
        self.text_reversed = "".join(l[::-1] + "\n" for l in lines).encode()
        self.text_path = self.p("text-1mb.txt")
        with open(self.text_path, "wb") as f:
            f.write(self.text_mb)
        self.www = self.p("www")
        os.mkdir(self.www)
        with open(os.path.join(self.www, "random.bin"), "wb") as f:
            f.write(self.random_mb)
        self.http_body = rnd.randbytes(300_000)
        with open(os.path.join(self.www, "page.http"), "wb") as f:
            f.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(self.http_body) + self.http_body)
        self.get_random = self.p("get-random.txt")
        with open(self.get_random, "wb") as f:
            f.write(b"GET /random.bin HTTP/1.0\r\n\r\n")
        self.ping = self.p("ping.txt")
        with open(self.ping, "wb") as f:
            f.write(PING)


class ScanPki:
    """The PKI of the scan suite (suites/test_scan.py), made with the openssl
    command: a P-384 root, a P-256 intermediate and an RSA 2048 leaf for
    localhost / 127.0.0.1 that names its revocation sources (loopback URLs),
    as a CA-issued certificate would; `fullchain` is leaf + intermediate."""

    def __init__(self, d):
        self.d = d
        self.root = os.path.join(d, "root.pem")
        self.key = os.path.join(d, "leaf.key")
        self.fullchain = os.path.join(d, "fullchain.pem")

    def ossl(self, *args):
        r = subprocess.run(["openssl", *args], cwd=self.d, capture_output=True)
        if r.returncode:
            raise RuntimeError(f"openssl {args}: {r.stderr.decode(errors='replace')}")

    def make(self):
        p = lambda n: os.path.join(self.d, n)
        with open(p("root.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                    "subjectKeyIdentifier=hash\n")
        with open(p("inter.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                    "keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n")
        # A real CA's leaf names its revocation sources; the URLs point at
        # the loopback (the scanners are not allowed to phone out anyway).
        with open(p("leaf.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                    "crlDistributionPoints=URI:http://127.0.0.1:9/inter.crl\n"
                    "authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp,"
                    "caIssuers;URI:http://127.0.0.1:9/inter.der\n")
        self.ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384",
                  "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "3650",
                  "-subj", "/O=fio_tls scan/CN=fio_tls scan Test Root CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.ossl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", "inter.key", "-out", "inter.csr",
                  "-subj", "/O=fio_tls scan/CN=fio_tls scan Test Intermediate CA")
        self.ossl("x509", "-req", "-in", "inter.csr", "-CA", "root.pem", "-CAkey", "root.key",
                  "-CAcreateserial", "-days", "1825", "-sha384", "-extfile", "inter.ext",
                  "-out", "inter.pem")
        self.ossl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key",
                  "-out", "leaf.csr", "-subj", "/O=fio_tls scan/CN=localhost")
        self.ossl("x509", "-req", "-in", "leaf.csr", "-CA", "inter.pem", "-CAkey", "inter.key",
                  "-CAcreateserial", "-days", "90", "-sha256", "-extfile", "leaf.ext",
                  "-out", "leaf.pem")
        with open(self.fullchain, "wb") as out:
            for n in ("leaf.pem", "inter.pem"):
                with open(p(n), "rb") as f:
                    out.write(f.read())
