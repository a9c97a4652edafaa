"""What the Python drivers in c_tests/ share (Python 3 standard library only).

  Report         the check counter: one `ok - NAME` / `FAIL - NAME` line per
                 check (the failure word is the driver's: some say `not ok`),
                 the detail of a failure as `#   ` lines, and the closing
                 `N passed, N failed` line with the exit status;
  free_port      a TCP port on 127.0.0.1 the OS has just handed out;
  stop_process   SIGINT (or another signal), then SIGKILL after a timeout;
  LoggedProcess  a server whose stdout and stderr both go to one log file;
  make_tmp / drop_tmp   a driver's scratch directory;
  fnv1a, BIG_BODY       what fio_server.c answers: the checksum it reports
                 for a POST body, the 1,000,000-byte body of GET /big.

The drivers are run as scripts; each puts its own directory on sys.path
(Python does that for the script itself), so `import harness` finds this.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------
def all_lines(detail):
    """A failure's detail, every line."""
    return str(detail).rstrip().splitlines()


def first_lines(n):
    """A failure's detail, the first n lines."""
    return lambda detail: str(detail).strip().splitlines()[:n]


def head_and_tail(detail):
    """A failure's detail; over 40 lines, the first 15 and the last 25."""
    text = detail if isinstance(detail, str) else repr(detail)
    lines = text.rstrip().splitlines()
    if len(lines) > 40:
        lines = lines[:15] + ["[...]"] + lines[-25:]
    return lines


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
# processes
# ---------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, sig=signal.SIGINT, timeout=10, group=False):
    """Sends `sig` to a running process and waits `timeout` seconds for it
    to exit, then kills it (with group, its whole process group). Returns
    False when it had to be killed."""
    if proc.poll() is not None:
        return True
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
        return False


class LoggedProcess:
    """A server process; stdout and stderr both go to one log file, so the
    order of its marker lines and its log lines is kept."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, pattern, timeout=10, interval=0.02):
        """Waits until the log matches `pattern` (or the process exits)."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text(), re.M)
            if m:
                return m
            if self.proc.poll() is not None:
                return re.search(pattern, self.text(), re.M)
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    def stop(self, sig=signal.SIGINT, timeout=10):
        """Stops the process (see stop_process) and closes the log."""
        clean = stop_process(self.proc, sig, timeout)
        self.log.close()
        return clean


# ---------------------------------------------------------------------------
# what fio_server.c serves
# ---------------------------------------------------------------------------
def fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


BIG_BODY = b"".join(b"%09d\n" % i for i in range(100000))


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
