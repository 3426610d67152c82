"""The baseline lifecycle as a user lives it: measure, record, compare, regress, accept.

The sim sensor's joules are ``tpw_sim_watts`` x wall time and its hardware key is ``sim-x1``
whatever the watts, so ``-o tpw_sim_watts=330`` after a baseline at 300 W is a -9 % change
in tokens per joule, 270 W a +11 % one, and 300 W again an A/A rerun.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw import stats
from tests.inner_code import BUSY_WORK

# Sim noise can, rarely, make a comparison doubtful (untrimmed vs trimmed ratios): that is a
# TpwMeasurementWarning, which the outer filterwarnings=error would turn into an inner error.
pytestmark = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")


# ~2 ms of busy work per call (the meter repeats it to fill the sim sensor's 10 ms window),
# counted as one token per microsecond it really took: on a loaded machine a call stretched
# by the scheduler makes more tokens, not fewer tokens per joule, so the sim watts alone move
# tokens per joule (with a fixed count per call, CPU contention alone reads as -30..-70 %)
LIFE = (
    BUSY_WORK
    + """

def test_gen(tpw):
    tpw(work, tokens=per_us)
"""
)

NODE = "test_life.py::test_gen"
REGRESS = ("-o", "tpw_sim_watts=330")
IMPROVE = ("-o", "tpw_sim_watts=270")


def baseline_path(pytester: pytest.Pytester, folder: str = ".tpw") -> Path:
    return pytester.path / folder / "sim-x1.json"


def sessions(pytester: pytest.Pytester, node: str = NODE) -> list[dict[str, Any]]:
    doc = json.loads(baseline_path(pytester).read_text(encoding="utf-8"))
    assert doc["hardware_key"] == "sim-x1"
    result: list[dict[str, Any]] = doc["measurements"][node]["sessions"]
    return result


def junit_case(path: Path, name: str) -> tuple[ET.Element, ET.Element, dict[str, str]]:
    root = ET.parse(path).getroot()
    suite = next(root.iter("testsuite"))
    case = next(c for c in root.iter("testcase") if c.attrib["name"] == name)
    props = {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}
    return suite, case, props


def verdict(result: pytest.RunResult, node: str = NODE) -> str:
    """The verdict column of one measurement's row in the terminal summary (the last
    column, from where its header starts)."""
    header = next(line for line in result.outlines if line.startswith("measurement "))
    rows = [line for line in result.outlines if line.startswith(node + " ")]
    assert len(rows) == 1, result.outlines
    return rows[0][header.index("verdict") :].removesuffix(" (!)")


def test_lifecycle_measure_record_compare_regress_improve(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_life=LIFE)

    # (1) measuring without a baseline: passes, says NO_BASELINE, writes nothing
    result = tpwtester.runpytest("--tpw")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert verdict(result) == "NO_BASELINE"
    assert not baseline_path(tpwtester).exists()
    assert not (tpwtester.path / ".tpw").exists()

    # (2) recording: the file for this hardware is written, and the summary says so
    result = tpwtester.runpytest("--tpw", "--tpw-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["1 measurement(s) written to *.tpw*sim-x1.json"])
    recorded = sessions(tpwtester)
    assert len(recorded) == 1
    assert len(recorded[0]["samples"]) == 20  # 20 rounds when updating
    assert recorded[0]["sensor"] == "sim" and recorded[0]["provenance"] == "simulated"
    file_bytes = baseline_path(tpwtester).read_bytes()

    # (3) an unchanged rerun: UNCHANGED, exit 0, the baseline file is not touched
    result = tpwtester.runpytest("--tpw")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert verdict(result) == "UNCHANGED"
    result.stdout.no_fnmatch_line("*written to*")
    assert baseline_path(tpwtester).read_bytes() == file_bytes

    # (4) 10 % more power for the same work: the test fails, with the numbers and the fix
    result = tpwtester.runpytest(
        "--tpw", *REGRESS, "--junitxml", "junit.xml", "--tpw-json", "out.json"
    )
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert verdict(result) == "REGRESSED"
    out = result.stdout.str()
    found = re.search(
        r"tokens per joule REGRESSED: ([\d.]+) now vs ([\d.]+) in the baseline, "
        r"ratio ([\d.]+) \(-[\d.]+%\), interval ([\d.]+)\.\.([\d.]+)",
        out,
    )
    assert found, out
    now, base, ratio, low, high = (float(x) for x in found.groups())
    expected_base = stats.summarize([t / j for t, j, _ in recorded[0]["samples"]]).estimate
    assert base == pytest.approx(expected_base, rel=1e-3)
    assert now / base == pytest.approx(ratio, rel=2e-3)
    assert ratio == pytest.approx(300 / 330, abs=0.02)
    assert low <= ratio <= high
    assert "tolerance 5%" in out
    result.stdout.fnmatch_lines([f"*accept it: pytest --tpw --tpw-update '{NODE}'"])
    result.stdout.fnmatch_lines([f"FAILED {NODE} - pytest-tpw: *"])
    assert baseline_path(tpwtester).read_bytes() == file_bytes  # a compare never writes

    suite, case, props = junit_case(tpwtester.path / "junit.xml", "test_gen")
    assert suite.attrib["failures"] == "1"
    failure = case.find("failure")
    assert failure is not None and "REGRESSED" in failure.attrib["message"]
    assert "--tpw-update" in failure.attrib["message"]
    assert props["tpw.verdict"] == "REGRESSED"

    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    entry = doc["measurements"][NODE]
    assert entry["verdict"] == "REGRESSED"
    comparison = entry["comparison"]
    assert comparison["verdict"] == "REGRESSED"
    assert comparison["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert comparison["baseline_tokens_per_joule"] == pytest.approx(base, rel=1e-3)
    assert comparison["n_candidate"] == 20 and comparison["n_baseline"] == 20
    assert comparison["p_regression"] < 0.05
    assert comparison["p_adjusted"] is not None
    assert comparison["ci"][0] < comparison["ratio"] < comparison["ci"][1]
    assert len(comparison["failures"]) == 1 and "REGRESSED" in comparison["failures"][0]

    # (5) less power for the same work: passes, IMPROVED, and the summary says how to accept
    result = tpwtester.runpytest("--tpw", *IMPROVE)
    result.assert_outcomes(passed=1)
    assert verdict(result) == "IMPROVED"
    result.stdout.fnmatch_lines(
        [f"{NODE}: improved (+*%); accept the new level with pytest --tpw --tpw-update '{NODE}'"]
    )
    assert baseline_path(tpwtester).read_bytes() == file_bytes


def test_accepting_a_regression_and_history(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_life=LIFE)
    tpwtester.runpytest("--tpw-update").assert_outcomes(passed=1)
    assert len(sessions(tpwtester)) == 1

    # (6) --tpw-update at the regressed level passes (regressions do not fail when updating)
    # and accepts it: the history is this session alone; the old level moves to superseded/
    recorded = sessions(tpwtester)
    result = tpwtester.runpytest("--tpw", "--tpw-update", *REGRESS)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert verdict(result) == "REGRESSED, accepted"  # the verdict, and what the run did
    first = sessions(tpwtester)
    assert len(first) == 1 and first != recorded
    old = json.loads((tpwtester.path / ".tpw" / "superseded" / "sim-x1.json").read_text())
    assert old["measurements"][NODE]["sessions"] == recorded
    # the next run at the new level compares with the new level only
    result = tpwtester.runpytest("--tpw", *REGRESS)
    result.assert_outcomes(passed=1)
    assert verdict(result) == "UNCHANGED"

    # (7) --tpw-record adds sessions at the same level (to learn between-session noise);
    # --tpw-history 2 keeps the last two, dropping the oldest
    result = tpwtester.runpytest("--tpw", "--tpw-record", "--tpw-history", "2", *REGRESS)
    result.assert_outcomes(passed=1)
    two = sessions(tpwtester)
    assert len(two) == 2 and two[0] == first[0]
    result = tpwtester.runpytest("--tpw", "--tpw-record", "--tpw-history", "2", *REGRESS)
    result.assert_outcomes(passed=1)
    kept = sessions(tpwtester)
    assert len(kept) == 2
    assert kept[0] == two[1]
    assert kept[1] not in (two[0], two[1])


def pooled_values(session: dict[str, Any]) -> list[float]:
    return [t / j for t, j, _ in session["samples"]]


BUDGETS = (
    BUSY_WORK
    + """

