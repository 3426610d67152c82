"""What the stored baselines say: the suite's prior (session spread pooled across tests, the
spread of run shifts, the within-session profile, autocorrelation), each test's stored level,
and each test's own session spread where the suite's tests differ.

Built once per session from the stored runs alone (:func:`suite_prior`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as _st

from pytest_tpw import stats
from pytest_tpw.judging.kernels import candidate_stats
from pytest_tpw.judging.model import StoredRun, SuiteParams, SuitePrior, TestInput, loading_of
from pytest_tpw.judging.session_noise import (
    mixture_quantile,
    posterior_weights,
    spread_heterogeneity,
    t_through,
)
from pytest_tpw.stats import lag1_autocorrelation, positive_logs


def logs_of(values: Sequence[float], what: str) -> np.ndarray:
    return positive_logs(values, f"{what}:")


def check_resolution(test: TestInput) -> None:
    if not (math.isfinite(test.resolution) and test.resolution >= 0.0):
        raise ValueError(f"{test.key}: resolution must be finite and >= 0, got {test.resolution}")


def suite_prior(
    baselines: Mapping[str, Sequence[StoredRun]],
    params: SuiteParams | None = None,
    resolution: Mapping[str, float] | None = None,
) -> SuitePrior:
    """Noise of the suite from its stored baselines alone (once per session).

    ``baselines`` maps each test key to its stored runs (oldest first). Runs sharing a
    ``session_id`` belong to one stored suite run. ``resolution`` (optional, per key) floors
    the per-window SD as in :class:`TestInput`. See :func:`prior_from_table`.
    """
    p = params if params is not None else SuiteParams()
    keys = list(baselines)
    ids: list[str] = []
    for k in keys:
        for run in baselines[k]:
            if run.session_id not in ids:
                ids.append(run.session_id)
    where = [(i, run.session_id) for i, k in enumerate(keys) for run in baselines[k]]
    series = [
        logs_of(run.values, f"{k} (stored {run.session_id})") for k in keys for run in baselines[k]
    ]
    lengths = [x.size for x in series if x.size >= 4]
    profile = np.zeros(0)
    if lengths:
        modal = max(set(lengths), key=lengths.count)
        rows = [x for x in series if x.size == modal]
        profile = position_profile(np.stack(rows), p.min_profile_series)
    series = [unprofile(x, profile) for x in series]
    rho, _ = lag1_autocorrelation(series)
    rho = min(max(rho, 0.0), p.rho_cap)
    m = np.full((len(keys), len(ids)), np.nan)
    d = np.full((len(keys), len(ids)), np.nan)
    col = {sid: j for j, sid in enumerate(ids)}
    # every (test, session) series of one length at once
    by_length: dict[int, list[int]] = {}
    for s_i, x in enumerate(series):
        if x.size >= 2:
            by_length.setdefault(x.size, []).append(s_i)
    for members in by_length.values():
        res = np.asarray(
            [
                0.0 if resolution is None else float(resolution.get(keys[where[s_i][0]], 0.0))
                for s_i in members
            ]
        )
        stack = np.stack([series[s_i] for s_i in members])
        mi, di, hi, _, _ = candidate_stats(stack, rho, res, p.verdict.trim, p.rho_cap)
        if hi < 2:
            continue
        for row, s_i in enumerate(members):
            i, sid = where[s_i]
            m[i, col[sid]] = float(mi[row])
            d[i, col[sid]] = float(di[row])
    prior, _ = prior_from_table(m, d, p, rho, ids, keys)
    return replace(prior, profile=tuple(float(v) for v in profile))


def prior_from_table(
    m: np.ndarray,
    d: np.ndarray,
    params: SuiteParams,
    rho: float = 0.0,
    session_ids: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> tuple[SuitePrior, np.ndarray]:
    """Suite prior from per-(test, session) trimmed means ``m`` and squared SEs ``d``.

    Arrays of shape (tests, sessions), NaN where a test has no usable stored run in a session.
    Two-way fit ``m = mu_t + R_s + residual`` by alternating means over tests' sessions and
    medians over sessions' tests (unequal session sets handled; R centred on mean 0 over
    sessions). Pooled ``sigma_b^2 = (sum_t sum_s res^2 - sum_t (1 - 1/S_t) sum_s d) / sum_t
    (S_t - 1)`` floored at 0, combined with the prior by degrees of freedom. Run spread: the
    variance of the R_s less their median-based sampling variance, combined with its prior.
    When the tests feel the stored shifts unequally (:func:`learn_loadings`), the fit is
    ``m = mu_t + lambda_t R_s + residual`` and sigma_b comes from the residuals of each
    test's own slope. ``keys`` name the rows in the prior's ``loadings`` (row numbers when
    None). Returns the prior and the per-session shifts R (sessions,).
    """
    mm = np.asarray(m, dtype=float)
    dd = np.asarray(d, dtype=float)
    present = np.isfinite(mm) & np.isfinite(dd)
    n_t, n_s = mm.shape if mm.ndim == 2 else (0, 0)
    ids = list(session_ids) if session_ids is not None else [str(i) for i in range(n_s)]
    used_s = present.any(axis=0) if n_s else np.zeros(0, dtype=bool)
    r = np.zeros(n_s)
    mu = np.zeros(n_t)
    s_t = present.sum(axis=1) if n_t else np.zeros(0, dtype=int)
    has = s_t > 0
    mz = np.where(present, mm, 0.0)
    if n_s > 1 and np.count_nonzero(used_s) > 1:
        for _ in range(20):
            mu = np.where(
                has, np.sum(np.where(present, mz - r, 0.0), axis=1) / np.maximum(s_t, 1), 0.0
            )
            dev = np.where(present, mm - mu[:, None], np.nan)
            with np.errstate(all="ignore"):
                new = np.where(used_s, np.nanmedian(np.where(used_s, dev, 0.0), axis=0), 0.0)
            new = new - float(np.mean(new[used_s]))
            if np.max(np.abs(new - r)) < 1e-12:
                r = new
                break
            r = new
    lo = learn_loadings(mm, dd, present, r, params)
    lam = lo.loading[:, None] if lo.used else np.ones((n_t, 1))
    mu = np.where(
        has, np.sum(np.where(present, mz - lam * r, 0.0), axis=1) / np.maximum(s_t, 1), 0.0
    )
    res = np.where(present, mm - mu[:, None] - lam * r[None, :], 0.0)
    multi = s_t >= 2
    df_pool = float(np.sum(s_t[multi] - 1))
    sb2_pool = 0.0
    sb2_robust = math.nan
    h_mean, h_sd, h_p = math.nan, 0.0, 1.0
    if df_pool > 0:
        ss = float(np.sum(res[multi] ** 2))
        within = float(
            np.sum((1.0 - 1.0 / s_t[multi]) * np.sum(np.where(present, dd, 0.0)[multi], axis=1))
        )
        sb2_pool = max((ss - within) / df_pool, 0.0)
        if lo.used:  # each test's own slope took one df: its residuals are sigma_b's
            sb2_pool, df_pool = lo.sb2, lo.df
        # per test: spread of its session levels over its expected chi2 median, less its
        # windows' part; the median over tests ignores the few with a jumpy session
        s_m = s_t[multi]
        tot = np.sum(res[multi] ** 2, axis=1) / (s_m - 1)
        dbar = np.sum(np.where(present, dd, 0.0)[multi], axis=1) / s_m
        if lo.used:  # about each test's own slope: S - 2 df, the count of an S - 1 session test
            tot, k_m = slope_spread(mm, r)
            keep = np.isfinite(tot)
            dbar = (np.sum(np.where(present, dd, 0.0), axis=1) / np.maximum(s_t, 1))[keep]
            tot, s_m = tot[keep], k_m[keep]
        qmed = _st.chi2.median(s_m - 1) / (s_m - 1)
        sb2_robust = max(float(np.median(tot / qmed - dbar)), 0.0)
        if not lo.used or np.median(s_m) >= 3:  # one df a test cannot tell tests apart
            h_mean, h_sd, h_p = spread_heterogeneity(tot, dbar, s_m)
    w0 = params.sigma_b_prior_df
    sb2 = (w0 * params.sigma_b_prior**2 + df_pool * sb2_pool) / (w0 + df_pool)
    source = "prior" if df_pool == 0 else ("pooled" if df_pool >= 10 * w0 else "pooled+prior")
    # run-wide spread
    k_s = int(np.count_nonzero(used_s))
    rs = r[used_s]
    run_var_est = 0.0
    if k_s >= 2:
        n_per = present.sum(axis=0)[used_s]
        v_t = (sb2 + np.nanmean(np.where(present, dd, np.nan))) if present.any() else 0.0
        samp = float(np.mean(math.pi / 2.0 * v_t / np.maximum(n_per, 1)))
        run_var_est = max(float(np.var(rs, ddof=1)) - samp, 0.0)
    df_r = float(max(k_s - 1, 0))
    wr = params.run_sd_prior_df
    run_var = (wr * params.run_sd_prior**2 + df_r * run_var_est) / (wr + df_r)
    prior = SuitePrior(
        sigma_b=math.sqrt(sb2),
        sigma_b_df=w0 + df_pool,
        sigma_b_source=source,
        run_sd=math.sqrt(run_var),
        run_sd_df=wr + df_r,
        run_shifts={ids[i]: float(r[i]) for i in range(n_s) if used_s[i]},
        n_sessions=k_s,
        n_tests=int(np.count_nonzero(has)),
        rho=float(rho),
        sigma_b_robust=math.sqrt(sb2_robust) if math.isfinite(sb2_robust) else math.nan,
        sigma_b_log_mean=h_mean,
        sigma_b_log_sd=h_sd if h_p < params.hetero_alpha else 0.0,
        sigma_b_spread_p=h_p,
        loadings=lo.named(keys) if lo.used else {},
        loading_sd=lo.tau if lo.used else 0.0,
        loading_p=lo.p,
    )
    return prior, r


def slope_spread(m: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's residual variance about its own least-squares line on the run shifts ``r``
    (``m``: (tests, sessions), NaN where absent), and the session count whose ``S - 1`` gives
    its degrees of freedom (``S - 2``: the line took two): how far a test's stored sessions
    disagree once its own loading is allowed for. NaN where fewer than 3 sessions or shifts
    that do not differ."""
    mm = np.atleast_2d(np.asarray(m, dtype=float))
    present = np.isfinite(mm)
    s_t = present.sum(axis=1).astype(float)
    rr = np.broadcast_to(np.asarray(r, dtype=float)[None, :], mm.shape)
    rbar = np.sum(np.where(present, rr, 0.0), axis=1) / np.maximum(s_t, 1.0)
    x = np.where(present, rr - rbar[:, None], 0.0)
    ybar = np.sum(np.where(present, mm, 0.0), axis=1) / np.maximum(s_t, 1.0)
    y = np.where(present, mm - ybar[:, None], 0.0)
    sxx = np.sum(x * x, axis=1)
    ok = (s_t >= 3) & (sxx > 1e-12)
    slope = np.sum(x * y, axis=1) / np.where(ok, sxx, 1.0)
    sse = np.sum((y - slope[:, None] * x) ** 2, axis=1)
    spread = np.where(ok, sse / np.maximum(s_t - 2.0, 1.0), np.nan)
    return spread, s_t - 1.0


