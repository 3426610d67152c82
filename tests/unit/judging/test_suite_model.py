"""The two-level verdict engine (run-wide shift + per-test change), pytest_tpw.judging."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import stats as st

from pytest_tpw.judging.decide import judge_suite, look
from pytest_tpw.judging.kernels import (
    ArrayDecision,
    candidate_stats,
    hopeless,
    huber_shift,
    noise_ratio,
    noise_scale,
    run_sigma_b,
)
from pytest_tpw.judging.model import (
    RUN_SPREAD_SOURCE,
    TEST_NOISE_SOURCE,
    TEST_SPREAD_SOURCE,
    RunShift,
    RunVerdict,
    ShiftMethod,
    StoredRun,
    SuiteParams,
    SuitePrior,
    TestInput,
)
from pytest_tpw.judging.prior import per_test_sigma_b2, prior_from_table, suite_prior
from pytest_tpw.judging.session_noise import spread_heterogeneity
from pytest_tpw.judging.shift import change_of, look_shift, running_shift, shift_from_changes
from pytest_tpw.stats import (
    Verdict,
    ar1_df_factor,
    ar1_variance_factor,
    lag1_autocorrelation,
    lag1_expected,
    look_level,
)
from tests.unit.judging.test_session_noise import lognormal_spreads

P = SuiteParams()


def _suite(
    n_tests: int,
    seed: int,
    *,
    sessions: int = 3,
    windows: int = 20,
    cv: float = 0.01,
    factor: float = 1.0,
    changed: dict[int, float] | None = None,
) -> list[TestInput]:
    """Tests with a fixed level each, Gaussian log noise, candidate x factor x change."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_tests):
        level = 50.0 * (1.0 + 0.1 * t)
        runs = [
            StoredRun(f"s{s}", list(level * np.exp(rng.normal(0.0, cv, windows))))
            for s in range(sessions)
        ]
        ch = (changed or {}).get(t, 1.0)
        cand = level * factor * ch * np.exp(rng.normal(0.0, cv, windows))
        out.append(TestInput(f"t{t}", runs, list(cand)))
    return out


def _prior(tests: list[TestInput], params: SuiteParams = P):  # type: ignore[no-untyped-def]
    return suite_prior({t.key: t.baseline for t in tests}, params)


def test_shared_shift_is_a_run_finding_not_per_test_failures() -> None:
    tests = _suite(40, 1, factor=0.95)
    dec = judge_suite(tests, _prior(tests), P)
    assert dec.run_verdict is RunVerdict.BEYOND_LOWER
    assert dec.shift.method is ShiftMethod.ROBUST
    assert dec.run_ratio == pytest.approx(0.95, abs=0.005)
    assert {c.verdict for c in dec.comparisons.values()} == {Verdict.UNCHANGED}


def test_one_changed_test_among_many_is_the_only_regression() -> None:
    tests = _suite(40, 2, changed={7: 0.90})
    dec = judge_suite(tests, _prior(tests), P)
    regressed = [k for k, c in dec.comparisons.items() if c.verdict is Verdict.REGRESSED]
    assert regressed == ["t7"]
    assert dec.comparisons["t7"].ratio == pytest.approx(0.90, abs=0.01)
    assert dec.comparisons["t7"].p_adjusted is not None
    assert dec.run_verdict is RunVerdict.WITHIN_SPREAD


def test_shared_shift_with_one_extra_change_flags_both_levels() -> None:
    tests = _suite(40, 3, factor=0.95, changed={3: 0.90})
    dec = judge_suite(tests, _prior(tests), P)
    assert dec.run_verdict is RunVerdict.BEYOND_LOWER
    regressed = [k for k, c in dec.comparisons.items() if c.verdict is Verdict.REGRESSED]
    assert regressed == ["t3"]


@pytest.mark.parametrize("resolution", [0.0, 1.0 / 18.0])
def test_identical_samples_never_give_p_zero_or_zero_width(resolution: float) -> None:
    runs = [StoredRun("s0", [18.0] * 6)]
    t = TestInput("flat", runs, [18.0] * 6, resolution=resolution)
    prior = suite_prior({"flat": runs}, P)
    dec = judge_suite([t], prior, P)
    c = dec.comparisons["flat"]
    assert c.p_regression > 0.0
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_high > c.ci_low
    assert c.verdict is not Verdict.REGRESSED


def test_quantised_readings_one_step_apart_do_not_regress() -> None:
    # 18 J windows read in 1 J steps: one more step in the candidate is within resolution
    tokens = 900.0
    base = [StoredRun("s0", [tokens / e for e in (18, 18, 19, 18, 18, 18, 19, 18)])]
    cand = [tokens / e for e in (19, 18, 19, 18, 19, 18, 18, 19)]
    t = TestInput("q", base, cand, resolution=1.0 / 18.0)
    dec = judge_suite([t], suite_prior({"q": base}, P), P)
    c = dec.comparisons["q"]
    assert c.p_regression > 0.001
    assert c.verdict is not Verdict.REGRESSED


def test_one_session_baseline_uses_the_documented_priors() -> None:
    tests = _suite(20, 4, sessions=1)
    prior = _prior(tests)
    assert prior.sigma_b == pytest.approx(P.sigma_b_prior)
    assert prior.sigma_b_source == "prior"
    assert prior.sigma_b_df == pytest.approx(P.sigma_b_prior_df)
    assert prior.run_sd == pytest.approx(P.run_sd_prior)
    assert prior.n_sessions == 1


