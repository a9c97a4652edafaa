"""What the Python drivers in c_tests/ share (Python 3 standard library only).

  Report         the check counter: one `ok - NAME` / `FAIL - NAME` line per
                 check (the failure word is the driver's: some say `not ok`),
                 the detail of a failure as `#   ` lines, and the closing
                 `N passed, N failed` line with the exit status;
  make_tmp / drop_tmp   a driver's scratch directory;
and, from fiotest/proc.py (the one copy the pytest suites use too):
  free_port      a TCP port on 127.0.0.1 the OS has just handed out;
  stop_process   SIGINT (or another signal), then SIGKILL after a timeout;
  LoggedProcess  a server whose stdout and stderr both go to one log file;
  fnv1a, BIG_BODY       what fio_server.c answers: the checksum it reports
                 for a POST body, the 1,000,000-byte body of GET /big.

The drivers are run as scripts; each puts its own directory on sys.path
(Python does that for the script itself), so `import harness` finds this,
and this finds fiotest/.
"""
import os
import shutil
import tempfile

# re-exported for the drivers
from fiotest.proc import BIG_BODY, LoggedProcess, fnv1a, free_port, stop_process  # noqa: F401


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------
def all_lines(detail):
    """A failure's detail, every line."""
    return str(detail).rstrip().splitlines()


def first_lines(n):
    """A failure's detail, the first n lines."""
    return lambda detail: str(detail).strip().splitlines()[:n]


class Report:
    """Counts checks and prints one line for each, flushed at once so that
    the lines keep their order among the output of the processes run."""

    def __init__(self, fail_word="FAIL", detail_lines=all_lines):
        self.passed = 0
        self.failed = 0
        self.fail_word = fail_word
        self.detail_lines = detail_lines

    def tally(self, name, ok):
        """Counts and prints the check's line (no detail)."""
        if ok:
            self.passed += 1
            print(f"ok - {name}", flush=True)
        else:
            self.failed += 1
            print(f"{self.fail_word} - {name}", flush=True)
        return ok

    def comment(self, lines):
        for line in lines:
            print(f"#   {line}", flush=True)

    def check(self, name, ok, detail=""):
        if not self.tally(name, ok):
            self.comment(self.detail_lines(detail))
        return ok

    def skip(self, name, why):
        """A check that could not run: an `ok` line marked `# SKIP`."""
        return self.tally(f"{name} # SKIP {why}", True)

    def summary(self):
        """Prints `N passed, N failed`; returns the exit status."""
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0


# ---------------------------------------------------------------------------
# scratch directory
# ---------------------------------------------------------------------------
def make_tmp(prefix, root=None):
    """A new directory (under root, made if need be); its absolute path."""
    if root:
        os.makedirs(root, exist_ok=True)
    return os.path.abspath(tempfile.mkdtemp(prefix=prefix, dir=root))


def drop_tmp(tmp, keep, what=None):
    """Removes the directory, or keeps it and (with what) says so."""
    if keep:
        if what:
            print(f"# {what} kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