@dataclass(frozen=True)
class Loadings:
    """What :func:`learn_loadings` found: each test's loading and its variance (rows of the
    table), the suite's spread of loadings ``tau``, the test's p-value, whether they are used,
    and sigma_b^2 from the residuals of each test's own slope with its df."""

    loading: np.ndarray
    var: np.ndarray
    tau: float
    p: float
    used: bool
    sb2: float
    df: float

    def named(self, keys: Sequence[str] | None) -> dict[str, tuple[float, float]]:
        names = list(keys) if keys is not None else [str(i) for i in range(self.loading.size)]
        return {k: (float(self.loading[i]), float(self.var[i])) for i, k in enumerate(names)}


def learn_loadings(
    m: np.ndarray, d: np.ndarray, present: np.ndarray, r: np.ndarray, params: SuiteParams
) -> Loadings:
    """Each test's loading on the stored runs' shifts: how much of a run-wide shift it feels.

    A clock or power state moves compute-bound tests with the SM clock and memory-bound ones
    much less; one run-wide shift then leaves each test off by its own share of it. Per test
    with stored sessions in runs whose shifts ``r`` differ: the slope ``lambda_t`` of its
    session levels on ``r`` (least squares, variance ``(sigma_b^2 + its windows' part) /
    Sxx_t``), sigma_b^2 from the residuals about each test's own slope (df ``S_t - 2``), and,
    when the stored shifts span at least the noise floor (a smaller spread cannot matter),
    a chi-square test at ``params.loading_alpha`` that the slopes differ more than that
    variance explains. When it rejects, each loading is shrunk toward 1 by empirical Bayes
    (``tau^2`` the slopes' robust spread less their median sampling variance): ``1 + w (slope
    - 1)`` with ``w = tau^2 / (tau^2 + v_t)`` and variance ``w v_t``; a test whose sessions
    cannot tell (one session, or all in runs of one shift) keeps 1 with variance ``tau^2``.
    """
    n_t = m.shape[0] if m.ndim == 2 else 0
    ones = np.ones(n_t)
    none = Loadings(ones, np.zeros(n_t), 0.0, 1.0, False, 0.0, 0.0)
    used_r = r[present.any(axis=0)] if n_t else r[:0]
    if n_t == 0 or m.shape[1] < 2 or np.ptp(used_r) < params.verdict.noise_floor:
        # shifts within the noise floor: a wrong loading would move a test by a fraction
        # of a fraction of a per cent, and noise alone could make the slopes look different
        return none
    s_t = present.sum(axis=1).astype(float)
    rr = np.where(present, r[None, :], 0.0)
    rbar = np.sum(rr, axis=1) / np.maximum(s_t, 1.0)
    x = np.where(present, r[None, :] - rbar[:, None], 0.0)
    sxx = np.sum(x * x, axis=1)
    mz = np.where(present, m, 0.0)
    ybar = np.sum(mz, axis=1) / np.maximum(s_t, 1.0)
    y = np.where(present, m - ybar[:, None], 0.0)
    dz = np.where(present, d, 0.0)
    fit = (s_t >= 3) & (sxx > 1e-12)
    if np.count_nonzero(fit) < 10:
        return none
    slope = np.where(fit, np.sum(x * y, axis=1) / np.where(fit, sxx, 1.0), 1.0)
    e = np.where(present, y - slope[:, None] * x, 0.0)
    lev = 1.0 / np.maximum(s_t, 1.0)[:, None] + x * x / np.where(fit, sxx, 1.0)[:, None]
    windows = np.sum(np.where(present, dz * (1.0 - lev), 0.0), axis=1)
    df = float(np.sum(s_t[fit] - 2.0))
    sb2 = max(float(np.sum(np.sum(e * e, axis=1)[fit] - windows[fit])) / df, 0.0)
    dbar = np.sum(dz, axis=1) / np.maximum(s_t, 1.0)
    v = (sb2 + dbar[fit]) / sxx[fit]
    lam = slope[fit]
    w0 = 1.0 / v
    mean = float(np.sum(w0 * lam) / np.sum(w0))
    q = float(np.sum(w0 * (lam - mean) ** 2))
    p_value = float(_st.chi2.sf(q, lam.size - 1))
    mad = 1.4826 * float(np.median(np.abs(lam - np.median(lam))))
    tau2 = max(mad * mad - float(np.median(v)), 0.0)
    if p_value >= params.loading_alpha or tau2 <= 0.0:
        return Loadings(ones, np.zeros(n_t), 0.0, p_value, False, sb2, df)
    w = tau2 / (tau2 + v)
    loading = ones.copy()
    var = np.full(n_t, tau2)
    loading[fit] = 1.0 + w * (lam - 1.0)
    var[fit] = w * v
    return Loadings(loading, var, math.sqrt(tau2), p_value, True, sb2, df)