def test_run_shift_table_with_unequal_session_sets_is_recovered() -> None:
    # m = mu_t + R_s exactly, each test missing a different session: R is found exactly
    mu = np.array([0.0, 1.0, 2.0, 3.0])
    r = np.array([0.02, -0.01, -0.01])
    m = mu[:, None] + r[None, :]
    m[0, 2] = np.nan
    m[1, 0] = np.nan
    m[3, 1] = np.nan
    d = np.where(np.isfinite(m), 1e-6, np.nan)
    prior, got = prior_from_table(m, d, P, session_ids=["a", "b", "c"])
    assert got == pytest.approx(r - r.mean(), abs=1e-9)
    assert prior.run_shifts["a"] == pytest.approx(0.02, abs=1e-9)
    # no residual at all: pooled sigma_b^2 is 0, so the prior is shrunk by df 5 (sum S_t - 1)
    df_pool = 1 + 1 + 2 + 1
    expect = P.sigma_b_prior_df * P.sigma_b_prior**2 / (P.sigma_b_prior_df + df_pool)
    assert prior.sigma_b == pytest.approx(math.sqrt(expect))
    assert prior.sigma_b_df == pytest.approx(P.sigma_b_prior_df + df_pool)


def test_pooled_sigma_b_by_hand() -> None:
    # two tests, two sessions each, no run shift: residuals +-e, within variance d
    e, dd = 0.01, 1e-5
    m = np.array([[e, -e], [-e, e]])
    d = np.full((2, 2), dd)
    prior, r = prior_from_table(m, d, SuiteParams(sigma_b_prior_df=1e-9))
    assert r == pytest.approx([0.0, 0.0], abs=1e-12)
    # sum res^2 = 4 e^2, within = 2 x (1/2) x 2 dd, df = 2
    assert prior.sigma_b**2 == pytest.approx((4 * e * e - 2 * dd) / 2, rel=1e-6)


def test_unequal_window_counts_in_stored_runs() -> None:
    rng = np.random.default_rng(5)
    base = {
        f"t{t}": [
            StoredRun("s0", list(40 * np.exp(rng.normal(0, 0.01, 5)))),
            StoredRun("s1", list(40 * np.exp(rng.normal(0, 0.01, 20)))),
            StoredRun("s2", list(40 * np.exp(rng.normal(0, 0.01, 11)))),
        ]
        for t in range(12)
    }
    prior = suite_prior(base, P)
    assert prior.n_sessions == 3
    assert 0.0 < prior.sigma_b < 0.01
    tests = [TestInput(k, v, list(40 * np.exp(rng.normal(0, 0.01, 10)))) for k, v in base.items()]
    dec = judge_suite(tests, prior, P)
    assert all(c.verdict is not Verdict.REGRESSED for c in dec.comparisons.values())


def test_autocorrelated_series_widen_the_standard_error() -> None:
    x = np.log(50.0) + np.random.default_rng(6).normal(0.0, 0.01, 20)
    _, d_iid, _, _, _ = candidate_stats(x, 0.0, 0.0, 0.2)
    _, d_ar, _, _, _ = candidate_stats(x, 0.6, 0.0, 0.2)
    assert float(d_ar) == pytest.approx(float(d_iid) * float(ar1_variance_factor(0.6, 20)))
    assert float(d_ar) > 3.0 * float(d_iid)


def test_ar1_factor_matches_the_finite_sum() -> None:
    for rho in (0.2, 0.6, 0.9):
        for n in (2, 5, 20):
            brute = 1 + 2 * sum((1 - k / n) * rho**k for k in range(1, n))
            assert float(ar1_variance_factor(rho, n)) == pytest.approx(min(brute, n))
    assert float(ar1_variance_factor(-0.3, 10)) == 1.0


def _ar_series(rng: np.random.Generator, rho: float, count: int, n: int) -> np.ndarray:
    e = rng.standard_normal((count, n))
    out = np.empty_like(e)
    out[:, 0] = e[:, 0]
    for i in range(1, n):
        out[:, i] = rho * out[:, i - 1] + math.sqrt(1 - rho * rho) * e[:, i]
    return out


def test_lag1_autocorrelation_is_bias_corrected() -> None:
    rng = np.random.default_rng(7)
    iid, _ = lag1_autocorrelation(list(rng.standard_normal((300, 20))))
    ar, pairs = lag1_autocorrelation(list(_ar_series(rng, 0.6, 300, 20)))
    assert abs(iid) < 0.05
    assert 0.56 < ar < 0.64  # the first-order correction gave ~0.65 here
    assert 0.97 * 300 * 19 < pairs <= 300 * 19  # pairs with a > 3 MAD value are left out


def test_lag1_autocorrelation_of_mixed_lengths_is_unbiased() -> None:
    # sessions of 8 and 20 windows pooled: each length has its own small-sample bias
    rng = np.random.default_rng(11)
    series = list(_ar_series(rng, 0.6, 400, 8)) + list(_ar_series(rng, 0.6, 100, 20))
    rho, _ = lag1_autocorrelation(series)
    assert 0.55 < rho < 0.65


def test_lag1_expected_matches_the_mean_centred_ratio_by_simulation() -> None:
    rng = np.random.default_rng(12)
    for rho, n in ((0.0, 6), (0.6, 10), (0.8, 20)):
        x = _ar_series(rng, rho, 20000, n)
        xc = x - x.mean(axis=1, keepdims=True)
        r = float(np.mean(xc[:, :-1] * xc[:, 1:]) / np.mean(xc * xc))
        assert abs(lag1_expected(rho, n) - r) < 0.01
        assert abs(lag1_expected(rho, {n: 3}) - r) < 0.01


def test_autocorrelation_inflation_keeps_the_error_rate_by_simulation() -> None:
    # 4000 AR(0.6) series of 20 windows: a 95 % interval around the true mean 0 must cover
    rng = np.random.default_rng(8)
    x = _ar_series(rng, 0.6, 4000, 20) * 0.01
    rho, _ = lag1_autocorrelation(list(x[:300]))
    m, d_iid, _, df_iid, _ = candidate_stats(x, 0.0, 0.0, 0.2)
    _, d_ar, _, df_ar, _ = candidate_stats(x, rho, 0.0, 0.2)
    miss_iid = float(np.mean(np.abs(m) > st.t.ppf(0.975, df_iid) * np.sqrt(d_iid)))
    miss_ar = float(np.mean(np.abs(m) > st.t.ppf(0.975, df_ar) * np.sqrt(d_ar)))
    assert miss_iid > 0.15  # the iid standard error is far too small
    assert miss_ar < 0.07  # nominal 5 %


