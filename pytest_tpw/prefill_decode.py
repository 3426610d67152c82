"""Decode-only tokens per joule, from two measurements of one request: 1 new token and N.

A ``generate`` call spends joules on prefill (the prompt's forward pass, which also gives the
first new token) and on decode (one step per further token). Tokens per joule of the whole call
mixes the two. Measure the same request twice, with ``max_new_tokens=1`` and at full length,
as two named measurements of one test; the difference of their joules per call is the cost of
the decode steps, and :func:`decode_tokens_per_joule` turns it into tokens per joule with an
interval. Works on plain data: anything with ``.samples`` (tokens/J per window), or the sample
lists themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytest_tpw.errors import TpwError

__all__ = ["DecodeEstimate", "DecodeEstimateError", "decode_tokens_per_joule"]


class DecodeEstimateError(TpwError, ValueError):
    """The two measurements cannot give a decode-only figure; the message says why."""


@dataclass(frozen=True)
class DecodeEstimate:
    """Decode-only tokens per joule and what it was computed from.

    ``ci`` is the two-sided interval at ``confidence``; its upper end is ``math.inf`` when the
    interval of the decode joules reaches zero (the decode cost is not resolved from noise),
    and ``ci`` is ``None`` (``why_no_ci`` says why) when a side has too few samples.
    Joules are per call: ``prefill_joules_per_call`` is the short measurement's (prefill and the
    first token), ``decode_joules_per_call`` the difference.
    """

    tokens_per_joule: float
    ci: tuple[float, float] | None
    confidence: float
    decode_tokens_per_call: int
    decode_joules_per_call: float
    prefill_joules_per_call: float
    full_joules_per_call: float
    why_no_ci: str | None = None

    @property
    def joules_per_token(self) -> float:
        """Decode joules per generated token (the reciprocal of ``tokens_per_joule``)."""
        return 1.0 / self.tokens_per_joule


def _samples(m: Any, name: str) -> list[float]:
    raw = getattr(m, "samples", m)
    if raw is None:
        raise DecodeEstimateError(
            f"decode_tokens_per_joule: `{name}` has no samples; it is None without --tpw "
            f"(guard with `if tpw.result is not None`), or pass tpw.results['<name>']"
        )
    try:
        values = [float(v) for v in raw]
    except TypeError:
        raise DecodeEstimateError(
            f"decode_tokens_per_joule: `{name}` ({type(m).__name__}) is neither a result with "
            ".samples (tokens per joule per window) nor a list of such samples"
        ) from None
    if not values:
        raise DecodeEstimateError(f"decode_tokens_per_joule: `{name}` has no samples")
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise DecodeEstimateError(
            f"decode_tokens_per_joule: `{name}` has a sample that is not a finite positive "
            "tokens-per-joule figure"
        )
    return values


def decode_tokens_per_joule(
    full: Any,
    one: Any,
    *,
    full_tokens_per_call: int,
    one_tokens_per_call: int,
    confidence: float = 0.90,
) -> DecodeEstimate:
    """Decode-only tokens per joule from a full-length and a one-token measurement.

    ``full`` and ``one`` are results of the same request (same model, prompts and batch) with
    ``max_new_tokens=N`` and ``max_new_tokens=1``: ``tpw.results["full"]``,
    ``tpw.results["one"]``, or anything with ``.samples`` (tokens per joule, one per window), or
    those sample lists. ``full_tokens_per_call`` and ``one_tokens_per_call`` are the tokens each
    call counted (batch B: ``B * N`` and ``B``); every call of a measurement must count the same
    tokens, so generate a fixed length (no early EOS: ``min_new_tokens=N`` or no EOS id).

    Each window's joules per call is ``tokens_per_call / sample``. The decode cost is the
    difference of the two 20 %-trimmed means of joules per call, with Yuen standard errors and
    Welch-Satterthwaite degrees of freedom for its t interval; decode tokens per joule is
    ``(full_tokens_per_call - one_tokens_per_call) / decode joules``, and its interval the same
    map of the ends of the joules' interval (upper end infinite when that interval reaches 0).
    A decode cost that is not positive is a :class:`DecodeEstimateError`: the two measurements
    cannot tell decode from noise (use longer generations or more rounds).
    """
    if not 0.0 < confidence < 1.0:
        raise DecodeEstimateError(f"decode_tokens_per_joule: confidence {confidence} not in (0, 1)")
    if one_tokens_per_call <= 0 or full_tokens_per_call <= one_tokens_per_call:
        raise DecodeEstimateError(
            "decode_tokens_per_joule: need 0 < one_tokens_per_call < full_tokens_per_call, got "
            f"{one_tokens_per_call} and {full_tokens_per_call} (batch B, N new tokens: B and B*N)"
        )
    import numpy as np
    from scipy import stats as st

    from pytest_tpw.stats import trimmed_mean_and_se

    j_full = np.asarray([full_tokens_per_call / s for s in _samples(full, "full")])
    j_one = np.asarray([one_tokens_per_call / s for s in _samples(one, "one")])
    m_full, se_full, df_full = trimmed_mean_and_se(j_full)
    m_one, se_one, df_one = trimmed_mean_and_se(j_one)
    decode_j = m_full - m_one
    decode_tokens = full_tokens_per_call - one_tokens_per_call
    if not decode_j > 0:
        raise DecodeEstimateError(
            f"decode_tokens_per_joule: the full-length call costs {m_full:.4g} J, the one-token "
            f"call {m_one:.4g} J: no positive decode cost to divide by; check that `full` and "
            "`one` are the right way round and the same request, and use longer generations or "
            "more rounds"
        )
    tpj = decode_tokens / decode_j
    ci: tuple[float, float] | None
    why: str | None = None
    if not (math.isfinite(se_full) and math.isfinite(se_one)):
        ci = None
        why = f"{len(j_full)} and {len(j_one)} samples: too few for an interval (need 3 each)"
    elif se_full == 0.0 and se_one == 0.0:
        ci, why = (tpj, tpj), "all samples equal"
    else:
        var = se_full**2 + se_one**2
        den = sum(se**4 / df for se, df in ((se_full, df_full), (se_one, df_one)) if se > 0)
        q = float(st.t.ppf(0.5 + confidence / 2.0, var**2 / den))
        lo_j, hi_j = decode_j - q * math.sqrt(var), decode_j + q * math.sqrt(var)
        ci = (decode_tokens / hi_j, decode_tokens / lo_j if lo_j > 0 else math.inf)
    return DecodeEstimate(
        tokens_per_joule=tpj,
        ci=ci,
        confidence=confidence,
        decode_tokens_per_call=decode_tokens,
        decode_joules_per_call=decode_j,
        prefill_joules_per_call=m_one,
        full_joules_per_call=m_full,
        why_no_ci=why,
    )
