"""The run-wide finding end to end: a shift shared by every test is one line, not failures.

Nine measured tests (eight steady, one whose energy per token can grow) are recorded in three
sessions (``--tpw-update`` then ``--tpw-record`` twice), so the stored runs have a spread. The
sim sensor's joules are ``tpw_sim_watts`` x wall time: ``-o tpw_sim_watts=330`` after a
baseline at 300 W lowers every test's tokens per joule by 9 % together (a shared shift), and
the tokens are counted per microsecond of busy work (``tests/inner_code.py``), so CPU
contention on a loaded machine does not move tokens per joule. A stack change is simulated
through the recorded fingerprint: the stored sessions' ``software`` entries are edited.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.inner_code import BUSY_WORK

pytestmark = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")

# test_changed makes 30 % fewer tokens from the same work when TPW_CHANGED is set: more
# energy per token at constant (sim) power, that test alone
SUITE = (
    BUSY_WORK
    + """

def test_changed(tpw):
    share = 0.7 if os.environ.get("TPW_CHANGED") else 1.0
    tpw(work, tokens=lambda seconds: max(1, round(seconds * 1e6 * share)))

@pytest.mark.parametrize("i", range(8))
def test_steady(tpw, i):
    tpw(work, tokens=per_us)
"""
)

CHANGED = "test_rw.py::test_changed"
KEYS = {CHANGED, *(f"test_rw.py::test_steady[{i}]" for i in range(8))}
SHARED_DROP = ("-o", "tpw_sim_watts=330")  # every test: 300/330 = -9.1 % tokens per joule
RECORD = ("--tpw-rounds", "10")  # recording: 10 windows a session is plenty here


def baseline_file(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".tpw" / "sim-x1.json"


def recorded(pytester: pytest.Pytester) -> None:
    """Three stored sessions of every test."""
    pytester.makepyfile(test_rw=SUITE)
    pytester.runpytest("--tpw-update", *RECORD).assert_outcomes(passed=9)
    for _ in range(2):
        pytester.runpytest("--tpw-record", *RECORD).assert_outcomes(passed=9)
    doc = json.loads(baseline_file(pytester).read_text(encoding="utf-8"))
    assert set(doc["measurements"]) == KEYS
    assert all(len(m["sessions"]) == 3 for m in doc["measurements"].values())


def run_wide_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("run-wide: ")]


def verdicts(result: pytest.RunResult) -> dict[str, str]:
    """The verdict column of the terminal summary's table, per measurement."""
    out = {}
    for line in result.outlines:
        first = line.split(" ", 1)[0]
        if first in KEYS and " PASSED" not in line and " FAILED" not in line:
            out[first] = line.removesuffix(" (!)").split()[-1]
    return out


