"""The engine's vectorised arithmetic: standard errors, intervals and verdict codes, the robust
run shift and the run's own session spread, for many tests at once.

Pure numpy/scipy on arrays. :mod:`pytest_tpw.judging.prior`, :mod:`.shift` and :mod:`.decide`
call these for one test or a suite; ``benchmarks/stats_power.py`` calls them on many
simulated suites at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from pytest_tpw import stats
from pytest_tpw.judging.model import SuiteParams
from pytest_tpw.stats import (
    VERDICT_CODES,
    Params,
    Verdict,
    ar1_df_factor,
    ar1_variance_factor,
    classify_bounds,
    trimmed_stats,
)


def candidate_stats(
    logs: np.ndarray,
    rho: float,
    resolution: np.ndarray | float,
    trim: float,
    rho_cap: float = 0.9,
    sw2_floor: np.ndarray | float = 0.0,
    floor_df: np.ndarray | float = math.inf,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """Trimmed mean, squared SE, kept count, its df and raw variance of log series (last axis).

    Yuen's squared SE, with the winsorised per-window variance floored at ``resolution**2 / 6``
    (sensor resolution) and at ``sw2_floor`` (the same test's stored within-session variance:
    under "no change" the windows are as noisy as before; a noisier candidate keeps its own),
    multiplied by the AR(1) factor f of ``min(rho, rho_cap)``
    (:func:`pytest_tpw.stats.ar1_variance_factor`). The df are ``(h - 1) g``, or
    ``floor_df g`` where the stored variance is the larger (at least 1), with g the share of
    df an AR(1) series keeps for its variance (:func:`pytest_tpw.stats.ar1_df_factor`). The
    last value is
    the series' own winsorised variance (resolution floor included, before the stored floor
    and the AR factor).
    """
    x = np.asarray(logs, dtype=float)
    n = int(x.shape[-1])
    m, d, h = trimmed_stats(x, trim)
    if h < 2:
        nan = np.full(np.shape(m), np.nan)
        return m, d, h, nan, nan
    res = np.broadcast_to(np.asarray(resolution, dtype=float), m.shape)
    scale = (n - 1) / (h * (h - 1))
    own = np.maximum(d / scale, res * res / 6.0)
    d, df = floored_variance(own, n, h, rho, rho_cap, sw2_floor, floor_df)
    return m, d, h, df, own


def floored_variance(
    own: np.ndarray,
    n: int,
    h: int,
    rho: float,
    rho_cap: float,
    sw2_floor: np.ndarray | float,
    floor_df: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Squared SE of the trimmed mean of n windows and its df, from the per-window variance
    ``own`` (h kept), floored at ``sw2_floor`` (df ``floor_df``), AR(1)-widened (see
    :func:`candidate_stats`)."""
    o = np.asarray(own, dtype=float)
    fl = np.broadcast_to(np.asarray(sw2_floor, dtype=float), o.shape)
    use_floor = fl > o
    sw2 = np.where(use_floor, fl, o)
    df = np.where(use_floor, np.broadcast_to(np.asarray(floor_df, dtype=float), o.shape), h - 1.0)
    r = min(max(rho, 0.0), rho_cap)
    d = (n - 1) / (h * (h - 1)) * sw2 * ar1_variance_factor(r, n)
    # correlated windows estimate their variance from fewer independent values
    df = np.maximum(df * ar1_df_factor(r), 1.0)
    return np.asarray(d, dtype=float), np.asarray(df, dtype=float)


def noise_ratio(
    own: np.ndarray | float,
    sw2_floor: np.ndarray | float,
    h: int,
    floor_df: np.ndarray | float,
    rho: float,
    rho_cap: float,
) -> np.ndarray:
    """How much noisier this run's windows are than the stored ones, per test, scaled so
    that it is 1 in the median when they are equally noisy: ``(own / sw2_floor)`` over the
    median of ``F(df_own, df_floor)`` (both df AR(1)-shrunk). NaN without a stored variance.
    The winsorised variance of a few windows runs smaller than that of a stored session's 20
    (its median ratio is about 0.75 for 5 windows under equal noise), so the ratio errs low:
    a noisier run is corrected by somewhat less than it is noisier, never the other way."""
    o = np.asarray(own, dtype=float)
    fl = np.broadcast_to(np.asarray(sw2_floor, dtype=float), o.shape)
    g = ar1_df_factor(min(max(rho, 0.0), rho_cap))
    d1 = max((h - 1) * g, 1.0)
    d2 = np.maximum(np.broadcast_to(np.asarray(floor_df, dtype=float), o.shape) * g, 1.0)
    d2 = np.where(np.isfinite(d2), d2, 1e6)
    q = _st.f.median(d1, d2)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(fl > 0.0, o / np.where(fl > 0.0, fl, 1.0) / q, np.nan)
    return np.asarray(out, dtype=float)


