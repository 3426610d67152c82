"""The run-wide shift: each finished test's change against its stored level, the robust
location of those changes (or of the canaries), the shift the next test's looks use, and the
local shifts of a run whose runner changed during the run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import stats as _st

from pytest_tpw.judging.kernels import (
    candidate_stats,
    huber_shift,
    noise_ratio,
    noise_scale,
    run_sigma_b,
    satterthwaite,
)
from pytest_tpw.judging.model import (
    RUN_SPREAD_SOURCE,
    ChangeArrays,
    RunShift,
    ShiftMethod,
    SuiteParams,
    SuitePrior,
    TestChange,
    TestInput,
    loading_of,
)
from pytest_tpw.judging.prior import check_resolution, logs_of, stored_level, unprofile


def session_spread(
    prior: SuitePrior, shift: RunShift, params: SuiteParams
) -> tuple[float, float, str]:
    """sigma_b^2, its df and where it comes from, for this run's comparisons.

    With a robust run shift, the run's own estimate (df ~ 0.4 x tests, the efficiency of a
    median-based scale) is pooled with the prior when the stored sessions say little (prior
    df < 30). With many, it replaces the stored estimate when it is at least
    ``params.run_spread_ratio`` times larger and significantly so (one-sided F test at
    ``params.run_spread_alpha``): this run's tests disagree with each other
    more than the stored runs' did (a runner that drifts during the run, a clock state that
    tests feel unequally), and that spread is noise of this run, not changes of its tests.
    """
    sb2, df, src = prior.sigma_b**2, prior.sigma_b_df, prior.sigma_b_source
    if shift.method is not ShiftMethod.ROBUST:
        return sb2, df, src
    df_run = 0.4 * shift.n_tests
    s2_run = shift.sigma_b_run**2
    if prior.sigma_b_df < 30.0:
        pooled = (df * sb2 + df_run * s2_run) / (df + df_run)
        return pooled, df + df_run, f"{src} + this run's spread" if df_run > 0 else src
    if df_run < 2.0 or s2_run <= sb2 * params.run_spread_ratio:
        return sb2, df, src
    if s2_run > sb2 * float(_st.f.ppf(1.0 - params.run_spread_alpha, df_run, df)):
        return s2_run, df_run, RUN_SPREAD_SOURCE
    return sb2, df, src


def change_of(
    test: TestInput, prior: SuitePrior, params: SuiteParams | None = None
) -> TestChange | None:
    """What a finished test tells about the run shift; None when it cannot be compared.

    Cheap to keep: the judge may compute it once per finished test and pass the list to
    :func:`shift_from_changes` instead of re-reading every test in :func:`running_shift`.
    """
    p = params if params is not None else SuiteParams()
    check_resolution(test)
    b = stored_level(test, prior, p)
    c = unprofile(logs_of(test.candidate, f"{test.key} (this run)"), prior.profile)
    if b.n_sessions == 0 or c.size < 2:
        return None
    m, d, h, df, own = candidate_stats(
        c, prior.rho, test.resolution, p.verdict.trim, p.rho_cap, b.sw2, b.sw2_df
    )
    if h < 2:
        return None
    noise = noise_ratio(own, b.sw2, h, b.sw2_df, prior.rho, p.rho_cap)
    df_wo = satterthwaite(
        [(np.asarray(float(d)), np.asarray(float(df))), (np.asarray(b.var_b), np.asarray(b.df_b))]
    )
    lam, lam_var = loading_of(prior, test.key)
    return TestChange(
        test.key,
        float(m) - b.mu,
        float(d) + b.var_b,
        b.n_sessions,
        float(df_wo),
        bool(test.canary),
        float(noise),
        lam,
        lam_var,
    )


def shift_from_changes(
    changes: Sequence[TestChange | None], prior: SuitePrior, params: SuiteParams | None = None
) -> RunShift:
    """Run shift from :func:`change_of` results (None entries are skipped)."""
    p = params if params is not None else SuiteParams()
    a = ChangeArrays.of([c for c in changes if c is not None])
    return shift_from_deltas(
        a.delta, a.var_wo, a.n_sessions, a.canary, prior, p, a.df, a.noise, a.loading, a.loading_var
    )


def robust_shift(
    delta: np.ndarray,
    var: np.ndarray,
    params: SuiteParams,
    loading: np.ndarray | None = None,
    loading_var: np.ndarray | None = None,
) -> tuple[float, float]:
    """The run shift from changes ``delta`` with variances ``var`` (each test's loading on it
    and that loading's variance, when the prior learned them): the Huber-biweight estimate,
    then again without the tests it leaves more than ``params.exclude_z`` standard errors away
    on either side, until that set stops changing (at most 5 times). The biweight already
    gives a clearly changed test weight 0, but the changed tests nearer the shift keep some
    and pull it towards them; left out symmetrically, unchanged tests keep it unbiased."""
    x = np.ones(delta.shape) if loading is None else loading
    xv = np.zeros(delta.shape) if loading_var is None else loading_var
    c, bw = params.huber_c, params.biweight_c
    loc, se = huber_shift(delta, var, c, bw, loading)
    keep = np.ones(delta.shape, dtype=bool)
    for _ in range(5):
        z = (delta - x * loc) / np.sqrt(var + xv * loc * loc)
        now = np.abs(z) <= params.exclude_z
        if np.array_equal(now, keep) or np.count_nonzero(now) < params.min_tests_robust:
            break
        keep = now
        loc, se = huber_shift(delta[keep], var[keep], c, bw, None if loading is None else x[keep])
    return loc, se


def shift_from_deltas(
    delta: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    canary: np.ndarray,
    prior: SuitePrior,
    params: SuiteParams,
    df: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    loading: np.ndarray | None = None,
    loading_var: np.ndarray | None = None,
) -> RunShift:
    """Run shift from per-test changes ``delta`` (vectorised core of :func:`running_shift`).

    ``var_wo`` are the changes' variances without the session-shift part, ``df`` their degrees
    of freedom (for the run's own sigma_b; infinite when None), ``noise`` their
    :func:`noise_ratio` (for the run's :func:`noise_scale`; 1 when None), ``loading`` and
    ``loading_var`` each test's loading on the shift and its variance (1 and 0 when None).
    The shift is that of a test of loading 1 (:func:`robust_shift`).
    """
    scale = 1.0 if noise is None else noise_scale(noise, params)
    n = int(delta.size)
    n_can = int(np.count_nonzero(canary))
    x = np.ones(n) if loading is None else np.asarray(loading, dtype=float)
    xv = np.zeros(n) if loading_var is None else np.asarray(loading_var, dtype=float)
    learned = loading is not None and bool(np.any(xv > 0.0))
    if n >= params.min_tests_robust:
        sb2 = prior.sigma_b**2
        k = 1.0 + 1.0 / np.maximum(n_sessions, 1.0)
        lx = x if learned else None
        loc, se = robust_shift(delta, var_wo + k * sb2, params, lx, xv)
        sbr = run_sigma_b(delta - x * loc, var_wo + xv * loc * loc, n_sessions, df)
        out = RunShift(loc, se, n, n_can, ShiftMethod.ROBUST, sbr, scale)
        sb2_run, _, _ = session_spread(prior, out, params)
        if sb2_run != sb2:
            loc, se = robust_shift(delta, var_wo + k * sb2_run, params, lx, xv)
            out = replace(out, shift=loc, se=se)
        return out
    if n_can > 0:
        sel = np.asarray(canary, dtype=bool)
        k = 1.0 + 1.0 / np.maximum(n_sessions[sel], 1.0)
        loc, se = huber_shift(
            delta[sel],
            var_wo[sel] + k * prior.sigma_b**2,
            params.huber_c,
            loading=x[sel] if learned else None,
        )
        return RunShift(loc, se, n, n_can, ShiftMethod.CANARIES, noise_scale=scale)
    return RunShift(0.0, prior.run_sd, n, 0, ShiftMethod.NONE, noise_scale=scale)


def look_shift(
    changes: Sequence[TestChange | None], prior: SuitePrior, params: SuiteParams | None = None
) -> RunShift:
    """The shift the next test's looks are judged against, from :func:`change_of` results of
    the tests finished so far, in run order (None entries are skipped).

    The run shift (:func:`shift_from_changes`), except in a run whose tests disagree because
    its shift changed with time (:func:`local_shift` applies): then the shift of the last
    ``local_width`` finished tests, so that a runner that stepped or drifts does not keep
    every later test looking until the last window.
    """
    p = params if params is not None else SuiteParams()
    a = ChangeArrays.of([c for c in changes if c is not None])
    shift = shift_from_deltas(
        a.delta, a.var_wo, a.n_sessions, a.canary, prior, p, a.df, a.noise, a.loading, a.loading_var
    )
    return recent_shift(
        shift, a.delta, a.var_wo, a.n_sessions, a.df, prior, p, a.loading, a.loading_var
    )


def recent_shift(
    shift: RunShift,
    delta: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    df: np.ndarray | None,
    prior: SuitePrior,
    params: SuiteParams,
    loading: np.ndarray | None = None,
    loading_var: np.ndarray | None = None,
) -> RunShift:
    """Vectorised core of :func:`look_shift`: ``shift`` (the run shift from these changes,
    :func:`shift_from_deltas`), or the local shift of the last ``local_width`` of them when
    :func:`local_shift` applies."""
    got = local_shift(delta, var_wo, n_sessions, df, shift, prior, params, loading, loading_var)
    if got is None:
        return shift
    loc, se, judged = got
    return replace(judged, shift=float(loc[-1]), se=float(se[-1]))


def running_shift(
    done: Sequence[TestInput], prior: SuitePrior, params: SuiteParams | None = None
) -> RunShift:
    """The shift for the next test's looks from the tests finished so far, in run order
    (:func:`look_shift`: the run shift from all tests, or canaries, or none; or the recent
    tests' shift in a run whose shift changed)."""
    return look_shift([change_of(t, prior, params) for t in done], prior, params)


def local_shift(
    delta: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    df: np.ndarray | None,
    shift: RunShift,
    prior: SuitePrior,
    params: SuiteParams,
    loading: np.ndarray | None = None,
    loading_var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, RunShift] | None:
    """Each test's run shift from its ``local_width`` neighbours in run order, when that
    explains why the run's tests disagree; None when they do not disagree (``shift``, the
    one run-wide shift, leaves a spread :func:`session_spread` accepts, and the changes
    about it do not drift in run order: :func:`_drifts_in_order`), when time does not
    explain it, or with too few tests.

    A runner whose state changes during the run (a clock step, a drift, a shift that wanders)
    moves early and late tests by different amounts; one run-wide shift then leaves a spread
    that :func:`session_spread` must treat as noise of every test. Here the shift of test i is the
    Huber-biweight location of the changes of the ``local_width`` tests centred on it (the
    window slides to fit at the ends), unless the windows ending at it and starting at it
    disagree with that one by more than two standard errors (a step nearby): then the
    window on its side of the step, located from its neighbours without its own change
    (:func:`_right_of_step`), and where they leave the side uncertain (within
    :data:`STEP_SIDE_ALPHA` either way) the one of the three nearest to its own change,
    since a blend of both sides fits neither; when the spread left around these local shifts
    (:func:`run_sigma_b`) is within ``run_spread_ratio`` times the stored sigma_b^2, the local
    shifts and their standard errors are returned with ``shift`` carrying that spread (what
    :func:`session_spread` judges the comparisons' sigma_b from). With loadings, each
    window's shift is that of a test of loading 1 (a regression through the origin).
    """
    w = params.local_width
    n = int(delta.size)
    if n < 2 * w:
        return None
    sb2 = prior.sigma_b**2
    v = var_wo + (1.0 + 1.0 / np.maximum(n_sessions, 1.0)) * sb2
    x = np.ones(n) if loading is None else np.asarray(loading, dtype=float)
    xv = np.zeros(n) if loading_var is None else np.asarray(loading_var, dtype=float)
    if session_spread(prior, shift, params)[2] != RUN_SPREAD_SOURCE and not _drifts_in_order(
        delta - x * shift.shift, v + xv * shift.shift**2
    ):
        return None
    loc = np.empty(n)
    se = np.empty(n)
    for i in range(n):
        centre = min(max(i - w // 2, 0), n - w)
        got = [
            _window_shift(
                delta[lo : lo + w].tobytes(),
                v[lo : lo + w].tobytes(),
                params.huber_c,
                params.biweight_c,
                None if loading is None else x[lo : lo + w].tobytes(),
            )
            for lo in (centre, max(i - w + 1, 0), min(i, n - w))
        ]
        loc[i], se[i] = got[0]
        if any(abs(g[0] - loc[i]) > 2.0 * math.hypot(g[1], se[i]) for g in got[1:]):
            # a step between the windows: the test takes the side its neighbours put it on,
            # the step located without its own change; where they cannot tell, the side
            # its own change is nearest (a blend of both sides fits neither)
            lo, hi = max(i - w + 1, 0), min(i + w, n)
            right = _right_of_step(delta[lo:hi], v[lo:hi], x[lo:hi], i - lo)
            if right >= 1.0 - STEP_SIDE_ALPHA:
                loc[i], se[i] = got[2]
            elif right <= STEP_SIDE_ALPHA:
                loc[i], se[i] = got[1]
            else:
                loc[i], se[i] = min(got, key=lambda g: abs(delta[i] - x[i] * g[0]))
    left = run_sigma_b(
        delta - x * loc, var_wo + xv * loc * loc, n_sessions, df, trim_z=params.exclude_z
    )
    if left**2 > sb2 * params.run_spread_ratio:
        return None
    return loc, se, replace(shift, sigma_b_run=left)


#: Level of the test that the changes drift in run order (:func:`_drifts_in_order`).
DRIFT_ALPHA = 0.001


def _drifts_in_order(resid: np.ndarray, var: np.ndarray) -> bool:
    """Whether the changes about one run-wide shift move with run order: the largest
    excursion of their standardised running sum from its straight line (a CUSUM, tied to the
    Brownian bridge), scaled by their robust spread and each clipped at 3, beyond its
    :data:`DRIFT_ALPHA` point. A state that a minority of the run's tests ran in (a clock
    flip late in the run) leaves the majority's shift as the run's, the rest as outliers,
    and a spread the median barely sees; in run order they form one block, which this
    finds."""
    z = resid / np.sqrt(var)
    scale = 1.4826 * float(np.median(np.abs(z - np.median(z))))
    if not scale > 0.0:
        return False
    z = np.clip((z - np.median(z)) / scale, -3.0, 3.0)
    z = z - z.mean()
    bridge = np.abs(np.cumsum(z)) / math.sqrt(z.size * max(float(np.mean(z * z)), 1e-12))
    # P(sup |B| > c) = 2 sum_k (-1)^(k-1) exp(-2 k^2 c^2), its first term a close bound
    c = math.sqrt(math.log(2.0 / DRIFT_ALPHA) / 2.0)
    return float(bridge.max()) > c


#: A test beside a step in the run shift takes one side's shift only when the step's
#: location puts it there with at least this confidence (each way); else the side its own
#: change is nearest (:func:`local_shift`).
STEP_SIDE_ALPHA = 0.01


def _right_of_step(delta: np.ndarray, var: np.ndarray, x: np.ndarray, i: int) -> float:
    """How likely test ``i`` of a span of run order lies after a single step in the run
    shift, the step located from the other tests of the span: each split ``k`` (tests
    ``< k`` before it) is weighed by its likelihood, two shifts fitted by weighted least
    squares (through the origin on the loadings ``x``), with a flat prior over the splits.
    Test ``i`` itself has no weight, and a test far from both fits (a changed test, more
    than 3 standard errors) is left out, so a change cannot choose its own side."""
    wgt = 1.0 / var
    keep = np.ones(delta.size, dtype=bool)
    keep[i] = False
    for _ in range(2):
        ll, fits = _split_fits(delta, wgt, x, keep)
        best = int(np.argmax(ll))
        r = np.where(np.arange(delta.size) <= best, fits[0, best], fits[1, best])
        outlier = np.abs(delta - x * r) * np.sqrt(wgt) > 3.0
        outlier[i] = True
        if np.array_equal(~outlier, keep):
            break
        keep = ~outlier
    ll, _ = _split_fits(delta, wgt, x, keep)
    post = np.exp(ll - ll.max())
    post /= post.sum()
    # split k = index + 1: test i is after the step when the step comes at or before it
    return float(post[:i].sum())


def _split_fits(
    delta: np.ndarray, wgt: np.ndarray, x: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each split of the span into two runs of one shift each (split
    ``j`` puts tests ``<= j`` before the step; the last split has none after it), and the
    two shifts of each (rows: before, after)."""
    w = np.where(keep, wgt, 0.0)
    sxy = np.cumsum(w * x * delta)
    sxx = np.cumsum(w * x * x)
    syy = np.cumsum(w * delta * delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sxx > 0, sxy / sxx, 0.0)
        bxy, bxx = sxy[-1] - sxy, sxx[-1] - sxx
        b = np.where(bxx > 1e-300, bxy / bxx, a)
    rss = (syy - a * sxy) + (syy[-1] - syy - b * bxy)
    return -0.5 * rss, np.vstack([a, b])


@functools.lru_cache(maxsize=4096)
def _window_shift(
    delta: bytes, var: bytes, c: float, biweight: float, loading: bytes | None = None
) -> tuple[float, float]:
    """:func:`huber_shift` of one window of :func:`local_shift`, remembered by its values: the
    windows at either end repeat within a call, and every window but the last few repeats
    when the judge asks again after each finished test (:func:`look_shift`)."""
    x = None if loading is None else np.frombuffer(loading)
    return huber_shift(np.frombuffer(delta), np.frombuffer(var), c, biweight, x)


def shift_variance(shift: RunShift, prior: SuitePrior) -> float:
    """Variance the run shift adds to a test's change: its own, or without an estimate
    (method ``none``) the spread of a new run shift around the mean of S stored ones."""
    if shift.method is ShiftMethod.NONE:
        return shift.se**2 * (1.0 + 1.0 / max(prior.n_sessions, 1))
    return shift.se**2
