"""``tpw.result``: the last measurement's summary, for tests that assert on it directly."""

from __future__ import annotations

import pytest

RESULT_CHECKS = """
    r = tpw.result
    assert r is not None
    assert r.tokens_per_joule > 0
    assert r.joules_per_token == pytest.approx(1 / r.tokens_per_joule, rel=1e-9)
    assert r.watts == pytest.approx(200, rel=0.05)
    assert r.tokens_per_second > 0
    assert r.n == 4
    low, high = r.ci
    assert low <= r.tokens_per_joule <= high
    assert r.verdict == "NO_BASELINE"
    assert len(r.samples) == r.n
    assert all(s > 0 for s in r.samples)
"""


def test_result_fields(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_res=f"""
import time
import pytest

def work():
    time.sleep(0.002)
    return "tok tok"

def test_call_form(tpw):
    assert tpw.result is None
    tpw(work, tokens=lambda out: len(out.split()))
{RESULT_CHECKS}

def test_loop_form(tpw):
    for w in tpw.rounds():
        with w:
            time.sleep(0.011)
            w.add_tokens(2)
{RESULT_CHECKS}
"""
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "4", "-o", "tpw_sim_watts=200")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["sensor: sim (simulated device, 200 W constant*"])


def test_result_is_the_last_measurement(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_last="""
        def test_two(tpw):
            tpw(lambda: None, tokens=1, name="first")
            first = tpw.result
            tpw(lambda: None, tokens=1000, name="second")
            second = tpw.result
            assert first is not None and second is not None
            assert first.n == second.n == 3
            # same work, 1000 times the tokens per call: the result is the second one
            assert second.tokens_per_joule > 100 * first.tokens_per_joule
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(passed=1)
