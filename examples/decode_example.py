"""Call form: measure KV-cached greedy decoding of a batch, and show batch size moving tokens/J.

``tpw(fn, *args, tokens=..., **kwargs)`` calls ``fn(*args, **kwargs)`` as often as the meter
needs (warm-up, rounds, several calls per window when one call is short) and returns the last
result. ``tokens`` counts the *new* tokens of one call. Without ``--tpw`` the call runs once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from tiny_llm import TinyLM

from pytest_tpw import Result, TokensPerJoule

NEW_TOKENS = 32

MakePrompts = Callable[..., torch.Tensor]


def test_generate_batch(tpw: TokensPerJoule, model: TinyLM, prompts: torch.Tensor) -> None:
    out = tpw(model.generate, prompts, max_new_tokens=NEW_TOKENS, tokens=lambda out: out.numel())

    assert out.shape == (prompts.shape[0], NEW_TOKENS)
    assert out.dtype == torch.long
    assert ((out >= 0) & (out < model.config.vocab_size)).all()
    # Greedy decoding is deterministic: the measured call agrees with a fresh one.
    assert torch.equal(out, model.generate(prompts, max_new_tokens=NEW_TOKENS))
    if tpw.result is not None:  # measured (`pytest --tpw`)
        assert tpw.result.tokens_per_joule > 0
        assert tpw.result.joules_per_token == pytest.approx(1 / tpw.result.tokens_per_joule)


def test_kv_cache_matches_recompute(model: TinyLM, prompts: torch.Tensor) -> None:
    """Correctness, not measured: cached decode steps give what recomputing everything gives."""
    cached = model.generate(prompts, max_new_tokens=12)
    recomputed = model.generate_uncached(prompts, max_new_tokens=12)

    assert torch.equal(cached, recomputed)
    assert len(torch.unique(cached)) > 1  # a model that repeats one token would prove nothing


@pytest.mark.tpw(rounds=5)  # two measurements in one test: keep each one short
def test_batching_raises_tokens_per_joule(
    tpw: TokensPerJoule, model: TinyLM, make_prompts: MakePrompts
) -> None:
    """Two named measurements in one test: each is reported (and baselined) on its own."""
    new_tokens = 16
    results: dict[int, Result | None] = {}
    for batch in (1, 8):
        ids = make_prompts(batch)
        out = tpw(
            model.generate,
            ids,
            max_new_tokens=new_tokens,
            tokens=lambda out: out.numel(),
            name=f"batch{batch}",
        )
        assert out.shape == (batch, new_tokens)
        results[batch] = tpw.result

    # Batching shares each weight read and each kernel launch among the sequences of the batch.
    if results[1] is not None and results[8] is not None:
        assert results[8].tokens_per_joule > results[1].tokens_per_joule
