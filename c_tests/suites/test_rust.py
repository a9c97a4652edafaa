"""The Rust tests (`cargo test --release`: unit tests of src/ and the fuzz
regression replays of tests/), one pytest test each, so that `make check`
has one set of verdicts and one total.

Collection lists the tests (`cargo test -- --list`); the first test run
runs the whole cargo suite once and every test reads its own verdict.
With --openssl vendored (make check OPENSSL=vendored) cargo builds and
tests the vendored library (--features vendored, in --cargo-target-dir).
The release-API build (cargo feature api07, its own target dir, as `make
API=0.7` builds it) is tested too: its test ids start with "api07/"."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARGO = os.environ.get("CARGO", "cargo")
# cargo names each test binary on stderr ("Running unittests src/lib.rs
# (...)", "Doc-tests fio_tls"); libtest reports on stdout, one "running N
# tests" block per binary in the same order. The library's own log lines
# also go to stderr, so stdout stays clean to parse.
BINARY = re.compile(r"^\s*(?:Running (?:unittests )?(\S+)|Doc-tests (\S+))", re.M)
BLOCK = re.compile(r"^running \d+ tests?$", re.M)


def _blocks(r):
    """[(binary, libtest output)] of one cargo test run."""
    names = [m.group(1) or f"doc-tests {m.group(2)}" for m in BINARY.finditer(r.stderr)]
    starts = [m.start() for m in BLOCK.finditer(r.stdout)] + [len(r.stdout)]
    bodies = [r.stdout[a:b] for a, b in zip(starts, starts[1:])]
    if len(names) != len(bodies):
        return None
    return list(zip(names, bodies))


# the builds tested: "" (beta4 API) and "api07/" (the release API)
APIS = ("", "api07/")


def _flags(config, api=""):
    """cargo's options for the build under test (conftest's --openssl; `api`
    "api07/": the release API, in its own target dir as make API=0.7 uses)."""
    vendored = config.getoption("--openssl") == "vendored"
    if api:
        target = os.path.join(ROOT, "target", "api07-vendored" if vendored else "api07")
        return ["--features", "vendored,api07" if vendored else "api07", "--target-dir", target]
    if not vendored:
        return []
    target = config.getoption("--cargo-target-dir") or os.path.join(ROOT, "target", "vendored")
    return ["--features", "vendored", "--target-dir", target]


def _cargo(flags, *args):
    return subprocess.run([CARGO, "test", "--release", *flags, *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _listing(flags):
    r = _cargo(flags, "--", "--list")
    blocks = _listing_blocks(r) if r.returncode == 0 else None
    if blocks is None:
        return None, r.stdout + r.stderr
    return [f"{b}::{n}" for b, body in blocks
            for n in re.findall(r"^(\S+): test$", body, re.M)], ""


def _listing_blocks(r):
    # --list prints no "running N tests" line: each binary's list ends with
    # "N tests, M benchmarks"
    names = [m.group(1) or f"doc-tests {m.group(2)}" for m in BINARY.finditer(r.stderr)]
    bodies = re.split(r"^\d+ tests?, \d+ benchmarks?\n", r.stdout, flags=re.M)[:-1]
    if len(names) != len(bodies):
        return None
    return list(zip(names, bodies))


_LISTINGS = {}


def _listed(config, api=""):
    """(test ids, cargo's output when listing failed), listed once a run."""
    flags = tuple(_flags(config, api))
    if flags not in _LISTINGS:
        ids, output = _listing(list(flags))
        _LISTINGS[flags] = ([api + i for i in ids] if ids else ids, output)
    return _LISTINGS[flags]


def pytest_generate_tests(metafunc):
    if "test_id" in metafunc.fixturenames:
        metafunc.parametrize("test_id", [i for api in APIS for i in _listed(metafunc.config, api)[0] or []])
    if "api" in metafunc.fixturenames:
        metafunc.parametrize("api", APIS, ids=("beta4", "api07"))


@pytest.fixture(scope="module")
def cargo_run(request):
    """Runs each cargo suite once: {test id: (verdict, output)} (the output
    of the last run, for a test that did not report)."""
    results = {}
    for api in APIS:
        r = _cargo(_flags(request.config, api))
        results.update(_verdicts(r, api))
    return results, r


def _verdicts(r, api):
    results = {}
    for binary, body in _blocks(r) or []:
        for name, verdict in re.findall(r"^test (\S+) (?:- should panic )?\.\.\. (ok|FAILED|ignored)",
                                        body, re.M):
            m = re.search(rf"^---- {re.escape(name)} stdout ----\n(.*?)(?=^---- |^failures:$)",
                          body, re.M | re.S)
            results[f"{api}{binary}::{name}"] = (verdict, m.group(1) if m else "")
    return results


def test_cargo_builds_and_lists_tests(request, api):
    ids, output = _listed(request.config, api)
    assert ids, f"cargo test --list failed or listed nothing:\n{output[-5000:]}"


def test_rust(cargo_run, test_id):
    results, r = cargo_run
    if test_id not in results:
        pytest.fail(f"{test_id} was listed but cargo test did not report it "
                    f"(rc={r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    verdict, output = results[test_id]
    if verdict == "ignored":
        pytest.skip("#[ignore] in the Rust source")
    assert verdict == "ok", f"cargo test: {test_id} FAILED\n{output}"
