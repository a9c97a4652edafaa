"""`make demo ACME=pebble`: the demo server with its certificate from a
local ACME CA, in one command.

Starts Debian's pebble-challtestsrv (DNS: every name is 127.0.0.1) and
pebble (pebble's own HTTPS certificate from a throw-away test PKI, its
TLS-ALPN-01 port = the demo's port), then the demo with
FIO_TLS_ACME_DIRECTORY pointing at pebble, and prints the curl command that
verifies the issued certificate against pebble's root. Ctrl-C stops it all;
the temporary directory (PKI, ACME cache) is removed.

    acme_demo.py DEMO_BINARY PORT
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fiotest.acme import Pebble, missing_tools  # noqa: E402
from fiotest.ctx import Ctx  # noqa: E402
from fiotest.pki import Pki  # noqa: E402

NAME = "demo.fio-tls.test"


def interrupted(*_):
    raise KeyboardInterrupt


def main(demo, port):
    signal.signal(signal.SIGTERM, interrupted)  # clean up on a kill too
    missing = missing_tools(("curl",))
    if missing:
        sys.exit(f"acme_demo: {', '.join(missing)} not installed (apt-get install pebble curl)")
    tmp = tempfile.mkdtemp(prefix="fio_tls_acme_demo_")
    ctx = None
    try:
        pki = Pki(os.path.join(tmp, "pki"))
        os.makedirs(pki.d)
        pki.make()
        ctx = Ctx(None, tmp, pki)
        pebble = Pebble(ctx, tls_port=port)
        if not pebble.ready():
            sys.exit("acme_demo: pebble did not start:\n" + pebble.log()[-2000:])
        root = pebble.root_pem()
        cache = os.path.join(tmp, "acme-cache")
        env = dict(os.environ, DEMO_NAME=NAME, FIO_TLS_ACME_DIRECTORY=pebble.directory,
                   FIO_TLS_ACME_DIR=cache, FIO_TLS_ACME_CA_FILE=pebble.ca_file,
                   FIO_TLS_RELOAD_SECONDS="1")
        print(f"pebble: {pebble.directory} (logs in {tmp}); its root CA: {root}\n"
              f"Once the demo says the certificate was issued (a few seconds), try:\n"
              f"  curl --cacert {root} --resolve {NAME}:{port}:127.0.0.1 https://{NAME}:{port}/\n",
              flush=True)
        demo_proc = subprocess.Popen([demo, str(port)], env=env)
        try:
            demo_proc.wait()
        except KeyboardInterrupt:
            if demo_proc.poll() is None:
                demo_proc.send_signal(signal.SIGINT)
                demo_proc.wait(10)
    finally:
        if ctx:
            ctx.finish()
        time.sleep(0.2)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: acme_demo.py DEMO_BINARY PORT")
    main(sys.argv[1], int(sys.argv[2]))
