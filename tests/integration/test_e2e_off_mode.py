"""Without ``--tpw`` the fixture runs the work once, measures nothing, reports nothing."""

from __future__ import annotations

import pytest


def test_call_form_calls_once_and_returns_the_result(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_off="""
        calls = []

        def work(a, b=0):
            calls.append((a, b))
            return a + b

        def test_call(tpw):
            out = tpw(work, 2, b=3, tokens=lambda r: r)
            assert out == 5
            assert calls == [(2, 3)]
            assert tpw.result is None
        """
    )
    result = tpwtester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*tokens per joule*")
    result.stdout.no_fnmatch_line("tpw: sensor*")


def test_loop_form_yields_exactly_one_window(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_off="""
        def test_loop(tpw):
            windows = 0
            for w in tpw.rounds():
                with w:
                    w.add_tokens(3)
                windows += 1
            assert windows == 1
            assert tpw.result is None
        """
    )
    result = tpwtester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*tokens per joule*")


def test_json_is_not_written_without_tpw(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_off="""
        def test_call(tpw):
            assert tpw(lambda: "x", tokens=1) == "x"
        """
    )
    result = tpwtester.runpytest("--tpw-json", "out.json")
    result.assert_outcomes(passed=1)
    assert not (tpwtester.path / "out.json").exists()


def test_marker_is_validated_without_tpw(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_typo="""
        import pytest

        @pytest.mark.tpw(roundz=3)
        def test_typo(tpw):
            pass
        """
    )
    result = tpwtester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_typo.py::test_typo*unknown argument 'roundz'*"])
    result.stdout.no_fnmatch_line("*passed*")


def test_a_plain_run_that_uses_the_fixtures_loads_nothing_that_measures(
    tpwtester: pytest.Pytester,
) -> None:
    """Without --tpw, a test that uses tpw (and a marker) imports no statistics, numpy,
    scipy, judge or session: checked in a fresh process, at the end of the test."""
    tpwtester.makepyfile(
        test_light="""
        import sys

        import pytest

        HEAVY = ("numpy", "scipy", "pytest_tpw.judging", "pytest_tpw.run", "pytest_tpw.stats",
                 "pytest_tpw.store", "pytest_tpw.present", "pytest_tpw.hooks.measuring")

        @pytest.mark.tpw(tolerance="3%", rounds=5)
        def test_light(tpw):
            assert tpw(lambda: 1, tokens=1) == 1
            for w in tpw.rounds(name="loop"):
                with w:
                    w.add_tokens(1)
            loaded = sorted(m for m in sys.modules if m.startswith(HEAVY))
            assert loaded == [], loaded
        """
    )
    result = tpwtester.runpytest_subprocess("-p", "no:xdist", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)
