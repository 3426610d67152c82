"""A tiny decoder-only transformer for the pytest-tpw examples.

Plain PyTorch, no downloads: token embedding, rotary positions, ``n_layers`` pre-RMSNorm blocks
of causal multi-head self-attention and a SwiGLU MLP, a final RMSNorm and an LM head tied to the
embedding. Weights are random but seeded, so every run generates the same tokens.

Serving follows the usual shape: one *prefill* pass over the prompt fills a preallocated
key/value cache, then each *decode* step feeds only the newest token and attends to the cache.
:meth:`TinyLM.generate` returns the new tokens of a batch; :meth:`TinyLM.stream` yields them one
step at a time; :meth:`TinyLM.generate_uncached` recomputes the whole sequence at every step and
exists to check the cache.

The model is small enough that generating 32 tokens for a batch of 4 takes tens of milliseconds
on one CPU core. ``TPW_EXAMPLE_SCALE`` (an integer, default 1) multiplies the width and the depth
for a GPU, where the default model would measure launch overhead rather than arithmetic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KVCache", "TinyConfig", "TinyLM", "build_model", "device", "example_scale"]


def device() -> torch.device:
    """The device the examples run on: the current CUDA device when there is one, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


_best_device = device  # build_model's ``device`` parameter shadows the helper


def example_scale() -> int:
    """The ``TPW_EXAMPLE_SCALE`` environment variable as a positive integer (default 1)."""
    raw = os.environ.get("TPW_EXAMPLE_SCALE", "1")
    try:
        scale = int(raw)
    except ValueError:
        raise ValueError(f"TPW_EXAMPLE_SCALE must be a positive integer, got {raw!r}") from None
    if scale < 1:
        raise ValueError(f"TPW_EXAMPLE_SCALE must be a positive integer, got {raw!r}")
    return scale


@dataclass(frozen=True)
class TinyConfig:
    """Shape of a :class:`TinyLM`."""

    vocab_size: int = 512
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    max_seq_len: int = 256
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary embeddings need an even head dimension")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def scaled(cls, scale: int | None = None) -> TinyConfig:
        """The default config with width and depth multiplied by ``scale``.

        ``scale=None`` reads ``TPW_EXAMPLE_SCALE``.
        """
        s = example_scale() if scale is None else scale
        base = cls()
        return cls(
            d_model=base.d_model * s,
            n_heads=base.n_heads * s,
            n_layers=base.n_layers * s,
            d_ff=base.d_ff * s,
        )


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Rotary(nn.Module):
    """Rotary position embedding tables for positions ``0 .. max_seq_len - 1``."""

    cos: Tensor
    sin: Tensor

    def __init__(self, head_dim: int, max_seq_len: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, start: int, positions: Tensor | None = None) -> Tensor:
        """Rotate ``x`` of shape (batch, heads, seq, head_dim) placed at positions ``start..``
        (or at ``positions``, shape (batch, seq), one row per sequence of a padded batch)."""
        t = x.shape[-2]
        if positions is None:
            cos = self.cos[start : start + t].to(x.dtype)
            sin = self.sin[start : start + t].to(x.dtype)
        else:
            cos = self.cos[positions][:, None].to(x.dtype)
            sin = self.sin[positions][:, None].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2)


class KVCache:
    """Preallocated keys and values for every layer of one batch of sequences.

    ``length`` is the number of positions already filled; all sequences of the batch share it
    (prompts of one batch have equal length).
    """

    def __init__(
        self,
        config: TinyConfig,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (config.n_layers, batch, config.n_heads, max_len, config.head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k``/``v`` for the next positions of ``layer``; return all keys/values so far.

        The caller advances :attr:`length` once per forward pass, after the last layer.
        """
        end = self.length + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len={self.max_len}")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary positions and an optional KV cache."""

    def __init__(self, config: TinyConfig, rotary: Rotary) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.rotary = rotary

    def forward(
        self,
        x: Tensor,
        layer: int,
        start: int,
        cache: KVCache | None,
        positions: Tensor | None = None,
        keys: Tensor | None = None,
    ) -> Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        )
        q = self.rotary(q, start, positions)
        k = self.rotary(k, start, positions)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if keys is not None:
            # a left-padded batch: causal, real keys only, and every position sees itself
            # (a padding position would otherwise attend to nothing)
            s = k.shape[-2]
            causal = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(diagonal=s - t)
            rows = torch.arange(t, device=x.device)
            itself = torch.zeros(t, s, dtype=torch.bool, device=x.device)
            itself[rows, s - t + rows] = True
            allowed = (causal & keys[:, None, None, :s]) | itself
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        elif t == 1:
            # One new query attends to every earlier position: no mask needed.
            y = F.scaled_dot_product_attention(q, k, v)
        elif k.shape[-2] == t:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # Several new queries after a cached prefix: causal mask offset by the prefix.
            s = k.shape[-2]
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(diagonal=s - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out: Tensor = self.proj(y.transpose(1, 2).reshape(b, t, d))
        return out


class MLP(nn.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(config.d_model, 2 * config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        out: Tensor = self.down(F.silu(gate) * up)
        return out


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, config: TinyConfig, rotary: Rotary) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config, rotary)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        layer: int,
        start: int,
        cache: KVCache | None,
        positions: Tensor | None = None,
        keys: Tensor | None = None,
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), layer, start, cache, positions, keys)
        out: Tensor = x + self.mlp(self.mlp_norm(x))
        return out