def position_profile(rows: np.ndarray, min_series: int = 30) -> np.ndarray:
    """Mean level of each window position relative to its series' mean (shape (L,)).

    ``rows`` (series, L): stored sessions of one length, in time order. In each row values
    beyond 3 MADs of its median are left out (throttled windows) and the rest centred; the
    profile is the mean over rows per position, centred. A
    warm-up or thermal trend shared by the suite's tests then stops biasing a candidate that
    stopped after 5 windows against stored sessions of 20. Zeros with fewer than
    ``min_series`` rows (too noisy to subtract).
    """
    x = np.asarray(rows, dtype=float)
    if x.ndim != 2 or x.shape[0] < max(min_series, 1):
        return np.zeros(x.shape[-1] if x.ndim == 2 else 0)
    x = x - np.median(x, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(x), axis=1, keepdims=True)
    ok = np.abs(x) <= 3.0 * mad
    cnt = np.maximum(ok.sum(axis=1, keepdims=True), 1)
    xc = x - np.sum(np.where(ok, x, 0.0), axis=1, keepdims=True) / cnt
    per = np.maximum(ok.sum(axis=0), 1)
    prof = np.sum(np.where(ok, xc, 0.0), axis=0) / per
    return np.asarray(prof - prof.mean(), dtype=float)


