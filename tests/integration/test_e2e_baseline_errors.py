"""Bad baselines and partial updates: clear errors, and no file ever overwritten with less."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.store import baseline
from pytest_tpw.store.baseline import BaselineFile, StoredSession
from tests.inner_code import BUSY_WORK

pytestmark = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")


# ~2 ms of busy work, one token per microsecond it really took (CPU contention cannot pass
# for a change in tokens per joule; see test_e2e_baseline_lifecycle.py)
BUSY = (
    BUSY_WORK
    + """
"""
)

ONE = (
    BUSY
    + """
def test_gen(tpw):
    tpw(work, tokens=per_us)
"""
)

FAST = ("--tpw-rounds", "3")


def path_of(pytester: pytest.Pytester, folder: str = ".tpw", key: str = "sim-x1") -> Path:
    return pytester.path / folder / f"{key}.json"


def stored_sessions(path: Path) -> dict[str, list[dict[str, Any]]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {k: v["sessions"] for k, v in doc["measurements"].items()}


def verdict(result: pytest.RunResult, node: str) -> str:
    rows = [line for line in result.outlines if line.startswith(node + " ")]
    assert len(rows) == 1, result.outlines
    return rows[0].removesuffix(" (!)").split()[-1]


# -- unusable files: a usage error before any test runs, the file left as it is ----------------

DAMAGED = {
    "invalid-json": (
        '{"format": "pytest-tpw baseline", "hardware_key": "sim-x1", "measu',
        [
            "*pytest-tpw: *sim-x1.json: corrupt baseline file (invalid JSON at line *"
            "git checkout -- *sim-x1.json*--tpw-update*"
        ],
    ),
    "newer-schema": (
        json.dumps(
            {
                "format": "pytest-tpw baseline",
                "schema": 99,
                "hardware_key": "sim-x1",
                "measurements": {},
            }
        ),
        [
            "*pytest-tpw: *sim-x1.json: written by a newer pytest-tpw (schema 99*"
            "upgrade: pip install -U pytest-tpw*"
        ],
    ),
    "foreign": (
        json.dumps({"name": "some other tool", "results": [1, 2, 3]}),
        ["*pytest-tpw: *sim-x1.json: not a pytest-tpw baseline file*"],
    ),
    "malformed-session": (
        json.dumps(
            {
                "format": "pytest-tpw baseline",
                "schema": 1,
                "hardware_key": "sim-x1",
                "measurements": {
                    "test_bad.py::test_gen": {
                        "sessions": [{"date": "d", "sensor": "sim", "provenance": "simulated"}]
                    }
                },
            }
        ),
        [
            "*pytest-tpw: *sim-x1.json: measurement 'test_bad.py::test_gen'*malformed session*"
            "git checkout -- *sim-x1.json*"
        ],
    ),
}


@pytest.mark.parametrize(
    "flags",
    [("--tpw",), ("--tpw", "--tpw-update"), ("--tpw-update-missing",)],
    ids=["compare", "update", "update-missing"],
)
@pytest.mark.parametrize("case", list(DAMAGED))
def test_unusable_baseline_is_a_usage_error_and_left_alone(
    tpwtester: pytest.Pytester, case: str, flags: tuple[str, ...]
) -> None:
    content, expected = DAMAGED[case]
    path = path_of(tpwtester)
    path.parent.mkdir()
    path.write_text(content, encoding="utf-8")
    before = path.read_bytes()
    tpwtester.makepyfile(test_bad=ONE)
    result = tpwtester.runpytest(*flags, *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(expected)
    assert str(path) in result.stderr.str()
    result.stdout.no_fnmatch_line("*passed*")
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["sim-x1.json"]


def test_file_damaged_during_the_run_is_not_overwritten(tpwtester: pytest.Pytester) -> None:
    """Flush re-reads the file at write time; one it cannot parse is never replaced."""
    tpwtester.makepyfile(
        test_race=BUSY
        + """
def test_a(tpw):
    tpw(work, tokens=per_us)

def test_b_damages_the_file():
    os.makedirs(".tpw", exist_ok=True)
    with open(".tpw/sim-x1.json", "w") as f:
        f.write("<<<<<<< HEAD")
"""
    )
    result = tpwtester.runpytest("--tpw-update", *FAST)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["baselines NOT written to *sim-x1.json: *corrupt baseline file*"])
    result.stdout.no_fnmatch_line("*measurement(s) written to*")
    assert path_of(tpwtester).read_text(encoding="utf-8") == "<<<<<<< HEAD"
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # an update that wrote nothing fails


# -- partial updates ------------------------------------------------------------------------------

TWO = (
    BUSY
    + """
def test_old(tpw):
    tpw(work, tokens=per_us)

def test_new(tpw):
    tpw(work, tokens=per_us)
"""
)


def test_update_missing_writes_only_new_measurements(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_two=ONE.replace("test_gen", "test_old"))
    tpwtester.runpytest("--tpw-update", *FAST).assert_outcomes(passed=1)
    before = stored_sessions(path_of(tpwtester))
    assert list(before) == ["test_two.py::test_old"]

    tpwtester.makepyfile(test_two=TWO)
    result = tpwtester.runpytest("--tpw-update-missing", *FAST)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["1 measurement(s) written to *sim-x1.json"])
    after = stored_sessions(path_of(tpwtester))
    assert after["test_two.py::test_old"] == before["test_two.py::test_old"]
    assert len(after["test_two.py::test_new"]) == 1

    # nothing missing any more: the file is not even rewritten
    file_bytes = path_of(tpwtester).read_bytes()
    result = tpwtester.runpytest("--tpw-update-missing", *FAST)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["0 measurement(s) written to *sim-x1.json"])
    assert path_of(tpwtester).read_bytes() == file_bytes


INTERRUPTED = (
    BUSY
    + """