@pytest.mark.tpw(min_tokens_per_joule=1e9, rounds=3)
def test_too_hungry(tpw):
    tpw(work, tokens=per_us)

@pytest.mark.tpw(max_watts=1000, rounds=3)
def test_within_power(tpw):
    tpw(work, tokens=per_us)

@pytest.mark.tpw(max_watts=200, rounds=3)
def test_over_power(tpw):
    tpw(work, tokens=per_us)
"""
)


@pytest.mark.parametrize("flags", [(), ("--tpw-update",)], ids=["compare", "update"])
def test_budgets_fail_even_when_updating(
    tpwtester: pytest.Pytester, flags: tuple[str, ...]
) -> None:
    tpwtester.makepyfile(test_budget=BUDGETS)
    result = tpwtester.runpytest("--tpw", *flags, "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1, failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["FAILED test_budget.py::test_too_hungry - *", "FAILED test_budget.py::test_over_power - *"]
    )
    result.stdout.fnmatch_lines(
        [
            "pytest-tpw: test_budget.py::test_too_hungry: * tokens/J (interval *) is below the "
            "minimum 1e+09 tokens/J set by "
            "@pytest.mark.tpw(min_tokens_per_joule=1e+09)"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "pytest-tpw: test_budget.py::test_over_power: * W is above the maximum 200 W set by "
            "@pytest.mark.tpw(max_watts=200)"
        ]
    )
    result.stdout.no_fnmatch_line("*test_within_power*FAILED*")
    result.stdout.no_fnmatch_line("FAILED test_budget.py::test_within_power*")
    _, case, _ = junit_case(tpwtester.path / "junit.xml", "test_within_power")
    assert case.find("failure") is None
    _, case, _ = junit_case(tpwtester.path / "junit.xml", "test_too_hungry")
    assert case.find("failure") is not None


def test_how_many_superseded_sessions_are_kept_is_a_setting(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_life=LIFE)
    old = tpwtester.path / ".tpw" / "superseded" / "sim-x1.json"
    for _ in range(3):
        tpwtester.runpytest("--tpw-update", "--tpw-rounds", "3", "--tpw-superseded", "1")
    doc = json.loads(old.read_text(encoding="utf-8"))
    assert len(doc["measurements"][NODE]["sessions"]) == 1  # the newest superseded only
    old.unlink()
    tpwtester.runpytest("--tpw-update", "--tpw-rounds", "3", "--tpw-superseded", "0")
    assert not old.exists()
