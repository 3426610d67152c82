"""The statistics every part uses: robust levels of tokens/J samples and the engine's primitives.

Pure numpy/scipy, no pytest. A sample series' level and interval (20 %-trimmed mean of
log(tokens/J) and Yuen's interval: :func:`summarize`, what ``tpw.result`` reports), the
verdict vocabulary (:class:`Params`, :class:`Comparison`, :func:`classify_bounds`), trimmed
means and Yuen's squared standard errors for many series at once, Pocock's level for
repeated looks, Benjamini-Hochberg, and the AR(1) arithmetic of correlated windows. The
verdict engine that combines them is :mod:`pytest_tpw.judging`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_tpw.config.settings import default
from pytest_tpw.verdict import Verdict as Verdict


class _Scipy:
    """``scipy.stats``, imported on first use: a command that needs only numpy's part of
    this module (``pytest-tpw show``) does not pay scipy's import."""

    def __getattr__(self, name: str) -> Any:
        from scipy import stats

        return getattr(stats, name)


_st = _Scipy()


# The t and normal quantiles the engine asks for at every look, as scipy's special functions
# (the same values as ``scipy.stats.t.ppf`` and friends, without their per-call overhead of
# about 50 microseconds: a 300-test run makes thousands of calls).


def t_ppf(q: Any, df: Any) -> Any:
    """``scipy.stats.t.ppf(q, df)``."""
    from scipy import special

    return special.stdtrit(df, q)


def t_cdf(x: Any, df: Any) -> Any:
    """``scipy.stats.t.cdf(x, df)``."""
    from scipy import special

    return special.stdtr(df, x)


def norm_ppf(p: Any) -> Any:
    """``scipy.stats.norm.ppf(p)``."""
    from scipy import special

    return special.ndtri(p)


def norm_sf(x: Any) -> Any:
    """``scipy.stats.norm.sf(x)``."""
    from scipy import special

    return special.ndtr(np.negative(x))


TRIM = 0.2


@dataclass(frozen=True)
class Summary:
    """One series of samples, summarised on the log scale and reported back in tokens/J.

    ``estimate`` is exp(20 %-trimmed mean of log samples), i.e. a robust geometric mean;
    ``ci_low``/``ci_high`` its Yuen interval at the requested confidence, or None with
    ``why_no_ci`` saying why (too few samples, zero spread).
    """

    n: int
    estimate: float
    ci_low: float | None
    ci_high: float | None
    why_no_ci: str | None = None


def _trim_count(n: int, trim: float) -> int:
    return math.floor(trim * n)


def trimmed_mean_and_se(x: np.ndarray, trim: float = TRIM) -> tuple[float, float, int]:
    """Trimmed mean, Yuen's standard error and degrees of freedom (h - 1) of ``x``.

    The standard error is sqrt((n-1) s_w^2 / (h (h-1))) with s_w^2 the winsorised variance
    and h = n - 2g the number of kept values; it is NaN when h < 2.
    """
    n = int(x.size)
    g = _trim_count(n, trim)
    xs = np.sort(x)
    h = n - 2 * g
    tm = float(np.mean(xs[g : n - g])) if h > 0 else float("nan")
    if h < 2:
        return tm, float("nan"), max(h - 1, 0)
    w = xs.copy()
    w[:g] = xs[g]
    w[n - g :] = xs[n - g - 1]
    sw2 = float(np.var(w, ddof=1))
    se = math.sqrt((n - 1) * sw2 / (h * (h - 1)))
    return tm, se, h - 1


