"""The C boundary, seen from a C program.

Where facil.io is and how to compile come from conftest's options, on
`paths` (`make check` passes the Makefile's FACIL_IO_DIR, FACIL_IO_STATIC,
FACIL_IO_SHARED, CC and FIO_TLS_STATIC_LIBS; by hand the defaults are the
Makefile's):

    make check-programs
    /usr/bin/python3 -m pytest c_tests/suites/test_boundary.py [--facil-dir DIR ...]

Every test but the archive one needs facil.io (marker `facil`: skipped, with
the reason, when it is missing).

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
import socket
import subprocess
import time

import pytest

from fiotest.ctx import check_ready
from fiotest.elf import archive_functions
from fiotest.proc import excerpt

FACIL = pytest.mark.facil
MARKER = "fio_tls_needs_libfio_tls_on_the_link_line"
FACIL_INCLUDE_DIRS = ("lib", "lib/facil", "lib/facil/fiobj", "lib/facil/cli", "lib/facil/http",
                      "lib/facil/http/parsers")


def run(argv, timeout=60, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------------------
# the header with facil.io's
# ---------------------------------------------------------------------------

@FACIL
@pytest.mark.parametrize("first", ["ours", "facil.io's"])
def test_either_include_order_declares_the_extensions(ctx, paths, first):
    facil_tls_h = os.path.join(paths.facil_dir, "lib", "facil", "tls", "fio_tls.h")
    ours, theirs = '#include "fio_tls.h"', f'#include "{facil_tls_h}"'
    src = os.path.join(ctx.tmp, "order.c")
    with open(src, "w") as f:
        f.write("\n".join([ours, theirs] if first == "ours" else [theirs, ours]) + """
