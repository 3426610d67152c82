"""Two-level verdicts for a whole suite run: a run-wide shift plus per-test changes.

Pure numpy/scipy on plain data (no pytest, nothing from the meter/session/judge layers). The
model, on log tokens/J of window w of test t in run r::

    y = mu_t + R_r + b_{t,r} + e_{t,r,w}

``R_r`` is shared by every test of a run on one hardware key (clock state, board, driver,
fleet drift), ``b_{t,r}`` is the test's own session shift (SD ``sigma_b``, pooled across the
suite) and ``e`` the window noise (autocorrelation and sensor resolution included in its
standard error). docs/verdicts.md derives it. How the judge calls it::

    prior = suite_prior({key: stored_runs, ...}, params)          # once per session
    changes = []
    for test in session order:
        shift = look_shift(changes, prior, params)               # = running_shift(done)
        for j, k in enumerate(params.verdict.looks):             # after k windows
            stop, cmp = look(test_with_k_windows, prior, shift, params, j, n_looks)
            if stop: break                                       # cmp is provisional
        done.append(test_with_its_windows)
        changes.append(change_of(test_with_its_windows, prior, params))
    decision = judge_suite(done, prior, params)                  # final, after BH

Tests of different hardware keys are separate suites (one prior and one decision per key).

* :class:`StoredRun` one stored session of one measurement; ``session_id`` is the same for
  every test of that stored run (the pytest session's start date).
* :class:`TestInput` one measurement of this run: its stored runs, this run's windows in time
  order, per-test tolerance, ``canary`` flag and the sensor's relative ``resolution``.
* :func:`suite_prior` pools ``sigma_b`` across tests after removing each stored run's shift,
  estimates the spread of run shifts, the suite's within-session profile (removed from every
  window) and the lag-1 autocorrelation of windows; priors cover few stored sessions (see
  :class:`SuiteParams`).
* :func:`running_shift` the run shift so far (Huber-then-biweight location of per-test
  changes, or of the canaries when the suite is small, or none; the last tests' shift in a
  run whose shift changed with time) used by :func:`look`; :func:`change_of` +
  :func:`look_shift` give the same incrementally.
* :func:`look` one interim or final decision for one test: stops as soon as the interval lies
  inside one verdict region (REGRESSED, MINOR_REGRESSION, UNCHANGED or IMPROVED) or when it
  is too noisy to be decided by the last look (:func:`hopeless`), every look at Pocock's level
  on both sides (:func:`pytest_tpw.stats.look_level`); its comparison is provisional, the
  final one comes from :func:`judge_suite`.
* :func:`judge_suite` the final run shift with its verdict against stored run shifts, and each
  test's final :class:`~pytest_tpw.stats.Comparison` relative to it after Benjamini-Hochberg
  (p-values Bonferroni-corrected for the looks). A canary never fails: its REGRESSED is
  reported as INCONCLUSIVE with the reason, and it stays out of the FDR family.

The vectorised kernels (:func:`candidate_stats`, :func:`decide_arrays`, :func:`huber_shift`,
:func:`prior_from_table`) are what the scalar API runs; ``benchmarks/stats_power.py`` calls them
on many tests at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
from scipy import stats as _st

from pytest_tpw.judging.session_noise import (
    mixture_quantile,
    posterior_weights,
    spread_heterogeneity,
    t_through,
)
from pytest_tpw.stats import (
    VERDICT_CODES,
    Comparison,
    Params,
    Verdict,
    ar1_df_factor,
    ar1_variance_factor,
    bh_adjusted,
    classify_bounds,
    lag1_autocorrelation,
    look_level,
    positive_logs,
    trimmed_stats,
    tukey_outliers,
)

_REG, _MINOR, _UNCH, _IMP, _INC = range(5)


@dataclass(frozen=True)
class SuiteParams:
    """Knobs of the two-level engine; ``verdict`` holds the per-test ones (tolerance, looks...).

    * ``sigma_b_prior`` / ``sigma_b_prior_df``: prior SD of a test's own session shift and its
      weight in pseudo degrees of freedom; pooled with the suite's estimate (df = sum over tests
      of stored sessions - 1). A one-session baseline has only the prior, raised by the run's
      own spread of per-test changes when that is larger.
    * ``run_sd_prior`` / ``run_sd_prior_df``: prior SD of run-wide shifts between stored runs.
    * ``run_alpha``: one-sided level of the run-wide verdict; a run shift is also never
      flagged inside the noise floor.
    * ``min_tests_robust``: compared tests needed for a run shift estimated from all tests
      (benchmarks/stats_power.py finds it by simulation); below it the canaries give the
      shift, and without canaries there is none (TOO_FEW_TESTS: the run-wide spread then
      enters every test's variance).
    * ``huber_c``, ``biweight_c``: tuning constants (in standard errors) of the run shift's
      Huber start and biweight finish (0 turns the biweight step off).
    * ``rho_cap``: cap of the lag-1 autocorrelation used to widen standard errors.
    * ``run_spread_alpha`` / ``run_spread_ratio``: when the stored sessions give 30 or more
      df, this run's own sigma_b replaces theirs only when its variance is at least
      ``run_spread_ratio`` times theirs and larger by a one-sided F test at
      ``run_spread_alpha`` (a run whose tests disagree: see ``_sb2``).
    * ``min_profile_series``: stored series of the most common length needed before the
      suite's within-session profile (see :func:`position_profile`) is removed.
    * ``test_spread_alpha`` / ``test_spread_df``: a test whose own stored sessions disagree
      more than the suite's (robust) sigma_b allows, by a one-sided F test at
      ``test_spread_alpha``, gets its own spread pooled with sigma_b, the latter weighted as
      ``test_spread_df`` degrees of freedom (see :func:`per_test_sigma_b2`).
    * ``hetero_alpha``: level of the likelihood-ratio test that the suite's tests differ in
      session noise (see :func:`spread_heterogeneity`); when it rejects, each test's sigma_b
      is its own, shrunk toward the suite's log-normal (see :func:`per_test_sigma_b2`).
    * ``local_width``: tests in run order that give each test its own run shift at the end of
      a run whose tests disagree, when time explains it (see :func:`local_shift`).
    * ``min_gain``: a test that cannot end UNCHANGED by the last look stops early, even with
      a drop, when the windows left would narrow its interval by less than this share (see
      :func:`hopeless`).
    """

    verdict: Params = field(default_factory=Params)
    sigma_b_prior: float = 0.005
    sigma_b_prior_df: float = 4.0
    run_sd_prior: float = 0.01
    run_sd_prior_df: float = 3.0
    run_alpha: float = 0.05
    min_tests_robust: int = 5
    min_profile_series: int = 30
    huber_c: float = 1.345
    biweight_c: float = 4.685
    rho_cap: float = 0.9
    run_spread_alpha: float = 0.01
    run_spread_ratio: float = 2.0
    test_spread_alpha: float = 0.01
    test_spread_df: float = 8.0
    hetero_alpha: float = 0.01
    local_width: int = 30
    min_gain: float = 0.1

    def __post_init__(self) -> None:
        for name in ("sigma_b_prior", "run_sd_prior"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"SuiteParams.{name} must be > 0, got {v}")
        for name in ("sigma_b_prior_df", "run_sd_prior_df"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"SuiteParams.{name} must be > 0, got {v}")
        if not 0.0 < self.run_alpha < 0.5:
            raise ValueError(f"SuiteParams.run_alpha must be in (0, 0.5), got {self.run_alpha}")
        if self.min_tests_robust < 3:
            raise ValueError("SuiteParams.min_tests_robust must be >= 3")
        if not self.huber_c > 0.0:
            raise ValueError("SuiteParams.huber_c must be > 0")
        if not 0.0 <= self.rho_cap < 1.0:
            raise ValueError("SuiteParams.rho_cap must be in [0, 1)")
        if not 0.0 < self.run_spread_alpha < 0.5:
            raise ValueError(
                f"SuiteParams.run_spread_alpha must be in (0, 0.5), got {self.run_spread_alpha}"
            )
        if not 0.0 < self.test_spread_alpha < 0.5:
            raise ValueError(
                f"SuiteParams.test_spread_alpha must be in (0, 0.5), got {self.test_spread_alpha}"
            )
        if not 0.0 < self.hetero_alpha < 0.5:
            raise ValueError(
                f"SuiteParams.hetero_alpha must be in (0, 0.5), got {self.hetero_alpha}"
            )
        if not (math.isfinite(self.test_spread_df) and self.test_spread_df > 0.0):
            raise ValueError(f"SuiteParams.test_spread_df must be > 0, got {self.test_spread_df}")
        if not 0.0 <= self.min_gain < 1.0:
            raise ValueError(f"SuiteParams.min_gain must be in [0, 1), got {self.min_gain}")
        if self.local_width < 5:
            raise ValueError(f"SuiteParams.local_width must be >= 5, got {self.local_width}")
        if not self.run_spread_ratio >= 1.0:
            raise ValueError(
                f"SuiteParams.run_spread_ratio must be >= 1, got {self.run_spread_ratio}"
            )


@dataclass(frozen=True)
class StoredRun:
    """One stored session of one measurement: its tokens/J per window, in time order."""

    session_id: str
    values: Sequence[float]


@dataclass(frozen=True)
class TestInput:
    """One measurement of this run (``candidate``: this run's windows, in time order).

    ``resolution`` is the sensor's relative per-window resolution (energy quantum / window
    joules); a reading differenced from a cumulative counter carries two rounding errors, so
    the per-window SD is floored at ``resolution / sqrt(6)``.
    """

    __test__ = False  # not a pytest test class

    key: str
    baseline: Sequence[StoredRun]
    candidate: Sequence[float]
    tolerance: float | None = None
    canary: bool = False
    resolution: float = 0.0


@dataclass(frozen=True)
class SuitePrior:
    """What the stored baselines say about the suite's noise (see :func:`suite_prior`).

    ``sigma_b``/``sigma_b_df``: pooled per-test session-shift SD (log) and its degrees of
    freedom (prior included); ``run_sd``/``run_sd_df`` the same for run-wide shifts;
    ``run_shifts`` each stored session's shift (log, centred on their mean); ``rho`` the
    lag-1 autocorrelation of windows used to widen standard errors (after the profile is
    removed); ``profile`` the suite's mean level of window i relative to its session's mean
    (warm-up, thermal trend), subtracted from every stored and candidate window i (empty:
    none, fewer than ``SuiteParams.min_profile_series`` stored series of one length);
    ``sigma_b_robust`` a median-based sigma_b that a few jumpy sessions do not inflate, the
    reference against which one test's stored sessions are judged (NaN: no test has two);
    ``sigma_b_log_mean``/``sigma_b_log_sd`` the log-normal of the tests' sigma_b^2 when they
    differ in session noise (sd 0: they are alike, or the likelihood-ratio test with p-value
    ``sigma_b_spread_p`` did not reject at ``SuiteParams.hetero_alpha``; see
    :func:`spread_heterogeneity`).
    """

    sigma_b: float
    sigma_b_df: float
    sigma_b_source: str
    run_sd: float
    run_sd_df: float
    run_shifts: Mapping[str, float]
    n_sessions: int
    n_tests: int
    rho: float
    profile: tuple[float, ...] = ()
    sigma_b_robust: float = math.nan
    sigma_b_log_mean: float = math.nan
    sigma_b_log_sd: float = 0.0
    sigma_b_spread_p: float = 1.0


class ShiftMethod(str, Enum):
    """Where the run-wide shift comes from."""

    ROBUST = "robust"
    CANARIES = "canaries"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunShift:
    """Run-wide shift of this run so far (log scale) with its standard error.

    ``sigma_b_run`` is the run's own estimate of sigma_b from the spread of per-test changes
    (0 when too few tests). With method ``none`` the shift is 0 and ``se`` is the spread of
    run shifts (it is noise then). ``noise_scale`` is how much noisier this run's windows are
    than the stored runs' (:func:`noise_scale`; at least 1).
    """

    shift: float
    se: float
    n_tests: int
    n_canaries: int
    method: ShiftMethod
    sigma_b_run: float = 0.0
    noise_scale: float = 1.0


class RunVerdict(str, Enum):
    """The run-wide shift against the spread of stored run shifts."""

    WITHIN_SPREAD = "WITHIN_SPREAD"
    BEYOND_LOWER = "BEYOND_LOWER"
    BEYOND_UPPER = "BEYOND_UPPER"
    TOO_FEW_TESTS = "TOO_FEW_TESTS"
    NO_BASELINE = "NO_BASELINE"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SuiteDecision:
    """End of session: the run shift, its verdict and every test's final comparison."""

    shift: RunShift
    run_verdict: RunVerdict
    run_ratio: float
    run_ci: tuple[float, float] | None
    run_z: float
    comparisons: Mapping[str, Comparison]
    why: str
    notes: tuple[str, ...] = ()  # what the run-wide line adds about this run's noise


# --------------------------------------------------------------------------------------------
# vectorised kernels
# --------------------------------------------------------------------------------------------


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


def _satterthwaite(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
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
    df = _satterthwaite(
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
        low = est - _st.t.ppf(1.0 - alpha_equiv, df) * se
        high = est + _st.t.ppf(1.0 - alpha, df) * se
        p = _st.t.cdf((est - math.log(1.0 - params.noise_floor)) / se, df)
    bad = ~np.isfinite(se) | (se <= 0.0)
    p = np.where(bad, 1.0, p)
    code = classify_arrays(low, high, tolerance, params.noise_floor)
    code = np.where(bad, _INC, code).astype(np.int8)
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


def _tail_levels(prior: SuitePrior, params: SuiteParams) -> tuple[float, float]:
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
      runs', see ``_sb2``) widens every test's mixture alike.
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
        levels = _tail_levels(prior, params)
        b_df = np.maximum(base_df, 1.0)
        q1, q2 = (
            np.maximum(mixture_quantile(post, sd, lv), np.sqrt(base) * _st.t.ppf(1.0 - lv, b_df))
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


def huber_shift(
    delta: np.ndarray, var: np.ndarray, c: float = 1.345, biweight: float = 0.0
) -> tuple[float, float]:
    """Robust M-estimate of the common location of ``delta`` (each with variance ``var``).

    Huber (tuning ``c``) started from the median, 30 reweighting steps; with ``biweight`` > 0
    then Tukey's biweight (tuning ``biweight``, in standard errors) from the Huber estimate,
    so that tests that clearly changed stop pulling the shift. Sandwich standard error
    ``sqrt(n/(n-1) * sum psi^2 / s^2) / sum psi' / s^2``, honest when the variances are off by
    a common factor. Fewer than 3 values: the inverse-variance mean and its SE.
    """
    d = np.asarray(delta, dtype=float)
    v = np.maximum(np.asarray(var, dtype=float), 1e-12)
    n = d.size
    if n == 0:
        return 0.0, math.inf
    w0 = 1.0 / v
    if n < 3:
        loc = float(np.sum(w0 * d) / np.sum(w0))
        return loc, math.sqrt(1.0 / float(np.sum(w0)))
    s = np.sqrt(v)
    loc = float(np.median(d))
    for _ in range(30):
        z = (d - loc) / s
        w = np.minimum(1.0, c / np.maximum(np.abs(z), 1e-12)) / v
        new = float(np.sum(w * d) / np.sum(w))
        if abs(new - loc) < 1e-12:
            loc = new
            break
        loc = new
    if biweight > 0.0:
        # redescending step: tests that clearly changed get weight 0 instead of a clipped pull
        for _ in range(30):
            u = (d - loc) / (s * biweight)
            w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0) / v
            if float(np.sum(w)) <= 0.0:
                break
            new = float(np.sum(w * d) / np.sum(w))
            if abs(new - loc) < 1e-12:
                loc = new
                break
            loc = new
        u = (d - loc) / (s * biweight)
        inside = np.abs(u) < 1.0
        psi = np.where(inside, u * (1.0 - u * u) ** 2, 0.0) * biweight
        dpsi = np.where(inside, (1.0 - u * u) * (1.0 - 5.0 * u * u), 0.0)
    else:
        z = (d - loc) / s
        psi = np.clip(z, -c, c)
        dpsi = (np.abs(z) <= c).astype(float)
    den = float(np.sum(dpsi / v))
    if den <= 0.0:
        return loc, math.sqrt(float(np.median(v)))
    se2 = n / (n - 1) * float(np.sum(psi * psi / v)) / (den * den)
    return loc, math.sqrt(se2)


def run_sigma_b(
    resid: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    df: np.ndarray | None = None,
) -> float:
    """sigma_b from the run's own per-test changes (an empirical null, robust to a few changed).

    ``resid`` are per-test changes relative to the run shift, ``var_wo`` their estimated
    variances without the session-shift part (``df`` degrees of freedom each, infinite when
    None), ``k = 1 + 1/S``. Solves ``median_t F_{1,df_t}(r_t^2 / (v_t + k s^2)) = 1/2`` for s
    (the ratio of a squared normal to an estimated variance is F(1, df)); 0 when the spread is
    already explained.
    """
    r2 = np.asarray(resid, dtype=float) ** 2
    v = np.asarray(var_wo, dtype=float)
    k = 1.0 + 1.0 / np.maximum(np.asarray(n_sessions, dtype=float), 1.0)
    dfs = np.full(r2.shape, 1e6) if df is None else np.minimum(np.asarray(df, dtype=float), 1e6)

    def med(s2: float) -> float:
        return float(np.median(_st.f.cdf(r2 / (v + k * s2), 1.0, dfs)))

    if r2.size == 0 or med(0.0) <= 0.5:
        return 0.0
    lo, hi = 0.0, 4.0 * max(float(np.max(r2)), 1e-12)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if med(mid) > 0.5:
            lo = mid
        else:
            hi = mid
    return math.sqrt(0.5 * (lo + hi))


def prior_from_table(
    m: np.ndarray,
    d: np.ndarray,
    params: SuiteParams,
    rho: float = 0.0,
    session_ids: Sequence[str] | None = None,
) -> tuple[SuitePrior, np.ndarray]:
    """Suite prior from per-(test, session) trimmed means ``m`` and squared SEs ``d``.

    Arrays of shape (tests, sessions), NaN where a test has no usable stored run in a session.
    Two-way fit ``m = mu_t + R_s + residual`` by alternating means over tests' sessions and
    medians over sessions' tests (unequal session sets handled; R centred on mean 0 over
    sessions). Pooled ``sigma_b^2 = (sum_t sum_s res^2 - sum_t (1 - 1/S_t) sum_s d) / sum_t
    (S_t - 1)`` floored at 0, combined with the prior by degrees of freedom. Run spread: the
    variance of the R_s less their median-based sampling variance, combined with its prior.
    Returns the prior and the per-session shifts R (sessions,).
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
    mu = np.where(has, np.sum(np.where(present, mz - r, 0.0), axis=1) / np.maximum(s_t, 1), 0.0)
    res = np.where(present, mm - mu[:, None] - r[None, :], 0.0)
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
        # per test: spread of its session levels over its expected chi2 median, less its
        # windows' part; the median over tests ignores the few with a jumpy session
        s_m = s_t[multi]
        tot = np.sum(res[multi] ** 2, axis=1) / (s_m - 1)
        dbar = np.sum(np.where(present, dd, 0.0)[multi], axis=1) / s_m
        qmed = _st.chi2.median(s_m - 1) / (s_m - 1)
        sb2_robust = max(float(np.median(tot / qmed - dbar)), 0.0)
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
    )
    return prior, r


# --------------------------------------------------------------------------------------------
# scalar API
# --------------------------------------------------------------------------------------------


def _logs(values: Sequence[float], what: str) -> np.ndarray:
    return positive_logs(values, f"{what}:")


def _check_resolution(test: TestInput) -> None:
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
    series = [
        _logs(run.values, f"{k} (stored {run.session_id})") for k in keys for run in baselines[k]
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
    for i, k in enumerate(keys):
        res = 0.0 if resolution is None else float(resolution.get(k, 0.0))
        for run in baselines[k]:
            x = unprofile(_logs(run.values, f"{k} (stored {run.session_id})"), profile)
            if x.size < 2:
                continue
            mi, di, hi, _, _ = candidate_stats(x, rho, res, p.verdict.trim, p.rho_cap)
            if hi >= 2:
                m[i, col[run.session_id]] = float(mi)
                d[i, col[run.session_id]] = float(di)
    prior, _ = prior_from_table(m, d, p, rho, ids)
    return replace(prior, profile=tuple(float(v) for v in profile))


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
class _Base:
    mu: float
    var_b: float
    df_b: float
    n_sessions: int
    n_windows: int
    logs: np.ndarray
    sw2: float  # pooled within-session winsorised variance per window
    sw2_df: float
    spread: float = math.nan  # variance of the stored session levels (ddof 1)

    @property
    def within(self) -> float:
        """Mean squared standard error of the stored session levels."""
        return self.var_b * self.n_sessions


def _baseline(test: TestInput, prior: SuitePrior, p: SuiteParams) -> _Base:
    ms: list[float] = []
    ds: list[float] = []
    dfs: list[float] = []
    raw_dfs: list[float] = []  # the floor's df: candidate_stats shrinks them for AR(1) itself
    owns: list[float] = []
    all_logs: list[np.ndarray] = []
    for run in test.baseline:
        x = unprofile(_logs(run.values, f"{test.key} (stored {run.session_id})"), prior.profile)
        all_logs.append(x)
        if x.size < 2:
            continue
        m, d, h, df, own = candidate_stats(x, prior.rho, test.resolution, p.verdict.trim, p.rho_cap)
        if h < 2:
            continue
        owns.append(float(own))
        ms.append(float(m) - prior.run_shifts.get(run.session_id, 0.0))
        ds.append(float(d))
        dfs.append(float(df))
        raw_dfs.append(float(h - 1))
    logs = np.concatenate(all_logs) if all_logs else np.empty(0)
    s = len(ms)
    if s == 0:
        return _Base(math.nan, math.nan, math.nan, 0, int(logs.size), logs, 0.0, math.inf)
    var_b = float(np.sum(ds)) / (s * s)
    den = float(np.sum(np.square(ds) / np.asarray(dfs))) / (s**4)
    df_b = var_b * var_b / den if den > 0 else math.inf
    return _Base(
        float(np.mean(ms)),
        var_b,
        df_b,
        s,
        int(logs.size),
        logs,
        float(np.mean(owns)),
        sum(raw_dfs),
        float(np.var(ms, ddof=1)) if s >= 2 else math.nan,
    )


TEST_SPREAD_SOURCE = "this test's stored sessions (one unlike the others)"
RUN_SPREAD_SOURCE = "this run's spread (wider than the stored runs')"
TEST_NOISE_SOURCE = "this test's stored sessions (the suite's tests differ in session noise)"


def _sb2(prior: SuitePrior, shift: RunShift, params: SuiteParams) -> tuple[float, float, str]:
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


@dataclass(frozen=True)
class TestChange:
    """One finished test's contribution to the run shift (see :func:`change_of`).

    ``delta``: this run's level minus the stored level (log, stored run shifts removed);
    ``var_wo`` its variance without the session-shift part, ``df`` its degrees of freedom.
    """

    __test__ = False  # not a pytest test class

    key: str
    delta: float
    var_wo: float
    n_sessions: int
    df: float
    canary: bool
    noise: float = math.nan


@dataclass(frozen=True)
class _ChangeArrays:
    """:class:`TestChange` fields as arrays, one entry per change (for the vectorised core)."""

    delta: np.ndarray
    var_wo: np.ndarray
    n_sessions: np.ndarray
    df: np.ndarray
    canary: np.ndarray
    noise: np.ndarray

    @staticmethod
    def of(changes: Sequence[TestChange]) -> _ChangeArrays:
        return _ChangeArrays(
            np.asarray([c.delta for c in changes], dtype=float),
            np.asarray([c.var_wo for c in changes], dtype=float),
            np.asarray([float(c.n_sessions) for c in changes], dtype=float),
            np.asarray([c.df for c in changes], dtype=float),
            np.asarray([c.canary for c in changes], dtype=bool),
            np.asarray([c.noise for c in changes], dtype=float),
        )


def change_of(
    test: TestInput, prior: SuitePrior, params: SuiteParams | None = None
) -> TestChange | None:
    """What a finished test tells about the run shift; None when it cannot be compared.

    Cheap to keep: the judge may compute it once per finished test and pass the list to
    :func:`shift_from_changes` instead of re-reading every test in :func:`running_shift`.
    """
    p = params if params is not None else SuiteParams()
    _check_resolution(test)
    b = _baseline(test, prior, p)
    c = unprofile(_logs(test.candidate, f"{test.key} (this run)"), prior.profile)
    if b.n_sessions == 0 or c.size < 2:
        return None
    m, d, h, df, own = candidate_stats(
        c, prior.rho, test.resolution, p.verdict.trim, p.rho_cap, b.sw2, b.sw2_df
    )
    if h < 2:
        return None
    noise = noise_ratio(own, b.sw2, h, b.sw2_df, prior.rho, p.rho_cap)
    df_wo = _satterthwaite(
        [(np.asarray(float(d)), np.asarray(float(df))), (np.asarray(b.var_b), np.asarray(b.df_b))]
    )
    return TestChange(
        test.key,
        float(m) - b.mu,
        float(d) + b.var_b,
        b.n_sessions,
        float(df_wo),
        bool(test.canary),
        float(noise),
    )


def shift_from_changes(
    changes: Sequence[TestChange | None], prior: SuitePrior, params: SuiteParams | None = None
) -> RunShift:
    """Run shift from :func:`change_of` results (None entries are skipped)."""
    p = params if params is not None else SuiteParams()
    a = _ChangeArrays.of([c for c in changes if c is not None])
    return shift_from_deltas(a.delta, a.var_wo, a.n_sessions, a.canary, prior, p, a.df, a.noise)


def shift_from_deltas(
    delta: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    canary: np.ndarray,
    prior: SuitePrior,
    params: SuiteParams,
    df: np.ndarray | None = None,
    noise: np.ndarray | None = None,
) -> RunShift:
    """Run shift from per-test changes ``delta`` (vectorised core of :func:`running_shift`).

    ``var_wo`` are the changes' variances without the session-shift part, ``df`` their degrees
    of freedom (for the run's own sigma_b; infinite when None), ``noise`` their
    :func:`noise_ratio` (for the run's :func:`noise_scale`; 1 when None).
    """
    scale = 1.0 if noise is None else noise_scale(noise, params)
    n = int(delta.size)
    n_can = int(np.count_nonzero(canary))
    if n >= params.min_tests_robust:
        sb2 = prior.sigma_b**2
        k = 1.0 + 1.0 / np.maximum(n_sessions, 1.0)
        loc, se = huber_shift(delta, var_wo + k * sb2, params.huber_c, params.biweight_c)
        sbr = run_sigma_b(delta - loc, var_wo, n_sessions, df)
        out = RunShift(loc, se, n, n_can, ShiftMethod.ROBUST, sbr, scale)
        sb2_run, _, _ = _sb2(prior, out, params)
        if sb2_run != sb2:
            loc, se = huber_shift(delta, var_wo + k * sb2_run, params.huber_c, params.biweight_c)
            out = replace(out, shift=loc, se=se)
        return out
    if n_can > 0:
        sel = np.asarray(canary, dtype=bool)
        k = 1.0 + 1.0 / np.maximum(n_sessions[sel], 1.0)
        loc, se = huber_shift(delta[sel], var_wo[sel] + k * prior.sigma_b**2, params.huber_c)
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
    a = _ChangeArrays.of([c for c in changes if c is not None])
    shift = shift_from_deltas(a.delta, a.var_wo, a.n_sessions, a.canary, prior, p, a.df, a.noise)
    return recent_shift(shift, a.delta, a.var_wo, a.n_sessions, a.df, prior, p)


def recent_shift(
    shift: RunShift,
    delta: np.ndarray,
    var_wo: np.ndarray,
    n_sessions: np.ndarray,
    df: np.ndarray | None,
    prior: SuitePrior,
    params: SuiteParams,
) -> RunShift:
    """Vectorised core of :func:`look_shift`: ``shift`` (the run shift from these changes,
    :func:`shift_from_deltas`), or the local shift of the last ``local_width`` of them when
    :func:`local_shift` applies."""
    got = local_shift(delta, var_wo, n_sessions, df, shift, prior, params)
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
) -> tuple[np.ndarray, np.ndarray, RunShift] | None:
    """Each test's run shift from its ``local_width`` neighbours in run order, when that
    explains why the run's tests disagree; None when they do not disagree (``shift``, the
    one run-wide shift, leaves a spread :func:`_sb2` accepts), when time does not explain it,
    or with too few tests.

    A runner whose state changes during the run (a clock step, a drift, a shift that wanders)
    moves early and late tests by different amounts; one run-wide shift then leaves a spread
    that :func:`_sb2` must treat as noise of every test. Here the shift of test i is the
    Huber-biweight location of the changes of the ``local_width`` tests centred on it (the
    window slides to fit at the ends); when the spread left around these local shifts
    (:func:`run_sigma_b`) is within ``run_spread_ratio`` times the stored sigma_b^2, the local
    shifts and their standard errors are returned with ``shift`` carrying that spread (what
    :func:`_sb2` judges the comparisons' sigma_b from).
    """
    w = params.local_width
    n = int(delta.size)
    if n < 2 * w or _sb2(prior, shift, params)[2] != RUN_SPREAD_SOURCE:
        return None
    sb2 = prior.sigma_b**2
    v = var_wo + (1.0 + 1.0 / np.maximum(n_sessions, 1.0)) * sb2
    loc = np.empty(n)
    se = np.empty(n)
    for i in range(n):
        lo = min(max(i - w // 2, 0), n - w)
        loc[i], se[i] = _window_shift(
            delta[lo : lo + w].tobytes(),
            v[lo : lo + w].tobytes(),
            params.huber_c,
            params.biweight_c,
        )
    left = run_sigma_b(delta - loc, var_wo, n_sessions, df)
    if left**2 > sb2 * params.run_spread_ratio:
        return None
    return loc, se, replace(shift, sigma_b_run=left)


@functools.lru_cache(maxsize=4096)
def _window_shift(delta: bytes, var: bytes, c: float, biweight: float) -> tuple[float, float]:
    """:func:`huber_shift` of one window of :func:`local_shift`, remembered by its values: the
    windows at either end repeat within a call, and every window but the last few repeats
    when the judge asks again after each finished test (:func:`look_shift`)."""
    return huber_shift(np.frombuffer(delta), np.frombuffer(var), c, biweight)


def _tolerance(test: TestInput, p: SuiteParams) -> float:
    """The test's own tolerance, or the suite's."""
    return p.verdict.tolerance if test.tolerance is None else float(test.tolerance)


def shift_variance(shift: RunShift, prior: SuitePrior) -> float:
    """Variance the run shift adds to a test's change: its own, or without an estimate
    (method ``none``) the spread of a new run shift around the mean of S stored ones."""
    if shift.method is ShiftMethod.NONE:
        return shift.se**2 * (1.0 + 1.0 / max(prior.n_sessions, 1))
    return shift.se**2


def _compare_one(
    test: TestInput,
    prior: SuitePrior,
    shift: RunShift,
    p: SuiteParams,
    alpha: float,
    alpha_equiv: float,
) -> tuple[Comparison, ArrayDecision | None]:
    """One test's comparison relative to the run shift, and its decision arrays (None when
    no interval exists)."""
    _check_resolution(test)
    tol = _tolerance(test, p)
    if not 0.0 < tol < 1.0 or tol <= p.verdict.noise_floor:
        raise ValueError(f"{test.key}: tolerance must be in (noise_floor, 1), got {tol}")
    b = _baseline(test, prior, p)
    c = unprofile(_logs(test.candidate, f"{test.key} (this run)"), prior.profile)
    sb2, sb_df, src = _sb2(prior, shift, p)
    sb2_a, sb_df_a = per_test_sigma_b2(
        sb2,
        prior,
        np.asarray([b.spread]),
        np.asarray([b.within]),
        np.asarray([float(b.n_sessions)]),
        sb_df,
        p,
    )
    eps = _tail_levels(prior, p)[1]  # BH's smallest threshold
    own_q = math.sqrt(float(sb2_a[0])) * float(_st.t.ppf(1.0 - eps, max(float(sb_df_a[0]), 1.0)))
    if own_q > 1.01 * math.sqrt(sb2) * float(_st.t.ppf(1.0 - eps, max(sb_df, 1.0))):
        src = TEST_NOISE_SOURCE if prior.sigma_b_log_sd > 0.0 else TEST_SPREAD_SOURCE
    sb2, sb_df = float(sb2_a[0]), float(sb_df_a[0])
    proto = Comparison(
        verdict=Verdict.INCONCLUSIVE,
        ratio=math.nan,
        ci_low=None,
        ci_high=None,
        p_regression=1.0,
        n_baseline=b.n_windows,
        n_candidate=int(c.size),
        n_sessions=b.n_sessions,
        sigma_b=math.sqrt(sb2),
        sigma_b_source=src,
        df=math.nan,
        se_log=math.nan,
        alpha=alpha,
        alpha_equiv=alpha_equiv,
        shift=shift.shift,
        outliers=tukey_outliers(c),
        outliers_baseline=tukey_outliers(b.logs),
    )
    if b.n_windows == 0:
        none = replace(proto, verdict=Verdict.NO_BASELINE, why="no stored runs to compare with")
        return none, None
    if b.n_sessions == 0 or c.size < 2:
        return replace(
            proto,
            why=f"no interval: {c.size} window(s) this run, {b.n_sessions} usable stored "
            "run(s) (an interval needs at least 2 windows per side); verdict INCONCLUSIVE",
        ), None
    floor = b.sw2 * shift.noise_scale  # a busy runner's windows are noisier for every test
    m, d, h, df_c, _ = candidate_stats(
        c, prior.rho, test.resolution, p.verdict.trim, p.rho_cap, floor, b.sw2_df
    )
    if h < 2:
        return replace(proto, why="no interval: fewer than 2 windows left after trimming"), None
    shift_var = shift_variance(shift, prior)
    dec = decide_arrays(
        np.asarray([float(m)]),
        np.asarray([float(d)]),
        np.asarray([float(df_c)]),
        np.asarray([b.mu]),
        np.asarray([b.var_b]),
        np.asarray([b.df_b]),
        np.asarray([b.n_sessions]),
        sb2,
        sb_df,
        shift.shift,
        shift_var,
        tol,
        replace(p.verdict, tolerance=tol),
        alpha,
        alpha_equiv,
    )
    verdict = VERDICT_CODES[int(dec.code[0])]
    est = float(dec.est[0])
    why = None
    if shift.method is ShiftMethod.NONE:
        why = (
            "no run-wide shift estimate (too few tests and no canary): the spread of run "
            "shifts is counted as noise in this interval"
        )
    return replace(
        proto,
        verdict=verdict,
        ratio=math.exp(est),
        ci_low=math.exp(float(dec.low[0])),
        ci_high=math.exp(float(dec.high[0])),
        p_regression=float(dec.p[0]),
        df=float(dec.df[0]),
        se_log=float(dec.se[0]),
        why=why,
    ), dec


def _look_alpha(p: SuiteParams, n_looks: int) -> float:
    """Level of each side at every look: Pocock's for the configured looks (equally spaced
    ones when the caller counts a different number of looks)."""
    looks = p.verdict.looks
    if len(looks) != n_looks:
        looks = tuple(range(1, n_looks + 1))
    return look_level(p.verdict.alpha, looks)


def look(
    test: TestInput,
    prior: SuitePrior,
    shift: RunShift,
    params: SuiteParams | None,
    look_index: int,
    n_looks: int,
    *,
    family_size: int | None = None,
) -> tuple[bool, Comparison]:
    """Decide after this many windows, at look ``look_index`` (0-based) of ``n_looks``.

    Both sides at Pocock's level for the looks (:func:`pytest_tpw.stats.look_level`: crossing
    a side at any look has chance ``alpha``). Stops when the verdict is REGRESSED,
    MINOR_REGRESSION, UNCHANGED or IMPROVED (the interval lies inside one verdict's region),
    or at the last look; a canary runs every look (it measures the run shift). An interim
    REGRESSED stops only when ``K * p <= fdr_q / family_size`` (it then survives
    Benjamini-Hochberg whatever the other tests say; ``family_size`` defaults to the number of
    tests with stored runs in the prior). Without a run shift estimate yet (method ``none``: the
    first tests of a run, or a small suite without canaries) it never stops on a drop before
    the last look. The comparison
    is ``provisional`` (``stopped_early`` when it stopped before the last look): the reported
    one comes from :func:`judge_suite`.
    """
    if n_looks < 1 or not 0 <= look_index < n_looks:
        raise ValueError(f"look_index must be in [0, {n_looks}), got {look_index}")
    p = params if params is not None else SuiteParams()
    a = _look_alpha(p, n_looks)
    cmp, dec = _compare_one(test, prior, shift, p, a, a)
    last = look_index == n_looks - 1
    decided = cmp.verdict in (
        Verdict.REGRESSED,
        Verdict.MINOR_REGRESSION,
        Verdict.UNCHANGED,
        Verdict.IMPROVED,
        Verdict.NO_BASELINE,
    )
    if shift.method is ShiftMethod.NONE and cmp.verdict in (
        Verdict.REGRESSED,
        Verdict.MINOR_REGRESSION,
    ):
        decided = False  # the run shift is not known yet: a shared drop may explain it
    elif cmp.verdict is Verdict.REGRESSED and not last:
        # stop on REGRESSED only when it survives BH whatever the rest of the suite says
        m = family_size if family_size is not None else max(prior.n_tests, 1)
        decided = cmp.p_regression * n_looks <= p.verdict.fdr_q / max(m, 1)
    elif (
        cmp.verdict is Verdict.INCONCLUSIVE
        and not last
        and dec is not None
        and shift.method is not ShiftMethod.NONE
        and p.verdict.looks[-1] > cmp.n_candidate
    ):
        n_last = p.verdict.looks[-1]
        tol = _tolerance(test, p)
        if bool(hopeless(dec, cmp.n_candidate, n_last, a, tol, p.min_gain)[0]):
            decided = True
            because = (
                "its estimate shows no drop"
                if float(dec.est[0]) > 0.0
                else f"{n_last} windows would narrow it by less than {p.min_gain:.0%} "
                "(its noise is its stored sessions', not its windows')"
            )
            cmp = replace(
                cmp,
                why=f"too noisy to decide within {n_last} windows: even then its interval "
                f"would reach below -{tol:.0%}, and {because}, so it stopped at "
                f"{cmp.n_candidate}; give it a quieter runner or more stored runs",
            )
    stop = last or (decided and not test.canary)
    return stop, replace(cmp, provisional=True, stopped_early=stop and not last)


def judge_suite(
    tests: Sequence[TestInput], prior: SuitePrior, params: SuiteParams | None = None
) -> SuiteDecision:
    """Final run shift and verdict, and every test's comparison relative to it, after BH.

    Every comparison uses the looks' level on both sides (K looks, as :func:`look`); its
    one-sided p-value enters Benjamini-Hochberg (non-canaries only) multiplied by K (Bonferroni
    over looks). A REGRESSED whose adjusted p exceeds ``fdr_q`` becomes INCONCLUSIVE; a canary's
    REGRESSED also becomes INCONCLUSIVE (the run shift, not the canary, is the finding).
    """
    p = params if params is not None else SuiteParams()
    keys = [t.key for t in tests]
    if len(set(keys)) != len(keys):
        raise ValueError("judge_suite: test keys must be unique")
    changes = [change_of(t, prior, p) for t in tests]
    shift = shift_from_changes(changes, prior, p)
    k_looks = len(p.verdict.looks)
    a = _look_alpha(p, k_looks)
    shifts, moved = _local_shifts(changes, shift, prior, p)
    comps = [_compare_one(t, prior, shifts[i], p, a, a)[0] for i, t in enumerate(tests)]
    fam = [
        i
        for i, (t, c) in enumerate(zip(tests, comps, strict=True))
        if not t.canary and c.verdict is not Verdict.NO_BASELINE
    ]
    adj = bh_adjusted([min(1.0, comps[i].p_regression * k_looks) for i in fam])
    q = p.verdict.fdr_q
    for i, pa in zip(fam, adj, strict=True):
        c = comps[i]
        if c.verdict is Verdict.REGRESSED and pa > q:
            comps[i] = replace(
                c,
                verdict=Verdict.INCONCLUSIVE,
                p_adjusted=pa,
                why=f"REGRESSED on its own (p = {c.p_regression:.3g}) but not after "
                f"Benjamini-Hochberg over {len(fam)} comparisons (adjusted p = {pa:.3g} > "
                f"q = {q:g})",
            )
        else:
            comps[i] = replace(c, p_adjusted=pa)
    for i, t in enumerate(tests):
        if t.canary and comps[i].verdict is Verdict.REGRESSED:
            comps[i] = replace(
                comps[i],
                verdict=Verdict.INCONCLUSIVE,
                why="canary: its drift measures the run, it never fails on its own",
            )
    verdict, ratio, ci, z, why = run_verdict(shift, prior, p, any(t.baseline for t in tests))
    notes = run_notes(shift, prior, p, moved) if math.isfinite(ratio) else ()
    why = "; ".join((why, *notes))
    comparisons = dict(zip(keys, comps, strict=True))
    return SuiteDecision(shift, verdict, ratio, ci, z, comparisons, why, notes)


def _local_shifts(
    changes: Sequence[TestChange | None], shift: RunShift, prior: SuitePrior, p: SuiteParams
) -> tuple[list[RunShift], tuple[float, float] | None]:
    """Per test: the run shift to judge it against (its local one when :func:`local_shift`
    applies, which needs a run whose tests disagree), and the range of local shifts (ratio
    - 1) or None."""
    shifts = [shift] * len(changes)
    idx = [i for i, c in enumerate(changes) if c is not None]
    a = _ChangeArrays.of([c for c in changes if c is not None])
    got = local_shift(a.delta, a.var_wo, a.n_sessions, a.df, shift, prior, p)
    if got is None:
        return shifts, None
    loc, se, judged = got
    for j, i in enumerate(idx):
        shifts[i] = replace(judged, shift=float(loc[j]), se=float(se[j]))
    return shifts, (math.expm1(float(loc.min())), math.expm1(float(loc.max())))


def run_verdict(
    shift: RunShift, prior: SuitePrior, params: SuiteParams, has_baseline: bool = True
) -> tuple[RunVerdict, float, tuple[float, float] | None, float, str]:
    """The run shift against the spread of stored run shifts (and the noise floor).

    ``z = shift / sqrt(run_sd^2 (1 + 1/S) + se^2)`` (S stored runs); BEYOND_LOWER when
    ``z < -t_{df}(1 - run_alpha)`` and the shift is below ``log(1 - noise_floor)``, BEYOND_UPPER
    symmetrically; ``df`` is the run spread's. Returns (verdict, ratio, interval at
    ``1 - 2 run_alpha`` of the shift, z, sentence).
    """
    if not has_baseline or prior.n_tests == 0:
        return RunVerdict.NO_BASELINE, math.nan, None, math.nan, "no stored runs"
    if shift.method is ShiftMethod.NONE:
        return (
            RunVerdict.TOO_FEW_TESTS,
            math.nan,
            None,
            math.nan,
            f"{shift.n_tests} compared test(s) (< {params.min_tests_robust}) and no canary: "
            "no run-wide shift estimate; declare canaries (canary=True) in small suites",
        )
    s = max(prior.n_sessions, 1)
    scale = math.sqrt(prior.run_sd**2 * (1.0 + 1.0 / s) + shift.se**2)
    z = shift.shift / scale
    tq = float(_st.t.ppf(1.0 - params.run_alpha, prior.run_sd_df))
    nf = params.verdict.noise_floor
    ci = (
        math.exp(shift.shift - 1.96 * shift.se),
        math.exp(shift.shift + 1.96 * shift.se),
    )
    ratio = math.exp(shift.shift)
    src = f"{shift.method} estimate from {shift.n_tests} test(s)"
    if shift.method is ShiftMethod.CANARIES:
        plural = "y" if shift.n_canaries == 1 else "ies"
        src = f"canary estimate from {shift.n_canaries} canar{plural}"
    if z < -tq and shift.shift < math.log(1.0 - nf):
        v = RunVerdict.BEYOND_LOWER
    elif z > tq and shift.shift > math.log(1.0 + nf):
        v = RunVerdict.BEYOND_UPPER
    else:
        v = RunVerdict.WITHIN_SPREAD
    why = (
        f"run-wide shift {100 * (ratio - 1):+.2f} % ({src}), stored runs spread "
        f"{100 * prior.run_sd:.2f} % over {prior.n_sessions} run(s): {v.value}"
    )
    return v, ratio, ci, z, why


def run_notes(
    shift: RunShift,
    prior: SuitePrior,
    params: SuiteParams,
    moved: tuple[float, float] | None = None,
) -> tuple[str, ...]:
    """What the run-wide line should add about this run's noise, one sentence each: a busy
    runner (windows noisier than the stored ones), tests that differ in session noise, a shift
    that changed during the run (``moved``: the range of local shifts, ratio - 1)."""
    notes = []
    if shift.noise_scale >= 1.5:
        notes.append(
            f"this run's windows vary {math.sqrt(shift.noise_scale):.1f}x as much as the "
            "stored runs' (a busy runner?): every interval is widened to match"
        )
    if prior.sigma_b_log_sd > 0.0:
        z80 = 1.2816 * prior.sigma_b_log_sd  # the middle 80 % of tests
        lo, hi = (100 * math.exp(0.5 * (prior.sigma_b_log_mean + d)) for d in (-z80, z80))
        notes.append(
            f"the tests differ in how far their level moves between sessions (SD {lo:.2g}-"
            f"{hi:.2g} % for the middle 80 %): each is judged with its own spread, never "
            "narrower than the suite's"
        )
    if moved is not None:
        notes.append(
            f"the shift changed during the run (from {100 * moved[0]:+.1f} % to "
            f"{100 * moved[1]:+.1f} %): each test is judged against its {params.local_width} "
            "neighbours in run order"
        )
    return tuple(notes)
