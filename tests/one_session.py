"""One stored session against a candidate through the engine's kernel: the shared helper of the
statistics tests (not collected: no test_)."""

from __future__ import annotations

import math

import numpy as np

from pytest_tpw.judging.kernels import decide_arrays
from pytest_tpw.stats import VERDICT_CODES, Params, Verdict, trimmed_stats


def kernel(
    baseline: list[float],
    candidate: list[float],
    sigma_b: float = 0.0,
    params: Params | None = None,
    alpha: float | None = None,
    alpha_equiv: float | None = None,
) -> tuple[Verdict, float, float, float, float, float]:
    """One stored session against a candidate through the engine's kernel, sigma_b known:
    verdict, ratio, interval, one-sided p and df."""
    p = params or Params()
    b, c = np.log(baseline), np.log(candidate)
    m_b, d_b, h_b = trimmed_stats(b, p.trim)
    m_c, d_c, h_c = trimmed_stats(c, p.trim)
    a = p.alpha if alpha is None else alpha
    dec = decide_arrays(
        np.asarray([m_c]),
        np.asarray([d_c]),
        np.asarray([h_c - 1.0]),
        np.asarray([m_b]),
        np.asarray([d_b]),
        np.asarray([h_b - 1.0]),
        np.asarray([1.0]),
        sigma_b**2,
        1e300,  # sigma_b known: its part adds nothing to the degrees of freedom
        0.0,
        0.0,
        p.tolerance,
        p,
        a,
        a if alpha_equiv is None else alpha_equiv,
    )
    return (
        VERDICT_CODES[int(dec.code[0])],
        math.exp(float(dec.est[0])),
        math.exp(float(dec.low[0])),
        math.exp(float(dec.high[0])),
        float(dec.p[0]),
        float(dec.df[0]),
    )
