"""fio_client (c_tests/programs/fio_client.c) run to completion and what it
printed (`fio_client`, `ClientRun`): the client suite's program, also run by
suites/test_http_connect_failure.py."""
import os
import re
import time

from .proc import excerpt, run

# a failing client must notice on its own, long before its own deadline
FAIL_FAST = 5.0
FACIL_LEAK = "WARNING: facil.io detected memory traces remaining after cleanup"


class ClientRun:
    """What one fio_client run printed, parsed."""

    def __init__(self, argv, result, took, out_path):
        self.argv, self.rc, self.took = argv, result.rc, took
        self.timed_out = result.timed_out
        self.out = result.out.decode("utf-8", "replace")
        self.err = result.err.decode("utf-8", "replace")
        self.protos = re.findall(r"^PROTO (\S+) udata=(\S+)$", self.out, re.M)
        # callbacks on the closed uuid: how a client learns its handshake failed
        self.failed = re.findall(r"^HANDSHAKE-FAILED (\S+) udata=(\S+)$", self.out, re.M)
        m = re.search(r"^RESULT proto=(\S+) callbacks=(\d+) bytes=(\d+) fnv1a=([0-9a-f]{8})$",
                      self.out, re.M)
        self.result = (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else None
        m = re.search(r"^FDS start=(-?\d+) end=(-?\d+)$", self.out, re.M)
        self.fds = (int(m.group(1)), int(m.group(2))) if m else None
        m = re.search(r"^STATUS (\d+)$", self.out, re.M)
        self.status = int(m.group(1)) if m else None
        lines = self.err.splitlines()
        # facil.io's own leak report is kept apart (see check_refused)
        self.facil_leak = any(l.startswith(FACIL_LEAK) for l in lines)
        self.warnings = [l for l in lines if l.startswith("WARNING:")
                         and not l.startswith(FACIL_LEAK)]
        self.data = b""
        if out_path and os.path.exists(out_path):
            with open(out_path, "rb") as f:
                self.data = f.read()
            os.unlink(out_path)

    def has(self, word):
        return re.search(rf"^{re.escape(word)}$", self.out, re.M) is not None

    @property
    def proto(self):
        return self.protos[0][0] if len(self.protos) == 1 else None

    def clean_exit(self, facil_leak_ok=False):
        """Exited by itself, rc 0, no descriptor left open, no deadline hit,
        no leak reported by facil.io."""
        return (not self.timed_out and self.rc == 0 and self.fds is not None
                and self.fds[0] == self.fds[1] and not self.has("TIMEOUT")
                and "panicked" not in self.err
                and (facil_leak_ok or not self.facil_leak))

    def detail(self):
        argv = " ".join(os.path.basename(a) if a.startswith("/") else a for a in self.argv)
        return (f"fio_client {argv}\nrc={self.rc} took={self.took:.2f}s "
                f"data={len(self.data)} bytes\n--- stdout\n{excerpt(self.out)}"
                f"\n--- stderr\n{excerpt(self.err)}")


def fio_client(ctx, mode, *args, out=True, env=None, timeout=10):
    """Runs fio_client [--out FILE] --timeout T ARGS... in link mode `mode`."""
    ctx.serial += 1
    out_path = os.path.join(ctx.tmp, f"client-{ctx.serial:04d}.out") if out else None
    argv = [ctx.binary(mode, "fio_client"), "--timeout", str(timeout)]
    if out_path:
        argv += ["--out", out_path]
    argv += list(args)
    began = time.monotonic()
    r = run(argv, timeout=timeout + 10, env=ctx.env(mode, env))
    return ClientRun(argv[1:], r, time.monotonic() - began, out_path)
