"""Processes of the suites: client commands run to completion (`run`), server
processes whose stdout and stderr go to one log file (`LoggedProcess`,
`Server`), interactive clients fed through a pipe (`Interactive`), free
ports, and what fio_server.c answers (`fnv1a`, `BIG_BODY`).

A server that facil.io may signal as a group (its root process sends
SIGINT to its whole process group when it stops, with workers) is started
with `new_session=True`: it then leads its own session and process group,
and what kills it kills the group."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

STEP_TIMEOUT = 20  # seconds for any one client command

# every process started here; the session's end kills what is still running
LIVE = set()


def kill_leftovers():
    for p in list(LIVE):
        if p.poll() is None:
            kill(p)
            p.wait()
        LIVE.discard(p)


def kill(proc):
    """SIGKILL to the process, or to its whole group when it leads one
    (started with new_session)."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def head_and_tail(detail):
    """A failure's detail as lines; over 40 lines, the first 15 and the last 25."""
    text = detail if isinstance(detail, str) else repr(detail)
    lines = text.rstrip().splitlines()
    if len(lines) > 40:
        lines = lines[:15] + ["[...]"] + lines[-25:]
    return lines


def excerpt(text, limit=3000):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:1000] + "\n[...]\n" + text[-2000:]


class Result:
    """What a finished client command gave back."""

    def __init__(self, rc, out, err, timed_out=False):
        self.rc, self.out, self.err, self.timed_out = rc, out, err, timed_out

    @property
    def text(self):
        return (self.out + b"\n" + self.err).decode("utf-8", "replace")


def run(argv, input=b"", timeout=STEP_TIMEOUT, env=None):
    try:
        p = subprocess.run(argv, input=input, capture_output=True,
                           timeout=timeout, env=env)
        return Result(p.returncode, p.stdout, p.stderr)
    except subprocess.TimeoutExpired as e:
        return Result(None, e.stdout or b"", (e.stderr or b"") +
                      f"\n[timed out after {timeout}s]".encode(), True)


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
    order of its marker lines and its log lines is kept. With new_session
    it leads its own session (setsid): facil.io's signals to its process
    group stay there, and a stop that has to kill kills the group."""

    def __init__(self, argv, log_path, env=None, cwd=None, new_session=False):
        self.log_path = log_path
        self.group = new_session
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=new_session)

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
        clean = stop_process(self.proc, sig, timeout, group=self.group)
        self.log.close()
        return clean


class Server(LoggedProcess):
    """A fio_server/demo process (kind "server"), or another server program
    (client_suite: kind "peer"), logging to ctx.tmp/<kind>-<serial>-<label>.log.
    "{port}" in argv stands for its port; new_session: see LoggedProcess."""

    def __init__(self, ctx, argv, label, env=None, port=None, kind="server", cwd=None,
                 new_session=False):
        self.ctx = ctx
        self.port = port or free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        ctx.serial += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        self.started = time.monotonic()
        super().__init__(self.argv, os.path.join(ctx.tmp, f"{kind}-{ctx.serial:03d}-{safe}.log"),
                         env, cwd, new_session)
        LIVE.add(self.proc)
        self.rc = None

    def wait_ready(self, timeout=10):
        return self.wait_for(r"^READY \d+$", timeout) is not None

    def alive(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        LIVE.discard(self.proc)
        return self.rc

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s. Returns (rc, clean)."""
        clean = super().stop(signal.SIGTERM, 5)
        self.rc = self.proc.returncode
        LIVE.discard(self.proc)
        return self.rc, clean


class Interactive:
    """A client process fed through a pipe while its output is collected,
    for peers that must stay connected until the server answers."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        LIVE.add(self.proc)
        self.buf = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            with self.lock:
                self.buf += chunk

    def output(self):
        with self.lock:
            return self.buf

    def wait_for(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output(), re.M)
            if m:
                return m
            if self.proc.poll() is not None:
                self.reader.join(1)
                return re.search(pattern, self.output(), re.M)
            time.sleep(0.02)
        return None

    def send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def close(self, timeout=3):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(2)
        LIVE.discard(self.proc)
        return self.output().decode("utf-8", "replace")


def fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


BIG_BODY = b"".join(b"%09d\n" % i for i in range(100000))


