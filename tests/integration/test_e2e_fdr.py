"""Suite-wide false-discovery control, end to end (docs/verdicts.md, 4: across the suite).

A regression fails its own test, once, with its final outcome: tests whose verdict waits
for Benjamini-Hochberg are held and reported when the session has every p-value.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from statistics import NormalDist

import pytest

from tests.inner_code import BUSY_WORK

pytestmark = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")


# ~2 ms of busy work per call, one token per microsecond it really took (so CPU contention
# cannot pass for a change). Eleven steady tests and one whose energy per token grows by
# 1/0.7 once "slow.flag" exists: at constant (sim) power its tokens per joule drop by 30 %.
SUITE = (
    BUSY_WORK
    + """

@pytest.mark.parametrize("i", range(11))
def test_steady(tpw, i):
    tpw(work, tokens=per_us)

def test_slow(tpw):
    # the same work yields 30 % fewer tokens once the flag exists: more energy per token
    share = 0.7 if os.path.exists("slow.flag") else 1.0
    tpw(work, tokens=lambda seconds: max(1, round(seconds * 1e6 * share)))
"""
)

OUTCOME = re.compile(r"^(test_fdr\.py::\S+) (PASSED|FAILED|ERROR|SKIPPED)")


def outcomes(result: pytest.RunResult) -> list[tuple[str, str]]:
    """Every ``-v`` outcome line, in the order printed."""
    return [(m[1], m[2]) for line in result.outlines if (m := OUTCOME.match(line))]


def verdicts(result: pytest.RunResult) -> dict[str, str]:
    """The verdict column of the terminal summary's table, per measurement."""
    out = {}
    for line in result.outlines:
        first = line.split(" ", 1)[0]
        if (
            first.startswith("test_fdr.py::")
            and not first.endswith(":")
            and len(line.split()) > 2  # not a test's heading in the warnings summary
            and " PASSED" not in line
            and " FAILED" not in line
        ):
            out[first] = line.removesuffix(" (!)").split()[-1]
    return out


def junit(path: Path) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.parse(path).getroot()
    return next(root.iter("testsuite")), {c.attrib["name"]: c for c in root.iter("testcase")}