def test_stops_early_in_the_minor_region() -> None:
    tests = _suite(30, 9, sessions=5, cv=0.002, changed={0: 0.97})
    prior = _prior(tests)
    shift = running_shift(tests[1:], prior, P)
    cand5 = TestInput("t0", tests[0].baseline, list(tests[0].candidate[:5]))
    stop, cmp = look(cand5, prior, shift, P, 0, 4)
    assert stop and cmp.stopped_early and cmp.provisional
    assert cmp.verdict is Verdict.MINOR_REGRESSION


def test_interim_regressed_stops_only_when_it_survives_any_bh() -> None:
    tests = _suite(30, 10, cv=0.02, changed={0: 0.90})
    prior = _prior(tests)
    shift = running_shift(tests[1:], prior, P)
    t5 = TestInput("t0", tests[0].baseline, list(tests[0].candidate[:5]))
    _, cmp = look(t5, prior, shift, P, 0, 4)
    assert cmp.verdict is Verdict.REGRESSED
    # and would still be strong were the run to move to its lowest stored state
    low = min(min(prior.run_shifts.values()), shift.shift)
    _, at_low = look(t5, prior, replace(shift, shift=low), P, 3, 4)
    assert at_low.p_regression >= cmp.p_regression
    for family in (1, 30, 10**6, 10**12, 10**15):
        stop, _ = look(t5, prior, shift, P, 0, 4, family_size=family)
        assert stop == (at_low.p_regression * 4 <= P.verdict.fdr_q / family)
    stop_last, _ = look(t5, prior, shift, P, 3, 4, family_size=10**15)
    assert stop_last


