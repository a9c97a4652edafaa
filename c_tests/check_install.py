#!/usr/bin/env python3
"""Checks what `make install DESTDIR=ROOT PREFIX=PREFIX` left in ROOT.

  check_install.py --root build/stage --prefix /usr --version 0.1.0

Expected: PREFIX/lib/libfio_tls.so.VERSION (SONAME libfio_tls.so.0),
libfio_tls.so.0 -> libfio_tls.so.VERSION, libfio_tls.so -> libfio_tls.so.0,
libfio_tls.a, PREFIX/include/fio_tls.h (same as include/fio_tls.h) and
PREFIX/lib/pkgconfig/fio_tls.pc. Prints `ok`/`FAIL` lines and a summary.
"""
import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Report  # noqa: E402

# the system-OpenSSL build's; the vendored build passes its own
STATIC_LIBS = "-lssl -lcrypto -lpthread -ldl -lm"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--header", default="include/fio_tls.h")
    ap.add_argument("--static-libs", default=STATIC_LIBS,
                    help="expected Libs.private (the static link's libraries)")
    ap.add_argument("--requires", default="openssl",
                    help="expected Requires.private ('' for the vendored build: "
                         "fio_tls.pc must not ask for the system OpenSSL)")
    args = ap.parse_args()
    static_libs = args.static_libs.split()

    report = Report()

    def check(name, ok, detail=""):
        return report.check(f"install: {name}", ok, detail)

    base = args.root + args.prefix
    lib = os.path.join(base, "lib")
    real = os.path.join(lib, f"libfio_tls.so.{args.version}")
    so0 = os.path.join(lib, "libfio_tls.so.0")
    so = os.path.join(lib, "libfio_tls.so")

    check(f"lib/libfio_tls.so.{args.version} is a regular file",
          os.path.isfile(real) and not os.path.islink(real))
    res = subprocess.run(["readelf", "-d", real], capture_output=True, text=True)
    check("its SONAME is libfio_tls.so.0",
          "Library soname: [libfio_tls.so.0]" in res.stdout, res.stdout[-400:])
    check(f"lib/libfio_tls.so.0 -> libfio_tls.so.{args.version}",
          os.path.islink(so0) and os.readlink(so0) == f"libfio_tls.so.{args.version}",
          os.readlink(so0) if os.path.islink(so0) else "not a symlink")
    check("lib/libfio_tls.so -> libfio_tls.so.0",
          os.path.islink(so) and os.readlink(so) == "libfio_tls.so.0",
          os.readlink(so) if os.path.islink(so) else "not a symlink")
    check("lib/libfio_tls.a installed", os.path.isfile(os.path.join(lib, "libfio_tls.a")))
    hdr = os.path.join(base, "include", "fio_tls.h")
    check("include/fio_tls.h installed and identical to the source tree's",
          os.path.isfile(hdr) and filecmp.cmp(hdr, args.header, shallow=False))

    pcdir = os.path.join(lib, "pkgconfig")
    pc = os.path.join(pcdir, "fio_tls.pc")
    text = open(pc).read() if os.path.isfile(pc) else ""
    fields = dict(re.findall(r"^([A-Za-z.]+):\s*(.*)$", text, re.M))
    check("fio_tls.pc has Version, Libs, Cflags",
          fields.get("Version") == args.version
          and "-lfio_tls" in fields.get("Libs", "")
          and "-I" in fields.get("Cflags", ""), text)
    check("fio_tls.pc Libs.private lists the static link's libraries",
          fields.get("Libs.private", "").split() == static_libs,
          fields.get("Libs.private"))
    requires = " ".join(v for k, v in fields.items() if k.startswith("Requires"))
    check(f"fio_tls.pc requires {args.requires or 'nothing'}",
          requires.split() == args.requires.split(), text)
    check(f"fio_tls.pc prefix is {args.prefix}",
          re.search(rf"^prefix={re.escape(args.prefix)}$", text, re.M) is not None)

    if shutil.which("pkg-config"):
        # our .pc first, then the system's (fio_tls.pc requires openssl.pc)
        env = dict(os.environ, PKG_CONFIG_PATH=pcdir)
        q = lambda *a: subprocess.run(["pkg-config", *a, "fio_tls"], env=env,
                                      capture_output=True, text=True)
        mv, libs = q("--modversion"), q("--static", "--libs")
        check("pkg-config reads fio_tls.pc (version, static libs)",
              mv.stdout.strip() == args.version
              and all(x in libs.stdout.split() for x in ["-lfio_tls"] + static_libs)
              and (args.requires or not {"-lssl", "-lcrypto"} & set(libs.stdout.split())),
              mv.stdout + mv.stderr + libs.stdout + libs.stderr)
    else:
        print("ok - install: pkg-config reads fio_tls.pc # SKIP pkg-config not installed")

    return report.summary()


if __name__ == "__main__":
    sys.exit(main())