def noise_scale(ratios: np.ndarray, params: SuiteParams) -> float:
    """This run's window noise over the stored runs', from the finished tests' :func:`noise_ratio`
    (their median; at least 1, and 1 with fewer than ``min_tests_robust`` of them). The stored
    within-session variance floors a candidate's own only after scaling by it: a busy runner
    makes every test's windows noisier, and a candidate that stopped after 5 windows cannot
    tell that from its own few values."""
    r = np.asarray(ratios, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < params.min_tests_robust:
        return 1.0
    return max(1.0, float(np.median(r)))


@dataclass(frozen=True)
class ArrayDecision:
    """Output of :func:`decide_arrays` (one entry per test)."""

    est: np.ndarray
    se: np.ndarray
    df: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray
    code: np.ndarray
    d_c: np.ndarray


def satterthwaite(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    num = sum(v for v, _ in parts)
    den = sum(v * v / np.maximum(df, 1e-9) for v, df in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0.0, num * num / np.where(den > 0.0, den, 1.0), np.inf)
    return np.asarray(np.maximum(out, 1.0), dtype=float)


def classify_arrays(
    low: np.ndarray, high: np.ndarray, tolerance: np.ndarray | float, noise_floor: float
) -> np.ndarray:
    """:func:`pytest_tpw.stats.classify_bounds` with a per-test tolerance."""
    return classify_bounds(low, high, tolerance, noise_floor)


def decide_arrays(
    m_c: np.ndarray,
    d_c: np.ndarray,
    df_c: np.ndarray | float,
    mu: np.ndarray,
    var_b: np.ndarray,
    df_b: np.ndarray,
    n_sessions: np.ndarray,
    sb2: np.ndarray | float,
    sb_df: np.ndarray | float,
    shift: np.ndarray | float,
    shift_var: np.ndarray | float,
    tolerance: np.ndarray | float,
    params: Params,
    alpha: float,
    alpha_equiv: float,
) -> ArrayDecision:
    """Change of each test relative to the run shift, its interval, p-value and verdict code.

    ``est = m_c - mu - shift``; variance ``d_c + var_b + (1 + 1/S) sb2 + shift_var`` (the
    candidate's windows, the baseline level's windows, one new session shift plus the mean of S
    stored ones, the run shift's uncertainty); Satterthwaite df over the parts (the run shift
    counted as known-ish, df 1e6). ``p`` is T_df((est - log(1 - noise_floor)) / se).
    """
    s = np.asarray(n_sessions, dtype=float)
    between = (1.0 + 1.0 / np.maximum(s, 1.0)) * np.asarray(sb2, dtype=float)
    sv = np.asarray(shift_var, dtype=float)
    var = d_c + var_b + between + sv
    se = np.sqrt(var)
    df = satterthwaite(
        [
            (
                np.asarray(d_c, dtype=float),
                np.broadcast_to(np.asarray(df_c, dtype=float), se.shape),
            ),
            (np.asarray(var_b, dtype=float), np.asarray(df_b, dtype=float)),
            (
                np.broadcast_to(between, se.shape),
                np.broadcast_to(np.maximum(np.asarray(sb_df, dtype=float), 1.0), se.shape),
            ),
            (np.broadcast_to(sv, se.shape), np.full(se.shape, 1e6)),
        ]
    )
    est = m_c - mu - shift
    with np.errstate(invalid="ignore"):
        low = est - stats.t_ppf(1.0 - alpha_equiv, df) * se
        high = est + stats.t_ppf(1.0 - alpha, df) * se
        p = stats.t_cdf((est - math.log(1.0 - params.noise_floor)) / se, df)
    bad = ~np.isfinite(se) | (se <= 0.0)
    p = np.where(bad, 1.0, p)
    code = classify_arrays(low, high, tolerance, params.noise_floor)
    code = np.where(bad, VERDICT_CODES.index(Verdict.INCONCLUSIVE), code).astype(np.int8)
    return ArrayDecision(est, se, df, low, high, p, code, np.asarray(d_c, dtype=float))


def hopeless(
    dec: ArrayDecision,
    n: int,
    n_last: int,
    alpha: float,
    tolerance: np.ndarray | float,
    min_gain: float,
) -> np.ndarray:
    """Tests that cannot end UNCHANGED by the last look and gain nothing by going on: stop.

    The variance at the last look is projected optimistically: the candidate's part shrinks
    as ``n / n_last`` (the AR(1) factor and the df only grow it), the rest (stored level,
    session shifts, run shift) stays. When even then the interval's lower end, for an
    estimate at 0, lies at or below ``log(1 - tolerance)`` (a normal quantile at ``alpha``),
    UNCHANGED is out of reach. Such a test stops when its estimate is not below 0 (more
    windows could show nothing but an IMPROVED it would show already, and a drop it does not
    show) or when the windows left would narrow its interval by less than ``min_gain`` (a
    share: its noise is the stored sessions', not its windows', and its estimate would barely
    move). Other tests with an estimate below 0 keep measuring (their drop may become a
    finding).
    """
    var = np.square(dec.se)
    d_c = np.asarray(dec.d_c, dtype=float)
    proj = np.sqrt(np.maximum(var - d_c, 0.0) + d_c * (n / max(n_last, 1)))
    z = float(_st.norm.isf(alpha))
    reach = np.log(1.0 - np.asarray(tolerance, dtype=float))
    with np.errstate(invalid="ignore"):
        flat = proj >= (1.0 - min_gain) * dec.se
        out = ((dec.est > 0.0) | flat) & (-z * proj <= reach) & np.isfinite(dec.se)
    return np.asarray(out, dtype=bool)


def huber_shift(
    delta: np.ndarray,
    var: np.ndarray,
    c: float = 1.345,
    biweight: float = 0.0,
    loading: np.ndarray | None = None,
) -> tuple[float, float]:
    """Robust M-estimate of the common location of ``delta`` (each with variance ``var``).

    Huber (tuning ``c``) started from the median, 30 reweighting steps; with ``biweight`` > 0
    then Tukey's biweight (tuning ``biweight``, in standard errors) from the Huber estimate,
    so that tests that clearly changed stop pulling the shift. Sandwich standard error
    ``sqrt(n/(n-1) * sum psi^2 / s^2) / sum psi' / s^2``, honest when the variances are off by
    a common factor. Fewer than 3 values: the inverse-variance mean and its SE.

    ``loading``: each value's loading ``x`` on the location (``delta = x * loc + noise``, a
    regression through the origin; None: all 1), for tests that feel a run's shift unequally.
    """
    d = np.asarray(delta, dtype=float)
    v = np.maximum(np.asarray(var, dtype=float), 1e-12)
    x = np.ones(d.shape) if loading is None else np.asarray(loading, dtype=float)
    n = d.size
    if n == 0:
        return 0.0, math.inf
    w0 = x * x / v
    if n < 3 or float(np.sum(w0)) <= 0.0:
        if float(np.sum(w0)) <= 0.0:
            return 0.0, math.inf
        loc = float(np.sum(x * d / v) / np.sum(w0))
        return loc, math.sqrt(1.0 / float(np.sum(w0)))
    s = np.sqrt(v)
    ok = np.abs(x) > 1e-9
    loc = float(np.median(d[ok] / x[ok])) if loading is not None else float(np.median(d))

    def step(w: np.ndarray) -> float:
        return float(np.sum(w * x * d) / np.sum(w * x * x))

    for _ in range(30):
        z = (d - x * loc) / s
        new = step(np.minimum(1.0, c / np.maximum(np.abs(z), 1e-12)) / v)
        if abs(new - loc) < 1e-12:
            loc = new
            break
        loc = new
    if biweight > 0.0:
        # redescending step: tests that clearly changed get weight 0 instead of a clipped pull
        for _ in range(30):
            u = (d - x * loc) / (s * biweight)
            w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0) / v
            if float(np.sum(w * x * x)) <= 0.0:
                break
            new = step(w)
            if abs(new - loc) < 1e-12:
                loc = new
                break
            loc = new
        u = (d - x * loc) / (s * biweight)
        inside = np.abs(u) < 1.0
        psi = np.where(inside, u * (1.0 - u * u) ** 2, 0.0) * biweight
        dpsi = np.where(inside, (1.0 - u * u) * (1.0 - 5.0 * u * u), 0.0)
    else:
        z = (d - x * loc) / s
        psi = np.clip(z, -c, c)
        dpsi = (np.abs(z) <= c).astype(float)
    den = float(np.sum(dpsi * x * x / v))
    if den <= 0.0:
        return loc, math.sqrt(float(np.median(v)))
    se2 = n / (n - 1) * float(np.sum(psi * psi * x * x / v)) / (den * den)
    return loc, math.sqrt(se2)


def run_sigma_b(
    resid: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    df: np.ndarray | None = None,
    trim_z: float | None = None,
) -> float:
    """sigma_b from the run's own per-test changes (an empirical null, robust to a few changed).

    ``resid`` are per-test changes relative to the run shift, ``var_wo`` their estimated
    variances without the session-shift part (``df`` degrees of freedom each, infinite when
    None), ``k = 1 + 1/S``. Solves ``median_t F_{1,df_t}(r_t^2 / (v_t + k s^2)) = 1/2`` for s
    (the ratio of a squared normal to an estimated variance is F(1, df)); 0 when the spread is
    already explained.

    ``trim_z``: leave out the tests beyond that many standard errors under the estimate and
    solve again on the rest for the median of a null so trimmed (its quantile
    ``P(F < trim_z^2) / 2``), until the set stops changing. Tests that really changed sit in
    the tails and push the plain median up (10 % of a suite changed by -5 % raise it by about
    13 %); trimmed, they do not.
    """
    r2 = np.asarray(resid, dtype=float) ** 2
    v = np.asarray(var_wo, dtype=float)
    k = 1.0 + 1.0 / np.maximum(np.asarray(n_sessions, dtype=float), 1.0)
    dfs = np.full(r2.shape, 1e6) if df is None else np.minimum(np.asarray(df, dtype=float), 1e6)
    found = _solve_null(r2, v, k, dfs, 0.5)
    if trim_z is None or found <= 0.0:
        return found
    kept = np.ones(r2.size, dtype=bool)
    for _ in range(10):
        now = r2 / (v + k * found * found) <= trim_z * trim_z
        if now.sum() < max(5, r2.size // 2) or np.array_equal(now, kept):
            break
        kept = now
        target = 0.5 * np.mean(_st.f.cdf(trim_z * trim_z, 1.0, dfs[kept]))
        found = _solve_null(r2[kept], v[kept], k[kept], dfs[kept], float(target))
        if found <= 0.0:
            break
    return found


def _solve_null(
    r2: np.ndarray, v: np.ndarray, k: np.ndarray, dfs: np.ndarray, target: float
) -> float:
    """The s that puts the median of ``F_{1,df}(r^2 / (v + k s^2))`` at ``target``; 0 when
    it is there already at s = 0."""

    def med(s2: float) -> float:
        return float(np.median(_st.f.cdf(r2 / (v + k * s2), 1.0, dfs)))

    if r2.size == 0 or med(0.0) <= target:
        return 0.0
    lo, hi = 0.0, 4.0 * max(float(np.max(r2)), 1e-12)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if med(mid) > target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(0.5 * (lo + hi))


#: The power at which :func:`detectable_drop` is stated: the drop caught 4 times in 5.
DETECTION_POWER = 0.8


def detectable_drop(
    se: float,
    df: float,
    alpha: float,
    alpha_equiv: float,
    tolerance: float,
    noise_floor: float,
    power: float = DETECTION_POWER,
) -> float:
    """The smallest true drop (a fraction) that a comparison this wide finds ``REGRESSED``
    with chance ``power`` at level ``alpha`` on the regression side (the caller lowers it
    for Benjamini-Hochberg across the suite).

    ``REGRESSED`` needs both ends of the interval: its upper end below ``log(1 -
    noise_floor)`` (the drop is sure) and its lower end at or below ``log(1 - tolerance)``.
    With the estimate normal around the true log ratio ``mu`` with ``se``, both hold with
    chance ``power`` when ``mu <= min(log(1 - floor) - t_a se, log(1 - tol) + t_e se) -
    z_power se`` (``t_a``, ``t_e`` the t quantiles of each side's level). NaN without an
    interval.
    """
    if not (math.isfinite(se) and se > 0.0):
        return math.nan
    d = max(df, 1.0)
    upper = math.log(1.0 - noise_floor) - float(stats.t_ppf(1.0 - alpha, d)) * se
    lower = math.log(1.0 - tolerance) + float(stats.t_ppf(1.0 - alpha_equiv, d)) * se
    mu = min(upper, lower) - float(stats.norm_ppf(power)) * se
    return -math.expm1(mu)
