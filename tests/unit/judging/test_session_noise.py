"""The law of per-test session noise and its tail arithmetic, pytest_tpw.session_noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pytest_tpw.judging.session_noise import (
    mixture_quantile,
    posterior_weights,
    spread_heterogeneity,
    t_through,
)


def lognormal_spreads(
    rng: np.random.Generator, n: int, s: int, log_sd: float, within: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each test's session-shift SD log-normal around 0.4 % (``log_sd`` on log sigma); the
    variance of its ``s`` session levels, and the true sigma_t^2."""
    sig2 = np.exp(2.0 * (math.log(0.004) + log_sd * rng.standard_normal(n)))
    levels = rng.standard_normal((n, s)) * np.sqrt(sig2 + within)[:, None]
    return np.var(levels, axis=1, ddof=1), sig2


def test_tests_alike_in_session_noise_are_called_alike_at_about_the_level() -> None:
    rng = np.random.default_rng(61)
    ps = []
    for _ in range(60):
        spread, _ = lognormal_spreads(rng, 300, 3, 0.0, 0.002**2)
        mean, _, pv = spread_heterogeneity(spread, np.full(300, 0.002**2), np.full(300, 3.0))
        ps.append(pv)
        assert math.exp(mean / 2) == pytest.approx(0.004, rel=0.25)
    assert sum(pv < 0.01 for pv in ps) <= 2  # hetero_alpha = 1 %: 0.6 expected of 60
    assert sum(pv < 0.5 for pv in ps) >= 10  # p is not stuck at 1: the test can reject


def test_tests_unlike_in_session_noise_are_found_and_their_spread_measured() -> None:
    rng = np.random.default_rng(62)
    spread, _ = lognormal_spreads(rng, 3000, 3, 0.8, 0.002**2)
    mean, sd, pv = spread_heterogeneity(spread, np.full(3000, 0.002**2), np.full(3000, 3.0))
    assert pv < 1e-6
    assert sd / 2 == pytest.approx(0.8, rel=0.2)  # on log sigma^2: twice the log-sigma SD
    assert math.exp(mean / 2) == pytest.approx(0.004, rel=0.2)
    # too few tests with two sessions: no verdict on the question
    f_mean, f_sd, f_p = spread_heterogeneity(spread[:9], np.full(9, 1e-6), np.full(9, 3.0))
    assert math.isnan(f_mean) and (f_sd, f_p) == (0.0, 1.0)


def test_t_through_reaches_both_quantiles_and_no_further() -> None:
    rng = np.random.default_rng(63)
    levels = (0.05, 0.05 / 300)
    s2 = rng.uniform(0.5, 2.0, 200)
    df = np.exp(rng.uniform(0.5, 8.0, 200))
    q1 = np.sqrt(s2) * st.t.ppf(1 - levels[0], df) * rng.uniform(0.8, 1.2, 200)
    q2 = np.sqrt(s2) * st.t.ppf(1 - levels[1], df) * rng.uniform(0.8, 1.2, 200)
    got_s2, got_df = t_through(q1, q2, levels)
    r1 = np.sqrt(got_s2) * st.t.ppf(1 - levels[0], got_df)
    r2 = np.sqrt(got_s2) * st.t.ppf(1 - levels[1], got_df)
    assert np.all(r1 >= q1 * (1 - 1e-9)) and np.all(r2 >= q2 * (1 - 1e-9))
    # narrowest: it touches one of them at least (both, inside the df grid)
    assert np.all(np.isclose(r1, q1, rtol=2e-3) | np.isclose(r2, q2, rtol=2e-3))
    # a t's own quantiles give it back
    exact1 = np.sqrt(s2) * st.t.ppf(1 - levels[0], df)
    exact2 = np.sqrt(s2) * st.t.ppf(1 - levels[1], df)
    back_s2, back_df = t_through(exact1, exact2, levels)
    inside = df < 1e5
    assert np.allclose(back_s2[inside], s2[inside], rtol=0.01)
    assert np.allclose(np.log(back_df[inside]), np.log(df[inside]), atol=0.02)


def test_mixture_quantile_matches_a_normal_and_a_monte_carlo_mixture() -> None:
    sd = np.asarray([0.01, 0.03])
    one = mixture_quantile(np.asarray([[1.0, 0.0]]), sd, 0.001)
    assert one[0] == pytest.approx(0.01 * st.norm.ppf(0.999), rel=1e-6)
    w = np.asarray([[0.9, 0.1]])
    q = mixture_quantile(w, sd, 0.001)[0]
    tail = 0.9 * st.norm.sf(q / 0.01) + 0.1 * st.norm.sf(q / 0.03)
    assert tail == pytest.approx(0.001, rel=1e-4)
    rng = np.random.default_rng(67)
    x = rng.standard_normal(400_000) * np.where(rng.random(400_000) < 0.1, 0.03, 0.01)
    assert float(np.mean(x > q)) == pytest.approx(0.001, rel=0.15)


def test_a_tests_posterior_follows_its_own_spread_and_one_session_keeps_the_law() -> None:
    log_mean, log_sd = 2.0 * math.log(0.004), 1.6
    spread = np.asarray([0.001**2, 0.02**2, 0.02**2, np.nan])
    n = np.asarray([3.0, 3.0, 10.0, 1.0])
    post, log_s2 = posterior_weights(spread, np.full(4, 1e-6), n, log_mean, log_sd)
    assert post.shape == (4, log_s2.size) and np.allclose(post.sum(axis=1), 1.0)
    mean_s2 = post @ np.exp(log_s2)
    # calm sessions pull a test's sigma^2 down, wide ones up, and more sessions further
    assert mean_s2[0] < mean_s2[3] < mean_s2[1] < mean_s2[2]
    assert math.sqrt(mean_s2[2]) == pytest.approx(0.02, rel=0.3)
    # one stored session: the law itself (its mean is exp(mean + sd^2 / 2))
    assert mean_s2[3] == pytest.approx(math.exp(log_mean + log_sd**2 / 2.0), rel=1e-3)
