"""The inner suite of ``benchmarks/gpu_validation.py``: one measured decode test and its workload.

Not collected by the repository's own ``pytest`` (the name matches neither ``test_*.py`` nor
``*_example.py``, and ``benchmarks/`` is outside ``testpaths``). The validation script copies
this file into a scratch folder as ``test_decode_gpu.py`` and runs pytest on it with
``-p pytest_tpw.hooks.plugin``; its worker process imports it by path for the same workload.

Workload: KV-cached greedy decoding of ``examples/tiny_llm.TinyLM`` with a seeded random batch
of prompts. Environment variables:

``TPW_VALIDATION_SIZE``
    ``gpu`` (default): bf16 on CUDA, d_model 4096, 4 layers, d_ff 16384, vocab 32000 (about
    1.2 B matrix weights, 2.4 GB), batch 512, 16-token prompts, 32 new tokens. A decode step
    then reads 2.4 GB of weights and does about 0.6 TFLOP, roughly 1-2 ms on an H100, more
    than the ~170 kernel launches of a step cost on the CPU: the GPU, not Python, is the
    bottleneck. ``dry``: the examples' default tiny config in float32 on the CPU, batch 4.
``TPW_EXTRA_WORK``
    A fraction ``f >= 0`` (default 0). After the final norm of every forward pass the hidden
    states go through a chain of ``m`` distinct d_model x d_model matrices (result discarded),
    ``m = round(f * P / d_model**2)`` with ``P`` the matrix weights a token passes through (all
    linear layers plus the tied LM head). Every processed token then costs ``m * d**2 / P``
    (about ``f``) more matrix FLOPs and matrix weight bytes, in kernels of the model's own kind.
    Attention over the cache, element-wise kernels and launch overhead do not grow, so the
    tokens-per-joule drop is smaller than ``f / (1 + f)``; the validation script measures the
    expected ratio separately (see its section 4).
``TPW_VALIDATION_FACTS``
    A path: the session fixture writes the workload's figures there as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_llm import TinyConfig, TinyLM
from torch import Tensor, nn


@dataclass(frozen=True)
class Shape:
    """One size of the workload."""

    config: TinyConfig
    batch: int
    prompt_len: int
    new_tokens: int
    dtype: str
    device: str


SHAPES = {
    "gpu": Shape(
        TinyConfig(
            vocab_size=32000, d_model=4096, n_heads=32, n_layers=4, d_ff=16384, max_seq_len=64
        ),
        batch=512,
        prompt_len=16,
        new_tokens=32,
        dtype="bfloat16",
        device="cuda",
    ),
    "dry": Shape(
        TinyConfig(), batch=4, prompt_len=16, new_tokens=32, dtype="float32", device="cpu"
    ),
}


def size_from_env() -> str:
    size = os.environ.get("TPW_VALIDATION_SIZE", "gpu")
    if size not in SHAPES:
        raise ValueError(f"TPW_VALIDATION_SIZE must be one of {sorted(SHAPES)}, got {size!r}")
    return size


def extra_from_env() -> float:
    raw = os.environ.get("TPW_EXTRA_WORK", "0")
    extra = float(raw)
    if not extra >= 0:
        raise ValueError(f"TPW_EXTRA_WORK must be a fraction >= 0, got {raw!r}")
    return extra


def matrix_params(model: TinyLM) -> int:
    """Matrix weights one token passes through: every linear layer and the tied LM head."""
    linear = sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, nn.Linear))
    return linear + int(model.embed.weight.numel())


def extra_matrices(params: int, d_model: int, fraction: float) -> int:
    """How many d x d matrices add ``fraction`` of ``params`` (at least one when asked for)."""
    if fraction <= 0:
        return 0
    return max(1, round(fraction * params / d_model**2))


class Decode:
    """The model, its prompts and the optional extra matrix work, ready to ``generate``."""

    def __init__(self, shape: Shape, extra: float, seed: int = 0) -> None:
        if shape.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("the 'gpu' workload needs CUDA; use TPW_VALIDATION_SIZE=dry")
        if shape.device == "cpu":
            torch.set_num_threads(1)  # steadier timings on a shared CPU (the dry run)
        self.shape = shape
        self.dtype = getattr(torch, shape.dtype)
        self.device = torch.device(shape.device)
        self.model = self._build(seed)
        cfg = shape.config
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, cfg.vocab_size, (shape.batch, shape.prompt_len), generator=gen)
        self.prompts = ids.to(self.device)
        self.params = matrix_params(self.model)
        self.extra_count = extra_matrices(self.params, cfg.d_model, extra)
        self.extra_fraction = self.extra_count * cfg.d_model**2 / self.params
        self.requested_extra = extra
        self.extra_weights = self._extra_weights(seed + 1)
        #: The extra work runs only while this is true (the worker times both ways).
        self.extra_enabled = self.extra_count > 0
        self._extra_inputs: tuple[Tensor, Tensor] | None = None
        self.model.norm.register_forward_hook(self._hook)

    def _build(self, seed: int) -> TinyLM:
        with torch.random.fork_rng(devices=[]), torch.device(self.device):
            torch.manual_seed(seed)
            model = TinyLM(self.shape.config)
        return model.to(self.dtype).eval().requires_grad_(False)

    def _extra_weights(self, seed: int) -> list[Tensor]:
        d = self.shape.config.d_model
        gen = torch.Generator(device=self.device).manual_seed(seed)
        scale = d**-0.5
        return [
            torch.randn(d, d, generator=gen, device=self.device, dtype=self.dtype) * scale
            for _ in range(self.extra_count)
        ]

    def _chain(self, x: Tensor) -> Tensor:
        for weight in self.extra_weights:
            x = x @ weight
        return x

    def _hook(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self.extra_enabled:
            self._chain(output)  # launched and executed; the result is discarded on purpose

    @torch.inference_mode()
    def generate(self) -> Tensor:
        out: Tensor = self.model.generate(self.prompts, max_new_tokens=self.shape.new_tokens)
        return out

    @torch.inference_mode()
    def extra_only(self) -> None:
        """The extra matrix work of one ``generate`` call alone: one prefill-shaped chain and
        ``new_tokens - 1`` decode-step-shaped chains."""
        if self._extra_inputs is None:
            s, d = self.shape, self.shape.config.d_model
            gen = torch.Generator(device=self.device).manual_seed(7)
            # random, not constant, inputs: constant data can run faster and draw less power
            self._extra_inputs = (
                torch.randn(
                    s.batch, s.prompt_len, d, generator=gen, device=self.device, dtype=self.dtype
                ),
                torch.randn(s.batch, 1, d, generator=gen, device=self.device, dtype=self.dtype),
            )
        prefill, step = self._extra_inputs
        self._chain(prefill)
        for _ in range(self.shape.new_tokens - 1):
            self._chain(step)

    @property
    def tokens_per_call(self) -> int:
        return self.shape.batch * self.shape.new_tokens

    def facts(self) -> dict[str, Any]:
        return {
            "shape": {**asdict(self.shape), "config": asdict(self.shape.config)},
            "matrix_params": self.params,
            "extra_requested": self.requested_extra,
            "extra_matrices": self.extra_count,
            "extra_flop_fraction": self.extra_fraction,
            "tokens_per_call": self.tokens_per_call,
            "torch": torch.__version__,
            "device_name": (
                torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
            ),
        }


@pytest.fixture(scope="session")
def decode() -> Decode:
    workload = Decode(SHAPES[size_from_env()], extra_from_env())
    facts = os.environ.get("TPW_VALIDATION_FACTS")
    if facts:
        Path(facts).write_text(json.dumps(workload.facts(), indent=1), encoding="utf-8")
    return workload


def test_decode(tpw: Any, decode: Decode) -> None:
    out = tpw(decode.generate, tokens=lambda out: out.numel())
    assert out.shape == (decode.shape.batch, decode.shape.new_tokens)
    assert ((out >= 0) & (out < decode.shape.config.vocab_size)).all()
