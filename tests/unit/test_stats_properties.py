"""Property-based tests of the verdict engine (hypothesis), through judge_suite as the judge
calls it: one test, one stored session."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as hs

from pytest_tpw.judging.decide import judge_suite
from pytest_tpw.judging.model import StoredRun, SuiteParams, TestInput
from pytest_tpw.judging.prior import suite_prior
from pytest_tpw.stats import Comparison, Verdict

SETTINGS = settings(max_examples=100, deadline=None)
P = SuiteParams()

samples = hs.lists(
    hs.floats(min_value=1.0, max_value=1000.0, allow_nan=False, allow_infinity=False),
    min_size=2,
    max_size=25,
)


def judged(baseline: list[float], candidate: list[float]) -> Comparison:
    """One test judged by the engine against one stored session."""
    stored = {"t": [StoredRun("s1", baseline)]}
    prior = suite_prior(stored, P)
    decision = judge_suite([TestInput("t", stored["t"], candidate)], prior, P)
    return decision.comparisons["t"]


@SETTINGS
@given(x=samples)
def test_identical_samples_never_regressed(x: list[float]) -> None:
    r = judged(x, x)
    assert r.verdict is not Verdict.REGRESSED
    assert r.verdict is not Verdict.MINOR_REGRESSION
    assert math.isclose(r.ratio, 1.0, rel_tol=1e-12) or math.isnan(r.ratio)


@SETTINGS
@given(x=samples, y=samples, k=hs.integers(min_value=-10, max_value=10))
def test_scaling_both_sides_changes_no_ratio(x: list[float], y: list[float], k: int) -> None:
    c = 2.0**k * 1.2345
    a = judged(x, y)
    b = judged([c * v for v in x], [c * v for v in y])
    assert math.isclose(b.ratio, a.ratio, rel_tol=1e-9) or (
        math.isnan(a.ratio) and math.isnan(b.ratio)
    )
    assert b.verdict is a.verdict or abs(math.log(b.ratio)) < 1e-6


@SETTINGS
@given(
    seed=hs.integers(min_value=0, max_value=2**32 - 1),
    level=hs.floats(min_value=1.0, max_value=500.0),
)
def test_strong_drop_is_regressed(seed: int, level: float) -> None:
    rng = np.random.default_rng(seed)
    base = list(level * np.exp(rng.normal(0.0, 0.01, 20)))
    cand = list(0.8 * level * np.exp(rng.normal(0.0, 0.01, 20)))
    r = judged(base, cand)
    assert r.verdict is Verdict.REGRESSED
    assert 0.75 < r.ratio < 0.85


@SETTINGS
@given(x=samples, y=samples)
def test_swapping_sides_mirrors_the_ratio(x: list[float], y: list[float]) -> None:
    a = judged(x, y)
    b = judged(y, x)
    if not (math.isnan(a.ratio) or math.isnan(b.ratio)):
        assert math.isclose(a.ratio * b.ratio, 1.0, rel_tol=1e-9)
    # a regression one way is never a regression the other way
    assert not (a.verdict is Verdict.REGRESSED and b.verdict is Verdict.REGRESSED)
