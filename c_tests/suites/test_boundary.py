"""The C boundary, seen from a C program (pytest).

    make check-boundary
or, with the library built (`make all`) and, for most tests, facil.io's
static test server (`make build/c_tests/static/fio_server`):
    /usr/bin/python3 -m pytest c_tests/suites/test_boundary.py

Self-contained (plain pytest, standard library only). Paths come from the
environment, with the defaults of the Makefile:
  FIO_TLS_BUILD_DIR   <repo>/build: libfio_tls.so, libfio_tls.a,
                      c_tests/static/fio_server
  FACIL_IO_DIR        /opt/facil.io-0.7.0.beta4 (headers under lib/)
  FACIL_IO_STATIC     $FACIL_IO_DIR/build-static/libfacil.io.a
  FACIL_IO_SHARED     $FACIL_IO_DIR/build-shared/libfacil.io.so
  CC, CXX             cc, g++
  FIO_TLS_STATIC_LIBS what a static link of libfio_tls.a needs besides it
Tests that need facil.io (or a program built against it) are skipped, with
the reason, when it is missing.

What is tested:
  * include/fio_tls.h and facil.io's lib/facil/tls/fio_tls.h in either order
    still declare our extensions fio_tls_trust and fio_tls_reload (C99,
    -pedantic -Werror);
  * link orders with facil.io, static and shared: the header's link check
    makes `libfacil.io.a libfio_tls.a` work, a link without libfio_tls fail
    naming what to do, and FIO_TLS_NO_LINK_CHECK turn it off (LD_PRELOAD);
    the rows no link can fix (a shared libfio_tls.so with a static
    libfacil.io.a, or after libfacil.io.so) log one ERROR when loaded;
  * the link-check function lives in the archive member of the six;
  * a connection closed by the handshake deadline is logged at INFO.
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BUILD = os.path.abspath(os.environ.get("FIO_TLS_BUILD_DIR") or os.path.join(ROOT, "build"))
FACIL = os.environ.get("FACIL_IO_DIR") or "/opt/facil.io-0.7.0.beta4"
FACIL_STATIC = os.environ.get("FACIL_IO_STATIC") or os.path.join(FACIL, "build-static", "libfacil.io.a")
FACIL_SHARED = os.environ.get("FACIL_IO_SHARED") or os.path.join(FACIL, "build-shared", "libfacil.io.so")
CC = os.environ.get("CC") or "cc"
STATIC_LIBS = shlex.split(os.environ.get("FIO_TLS_STATIC_LIBS") or "-lssl -lcrypto -lpthread -ldl -lm")

OUR_SO = os.path.join(BUILD, "libfio_tls.so")
OUR_A = os.path.join(BUILD, "libfio_tls.a")
INCLUDE = os.path.join(ROOT, "include")
FACIL_TLS_H = os.path.join(FACIL, "lib", "facil", "tls", "fio_tls.h")
FIO_SERVER = os.path.join(BUILD, "c_tests", "static", "fio_server")
MARKER = "fio_tls_needs_libfio_tls_on_the_link_line"
FACIL_INCLUDES = [f"-I{os.path.join(FACIL, d)}" for d in (
    "lib", "lib/facil", "lib/facil/fiobj", "lib/facil/cli", "lib/facil/http",
    "lib/facil/http/parsers")]


def need(*paths):
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (see the top of this file)")


def run(argv, timeout=60, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------------------
# the header with facil.io's
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["ours", "facil.io's"])
def test_either_include_order_declares_the_extensions(tmp_path, first):
    need(FACIL_TLS_H, os.path.join(INCLUDE, "fio_tls.h"))
    ours, theirs = '#include "fio_tls.h"', f'#include "{FACIL_TLS_H}"'
    src = tmp_path / "order.c"
    src.write_text("\n".join([ours, theirs] if first == "ours" else [theirs, ours]) + """
