#!/usr/bin/env python3
"""Static checks of the built libfio_tls artefacts (no facil.io needed).

Run by `make check`:

  check_library.py --so build/libfio_tls.so --a build/libfio_tls.a \
      --header include/fio_tls.h --cxx-object build/c_tests/header_check_cxx.o

Checks:
  * the shared library's SONAME is libfio_tls.so.0;
  * the functions the header declares include the six seed functions;
  * the shared library exports exactly the functions the header declares
    (every defined dynamic symbol, nothing else);
  * the static library defines the six as strong global functions, all in
    one archive member (a static link that pulls one pulls all, so
    facil.io's weak stubs can never be picked for the others);
  * fio_tls_s is opaque (sizeof on it does not compile);
  * the header, compiled as C++, declares the functions extern "C".

Prints one `ok - ...` / `FAIL - ...` line per check and `N passed, N failed`.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Report  # noqa: E402

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


def header_functions(cc, header):
    """Names of the fio_tls_* functions the header declares.

    The header goes through the preprocessor first, so names that appear
    only in comments are not counted."""
    res = run([cc, "-E", "-P", "-x", "c", header])
    if res.returncode != 0:
        raise RuntimeError(f"{cc} -E failed:\n{res.stderr}")
    return set(re.findall(r"\b(fio_tls_\w+)\s*\(", res.stdout))


def soname(path):
    res = run(["readelf", "-d", path])
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", res.stdout)
    return m.group(1) if m else None


def dynamic_exports(path):
    """(name, type) of every defined dynamic symbol, version nodes aside."""
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


def archive_definitions(path):
    """{name: [member, ...]} for strong global functions defined in the .a.

    readelf rather than nm: rustc's objects carry embedded LLVM bitcode,
    which a system-wide LLVM linker plugin may claim (and fail on) in nm."""
    res = run(["readelf", "-sW", path])
    defs = {}
    member = None
    for line in res.stdout.splitlines():
        m = re.match(r"^File: .*\((.*)\)$", line)
        if m:
            member = m.group(1)
            continue
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if (len(parts) == 8 and parts[3] == "FUNC" and parts[4] == "GLOBAL"
                and parts[6] != "UND" and parts[7].startswith("fio_tls_")):
            defs.setdefault(parts[7], []).append(member)
    return defs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--so", required=True)
    ap.add_argument("--a", required=True)
    ap.add_argument("--header", required=True)
    ap.add_argument("--cxx-object", required=True)
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args()
    r = Report()

    name = soname(args.so)
    r.check(f"SONAME of {args.so} is {EXPECTED_SONAME}",
            name == EXPECTED_SONAME, f"readelf -d shows SONAME {name!r}")

    declared = header_functions(args.cc, args.header)
    missing = SEED_FUNCTIONS - declared
    r.check("header declares the six seed functions", not missing,
            f"missing from {args.header}: {sorted(missing)}")

    exports = dynamic_exports(args.so)
    exported_names = {n for n, _ in exports}
    not_functions = sorted(n for n, k in exports if k not in ("T", "t", "W", "i"))
    extra = sorted(exported_names - declared)
    absent = sorted(declared - exported_names)
    r.check("shared library exports exactly the header's functions",
            not extra and not absent and not not_functions,
            f"exported but not declared: {extra}\n"
            f"declared but not exported: {absent}\n"
            f"exported non-functions: {not_functions}")

    defs = archive_definitions(args.a)
    undefined = sorted(SEED_FUNCTIONS - set(defs))
    r.check("static library defines the six functions (strong, global)",
            not undefined, f"no global 'T' definition for: {undefined}")
    members = {m for f in SEED_FUNCTIONS for m in defs.get(f, [])}
    r.check("static library keeps the six in one archive member",
            len(members) == 1 and not undefined,
            f"members: {sorted(members)}")

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "opaque.c")
        with open(src, "w") as f:
            f.write('#include "fio_tls.h"\n'
                    "unsigned long fio_tls_size = sizeof(fio_tls_s);\n")
        res = run([args.cc, "-std=c99", "-fsyntax-only",
                   "-I", os.path.dirname(os.path.abspath(args.header)), src])
        r.check("fio_tls_s is an opaque (incomplete) type",
                res.returncode != 0 and "incomplete" in res.stderr,
                f"compiling sizeof(fio_tls_s): rc={res.returncode}\n{res.stderr}")

    res = run(["nm", args.cxx_object])
    undefined_refs = {line.split()[-1] for line in res.stdout.splitlines()
                      if line.split()[:1] == ["U"]}
    mangled = sorted(u for u in undefined_refs
                     if u.startswith("_Z") and "fio_tls_" in u)
    r.check("header compiled as C++ declares the functions extern \"C\"",
            SEED_FUNCTIONS <= undefined_refs and not mangled,
            f"plain references: {sorted(undefined_refs & SEED_FUNCTIONS)}\n"
            f"mangled references: {mangled}")

    return r.summary()


if __name__ == "__main__":
    sys.exit(main())
