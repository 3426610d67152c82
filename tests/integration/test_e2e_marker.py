"""``@pytest.mark.tpw(...)``: validated at collection, overrides the session settings."""

from __future__ import annotations

import pytest

BAD_MARKERS = """
import pytest

@pytest.mark.tpw(roundz=3)
def test_unknown(tpw):
    pass

@pytest.mark.tpw(3)
def test_positional(tpw):
    pass

@pytest.mark.tpw(rounds="3")
def test_rounds_str(tpw):
    pass

@pytest.mark.tpw(devices=0)
def test_devices_int(tpw):
    pass

@pytest.mark.tpw(canary="yes")
def test_canary_str(tpw):
    pass

@pytest.mark.tpw(max_watts=-1)
def test_max_watts_negative(tpw):
    pass

@pytest.mark.tpw(rounds=3)
def test_fine(tpw):
    pass
"""


def test_bad_markers_are_usage_errors_listed_together(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_bad=BAD_MARKERS)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*pytest-tpw: invalid marker(s):*",
            "*test_bad.py::test_unknown*unknown argument 'roundz'*allowed:*rounds*canary*",
            "*test_bad.py::test_positional*keyword arguments only*positional (3,)*allowed:*",
            "*test_bad.py::test_rounds_str*rounds='3'*expected*integer*",
            "*test_bad.py::test_devices_int*devices=0*expected*GPU indices*",
            "*test_bad.py::test_canary_str*canary='yes'*expected*True or False*",
            "*test_bad.py::test_max_watts_negative*max_watts=-1*must be a positive*",
        ]
    )
    assert "test_fine" not in result.stderr.str()
    result.stdout.no_fnmatch_line("*passed*")


BELOW_FLOOR = """
import pytest

@pytest.mark.tpw(tolerance="1%")
def test_at_the_floor(tpw):
    tpw(lambda: 5, tokens=1)

pytestmark = []

class TestGroup:
    pytestmark = [pytest.mark.tpw(tolerance=0.005)]

    def test_below_it(self, tpw):
        tpw(lambda: 5, tokens=1)
"""


@pytest.mark.parametrize("measured", [True, False], ids=["--tpw", "plain"])
def test_a_marker_tolerance_at_or_below_the_noise_floor_is_refused_at_collection(
    tpwtester: pytest.Pytester, measured: bool
) -> None:
    """Before anything is measured, with or without --tpw, naming the test and the argument
    (the floor is the flag's or ini key's, as the run would use it)."""
    tpwtester.makepyfile(test_floor=BELOW_FLOOR)
    result = tpwtester.runpytest(*(["--tpw"] if measured else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*pytest-tpw: invalid marker(s):*",
            "*test_floor.py::test_at_the_floor: @pytest.mark.tpw(tolerance=0.01): the "
            "tolerance (1.0%) must be above the noise floor (1.0%, --tpw-noise-floor)*",
            "*test_floor.py::TestGroup::test_below_it: @pytest.mark.tpw(tolerance=0.005)*",
        ]
    )
    result.stdout.no_fnmatch_line("*passed*")  # nothing ran, nothing measured
    # a lower floor (here from the ini file) lets both through
    tpwtester.makeini("[pytest]\ntpw_noise_floor = 0.2%\n")
    result = tpwtester.runpytest(*(["--tpw", "--tpw-sensor", "sim"] if measured else []))
    result.assert_outcomes(passed=2)


def test_every_spec_argument_is_accepted(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_good="""
        import pytest

        @pytest.mark.tpw(min_tokens_per_joule=40, max_joules_per_token=0.05, max_watts=650,
                         min_tokens_per_second=900, tolerance="3%", rounds=10, warmup=2,
                         devices=[0], canary=False)
        def test_all(tpw):
            assert tpw(lambda: 5, tokens=1) == 5
        """
    )
    result = tpwtester.runpytest()
    result.assert_outcomes(passed=1)


def test_marker_rounds_beat_the_flag(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_override="""
        import pytest

        @pytest.mark.tpw(rounds=3)
        def test_marked(tpw):
            tpw(lambda: None, tokens=1)
            assert tpw.result.n == 3

        def test_unmarked(tpw):
            tpw(lambda: None, tokens=1)
            assert tpw.result.n == 5
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "5")
    result.assert_outcomes(passed=2)


def test_marker_on_the_class_applies_to_its_tests(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_cls="""
        import pytest

        @pytest.mark.tpw(rounds=2)
        class TestGen:
            def test_a(self, tpw):
                tpw(lambda: None, tokens=1)
                assert tpw.result.n == 2
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "4")
    result.assert_outcomes(passed=1)


def test_marker_warmup_zero(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_warm="""
        import time
        import pytest

        @pytest.mark.tpw(warmup=0)
        def test_no_warmup(tpw):
            windows = 0
            for w in tpw.rounds():
                with w:
                    time.sleep(0.011)
                    w.add_tokens(1)
                windows += 1
            assert windows == 3
            assert tpw.result.n == 3

        def test_session_warmup(tpw):
            windows = 0
            for w in tpw.rounds():
                with w:
                    time.sleep(0.011)
                    w.add_tokens(1)
                windows += 1
            assert windows == 2 + 3
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-warmup", "2")
    result.assert_outcomes(passed=2)


def test_markers_on_a_class_or_module_are_validated_too(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_mod="""
        import pytest
        pytestmark = pytest.mark.tpw(roundz=3)

        def test_plain():
            pass
        """,
        test_cls="""
        import pytest

        @pytest.mark.tpw(tolerance="lots")
        class TestGroup:
            def test_a(self):
                pass
        """,
    )
    result = tpwtester.runpytest()  # without --tpw too: the plain run catches them
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*invalid marker(s)*",
            "*test_cls.py::TestGroup::test_a*tolerance='lots'*",
            "*test_mod.py::test_plain*unknown argument 'roundz'*",
        ]
    )
