"""What `make install DESTDIR=STAGE PREFIX=/usr` leaves in STAGE (the module
runs that make itself, into a scratch directory):

  /usr/lib/libfio_tls.so.VERSION   (SONAME libfio_tls.so.0)
  /usr/lib/libfio_tls.so.0 -> libfio_tls.so.VERSION
  /usr/lib/libfio_tls.so -> libfio_tls.so.0
  /usr/lib/libfio_tls.a
  /usr/include/fio_tls.h           (the same as include/fio_tls.h)
  /usr/lib/pkgconfig/fio_tls.pc    (read back with pkg-config when present)

VERSION is the package version of Cargo.toml. For the vendored build
(--openssl vendored: make OPENSSL=vendored) the same make runs with
OPENSSL=vendored, and fio_tls.pc must not ask for the system OpenSSL: its
Requires.private is --pc-requires (nothing), its Libs.private --static-libs.
"""
import filecmp
import os
import re
import shutil
import subprocess

import pytest

PREFIX = "/usr"


def cargo_version(root):
    with open(os.path.join(root, "Cargo.toml")) as f:
        text = f.read()
    package = re.search(r"^\[package\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    m = re.search(r'^version\s*=\s*"([^"]+)"', package.group(1) if package else "", re.M)
    assert m, "no version in Cargo.toml's [package]"
    return m.group(1)


class Stage:
    def __init__(self, root, version):
        self.root, self.version = root, version
        self.base = root + PREFIX
        self.lib = os.path.join(self.base, "lib")
        self.pcdir = os.path.join(self.lib, "pkgconfig")
        self.pc = os.path.join(self.pcdir, "fio_tls.pc")


@pytest.fixture(scope="module")
def stage(paths, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("stage"))
    r = subprocess.run(["make", "-C", paths.root, "--no-print-directory", "install",
                        f"DESTDIR={root}", f"PREFIX={PREFIX}", f"OPENSSL={paths.openssl}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=900)
    if r.returncode != 0:
        pytest.fail(f"make install DESTDIR={root} PREFIX={PREFIX} failed "
                    f"(rc={r.returncode}):\n{r.stdout[-5000:]}")
    return Stage(root, cargo_version(paths.root))


def test_shared_library(ctx, stage):
    v = stage.version
    real = os.path.join(stage.lib, f"libfio_tls.so.{v}")
    so0 = os.path.join(stage.lib, "libfio_tls.so.0")
    so = os.path.join(stage.lib, "libfio_tls.so")
    ctx.check(f"install: lib/libfio_tls.so.{v} is a regular file",
              os.path.isfile(real) and not os.path.islink(real))
    res = subprocess.run(["readelf", "-d", real], capture_output=True, text=True)
    ctx.check("install: its SONAME is libfio_tls.so.0",
              "Library soname: [libfio_tls.so.0]" in res.stdout,
              res.stdout[-400:] + res.stderr)
    ctx.check(f"install: lib/libfio_tls.so.0 -> libfio_tls.so.{v}",
              os.path.islink(so0) and os.readlink(so0) == f"libfio_tls.so.{v}",
              os.readlink(so0) if os.path.islink(so0) else "not a symlink")
    ctx.check("install: lib/libfio_tls.so -> libfio_tls.so.0",
              os.path.islink(so) and os.readlink(so) == "libfio_tls.so.0",
              os.readlink(so) if os.path.islink(so) else "not a symlink")


def test_static_library(ctx, stage):
    ctx.check("install: lib/libfio_tls.a installed",
              os.path.isfile(os.path.join(stage.lib, "libfio_tls.a")))


def test_header(ctx, stage, paths):
    hdr = os.path.join(stage.base, "include", "fio_tls.h")
    ctx.check("install: include/fio_tls.h installed and identical to the source tree's",
              os.path.isfile(hdr) and filecmp.cmp(hdr, paths.header, shallow=False))


def test_pkgconfig_file(ctx, stage, paths):
    text = open(stage.pc).read() if os.path.isfile(stage.pc) else ""
    fields = dict(re.findall(r"^([A-Za-z.]+):\s*(.*)$", text, re.M))
    ctx.check("install: fio_tls.pc has Version, Libs, Cflags",
              fields.get("Version") == stage.version
              and "-lfio_tls" in fields.get("Libs", "")
              and "-I" in fields.get("Cflags", ""), text or f"{stage.pc} missing")
    ctx.check("install: fio_tls.pc Libs.private lists the static link's libraries",
              fields.get("Libs.private", "").split() == paths.static_libs,
              f"{fields.get('Libs.private')!r}, expected {' '.join(paths.static_libs)!r}")
    requires = " ".join(v for k, v in fields.items() if k.startswith("Requires"))
    ctx.check(f"install: fio_tls.pc requires {paths.pc_requires or 'nothing'}",
              requires.split() == paths.pc_requires.split(), text)
    ctx.check(f"install: fio_tls.pc prefix is {PREFIX}",
              re.search(rf"^prefix={re.escape(PREFIX)}$", text, re.M) is not None, text)


def test_pkg_config_reads_it(ctx, stage, paths):
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config not installed")
    # our .pc first, then the system's (fio_tls.pc requires openssl.pc)
    env = dict(os.environ, PKG_CONFIG_PATH=stage.pcdir)

    def q(*args):
        return subprocess.run(["pkg-config", *args, "fio_tls"], env=env,
                              capture_output=True, text=True)

    mv, libs = q("--modversion"), q("--static", "--libs")
    ctx.check("install: pkg-config reads fio_tls.pc (version, static libs)",
              mv.stdout.strip() == stage.version
              and all(x in libs.stdout.split() for x in ["-lfio_tls"] + paths.static_libs)
              # the vendored build's OpenSSL is inside libfio_tls.a
              and (paths.pc_requires or not {"-lssl", "-lcrypto"} & set(libs.stdout.split())),
              mv.stdout + mv.stderr + libs.stdout + libs.stderr)