def summarize(samples: Sequence[float], confidence: float = 0.90, trim: float = TRIM) -> Summary:
    """Robust level and two-sided interval of positive samples (tokens per joule)."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples to summarise")
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("samples must be finite and positive")
    logs = np.log(x)
    tm, se, df = trimmed_mean_and_se(logs, trim)
    estimate = math.exp(tm)
    if not math.isfinite(se):
        why = f"{x.size} sample(s): too few for an interval"
        return Summary(int(x.size), estimate, None, None, why)
    if se == 0.0:
        return Summary(int(x.size), estimate, estimate, estimate, "all samples equal")
    q = float(t_ppf(0.5 + confidence / 2.0, df))
    return Summary(int(x.size), estimate, math.exp(tm - q * se), math.exp(tm + q * se))


# ---------------------------------------------------------------------------------------------
# Verdict engine: per measurement and across the suite (docs/verdicts.md)
# ---------------------------------------------------------------------------------------------


#: Order of the integer codes returned by :func:`classify_bounds` (vectorised classification).
VERDICT_CODES: tuple[Verdict, ...] = (
    Verdict.REGRESSED,
    Verdict.MINOR_REGRESSION,
    Verdict.UNCHANGED,
    Verdict.IMPROVED,
    Verdict.INCONCLUSIVE,
)
_REG, _MINOR, _UNCH, _IMP, _INC = range(5)

#: Candidate round counts at which the sequential procedure decides (docs/verdicts.md).
DEFAULT_LOOKS: tuple[int, ...] = (5, 10, 15, 20)


@dataclass(frozen=True)
class Params:
    """Knobs of the verdict engine; the user's four default to the options table's.

    ``confidence`` is the two-sided confidence of the interval ``[L, U]``; each side is tested at
    ``alpha = (1 - confidence) / 2``. ``looks`` are the candidate round counts at which the
    sequential procedure decides.
    """

    tolerance: float = default("tolerance")
    noise_floor: float = default("noise_floor")
    confidence: float = default("confidence")
    trim: float = TRIM
    looks: tuple[int, ...] = DEFAULT_LOOKS
    fdr_q: float = default("fdr")

    def __post_init__(self) -> None:
        if not 0.0 < self.tolerance < 1.0:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if not 0.0 <= self.noise_floor < self.tolerance:
            raise ValueError(
                f"noise_floor must be in [0, tolerance), got {self.noise_floor} "
                f"(tolerance {self.tolerance})"
            )
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if not 0.0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")
        if (
            not self.looks
            or any(k < 2 for k in self.looks)
            or list(self.looks) != sorted(set(self.looks))
        ):
            raise ValueError(f"looks must be increasing round counts >= 2, got {self.looks}")
        if not 0.0 < self.fdr_q < 1.0:
            raise ValueError(f"fdr_q must be in (0, 1), got {self.fdr_q}")

    @property
    def alpha(self) -> float:
        """One-sided level per side, ``(1 - confidence) / 2``."""
        return (1.0 - self.confidence) / 2.0


@dataclass(frozen=True)
class Comparison:
    """Candidate against baseline for one measurement (all ratios are candidate / baseline).

    ``ratio`` is exp(difference of trimmed means of log tokens/J), after dividing out ``shift``.
    ``ci_low`` uses ``alpha_equiv`` (tolerance side), ``ci_high`` uses ``alpha`` (regression
    side); both are None, with ``why`` saying so, when no interval exists. ``p_regression`` is
    the one-sided p-value of H0: r >= 1 - noise_floor (1.0 when no interval exists).
    ``outliers`` and ``outliers_baseline`` count log samples outside Tukey's fences (1.5 IQR).
    ``provisional`` marks an interim look that did not stop (its verdict is not to be reported);
    ``stopped_early`` an interim look that stopped on UNCHANGED/IMPROVED (enters FDR with p =
    1). ``p_adjusted`` is the Benjamini-Hochberg adjusted p once the whole run is judged.
    """

    verdict: Verdict
    ratio: float
    ci_low: float | None
    ci_high: float | None
    p_regression: float
    n_baseline: int
    n_candidate: int
    n_sessions: int
    sigma_b: float
    sigma_b_source: str
    df: float
    se_log: float
    alpha: float
    alpha_equiv: float
    shift: float = 0.0
    outliers: int = 0
    outliers_baseline: int = 0
    why: str | None = None
    provisional: bool = False
    stopped_early: bool = False
    p_adjusted: float | None = None

    @property
    def change(self) -> float:
        """``ratio - 1`` (e.g. -0.05 for 5 % fewer tokens per joule)."""
        return self.ratio - 1.0


# --- vectorised building blocks (also used by pytest_tpw.judging) ------------------------------


def trimmed_stats(x: np.ndarray, trim: float = TRIM) -> tuple[np.ndarray, np.ndarray, int]:
    """Trimmed mean ``m``, Yuen squared standard error ``d``, kept count ``h`` (last axis).

    ``x`` holds log samples, shape ``(..., n)``. ``d = (n-1) s_w^2 / (h (h-1))`` with ``s_w^2``
    the winsorised variance; ``d`` is NaN when ``h < 2``, ``m`` is NaN when ``h == 0``. Same
    numbers as :func:`trimmed_mean_and_se` (``d = se**2``), for many series at once.
    """
    xs = np.sort(np.asarray(x, dtype=float), axis=-1)
    n = int(xs.shape[-1])
    g = _trim_count(n, trim)
    h = n - 2 * g
    shape = xs.shape[:-1]
    if h <= 0:
        return np.full(shape, np.nan), np.full(shape, np.nan), max(h, 0)
    m = np.mean(xs[..., g : n - g], axis=-1)
    if h < 2:
        return m, np.full(shape, np.nan), h
    w = np.clip(xs, xs[..., g : g + 1], xs[..., n - g - 1 : n - g])
    sw2 = np.var(w, axis=-1, ddof=1)
    d = (n - 1) * sw2 / (h * (h - 1))
    # all kept values equal: exactly zero spread (the float mean of equal values can be off by
    # an ulp and leave a ~1e-32 variance)
    d = np.where(xs[..., g] == xs[..., n - g - 1], 0.0, d)
    return m, d, h


def classify_bounds(
    low: np.ndarray | float,
    high: np.ndarray | float,
    tolerance: np.ndarray | float,
    noise_floor: float,
) -> np.ndarray:
    """Integer verdict codes (index into :data:`VERDICT_CODES`) of log-ratio bounds ``[L, U]``.

    ``tolerance`` may be one value or one per bound (a per-test tolerance).

    The classification: ``U < log(1-d0)`` and ``L <= log(1-d)`` -> REGRESSED; ``U < log(1-d0)`` ->
    MINOR_REGRESSION; ``L > log(1+d0)`` -> IMPROVED; ``L > log(1-d)`` -> UNCHANGED; otherwise
    INCONCLUSIVE (also for NaN bounds).
    """
    lo = np.asarray(low, dtype=float)
    hi = np.asarray(high, dtype=float)
    log_tol = np.log(1.0 - np.asarray(tolerance, dtype=float))
    below = hi < math.log(1.0 - noise_floor)
    return np.where(
        below & (lo <= log_tol),
        _REG,
        np.where(
            below,
            _MINOR,
            np.where(
                lo > math.log(1.0 + noise_floor),
                _IMP,
                np.where(lo > log_tol, _UNCH, _INC),
            ),
        ),
    ).astype(np.int8)


def tukey_outliers(logs: np.ndarray) -> int:
    """Number of values outside Tukey's fences ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]``."""
    if logs.size < 4:
        return 0
    q1, q3 = np.percentile(logs, [25.0, 75.0])
    iqr = q3 - q1
    return int(np.count_nonzero((logs < q1 - 1.5 * iqr) | (logs > q3 + 1.5 * iqr)))


