"""The built artefacts as a C program sees them (no facil.io needed):

  * the shared library's SONAME is libfio_tls.so.0;
  * the header declares the six seed functions;
  * the shared library exports exactly the functions the header declares
    (every defined dynamic symbol, nothing else);
  * the static library defines the six as strong global functions, all in
    one archive member (a static link that pulls one pulls all, so
    facil.io's weak stubs can never be picked for the others);
  * fio_tls_s is opaque (sizeof on it does not compile);
  * the header, compiled as C++ (build/c_tests/header_check_cxx.o, made by
    `make check-programs`), declares the functions extern "C".

The C compiler of conftest's --cc (paths.cc; make check passes $(CC)) runs
the preprocessor and the opaque-type compile.
"""
import os
import re
import subprocess

import pytest

from fiotest.elf import archive_functions

SEED_FUNCTIONS = {
    "fio_tls_new",
    "fio_tls_cert_add",
    "fio_tls_proto_add",
    "fio_tls_accept",
    "fio_tls_connect",
    "fio_tls_destroy",
}
EXPECTED_SONAME = "libfio_tls.so.0"


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def declared_functions(cc, header):
    """Names of the fio_tls_* functions `header` declares. The header goes
    through the preprocessor first, so names only in comments do not count."""
    res = run([cc, "-E", "-P", "-x", "c", header])
    if res.returncode != 0:
        pytest.fail(f"{cc} -E {header} failed:\n{res.stderr}")
    return set(re.findall(r"\b(fio_tls_\w+)\s*\(", res.stdout))


@pytest.fixture(scope="module")
def declared(paths):
    return declared_functions(paths.cc, paths.header)


def test_soname(ctx, paths):
    res = run(["readelf", "-d", paths.so])
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", res.stdout)
    name = m.group(1) if m else None
    ctx.check(f"SONAME of {paths.so} is {EXPECTED_SONAME}",
              name == EXPECTED_SONAME, f"readelf -d shows SONAME {name!r}\n{res.stderr}")


def test_header_declares_seed_functions(ctx, paths, declared):
    missing = SEED_FUNCTIONS - declared
    ctx.check("header declares the six seed functions", not missing,
              f"missing from {paths.header}: {sorted(missing)}")


def dynamic_exports(path):
    """(name, nm type) of every defined dynamic symbol, version nodes aside."""
    res = run(["nm", "-D", "--defined-only", path])
    out = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, name = parts[-2], parts[-1]
        if kind == "A":  # a symbol-version node name, not a symbol
            continue
        out.append((name.split("@")[0], kind))
    return out


def test_exports_exactly_the_header(ctx, paths, declared):
    exports = dynamic_exports(paths.so)
    names = {n for n, _ in exports}
    not_functions = sorted(n for n, k in exports if k not in ("T", "t", "W", "i"))
    extra = sorted(names - declared)
    absent = sorted(declared - names)
    ctx.check("shared library exports exactly the header's functions",
              exports and not extra and not absent and not not_functions,
              f"exported but not declared: {extra}\n"
              f"declared but not exported: {absent}\n"
              f"exported non-functions: {not_functions}")


def archive_definitions(path):
    """{name: [member, ...]} for strong global fio_tls_* functions in the .a."""
    defs, _ = archive_functions(path)
    return {name: members for name, members in defs.items() if name.startswith("fio_tls_")}


def test_static_library_one_member(ctx, paths):
    defs = archive_definitions(paths.a)
    undefined = sorted(SEED_FUNCTIONS - set(defs))
    ctx.check("static library defines the six functions (strong, global)",
              not undefined, f"no global 'T' definition for: {undefined}")
    members = {m for f in SEED_FUNCTIONS for m in defs.get(f, [])}
    ctx.check("static library keeps the six in one archive member",
              len(members) == 1 and not undefined,
              f"members: {sorted(members)}")


def test_opaque_type(ctx, paths):
    src = os.path.join(ctx.tmp, "opaque.c")
    with open(src, "w") as f:
        f.write('#include "fio_tls.h"\n'
                "unsigned long fio_tls_size = sizeof(fio_tls_s);\n")
    res = run([paths.cc, "-std=c99", "-fsyntax-only",
               "-I", os.path.dirname(paths.header), src])
    ctx.check("fio_tls_s is an opaque (incomplete) type",
              res.returncode != 0 and "incomplete" in res.stderr,
              f"compiling sizeof(fio_tls_s): rc={res.returncode}\n{res.stderr}")


def test_cxx_extern_c(ctx, paths):
    obj = os.path.join(paths.ct, "header_check_cxx.o")
    res = run(["nm", obj])
    undefined_refs = {line.split()[-1] for line in res.stdout.splitlines()
                      if line.split()[:1] == ["U"]}
    mangled = sorted(u for u in undefined_refs
                     if u.startswith("_Z") and "fio_tls_" in u)
    ctx.check("header compiled as C++ declares the functions extern \"C\"",
              SEED_FUNCTIONS <= undefined_refs and not mangled,
              f"nm {obj}: rc={res.returncode} {res.stderr}\n"
              f"plain references: {sorted(undefined_refs & SEED_FUNCTIONS)}\n"
              f"mangled references: {mangled}")