def test_one_strong_regression_among_twelve(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_fdr=SUITE)
    tpwtester.runpytest("--tpw-update", "--tpw-rounds", "10").assert_outcomes(passed=12)
    (tpwtester.path / "slow.flag").write_text("", encoding="utf-8")
    result = tpwtester.runpytest("--tpw", "-v", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=11, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED

    # each test reported exactly once, with its final outcome
    seen = outcomes(result)
    assert len(seen) == 12, seen
    assert len({node for node, _ in seen}) == 12
    assert [node for node, outcome in seen if outcome == "FAILED"] == ["test_fdr.py::test_slow"]
    assert all(outcome == "PASSED" for node, outcome in seen if node != "test_fdr.py::test_slow")

    ratio = re.search(
        r"test_fdr\.py::test_slow: tokens per joule REGRESSED: .* ratio "
        r"([\d.]+) ",
        result.stdout.str(),
    )
    assert ratio, result.stdout.str()
    assert float(ratio[1]) == pytest.approx(0.7, abs=0.03)
    # it may stop at any look: an interim REGRESSED whose K * p is below q / m survives
    # Benjamini-Hochberg whatever the other tests say
    result.stdout.fnmatch_lines(
        ["  samples: * now, 10 in 1 baseline session(s); p = *, BH-adjusted * at q = 0.05"]
    )
    found = verdicts(result)
    assert found["test_fdr.py::test_slow"] == "REGRESSED"
    assert all(v != "REGRESSED" for k, v in found.items() if k != "test_fdr.py::test_slow")
    assert len(found) == 12

    suite, cases = junit(tpwtester.path / "junit.xml")
    assert suite.attrib["failures"] == "1" and suite.attrib["tests"] == "12"
    failed = [name for name, case in cases.items() if case.find("failure") is not None]
    assert failed == ["test_slow"]
    props = {p.attrib["name"]: p.attrib["value"] for p in cases["test_slow"].iter("property")}
    assert props["tpw.verdict"] == "REGRESSED"


AA = (
    BUSY_WORK
    + """

@pytest.mark.parametrize("i", range(10))
def test_same(tpw, i):
    tpw(work, tokens=per_us)
"""
)


def test_aa_reruns_raise_no_false_alarm(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_fdr=AA)
    tpwtester.runpytest("--tpw-update", "--tpw-rounds", "10").assert_outcomes(passed=10)
    for _ in range(3):
        result = tpwtester.runpytest("--tpw", "-v")
        result.assert_outcomes(passed=10)
        assert result.ret == pytest.ExitCode.OK
        found = verdicts(result)
        assert len(found) == 10
        assert not {"REGRESSED", "NO_BASELINE"} & set(found.values()), found


# A Benjamini-Hochberg demotion needs a p-value between q/m and q: too narrow a band for random
# noise. This sensor is the sim sensor with its noise made a fixed cycle: every test takes
# 1 warm-up + 12 windows, so window k of every test, in every run, draws the same factor, and
# each measurement's spread (3.5 %) is the same. The 12 factors are normal quantiles in an
# alternating low/high order: no trend, so the engine finds no autocorrelation to widen the
# intervals with (sorted, they would read as a strong one). Tokens per
# window is a fixed count (loop form) and each window's joules a fixed amount times the
# cycle: nothing depends on time, so the same run gives the same p-values on any machine.
Z = [round(NormalDist().inv_cdf((i - 0.5) / 12), 6) for i in range(1, 13)]
ALTERNATING = [Z[i // 2] if i % 2 == 0 else Z[11 - i // 2] for i in range(12)]

CYCLE_SENSOR = f"""
import itertools

from pytest_tpw.sensors.base import WindowEnergy
from pytest_tpw.sensors.sim import SimSensor

FACTORS = [1.0] + [1.0 + 0.035 * z for z in {ALTERNATING!r}]


class CycleSim(SimSensor):
    name = "cycle-sim"

    def open(self):
        super().open()
        self._cycle = itertools.cycle(FACTORS)

    def min_window_s(self):
        return 1e-9  # the windows below do no timed work

    def end(self, token):
        # a fixed energy per window times the cycle: nothing here depends on time, so a
        # loaded machine cannot move a test's tokens per joule
        joules = self.options.sim_watts * 0.01 * next(self._cycle)
        return WindowEnergy({{"sim:0": joules}})


def pytest_tpw_sensor_factories():
    return {{"cycle-sim": CycleSim}}
"""

# 18 steady tests, a strong (-30 %) and a marginal change: 20 comparisons, one look each
# (fixed rounds). The marginal one (4.2 % fewer tokens per window) measures a ratio of 0.9589
# relative to the run-wide shift; on its own it is REGRESSED with a one-sided p of 0.0250 (the
# same in every run: nothing depends on time; read from --tpw-json): inside the band
# (2 q / 20, q) = (0.005, 0.05) where Benjamini-Hochberg over 20 demotes it (its adjusted p is
# 10 p) and a single comparison keeps it, with a factor of 2 to spare each side.
BH_SUITE = """
import os
import pytest


def measure(tpw, share_when_changed):
    share = share_when_changed if os.path.exists("changed.flag") else 1.0
    for w in tpw.rounds():
        with w:
            w.add_tokens(round(100_000 * share))

@pytest.mark.parametrize("i", range(18))
def test_steady(tpw, i):
    measure(tpw, 1.0)

def test_strong(tpw):
    measure(tpw, 0.7)

def test_marginal(tpw):
    measure(tpw, 0.958)
"""

CYCLE = ("--tpw-sensor", "cycle-sim", "--tpw-rounds", "12", "--tpw-warmup", "1")


def cycle_recorded(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CYCLE_SENSOR)
    pytester.makepyfile(test_fdr=BH_SUITE)
    pytester.runpytest("--tpw-update", *CYCLE).assert_outcomes(passed=20)
    (pytester.path / "changed.flag").write_text("", encoding="utf-8")


def test_bh_demotes_a_marginal_regression_among_unchanged_tests(tpwtester: pytest.Pytester) -> None:
    cycle_recorded(tpwtester)

    # 20 comparisons: the strong regression survives BH, the marginal one does not
    result = tpwtester.runpytest(
        "--tpw", "-v", *CYCLE, "--junitxml", "junit.xml", "--tpw-json", "out.json"
    )
    result.assert_outcomes(passed=19, failed=1)
    seen = outcomes(result)
    assert len(seen) == 20 and len({node for node, _ in seen}) == 20, seen
    assert [node for node, outcome in seen if outcome == "FAILED"] == ["test_fdr.py::test_strong"]
    found = verdicts(result)
    assert len(found) == 20
    assert found["test_fdr.py::test_strong"] == "REGRESSED"
    assert found["test_fdr.py::test_marginal"] == "INCONCLUSIVE"
    assert "REGRESSED" not in {v for k, v in found.items() if "steady" in k}, found
    result.stdout.fnmatch_lines(
        [
            "test_fdr.py::test_marginal: REGRESSED on its own (p = *) but not after "
            "Benjamini-Hochberg over 20 comparisons (adjusted p = * > q = 0.05)"
        ]
    )
    run_wide = [line for line in result.outlines if line.startswith("run-wide: ")]
    assert len(run_wide) == 1 and run_wide[0].endswith(" FINE"), run_wide
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    marginal = doc["measurements"]["test_fdr.py::test_marginal"]["comparison"]
    assert marginal["verdict"] == "INCONCLUSIVE"
    assert 0.05 * 2 / 20 < marginal["p_regression"] < 0.05
    assert marginal["p_adjusted"] > 0.05
    assert marginal["ratio"] == pytest.approx(0.958, abs=0.012)
    assert not marginal["failures"]
    _, cases = junit(tpwtester.path / "junit.xml")
    assert [n for n, c in cases.items() if c.find("failure") is not None] == ["test_strong"]
    props = {p.attrib["name"]: p.attrib["value"] for p in cases["test_marginal"].iter("property")}
    assert props["tpw.verdict"] == "INCONCLUSIVE"  # the final verdict, not the provisional one

    # the same run at a looser q: the marginal regression is kept, so BH made the difference
    result = tpwtester.runpytest("--tpw", "-v", *CYCLE, "--tpw-fdr", "0.6")
    result.assert_outcomes(passed=18, failed=2)
    found = verdicts(result)
    assert found["test_fdr.py::test_strong"] == "REGRESSED"
    assert found["test_fdr.py::test_marginal"] == "REGRESSED"


def test_regression_that_cannot_survive_fdr_passes_as_inconclusive(
    tpwtester: pytest.Pytester,
) -> None:
    # --tpw-fdr 1e-15: even the -30 % change (p ~ 1e-14, times 20 comparisons) cannot survive
    cycle_recorded(tpwtester)
    result = tpwtester.runpytest(
        "--tpw", "-v", *CYCLE, "--tpw-fdr", "1e-15", "--junitxml", "junit.xml"
    )
    result.assert_outcomes(passed=20)
    assert result.ret == pytest.ExitCode.OK
    seen = outcomes(result)
    assert ("test_fdr.py::test_strong", "PASSED") in seen and len(seen) == 20
    found = verdicts(result)
    assert found["test_fdr.py::test_strong"] == "INCONCLUSIVE"
    assert found["test_fdr.py::test_marginal"] == "INCONCLUSIVE"
    result.stdout.fnmatch_lines(
        [
            "test_fdr.py::test_strong: REGRESSED on its own (p = *) but not after "
            "Benjamini-Hochberg over 20 comparisons (adjusted p = * > q = 1e-15)"
        ]
    )
    _, cases = junit(tpwtester.path / "junit.xml")
    case = cases["test_strong"]
    assert case.find("failure") is None
    props = {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}
    assert props["tpw.verdict"] == "INCONCLUSIVE"