def unprofile(logs: np.ndarray, profile: Sequence[float] | np.ndarray) -> np.ndarray:
    """``logs`` minus the profile position by position (its last value beyond its length)."""
    x = np.asarray(logs, dtype=float)
    prof = np.asarray(profile, dtype=float)
    if prof.size == 0 or x.shape[-1] == 0:
        return x
    n = x.shape[-1]
    if n <= prof.size:
        return np.asarray(x - prof[:n], dtype=float)
    return np.asarray(x - np.concatenate([prof, np.full(n - prof.size, prof[-1])]), dtype=float)


@dataclass(frozen=True)
class StoredLevel:
    mu: float
    var_b: float
    df_b: float
    n_sessions: int
    n_windows: int
    logs: np.ndarray
    sw2: float  # pooled within-session winsorised variance per window
    sw2_df: float
    spread: float = math.nan  # variance of the stored session levels (ddof 1)
    #: sessions whose ``- 1`` is ``spread``'s df (one fewer when it is about the test's own
    #: line on the run shifts, see :func:`slope_spread`); 0: as ``n_sessions``
    spread_sessions: int = 0

    @property
    def within(self) -> float:
        """Mean squared standard error of the stored session levels."""
        return self.var_b * self.n_sessions


def stored_level(test: TestInput, prior: SuitePrior, p: SuiteParams) -> StoredLevel:
    """A test's stored level and its variance under ``prior`` (kept in ``prior.levels``: the
    same stored runs give the same level at every look)."""
    key = (
        id(test.baseline),
        test.resolution,
        p.verdict.trim,
        p.rho_cap,
        prior.rho,
        prior.profile,
        id(prior.run_shifts),
        id(prior.loadings),
    )
    kept = prior.levels.get(key)
    if kept is not None and kept[0] is test.baseline:  # the same object, not a reused id
        level: StoredLevel = kept[1]
        return level
    level = _stored_level(test, prior, p)
    prior.levels[key] = (test.baseline, level)
    return level