def compared(pytester: pytest.Pytester, name: str) -> tuple[dict[str, str], list[str]]:
    """``pytest-tpw compare .tpw/sim-x1.json NAME``, as a user runs it on the run's files:
    its verdict per measurement and its run-wide line."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest_tpw.cli", "compare", str(baseline_file(pytester)), name],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    found = {}
    for line in out.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in KEYS:
            found[cells[0]] = cells[-1]
    return found, [line for line in out.stdout.splitlines() if line.startswith("run-wide: ")]


def run_wide_json(pytester: pytest.Pytester, name: str) -> dict[str, Any]:
    doc = json.loads((pytester.path / name).read_text(encoding="utf-8"))
    findings = doc["run_wide"]
    assert isinstance(findings, list) and len(findings) == 1, findings
    finding: dict[str, Any] = findings[0]
    assert finding["hardware_key"] == "sim-x1"
    return finding


def test_aa_rerun_is_fine_and_one_changed_test_fails_alone(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded(tpwtester)

    # A/A: same watts, same code: nothing fails, the run-wide line says FINE
    result = tpwtester.runpytest("--tpw", "--tpw-json", "aa.json")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.OK
    lines = run_wide_lines(result)
    assert len(lines) == 1 and lines[0].endswith(" FINE"), lines
    found = verdicts(result)
    assert set(found) == KEYS
    assert "REGRESSED" not in found.values(), found
    assert compared(tpwtester, "aa.json") == (found, lines)  # compare judges as the run did
    finding = run_wide_json(tpwtester, "aa.json")
    assert finding["verdict"] == "FINE"
    assert finding["fails"] is False
    assert finding["n_tests"] == 9 and finding["method"] == "robust"
    assert finding["ratio"] == pytest.approx(1.0, abs=0.02)
    assert finding["text"] == lines[0]
    # a loaded machine may rightly find this run's windows noisier than the recorded ones;
    # nothing else can be noted about an A/A run
    assert all("(a busy runner?)" in note for note in finding["notes"]), finding["notes"]

    # a busy runner: every window five times as noisy as stored. Nothing fails, and a note
    # under the run-wide line says why every interval is wide
    result = tpwtester.runpytest("--tpw", "-o", "tpw_sim_noise=0.05", "--tpw-json", "busy.json")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.OK
    lines = run_wide_lines(result)
    assert len(lines) == 1, lines
    note = result.outlines[result.outlines.index(lines[0]) + 1]
    assert note.startswith("  this run's windows vary ") and "(a busy runner?)" in note, note
    assert "REGRESSED" not in verdicts(result).values()
    assert run_wide_json(tpwtester, "busy.json")["notes"] == [note.strip()]

    # one test changed among unchanged ones: it alone fails; the run-wide line stays FINE
    monkeypatch.setenv("TPW_CHANGED", "1")
    result = tpwtester.runpytest("--tpw", "-v", "--tpw-json", "one.json")
    result.assert_outcomes(passed=8, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = {line.split()[1] for line in result.outlines if line.startswith("FAILED ")}
    assert failed == {CHANGED}
    found = verdicts(result)
    assert found[CHANGED] == "REGRESSED"
    assert "REGRESSED" not in {v for k, v in found.items() if k != CHANGED}, found
    ratio = re.search(
        rf"{re.escape(CHANGED)}: tokens per joule REGRESSED: .* ratio ([\d.]+) ",
        result.stdout.str(),
    )
    assert ratio, result.stdout.str()
    assert float(ratio[1]) == pytest.approx(0.7, abs=0.03)
    lines = run_wide_lines(result)
    assert len(lines) == 1 and lines[0].endswith(" FINE"), lines
    assert compared(tpwtester, "one.json") == (found, lines)
    finding = run_wide_json(tpwtester, "one.json")
    assert finding["verdict"] == "FINE"
    assert finding["ratio"] == pytest.approx(1.0, abs=0.02)  # the changed test did not pull it


def test_shared_drop_with_the_stack_unchanged_is_one_environment_anomaly(
    tpwtester: pytest.Pytester,
) -> None:
    recorded(tpwtester)
    result = tpwtester.runpytest("--tpw", "-v", *SHARED_DROP, "--tpw-json", "out.json")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.OK
    found = verdicts(result)
    assert set(found) == KEYS
    assert "REGRESSED" not in found.values(), found
    lines = run_wide_lines(result)
    assert len(lines) == 1, lines
    assert "ENVIRONMENT_ANOMALY" in lines[0] and "rerun" in lines[0]
    assert "stack unchanged" in lines[0]
    result.stdout.no_fnmatch_line("*the run FAILS*")
    # by hand on the same files, the shared drop is the same one finding, and no test fails
    assert compared(tpwtester, "out.json") == (found, lines)
    finding = run_wide_json(tpwtester, "out.json")
    assert finding["verdict"] == "ENVIRONMENT_ANOMALY"
    assert finding["ratio"] == pytest.approx(300 / 330, abs=0.02)
    assert finding["stack_changes"] == []
    assert finding["fails"] is False

    # an environment anomaly is not the code's fault: never a failed run, even when asked
    result = tpwtester.runpytest("--tpw", *SHARED_DROP, "--tpw-fail-stack")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.OK
    lines = run_wide_lines(result)
    assert len(lines) == 1 and "ENVIRONMENT_ANOMALY" in lines[0], lines


def older_torch(pytester: pytest.Pytester) -> None:
    """Pretend every stored session ran on torch 0.0.1: this run's stack differs."""
    path = baseline_file(pytester)
    doc = json.loads(path.read_text(encoding="utf-8"))
    for measurement in doc["measurements"].values():
        for session in measurement["sessions"]:
            session["software"]["torch"] = "0.0.1"
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_shared_drop_with_a_stack_change_is_a_stack_regression(tpwtester: pytest.Pytester) -> None:
    recorded(tpwtester)
    older_torch(tpwtester)

    # reported, not failed, by default
    result = tpwtester.runpytest("--tpw", *SHARED_DROP, "--tpw-json", "out.json")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.OK
    lines = run_wide_lines(result)
    assert len(lines) == 1, lines
    assert "STACK_REGRESSION" in lines[0] and "torch 0.0.1 -> " in lines[0]
    result.stdout.no_fnmatch_line("*the run FAILS*")
    assert compared(tpwtester, "out.json") == (verdicts(result), lines)
    finding = run_wide_json(tpwtester, "out.json")
    assert finding["verdict"] == "STACK_REGRESSION" and finding["fails"] is False
    assert [c.split(" -> ")[0] for c in finding["stack_changes"]] == ["torch 0.0.1"]
    assert finding["ratio"] == pytest.approx(300 / 330, abs=0.02)

    # --tpw-fail-stack: the run fails, no test does, and the summary says why
    result = tpwtester.runpytest(
        "--tpw", *SHARED_DROP, "--tpw-fail-stack", "--tpw-json", "fail.json", "--tpw-report", "r.md"
    )
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(run_wide_lines(result)) == 1
    result.stdout.fnmatch_lines(
        [
            "run-wide: -* STACK_REGRESSION; stack changed: torch 0.0.1 -> *",
            "the run FAILS on the run-wide stack regression (--tpw-strict or --tpw-fail-stack); "
            "no test failed for it",
        ]
    )
    assert run_wide_json(tpwtester, "fail.json")["fails"] is True

    # the Markdown report puts the run-wide finding first, before any table of tests
    report = (tpwtester.path / "r.md").read_text(encoding="utf-8").splitlines()
    sections = [line for line in report if line.startswith("### ")]
    assert sections[0] == "### Run-wide", sections
    first_row = next(i for i, line in enumerate(report) if line.startswith("| "))
    finding_at = next(i for i, line in enumerate(report) if "**STACK_REGRESSION**" in line)
    assert report.index("### Run-wide") < finding_at < first_row
    assert any("torch 0.0.1 -> " in line for line in report[finding_at:first_row])

    # --tpw-strict fails the run the same way (a 20 % tolerance keeps the per-test verdicts
    # far from INCONCLUSIVE, which --tpw-strict would fail on its own)
    result = tpwtester.runpytest("--tpw", *SHARED_DROP, "--tpw-strict", "--tpw-tolerance", "20%")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "run-wide: -* STACK_REGRESSION; stack changed: torch 0.0.1 -> *",
            "the run FAILS on the run-wide stack regression*",
        ]
    )

    # writing baselines accepts the new level: the stack regression does not fail the run
    result = tpwtester.runpytest("--tpw-record", *SHARED_DROP, "--tpw-fail-stack", *RECORD)
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*the run FAILS*")


