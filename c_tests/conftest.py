"""Shared fixtures and verdict rules of the libfio_tls suites (pytest).

Layout:
  c_tests/programs/   the C programs (facil.io test server and client, the
                      API misuse table, the demo, the header check)
  c_tests/suites/     the pytest suites, test_<area>.py
  c_tests/fiotest/    the helpers they share (processes, peers, test PKI,
                      the per-test Ctx)
  c_tests/conftest.py this file: options, fixtures, verdicts

The Makefile runs `pytest c_tests --build-dir build [...]` after building
everything, passing its own settings. Options (defaults: those of the
Makefile, for a run by hand):
  --build-dir DIR        where `make` put the library and the C programs
  --facil-dir DIR        the facil.io 0.7.0.beta4 tree (headers under lib/)
  --facil-static A       its libfacil.io.a (default DIR/build-static/...)
  --facil-shared SO      its libfacil.io.so (default DIR/build-shared/...)
  --cc CC                the C compiler the suites run themselves
  --static-libs LIBS     what a static link of libfio_tls.a needs besides it
  --facil-missing WHY    no facil.io build: tests marked `facil` are skipped
                         with WHY (the Makefile also prints its loud SKIP
                         line); without it, a facil.io tree or library that
                         is not there skips them with the paths it looked at
  --summary-file F       also write the closing total line to F
The `paths` fixture carries all of these (see Paths).
  --torture-full         the torture items with their full counts

Verdicts:
  * a check (`ctx.check`) that fails fails its test, with every failed
    check and the logs of the test's servers in the report;
  * an exception fails that test only; the rest still run;
  * a skipped test is reported (and counted) as skipped, never as passed;
    so is an xfail, used only for the known faults of facil.io 0.7.6's own
    TLS backend in test_api07.py, and listed in a line before the total;
  * a selection (-k, a node id) that matches no test is an error;
  * the run ends with `total: N passed, N failed, N skipped`.
"""
import os
import shlex
import shutil

import pytest

from fiotest import proc
from fiotest.api07 import Paths07
from fiotest.ctx import Ctx, Stopped
from fiotest.pki import ClientPki, Pki

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# (option, default, help); the defaults are the Makefile's, for a run by hand
OPTIONS = (
    ("--build-dir", os.path.join(ROOT, "build"),
     "the build directory of `make` (library and C programs)"),
    ("--facil-dir", "/opt/facil.io-0.7.0.beta4",
     "the facil.io 0.7.0.beta4 source tree (headers under lib/)"),
    ("--facil-static", "",
     "facil.io's static library (default FACIL_DIR/build-static/libfacil.io.a)"),
    ("--facil-shared", "",
     "facil.io's shared library (default FACIL_DIR/build-shared/libfacil.io.so)"),
    ("--cc", "cc", "the C compiler the suites run"),
    ("--static-libs", "-lssl -lcrypto -lpthread -ldl -lm",
     "what a static link of libfio_tls.a needs besides it"),
    ("--facil-missing", "", "reason why the facil.io build is missing (skips `facil` tests)"),
    ("--summary-file", "", "write the closing total line to this file too"),
    # the facil.io 0.7.x release API (suites/test_api07.py, c_tests/api07.mk)
    ("--facil07-dir", "/opt/facil.io-0.7.6", "the facil.io 0.7.6 source tree"),
    ("--facil07-static", "", "its libfacil.io.a without OpenSSL (default DIR/build-static/...)"),
    ("--facil07-shared", "", "its libfacil.io.so without OpenSSL (default DIR/build-shared/...)"),
    ("--facil07-openssl", "",
     "its libfacil.io.a with its own OpenSSL backend (default DIR/build-openssl/...)"),
    ("--facil07-missing", "", "reason why the facil.io 0.7.6 build is missing"),
    ("--lib07-dir", os.path.join(ROOT, "build"),
     "where make API=0.7 put libfio_tls07.so and libfio_tls07.a"),
    ("--ct07-dir", os.path.join(ROOT, "build", "c_tests07"),
     "the release-API C programs (c_tests/api07.mk)"),
)