def test_a_finished(tpw):
    tpw(work, tokens=per_us)

def test_b_interrupted(tpw):
    calls = []

    def interruptible():
        calls.append(1)
        if os.path.exists("interrupt.flag") and len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a measured window
        return work()

    tpw(interruptible, tokens=per_us)

def test_c_never_reached(tpw):
    tpw(work, tokens=per_us)
"""
)

A, B, C = (
    f"test_int.py::{name}"
    for name in ("test_a_finished", "test_b_interrupted", "test_c_never_reached")
)


def run_interrupted(pytester: pytest.Pytester) -> pytest.RunResult:
    (pytester.path / "interrupt.flag").write_text("", encoding="utf-8")
    result = pytester.runpytest_subprocess("--tpw-update", *FAST)
    (pytester.path / "interrupt.flag").unlink()
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "1 measurement(s) written to *sim-x1.json (interrupted: only the measurements that "
            "finished; the rest untouched)"
        ]
    )
    return result


def test_interrupted_update_writes_what_finished(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_int=INTERRUPTED)
    run_interrupted(tpwtester)
    path = path_of(tpwtester)
    loaded = baseline.load(path, "sim-x1")  # valid, complete JSON
    assert loaded is not None
    assert list(loaded.measurements) == [A]
    assert len(loaded.sessions(A)) == 1 and len(loaded.sessions(A)[0].samples) == 3
    assert os.listdir(path.parent) == ["sim-x1.json"]  # no temp file left behind


def test_interrupted_update_leaves_the_rest_untouched(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_int=INTERRUPTED)
    tpwtester.runpytest("--tpw-update", *FAST).assert_outcomes(passed=3)
    before = stored_sessions(path_of(tpwtester))
    assert sorted(before) == [A, B, C]
    run_interrupted(tpwtester)
    after = stored_sessions(path_of(tpwtester))
    assert sorted(after) == [A, B, C]
    # --tpw-update accepts the new level: A's history is this session alone
    assert len(after[A]) == 1 and after[A][0] != before[A][0]
    assert after[B] == before[B]
    assert after[C] == before[C]


# -- other hardware, strict mode --------------------------------------------------------------


def other_hardware_file(pytester: pytest.Pytester, node: str) -> Path:
    other = BaselineFile(
        "other-x1",
        {"models": ["other"]},
        {
            node: [
                StoredSession(
                    date="2025-01-01T00:00:00+00:00",
                    commit=None,
                    software={},
                    sensor="nvml",
                    provenance="measured",
                    samples=[(24, 2.0, 0.01), (24, 2.1, 0.01)],
                )
            ]
        },
    )
    path = path_of(pytester, key="other-x1")
    baseline.write(path, other)
    return path


def test_baseline_for_other_hardware_is_not_compared(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_hw=ONE)
    other = other_hardware_file(tpwtester, "test_hw.py::test_gen")
    other_bytes = other.read_bytes()
    result = tpwtester.runpytest("--tpw", *FAST)
    result.assert_outcomes(passed=1)
    assert verdict(result, "test_hw.py::test_gen") == "NO_BASELINE"
    result.stdout.fnmatch_lines(
        ["no baseline for sim-x1; baselines exist for other-x1 (not compared)"]
    )
    # recording here writes this hardware's file and leaves the other one alone
    tpwtester.runpytest("--tpw-update", *FAST).assert_outcomes(passed=1)
    assert path_of(tpwtester).is_file()
    assert other.read_bytes() == other_bytes


def test_strict_fails_on_other_hardware(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_hw=ONE)
    other_hardware_file(tpwtester, "test_hw.py::test_gen")
    result = tpwtester.runpytest("--tpw", "--tpw-strict", *FAST)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "pytest-tpw: test_hw.py::test_gen: hardware mismatch under --tpw-strict: this machine "
            "is sim-x1, the baselines are for other-x1*"
        ]
    )


def test_strict_fails_without_a_baseline(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_strict=ONE)
    result = tpwtester.runpytest("--tpw", "--tpw-strict", *FAST)
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "pytest-tpw: test_strict.py::test_gen: no baseline under --tpw-strict; record one "
            "with pytest --tpw --tpw-update-missing 'test_strict.py::test_gen'"
        ]
    )
    # once recorded (20 rounds: a 3-round baseline is too short to call UNCHANGED reliably),
    # strict mode passes
    tpwtester.runpytest("--tpw-update-missing").assert_outcomes(passed=1)
    tpwtester.runpytest("--tpw", "--tpw-strict").assert_outcomes(passed=1)


def test_baseline_dir_option(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_dir=ONE)
    result = tpwtester.runpytest("--tpw-update", "--tpw-baseline-dir", "perf")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["1 measurement(s) written to *perf*sim-x1.json"])
    assert path_of(tpwtester, "perf").is_file()
    assert not (tpwtester.path / ".tpw").exists()
    assert list(stored_sessions(path_of(tpwtester, "perf"))) == ["test_dir.py::test_gen"]
    # read back from there
    result = tpwtester.runpytest("--tpw", "--tpw-baseline-dir", "perf")
    result.assert_outcomes(passed=1)
    assert verdict(result, "test_dir.py::test_gen") == "UNCHANGED"
    # and not from the default folder
    result = tpwtester.runpytest("--tpw")
    assert verdict(result, "test_dir.py::test_gen") == "NO_BASELINE"