def _stored_level(test: TestInput, prior: SuitePrior, p: SuiteParams) -> StoredLevel:
    all_logs = [
        unprofile(logs_of(run.values, f"{test.key} (stored {run.session_id})"), prior.profile)
        for run in test.baseline
    ]
    # every stored session of one length at once, kept in session order
    lam = loading_of(prior, test.key)[0]
    ms_at: dict[int, tuple[float, float, float, float, float]] = {}
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(all_logs):
        if x.size >= 2:
            by_length.setdefault(x.size, []).append(i)
    for members in by_length.values():
        stack = np.stack([all_logs[i] for i in members])
        m, d, h, df, own = candidate_stats(
            stack, prior.rho, test.resolution, p.verdict.trim, p.rho_cap
        )
        if h < 2:
            continue
        for row, i in enumerate(members):
            shift = lam * prior.run_shifts.get(test.baseline[i].session_id, 0.0)
            ms_at[i] = (
                float(m[row]) - shift,
                float(d[row]),
                float(df[row]),
                float(h - 1),  # the floor's df: candidate_stats shrinks them for AR(1) itself
                float(own[row]),
            )
    order = sorted(ms_at)
    kept = [ms_at[i] for i in order]
    ms = [k[0] for k in kept]
    ds = [k[1] for k in kept]
    dfs = [k[2] for k in kept]
    raw_dfs = [k[3] for k in kept]
    owns = [k[4] for k in kept]
    logs = np.concatenate(all_logs) if all_logs else np.empty(0)
    s = len(ms)
    if s == 0:
        return StoredLevel(math.nan, math.nan, math.nan, 0, int(logs.size), logs, 0.0, math.inf)
    var_b = float(np.sum(ds)) / (s * s)
    den = float(np.sum(np.square(ds) / np.asarray(dfs))) / (s**4)
    df_b = var_b * var_b / den if den > 0 else math.inf
    spread, count = float(np.var(ms, ddof=1)) if s >= 2 else math.nan, s
    if prior.loadings and s >= 3:
        shifts = [prior.run_shifts.get(test.baseline[i].session_id, 0.0) for i in order]
        raw = np.asarray(ms) + lam * np.asarray(shifts)
        got, k = slope_spread(raw[None, :], np.asarray(shifts))
        if math.isfinite(float(got[0])):
            spread, count = float(got[0]), int(k[0])
    return StoredLevel(
        float(np.mean(ms)),
        var_b,
        df_b,
        s,
        int(logs.size),
        logs,
        float(np.mean(owns)),
        sum(raw_dfs),
        spread,
        count,
    )


