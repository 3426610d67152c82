"""The two-level model's vocabulary: its knobs, its inputs, the suite's prior, shifts, decisions.

Plain data, no arithmetic. The model, on log tokens/J of window w of test t in run r::

    y = mu_t + R_r + b_{t,r} + e_{t,r,w}

``R_r`` is shared by every test of a run on one hardware key (clock state, board, driver,
fleet drift), ``b_{t,r}`` is the test's own session shift (SD ``sigma_b``, pooled across the
suite) and ``e`` the window noise (autocorrelation and sensor resolution included in its
standard error). docs/verdicts.md derives it; :mod:`pytest_tpw.judging.decide` says how the
judge calls the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from pytest_tpw.stats import Comparison, Params


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
      ``run_spread_alpha`` (a run whose tests disagree: see ``session_spread``).
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
    * ``loading_alpha``: level of the test that the suite's tests feel the stored runs'
      shifts unequally (each its own loading on the run shift, see :func:`learn_loadings`);
      below it every test's loading is 1.
    * ``exclude_z``: a test whose change lies more than this many standard errors from the
      run shift takes no part in the shift's final estimate (symmetric, so unchanged tests
      leave it unbiased; changed tests then cannot pull it).
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
    loading_alpha: float = 0.01
    exclude_z: float = 2.5

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
        if not 0.0 < self.loading_alpha < 0.5:
            raise ValueError(
                f"SuiteParams.loading_alpha must be in (0, 0.5), got {self.loading_alpha}"
            )
        if not self.exclude_z > 0.0:
            raise ValueError(f"SuiteParams.exclude_z must be > 0, got {self.exclude_z}")
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
    :func:`spread_heterogeneity`); ``loadings`` each test's loading on the run shift and its
    variance, learned from the stored runs when the tests feel their shifts unequally (empty:
    every loading 1; a test missing from a non-empty map has loading 1 with variance
    ``loading_sd ** 2``, the suite's spread of loadings); ``loading_p`` the p-value of that
    test (see :func:`pytest_tpw.judging.prior.learn_loadings`).
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
    loadings: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    loading_sd: float = 0.0
    loading_p: float = 1.0
    #: Each test's stored level once computed (:func:`pytest_tpw.judging.prior.stored_level`):
    #: a run asks for it at every look and again at the end. Not part of the prior's value.
    levels: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )


class ShiftMethod(str, Enum):
    """Where the run-wide shift comes from."""

    ROBUST = "robust"
    CANARIES = "canaries"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


def loading_of(prior: SuitePrior, key: str) -> tuple[float, float]:
    """A test's loading on the run shift and its variance under ``prior`` (1 and 0 when the
    prior learned none)."""
    if not prior.loadings:
        return 1.0, 0.0
    return prior.loadings.get(key, (1.0, prior.loading_sd**2))


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


TEST_SPREAD_SOURCE = "this test's stored sessions (one unlike the others)"

RUN_SPREAD_SOURCE = "this run's spread (wider than the stored runs')"

TEST_NOISE_SOURCE = "this test's stored sessions (the suite's tests differ in session noise)"


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
    loading: float = 1.0
    loading_var: float = 0.0


@dataclass(frozen=True)
class ChangeArrays:
    """:class:`TestChange` fields as arrays, one entry per change (for the vectorised core)."""

    delta: np.ndarray
    var_wo: np.ndarray
    n_sessions: np.ndarray
    df: np.ndarray
    canary: np.ndarray
    noise: np.ndarray
    loading: np.ndarray
    loading_var: np.ndarray

    @staticmethod
    def of(changes: Sequence[TestChange]) -> ChangeArrays:
        return ChangeArrays(
            np.asarray([c.delta for c in changes], dtype=float),
            np.asarray([c.var_wo for c in changes], dtype=float),
            np.asarray([float(c.n_sessions) for c in changes], dtype=float),
            np.asarray([c.df for c in changes], dtype=float),
            np.asarray([c.canary for c in changes], dtype=bool),
            np.asarray([c.noise for c in changes], dtype=float),
            np.asarray([c.loading for c in changes], dtype=float),
            np.asarray([c.loading_var for c in changes], dtype=float),
        )
