#!/usr/bin/env python3
"""Regenerates fuzz/seeds/ (committed; run by hand, not by make).

server_handshake: the first flight of real clients (openssl s_client in
several modes, gnutls-cli, curl) as recorded by a listener on 127.0.0.1,
plus a TLS 1.2 mutual-TLS client's whole flight (Certificate,
ClientKeyExchange, CertificateVerify, Finished) recorded through a proxy to
`openssl s_server -Verify`, each behind a few flag/chunk prefixes (see
fuzz_targets/server_handshake.rs).

key_cert_files: key and certificate pairs in the formats the loader meets
(PEM PKCS#8 / SEC1 / PKCS#1, DER, chains, encrypted keys, Ed25519), laid
out as `key_len (u16 LE), key, cert`.
"""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_first_flight(argv_for_port, seconds=1.5):
    """Listens on 127.0.0.1, runs the client, returns what it sent first."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    proc = subprocess.Popen(argv_for_port(port), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.settimeout(5)
    data = b""
    try:
        conn, _ = srv.accept()
        conn.settimeout(0.3)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                if data:
                    break
                continue
            if not chunk:
                break
            data += chunk
        conn.close()
    finally:
        srv.close()
        proc.kill()
        proc.wait()
    return data


def record_through_proxy(server_argv, server_port, client_argv, seconds=3):
    """Runs a real server and client with a recording proxy between them;
    returns every byte the client sent."""
    server = subprocess.Popen(server_argv, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    proxy_port = lst.getsockname()[1]
    sent = bytearray()

    def pump(a, b, record):
        try:
            while True:
                chunk = a.recv(65536)
                if not chunk:
                    break
                if record:
                    sent.extend(chunk)
                b.sendall(chunk)
        except OSError:
            pass

    def serve():
        c, _ = lst.accept()
        s = socket.create_connection(("127.0.0.1", server_port))
        threading.Thread(target=pump, args=(c, s, True), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    client = subprocess.Popen(client_argv(proxy_port), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    for p in (client, server):
        p.kill()
        p.wait()
    lst.close()
    return bytes(sent)


def ossl(*args, cwd=None):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def write_seeds(target, seeds):
    d = os.path.join(HERE, "seeds", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


def handshake_seeds(tmp):
    s_client = lambda *opts: (lambda port: ["openssl", "s_client", "-connect",
                                            f"127.0.0.1:{port}", *opts])
    flights = {
        "tls13": s_client("-tls1_3", "-servername", "localhost"),
        "tls12": s_client("-tls1_2", "-servername", "a.test"),
        "alpn": s_client("-alpn", "h2,http/1.1,spdy/3", "-servername", "www.a.test"),
        "nosni": s_client("-noservername"),
        "cbc": s_client("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"),
        "tls11": s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"),
        "psk_groups": s_client("-groups", "P-521:X448:ffdhe2048", "-tls1_3"),
        "gnutls": lambda port: ["gnutls-cli", "--insecure", f"--port={port}",
                                "--alpn=http/1.1", "127.0.0.1"],
        "curl": lambda port: ["curl", "-sk", "--http1.1", f"https://localhost:{port}/"],
    }
    seeds = {}
    for name, argv in flights.items():
        if not shutil.which(argv(0)[0]):
            continue
        data = record_first_flight(argv)
        if not data:
            continue
        for prefix, tag in ((b"\x00\x00", "whole"), (b"\x08\x03", "chunked_respond"),
                            (b"\x04\x00", "hangup")):
            seeds[f"{name}_{tag}"] = prefix + data
    # TLS 1.2 mutual TLS: the client's whole flight, Certificate included
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-subj", "/CN=localhost",
         "-days", "30", cwd=tmp)
    port = free_port()
    flight = record_through_proxy(
        ["openssl", "s_server", "-accept", str(port), "-key", f"{tmp}/k.pem",
         "-cert", f"{tmp}/c.pem", "-Verify", "1", "-CAfile", f"{tmp}/c.pem", "-quiet"],
        port,
        lambda p: ["openssl", "s_client", "-connect", f"127.0.0.1:{p}", "-tls1_2",
                   "-cert", f"{tmp}/c.pem", "-key", f"{tmp}/k.pem"])
    if flight:
        seeds["mtls12_flight"] = b"\x01\x00" + flight
        seeds["mtls12_flight_chunked"] = b"\x05\x09" + flight
    # after a real handshake: a bogus application record, a bogus alert
    seeds["established_garbage"] = b"\x02\x00" + bytes.fromhex("170303001000") + os.urandom(16)
    seeds["established_alert"] = b"\x06\x00" + bytes.fromhex("15030300020100")
    seeds["plain_http"] = b"\x00\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    return seeds


def file_seeds(tmp):
    def run(*args):
        ossl(*args, cwd=tmp)

    def read(name):
        with open(os.path.join(tmp, name), "rb") as f:
            return f.read()

    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem")
    run("req", "-new", "-x509", "-key", "ec.pem", "-subj", "/CN=a.test", "-addext",
        "subjectAltName=DNS:a.test,DNS:*.a.test,IP:127.0.0.1", "-days", "30", "-out", "ec.crt")
    run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "rsa.pem")
    run("req", "-new", "-x509", "-key", "rsa.pem", "-subj", "/CN=rsa.test", "-days", "30",
        "-out", "rsa.crt")
    run("pkey", "-in", "rsa.pem", "-traditional", "-out", "rsa_pkcs1.pem")
    run("pkey", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der")
    run("x509", "-in", "ec.crt", "-outform", "DER", "-out", "ec.crt.der")
    run("pkey", "-in", "ec.pem", "-aes-128-cbc", "-passout", "pass:x", "-out", "ec_enc.pem")
    run("pkey", "-in", "rsa.pem", "-traditional", "-aes-128-cbc", "-passout", "pass:x",
        "-out", "rsa_enc_trad.pem")
    run("genpkey", "-algorithm", "ED25519", "-out", "ed.pem")
    run("req", "-new", "-x509", "-key", "ed.pem", "-subj", "/CN=ed.test", "-days", "30",
        "-out", "ed.crt")
    # a CA-signed leaf: a chain of two
    run("req", "-new", "-key", "ec.pem", "-subj", "/CN=leaf.test", "-out", "leaf.csr")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "rsa.crt", "-CAkey", "rsa.pem",
        "-CAcreateserial", "-days", "30", "-out", "leaf.crt")

    def pair(key, cert):
        return struct.pack("<H", len(key)) + key + cert

    return {
        "ec_pem": pair(read("ec.pem"), read("ec.crt")),
        "rsa_pem": pair(read("rsa.pem"), read("rsa.crt")),
        "rsa_pkcs1": pair(read("rsa_pkcs1.pem"), read("rsa.crt")),
        "ec_der": pair(read("ec.der"), read("ec.crt.der")),
        "ec_encrypted": pair(read("ec_enc.pem"), read("ec.crt")),
        "rsa_encrypted_traditional": pair(read("rsa_enc_trad.pem"), read("rsa.crt")),
        "ed25519": pair(read("ed.pem"), read("ed.crt")),
        "chain": pair(read("ec.pem"), read("leaf.crt") + read("rsa.crt")),
        "mismatch": pair(read("rsa.pem"), read("ec.crt")),
        "key_and_cert_in_one": pair(read("ec.pem") + read("ec.crt"), read("ec.pem") + read("ec.crt")),
    }


def main():
    tmp = tempfile.mkdtemp(prefix="fio_tls_seeds.")
    try:
        write_seeds("server_handshake", handshake_seeds(tmp))
        write_seeds("key_cert_files", file_seeds(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