void use_them(fio_tls_s *tls);
void use_them(fio_tls_s *tls) {
  fio_tls_trust(tls, "ca.pem"); /* ours only */
  fio_tls_reload(tls);           /* ours only */
  fio_tls_proto_add(tls, "h2", 0);
  fio_tls_destroy(tls);
}
""")
    r = run([paths.cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
             f"-I{paths.include}", "-c", src, "-o", os.path.join(ctx.tmp, "order.o")])
    ctx.check(f"{first} header first: fio_tls_trust and the seed functions compile "
              "(C99, -pedantic -Werror)", r.returncode == 0, r.stderr)


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
APP_OBJECTS = (("checked", []), ("opt-out", ["-DFIO_TLS_NO_LINK_CHECK"]))


@pytest.fixture(scope="module")
def app_objects(paths, tmp_path_factory):
    """The application, compiled as is ("checked") and with the opt-out
    macro ("opt-out"): (directory, {name: (object or None, compiler output)});
    test_the_application_compiles checks them."""
    d = tmp_path_factory.mktemp("links")
    src = d / "app.c"
    src.write_text(APP)
    includes = [f"-I{os.path.join(paths.facil_dir, x)}" for x in FACIL_INCLUDE_DIRS]
    objs = {}
    for name, extra in APP_OBJECTS:
        obj = d / f"app-{name}.o"
        r = run([paths.cc, "-std=gnu99", "-Wall", "-Werror", f"-I{paths.include}", *includes,
                 *extra, "-c", str(src), "-o", str(obj)])
        objs[name] = (str(obj) if r.returncode == 0 else None, r.stderr)
    return d, objs


@FACIL
def test_the_application_compiles(ctx, app_objects):
    for name, _ in APP_OBJECTS:
        obj, err = app_objects[1][name]
        ctx.check(f"the application object ({name}) compiles against facil.io's headers",
                  obj is not None, err)


def link(app_objects, name, obj, libs, cc):
    d, objs = app_objects
    path, _ = objs[obj]
    if path is None:
        pytest.fail(f"the application object ({obj}) did not compile "
                    "(test_the_application_compiles shows why)")
    exe = str(d / name)
    return exe, run([cc, "-o", exe, path, *libs])


def rpath(*dirs):
    return ["-Wl,-rpath," + ":".join(dirs)]


# name, object, link line after the object, expected outcome at run time
LINKS = [
    ("static, libfio_tls.a first", "checked",
     lambda p: [p.a, p.facil_static, *p.static_libs], "works"),
    ("static, libfacil.io.a first", "checked",
     lambda p: [p.facil_static, p.a, *p.static_libs], "works"),
    ("shared, libfio_tls.so first", "checked",
     lambda p: [p.so, p.facil_shared, *rpath(p.build, os.path.dirname(p.facil_shared))], "works"),
    ("shared, libfacil.io.so first", "checked",
     lambda p: [p.facil_shared, p.so, *rpath(p.build, os.path.dirname(p.facil_shared))],
     "error at load"),
    ("shared libfio_tls.so, static libfacil.io.a", "checked",
     lambda p: [p.so, p.facil_static, *rpath(p.build), *p.static_libs], "error at load"),
]


@FACIL
@pytest.mark.parametrize("name,obj,libs,outcome", LINKS, ids=[x[0] for x in LINKS])
def test_link_orders(ctx, paths, app_objects, name, obj, libs, outcome):
    exe, r = link(app_objects, re.sub(r"\W+", "_", name), obj, libs(paths), paths.cc)
    if not ctx.check(f"{name}: links", r.returncode == 0, r.stderr):
        return
    p = run([exe], timeout=30, env=ctx.env("static"))
    out = p.stdout + p.stderr
    if outcome == "works":
        ctx.check(f"{name}: runs: LISTENED, rc 0", p.returncode == 0 and "LISTENED" in p.stdout,
                  out)
        ctx.check(f"{name}: no FATAL or ERROR line", "FATAL" not in out and "ERROR" not in out,
                  out)
        return
    errors = [l for l in out.splitlines() if l.startswith("ERROR: fio_tls: ")]
    ctx.check(f"{name}: exactly one 'ERROR: fio_tls:' line when loaded", len(errors) == 1, out)
    line = errors[0] if errors else ""
    ctx.check(f"{name}: the ERROR names fio_tls_accept as taken from elsewhere "
              "('not to libfio_tls')",
              "fio_tls_accept" in line and "not to libfio_tls" in line, line or out)
    ctx.check(f"{name}: the ERROR says what to do (link libfio_tls.a, or before "
              "libfacil.io.so)",
              "link libfio_tls.a" in line and "before libfacil.io.so" in line, line or out)
    ctx.check(f"{name}: then facil.io's stand-in stops the program (FATAL, rc != 0, "
              "no LISTENED)",
              p.returncode != 0 and "FATAL" in out and "LISTENED" not in p.stdout, out)


@FACIL
def test_a_link_without_libfio_tls_fails_naming_the_fix(ctx, paths, app_objects):
    _, r = link(app_objects, "no_libfio_tls", "checked",
                [paths.facil_static, *paths.static_libs], paths.cc)
    ctx.check("libfacil.io.a without libfio_tls: the link fails", r.returncode != 0,
              "linked without libfio_tls")
    ctx.check(f"libfacil.io.a without libfio_tls: the linker names {MARKER}",
              f"undefined reference to `{MARKER}'" in r.stderr, r.stderr)


@FACIL
def test_the_opt_out_macro_links_facil_io_alone_for_ld_preload(ctx, paths, app_objects):
    exe, r = link(app_objects, "preload", "opt-out",
                  [paths.facil_shared, *rpath(os.path.dirname(paths.facil_shared))], paths.cc)
    tag = "-DFIO_TLS_NO_LINK_CHECK, libfacil.io.so only"
    if not ctx.check(f"{tag}: links", r.returncode == 0, r.stderr):
        return
    needed = run(["readelf", "-d", exe]).stdout
    ctx.check(f"{tag}: no DT_NEEDED on libfio_tls", "libfio_tls" not in needed, needed)
    # without our library facil.io's stand-in runs; preloaded, ours does
    bare = run([exe], timeout=30, env=ctx.env("static"))
    ctx.check(f"{tag}: without LD_PRELOAD facil.io's stand-in stops it (FATAL, rc != 0)",
              bare.returncode != 0 and "FATAL" in bare.stdout + bare.stderr,
              f"rc={bare.returncode}\n{bare.stdout}{bare.stderr}")
    p = run([exe], timeout=30, env=ctx.env("preload"))
    out = p.stdout + p.stderr
    ctx.check(f"{tag}: with LD_PRELOAD=libfio_tls.so it runs: LISTENED, rc 0, no ERROR",
              p.returncode == 0 and "LISTENED" in p.stdout and "ERROR" not in out, out)


def test_the_link_check_function_is_in_the_member_of_the_six(ctx, paths):
    defs, r = archive_functions(paths.a)
    members = {name: set(where) for name, where in defs.items()}
    if not ctx.check(f"libfio_tls.a defines {MARKER}", MARKER in members,
                     f"readelf -sW {paths.a}: rc={r.returncode}\n{r.stderr}"):
        return
    ctx.check(f"{MARKER} is in the archive member that defines fio_tls_accept",
              members[MARKER] == members.get("fio_tls_accept"),
              f"{MARKER}: {members[MARKER]}\nfio_tls_accept: {members.get('fio_tls_accept')}")


# ---------------------------------------------------------------------------
# the handshake deadline's log line
# ---------------------------------------------------------------------------

def serve_one_silent_client(ctx, level):
    """fio_server (static) at FIO_LOG_LEVEL `level` with a 1 s handshake
    deadline; one client connects and says nothing. Returns the server's
    log, or None when it did not start (a failed check)."""
    tag = f"handshake deadline, FIO_LOG_LEVEL={level}"
    srv = ctx.start("static", ["-l", str(level), "alpn", "{port}"], f"deadline-{level}",
                    env={"FIO_TLS_HANDSHAKE_TIMEOUT": "1"})
    if not check_ready(ctx, tag, srv):
        return None
    began = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=8) as s:
            began = time.monotonic()
            got = s.recv(16)
    except OSError as e:
        got = repr(e)
    took = time.monotonic() - began
    ctx.check(f"{tag}: the server sends nothing to a silent client and closes it",
              got == b"", f"got {got!r}")
    ctx.check(f"{tag}: it closes within 5 s", took < 5, f"closed after {took:.1f} s")
    time.sleep(0.3)  # the close is logged after the socket closes
    srv.stop()
    return srv.text()


@FACIL
def test_a_deadline_close_is_logged_at_info(ctx):
    text = serve_one_silent_client(ctx, 4)
    if text is not None:
        lines = [l for l in text.splitlines() if "handshake deadline" in l]
        ctx.check("FIO_LOG_LEVEL=4: one log line about the handshake deadline",
                  len(lines) == 1, excerpt(text))
        line = lines[0] if lines else ""
        ctx.check("FIO_LOG_LEVEL=4: it is INFO: 'INFO: fio_tls: TLS handshake failed (server'",
                  line.startswith("INFO: fio_tls: TLS handshake failed (server"), line)
        ctx.check("FIO_LOG_LEVEL=4: it names the deadline: 'handshake deadline (1 s) passed'",
                  "handshake deadline (1 s) passed" in line, line)
    # INFO, not higher: at WARNING level it is not shown
    text = serve_one_silent_client(ctx, 3)
    if text is not None:
        ctx.check("FIO_LOG_LEVEL=3: no line about the handshake deadline",
                  "handshake deadline" not in text, excerpt(text))
