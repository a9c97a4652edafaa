"""TLS peers driven by the suites: curl, openssl s_client, a clear-text
client, a server that hangs up mid-handshake; and what their output says."""
import os
import re
import socket
import threading
import time

from .proc import Interactive, excerpt, run


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




def accept_loop(sock, handle):
    """Calls handle(conn) for each connection accepted on the listening
    `sock`, until it is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        handle(conn)


class HangUpServer:
    """A TCP server (a thread in this process) that accepts, reads the
    ClientHello and hangs up without a word (no alert)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=accept_loop, args=(self.sock, self._hang_up), daemon=True).start()

    @staticmethod
    def _hang_up(conn):
        try:
            conn.settimeout(5)
            conn.recv(65536)
        except OSError:
            pass
        conn.close()

    def close(self):
        self.sock.close()