def test_under_xdist_the_controller_decides_with_the_whole_run(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers: the shared drop is one run-wide finding over all nine tests, whichever
    worker measured them, and the one changed test fails alone, with its final verdict in
    the terminal, the JSON document and the JUnit XML."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # this suite may itself run under xdist
    recorded(tpwtester)
    monkeypatch.setenv("TPW_CHANGED", "1")
    result = tpwtester.runpytest_subprocess(
        "--tpw", "-n", "2", *SHARED_DROP, "--tpw-json", "out.json", "--junitxml", "j.xml"
    )
    result.assert_outcomes(passed=8, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "2 workers [9 items]" in result.stdout.str()
    failed = {line.split()[1] for line in result.outlines if line.startswith("FAILED ")}
    assert failed == {CHANGED}
    result.stdout.fnmatch_lines([f"pytest-tpw: {CHANGED}: tokens per joule REGRESSED: *"])
    assert "decided per test" not in result.stdout.str()
    lines = run_wide_lines(result)
    assert len(lines) == 1 and "ENVIRONMENT_ANOMALY" in lines[0], lines
    finding = run_wide_json(tpwtester, "out.json")
    assert finding["n_tests"] == 9
    assert finding["ratio"] == pytest.approx(300 / 330, abs=0.02)
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    found = {key: entry["verdict"] for key, entry in doc["measurements"].items()}
    assert found[CHANGED] == "REGRESSED"
    assert "REGRESSED" not in {v for k, v in found.items() if k != CHANGED}, found
    assert compared(tpwtester, "out.json") == (found, lines)

    # the JUnit XML, written from the controller's logged reports, carries final verdicts
    import xml.etree.ElementTree as ET

    tree = ET.parse(tpwtester.path / "j.xml")
    junit = {}
    for case in tree.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        nodeid = f"{case.get('file', 'test_rw.py')}::{case.get('name')}"
        junit[case.get("name")] = (props.get("tpw.verdict"), case.find("failure") is not None)
        assert props.get("tpw.measurement"), nodeid
    assert junit["test_changed"] == ("REGRESSED", True)
    assert all(
        verdict != "REGRESSED" and not failure
        for name, (verdict, failure) in junit.items()
        if name != "test_changed"
    ), junit


def test_a_run_of_some_tests_compares_and_learns_from_those_alone(
    tpwtester: pytest.Pytester,
) -> None:
    """A run of part of the suite (-k) reads only its tests' stored sessions: the prior is
    learned from them, the results file says which, and compare, given that file, judges
    as the run did."""
    recorded(tpwtester)
    result = tpwtester.runpytest("--tpw", "-k", "steady", "--tpw-json", "part.json")
    result.assert_outcomes(passed=8, deselected=1)
    doc = json.loads((tpwtester.path / "part.json").read_text(encoding="utf-8"))
    steady = sorted(KEYS - {CHANGED})
    assert doc["prior_keys"] == {"sim-x1": steady}
    found = verdicts(result)
    assert set(found) == set(steady)
    assert compared(tpwtester, "part.json") == (found, run_wide_lines(result))
