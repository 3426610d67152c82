"""Property-based tests of the verdict engine (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as hs

from pytest_tpw.stats import Comparison, Params, Verdict, compare

SETTINGS = settings(max_examples=100, deadline=None)
THRESHOLDS = [math.log(0.95), math.log(0.99), math.log(1.01)]

samples = hs.lists(
    hs.floats(min_value=1.0, max_value=1000.0, allow_nan=False, allow_infinity=False),
    min_size=2,
    max_size=25,
)


def _near_threshold(c: Comparison) -> bool:
    """A bound within 1e-9 of a classification threshold: rounding may flip the verdict."""
    bounds = [math.log(b) for b in (c.ci_low, c.ci_high) if b is not None]
    return any(abs(b - t) < 1e-9 for b in bounds for t in THRESHOLDS)


@SETTINGS
@given(x=samples, sigma_b=hs.sampled_from([None, 0.0, 0.01]))
def test_identical_samples_never_regressed(x: list[float], sigma_b: float | None) -> None:
    r = compare([x], x, sigma_b=sigma_b)
    assert r.verdict is not Verdict.REGRESSED
    assert r.verdict is not Verdict.MINOR_REGRESSION
    assert r.ratio == 1.0


@SETTINGS
@given(x=samples, y=samples, k=hs.integers(min_value=-10, max_value=10))
def test_scaling_both_sides_changes_nothing(x: list[float], y: list[float], k: int) -> None:
    c = 2.0**k * 1.2345
    a = compare([x], y)
    b = compare([[c * v for v in x]], [c * v for v in y])
    assume(not _near_threshold(a))
    assert b.verdict is a.verdict
    assert math.isclose(b.ratio, a.ratio, rel_tol=1e-9)
    for u, v in ((a.ci_low, b.ci_low), (a.ci_high, b.ci_high)):
        assert (u is None) == (v is None)
        if u is not None and v is not None:
            assert math.isclose(u, v, rel_tol=1e-9)


@SETTINGS
@given(
    seed=hs.integers(min_value=0, max_value=2**32 - 1),
    level=hs.floats(min_value=1.0, max_value=500.0),
    sessions=hs.integers(min_value=1, max_value=4),
)
def test_strong_drop_is_regressed(seed: int, level: float, sessions: int) -> None:
    rng = np.random.default_rng(seed)
    base = [list(level * np.exp(rng.normal(0.0, 0.01, 20))) for _ in range(sessions)]
    cand = list(0.8 * level * np.exp(rng.normal(0.0, 0.01, 20)))
    r = compare(base, cand, Params())
    assert r.verdict is Verdict.REGRESSED
    assert 0.75 < r.ratio < 0.85


@SETTINGS
@given(x=samples, y=samples)
def test_swapping_sides_mirrors_the_ratio(x: list[float], y: list[float]) -> None:
    a = compare([x], y)
    b = compare([y], x)
    assert math.isclose(a.ratio * b.ratio, 1.0, rel_tol=1e-9)
    assert math.isclose(a.df, b.df, rel_tol=1e-9) or (math.isnan(a.df) and math.isnan(b.df))
    # with alpha = alpha_equiv the interval is symmetric, so it mirrors too
    if a.ci_low is not None and b.ci_high is not None and a.ci_high is not None:
        assert b.ci_low is not None
        assert math.isclose(a.ci_low * b.ci_high, 1.0, rel_tol=1e-9)
        assert math.isclose(a.ci_high * b.ci_low, 1.0, rel_tol=1e-9)
    # a regression one way is never a regression the other way
    assert not (a.verdict is Verdict.REGRESSED and b.verdict is Verdict.REGRESSED)