def positive_logs(samples: Sequence[float], what: str) -> np.ndarray:
    """log of tokens/J samples; anything not finite and positive is a ``ValueError``."""
    x = np.asarray(samples, dtype=float).ravel()
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"{what} samples must be finite and positive (tokens per joule)")
    return np.asarray(np.log(x), dtype=float)


# --- sequential looks ----------------------------------------------------------------------------


def look_level(alpha: float, looks: Sequence[int]) -> float:
    """One-sided level per look so that crossing at any of ``looks`` has chance ``alpha``.

    Pocock's constant boundary for a Gaussian statistic observed at information fractions
    ``looks[k] / looks[-1]`` (a Brownian motion): ``c`` solves ``P(max_k Z_k > c) = alpha`` and
    each look uses ``1 - Phi(c)``. Bonferroni (``alpha / K``) ignores that the looks share
    their windows and is stricter: for looks 5/10/15/20 at ``alpha = 0.05`` it is 0.0125
    against Pocock's ~0.0193. A noise part that does not shrink with more windows (the
    session shifts, the baseline's own error) makes the looks more alike than a Brownian
    motion, so the chance is then at most ``alpha``. One look: ``alpha``.
    """
    ks = tuple(int(k) for k in looks)
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not ks or any(k < 1 for k in ks) or list(ks) != sorted(set(ks)):
        raise ValueError(f"looks must be increasing positive counts, got {looks}")
    return _pocock_level(float(alpha), ks)


