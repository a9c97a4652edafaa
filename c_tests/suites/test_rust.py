"""The Rust tests (`cargo test --release`: unit tests of src/ and the fuzz
regression replays of tests/), one pytest test each, so that `make check`
has one set of verdicts and one total.

Collection lists the tests (`cargo test -- --list`); the first test run
runs the whole cargo suite once and every test reads its own verdict.
With --openssl vendored (make check OPENSSL=vendored) cargo builds and
tests the vendored library (--features vendored, in --cargo-target-dir)."""
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


def _flags(config):
    """cargo's options for the build under test (conftest's --openssl)."""
    if config.getoption("--openssl") != "vendored":
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


def _listed(config):
    """(test ids, cargo's output when listing failed), listed once a run."""
    flags = tuple(_flags(config))
    if flags not in _LISTINGS:
        _LISTINGS[flags] = _listing(list(flags))
    return _LISTINGS[flags]


def pytest_generate_tests(metafunc):
    if "test_id" in metafunc.fixturenames:
        metafunc.parametrize("test_id", _listed(metafunc.config)[0] or [])


@pytest.fixture(scope="module")
def cargo_run(request):
    """Runs the cargo suite once: {test id: (verdict, output)}."""
    r = _cargo(_flags(request.config))
    results = {}
    for binary, body in _blocks(r) or []:
        for name, verdict in re.findall(r"^test (\S+) (?:- should panic )?\.\.\. (ok|FAILED|ignored)",
                                        body, re.M):
            m = re.search(rf"^---- {re.escape(name)} stdout ----\n(.*?)(?=^---- |^failures:$)",
                          body, re.M | re.S)
            results[f"{binary}::{name}"] = (verdict, m.group(1) if m else "")
    return results, r


def test_cargo_builds_and_lists_tests(request):
    ids, output = _listed(request.config)
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
