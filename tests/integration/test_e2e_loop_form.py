"""The loop form: ``for w in tpw.rounds(): with w: ... w.add_tokens(n)``."""

from __future__ import annotations

import json

import pytest

# The outer suite runs with filterwarnings=error, and an in-process inner run inherits the
# outer filters: let the inner run see the plugin's warning as a warning.
show_tpw_warnings = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")

# each window sleeps past the sim sensor's 10 ms minimum, so no short-window warning
SLEEPY_WINDOWS = """
import time

def test_windows(tpw):
    seen = []
    for w in tpw.rounds():
        with w:
            time.sleep(0.011)
            w.add_tokens(5)
        seen.append(w)
    assert len(seen) == 6
    assert tpw.result is not None
    assert tpw.result.n == 4
"""


def test_windows_are_warmup_plus_rounds(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_loop=SLEEPY_WINDOWS)
    result = tpwtester.runpytest(
        "--tpw", "--tpw-warmup", "2", "--tpw-rounds", "4", "--tpw-json", "out.json"
    )
    result.assert_outcomes(passed=1)
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    samples = doc["measurements"]["test_loop.py::test_windows"]["samples"]
    assert len(samples) == 4
    assert all(s["tokens"] == 5 and s["calls"] == 1 for s in samples)


def test_zero_tokens_window_fails_naming_the_test(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_zero="""
        import time

        def test_no_tokens(tpw):
            for w in tpw.rounds():
                with w:
                    time.sleep(0.011)
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_zero.py::test_no_tokens*0 tokens*"])
    result.stdout.no_fnmatch_line("*tokens per joule overall*")


def test_exception_inside_window_propagates(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_raise="""
        import time

        def test_raises(tpw):
            for w in tpw.rounds():
                with w:
                    w.add_tokens(1)
                    raise RuntimeError("broke inside the window")

        def test_after(tpw):
            for w in tpw.rounds():
                with w:
                    time.sleep(0.011)
                    w.add_tokens(1)
            assert tpw.result.n == 3
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: broke inside the window*"])
    # the failed test's measurement is not reported; the next test's is
    result.stdout.no_fnmatch_line("test_raise.py::test_raises *")
    result.stdout.fnmatch_lines(["test_raise.py::test_after *NO_BASELINE*"])


def test_window_not_entered_is_an_error(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_nowith="""
        def test_forgot_with(tpw):
            for w in tpw.rounds():
                w.add_tokens(1)
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*test_nowith.py::test_forgot_with*w.add_tokens() before `with w:`*"]
    )


@show_tpw_warnings
def test_too_short_window_warns(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_short="""
        def test_quick(tpw):
            for w in tpw.rounds():
                with w:
                    w.add_tokens(1)
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "test_short.py::test_quick",
            "*TpwMeasurementWarning: test_short.py::test_quick: ? of 3 windows were shorter "
            "than the sim sensor's*",
        ]
    )
