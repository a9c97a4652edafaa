"""Shared fixtures and verdict rules of the libfio_tls suites (pytest).

Layout:
  c_tests/programs/   the C programs (facil.io test server and client, the
                      API misuse table, the demo, the header check)
  c_tests/suites/     the pytest suites, test_<area>.py
  c_tests/fiotest/    the helpers they share (processes, peers, test PKI,
                      the per-test Ctx)
  c_tests/conftest.py this file: options, fixtures, verdicts

The Makefile runs `pytest c_tests --build-dir build [...]` after building
everything. Options:
  --build-dir DIR        where `make` put the library and the C programs
  --facil-missing WHY    no facil.io build: tests marked `facil` are skipped
                         with WHY (the Makefile also prints its loud SKIP line)
  --summary-file F       also write the closing total line to F
  --torture-full         the torture items with their full counts

Verdicts:
  * a check (`ctx.check`) that fails fails its test, with every failed
    check and the logs of the test's servers in the report;
  * an exception fails that test only; the rest still run;
  * a skipped test is reported (and counted) as skipped, never as passed;
  * a selection (-k, a node id) that matches no test is an error;
  * the run ends with `total: N passed, N failed, N skipped`.
"""
import os
import shutil

import pytest

from fiotest import proc
from fiotest.ctx import Ctx
from fiotest.pki import Pki

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def pytest_addoption(parser):
    g = parser.getgroup("libfio_tls")
    g.addoption("--build-dir", default=os.path.join(ROOT, "build"),
                help="the build directory of `make` (library and C programs)")
    g.addoption("--facil-missing", default="",
                help="reason why the facil.io build is missing (skips `facil` tests)")
    g.addoption("--summary-file", default="",
                help="write the closing total line to this file too")
    # suites/test_torture.py
    g.addoption("--torture-full", action="store_true",
                help="the torture items with their full counts (make torture)")


class Paths:
    """Where the built artefacts are. Every path is absolute."""

    def __init__(self, build):
        self.root = ROOT
        self.build = os.path.abspath(build)
        self.ct = os.path.join(self.build, "c_tests")
        self.so = os.path.join(self.build, "libfio_tls.so")
        self.a = os.path.join(self.build, "libfio_tls.a")
        self.header = os.path.join(ROOT, "include", "fio_tls.h")
        self.misuse = os.path.join(self.build, "misuse")

    def binary(self, mode, program):
        """A C test program linked in `mode` (static, shared, preload, broken)."""
        return os.path.join(self.ct, mode, program)


@pytest.fixture(scope="session")
def paths(request):
    return Paths(request.config.getoption("--build-dir"))


def pytest_collection_modifyitems(config, items):
    why = config.getoption("--facil-missing")
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
def pki(tmp_path_factory):
    """The test PKI (root CA, intermediate, localhost / a.test / b.test
    leaves, bad inputs), made once per run."""
    p = Pki(str(tmp_path_factory.mktemp("pki")))
    p.make()
    return p


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
    if c.failed and report.passed:
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


def pytest_runtest_logreport(report):
    if report.when != "call" and report.outcome == "passed":
        return
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
    f = terminalreporter.config.getoption("--summary-file")
    if f:
        with open(f, "w") as out:
            out.write(line + "\n")
