"""The release-API build (`make API=0.7`, which `make check` runs first) as a
C program sees it, without facil.io:

  * build/libfio_tls07.so has the SONAME libfio_tls07.so.0 and the
    libfio_tls07.so.0 link next to it;
  * it exports exactly the nine functions of facil.io 0.7.x's fio_tls.h plus
    what include/fio_tls07.h declares (the hand-kept header cannot drift from
    the library without this failing);
  * build/libfio_tls07.a defines all of them as strong global functions in
    one archive member;
  * include/fio_tls07.h compiles alone and with facil.io 0.7.6's fio_tls.h
    (before or after it), as C99 and as C++ (its declarations extern "C");
  * a program including fio_tls07.h links only with libfio_tls07: without
    it, and with the beta4 libfio_tls.a, the link fails naming the marker.

With --openssl vendored the vendored build is looked at (build/vendored/).
The facil.io 0.7.6 header checks skip when /opt/facil.io-0.7.6 (or
$FACIL_IO_07_DIR) has no lib/facil/tls/fio_tls.h.
"""
import os
import re

import pytest

from fiotest.elf import archive_functions
from test_library import declared_functions, dynamic_exports, run

API07_FUNCTIONS = {
    "fio_tls_new", "fio_tls_cert_add", "fio_tls_alpn_add", "fio_tls_alpn_count",
    "fio_tls_trust", "fio_tls_accept", "fio_tls_connect", "fio_tls_dup",
    "fio_tls_destroy",
}
MARKER = "fio_tls_needs_libfio_tls07_on_the_link_line"
FACIL07 = os.environ.get("FACIL_IO_07_DIR", "/opt/facil.io-0.7.6")


class Lib07:
    def __init__(self, paths):
        self.so = os.path.join(paths.build, "libfio_tls07.so")
        self.so0 = os.path.join(paths.build, "libfio_tls07.so.0")
        self.a = os.path.join(paths.build, "libfio_tls07.a")
        self.header = os.path.join(paths.include, "fio_tls07.h")
        self.facil_header = os.path.join(FACIL07, "lib", "facil", "tls", "fio_tls.h")


@pytest.fixture(scope="module")
def lib07(paths):
    lib = Lib07(paths)
    missing = [p for p in (lib.so, lib.a) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"no release build: {missing} (make check runs `make API=0.7 all` first)")
    return lib


@pytest.fixture(scope="module")
def declared07(paths, lib07):
    """fio_tls_* functions fio_tls07.h declares (comments aside)."""
    return declared_functions(paths.cc, lib07.header)


def test_soname07(ctx, lib07):
    res = run(["readelf", "-d", lib07.so])
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", res.stdout)
    ctx.check("SONAME of libfio_tls07.so is libfio_tls07.so.0",
              m is not None and m.group(1) == "libfio_tls07.so.0", res.stdout + res.stderr)
    ctx.check("libfio_tls07.so.0 links to libfio_tls07.so",
              os.path.islink(lib07.so0) and os.readlink(lib07.so0) == "libfio_tls07.so",
              f"{lib07.so0}: {os.readlink(lib07.so0) if os.path.islink(lib07.so0) else 'no link'}")


def test_exports07_exactly_the_nine_and_the_header(ctx, lib07, declared07):
    exports = dynamic_exports(lib07.so)
    names = {n for n, _ in exports}
    want = API07_FUNCTIONS | declared07
    not_functions = sorted(n for n, k in exports if k not in ("T", "t", "W", "i"))
    ctx.check("fio_tls07.h declares the link marker and no function of the nine",
              MARKER in declared07 and not (declared07 & API07_FUNCTIONS), sorted(declared07))
    ctx.check("libfio_tls07.so exports exactly the nine and fio_tls07.h's functions",
              names == want and not not_functions,
              f"exported, not expected: {sorted(names - want)}\n"
              f"expected, not exported: {sorted(want - names)}\n"
              f"exported non-functions: {not_functions}")


def test_static07_one_member(ctx, lib07, declared07):
    defs, _ = archive_functions(lib07.a)
    want = API07_FUNCTIONS | declared07
    undefined = sorted(want - set(defs))
    members = {m for f in want for m in defs.get(f, [])}
    ctx.check("libfio_tls07.a defines them all (strong, global) in one member",
              not undefined and len(members) == 1,
              f"undefined: {undefined}\nmembers: {sorted(members)}")


@pytest.mark.parametrize("lang", ("c99", "c++"))
@pytest.mark.parametrize("order", ("alone", "facil-first", "ours-first"))
def test_header07_compiles(ctx, paths, lib07, lang, order):
    if order != "alone" and not os.path.exists(lib07.facil_header):
        pytest.skip(f"facil.io 0.7.6 not found: no {lib07.facil_header} (FACIL_IO_07_DIR)")
    ours = '#include "fio_tls07.h"\n'
    theirs = '#include "fio_tls.h"\n'
    head = {"alone": ours, "facil-first": theirs + ours, "ours-first": ours + theirs}[order]
    src = os.path.join(ctx.tmp, f"h07_{order}.c")
    with open(src, "w") as f:
        f.write(head + "void (*reload_)(struct fio_tls_s *) = fio_tls_reload;\n"
                + ("fio_tls_s *(*new_)(const char *, const char *, const char *, const char *) = fio_tls_new;\n"
                   if order != "alone" else ""))
    obj = src + ".o"
    std = ["-std=c99", "-pedantic"] if lang == "c99" else ["-x", "c++"]
    cc = paths.cc if lang == "c99" else "g++"
    # facil.io's directory first: "fio_tls.h" is its header, not our beta4 one
    res = run([cc, *std, "-Wall", "-Wextra", "-Werror", "-I", os.path.dirname(lib07.facil_header),
               "-I", paths.include, "-c", src, "-o", obj])
    ok = res.returncode == 0
    if ok and lang == "c++":
        # extern "C": the functions are referenced by their plain names
        undefined = {line.split()[-1] for line in run(["nm", obj]).stdout.splitlines()
                     if line.split()[:1] == ["U"]}
        ok = {"fio_tls_reload", MARKER} <= undefined
        res.stderr += f"\nundefined references: {sorted(undefined)}"
    ctx.check(f"fio_tls07.h ({order}) compiles as {lang}", ok, res.stderr)


@pytest.mark.parametrize("lib", ("none", "beta4", "api07"))
def test_link_marker07(ctx, paths, lib07, lib):
    src = os.path.join(ctx.tmp, "marker07.c")
    with open(src, "w") as f:
        f.write('#include "fio_tls07.h"\nint main(void) { return 0; }\n')
    libs = {"none": [], "beta4": [paths.a], "api07": [lib07.a]}[lib]
    if lib == "beta4" and not os.path.exists(paths.a):
        pytest.skip(f"no beta4 build at {paths.a}")
    out = os.path.join(ctx.tmp, f"marker07-{lib}")
    res = run([paths.cc, "-std=c99", "-I", paths.include, src, "-o", out, *libs, *paths.static_libs])
    if lib == "api07":
        ctx.check("with libfio_tls07.a the program links", res.returncode == 0, res.stderr)
    else:
        ctx.check(f"with {lib} the link fails naming {MARKER}",
                  res.returncode != 0 and MARKER in res.stderr, res.stderr)
