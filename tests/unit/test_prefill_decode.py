"""Decode-only tokens per joule from a one-token and a full-length measurement."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from pytest_tpw.prefill_decode import DecodeEstimateError, decode_tokens_per_joule

BATCH, NEW = 4, 16
ONE_TOKENS, FULL_TOKENS = BATCH, BATCH * NEW
PREFILL_J, DECODE_J_PER_TOKEN = 2.0, 0.1  # joules per call: prefill, and each decode token
TRUE_TPJ = 1.0 / DECODE_J_PER_TOKEN
FULL_J = PREFILL_J + DECODE_J_PER_TOKEN * (FULL_TOKENS - ONE_TOKENS)


def samples(tokens: int, joules: float, n: int, noise: float, rng: random.Random) -> list[float]:
    """tokens/J per window when each call costs ``joules`` with relative Gaussian noise."""
    return [tokens / (joules * (1.0 + rng.gauss(0.0, noise))) for _ in range(n)]


def test_noise_free_measurements_give_the_decode_cost_exactly() -> None:
    full = SimpleNamespace(samples=(FULL_TOKENS / FULL_J,) * 5, n=5)
    one = SimpleNamespace(samples=(ONE_TOKENS / PREFILL_J,) * 5, n=5)
    est = decode_tokens_per_joule(
        full, one, full_tokens_per_call=FULL_TOKENS, one_tokens_per_call=ONE_TOKENS
    )
    assert est.tokens_per_joule == pytest.approx(TRUE_TPJ)
    assert est.joules_per_token == pytest.approx(DECODE_J_PER_TOKEN)
    assert est.prefill_joules_per_call == pytest.approx(PREFILL_J)
    assert est.decode_joules_per_call == pytest.approx(FULL_J - PREFILL_J)
    assert est.decode_tokens_per_call == FULL_TOKENS - ONE_TOKENS
    assert est.ci == pytest.approx((TRUE_TPJ, TRUE_TPJ))
    # the whole call's tokens/J is not the decode figure: prefill drags it down
    assert est.tokens_per_joule > FULL_TOKENS / FULL_J


def test_interval_covers_the_true_decode_figure_at_about_its_confidence() -> None:
    rng = random.Random(7)
    trials, hits = 400, 0
    for _ in range(trials):
        est = decode_tokens_per_joule(
            samples(FULL_TOKENS, FULL_J, 10, 0.03, rng),
            samples(ONE_TOKENS, PREFILL_J, 10, 0.03, rng),
            full_tokens_per_call=FULL_TOKENS,
            one_tokens_per_call=ONE_TOKENS,
            confidence=0.9,
        )
        assert est.ci is not None
        lo, hi = est.ci
        assert lo <= est.tokens_per_joule <= hi
        hits += lo <= TRUE_TPJ <= hi
    assert 0.82 <= hits / trials <= 0.97


def test_wider_confidence_gives_a_wider_interval() -> None:
    rng = random.Random(3)
    full = samples(FULL_TOKENS, FULL_J, 8, 0.05, rng)
    one = samples(ONE_TOKENS, PREFILL_J, 8, 0.05, rng)
    kw = {"full_tokens_per_call": FULL_TOKENS, "one_tokens_per_call": ONE_TOKENS}
    narrow = decode_tokens_per_joule(full, one, confidence=0.5, **kw).ci
    wide = decode_tokens_per_joule(full, one, confidence=0.99, **kw).ci
    assert narrow is not None and wide is not None
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_unresolved_decode_cost_gives_an_open_upper_end() -> None:
    # joules per call: the full calls cost 0.1 J more on average, with 0.2 J of spread
    one_j = [1.8, 2.0, 2.2, 1.9, 2.1]
    full_j = [1.9, 2.3, 2.0, 2.2, 2.1]
    est = decode_tokens_per_joule(
        [FULL_TOKENS / j for j in full_j],
        [ONE_TOKENS / j for j in one_j],
        full_tokens_per_call=FULL_TOKENS,
        one_tokens_per_call=ONE_TOKENS,
    )
    assert est.decode_joules_per_call == pytest.approx(0.1)
    assert est.ci is not None and est.ci[1] == math.inf
    assert est.ci[0] < est.tokens_per_joule


def test_too_few_samples_give_no_interval_and_say_why() -> None:
    est = decode_tokens_per_joule(
        [FULL_TOKENS / FULL_J] * 2,
        [ONE_TOKENS / PREFILL_J],
        full_tokens_per_call=FULL_TOKENS,
        one_tokens_per_call=ONE_TOKENS,
    )
    assert est.ci is None and est.why_no_ci is not None and "too few" in est.why_no_ci
    assert est.tokens_per_joule == pytest.approx(TRUE_TPJ)


@pytest.mark.parametrize(
    ("full", "one", "full_tokens", "one_tokens", "match"),
    [
        ([1.0] * 3, [8.0] * 3, 4, 64, "0 < one_tokens_per_call < full_tokens_per_call"),
        # `full` and `one` swapped: the "full" calls cost less than the one-token calls
        ([64 / 2.0] * 3, [4 / 8.0] * 3, 64, 4, "no positive decode cost"),
        (None, [2.0] * 3, 64, 4, "has no samples; it is None without --tpw"),
        ([], [2.0] * 3, 64, 4, "`full` has no samples"),
        ([2.0, -1.0], [2.0] * 3, 64, 4, "not a finite positive"),
        (3.0, [2.0] * 3, 64, 4, "neither a result with .samples"),
    ],
)
def test_errors_say_what_is_wrong(
    full: object, one: object, full_tokens: int, one_tokens: int, match: str
) -> None:
    with pytest.raises(DecodeEstimateError, match=match):
        decode_tokens_per_joule(
            full, one, full_tokens_per_call=full_tokens, one_tokens_per_call=one_tokens
        )


def test_confidence_must_be_a_probability() -> None:
    with pytest.raises(DecodeEstimateError, match=r"confidence 1\.5"):
        decode_tokens_per_joule(
            [1.0], [1.0], full_tokens_per_call=2, one_tokens_per_call=1, confidence=1.5
        )
