"""Canaries end to end: run first, their drift divided out of the rest (docs/verdicts.md, 3)."""

from __future__ import annotations

import json
import math

import pytest

from tests.inner_code import BUSY_WORK

pytestmark = pytest.mark.filterwarnings(
    "always::pytest_tpw.warning_types.TpwMeasurementWarning")



# the canary is LAST in the file; each test logs when it starts. ~2 ms of busy work per call,
# one token per microsecond it really took (CPU contention cannot pass for a change)
SUITE = BUSY_WORK + """

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
        if line.startswith("test_can.py::") and " PASSED" not in line and \
                " FAILED" not in line:
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


def test_suite_wide_shift_is_divided_out(tpwtester: pytest.Pytester) -> None:
    recorded(tpwtester)
    result = tpwtester.runpytest("--tpw", "-v", *SHIFT, "--tpw-json", "out.json")
    assert order(tpwtester)[0] == "test_canary"
    found = verdicts(result)
    assert {node: found[node] for node in OTHERS} == {node: "UNCHANGED" for node in OTHERS}
    for node in OTHERS:
        result.stdout.fnmatch_lines([f"{node} PASSED*"])
    # the canary's drift is the environment's: reported, never its own test's failure
    result.stdout.fnmatch_lines([f"{CANARY} PASSED*"])
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([f"{CANARY}: canary drift -*%*the environment shifted*"])
    result.stdout.fnmatch_lines([
        "canary shift: -*% from 1 canary measurement(s), divided out of the other ratios"])
    shown = next(line for line in result.outlines if line.startswith("canary shift: "))
    shift_pct = float(shown.split()[2].rstrip("%"))
    assert shift_pct == pytest.approx(100 * (300 / 330 - 1), abs=2.0)

    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    canary = doc["measurements"][CANARY]["comparison"]
    assert canary["shift"] == 0.0  # its own ratio is the shift, not corrected by it
    assert canary["ratio"] == pytest.approx(300 / 330, abs=0.02)
    for node in OTHERS:
        c = doc["measurements"][node]["comparison"]
        assert c["shift"] == pytest.approx(math.log(canary["ratio"]))
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
