#!/usr/bin/env python3
"""Minimal reproduction: a static file (public_folder) larger than what the
socket and the library's ~64 KiB of pending ciphertext can hold is cut
short over TLS.

  torture_repro_static.py SERVER_BIN [SIZE_MIB]

Writes a SIZE_MIB (default 32) file into a temporary public folder, starts
torture_server (threads=1, workers=1) with an HTTPS port and a plain-HTTP
port, and downloads the file with curl from both, once at full speed and
once at 2 MiB/s. Plain HTTP delivers every byte; HTTPS stops after a few
MiB with curl error 18 ("transfer closed with N bytes remaining").

Why (facil.io 0.7.0.beta4, lib/facil/fio.c): with rw hooks installed,
files are sent by fio_sock_write_from_fd (pread + the write hook). When the
write hook answers -1/EWOULDBLOCK, that function returns `total`, which is
0, and fio_flush takes a 0 from a packet's write_func as ECONNRESET and
force-closes the connection (gdb: fio_flush -> fio_force_close).

libfio_tls up to 0e04495 answered -1/EWOULDBLOCK once ~64 KiB of
ciphertext waited for the socket: HTTPS stopped after 4-16 MiB. Since
ad02518 the write hook pushes back with a short write instead, and every
line above is complete. Exit status 0 when every download is complete.
"""
import os
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import torture as T  # noqa: E402


def main():
    server_bin = sys.argv[1]
    size = int(sys.argv[2]) * T.MiB if len(sys.argv) > 2 else 32 * T.MiB
    tmp = tempfile.mkdtemp(prefix="torture_repro_static.")
    rc = 0
    try:
        with open(os.path.join(tmp, "f.bin"), "wb") as f:
            f.write(os.urandom(size))
        p, port, plain = T.bare_server(server_bin, 1, 1, public=tmp)
        try:
            T.read_ready(p)
            for rate in (None, "2M"):
                for scheme, prt in (("http", plain), ("https", port)):
                    args = ["curl", "-sSk", "--max-time", "60", "-o",
                            os.devnull, "-w", "%{size_download}"]
                    if rate:
                        args += ["--limit-rate", rate]
                    r = subprocess.run(args + [f"{scheme}://127.0.0.1:{prt}/f.bin"],
                                       capture_output=True, timeout=90)
                    got = int(r.stdout or b"0")
                    print(f"{scheme:5} {'full speed' if not rate else 'at ' + rate + '/s':10}"
                          f": {got} of {size} bytes, curl rc={r.returncode}"
                          f"{' ' + r.stderr.decode().strip() if r.returncode else ''}")
                    if got != size:
                        rc = 1
        finally:
            T.stop_process(p, timeout=10, group=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
