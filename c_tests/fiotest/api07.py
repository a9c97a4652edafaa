"""The facil.io 0.7.x release API (issue 14): where the release build, the
0.7.6 tree and the programs of c_tests/api07.mk are, and how each backend
runs (suites/test_api07.py, tools/compare07.py).

Backends: "static", "shared", "preload" (our release build
libfio_tls07, the working link modes), "broken" (libfio_tls07.so with the
static libfacil.io.a: fio.c's weak fallbacks inside the program win),
"none" (facil.io alone: the stubs of its fio_tls_missing.c) and "upstream"
(facil.io 0.7.6's own OpenSSL backend, build-openssl)."""
import os

OURS = ("static", "shared", "preload")
UPSTREAM = "upstream"
NONE = "none"
# what fio.c's weak fallbacks (and fio_tls_missing.c's) log before exit(-1)
FATAL_STUB07 = "No supported SSL/TLS library available."


class Paths07:
    def __init__(self, facil_dir, static, shared, openssl, lib_dir, ct_dir, missing=""):
        self.facil_dir = os.path.abspath(facil_dir)
        self.static = os.path.abspath(static or os.path.join(
            self.facil_dir, "build-static", "libfacil.io.a"))
        self.shared = os.path.abspath(shared or os.path.join(
            self.facil_dir, "build-shared", "libfacil.io.so"))
        self.openssl = os.path.abspath(openssl or os.path.join(
            self.facil_dir, "build-openssl", "libfacil.io.a"))
        self.lib_dir = os.path.abspath(lib_dir)
        self.so = os.path.join(self.lib_dir, "libfio_tls07.so")
        self.a = os.path.join(self.lib_dir, "libfio_tls07.a")
        self.ct = os.path.abspath(ct_dir)
        self.missing = missing or self._absent()

    def _absent(self):
        need = [os.path.join(self.facil_dir, "lib", "facil", "fio.h"), self.static, self.shared]
        gone = [p for p in need if not os.path.exists(p)]
        return (f"facil.io 0.7.6 build not found: no {', '.join(gone)} "
                "(--facil07-dir, --facil07-static, --facil07-shared)") if gone else ""

    def binary(self, backend, program):
        return os.path.join(self.ct, backend, program)

    def unavailable(self, backend, program="fio07_server"):
        """Why `backend` cannot run here ("" when it can)."""
        if self.missing:
            return f"facil.io 0.7.6 integration: {self.missing}"
        if backend == UPSTREAM and not os.path.exists(self.openssl):
            return (f"facil.io 0.7.6 with its own OpenSSL backend not found: no {self.openssl} "
                    "(--facil07-openssl, make variable FACIL_IO_07_OPENSSL)")
        if backend not in (UPSTREAM, NONE) and not (os.path.exists(self.so) and os.path.exists(self.a)):
            return (f"no release build in {self.lib_dir} (make API=0.7 builds "
                    "libfio_tls07.so and libfio_tls07.a)")
        if not os.path.exists(self.binary(backend, program)):
            return f"{self.binary(backend, program)} not built (make check-programs07)"
        return ""

    def env(self, backend, extra=None):
        """The environment of a program of `backend`: LD_PRELOAD of the
        release build in preload mode only, none of the library's knobs
        inherited."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", "SSLKEYLOGFILE") and not k.startswith("FIO_TLS_")}
        if backend == "preload":
            env["LD_PRELOAD"] = self.so
        env.update(extra or {})
        return env
