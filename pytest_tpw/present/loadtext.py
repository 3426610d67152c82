"""A load measurement's figures in words: the load, the latencies, the failures.

From the ``load`` and ``latency`` blocks of the results document, so the terminal summary
and the Markdown report say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pytest_tpw.load.shape import load_text

#: Latency rows: (JSON name, label).
LATENCY_LABELS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))


def seconds(value: Any) -> str:
    """``0.0123`` -> ``12.3 ms``; ``1.5`` -> ``1.5 s``; None -> ``-``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s"


def shape_text(load: Mapping[str, Any]) -> str:
    """``concurrency 8`` or ``rate 2.5/s (seed 1)``, with the output length."""
    head = load_text(load)
    if load.get("concurrency") is None:
        head += f" (seed {load.get('seed')})"
    return f"{head}, {load.get('max_tokens')} output tokens, {load.get('endpoint')}"


def latency_text(latency: Mapping[str, Any]) -> str:
    """``TTFT 12 / 30 / 41 ms · TPOT ...`` (p50 / p90 / p99)."""
    parts = []
    for name, label in LATENCY_LABELS:
        block = latency.get(name)
        if not isinstance(block, Mapping):
            continue
        values = " / ".join(seconds(block.get(p)) for p in ("p50", "p90", "p99"))
        parts.append(f"{label} {values}")
    return " · ".join(parts) + " (p50 / p90 / p99)" if parts else "no latencies"


def load_lines(key: str, load: Mapping[str, Any], latency: Mapping[str, Any] | None) -> list[str]:
    """Two lines for one load measurement: the load as driven, the latencies."""
    achieved = load.get("achieved_concurrency")
    rate = load.get("achieved_rate")
    requests, errors = load.get("requests"), load.get("errors")
    first = (
        f"{key}: {shape_text(load)}; achieved {_num(achieved)} in flight, {_num(rate)} "
        f"requests/s over {_num(load.get('steady_s'))} s of steady windows; "
        f"{errors} of {requests} requests failed"
    )
    gross = load.get("gross_tokens_per_joule")
    if isinstance(gross, (int, float)):
        first += f"; {_num(gross)} tokens/J with ramp and drain"
    return [first, f"  {latency_text(latency or {})}"]


def _num(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"


__all__ = ["latency_text", "load_lines", "seconds", "shape_text"]
