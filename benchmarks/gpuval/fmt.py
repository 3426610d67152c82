"""How numbers read in the progress lines and the summary table."""

from __future__ import annotations

from typing import Any


def g(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def scaled(value: Any, factor: float, digits: int = 4) -> str:
    return "-" if value is None else g(float(value) * factor, digits)


def ci(value: Any) -> str:
    if not value:
        return "-"
    return "[" + ", ".join(g(float(v)) for v in value) + "]"


def cuda(value: Any) -> str:
    """NVML's CUDA driver version integer (13000) as 13.0."""
    if value is None:
        return "?"
    return f"{int(value) // 1000}.{int(value) % 1000 // 10}"


def pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:+.2f} %"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]