def _stated(states: tuple[float, ...], now: float, change: float, seed: int) -> list[TestInput]:
    """40 tests whose stored sessions ran in the run states ``states`` (factors felt by every
    test alike), this run in state ``now``; test 0 changed by ``change``."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(40):
        level = 50.0 * (1.0 + 0.1 * t)
        runs = [
            StoredRun(f"s{s}", list(level * f * np.exp(rng.normal(0.0, 0.005, 20))))
            for s, f in enumerate(states)
        ]
        ch = change if t == 0 else 1.0
        cand = level * now * ch * np.exp(rng.normal(0.0, 0.005, 20))
        out.append(TestInput(f"t{t}", runs, list(cand)))
    return out


def test_an_interim_regressed_that_a_stored_low_state_would_explain_keeps_measuring() -> None:
    # one stored run in a state 6 % lower: the tests before this one ran in the high state,
    # but the run may be entering the low one just now (the final verdict judges it against
    # the tests around it). A -5 % change is -5 % against the high state's shift (the tests
    # before it) and about +1 % against the low one's: it must not stop on 5 windows.
    flip = _stated((1.0, 1.0, 0.94), 1.0, 0.95, 21)
    prior = _prior(flip)
    shift = running_shift(flip[1:], prior, P)
    assert min(prior.run_shifts.values()) < shift.shift - 0.04
    t5 = TestInput("t0", flip[0].baseline, list(flip[0].candidate[:5]))
    stop, cmp = look(t5, prior, shift, P, 0, 4, family_size=40)
    assert cmp.verdict is Verdict.REGRESSED and cmp.p_regression * 4 <= P.verdict.fdr_q / 40
    assert not stop
    # the same drop with every stored run in one state stops at once
    steady = _stated((1.0, 1.0, 1.0), 1.0, 0.95, 21)
    prior_s = _prior(steady)
    t5_s = TestInput("t0", steady[0].baseline, list(steady[0].candidate[:5]))
    stop_s, cmp_s = look(
        t5_s, prior_s, running_shift(steady[1:], prior_s, P), P, 0, 4, family_size=40
    )
    assert cmp_s.verdict is Verdict.REGRESSED and stop_s


def test_a_run_whose_tests_disagree_more_than_the_stored_runs_widens_instead_of_failing() -> None:
    # a runner that slows during the run: 0 at the first test, -12 % at the last. Around the
    # run-wide shift the last tests are ~6 % low, far beyond the stored session spread.
    n = 60
    tests = _suite(n, 15, cv=0.01)
    drift = np.exp(np.linspace(0.0, math.log(0.88), n))
    drifting = [
        TestInput(t.key, t.baseline, list(np.asarray(t.candidate) * f))
        for t, f in zip(tests, drift, strict=True)
    ]
    prior = _prior(tests)
    assert prior.sigma_b_df >= 30.0  # many stored sessions: the stored sigma_b is trusted
    dec = judge_suite(drifting, prior, P)
    verdicts = [c.verdict for c in dec.comparisons.values()]
    assert Verdict.REGRESSED not in verdicts
    assert all(c.sigma_b > 0.02 for c in dec.comparisons.values())
    assert {c.sigma_b_source for c in dec.comparisons.values()} == {
        "this run's spread (wider than the stored runs')"
    }
    # with the check off (a ratio no run reaches) and no local shifts (windows wider than
    # half the run: a drift in run order would otherwise be followed) the far end fails
    off = judge_suite(drifting, prior, replace(P, run_spread_ratio=1e9, local_width=n // 2 + 1))
    assert Verdict.REGRESSED in [c.verdict for c in off.comparisons.values()]
    # the same suite without the drift keeps the stored sigma_b
    calm = judge_suite(tests, prior, P)
    assert all(c.sigma_b == pytest.approx(prior.sigma_b) for c in calm.comparisons.values())


def test_a_canary_runs_every_look() -> None:
    tests = _suite(12, 11)
    prior = _prior(tests)
    c = tests[0]
    canary = TestInput(c.key, c.baseline, list(c.candidate[:5]), canary=True)
    stop, cmp = look(canary, prior, running_shift([], prior, P), P, 0, 4)
    assert not stop and cmp.provisional


def test_small_suite_without_canaries_says_too_few_tests() -> None:
    tests = _suite(4, 12, factor=0.95)
    dec = judge_suite(tests, _prior(tests), P)
    assert dec.shift.method is ShiftMethod.NONE
    assert dec.run_verdict is RunVerdict.TOO_FEW_TESTS
    assert "canar" in dec.why
    assert all(c.why and "no run-wide shift" in c.why for c in dec.comparisons.values())


def test_small_suite_with_canaries_uses_them() -> None:
    tests = _suite(4, 13, factor=0.95, cv=0.005)
    tests = [TestInput(t.key, t.baseline, t.candidate, canary=i < 2) for i, t in enumerate(tests)]
    dec = judge_suite(tests, _prior(tests), P)
    assert dec.shift.method is ShiftMethod.CANARIES
    assert dec.shift.n_canaries == 2
    assert dec.run_ratio == pytest.approx(0.95, abs=0.01)
    assert all(c.verdict is not Verdict.REGRESSED for c in dec.comparisons.values())


def test_no_baseline() -> None:
    t = TestInput("new", [], [10.0, 11.0, 10.5])
    prior = suite_prior({"new": []}, P)
    dec = judge_suite([t], prior, P)
    assert dec.comparisons["new"].verdict is Verdict.NO_BASELINE
    assert dec.run_verdict is RunVerdict.NO_BASELINE


def test_huber_shift_ignores_a_few_changed_tests() -> None:
    delta = np.r_[np.full(27, -0.02), np.full(3, -0.10)]
    loc, se = huber_shift(delta + np.linspace(-1e-3, 1e-3, 30), np.full(30, 1e-4))
    assert loc == pytest.approx(-0.02, abs=0.003)
    assert 0.0 < se < 0.005


def test_run_sigma_b_recovers_a_known_spread() -> None:
    rng = np.random.default_rng(14)
    v = np.full(2000, 1e-4)
    resid = rng.normal(0.0, math.sqrt(1e-4 + 2 * 0.01**2), 2000)
    got = run_sigma_b(resid, v, np.ones(2000))
    assert got == pytest.approx(0.01, rel=0.15)
    assert run_sigma_b(rng.normal(0.0, 0.01, 2000), v, np.ones(2000)) < 0.003


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="t9"):
        judge_suite([TestInput("t9", [], [1.0, -2.0])], suite_prior({}, P), P)
    with pytest.raises(ValueError, match="resolution"):
        judge_suite([TestInput("t8", [], [1.0, 2.0], resolution=-1.0)], suite_prior({}, P), P)
    with pytest.raises(ValueError, match="sigma_b_prior"):
        SuiteParams(sigma_b_prior=0.0)
    with pytest.raises(ValueError, match="run_spread_alpha"):
        SuiteParams(run_spread_alpha=0.0)
    with pytest.raises(ValueError, match="run_spread_ratio"):
        SuiteParams(run_spread_ratio=0.5)
    with pytest.raises(ValueError, match="test_spread_alpha"):
        SuiteParams(test_spread_alpha=0.5)
    with pytest.raises(ValueError, match="test_spread_df"):
        SuiteParams(test_spread_df=0.0)
    with pytest.raises(ValueError, match="local_width"):
        SuiteParams(local_width=2)
    with pytest.raises(ValueError, match="look_index"):
        look(
            TestInput("t", [], [1.0]),
            suite_prior({}, P),
            RunShift(0, 0, 0, 0, ShiftMethod.NONE),
            P,
            4,
            4,
        )


SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(seed=hs.integers(0, 10**6), cv=hs.floats(0.001, 0.05))
def test_x_vs_x_never_regresses(seed: int, cv: float) -> None:
    tests = _suite(12, seed, cv=cv)
    same = [TestInput(t.key, t.baseline, list(t.baseline[-1].values)) for t in tests]
    dec = judge_suite(same, _prior(same), P)
    assert all(c.verdict is not Verdict.REGRESSED for c in dec.comparisons.values())


@SETTINGS
@given(seed=hs.integers(0, 10**6), factor=hs.floats(0.5, 2.0))
def test_a_common_factor_changes_only_the_run_shift(seed: int, factor: float) -> None:
    tests = _suite(12, seed, cv=0.02, changed={0: 0.9})
    prior = _prior(tests)
    scaled = [TestInput(t.key, t.baseline, [v * factor for v in t.candidate]) for t in tests]
    a = judge_suite(tests, prior, P)
    b = judge_suite(scaled, prior, P)
    assert b.shift.shift == pytest.approx(a.shift.shift + math.log(factor), abs=1e-9)
    assert b.shift.se == pytest.approx(a.shift.se, rel=1e-6, abs=1e-12)
    for k, ca in a.comparisons.items():
        cb = b.comparisons[k]
        assert cb.verdict is ca.verdict
        assert cb.ratio == pytest.approx(ca.ratio, rel=1e-9)
        assert cb.p_regression == pytest.approx(ca.p_regression, rel=1e-6, abs=1e-12)


def test_a_shared_within_session_trend_is_removed() -> None:
    # every session falls 3 % from its first to its last window; candidates stop at 5 windows
    rng = np.random.default_rng(15)
    trend = np.exp(np.linspace(0.0, math.log(0.97), 20))
    tests = []
    for t in range(40):
        runs = [
            StoredRun(f"s{s}", list(60.0 * trend * np.exp(rng.normal(0, 0.003, 20))))
            for s in range(3)
        ]
        cand = 60.0 * trend[:5] * np.exp(rng.normal(0, 0.003, 5))
        tests.append(TestInput(f"t{t}", runs, list(cand)))
    prior = _prior(tests)
    assert len(prior.profile) == 20
    assert prior.profile[0] - prior.profile[-1] == pytest.approx(-math.log(0.97), abs=0.003)
    assert judge_suite(tests, prior, P).shift.shift == pytest.approx(0.0, abs=0.002)
    flat = _prior(tests, SuiteParams(min_profile_series=10**6))
    assert flat.profile == (0.0,) * 20
    # without the profile the early windows look ~1.1 % better than the stored means
    assert judge_suite(tests, flat, P).shift.shift > 0.008


def test_incremental_changes_give_the_running_shift() -> None:
    tests = _suite(20, 16, factor=0.97, changed={2: 0.9})
    tests.append(TestInput("new", [], [1.0, 2.0, 3.0]))
    prior = _prior(tests)
    changes = [change_of(t, prior, P) for t in tests]
    assert changes[-1] is None
    assert changes[0] is not None and changes[0].key == "t0"
    a = look_shift(changes, prior, P)
    b = running_shift(tests, prior, P)
    assert a == b
    assert a == shift_from_changes(changes, prior, P)  # a steady run: the run shift itself
    assert a.shift == pytest.approx(math.log(0.97), abs=0.004)


def _stepped_suite(n: int, seed: int) -> list[TestInput]:
    """``n`` tests; the runner steps to -4 % after the first half of the run."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        lvl = 50.0 * (1.0 + 0.01 * t)
        runs = [
            StoredRun(f"s{q}", list(lvl * np.exp(rng.normal(0.0, 0.005) + rng.normal(0, 0.01, 20))))
            for q in range(3)
        ]
        now = lvl * (0.96 if t >= n // 2 else 1.0) * math.exp(rng.normal(0.0, 0.005))
        out.append(TestInput(f"t{t}", runs, list(now * np.exp(rng.normal(0.0, 0.01, 20)))))
    return out


def test_after_a_step_the_looks_follow_the_recent_tests_shift() -> None:
    tests = _stepped_suite(100, 71)
    prior = _prior(tests)
    done = tests[:90]  # 50 tests before the step, 40 after
    changes = [change_of(t, prior, P) for t in done]
    whole = shift_from_changes(changes, prior, P)
    recent = look_shift(changes, prior, P)
    assert recent == running_shift(done, prior, P)
    assert recent.shift == pytest.approx(math.log(0.96), abs=0.006)
    assert abs(whole.shift - math.log(0.96)) > 0.01  # one shift for the run sits in between
    # the next test, after the step and unchanged, can stop early against the recent shift
    nxt = replace(tests[90], candidate=list(tests[90].candidate[:5]))
    stop_recent, c_recent = look(nxt, prior, recent, P, 0, 4)
    stop_whole, _ = look(nxt, prior, whole, P, 0, 4)
    assert stop_recent and c_recent.verdict is Verdict.UNCHANGED
    assert not stop_whole
    # a steady run of the same size keeps one shift
    steady = _suite(100, 72)
    st_prior = _prior(steady)
    st_changes = [change_of(t, st_prior, P) for t in steady[:90]]
    assert look_shift(st_changes, st_prior, P) == shift_from_changes(st_changes, st_prior, P)


# --- levels of the looks, df of autocorrelated windows, tests too noisy to decide ----------


def test_look_level_is_pococks_constant_boundary() -> None:
    # Pocock's published constant for 4 equally spaced looks at two-sided 5 % is 2.361
    assert st.norm.isf(look_level(0.025, (1, 2, 3, 4))) == pytest.approx(2.361, abs=0.002)
    assert look_level(0.05, (20,)) == 0.05
    a = look_level(0.05, (5, 10, 15, 20))
    assert 0.05 / 4 < a < 0.05  # between Bonferroni and a single look


def test_look_level_crossing_chance_by_simulation() -> None:
    # a Brownian motion seen at unequal looks crosses the constant boundary with chance alpha
    looks = (3, 7, 20)
    a = look_level(0.05, looks)
    rng = np.random.default_rng(21)
    t = np.asarray(looks, dtype=float) / looks[-1]
    steps = rng.standard_normal((200_000, 3)) * np.sqrt(np.diff(np.concatenate([[0.0], t])))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    crossed = float(np.mean((z > st.norm.isf(a)).any(axis=1)))
    assert crossed == pytest.approx(0.05, abs=0.0025)  # ~5 standard errors


@pytest.mark.parametrize(
    ("alpha", "looks"), [(0.0, (5, 10)), (0.6, (5, 10)), (0.05, ()), (0.05, (10, 5))]
)
def test_look_level_rejects_bad_input(alpha: float, looks: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"alpha|looks"):
        look_level(alpha, looks)


def test_autocorrelated_df_keep_the_one_sided_level_by_simulation() -> None:
    # AR(0.6) series of 20 windows: a one-sided t test at the engine's per-look level must
    # reject about that often; dividing the df by the mean's variance factor made it 6x rarer
    rng = np.random.default_rng(22)
    x = _ar_series(rng, 0.6, 100_000, 20)
    m, d, _, df, _ = candidate_stats(x, 0.6, 0.0, 0.2)
    level = 0.0125
    rate = float(np.mean(m / np.sqrt(d) > st.t.ppf(1.0 - level, df)))
    assert 0.005 < rate < 0.02
    assert ar1_df_factor(0.6) == pytest.approx(0.64 / 1.36)
    assert ar1_df_factor(0.0) == ar1_df_factor(-0.3) == 1.0


def _noisy_test(offsets: list[float]) -> tuple[TestInput, list[TestInput]]:
    """30 quiet tests and one whose windows vary by 10 % (stored and now)."""
    tests = _suite(30, 23, sessions=3, cv=0.005)
    rng = np.random.default_rng(24)
    runs = [StoredRun(f"s{s}", list(50.0 * np.exp(rng.normal(0.0, 0.10, 20)))) for s in range(3)]
    mu = float(np.mean([np.mean(np.log(r.values)) for r in runs]))
    return TestInput("noisy", runs, list(np.exp(mu + np.asarray(offsets)))), tests


def test_a_test_too_noisy_to_decide_stops_at_the_first_look() -> None:
    noisy, tests = _noisy_test([0.12, -0.08, 0.15, -0.05, 0.10])  # mean +5 %, SD ~ 10 %
    prior = suite_prior({t.key: t.baseline for t in [*tests, noisy]}, P)
    shift = running_shift(tests, prior, P)
    stop, cmp = look(noisy, prior, shift, P, 0, 4)
    assert stop and cmp.stopped_early
    assert cmp.verdict is Verdict.INCONCLUSIVE
    assert cmp.why is not None and "too noisy to decide within 20 windows" in cmp.why


def test_a_noisy_test_that_shows_a_drop_keeps_measuring() -> None:
    noisy, tests = _noisy_test([-0.02, -0.22, 0.01, -0.19, -0.03])  # mean -9 %
    prior = suite_prior({t.key: t.baseline for t in [*tests, noisy]}, P)
    shift = running_shift(tests, prior, P)
    stop, cmp = look(noisy, prior, shift, P, 0, 4)
    assert cmp.verdict is Verdict.INCONCLUSIVE
    assert not stop


def _session_noisy_test(drop: float) -> tuple[TestInput, list[TestInput]]:
    """30 quiet tests and one with quiet windows whose stored sessions lie 6 % apart."""
    tests = _suite(30, 23, sessions=3, cv=0.005)
    rng = np.random.default_rng(25)
    runs = [
        StoredRun(f"s{s}", list(50.0 * np.exp(level + rng.normal(0.0, 0.005, 20))))
        for s, level in enumerate((0.0, 0.06, -0.06))
    ]
    now = 50.0 * np.exp(drop + rng.normal(0.0, 0.005, 5))
    return TestInput("jumpy", runs, list(now)), tests


def test_a_drop_that_more_windows_cannot_sharpen_stops_at_the_first_look() -> None:
    # its interval's width is its stored sessions' spread: 15 more quiet windows would narrow
    # it by well under 10 %, so the drop is as decided now as it would be at the last look
    noisy, tests = _session_noisy_test(-0.04)
    prior = suite_prior({t.key: t.baseline for t in [*tests, noisy]}, P)
    shift = running_shift(tests, prior, P)
    stop, cmp = look(noisy, prior, shift, P, 0, 4)
    assert cmp.verdict is Verdict.INCONCLUSIVE and cmp.ratio < 1.0
    assert stop and cmp.stopped_early
    assert cmp.why is not None and "would narrow it by less than 10%" in cmp.why
    # without the rule the drop keeps measuring, as a drop in noisy windows does
    stop, _ = look(noisy, prior, shift, replace(P, min_gain=0.0), 0, 4)
    assert not stop


def test_hopeless_projects_only_the_candidates_part_of_the_variance() -> None:
    est, se = np.asarray([-0.04, -0.04, 0.02]), np.asarray([0.03, 0.03, 0.03])
    d_c = np.asarray([0.0001, 0.0008, 0.0001])  # 11 % and 89 % of the variance
    z = np.zeros(3)
    dec = ArrayDecision(est, se, z + 50.0, z, z, z, z.astype(np.int8), d_c)
    # at 5 of 20 windows: the first would narrow by 4 %, the second by 42 %; the third
    # shows no drop
    assert list(hopeless(dec, 5, 20, 0.0125, 0.05, 0.1)) == [True, False, True]
    assert list(hopeless(dec, 5, 20, 0.0125, 0.05, 0.0)) == [False, False, True]
    # a test that could still end UNCHANGED never stops on this rule
    assert not hopeless(replace(dec, se=se / 10.0, d_c=d_c / 100.0), 5, 20, 0.0125, 0.05, 0.1)[0]


def test_a_noisy_test_is_not_stopped_before_the_run_shift_is_known() -> None:
    noisy, tests = _noisy_test([0.12, -0.08, 0.15, -0.05, 0.10])
    prior = suite_prior({t.key: t.baseline for t in [*tests, noisy]}, P)
    stop, _ = look(noisy, prior, running_shift([], prior, P), P, 0, 4)
    assert not stop


# --- a test whose stored sessions disagree -------------------------------------------------


def _jumpy_suite(jump: float, drop: float) -> list[TestInput]:
    """40 tests (3 stored sessions, session shifts SD 0.5 %); test 0's second stored session
    is ``jump`` higher and its candidate ``drop`` lower."""
    rng = np.random.default_rng(31)
    out = []
    for t in range(40):
        runs = []
        for s in range(3):
            lvl = 50.0 * math.exp(rng.normal(0.0, 0.005) + (jump if (t, s) == (0, 1) else 0.0))
            runs.append(StoredRun(f"s{s}", list(lvl * np.exp(rng.normal(0.0, 0.005, 20)))))
        lvl = 50.0 * math.exp(rng.normal(0.0, 0.005) + (drop if t == 0 else 0.0))
        out.append(TestInput(f"t{t}", runs, list(lvl * np.exp(rng.normal(0.0, 0.005, 20)))))
    return out


def test_a_test_with_one_jumpy_stored_session_gets_its_own_spread() -> None:
    # stored +5 % in one session, -3 % now: a 4.7 % drop against the stored mean that the
    # suite's 0.5 % sigma_b calls certain; the test's own sessions say it is not
    tests = _jumpy_suite(0.05, -0.03)
    prior = _prior(tests)
    wide = judge_suite(tests, prior, P).comparisons["t0"]
    # one such test in 40 also makes the suite's tests differ: either check may name it
    assert wide.sigma_b_source in (TEST_SPREAD_SOURCE, TEST_NOISE_SOURCE)
    assert wide.sigma_b > 1.5 * prior.sigma_b
    assert wide.p_adjusted is not None and wide.p_adjusted > 0.5
    assert wide.verdict is not Verdict.REGRESSED
    never = replace(P, test_spread_alpha=1e-12, hetero_alpha=1e-300)  # both checks off
    narrow = judge_suite(tests, _prior(tests, never), never).comparisons["t0"]
    assert narrow.sigma_b_source not in (TEST_SPREAD_SOURCE, TEST_NOISE_SOURCE)
    assert narrow.verdict is Verdict.REGRESSED
    only_f = replace(P, hetero_alpha=1e-300)  # the jumpy-session check alone still holds
    alone = judge_suite(tests, _prior(tests, only_f), only_f).comparisons["t0"]
    assert alone.sigma_b_source == TEST_SPREAD_SOURCE
    assert alone.verdict is not Verdict.REGRESSED


def test_steady_stored_sessions_keep_the_suite_sigma_b() -> None:
    tests = _jumpy_suite(0.0, -0.08)  # a real drop, sessions alike
    prior = _prior(tests)
    c = judge_suite(tests, prior, P).comparisons["t0"]
    assert c.sigma_b_source not in (TEST_SPREAD_SOURCE, TEST_NOISE_SOURCE)
    assert c.verdict is Verdict.REGRESSED


def test_the_jumpy_session_check_flags_about_its_level_of_gaussian_tests() -> None:
    rng = np.random.default_rng(32)
    n, s = 4000, 3
    sb2, within = 0.005**2, 0.002**2
    levels = rng.normal(0.0, math.sqrt(sb2 + within), (n, s))
    spread = np.var(levels, axis=1, ddof=1)
    prior = _flat_prior(sb2)
    got, got_df = per_test_sigma_b2(sb2, prior, spread, np.full(n, within), np.full(n, 3.0), 1e6, P)
    share = float(np.mean(got > sb2))
    assert 0.005 < share < 0.02  # test_spread_alpha = 1 %
    assert np.all(got >= sb2)
    assert np.all(got_df == 1e6)
    one, _ = per_test_sigma_b2(sb2, prior, spread[:5], np.full(5, within), np.ones(5), 1e6, P)
    assert np.all(one == sb2)  # one stored session: nothing to compare


def _flat_prior(sb2: float, log_mean: float = math.nan, log_sd: float = 0.0) -> SuitePrior:
    """A prior with pooled and robust sigma_b^2 = ``sb2`` (300 tests, 3 sessions), and the
    tests' log-normal spread of sigma_b^2 (``log_sd`` 0: alike)."""
    return replace(
        SuitePrior(math.sqrt(sb2), 1e6, "pooled", 0.01, 10.0, {}, 3, 300, 0.0),
        sigma_b_robust=math.sqrt(sb2),
        sigma_b_log_mean=log_mean,
        sigma_b_log_sd=log_sd,
    )


def test_where_tests_differ_each_gets_its_own_sigma_b_never_narrower_than_the_suites() -> None:
    rng = np.random.default_rng(64)
    within = 0.002**2
    spread, sig2 = lognormal_spreads(rng, 300, 3, 0.8, within)
    mean, sd, _ = spread_heterogeneity(spread, np.full(300, within), np.full(300, 3.0))
    sb2 = float(np.mean(np.maximum(spread - within, 0.0)))
    prior = _flat_prior(sb2, mean, sd)
    got, df = per_test_sigma_b2(sb2, prior, spread, np.full(300, within), np.full(300, 3.0), 600, P)
    levels = (P.verdict.alpha, P.verdict.fdr_q / 300)
    for p_ in levels:  # never narrower than the suite's pooled sigma_b at either level
        q = np.sqrt(got) * st.t.ppf(1 - p_, df)
        assert np.all(q >= math.sqrt(sb2) * st.t.ppf(1 - p_, 600) * (1 - 1e-3))
    top = np.argsort(spread)[-30:]  # the tests whose sessions disagree most are widest
    assert np.median(got[top]) > 2.0 * sb2
    # at BH's smallest threshold a test's own interval covers its true sigma far more often
    # than the pooled one does for the noisiest tenth of tests
    noisy = sig2 > np.quantile(sig2, 0.9)
    own_q = np.sqrt(got) * st.t.ppf(1 - levels[1], df)
    pooled_q = math.sqrt(sb2) * st.t.ppf(1 - levels[1], 600)
    true_q = np.sqrt(sig2) * st.norm.ppf(1 - levels[1])
    assert np.mean(own_q[noisy] >= true_q[noisy]) > np.mean(pooled_q >= true_q[noisy]) + 0.2
    off = replace(prior, sigma_b_log_sd=0.0)  # tests alike: the jumpy-session check instead
    alike, _ = per_test_sigma_b2(sb2, off, spread, np.full(300, within), np.full(300, 3.0), 600, P)
    assert np.mean(alike > sb2) < np.mean(got > 1.01 * sb2)


def _unequal_suite(seed: int, drop: float) -> list[TestInput]:
    """200 tests whose session-shift SD is log-normal (0.1-2 %); test 0 is the noisiest of
    them (2 %), its stored sessions spread, and its candidate ``drop`` lower."""
    rng = np.random.default_rng(seed)
    sds = np.exp(rng.normal(math.log(0.004), 0.8, 200))
    sds[0] = 0.02
    out = []
    for t in range(200):
        offs = rng.normal(0.0, sds[t], 4)
        if t == 0:
            offs = np.asarray([0.02, -0.02, 0.0, 0.0])
        runs = [
            StoredRun(f"s{s}", list(50.0 * np.exp(offs[s] + rng.normal(0.0, 0.005, 20))))
            for s in range(3)
        ]
        lvl = 50.0 * math.exp(offs[3] + (drop if t == 0 else 0.0))
        out.append(TestInput(f"t{t}", runs, list(lvl * np.exp(rng.normal(0.0, 0.005, 20)))))
    return out


def test_a_noisy_test_in_a_suite_of_unlike_tests_is_not_failed_by_its_own_noise() -> None:
    tests = _unequal_suite(65, -0.06)  # a 6 % drop: 3 of its own session SDs
    prior = _prior(tests)
    assert prior.sigma_b_log_sd > 0.0 and prior.sigma_b_spread_p < 0.01
    dec = judge_suite(tests, prior, P)
    c = dec.comparisons["t0"]
    assert c.sigma_b_source == TEST_NOISE_SOURCE
    assert c.verdict is not Verdict.REGRESSED
    assert "the tests differ in how far their level moves between sessions" in dec.why
    off = replace(P, hetero_alpha=1e-300, test_spread_alpha=1e-12)  # both checks off
    c_off = judge_suite(tests, _prior(tests, off), off).comparisons["t0"]
    assert c_off.verdict is Verdict.REGRESSED
    big = _unequal_suite(65, -0.25)  # a real collapse is still caught
    assert judge_suite(big, _prior(big), P).comparisons["t0"].verdict is Verdict.REGRESSED


def test_a_suite_of_alike_tests_keeps_the_pooled_sigma_b() -> None:
    tests = _suite(200, 66)
    prior = _prior(tests)
    assert prior.sigma_b_log_sd == 0.0
    assert prior.sigma_b_spread_p >= P.hetero_alpha
    assert "the tests differ" not in judge_suite(tests, prior, P).why


def test_the_robust_sigma_b_ignores_a_few_jumpy_sessions() -> None:
    clean = _prior(_jumpy_suite(0.0, 0.0))
    rng = np.random.default_rng(33)
    tests = _jumpy_suite(0.0, 0.0)
    jumpy = []
    for t in tests:  # one session in ten jumps by 4 %
        runs = [
            StoredRun(
                r.session_id, list(np.asarray(r.values) * (1.04 if rng.random() < 0.1 else 1))
            )
            for r in t.baseline
        ]
        jumpy.append(replace(t, baseline=runs))
    prior = _prior(jumpy)
    assert prior.sigma_b > 1.5 * clean.sigma_b  # the mean square feels the jumps
    assert prior.sigma_b_robust < 1.3 * clean.sigma_b_robust  # the median does not


# --- a run whose windows are noisier than the stored runs' -----------------------------------


def test_noise_ratio_is_one_in_the_median_for_equal_noise_and_tracks_a_noisier_run() -> None:
    rng = np.random.default_rng(41)
    stored = rng.normal(0.0, 0.01, (3000, 60))
    _, _, _, _, sw2 = candidate_stats(stored, 0.0, 0.0, 0.2)
    medians = []
    for sd in (0.01, 0.02):
        cand = rng.normal(0.0, sd, (3000, 5))
        _, _, h, _, own = candidate_stats(cand, 0.0, 0.0, 0.2)
        medians.append(float(np.median(noise_ratio(own, sw2, h, 59.0, 0.0, 0.9))))
    # the winsorised variance of 5 values runs ~20 % smaller than that of 60: a little low
    assert 0.65 < medians[0] <= 1.0
    assert medians[1] == pytest.approx(4.0 * medians[0], rel=0.1)  # twice the SD: 4x


def test_noise_scale_needs_enough_tests_and_never_narrows() -> None:
    assert noise_scale(np.full(P.min_tests_robust - 1, 9.0), P) == 1.0
    assert noise_scale(np.full(P.min_tests_robust, 9.0), P) == 9.0
    assert noise_scale(np.asarray([0.2, 0.3, 0.5, 0.4, 0.1, np.nan]), P) == 1.0


def test_a_noisier_run_raises_every_candidates_floor() -> None:
    # stored windows vary by 0.3 %, this run's by 1.5 %; t0 stopped after 5 windows that
    # happen to agree closely: its own variance is tiny, the stored floor is 25x too small
    rng = np.random.default_rng(42)
    tests = []
    for t in range(40):
        runs = [
            StoredRun(f"s{s}", list(50.0 * np.exp(rng.normal(0.0, 0.003, 20)))) for s in range(3)
        ]
        sd = 0.0005 if t == 0 else 0.015
        cand = 50.0 * np.exp(rng.normal(0.0, sd, 5 if t == 0 else 20))
        tests.append(TestInput(f"t{t}", runs, list(cand)))
    prior = _prior(tests)
    shift = running_shift(tests[1:], prior, P)
    assert shift.noise_scale > 10.0
    _, wide = look(tests[0], prior, shift, P, 0, 4)
    _, narrow = look(tests[0], prior, replace(shift, noise_scale=1.0), P, 0, 4)
    assert wide.se_log > 2.0 * narrow.se_log
    why = judge_suite(tests, prior, P).why
    assert "as much as the stored runs'" in why
    quiet = running_shift(_suite(40, 43, cv=0.003)[1:], _prior(_suite(40, 43, cv=0.003)), P)
    assert quiet.noise_scale < 1.3


# --- a run whose shift changes during the run ------------------------------------------------


def _stepped(width: int = 30) -> tuple[list[TestInput], SuiteParams]:
    """90 tests; from test 45 on the runner is 4 % slower; tests 10 and 70 lose a further 10 %."""
    tests = _suite(90, 51, cv=0.005, changed={10: 0.90, 70: 0.90})
    out = []
    for i, t in enumerate(tests):
        step = 0.96 if i >= 45 else 1.0
        out.append(replace(t, candidate=list(np.asarray(t.candidate) * step)))
    return out, replace(P, local_width=width)


def test_a_step_during_the_run_is_judged_against_each_tests_neighbours() -> None:
    tests, params = _stepped()
    d = judge_suite(tests, _prior(tests, params), params)
    failed = sorted(k for k, c in d.comparisons.items() if c.verdict is Verdict.REGRESSED)
    assert failed == ["t10", "t70"]
    assert "the shift changed during the run" in d.why
    assert d.comparisons["t80"].shift < math.log(0.97) < d.comparisons["t20"].shift


def test_without_local_shifts_a_step_widens_every_interval() -> None:
    tests, params = _stepped(width=1000)  # too few tests for a local shift: the old way
    d = judge_suite(tests, _prior(tests, params), params)
    assert d.comparisons["t10"].verdict is not Verdict.REGRESSED
    assert d.comparisons["t10"].sigma_b_source == RUN_SPREAD_SOURCE
    assert "the shift changed during the run" not in d.why


def test_a_steady_run_keeps_one_run_shift() -> None:
    tests = _suite(90, 52, cv=0.005, factor=0.97, changed={10: 0.90})
    d = judge_suite(tests, _prior(tests), P)
    assert "the shift changed during the run" not in d.why
    assert len({round(c.shift, 12) for c in d.comparisons.values()}) == 1
    assert d.comparisons["t10"].verdict is Verdict.REGRESSED
