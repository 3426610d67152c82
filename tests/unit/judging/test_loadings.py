"""Per-test loadings on the run shift, learned from the stored runs, and a run shift that the
changed tests cannot pull (pytest_tpw.judging.prior.learn_loadings, shift.robust_shift)."""

from __future__ import annotations

import math

import numpy as np

from pytest_tpw.judging.decide import judge_suite
from pytest_tpw.judging.model import (
    StoredRun,
    SuiteDecision,
    SuiteParams,
    TestInput,
    loading_of,
)
from pytest_tpw.judging.prior import learn_loadings, slope_spread, suite_prior
from pytest_tpw.judging.shift import robust_shift
from pytest_tpw.stats import Verdict

P = SuiteParams()
LOW = math.log(0.97)  # a clock state 3 % less efficient, felt by each test x its sensitivity


def _clock_suite(
    seed: int,
    *,
    n_tests: int = 300,
    flip_at: int | None = 150,
    changed: dict[int, float] | None = None,
    sensitivity: tuple[float, float] = (0.3, 1.7),
) -> tuple[list[TestInput], np.ndarray]:
    """Three stored runs, the third in the low clock state; this run enters it at test
    ``flip_at`` (None: never). Each test feels the state by its own sensitivity."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(*sensitivity, n_tests)
    tests = []
    for t in range(n_tests):
        cv = rng.uniform(0.01, 0.03)
        level = math.log(50.0)
        runs = []
        for s in range(3):
            shift = LOW * beta[t] if s == 2 else 0.0
            own = rng.normal(0.0, 0.005)
            runs.append(
                StoredRun(f"s{s}", list(np.exp(level + shift + own + rng.normal(0, cv, 20))))
            )
        now = LOW * beta[t] if flip_at is not None and t >= flip_at else 0.0
        now += (changed or {}).get(t, 0.0) + rng.normal(0.0, 0.005)
        tests.append(TestInput(f"t{t}", runs, list(np.exp(level + now + rng.normal(0, cv, 20)))))
    return tests, beta


def test_loadings_are_learned_when_tests_feel_a_stored_shift_unequally() -> None:
    tests, beta = _clock_suite(1)
    prior = suite_prior({t.key: t.baseline for t in tests}, P)
    assert prior.loadings, "the stored runs show that the tests feel the clock state unequally"
    assert prior.loading_p < P.loading_alpha
    lam = np.array([loading_of(prior, t.key)[0] for t in tests])
    assert np.corrcoef(lam, beta)[0, 1] > 0.6
    # shrunk toward 1: never more spread than the slopes themselves, and each with a variance
    assert lam.std() < beta.std() * 1.2
    assert all(loading_of(prior, t.key)[1] > 0.0 for t in tests)
    # sigma_b comes from the residuals about each test's own slope: near the true 0.5 %
    assert 0.003 < prior.sigma_b < 0.007


def test_no_loadings_when_every_test_feels_the_shift_alike() -> None:
    tests, _ = _clock_suite(2, sensitivity=(1.0, 1.0))
    prior = suite_prior({t.key: t.baseline for t in tests}, P)
    assert not prior.loadings
    assert loading_of(prior, "t0") == (1.0, 0.0)


def test_no_loadings_when_the_stored_shifts_stay_inside_the_noise_floor() -> None:
    rng = np.random.default_rng(3)
    r = np.array([0.002, -0.001, -0.001])  # spans 0.3 %, less than the 1 % noise floor
    beta = rng.uniform(0.0, 3.0, 200)
    m = beta[:, None] * r[None, :] + rng.normal(0.0, 0.0001, (200, 3))
    got = learn_loadings(m, np.full(m.shape, 1e-8), np.isfinite(m), r, P)
    assert not got.used
    assert np.all(got.loading == 1.0)


def test_a_test_whose_sessions_cannot_tell_keeps_loading_one_with_the_suites_spread() -> None:
    rng = np.random.default_rng(4)
    r = np.array([0.01, 0.01, -0.02])
    beta = rng.uniform(0.3, 1.7, 100)
    m = beta[:, None] * r[None, :] + rng.normal(0.0, 0.002, (100, 3))
    m[0, :2] = np.nan  # one stored session only: no slope
    got = learn_loadings(m, np.full(m.shape, 1e-6), np.isfinite(m), r, P)
    assert got.used
    assert got.loading[0] == 1.0
    assert math.isclose(got.var[0], got.tau**2)
    assert np.all(got.var[1:] < got.tau**2)  # a test with a slope is known better


def test_slope_spread_is_the_residual_variance_about_each_tests_own_line() -> None:
    r = np.array([0.01, 0.0, -0.01, 0.0])
    m = np.array([[0.02, 0.0, -0.02, 0.001], [0.0, 0.0, 0.0, np.nan]])
    spread, count = slope_spread(m, r)
    y = m[0] - m[0].mean()
    x = r - r.mean()
    e = y - (x @ y / (x @ x)) * x
    assert math.isclose(float(spread[0]), float(e @ e) / 2.0)
    assert count[0] == 3.0  # 4 sessions, a line of 2 parameters: 2 df = count - 1
    assert spread[1] == 0.0  # three sessions on a line: nothing left over


def test_changed_tests_do_not_pull_the_run_shift() -> None:
    rng = np.random.default_rng(5)
    n = 300
    var = np.full(n, 0.014**2)  # a -5 % change lies 3.7 standard errors out
    pulled, kept = [], []
    for _ in range(200):
        delta = rng.normal(0.0, 0.014, n)
        delta[::10] += math.log(0.95)  # 10 % of the tests 5 % worse
        pulled.append(robust_shift(delta, var, SuiteParams(exclude_z=1e9))[0])
        kept.append(robust_shift(delta, var, P)[0])
    # without leaving the flagged tests out, the shift leans toward them; with, it does not
    assert float(np.mean(pulled)) < -0.001
    assert abs(float(np.mean(kept))) < abs(float(np.mean(pulled))) / 2


def test_a_run_that_flips_clock_state_finds_its_changed_tests_without_false_alarms() -> None:
    changed = {t: math.log(0.95) for t in range(5, 300, 10)}  # 10 % of the tests -5 %
    tests, _ = _clock_suite(6, changed=changed)
    prior = suite_prior({t.key: t.baseline for t in tests}, P)
    decision = judge_suite(tests, prior, P)
    failed = {k for k, c in decision.comparisons.items() if c.verdict is Verdict.REGRESSED}
    wanted = {f"t{t}" for t in changed}
    assert not failed - wanted, f"false REGRESSED: {sorted(failed - wanted)}"
    # without loadings (every test assumed to feel the state alike) the intervals are wider
    # and fewer of the changed tests are found
    flat = SuiteParams(loading_alpha=1e-300)
    prior_flat = suite_prior({t.key: t.baseline for t in tests}, flat)
    assert not prior_flat.loadings
    flat_decision = judge_suite(tests, prior_flat, flat)
    found_flat = {k for k, c in flat_decision.comparisons.items() if c.verdict is Verdict.REGRESSED}
    assert len(failed & wanted) > len(found_flat & wanted)

    def width(d: SuiteDecision) -> float:
        return float(np.median([c.se_log for c in d.comparisons.values()]))

    assert width(decision) < width(flat_decision)


def test_the_run_wide_line_says_when_tests_feel_the_shift_unequally() -> None:
    tests, _ = _clock_suite(7, flip_at=None)
    prior = suite_prior({t.key: t.baseline for t in tests}, P)
    notes = judge_suite(tests, prior, P).notes
    said = [n for n in notes if "feel the stored runs' shifts unequally" in n]
    assert len(said) == 1, notes
    lo, hi = (float(x) for x in said[0].split("(loadings ")[1].split(" for")[0].split("-"))
    assert 0.0 < lo < 1.0 < hi < 2.5  # sensitivities U(0.3, 1.7), shrunk toward 1
    flat = SuiteParams(loading_alpha=1e-300)
    tests_alike, _ = _clock_suite(7, flip_at=None, sensitivity=(1.0, 1.0))
    prior_alike = suite_prior({t.key: t.baseline for t in tests_alike}, flat)
    assert not any("unequally" in n for n in judge_suite(tests_alike, prior_alike, flat).notes)