@functools.lru_cache(maxsize=64)
def _pocock_level(alpha: float, looks: tuple[int, ...]) -> float:
    if len(looks) == 1:
        return alpha
    t = np.asarray(looks, dtype=float) / looks[-1]
    step = 0.005
    grid = np.arange(-9.0, 9.0 + step / 2, step)

    def below(c: float, k: int) -> np.ndarray:
        # share of each grid cell under the boundary c sqrt(t_k) (smooth in c)
        return np.asarray(np.clip((c * math.sqrt(t[k]) - grid) / step + 0.5, 0.0, 1.0))

    def crossing(c: float) -> float:
        # density of the process at each look, kept only below the boundary
        dens = _st.norm.pdf(grid, scale=math.sqrt(t[0])) * below(c, 0)
        for k in range(1, len(t)):
            sd = math.sqrt(t[k] - t[k - 1])
            half = min(math.ceil(9.0 * sd / step), grid.size - 1)
            kernel = _st.norm.pdf(np.arange(-half, half + 1) * step, scale=sd) * step
            dens = np.convolve(dens, kernel, mode="same")
            dens = dens * below(c, k)
        return 1.0 - float(np.sum(dens) * step)

    lo = float(norm_ppf(1.0 - alpha))  # one look's constant: too small for several
    hi = float(norm_ppf(1.0 - alpha / len(looks)))  # Bonferroni's: large enough
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if crossing(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return float(norm_sf(hi))


# --- suite level: false-discovery control --------------------------------------------------------


def bh_adjusted(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``, 'bh')."""
    ps = np.asarray(p_values, dtype=float)
    if ps.size == 0:
        return []
    if np.any(~np.isfinite(ps)) or np.any((ps < 0) | (ps > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return [float(v) for v in _st.false_discovery_control(ps, method="bh")]


# --- within-session dependence and sensor resolution (used by pytest_tpw.judging) ------------


def ar1_variance_factor(rho: float, n: int | np.ndarray, cap: float | None = None) -> np.ndarray:
    """Variance of the mean of ``n`` AR(1) values with lag-1 correlation ``rho``, over iid's.

    ``1 + 2 sum_{k=1}^{n-1} (1 - k/n) rho^k`` (exact for a stationary AR(1)); 1 for rho <= 0
    (negative correlation is not credited). Capped at ``cap`` (default ``n``: the mean is never
    taken as noisier than one window), vectorised over ``n``.
    """
    nn = np.asarray(n, dtype=float)
    r = float(rho)
    if not math.isfinite(r) or r <= 0.0:
        return np.ones_like(nn)
    r = min(r, 0.999)
    # closed form of the finite sum: 1 + 2 r/(1-r) - 2 r (1 - r^n) / (n (1-r)^2)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = 1.0 + 2.0 * r / (1.0 - r) - 2.0 * r * (1.0 - r**nn) / (nn * (1.0 - r) ** 2)
    f = np.where(nn > 1, f, 1.0)
    top = nn if cap is None else np.minimum(nn, cap)
    return np.asarray(np.clip(f, 1.0, np.maximum(top, 1.0)), dtype=float)


def ar1_df_factor(rho: float) -> float:
    """Share of a series' degrees of freedom left for its variance under AR(1) ``rho``.

    The sample variance of n AR(1) values varies like that of ``n (1 - rho^2) / (1 + rho^2)``
    independent ones (``var(s^2) ~ 2 sigma^4 (1 + 2 sum rho^(2k)) / n``), so a variance from
    ``h - 1`` df is worth ``(h - 1) (1 - rho^2) / (1 + rho^2)``. Dividing the df by the
    variance factor of the mean (:func:`ar1_variance_factor`, ``(1 + rho) / (1 - rho)`` for
    long series) instead over-shrinks them: at rho 0.6 a one-sided t test at 1.25 % then
    rejected 0.05-0.2 % of the time, by simulation. 1 for rho <= 0.
    """
    r = float(rho)
    if not math.isfinite(r) or r <= 0.0:
        return 1.0
    r = min(r, 0.999)
    return (1.0 - r * r) / (1.0 + r * r)


def lag1_autocorrelation(series: Sequence[np.ndarray], outlier: float = 3.0) -> tuple[float, int]:
    """Pooled, bias-corrected lag-1 autocorrelation of several time-ordered series.

    Each series (one stored session, windows in time order, at least 4 values) is centred on
    its median; values farther than ``outlier`` x its MAD (scaled to an SD) are left out
    (throttled windows are white noise that the trimmed mean discards anyway), together with
    the lag pairs they belong to. The pooled ratio r = (mean lag product) / (mean square) of
    mean-centred series is biased low on short series (20 windows of AR(1) 0.6 give r ~ 0.50);
    the returned rho solves ``E[r | rho] = r`` exactly for a stationary AR(1) with the
    series' lengths (:func:`lag1_expected`), instead of the first-order
    ``E[r] ~ rho - (1 + 3 rho) / n``, which over-corrects (0.65 for 0.6 at n = 20, 0.74 at
    n = 5). Returns ``(rho, number of lag pairs used)``, rho in [-0.999, 0.999]; ``(0.0, 0)``
    when nothing is usable. A within-session trend shows up as positive rho (remove a shared
    one first).
    """
    by_len: dict[int, list[np.ndarray]] = {}
    for s in series:
        x = np.asarray(s, dtype=float).ravel()
        if x.size >= 4:
            by_len.setdefault(int(x.size), []).append(x)
    num = den = 0.0
    pairs = values = 0
    lengths: dict[int, int] = {}
    for xs in by_len.values():
        a, k, b, v, kept = lag1_parts(np.stack(xs), outlier)
        num += a
        den += b
        pairs += k
        values += v
        for n, c in kept.items():
            lengths[n] = lengths.get(n, 0) + c
    return lag1_from_parts(num, pairs, den, values, lengths)


def _length_groups(lengths: float | Mapping[int, int]) -> dict[int, int]:
    """``{length: number of series}`` from one length or such a mapping."""
    return {round(lengths): 1} if isinstance(lengths, (int, float)) else dict(lengths)


def lag1_expected(rho: float, lengths: float | Mapping[int, int]) -> float:
    """Expected pooled lag-1 ratio of mean-centred stationary AR(1) series (:func:`lag1_parts`).

    ``lengths`` is one series length or ``{length: number of series}``. For one series of
    length n with unit variance, ``E[sum (x_i - xbar)^2] = n - f`` and
    ``E[sum (x_i - xbar)(x_{i+1} - xbar)] = (n - 1) rho - f (n + 1) / n + 2 c / n`` with
    ``f = n var(xbar)`` (:func:`ar1_variance_factor`, uncapped) and
    ``c = (1 - rho^n) / (1 - rho)``; the ratio of the pooled sums, each divided by its count
    (pairs, values), is returned. Pooled over hundreds of series it is the estimator's mean.
    """
    r = min(max(float(rho), -0.9999), 0.9999)
    e_num = e_den = n_pairs = n_values = 0.0
    for n, count in _length_groups(lengths).items():
        if n < 2 or count <= 0:
            continue
        f = 1.0 + 2.0 * r / (1.0 - r) - 2.0 * r * (1.0 - r**n) / (n * (1.0 - r) ** 2)
        c = (1.0 - r**n) / (1.0 - r)
        e_num += count * ((n - 1) * r - f * (n + 1) / n + 2.0 * c / n)
        e_den += count * (n - f)
        n_pairs += count * (n - 1)
        n_values += count * n
    if n_pairs == 0.0 or e_den <= 0.0:
        return math.nan
    return (e_num / n_pairs) / (e_den / n_values)


def lag1_from_parts(
    num: float, pairs: int, den: float, values: int, lengths: float | Mapping[int, int]
) -> tuple[float, int]:
    """``(rho, pairs)`` from the sums of :func:`lag1_parts` (bias-corrected, see above).

    ``lengths``: the series' length, or ``{length: number of series}`` for mixed lengths (the
    kept lengths of :func:`lag1_parts`). rho solves :func:`lag1_expected` ``(rho, lengths) = r``
    (it increases with rho), clipped to [-0.999, 0.999].
    """
    groups = _length_groups(lengths)
    if pairs == 0 or values == 0 or den <= 0.0 or not any(n >= 3 for n in groups):
        return 0.0, 0
    r = (num / pairs) / (den / values)
    lo, hi = -0.999, 0.999
    if r <= lag1_expected(lo, groups):
        return lo, int(pairs)
    if r >= lag1_expected(hi, groups):
        return hi, int(pairs)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if lag1_expected(mid, groups) < r:
            lo = mid
        else:
            hi = mid
    return float(0.5 * (lo + hi)), int(pairs)


def lag1_parts(
    rows: np.ndarray, outlier: float = 3.0
) -> tuple[float, int, float, int, dict[int, int]]:
    """Lag-1 products, their count, squares, their count and kept lengths of series (rows).

    The vectorised core of :func:`lag1_autocorrelation`: each row (equal-length series) centred
    on its median, values beyond ``outlier`` MADs dropped, the rest centred on their mean. The
    last value maps each kept length (values left in a row, at least 2) to its number of rows:
    a row that lost a throttled window is centred on fewer values, which
    :func:`lag1_from_parts` accounts for.
    """
    x = np.asarray(rows, dtype=float)
    x = x.reshape(-1, x.shape[-1])
    x = x - np.median(x, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(x), axis=1, keepdims=True)
    ok = np.abs(x) <= outlier * mad
    kept = ok.sum(axis=1)
    cnt = np.maximum(kept, 1)[:, None]
    xc = np.where(ok, x - np.sum(np.where(ok, x, 0.0), axis=1, keepdims=True) / cnt, 0.0)
    pair = ok[:, :-1] & ok[:, 1:]
    num = float(np.sum(np.where(pair, xc[:, :-1] * xc[:, 1:], 0.0)))
    lens, counts = np.unique(kept[kept >= 2], return_counts=True)
    lengths = {int(n): int(c) for n, c in zip(lens, counts, strict=True)}
    return num, int(pair.sum()), float(np.sum(xc * xc)), int(ok.sum()), lengths
