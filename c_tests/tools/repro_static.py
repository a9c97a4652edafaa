#!/usr/bin/env python3
"""Minimal reproduction: a static file (public_folder) larger than what the
socket and the library's ~64 KiB of pending ciphertext can hold is cut
short over TLS.

  repro_static.py FIO_SERVER [SIZE_MIB]

FIO_SERVER is build/c_tests/static/fio_server. Writes a SIZE_MIB (default
32) file into a temporary public folder, starts its torture mode
(threads=1, workers=1) with an HTTPS port and a plain-HTTP port, and
downloads the file with curl from both, once at full speed and once at
2 MiB/s. Plain HTTP delivers every byte; HTTPS stopped after a few MiB with
curl error 18 ("transfer closed with N bytes remaining").

Why (facil.io 0.7.0.beta4, lib/facil/fio.c): with rw hooks installed,
files are sent by fio_sock_write_from_fd (pread + the write hook). When the
write hook answers -1/EWOULDBLOCK, that function returns `total`, which is
0, and fio_flush takes a 0 from a packet's write_func as ECONNRESET and
force-closes the connection (gdb: fio_flush -> fio_force_close).

libfio_tls up to 0e04495 answered -1/EWOULDBLOCK once ~64 KiB of
ciphertext waited for the socket: HTTPS stopped after 4-16 MiB. Since
ad02518 the write hook pushes back with a short write instead, and every
line above is complete (torture item 5's 100 MiB static download covers
it at full speed). Exit status 0 when every download is complete.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fiotest import torture as T  # noqa: E402


def main():
    server_bin = sys.argv[1]
    size = int(sys.argv[2]) * T.MiB if len(sys.argv) > 2 else 32 * T.MiB
    rc = 0
    with tempfile.TemporaryDirectory(prefix="repro_static.") as tmp:
        public = os.path.join(tmp, "public")
        os.mkdir(public)
        with open(os.path.join(public, "f.bin"), "wb") as f:
            f.write(os.urandom(size))
        srv = T.TortureServer(server_bin, os.path.join(tmp, "server.log"), public=public,
                              plain=True)
        try:
            srv.wait_ready()
            for rate in (None, "2M"):
                for scheme, prt in (("http", srv.plain_port), ("https", srv.port)):
                    args = ["curl", "-sSk", "--max-time", "60", "-o", os.devnull,
                            "-w", "%{size_download}"]
                    if rate:
                        args += ["--limit-rate", rate]
                    r = subprocess.run(args + [f"{scheme}://127.0.0.1:{prt}/f.bin"],
                                       capture_output=True, timeout=90)
                    got = int(r.stdout or b"0")
                    speed = "full speed" if not rate else f"at {rate}/s"
                    err = f" {r.stderr.decode().strip()}" if r.returncode else ""
                    print(f"{scheme:5} {speed:10}: {got} of {size} bytes, "
                          f"curl rc={r.returncode}{err}")
                    if got != size:
                        rc = 1
        finally:
            srv.stop(timeout=10)
    return rc


if __name__ == "__main__":
    sys.exit(main())