def pytest_addoption(parser):
    g = parser.getgroup("libfio_tls")
    for name, default, text in OPTIONS:
        g.addoption(name, default=default, help=text)
    # suites/test_renewal.py
    g.addoption("--renewal-full", action="store_true",
                help="the renewal tests with the issue's full counts (200 keep-alive, "
                     "50 websocket connections)")
    # suites/test_torture.py
    g.addoption("--torture-full", action="store_true",
                help="the torture items with their full counts (make torture)")
    # which OpenSSL the build under test carries (make OPENSSL=...):
    # suites/test_pq_vendored.py, test_install.py, test_torture.py item 8
    g.addoption("--openssl", default="system", choices=("system", "vendored"),
                help="system: the distribution's libssl; vendored: OpenSSL 3.5 LTS "
                     "compiled in (make OPENSSL=vendored)")
    g.addoption("--cargo-target-dir", default="",
                help="the build's cargo target dir (default target, or "
                     "target/vendored with --openssl vendored)")
    g.addoption("--pc-requires", default=None,
                help="fio_tls.pc's expected Requires.private (default: openssl for "
                     "the system build, nothing for the vendored one)")
    g.addoption("--idle-limit-kib", type=float, default=None,
                help="torture item 8: TLS memory per idle connection over plain "
                     "HTTP's (default 16 KiB; 24 with --openssl vendored: OpenSSL "
                     "3.5's two record-layer objects add ~8 KiB, bench/README.md)")


class Paths:
    """Where the built artefacts and facil.io are, and the compiler settings
    (the options above). Every path is absolute."""

    def __init__(self, config):
        opt = config.getoption
        self.root = ROOT
        self.build = os.path.abspath(opt("--build-dir"))
        self.ct = os.path.join(self.build, "c_tests")
        self.so = os.path.join(self.build, "libfio_tls.so")
        self.a = os.path.join(self.build, "libfio_tls.a")
        self.include = os.path.join(ROOT, "include")
        self.header = os.path.join(self.include, "fio_tls.h")
        self.misuse = os.path.join(self.build, "misuse")
        self.facil_dir = os.path.abspath(opt("--facil-dir"))
        self.facil_static = os.path.abspath(opt("--facil-static") or os.path.join(
            self.facil_dir, "build-static", "libfacil.io.a"))
        self.facil_shared = os.path.abspath(opt("--facil-shared") or os.path.join(
            self.facil_dir, "build-shared", "libfacil.io.so"))
        self.cc = opt("--cc")
        self.static_libs = shlex.split(opt("--static-libs"))
        self.facil_missing = opt("--facil-missing") or self._facil_absent()
        self.openssl = opt("--openssl")
        vendored = self.openssl == "vendored"
        self.target = os.path.abspath(opt("--cargo-target-dir") or os.path.join(
            ROOT, "target", "vendored" if vendored else ""))
        self.pc_requires = opt("--pc-requires")
        if self.pc_requires is None:
            self.pc_requires = "" if vendored else "openssl"
        self.idle_limit_kib = opt("--idle-limit-kib") or (24.0 if vendored else 16.0)

    def _facil_absent(self):
        need = [os.path.join(self.facil_dir, "lib", "facil", "fio.h"),
                self.facil_static, self.facil_shared]
        missing = [p for p in need if not os.path.exists(p)]
        return (f"facil.io 0.7.0.beta4 build not found: no {', '.join(missing)} "
                "(--facil-dir, --facil-static, --facil-shared)") if missing else ""

    def binary(self, mode, program):
        """A C test program linked in `mode` (static, shared, preload, broken)."""
        return os.path.join(self.ct, mode, program)


def _paths(config):
    if not hasattr(config, "_fio_paths"):
        config._fio_paths = Paths(config)
    return config._fio_paths


@pytest.fixture(scope="session")
def paths(request):
    return _paths(request.config)


def pytest_collection_modifyitems(config, items):
    why = _paths(config).facil_missing
    if why:
        skip = pytest.mark.skip(reason=f"facil.io integration: {why}")
        for item in items:
            if "facil" in item.keywords:
                item.add_marker(skip)