void use_them(fio_tls_s *tls);
void use_them(fio_tls_s *tls) {
  fio_tls_trust(tls, "ca.pem"); /* ours only */
  fio_tls_reload(tls);           /* ours only */
  fio_tls_proto_add(tls, "h2", 0);
  fio_tls_destroy(tls);
}
""")
    r = run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{INCLUDE}",
             "-c", str(src), "-o", str(tmp_path / "order.o")])
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------
# link orders
# ---------------------------------------------------------------------------

APP = r"""
#include <fio.h>
#include <http.h>
#include "fio_tls.h"
#include <stdio.h>

static void on_request(http_s *h) { http_send_body(h, "x", 1); }

int main(void) {
  fio_tls_s *tls = fio_tls_new("localhost", NULL, NULL);
  if (!tls)
    return 1;
  /* http_listen calls fio_tls_proto_add: facil.io's stand-in exits here */
  if (http_listen("0", "127.0.0.1", .on_request = on_request, .tls = tls) == -1)
    return 2;
  printf("LISTENED\n");
  fio_tls_destroy(tls);
  return 0;
}
"""


@pytest.fixture(scope="module")
def app_objects(tmp_path_factory):
    """The application object, compiled as is and with the opt-out macro."""
    need(os.path.join(FACIL, "lib", "facil", "fio.h"))
    d = tmp_path_factory.mktemp("links")
    src = d / "app.c"
    src.write_text(APP)
    objs = {}
    for name, extra in (("checked", []), ("opt-out", ["-DFIO_TLS_NO_LINK_CHECK"])):
        obj = d / f"app-{name}.o"
        r = run([CC, "-std=gnu99", "-Wall", "-Werror", f"-I{INCLUDE}", *FACIL_INCLUDES, *extra,
                 "-c", str(src), "-o", str(obj)])
        assert r.returncode == 0, r.stderr
        objs[name] = str(obj)
    return d, objs


def link(app_objects, name, obj, libs):
    d, objs = app_objects
    exe = str(d / name)
    r = run([CC, "-o", exe, objs[obj], *libs])
    return exe, r


def rpath(*dirs):
    return ["-Wl,-rpath," + ":".join(dirs)]


FACIL_SHARED_DIR = os.path.dirname(os.path.abspath(FACIL_SHARED))

# name, object, link line after the object, expected outcome at run time
LINKS = [
    ("static, libfio_tls.a first", "checked", lambda: [OUR_A, FACIL_STATIC, *STATIC_LIBS], "works"),
    ("static, libfacil.io.a first", "checked", lambda: [FACIL_STATIC, OUR_A, *STATIC_LIBS], "works"),
    ("shared, libfio_tls.so first", "checked",
     lambda: [OUR_SO, FACIL_SHARED, *rpath(BUILD, FACIL_SHARED_DIR)], "works"),
    ("shared, libfacil.io.so first", "checked",
     lambda: [FACIL_SHARED, OUR_SO, *rpath(BUILD, FACIL_SHARED_DIR)], "error at load"),
    ("shared libfio_tls.so, static libfacil.io.a", "checked",
     lambda: [OUR_SO, FACIL_STATIC, *rpath(BUILD), *STATIC_LIBS], "error at load"),
]


@pytest.mark.parametrize("name,obj,libs,outcome", LINKS, ids=[x[0] for x in LINKS])
def test_link_orders(app_objects, name, obj, libs, outcome):
    need(OUR_A, OUR_SO, FACIL_STATIC, FACIL_SHARED)
    exe, r = link(app_objects, re.sub(r"\W+", "_", name), obj, libs())
    assert r.returncode == 0, f"link failed:\n{r.stderr}"
    p = run([exe], timeout=30)
    out = p.stdout + p.stderr
    if outcome == "works":
        assert p.returncode == 0 and "LISTENED" in p.stdout, out
        assert "FATAL" not in out and "ERROR" not in out, out
    else:
        errors = [l for l in out.splitlines() if l.startswith("ERROR: fio_tls: ")]
        assert len(errors) == 1, out
        line = errors[0]
        # names the functions taken from elsewhere and says what to do
        assert "fio_tls_accept" in line and "not to libfio_tls" in line, line
        assert "link libfio_tls.a" in line and "before libfacil.io.so" in line, line
        # and then facil.io's stand-in stops the program, as before
        assert p.returncode != 0 and "FATAL" in out and "LISTENED" not in p.stdout, out


def test_a_link_without_libfio_tls_fails_naming_the_fix(app_objects):
    need(FACIL_STATIC)
    _, r = link(app_objects, "no_libfio_tls", "checked", [FACIL_STATIC, *STATIC_LIBS])
    assert r.returncode != 0, "linked without libfio_tls"
    assert f"undefined reference to `{MARKER}'" in r.stderr, r.stderr


def test_the_opt_out_macro_links_facil_io_alone_for_ld_preload(app_objects):
    need(OUR_SO, FACIL_SHARED)
    exe, r = link(app_objects, "preload", "opt-out", [FACIL_SHARED, *rpath(FACIL_SHARED_DIR)])
    assert r.returncode == 0, r.stderr
    needed = run(["readelf", "-d", exe]).stdout
    assert "libfio_tls" not in needed, needed
    # without our library facil.io's stand-in runs; preloaded, ours does
    bare = run([exe], timeout=30)
    assert bare.returncode != 0 and "FATAL" in bare.stdout + bare.stderr
    p = run([exe], timeout=30, env=dict(os.environ, LD_PRELOAD=OUR_SO))
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "LISTENED" in p.stdout and "ERROR" not in out, out


def test_the_link_check_function_is_in_the_member_of_the_six():
    need(OUR_A)
    out = run(["readelf", "-sW", OUR_A], timeout=120).stdout
    members = {}
    member = None
    for line in out.splitlines():
        m = re.match(r"^File: .*\((.*)\)$", line)
        if m:
            member = m.group(1)
            continue
        parts = line.split()
        if len(parts) == 8 and parts[3] == "FUNC" and parts[4] == "GLOBAL" and parts[6] != "UND":
            members.setdefault(parts[7], set()).add(member)
    assert MARKER in members, "the archive does not define the link-check function"
    assert members[MARKER] == members.get("fio_tls_accept"), members.get(MARKER)


# ---------------------------------------------------------------------------
# the handshake deadline's log line
# ---------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_one_silent_client(tmp_path, level):
    """fio_server at FIO_LOG_LEVEL `level` with a 1 s handshake deadline;
    one client connects and says nothing. Returns the server's output."""
    port = free_port()
    log = tmp_path / f"server-{level}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([FIO_SERVER, "-l", str(level), "alpn", str(port)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, FIO_TLS_HANDSHAKE_TIMEOUT="1"))
    try:
        until = time.monotonic() + 10
        while f"READY {port}" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < until, log.read_text()
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
            began = time.monotonic()
            assert s.recv(16) == b"", "the server sent something to a silent client"
            took = time.monotonic() - began
        assert took < 5, f"closed after {took:.1f} s"
        time.sleep(0.3)  # the close is logged after the socket closes
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return log.read_text()


def test_a_deadline_close_is_logged_at_info(tmp_path):
    need(FIO_SERVER)
    text = serve_one_silent_client(tmp_path, 4)
    lines = [l for l in text.splitlines() if "handshake deadline" in l]
    assert len(lines) == 1, text
    assert lines[0].startswith("INFO: fio_tls: TLS handshake failed (server"), lines[0]
    assert "handshake deadline (1 s) passed" in lines[0], lines[0]
    # INFO, not higher: at WARNING level it is not shown
    text = serve_one_silent_client(tmp_path, 3)
    assert "handshake deadline" not in text, text
