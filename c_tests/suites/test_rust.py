"""The Rust tests (`cargo test --release`: unit tests of src/ and the fuzz
regression replays of tests/), one pytest test each, so that `make check`
has one set of verdicts and one total.

Collection lists the tests (`cargo test -- --list`); the first test run
runs the whole cargo suite once and every test reads its own verdict."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARGO = os.environ.get("CARGO", "cargo")
SECTION = re.compile(r"^\s*(?:Running (?:unittests )?(\S+)|Doc-tests (\S+))", re.M)
# libtest writes "test NAME ... ", the verdict and the newline as separate
# writes, so a log line of a test running on another thread (the library
# writes whole "LEVEL: fio_tls: ..." lines to stderr, merged here) may come
# between the name and its verdict
VERDICT = re.compile(r"^test (\S+) \.\.\. (?:(?:ERROR|WARNING|INFO|DEBUG): [^\n]*\n)*"
                     r"(ok|FAILED|ignored)", re.M)


def _sections(text):
    """[(section, body)]: cargo's output split by test binary."""
    marks = list(SECTION.finditer(text))
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        name = m.group(1) or f"doc-tests {m.group(2)}"
        out.append((name, text[m.end():end]))
    return out


def _cargo(*args):
    return subprocess.run([CARGO, "test", "--release", *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _listing():
    r = _cargo("--", "--list")
    if r.returncode != 0:
        return None, r.stdout
    ids = []
    for section, body in _sections(r.stdout):
        ids += [f"{section}::{n}" for n in re.findall(r"^(\S+): test$", body, re.M)]
    return ids, r.stdout


_IDS, _LIST_OUTPUT = _listing()


@pytest.fixture(scope="module")
def cargo_run():
    """Runs the cargo suite once: {test id: (verdict, output)}."""
    r = _cargo()
    results = {}
    for section, body in _sections(r.stdout):
        for name, verdict in VERDICT.findall(body):
            m = re.search(rf"^---- {re.escape(name)} stdout ----\n(.*?)(?=^---- |^failures:$)",
                          body, re.M | re.S)
            results[f"{section}::{name}"] = (verdict, m.group(1) if m else "")
    return results, r


def test_cargo_builds_and_lists_tests():
    assert _IDS, f"cargo test --list failed or listed nothing:\n{_LIST_OUTPUT[-5000:]}"


@pytest.mark.parametrize("test_id", _IDS or [])
def test_rust(cargo_run, test_id):
    results, r = cargo_run
    if test_id not in results:
        pytest.fail(f"{test_id} was listed but cargo test did not report it "
                    f"(rc={r.returncode}):\n{r.stdout[-5000:]}")
    verdict, output = results[test_id]
    if verdict == "ignored":
        pytest.skip("#[ignore] in the Rust source")
    assert verdict == "ok", f"cargo test: {test_id} FAILED\n{output}"