def pytest_collection_finish(session):
    # a selection that selects nothing is a mistake, not a pass
    if not session.items:
        o = session.config.option
        pytest.exit(f"no test matches the selection (-k {o.keyword!r}, -m {o.markexpr!r}, "
                    f"args {session.config.args})", returncode=4)


@pytest.fixture(scope="session")
def paths07(request):
    """Where the release build, facil.io 0.7.6 and their programs are
    (fiotest/api07.py)."""
    o = request.config.getoption
    return Paths07(o("--facil07-dir"), o("--facil07-static"), o("--facil07-shared"),
                   o("--facil07-openssl"), o("--lib07-dir"), o("--ct07-dir"),
                   o("--facil07-missing"))


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI (root CA, intermediate, localhost / a.test / b.test
    leaves, bad inputs), made once per run."""
    p = Pki(str(tmp_path_factory.mktemp("pki")))
    p.make()
    return p


# -- the client suite (suites/test_client.py) ------------------------------
@pytest.fixture(scope="session")
def client_pki(tmp_path_factory):
    """The test PKI plus the client suite's certificates (expired, unknown
    CA, self-signed, client certificates) and payloads, made once per run;
    test_client.py makes it its `pki` (so its `ctx.pki`)."""
    p = ClientPki(str(tmp_path_factory.mktemp("client-pki")))
    p.make()
    return p
# -- end of the client suite's fixtures ---------------------------------------


@pytest.fixture
def ctx(paths, pki, tmp_path):
    """The test's Ctx: checks, link-mode binaries and environments, servers
    that are stopped (and whose logs are attached on failure) at the end."""
    c = Ctx(paths, tmp_path, pki)
    yield c
    c.finish()


@pytest.fixture(params=("static", "shared", "preload"))
def mode(request):
    """The working link modes of FACIL_IO_NOTES.md (the failing one,
    `broken`, has its own tests)."""
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    c = getattr(item, "funcargs", {}).get("ctx") if call.when == "call" else None
    if not isinstance(c, Ctx):
        return
    stopped = call.excinfo is not None and call.excinfo.errisinstance(Stopped)
    if c.failed and (report.passed or stopped):
        report.outcome = "failed"
        lines = [f"{len(c.failed)} of {len(c.failed) + len(c.passed)} checks failed:"]
        for name, detail in c.failed:
            lines.append(f"FAIL - {name}")
            lines += [f"    {l}" for l in str(detail).rstrip().splitlines()[-60:]]
        report.longrepr = "\n".join(lines)
    if report.failed:
        for srv in c.servers:
            text = srv.text()
            if len(text) > 20000:
                text = text[:5000] + "\n[...]\n" + text[-15000:]
            report.sections.append((f"server log {os.path.basename(srv.log_path)}", text))


# the verdict of each test: its worst phase (failed > skipped > passed)
_verdicts = {}
_RANK = {"passed": 0, "skipped": 1, "failed": 2}


# xfail: only facil.io 0.7.6's own backend's known faults (test_api07.py)
_xfails = []


def pytest_runtest_logreport(report):
    if report.when != "call" and report.outcome == "passed":
        return
    if getattr(report, "wasxfail", None) is not None:
        _xfails.append(report.nodeid)
    old = _verdicts.get(report.nodeid)
    if old is None or _RANK[report.outcome] > _RANK[old]:
        _verdicts[report.nodeid] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    proc.kill_leftovers()
    if exitstatus == 0:
        # a green run leaves nothing behind under build/ (a red one keeps
        # its scratch directories for a look)
        base = session.config._tmp_path_factory.getbasetemp()
        shutil.rmtree(base, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    n = {k: sum(1 for v in _verdicts.values() if v == k) for k in _RANK}
    line = f"total: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"
    if _xfails:
        terminalreporter.write_line(
            f"of the skipped: {len(_xfails)} xfail, known faults of facil.io 0.7.6's own "
            f"TLS backend (the comparison peer, not this library): {', '.join(_xfails)}")
    f = terminalreporter.config.getoption("--summary-file")
    if f:
        with open(f, "w") as out:
            out.write(line + "\n")
