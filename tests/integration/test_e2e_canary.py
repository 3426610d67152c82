"""Canaries end to end: run first, and in a small suite they give the run-wide shift that is
divided out of every comparison and reported once (docs/verdicts.md, 3)."""

from __future__ import annotations

import json
import math

import pytest

from tests.inner_code import BUSY_WORK

pytestmark = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")


# the canary is LAST in the file; each test logs when it starts. ~2 ms of busy work per call,
# one token per microsecond it really took (CPU contention cannot pass for a change)
SUITE = (
    BUSY_WORK
    + """

def started(name):
    with open("order.log", "a") as f:
        f.write(name + "\\n")

def test_one(tpw):
    started("test_one")
    tpw(work, tokens=per_us)

def test_two(tpw):
    started("test_two")
    tpw(work, tokens=per_us)

def test_three(tpw):
    started("test_three")
    tpw(work, tokens=per_us)

@pytest.mark.tpw(canary=True)
def test_canary(tpw):
    started("test_canary")
    tpw(work, tokens=per_us)
"""
)

FILE_ORDER = ["test_one", "test_two", "test_three", "test_canary"]
OTHERS = [f"test_can.py::{name}" for name in FILE_ORDER[:3]]
CANARY = "test_can.py::test_canary"
SHIFT = ("-o", "tpw_sim_watts=330")  # every test, canary included: -9 % tokens per joule


def order(pytester: pytest.Pytester) -> list[str]:
    log = pytester.path / "order.log"
    names = log.read_text(encoding="utf-8").split()
    log.unlink()
    return names


def verdicts(result: pytest.RunResult) -> dict[str, str]:
    out = {}
    for line in result.outlines:
        if line.startswith("test_can.py::") and " PASSED" not in line and " FAILED" not in line:
            out[line.split()[0]] = line.removesuffix(" (!)").split()[-1]
    return out


def recorded(pytester: pytest.Pytester, source: str = SUITE) -> None:
    pytester.makepyfile(test_can=source)
    result = pytester.runpytest("--tpw-update", "--tpw-rounds", "10")
    result.assert_outcomes(passed=4)
    assert order(pytester) == FILE_ORDER  # nothing to compare yet: file order


def test_canary_runs_first_when_comparing(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_can=SUITE)
    tpwtester.runpytest("--tpw", "--tpw-rounds", "3").assert_outcomes(passed=4)
    assert order(tpwtester) == FILE_ORDER  # no baseline: nothing to correct, file order
    recorded(tpwtester)
    result = tpwtester.runpytest("--tpw", "-v")
    result.assert_outcomes(passed=4)
    assert order(tpwtester) == ["test_canary", *FILE_ORDER[:3]]
    result.stdout.fnmatch_lines([f"{CANARY} PASSED*", *(f"{node} PASSED*" for node in OTHERS)])
    assert "REGRESSED" not in verdicts(result).values()


def test_suite_wide_shift_is_one_run_wide_finding(tpwtester: pytest.Pytester) -> None:
    """A shift shared by every test, canary included, is ONE run-wide finding (estimated from
    the canary in a suite this small), divided out of every comparison; no test fails."""
    recorded(tpwtester)
    result = tpwtester.runpytest("--tpw", "-v", *SHIFT, "--tpw-json", "out.json")
    assert order(tpwtester)[0] == "test_canary"
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK
    found = verdicts(result)
    assert found == {node: "UNCHANGED" for node in [*OTHERS, CANARY]}
    for node in [CANARY, *OTHERS]:
        result.stdout.fnmatch_lines([f"{node} PASSED*"])
    # one line for the run (the stack did not change: an environment anomaly), no per-test
    # "canary drift" note and no separate canary shift line
    run_wide = [line for line in result.outlines if line.startswith("run-wide: ")]
    assert len(run_wide) == 1, run_wide
    assert "ENVIRONMENT_ANOMALY" in run_wide[0] and "rerun" in run_wide[0]
    result.stdout.no_fnmatch_line("*canary drift*")
    result.stdout.no_fnmatch_line("canary shift*")

    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    (finding,) = doc["run_wide"]
    assert finding["verdict"] == "ENVIRONMENT_ANOMALY" and finding["method"] == "canaries"
    assert finding["ratio"] == pytest.approx(300 / 330, abs=0.02)
    assert finding["fails"] is False
    shift = math.log(finding["ratio"])
    for node in [CANARY, *OTHERS]:
        c = doc["measurements"][node]["comparison"]
        assert c["shift"] == pytest.approx(shift, abs=1e-6)  # the same run-wide shift for all
        assert c["ratio"] == pytest.approx(1.0, abs=0.02)  # the shift divided out
        assert c["verdict"] == "UNCHANGED" and not c["failures"]


def test_same_shift_without_a_canary_is_a_regression(tpwtester: pytest.Pytester) -> None:
    no_canary = SUITE.replace("@pytest.mark.tpw(canary=True)", "@pytest.mark.tpw(canary=False)")
    recorded(tpwtester, no_canary)
    result = tpwtester.runpytest("--tpw", *SHIFT)
    result.assert_outcomes(failed=4)
    assert order(tpwtester) == FILE_ORDER
    assert verdicts(result) == {node: "REGRESSED" for node in [*OTHERS, CANARY]}
    result.stdout.no_fnmatch_line("canary shift*")
    # 4 compared tests (< 5) and no canary: no run-wide estimate, so the shared drop is noise
    # that every test carries, and the run-wide line says to declare canaries
    result.stdout.fnmatch_lines(
        ["run-wide: TOO_FEW_TESTS: 4 compared test(s) (< 5) and no canary*declare canaries*"]
    )
