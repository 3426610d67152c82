"""Unit tests of the verdict engine in pytest_tpw.stats (hand-computed and degenerate cases)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from pytest_tpw.stats import (
    VERDICT_CODES,
    Comparison,
    Params,
    Verdict,
    apply_fdr,
    canary_shift,
    classify_bounds,
    compare,
    environment_shifted,
    estimate_sigma_b,
    fdr_adjust,
    next_look,
    sequential_decision,
    trimmed_mean_and_se,
    trimmed_stats,
    tukey_outliers,
    welch_df,
)

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
    # p = T_4((-.10 - log .99) / se) = T_4(-7.7898) ~ 7.3e-4.
    b = tpj([0.0, 0.01, 0.02, 0.03, 0.04])
    c = tpj([-0.10, -0.09, -0.08, -0.07, -0.06])
    r = compare([b], c)
    d = 4 * 1e-4 / 6
    se = math.sqrt(2 * d)
    t95 = 2.131846786326649
    assert r.verdict is Verdict.REGRESSED
    assert r.df == pytest.approx(4.0)
    assert r.se_log == pytest.approx(se)
    assert r.ratio == pytest.approx(math.exp(-0.10))
    assert math.log(r.ci_high or 0) == pytest.approx(-0.10 + t95 * se)
    assert math.log(r.ci_low or 0) == pytest.approx(-0.10 - t95 * se)
    assert r.p_regression == pytest.approx(st.t.cdf((-0.10 - LOG99) / se, 4))
    assert r.p_regression < 1e-3
    assert r.sigma_b == 0.0 and r.sigma_b_source == "none"


def test_hand_computed_minor_regression() -> None:
    # Same shape with steps of .001: d = 4 * 1e-6 / 6 = 6.667e-7, se = 0.0011547, df = 4;
    # half-width t(0.95, 4) * se = 0.0024617; est = -.03:
    # U = -0.027538 < -0.010050 but L = -0.032462 > -0.051293 -> MINOR_REGRESSION.
    b = tpj([-0.002, -0.001, 0.0, 0.001, 0.002])
    c = tpj([-0.032, -0.031, -0.030, -0.029, -0.028])
    r = compare([b], c)
    assert r.verdict is Verdict.MINOR_REGRESSION
    assert math.log(r.ci_high or 0) == pytest.approx(-0.03 + 0.0024617, abs=1e-6)
    assert math.log(r.ci_low or 0) == pytest.approx(-0.03 - 0.0024617, abs=1e-6)


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


def test_welch_df_limits() -> None:
    assert float(welch_df(0.0, 0.0, 5, 5)) == math.inf
    assert float(welch_df(0.0, 2e-4, 10, 6)) == pytest.approx(5.0)  # one side constant: h_c - 1
    assert float(welch_df(1e-4, 1e-4, 4, 4)) == pytest.approx(6.0)


# --- cross-check with scipy -------------------------------------------------------------------


def test_interval_matches_scipy_yuen_when_sigma_b_zero() -> None:
    rng = np.random.default_rng(42)
    b = 50 * np.exp(rng.normal(0, 0.02, 17))
    c = 48 * np.exp(rng.normal(0, 0.03, 11))
    r = compare([list(b)], list(c), sigma_b=0.0)
    res = st.ttest_ind(np.log(c), np.log(b), equal_var=False, trim=0.2)
    ci = res.confidence_interval(confidence_level=0.90)
    assert math.log(r.ci_low or 0) == pytest.approx(float(ci.low), abs=1e-12)
    assert math.log(r.ci_high or 0) == pytest.approx(float(ci.high), abs=1e-12)
    assert r.df == pytest.approx(float(res.df), rel=1e-12)
    # p_regression is the one-sided Yuen p of H0: log r >= log .99 (shift the candidate by it)
    res_m = st.ttest_ind(
        np.log(c) - LOG99, np.log(b), equal_var=False, trim=0.2, alternative="less"
    )
    assert r.p_regression == pytest.approx(float(res_m.pvalue), rel=1e-10)


# --- between-session variance -----------------------------------------------------------------


def test_sigma_b_widens_interval_monotonically() -> None:
    rng = np.random.default_rng(1)
    b = list(50 * np.exp(rng.normal(0, 0.01, 20)))
    c = list(49 * np.exp(rng.normal(0, 0.01, 20)))
    widths = []
    for sb in (0.0, 0.002, 0.005, 0.01, 0.02):
        r = compare([b], c, sigma_b=sb)
        assert r.ci_low is not None and r.ci_high is not None
        widths.append(math.log(r.ci_high) - math.log(r.ci_low))
        assert r.ratio == pytest.approx(49 / 50, rel=0.02)
        assert r.df == pytest.approx(compare([b], c, sigma_b=0.0).df)  # df ignores sigma_b
    assert all(w1 < w2 for w1, w2 in itertools.pairwise(widths))
    # variance adds 2 sigma_b^2
    r0, r1 = compare([b], c, sigma_b=0.0), compare([b], c, sigma_b=0.01)
    assert r1.se_log**2 == pytest.approx(r0.se_log**2 + 2 * 0.01**2)


def test_sigma_b_estimator_hand_computed() -> None:
    # 3 sessions with the 5-sample shape of the hand case (d_s = 6.6667e-5 each) and session
    # trimmed means .02, .04, .06: var(means, ddof 1) = 4e-4; sigma_b^2 = 4e-4 - 6.6667e-5
    # = 3.3333e-4 -> sigma_b = 0.0182574.
    shape = [0.0, 0.01, 0.02, 0.03, 0.04]
    sessions = [tpj([v + off for v in shape]) for off in (0.0, 0.02, 0.04)]
    logs = [np.log(s) for s in sessions]
    assert estimate_sigma_b(logs) == pytest.approx(math.sqrt(4e-4 - 4e-4 / 6))
    r = compare(sessions, tpj(shape))
    assert r.sigma_b_source == "estimated"
    assert r.n_sessions == 3 and r.n_baseline == 15
    assert r.sigma_b == pytest.approx(math.sqrt(4e-4 - 4e-4 / 6))
    same = compare(sessions, tpj(shape), sigma_b=r.sigma_b)
    assert same.ci_low == pytest.approx(r.ci_low) and same.ci_high == pytest.approx(r.ci_high)


def test_sigma_b_floored_at_zero_and_needs_sessions() -> None:
    shape = [0.0, 0.01, 0.02, 0.03, 0.04]
    # identical sessions: var(means) = 0 < within part -> 0
    assert estimate_sigma_b([np.log(tpj(shape))] * 3) == 0.0
    assert estimate_sigma_b([np.log(tpj(shape))]) is None
    # a session of 1 sample cannot contribute (h < 2)
    assert estimate_sigma_b([np.log(tpj(shape)), np.log(tpj([0.5]))]) is None
    r = compare([tpj(shape)], tpj(shape))
    assert r.sigma_b == 0.0 and r.sigma_b_source == "none"
    p3 = Params(sigma_b_min_sessions=3)
    assert compare([tpj(shape)] * 2, tpj(shape), p3).sigma_b_source == "none"


# --- degenerate inputs ------------------------------------------------------------------------


def test_both_sides_constant_compares_point_estimates() -> None:
    r = compare([[50.0] * 10], [45.0] * 10)
    assert r.verdict is Verdict.REGRESSED
    assert r.ratio == pytest.approx(0.9)
    assert r.ci_low == r.ci_high == r.ratio
    assert r.p_regression == 0.0
    assert r.why is not None and "zero spread" in r.why
    same = compare([[50.0] * 10], [50.0] * 10)
    assert same.verdict is Verdict.UNCHANGED and same.p_regression == 1.0
    up = compare([[50.0] * 10], [55.0] * 10)
    assert up.verdict is Verdict.IMPROVED


def test_constant_sides_with_sigma_b_get_a_normal_interval() -> None:
    r = compare([[50.0] * 10], [49.0] * 10, sigma_b=0.01)
    assert r.why is None
    assert r.df == math.inf
    z = st.norm.ppf(0.95)
    assert math.log(r.ci_high or 0) == pytest.approx(math.log(0.98) + z * math.sqrt(2) * 0.01)


def test_one_side_constant_is_fine() -> None:
    r = compare([[50.0] * 10], tpj([-0.1, -0.09, -0.08, -0.07, -0.06]))
    assert r.why is None
    assert r.df == pytest.approx(2.0)  # h_c - 1
    assert r.verdict is Verdict.REGRESSED


@pytest.mark.parametrize("cand", [[47.0], []])
def test_too_few_candidate_samples(cand: list[float]) -> None:
    r = compare([[50.0, 51.0, 49.0, 50.5, 49.5]], cand)
    assert r.verdict is Verdict.INCONCLUSIVE
    assert r.ci_low is None and r.ci_high is None
    assert r.p_regression == 1.0
    assert r.why is not None and ("after trimming" in r.why or "no candidate" in r.why)


def test_too_few_baseline_samples() -> None:
    r = compare([[50.0]], [50.0, 51.0, 49.0])
    assert r.verdict is Verdict.INCONCLUSIVE
    assert r.why is not None and "baseline has 1 sample" in r.why
    assert r.ratio == pytest.approx(math.exp(np.mean(np.log([50.0, 51.0, 49.0]))) / 50.0)


@pytest.mark.parametrize("baseline", [[], [[]], [[], []]])
def test_no_baseline(baseline: list[list[float]]) -> None:
    r = compare(baseline, [50.0, 51.0])
    assert r.verdict is Verdict.NO_BASELINE
    assert r.why is not None and "no baseline" in r.why


@pytest.mark.parametrize("bad", [[50.0, 0.0], [50.0, -1.0], [50.0, math.nan], [math.inf]])
def test_invalid_samples_raise(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        compare([[50.0, 51.0]], bad)
    with pytest.raises(ValueError, match="finite and positive"):
        compare([bad], [50.0, 51.0])


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha_equiv": 0.6}, {"sigma_b": -0.1}, {"shift_se": -1.0}],
)
def test_invalid_options_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        compare([[50.0, 51.0]], [50.0, 51.0], **kwargs)  # type: ignore[arg-type]


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
        {"sigma_b_min_sessions": 1},
    ],
)
def test_params_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Params(**kwargs)  # type: ignore[arg-type]


def test_params_defaults() -> None:
    p = Params()
    assert (p.tolerance, p.noise_floor, p.confidence, p.trim) == (0.05, 0.01, 0.90, 0.2)
    assert p.looks == (5, 10, 15, 20)
    assert p.alpha == pytest.approx(0.05)
    assert Verdict.REGRESSED == "REGRESSED" and str(Verdict.UNCHANGED) == "UNCHANGED"


# --- outliers and the untrimmed check ---------------------------------------------------------


def test_tukey_outliers() -> None:
    x = np.log(np.array([50.0] * 5 + [50.5] * 5 + [49.5] * 5 + [35.0]))
    assert tukey_outliers(x) == 1
    assert tukey_outliers(np.log(np.array([50.0, 35.0, 70.0]))) == 0  # fewer than 4 values


def test_untrimmed_regression_warns() -> None:
    # 4 of 20 candidate rounds throttled by -30 %: trimming (g = 4) drops exactly them, so
    # the trimmed ratio is unchanged; the untrimmed log mean falls by 0.2 * log(0.7) = -7 %.
    base = tpj([(-1) ** i * 0.002 * (i % 5) for i in range(20)])
    cand = tpj([(-1) ** i * 0.002 * (i % 5) for i in range(16)] + [math.log(0.7)] * 4)
    r = compare([base], cand)
    assert r.verdict is Verdict.UNCHANGED
    assert r.untrimmed_verdict is Verdict.REGRESSED
    assert r.untrimmed_ratio == pytest.approx(math.exp(0.2 * math.log(0.7)), rel=2e-3)
    assert r.tail_regression
    assert r.outliers == 4 and r.outliers_baseline == 0
    assert any("untrimmed" in w for w in r.warnings)
    clean = compare([base], base)
    assert not clean.tail_regression and clean.warnings == ()


# --- sequential looks -------------------------------------------------------------------------


def test_next_look() -> None:
    assert next_look(0) == 5
    assert next_look(4) == 5
    assert next_look(5) == 10
    assert next_look(7) == 10
    assert next_look(19) == 20
    assert next_look(20) is None
    assert next_look(3, (3, 6)) == 6


def test_sequential_stops_early_only_when_fine() -> None:
    rng = np.random.default_rng(3)
    base = list(50 * np.exp(rng.normal(0, 0.01, 20)))
    fine = list(50 * np.exp(rng.normal(0, 0.005, 20)))
    bad = list(40 * np.exp(rng.normal(0, 0.01, 20)))
    p = Params()
    stop, cmp = sequential_decision([base], fine[:10], p, 1, 4)
    assert stop and cmp.stopped_early and cmp.verdict in (Verdict.UNCHANGED, Verdict.IMPROVED)
    assert cmp.alpha == pytest.approx(0.05) and cmp.alpha_equiv == pytest.approx(0.0125)
    # a gross regression is not declared at an interim look
    stop, cmp = sequential_decision([base], bad[:5], p, 0, 4)
    assert not stop and cmp.provisional and cmp.verdict is Verdict.REGRESSED
    # ... only at the last one
    stop, cmp = sequential_decision([base], bad, p, 3, 4)
    assert stop and not cmp.provisional and not cmp.stopped_early
    assert cmp.verdict is Verdict.REGRESSED
    with pytest.raises(ValueError):
        sequential_decision([base], bad, p, 4, 4)


# --- suite level ------------------------------------------------------------------------------


def _cmp(verdict: Verdict, p: float, **kw: object) -> Comparison:
    return Comparison(
        verdict=verdict,
        ratio=0.9,
        ci_low=0.85,
        ci_high=0.95,
        p_regression=p,
        n_baseline=20,
        n_candidate=20,
        n_sessions=1,
        sigma_b=0.0,
        sigma_b_source="none",
        df=30.0,
        se_log=0.01,
        alpha=0.05,
        alpha_equiv=0.0125,
        **kw,  # type: ignore[arg-type]
    )


def test_fdr_adjust_simple() -> None:
    # BH with m = 4: sorted p .001 .01 .03 .5 against k q / m = .0125 .025 .0375 .05
    assert fdr_adjust([0.01, 0.5, 0.001, 0.03], 0.05) == [True, False, True, True]
    assert fdr_adjust([], 0.05) == []
    with pytest.raises(ValueError):
        fdr_adjust([1.5], 0.05)


def test_apply_fdr_demotes_weak_regressions() -> None:
    strong = _cmp(Verdict.REGRESSED, 1e-6)
    weak = _cmp(Verdict.REGRESSED, 0.04)
    fine = [_cmp(Verdict.UNCHANGED, 0.9) for _ in range(8)]
    early = _cmp(Verdict.UNCHANGED, 0.001, stopped_early=True)  # enters with p = 1
    nob = _cmp(Verdict.NO_BASELINE, math.nan)
    out = apply_fdr([strong, weak, *fine, early, nob], 0.05)
    assert out[0].verdict is Verdict.REGRESSED
    # m = 11 entering; weak: rank 2, adjusted = min over ranks >= 2 of p m / k = .04 * 11 / 2
    assert out[1].verdict is Verdict.INCONCLUSIVE
    assert out[1].p_adjusted == pytest.approx(0.04 * 11 / 2)
    assert out[1].why is not None and "Benjamini-Hochberg" in out[1].why
    assert out[-2].p_adjusted == pytest.approx(1.0)
    assert out[-1] is nob and out[-1].p_adjusted is None
    assert all(o.verdict is Verdict.UNCHANGED for o in out[2:10])
    # alone, the weak one survives
    assert apply_fdr([weak], 0.05)[0].verdict is Verdict.REGRESSED


# --- canaries ---------------------------------------------------------------------------------


def test_canary_shift_divides_out() -> None:
    assert canary_shift([0.01, -0.02, 0.03]) == pytest.approx(0.01)
    assert canary_shift([]) == 0.0
    rng = np.random.default_rng(5)
    base = list(50 * np.exp(rng.normal(0, 0.01, 20)))
    cand = list(46 * np.exp(rng.normal(0, 0.01, 20)))
    shift = math.log(0.92)
    shifted = compare([base], cand, shift=shift)
    manual = compare([base], [v / math.exp(shift) for v in cand])
    assert shifted.ratio == pytest.approx(manual.ratio, rel=1e-12)
    assert shifted.ci_low == pytest.approx(manual.ci_low, rel=1e-12)
    assert shifted.verdict is manual.verdict
    assert shifted.shift == shift
    wide = compare([base], cand, shift=shift, shift_se=0.01)
    assert wide.se_log**2 == pytest.approx(shifted.se_log**2 + 1e-4)
    assert environment_shifted(shift) and not environment_shifted(0.005)
