"""Shared fixtures of the examples: one seeded tiny model and its prompts per session.

The model is built once, in eval mode with gradients off; its ``generate``/``stream`` run under
``torch.inference_mode``. Prompts are random token ids from a fixed seed: the examples need no
tokenizer and no download. Everything lands on :func:`tiny_llm.device` (CUDA when available).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch
    from tiny_llm import TinyLM

# The Hugging Face example builds its model from a config; make sure nothing reaches the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# The examples need PyTorch (`pip install pytest-tpw[examples]`); without it they are skipped
# at collection instead of failing the suite.
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["*_example.py"]

# `tiny_llm` sits next to this file; pytest's default import mode puts this folder on sys.path,
# this line keeps the examples importable under `--import-mode=importlib` too.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

PROMPT_LEN = 16
BATCH = 4


@pytest.fixture(scope="session")
def model() -> TinyLM:
    """The seeded tiny model, in eval mode, on the best device."""
    from tiny_llm import build_model

    return build_model(seed=0)


@pytest.fixture(scope="session")
def make_prompts(model: TinyLM) -> Callable[..., torch.Tensor]:
    """Factory: ``make_prompts(batch, length=PROMPT_LEN, seed=0)`` gives seeded random prompts."""
    import torch

    dev = model.embed.weight.device

    def make(batch: int, length: int = PROMPT_LEN, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=gen)
        return ids.to(dev)

    return make


@pytest.fixture(scope="session")
def prompts(make_prompts: Callable[..., torch.Tensor]) -> torch.Tensor:
    """A batch of ``BATCH`` prompts of ``PROMPT_LEN`` token ids each."""
    return make_prompts(BATCH)
