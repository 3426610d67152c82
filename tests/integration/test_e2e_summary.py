"""What a user reads of a measured run: the cost at the start, the table first, the limits."""

from __future__ import annotations

import json

import pytest

from tests.inner_code import BUSY_WORK

TWO = (
    BUSY_WORK
    + """

def test_a(tpw):
    tpw(work, tokens=per_us)


def test_b(tpw):
    tpw(work, tokens=per_us)
"""
)


def test_a_run_says_its_cost_at_the_start(tpwtester: pytest.Pytester) -> None:
    skipped = """
        import pytest

        @pytest.mark.skip(reason="not here")
        def test_never(tpw):
            pass

        @pytest.mark.skipif(True, reason="not here either")
        def test_not_either(tpw):
            pass
        """
    tpwtester.makepyfile(test_two=TWO, test_skipped=skipped)
    first = tpwtester.runpytest("--tpw", "--tpw-rounds", "4")
    first.assert_outcomes(passed=2, skipped=2)  # tests marked skip are not counted
    # no stored window yet: a lower bound, at the sim sensor's 10 ms minimum window
    first.stdout.fnmatch_lines(
        [
            "collected 4 items",
            "tpw: cost: 2 measured test(s), 10 windows with warm-up, at least * of windows "
            "(no window lengths stored yet: each at least the 0.01 s minimum*",
        ]
    )
    tpwtester.runpytest("--tpw-update", "--tpw-rounds", "4").assert_outcomes(passed=2, skipped=2)
    # stored windows now: their lengths; adaptive looks against the baseline: 6 to 21 each
    again = tpwtester.runpytest("--tpw")
    again.assert_outcomes(passed=2, skipped=2)
    again.stdout.fnmatch_lines(
        [
            "tpw: cost: 2 measured test(s), 12-42 windows with warm-up, about * of windows "
            "(lengths from the baselines; setup not counted*"
        ]
    )
    # a plain run measures nothing and says nothing about cost
    plain = tpwtester.runpytest()
    assert not any(line.startswith("tpw: cost") for line in plain.outlines)


def test_the_table_comes_before_failures_and_warnings(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_mix="""
        import pytest

        @pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")
        def test_quick(tpw):
            for w in tpw.rounds():
                with w:
                    w.add_tokens(1)

        def test_broken():
            assert 1 == 2
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(passed=1, failed=1, warnings=1)
    lines = result.outlines

    def heading(text: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith("=") and text in line)

    table, failures, warnings = (
        heading(f" {text} ") for text in ("tokens per joule", "FAILURES", "warnings summary")
    )
    assert table < failures < warnings
    # the row is marked, and the summary counts what the warnings summary details
    assert any(line.startswith("test_mix.py::test_quick ") and "(!)" in line for line in lines)
    result.stdout.fnmatch_lines(
        [
            "warnings: 1 measurement(s) marked (!), ? of their 3 windows with a warning; one "
            "line per measurement and kind in the warnings summary"
        ]
    )
    # one warning line for the measurement, not one per window
    assert sum("TpwMeasurementWarning: test_mix.py" in line for line in lines) == 1


def test_a_gate_that_cannot_catch_its_tolerance_says_so(tpwtester: pytest.Pytester) -> None:
    """Noisy windows (5 %), five of them: the interval is far too wide for a 5 % drop. The
    summary names both tests with the drop each can catch and what would lower it; the JSON
    has the same figures."""
    tpwtester.makepyfile(test_two=TWO)
    noisy = ("-o", "tpw_sim_noise=0.05", "--tpw-rounds", "5")
    tpwtester.runpytest("--tpw-update", *noisy).assert_outcomes(passed=2)
    result = tpwtester.runpytest("--tpw", *noisy, "--tpw-json", "out.json")
    result.assert_outcomes(passed=2)
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    drops = {}
    for key in ("test_two.py::test_a", "test_two.py::test_b"):
        comparison = doc["measurements"][key]["comparison"]
        assert comparison["detectable_drop"] > comparison["tolerance"] == 0.05
        assert comparison["limited_by"] in ("windows", "runs", "prior")
        assert isinstance(comparison["too_noisy"], bool)
        drops[key] = comparison["detectable_drop"]
    result.stdout.fnmatch_lines(
        [
            "detectable drop: 2 of 2 compared test(s) cannot catch a drop of their tolerance "
            "(5%) now; *",
            "  *:",
            f"    test_two.py::test_?: {max(drops.values()):.0%}",
        ]
    )
