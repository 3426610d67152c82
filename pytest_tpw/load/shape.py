"""The shape of a load: what makes two load measurements comparable.

A load is N concurrent streams (closed loop: each sends its next request when the last one
ends) or a request rate (open loop: Poisson arrivals from a seed), over a prompt set, asking
for a number of output tokens from one endpoint. Efficiency under load depends on all of
these, so a baseline records the shape and a measurement at another shape is not judged
against it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_tpw.errors import TpwError

Endpoint = Literal["chat", "completions"]

#: The built-in prompt set: short, varied, deterministic (the same every run and machine).
PROMPTS: tuple[str, ...] = (
    "Explain in two sentences why data centres are limited by power.",
    "Write a haiku about a GPU that runs all night.",
    "List three ways to make a language model cheaper to serve.",
    "What is a key-value cache, in one paragraph?",
    "Summarise the idea of batching requests for a language model.",
    "Give a short definition of tokens per joule.",
    "Describe a quiet benchmark machine.",
    "Why does the first token take longer than the others?",
)


class LoadError(TpwError, ValueError):
    """A load cannot be driven as asked (its arguments, or a server that never got steady)."""


def prompt_digest(prompts: Sequence[str]) -> str:
    """A short fingerprint of a prompt set (order matters: requests take them in turn)."""
    raw = json.dumps(list(prompts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class LoadShape:
    """What is asked of the server: the load, the prompts, the output length."""

    concurrency: int | None
    rate: float | None
    prompts: tuple[str, ...]
    max_tokens: int
    endpoint: Endpoint
    seed: int = 0

    @classmethod
    def make(
        cls,
        *,
        concurrency: int | None,
        rate: float | None,
        prompts: Sequence[str] | None,
        max_tokens: int,
        endpoint: str,
        seed: int,
    ) -> LoadShape:
        """Validate a load's arguments; :class:`LoadError` names the argument."""
        if (concurrency is None) == (rate is None):
            raise LoadError(
                "tpw.load needs exactly one of concurrency= (N concurrent streams, closed "
                "loop) or rate= (requests per second, Poisson arrivals)"
            )
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise LoadError(f"tpw.load: concurrency must be an integer >= 1, got {concurrency!r}")
        if rate is not None and (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise LoadError(f"tpw.load: rate must be a positive number of requests/s, got {rate!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise LoadError(f"tpw.load: max_tokens must be an integer >= 1, got {max_tokens!r}")
        if endpoint not in ("chat", "completions"):
            raise LoadError(
                f"tpw.load: endpoint must be 'chat' (/v1/chat/completions) or 'completions' "
                f"(/v1/completions), got {endpoint!r}"
            )
        if isinstance(prompts, str):
            raise LoadError("tpw.load: prompts must be a list of strings, not one string")
        chosen = PROMPTS if prompts is None else tuple(prompts)
        if not chosen or not all(isinstance(p, str) and p for p in chosen):
            raise LoadError("tpw.load: prompts must be a non-empty list of non-empty strings")
        return cls(
            concurrency=concurrency,
            rate=None if rate is None else float(rate),
            prompts=chosen,
            max_tokens=max_tokens,
            endpoint=endpoint,  # type: ignore[arg-type]
            seed=int(seed),
        )

    def to_json(self) -> dict[str, Any]:
        """The shape as a baseline and the results file store it (prompts by digest)."""
        out: dict[str, Any] = (
            {"concurrency": self.concurrency}
            if self.concurrency is not None
            else {"rate": self.rate, "seed": self.seed}
        )
        out.update(
            prompts=prompt_digest(self.prompts),
            n_prompts=len(self.prompts),
            max_tokens=self.max_tokens,
            endpoint=self.endpoint,
        )
        return out


#: The fields that must agree for two loads to be compared (a rate's seed need not: it
#: draws other arrival times from the same process).
COMPARED = ("concurrency", "rate", "prompts", "n_prompts", "max_tokens", "endpoint")


def load_text(shape: Mapping[str, Any]) -> str:
    """A stored shape's load in words: ``concurrency 8`` or ``rate 2.5/s``."""
    if shape.get("concurrency") is not None:
        return f"concurrency {shape['concurrency']}"
    return f"rate {shape.get('rate')}/s"


def shape_changes(stored: Mapping[str, Any] | None, now: Mapping[str, Any] | None) -> list[str]:
    """How the load shape ``now`` differs from the ``stored`` one, in words (empty: the
    same). A measurement without a load and one with a load differ as a whole."""
    if stored is None and now is None:
        return []
    if stored is None:
        return ["the baseline was not measured under a load"]
    if now is None:
        return ["the baseline was measured under a load, this run is not"]
    changes = []
    for name in COMPARED:
        a, b = stored.get(name), now.get(name)
        if a != b:
            changes.append(f"{name} {_shown(a)} -> {_shown(b)}")
    return changes


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


__all__ = [
    "COMPARED",
    "PROMPTS",
    "Endpoint",
    "LoadError",
    "LoadShape",
    "load_text",
    "prompt_digest",
    "shape_changes",
]
