"""The statistics primitives in pytest_tpw.stats, hand-computed and against scipy; and the
engine's own kernel (``decide_arrays``) on one stored session, against scipy's Yuen test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pytest_tpw.stats import (
    VERDICT_CODES,
    Params,
    Verdict,
    bh_adjusted,
    classify_bounds,
    look_level,
    positive_logs,
    summarize,
    trimmed_mean_and_se,
    trimmed_stats,
    tukey_outliers,
)
from tests.one_session import kernel

LOG99 = math.log(0.99)
LOG95 = math.log(0.95)


def tpj(logs: list[float], level: float = 50.0) -> list[float]:
    """tokens/J samples whose logs are log(level) + logs."""
    return [level * math.exp(v) for v in logs]


# --- hand-computed cases ----------------------------------------------------------------------


def test_hand_computed_regression() -> None:
    # logs (minus log 50): baseline 0, .01, .02, .03, .04; candidate -.10 ... -.06.
    # n = 5, g = floor(0.2 * 5) = 1, h = 3 per side.
    # trimmed means: mean(.01, .02, .03) = .02 and mean(-.09, -.08, -.07) = -.08 -> est = -.10.
    # winsorised baseline .01 .01 .02 .03 .03: deviations -.01 -.01 0 .01 .01, SS = 4e-4,
    # var (ddof 1) = 1e-4; d = (n-1) var / (h (h-1)) = 4 * 1e-4 / 6 = 6.6667e-5; same for the
    # candidate. se = sqrt(2 d) = 0.0115470; df = (2d)^2 / (2 d^2 / 2) = 4; t(0.95, 4) = 2.131847.
    # U = -.10 + 2.131847 * 0.0115470 = -0.075384 < log .99 = -0.010050
    # L = -.10 - 0.024616 = -0.124616 <= log .95 = -0.051293  -> REGRESSED.
    b = tpj([0.0, 0.01, 0.02, 0.03, 0.04])
    c = tpj([-0.10, -0.09, -0.08, -0.07, -0.06])
    verdict, ratio, low, high, p, df = kernel(b, c)
    se = math.sqrt(2 * 4 * 1e-4 / 6)
    t95 = 2.131846786326649
    assert verdict is Verdict.REGRESSED
    assert df == pytest.approx(4.0)
    assert ratio == pytest.approx(math.exp(-0.10))
    assert math.log(high) == pytest.approx(-0.10 + t95 * se)
    assert math.log(low) == pytest.approx(-0.10 - t95 * se)
    assert p == pytest.approx(st.t.cdf((-0.10 - LOG99) / se, 4))
    assert p < 1e-3


def test_hand_computed_minor_regression() -> None:
    # Same shape with steps of .001: d = 4 * 1e-6 / 6 = 6.667e-7, se = 0.0011547, df = 4;
    # half-width t(0.95, 4) * se = 0.0024617; est = -.03:
    # U = -0.027538 < -0.010050 but L = -0.032462 > -0.051293 -> MINOR_REGRESSION.
    b = tpj([-0.002, -0.001, 0.0, 0.001, 0.002])
    c = tpj([-0.032, -0.031, -0.030, -0.029, -0.028])
    verdict, _, low, high, _, _ = kernel(b, c)
    assert verdict is Verdict.MINOR_REGRESSION
    assert math.log(high) == pytest.approx(-0.03 + 0.0024617, abs=1e-6)
    assert math.log(low) == pytest.approx(-0.03 - 0.0024617, abs=1e-6)


def test_sigma_b_widens_the_interval_monotonically() -> None:
    rng = np.random.default_rng(1)
    b = list(50 * np.exp(rng.normal(0, 0.01, 20)))
    c = list(49 * np.exp(rng.normal(0, 0.01, 20)))
    widths = [kernel(b, c, sigma_b)[3] / kernel(b, c, sigma_b)[2] for sigma_b in (0, 0.005, 0.02)]
    assert widths == sorted(widths) and widths[0] < widths[-1]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (-0.10, -0.02, Verdict.REGRESSED),  # U < log .99, L <= log .95
        (LOG95, -0.02, Verdict.REGRESSED),  # L exactly at log .95 counts as reaching it
        (-0.04, -0.02, Verdict.MINOR_REGRESSION),
        (0.02, 0.05, Verdict.IMPROVED),  # L > log 1.01 = 0.00995
        (-0.03, 0.03, Verdict.UNCHANGED),  # L > log .95, U >= log .99
        (-0.08, 0.03, Verdict.INCONCLUSIVE),
        (math.nan, math.nan, Verdict.INCONCLUSIVE),
    ],
)
def test_classify_bounds_table(low: float, high: float, expected: Verdict) -> None:
    assert VERDICT_CODES[int(classify_bounds(low, high, 0.05, 0.01))] is expected


def test_trimmed_stats_matches_trimmed_mean_and_se() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 13))
    m, d, h = trimmed_stats(x)
    for i in range(7):
        tm, se, df = trimmed_mean_and_se(x[i])
        assert m[i] == pytest.approx(tm, rel=1e-12)
        assert d[i] == pytest.approx(se**2, rel=1e-12)
        assert h - 1 == df


# --- cross-check with scipy -------------------------------------------------------------------


def test_the_kernel_on_one_session_is_scipys_yuen_test() -> None:
    rng = np.random.default_rng(42)
    b = 50 * np.exp(rng.normal(0, 0.02, 17))
    c = 48 * np.exp(rng.normal(0, 0.03, 11))
    _, _, low, high, p, df = kernel(list(b), list(c))
    res = st.ttest_ind(np.log(c), np.log(b), equal_var=False, trim=0.2)
    ci = res.confidence_interval(confidence_level=0.90)
    assert math.log(low) == pytest.approx(float(ci.low), abs=1e-12)
    assert math.log(high) == pytest.approx(float(ci.high), abs=1e-12)
    assert df == pytest.approx(float(res.df), rel=1e-9)
    # p_regression is the one-sided Yuen p of H0: log r >= log .99 (shift the candidate by it)
    res_m = st.ttest_ind(
        np.log(c) - LOG99, np.log(b), equal_var=False, trim=0.2, alternative="less"
    )
    assert p == pytest.approx(float(res_m.pvalue), rel=1e-9)


def test_summarize_is_the_trimmed_geometric_mean_with_yuens_interval() -> None:
    x = [50.0, 51.0, 49.0, 50.5, 49.5, 80.0]  # one outlier, trimmed away
    s = summarize(x, 0.90)
    logs = np.log(x)
    tm, se, df = trimmed_mean_and_se(logs)
    q = st.t.ppf(0.95, df)
    assert s.n == 6 and s.estimate == pytest.approx(math.exp(tm))
    assert s.ci_low == pytest.approx(math.exp(tm - q * se))
    assert s.ci_high == pytest.approx(math.exp(tm + q * se))
    assert summarize([5.0]).why_no_ci == "1 sample(s): too few for an interval"
    assert summarize([5.0, 5.0, 5.0]).why_no_ci == "all samples equal"


@pytest.mark.parametrize("bad", [[50.0, 0.0], [50.0, -1.0], [50.0, math.nan], [math.inf]])
def test_invalid_samples_raise(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        summarize(bad)
    with pytest.raises(ValueError, match="finite and positive"):
        positive_logs(bad, "t.py::x:")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tolerance": 0.0},
        {"noise_floor": 0.06},
        {"confidence": 1.0},
        {"trim": 0.5},
        {"looks": (10, 5)},
        {"looks": ()},
        {"fdr_q": 0.0},
    ],
)
def test_params_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Params(**kwargs)  # type: ignore[arg-type]


def test_params_defaults_are_the_flags() -> None:
    p = Params()
    assert (p.tolerance, p.noise_floor, p.confidence, p.fdr_q) == (0.05, 0.01, 0.90, 0.05)
    assert (p.trim, p.looks) == (0.2, (5, 10, 15, 20))
    assert p.alpha == pytest.approx(0.05)
    assert Verdict.REGRESSED == "REGRESSED" and str(Verdict.UNCHANGED) == "UNCHANGED"


def test_tukey_outliers() -> None:
    x = np.log(np.array([50.0] * 5 + [50.5] * 5 + [49.5] * 5 + [35.0]))
    assert tukey_outliers(x) == 1
    assert tukey_outliers(np.log(np.array([50.0, 35.0, 70.0]))) == 0  # fewer than 4 values


# --- repeated looks and many comparisons ------------------------------------------------------


def test_look_level_is_pococks_and_between_alpha_and_bonferroni() -> None:
    one = look_level(0.05, (20,))
    four = look_level(0.05, (5, 10, 15, 20))
    assert one == 0.05
    assert 0.05 / 4 < four < 0.05
    assert four == pytest.approx(0.0193, abs=5e-4)  # Pocock's constant for 4 looks


def test_bh_adjusted_matches_scipy_and_refuses_bad_p() -> None:
    ps = [0.001, 0.04, 0.03, 0.2, 0.5]
    assert bh_adjusted(ps) == pytest.approx(list(st.false_discovery_control(ps, method="bh")))
    assert bh_adjusted([]) == []
    with pytest.raises(ValueError):
        bh_adjusted([0.5, 1.5])
