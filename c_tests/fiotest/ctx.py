"""What a test of the suites works with: `Ctx`, one per test.

A test records its checks with `ctx.check(name, ok, detail)`: every check
runs, each one is printed (`ok - NAME` / `FAIL - NAME` with the detail) in
the test's captured output, and the test fails at its end when any check
failed (conftest.py turns the failures into the test's verdict). Servers
started through `ctx.start` / `ctx.server` are stopped when the test ends,
and their logs are attached to a failed test's report.
"""
import os
import re

from .proc import Server, excerpt, head_and_tail

FATAL_STUB = "HTTP SSL/TLS required but unavailable!"
WORKING_MODES = ("static", "shared", "preload")


class Stopped(Exception):
    """Raised by Ctx.require: a check failed that the rest of the test
    needs. The test's report lists its failed checks, not a traceback."""


class Ctx:
    def __init__(self, paths, tmp, pki):
        self.paths, self.tmp, self.pki = paths, str(tmp), pki
        self.serial = 0
        self.passed = []
        self.failed = []  # (name, detail)
        self.servers = []

    # -- checks -------------------------------------------------------------
    def check(self, name, ok, detail=""):
        """One check of the test: counted, printed, and (when it failed)
        reported with its detail at the test's end. Returns `ok`."""
        ok = bool(ok)
        if ok:
            self.passed.append(name)
            print(f"ok - {name}", flush=True)
        else:
            self.failed.append((name, detail))
            print(f"FAIL - {name}", flush=True)
            for line in head_and_tail(detail):
                print(f"#   {line}", flush=True)
        return ok

    def require(self, name, ok, detail=""):
        """A check the rest of the test depends on (a server that must be
        up): like check(), but a failure also ends the test there, reported
        with its failed checks like any other."""
        if not self.check(name, ok, detail):
            raise Stopped(name)

    # -- binaries and environments -----------------------------------------
    def binary(self, mode, program):
        return self.paths.binary(mode, program)

    def env(self, mode, extra=None):
        """The environment for a program of link mode `mode`: LD_PRELOAD only
        in preload mode, none of the library's knobs inherited (FIO_TLS_*,
        SSLKEYLOGFILE: a key log adds a WARNING line), then `extra`."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", "SSLKEYLOGFILE") and not k.startswith("FIO_TLS_")}
        if mode == "preload":
            env["LD_PRELOAD"] = self.paths.so
        env.update(extra or {})
        return env

    # -- servers -------------------------------------------------------------
    def server(self, argv, label, env=None, port=None, kind="server", cwd=None,
               new_session=False):
        """Starts any server program (argv's "{port}" is its port); it is
        stopped when the test ends. new_session: its own session and
        process group (proc.LoggedProcess)."""
        srv = Server(self, argv, label, env=env, port=port, kind=kind, cwd=cwd,
                     new_session=new_session)
        self.servers.append(srv)
        return srv

    def start(self, mode, args, label, program="fio_server", ready=True, env=None,
              builds=None, port=None):
        """Starts a facil.io test server of link mode `mode` in its own
        session (facil.io may signal its whole process group) and waits for
        its READY line; retries on a port taken in the meantime. `builds`:
        where the programs are and their environments (its binary(mode,
        program) and env(mode, extra)); default this Ctx's, the beta4 build's
        (the release build's: fiotest.api07.Paths07). `port`: the port
        "{port}" stands for (default: a free one)."""
        builds = builds or self
        for _ in range(3):
            srv = self.server([builds.binary(mode, program), *args], f"{mode}-{label}",
                              env=builds.env(mode, env), port=port, new_session=True)
            if not ready or srv.wait_ready():
                return srv
            srv.stop()
            if "Address already in use" not in srv.text():
                break
        return srv

    def finish(self):
        """Stops what is still running; returns [(label, log text)]."""
        logs = []
        for srv in self.servers:
            if srv.alive():
                srv.stop()
            logs.append((os.path.basename(srv.log_path), srv.text()))
        return logs


# ---------------------------------------------------------------------------
# steps the server tests share
# ---------------------------------------------------------------------------
def check_ready(ctx, tag, srv):
    """Checks that the server listens; stops it when it does not."""
    if ctx.check(f"{tag}: server starts and listens", srv.alive() and
                 srv.wait_ready(0), excerpt(srv.text())):
        return True
    srv.stop()
    return False


def check_clean_stop(ctx, tag, srv):
    rc, clean = srv.stop()
    text = srv.text()
    ctx.check(f"{tag}: server exits cleanly on SIGTERM (after fio_tls_destroy)",
              clean and rc == 0 and "STOPPED" in text and "panicked" not in text,
              f"rc={rc} clean={clean}\n{excerpt(text)}")


def safe_name(label):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
