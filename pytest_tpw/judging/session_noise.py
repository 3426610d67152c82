"""How far each test moves between sessions: the suite's log-normal law of per-test session
noise, each test's posterior under it, and the tail arithmetic that turns it into a verdict.

Pure numpy/scipy on arrays (one entry per test). :mod:`pytest_tpw.judging.prior` fits the
law once per session from the stored runs (:func:`spread_heterogeneity`) and, where the tests
differ, gives each test the narrowest scaled t (:func:`t_through`) that reaches the upper quantiles
of its posterior mixture (:func:`posterior_weights`, :func:`mixture_quantile`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize as _opt
from scipy import special as _sp
from scipy import stats as _st

from pytest_tpw import stats

GH_NODES, _GH_RAW = np.polynomial.hermite_e.hermegauss(40)
GH_WEIGHTS = _GH_RAW / _GH_RAW.sum()  # a standard normal's Gauss-Hermite rule


def spread_loglik(
    spread: np.ndarray,
    within: np.ndarray,
    k: np.ndarray,
    log_s2: np.ndarray,
) -> np.ndarray:
    """log density of each test's ``spread`` (rows) at each session-shift variance (columns):
    ``spread ~ (s2 + within) chi2_k / k``."""
    scale = 2.0 * (np.exp(log_s2)[None, :] + within[:, None]) / k[:, None]
    h = 0.5 * k[:, None]
    x = spread[:, None] / scale
    return np.asarray((h - 1.0) * np.log(x) - x - _sp.gammaln(h) - np.log(scale))


def _mixture_loglik(
    spread: np.ndarray, within: np.ndarray, k: np.ndarray, mean: float, sd: float
) -> float:
    """Log-likelihood of the spreads under the log-normal mixture of sigma_t^2."""
    ll = spread_loglik(spread, within, k, mean + sd * GH_NODES)
    top = np.max(ll, axis=1, keepdims=True)
    return float(np.sum(top[:, 0] + np.log(np.exp(ll - top) @ GH_WEIGHTS)))


def spread_heterogeneity(
    spread: np.ndarray, within: np.ndarray, n_sessions: np.ndarray
) -> tuple[float, float, float]:
    """Do the tests differ in session noise? A log-normal fit of their sigma_b^2.

    Model: ``log sigma_t^2 ~ N(mean, sd^2)`` across tests, and test t's ``spread`` (variance
    of its S_t stored session levels, run shifts removed) is ``(sigma_t^2 + within_t)
    chi2_{S_t - 1} / (S_t - 1)``. Marginal maximum likelihood (Gauss-Hermite over log
    sigma^2) with and without ``sd``; returns ``(mean, sd, p)`` where ``p`` is the likelihood
    ratio test of ``sd = 0`` (half chi2_1 on the boundary). Tests with fewer than 2 sessions
    do not enter; fewer than 10 such tests: ``(nan, 0, 1)``.
    """
    sp = np.asarray(spread, dtype=float)
    w = np.maximum(np.asarray(within, dtype=float), 0.0)
    s = np.asarray(n_sessions, dtype=float)
    use = (s >= 2.0) & np.isfinite(sp) & np.isfinite(w) & (sp > 0.0)
    if np.count_nonzero(use) < 10:
        return math.nan, 0.0, 1.0
    sp, w, k = sp[use], w[use], s[use] - 1.0
    lo = math.log(max(float(np.median(sp)), 1e-12)) - 20.0
    hi = math.log(max(float(np.max(sp)), 1e-12)) + 2.0

    r0 = _opt.minimize_scalar(
        lambda m: -_mixture_loglik(sp, w, k, m, 0.0), bounds=(lo, hi), method="bounded"
    )
    start = float(r0.x)
    r1 = _opt.minimize(
        lambda x: -_mixture_loglik(sp, w, k, float(x[0]), math.exp(float(x[1]))),
        np.asarray([start, 0.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-4, "maxiter": 400},
    )
    mean, sd = float(r1.x[0]), math.exp(float(r1.x[1]))
    stat = 2.0 * (float(-r1.fun) - float(-r0.fun))
    if not (math.isfinite(stat) and stat > 0.0 and sd > 1e-3):
        return start, 0.0, 1.0
    return mean, sd, 0.5 * float(_st.chi2.sf(stat, 1))


def mixture_quantile(weights: np.ndarray, sd: np.ndarray, level: float) -> np.ndarray:
    """Upper ``level`` quantile of each row's scale mixture of normals: ``sum_j weights[:, j]
    N(0, sd[j]^2)`` (bisection on log x)."""
    lo = np.full(weights.shape[0], math.log(float(np.min(sd))) - 5.0)
    hi = np.full(weights.shape[0], math.log(float(np.max(sd))) + 5.0)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        tail = np.einsum("ij,ij->i", stats.norm_sf(np.exp(mid)[:, None] / sd[None, :]), weights)
        above = tail > level
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.asarray(np.exp(0.5 * (lo + hi)), dtype=float)


def posterior_weights(
    spread: np.ndarray,
    within: np.ndarray,
    n_sessions: np.ndarray,
    log_mean: float,
    log_sd: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each test's posterior over the law's nodes, and the nodes' ``log sigma^2``.

    The prior is ``log sigma^2 ~ N(log_mean, log_sd^2)`` on :data:`GH_NODES`; a test with
    S >= 2 stored sessions and a positive ``spread`` (their variance, ddof 1; ``within`` their
    mean squared standard error) reweights it by :func:`spread_loglik`; others keep it.
    Returns ``(weights (tests, nodes), log_s2 (nodes,))``.
    """
    s = np.asarray(n_sessions, dtype=float)
    sp = np.asarray(spread, dtype=float)
    w = np.asarray(within, dtype=float)
    log_s2 = log_mean + log_sd * GH_NODES
    post = np.broadcast_to(np.log(GH_WEIGHTS), (sp.size, GH_NODES.size)).copy()
    multi = (s >= 2.0) & np.isfinite(sp) & (sp > 0.0)
    if np.any(multi):
        post[multi] += spread_loglik(sp[multi], np.maximum(w[multi], 0.0), s[multi] - 1.0, log_s2)
    post = np.exp(post - np.max(post, axis=1, keepdims=True))
    post /= np.sum(post, axis=1, keepdims=True)
    return post, np.asarray(log_s2, dtype=float)


_ENV_DF = np.geomspace(1.0, 1e6, 2401)  # t_through's df grid


@functools.lru_cache(maxsize=64)
def _t_ratio(p1: float, p2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t quantiles at ``1 - p1`` and ``1 - p2`` on the df grid, and their ratio (falls)."""
    t1 = stats.t_ppf(1.0 - p1, _ENV_DF)
    t2 = stats.t_ppf(1.0 - p2, _ENV_DF)
    return t1, t2, t2 / t1


def t_through(
    q1: np.ndarray, q2: np.ndarray, levels: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The narrowest scaled t (variance scale, df) whose upper quantiles at ``levels`` reach
    ``q1`` and ``q2`` (df on a grid from 1 to 1e6)."""
    p1, p2 = levels
    t1, t2, ratio = _t_ratio(float(p1), float(p2))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(q1 > 0.0, q2 / q1, ratio[-1])
    # the grid's df whose ratio is just at or above the wanted one: reaches both quantiles
    at = np.clip(np.searchsorted(-ratio, -want, side="right") - 1, 0, _ENV_DF.size - 1)
    df = _ENV_DF[at]
    scale = np.maximum(q1 / t1[at], q2 / t2[at])
    return np.asarray(scale * scale, dtype=float), np.asarray(df, dtype=float)