def tail_levels(prior: SuitePrior, params: SuiteParams) -> tuple[float, float]:
    """Where a test's session term must reach: the verdict's ``alpha`` and
    Benjamini-Hochberg's smallest threshold ``fdr_q / n_tests``."""
    return params.verdict.alpha, params.verdict.fdr_q / max(prior.n_tests, 1)


def per_test_sigma_b2(
    sb2: float,
    prior: SuitePrior,
    spread: np.ndarray,
    within: np.ndarray,
    n_sessions: np.ndarray,
    sb_df: float,
    params: SuiteParams,
) -> tuple[np.ndarray, np.ndarray]:
    """sigma_b^2 and its df for each test: the suite's, or the test's own where tests differ.

    ``spread``: variance of the test's stored session levels (run shifts removed, ddof 1);
    ``within``: their mean squared standard error.

    * Tests that differ in session noise (``prior.sigma_b_log_sd`` > 0, see
      :func:`spread_heterogeneity`): a test's next session shift is a scale mixture of
      normals over the suite's log-normal sigma^2, weighted by how well each explains its own
      ``spread`` (a test with one stored session gets the suite's distribution). Returned is
      the narrowest scaled t (:func:`t_through`) reaching the upper quantiles of both that
      mixture and the suite's ``t(sb2, sb_df)`` at the verdict's ``alpha`` and at
      Benjamini-Hochberg's smallest threshold ``fdr_q / n_tests``: never narrower than the
      suite's, and heavy-tailed where the test's few sessions leave a large sigma open.
      ``sb2 / prior.sigma_b^2`` above 1 (this run's tests disagree more than the stored
      runs', see ``session_spread``) widens every test's mixture alike.
    * Otherwise a test with S >= 2 sessions whose ``spread`` exceeds ``F(1 -
      test_spread_alpha; S - 1, sb_df)`` times ``sigma_b_robust^2 + within`` has a session
      unlike the others (a jump the suite's Gaussian sigma_b does not expect); its own
      ``max(spread - within, 0)`` (S - 1 df) is then pooled with ``sb2`` (weight
      ``test_spread_df``), never below ``sb2``. Others keep ``sb2`` and ``sb_df``. The robust
      reference keeps the check sharp when jumpy sessions inflate the pooled sigma_b.
    """
    s = np.asarray(n_sessions, dtype=float)
    sp = np.asarray(spread, dtype=float)
    w = np.asarray(within, dtype=float)
    base = np.full(sp.shape, float(sb2))
    base_df = np.full(sp.shape, float(sb_df))
    if prior.sigma_b_log_sd > 0.0:
        post, log_s2 = posterior_weights(sp, w, s, prior.sigma_b_log_mean, prior.sigma_b_log_sd)
        widen = max(float(sb2) / prior.sigma_b**2, 1.0) if prior.sigma_b > 0.0 else 1.0
        sd = np.sqrt(np.exp(log_s2) * widen)
        levels = tail_levels(prior, params)
        b_df = np.maximum(base_df, 1.0)
        q1, q2 = (
            np.maximum(mixture_quantile(post, sd, lv), np.sqrt(base) * stats.t_ppf(1.0 - lv, b_df))
            for lv in levels
        )
        return t_through(q1, q2, levels)
    if not math.isfinite(prior.sigma_b_robust):
        return base, base_df
    k = np.maximum(s - 1.0, 1.0)
    crit = _st.f.ppf(1.0 - params.test_spread_alpha, k, max(sb_df, 1.0))
    with np.errstate(invalid="ignore"):
        odd = (s >= 2.0) & np.isfinite(sp) & (sp > crit * (prior.sigma_b_robust**2 + w))
    own = np.maximum(np.nan_to_num(sp - w), 0.0)
    nu0 = params.test_spread_df
    pooled = (nu0 * sb2 + (s - 1.0) * own) / (nu0 + s - 1.0)
    return np.asarray(np.where(odd, np.maximum(base, pooled), base), dtype=float), base_df