class TinyLM(nn.Module):
    """Decoder-only language model with a tied LM head and greedy, KV-cached generation."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        rotary = Rotary(config.head_dim, config.max_seq_len, config.rope_base)
        self.blocks = nn.ModuleList(Block(config, rotary) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Seeded random init: embedding N(0, 0.02), linear weights N(0, 1/fan_in).

        Linear layers get unit-gain weights so that the blocks, not the tied embedding, pick the
        next token: with a GPT-2 style small init a random model just echoes its last input.
        """
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)

    def forward(
        self,
        input_ids: Tensor,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
        keys: Tensor | None = None,
    ) -> Tensor:
        """Logits of shape (batch, seq, vocab) for ``input_ids`` of shape (batch, seq).

        With a ``cache``, ``input_ids`` continue the sequences already in it and the cache is
        extended; without one, ``input_ids`` are whole sequences starting at position 0. A
        left-padded batch also gives each token's ``positions`` (batch, seq) and which of
        the cache's positions hold real tokens, ``keys`` (batch, cached + seq).
        """
        start = 0 if cache is None else cache.length
        if start + input_ids.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {start + input_ids.shape[1]} tokens exceeds "
                f"max_seq_len={self.config.max_seq_len}"
            )
        x = self.embed(input_ids)
        for i, block in enumerate(self.blocks):
            x = block(x, i, start, cache, positions, keys)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return F.linear(self.norm(x), self.embed.weight)  # tied LM head

    def _check(self, input_ids: Tensor, max_new_tokens: int) -> None:
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be (batch, seq) with seq > 0, got {input_ids.shape}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        total = input_ids.shape[1] + max_new_tokens
        if total > self.config.max_seq_len:
            raise ValueError(f"prompt + new tokens = {total} > max_seq_len")

    @torch.inference_mode()
    def stream(self, input_ids: Tensor, max_new_tokens: int) -> Iterator[Tensor]:
        """Greedy decoding, one step at a time.

        Yields ``max_new_tokens`` tensors of shape (batch,): the next token of every sequence.
        The first comes from the prefill pass over the prompt, the rest from cached decode steps.
        """
        self._check(input_ids, max_new_tokens)
        input_ids = input_ids.to(self.embed.weight.device)
        batch, prompt_len = input_ids.shape
        cache = KVCache(
            self.config,
            batch,
            prompt_len + max_new_tokens,
            dtype=self.embed.weight.dtype,
            device=input_ids.device,
        )
        logits = self(input_ids, cache)  # prefill
        for step in range(max_new_tokens):
            token = logits[:, -1].argmax(dim=-1)
            yield token
            if step + 1 < max_new_tokens:
                logits = self(token[:, None], cache)  # decode

    @torch.inference_mode()
    def stream_batch(self, prompts: list[list[int]], max_new_tokens: int) -> Iterator[Tensor]:
        """Greedy decoding of prompts of different lengths in one batch, as a serving engine
        batches concurrent requests: left-padded, with the padding masked out and positions
        counted from each prompt's first token. Yields the next token of every prompt at
        each step, like :meth:`stream`; one prompt takes :meth:`stream` itself.
        """
        dev = self.embed.weight.device
        if len(prompts) == 1:
            yield from self.stream(torch.tensor(prompts, dtype=torch.long), max_new_tokens)
            return
        width = max(len(p) for p in prompts)
        if min(len(p) for p in prompts) == 0:
            raise ValueError("every prompt needs at least one token")
        ids = torch.zeros(len(prompts), width, dtype=torch.long, device=dev)
        keys = torch.zeros(len(prompts), width, dtype=torch.bool, device=dev)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            keys[row, width - len(prompt) :] = True
        self._check(ids, max_new_tokens)
        cache = KVCache(
            self.config,
            len(prompts),
            width + max_new_tokens,
            dtype=self.embed.weight.dtype,
            device=dev,
        )
        positions = (keys.long().cumsum(dim=1) - 1).clamp(min=0)
        logits = self(ids, cache, positions, keys)  # prefill
        real = torch.ones(len(prompts), 1, dtype=torch.bool, device=dev)
        for step in range(max_new_tokens):
            token = logits[:, -1].argmax(dim=-1)
            yield token
            if step + 1 < max_new_tokens:
                positions = positions[:, -1:] + 1
                keys = torch.cat([keys, real], dim=1)
                logits = self(token[:, None], cache, positions, keys)  # decode

    @torch.inference_mode()
    def generate(self, input_ids: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy KV-cached generation; returns only the new tokens, shape (batch, max_new)."""
        return torch.stack(list(self.stream(input_ids, max_new_tokens)), dim=1)

    @torch.inference_mode()
    def generate_uncached(self, input_ids: Tensor, max_new_tokens: int) -> Tensor:
        """Reference greedy generation that reruns the whole sequence at every step."""
        self._check(input_ids, max_new_tokens)
        seq = input_ids.to(self.embed.weight.device)
        for _ in range(max_new_tokens):
            token = self(seq)[:, -1].argmax(dim=-1)
            seq = torch.cat([seq, token[:, None]], dim=1)
        return seq[:, input_ids.shape[1] :]


def build_model(
    config: TinyConfig | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> TinyLM:
    """A seeded :class:`TinyLM` in eval mode with gradients off, on ``device`` (default: best)."""
    cfg = TinyConfig.scaled() if config is None else config
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = TinyLM(cfg)  # built on CPU: the same weights on every device
    target = _best_device() if device is None else torch.device(device)
    return model.to(target).eval().requires_grad_(False)
