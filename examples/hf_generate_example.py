"""Call form through Hugging Face transformers: ``model.generate`` on a tiny Llama.

The model is built from a config with seeded random weights (no download) and fed random token
ids (no tokenizer). ``tokens`` counts only the new tokens: ``generate`` returns prompt + new.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_llm import device

from pytest_tpw import TokensPerJoule

transformers = pytest.importorskip("transformers")

PROMPT_LEN = 16
BATCH = 4
NEW_TOKENS = 16
PAD = 0


@pytest.fixture(scope="module")
def hf_model() -> Any:
    config = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        # Random weights may emit any id at any step: no EOS, so every call makes NEW_TOKENS
        # tokens per sequence, as serving benchmarks do with `ignore_eos`.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=PAD,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.to(device()).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def input_ids() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(1, 512, (BATCH, PROMPT_LEN), generator=gen).to(device())


def new_tokens(out: torch.Tensor) -> int:
    return out[:, PROMPT_LEN:].numel()


def test_hf_generate(tpw: TokensPerJoule, hf_model: Any, input_ids: torch.Tensor) -> None:
    out = tpw(
        hf_model.generate,
        input_ids,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=PAD,
        tokens=new_tokens,
    )
    uncached = hf_model.generate(
        input_ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=PAD, use_cache=False
    )

    assert out.shape == (BATCH, PROMPT_LEN + NEW_TOKENS)
    assert torch.equal(out[:, :PROMPT_LEN], input_ids)
    assert torch.equal(out, uncached)  # the KV cache changes the cost, not the tokens
    if tpw.result is not None:  # measured (`pytest --tpw`)
        assert tpw.result.tokens_per_joule > 0
