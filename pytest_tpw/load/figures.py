"""What one load window gave, and what a measurement's windows give together.

Tokens of the steady part come from each request's ``usage.completion_tokens``; a request
that straddles an edge of the steady part counts the share of its streamed text chunks that
arrived inside it (the chunks place the tokens in time, ``usage`` says how many there are).
Latencies are those of the requests sent during the steady part:

- TTFT: from sending the request to its first chunk of text;
- TPOT: from the first chunk to the last, over the tokens after the first;
- E2E: from sending to the end of the response.

Failed requests are counted (``errors``) beside every figure: they add no tokens (their
energy stays in the window) and have no latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tpw.load.driver import LoadRun, RequestRecord

#: The percentiles every latency is given at.
PERCENTILES = (50, 90, 99)
#: The latencies, by their JSON name, with what they are in words.
LATENCIES = {
    "ttft_s": "time to first token",
    "tpot_s": "time per output token",
    "e2e_s": "end-to-end latency",
}
#: Distinct error texts kept per measurement.
MAX_ERROR_KINDS = 5


def steady_share(record: RequestRecord, start: float, end: float) -> float:
    """The share of a request's tokens generated inside ``[start, end]``."""
    if record.chunks:
        inside = sum(1 for t in record.chunks if start <= t <= end)
        return inside / len(record.chunks)
    # no text arrived (zero tokens, or a server that sent only usage): its end places it
    assert record.ended is not None
    return 1.0 if start <= record.ended <= end else 0.0


@dataclass
class WindowFigures:
    """One load window: the steady part's tokens and what the client saw."""

    steady_s: float
    tokens: float
    requests: int
    errors: int
    #: Failed requests by what they failed with, and the first message of each kind.
    error_kinds: dict[str, int]
    error_examples: dict[str, str]
    completed: int
    concurrency: float
    gross_tokens: int
    gross_s: float
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    cut_short: str | None = None

    @classmethod
    def of(cls, run: LoadRun) -> WindowFigures:
        start, end = run.steady_start, run.steady_end
        steady_s = max(end - start, 0.0)
        ok = [r for r in run.records if r.ok]
        tokens = sum((r.tokens or 0) * steady_share(r, start, end) for r in ok)
        kinds: dict[str, int] = {}
        examples: dict[str, str] = {}
        for r in run.records:
            if not r.ok:
                kind = r.kind or r.error or "failed"
                kinds[kind] = kinds.get(kind, 0) + 1
                examples.setdefault(kind, r.error or kind)
        busy = 0.0  # request-seconds in flight inside the steady part
        for r in run.records:
            r_end = r.ended if r.ended is not None else run.ended
            busy += max(0.0, min(r_end, end) - max(r.sent, start))
        completed = sum(1 for r in run.records if r.ended is not None and start <= r.ended <= end)
        figures = cls(
            steady_s=steady_s,
            tokens=tokens,
            requests=len(run.records),
            errors=sum(kinds.values()),
            error_kinds=kinds,
            error_examples=examples,
            completed=completed,
            concurrency=busy / steady_s if steady_s > 0 else 0.0,
            gross_tokens=sum(r.tokens or 0 for r in ok),
            gross_s=run.ended - run.started,
            cut_short=run.cut_short,
        )
        for r in ok:
            if not start <= r.sent <= end:
                continue
            assert r.ended is not None
            figures.e2e_s.append(r.ended - r.sent)
            if r.chunks:
                figures.ttft_s.append(r.chunks[0] - r.sent)
                if (r.tokens or 0) > 1 and len(r.chunks) > 1:
                    figures.tpot_s.append((r.chunks[-1] - r.chunks[0]) / ((r.tokens or 0) - 1))
        return figures


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, linear between order statistics (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_json(values: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """``{"ttft_s": {"p50":..., "p90":..., "p99":..., "n":...}, ...}`` (None without data)."""
    out: dict[str, dict[str, Any]] = {}
    for name in LATENCIES:
        got = values.get(name) or []
        entry: dict[str, Any] = {
            f"p{q}": (round(percentile(got, q), 6) if got else None) for q in PERCENTILES
        }
        entry["n"] = len(got)
        out[name] = entry
    return out


@dataclass
class LoadFigures:
    """A load measurement's recorded windows together, as the results file gives them."""

    shape: dict[str, Any]
    model: str
    windows: list[WindowFigures] = field(default_factory=list)
    #: Joules of each recorded window's whole load (ramp, steady part and drain).
    gross_joules: list[float] = field(default_factory=list)

    def add(self, figures: WindowFigures, gross_joules: float | None) -> None:
        self.windows.append(figures)
        if gross_joules is not None:
            self.gross_joules.append(gross_joules)

    @property
    def requests(self) -> int:
        return sum(w.requests for w in self.windows)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.windows)

    @property
    def steady_s(self) -> float:
        return sum(w.steady_s for w in self.windows)

    def error_kinds(self) -> dict[str, int]:
        """Failed requests by kind, the most frequent first (at most MAX_ERROR_KINDS)."""
        kinds: dict[str, int] = {}
        for w in self.windows:
            for kind, n in w.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
        ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
        return dict(ranked[:MAX_ERROR_KINDS])

    def first_error(self, kind: str) -> str:
        """The first message of a kind of failure."""
        for w in self.windows:
            if kind in w.error_examples:
                return w.error_examples[kind]
        return kind

    def latencies(self) -> dict[str, list[float]]:
        return {name: [v for w in self.windows for v in getattr(w, name)] for name in LATENCIES}

    def latency(self) -> dict[str, dict[str, Any]]:
        return latency_json(self.latencies())

    def gross_tokens_per_joule(self) -> float | None:
        if len(self.gross_joules) != len(self.windows) or not self.windows:
            return None
        joules = sum(self.gross_joules)
        return sum(w.gross_tokens for w in self.windows) / joules if joules > 0 else None

    def load_json(self) -> dict[str, Any]:
        """The ``load`` block of a measurement in the results file."""
        steady = self.steady_s
        completed = sum(w.completed for w in self.windows)
        busy = sum(w.concurrency * w.steady_s for w in self.windows)
        gross = self.gross_tokens_per_joule()
        out: dict[str, Any] = dict(self.shape)
        out.update(
            model=self.model,
            windows=len(self.windows),
            requests=self.requests,
            errors=self.errors,
            steady_s=round(steady, 6),
            achieved_concurrency=round(busy / steady, 4) if steady > 0 else None,
            achieved_rate=round(completed / steady, 4) if steady > 0 else None,
            gross_tokens_per_joule=None if gross is None else round(gross, 6),
        )
        kinds = self.error_kinds()
        if kinds:
            out["error_kinds"] = kinds
            out["first_error"] = self.first_error(next(iter(kinds)))
        cut = [w.cut_short for w in self.windows if w.cut_short]
        if cut:
            out["cut_short"] = cut[0]
        return out

    # -- travel between processes (a pytest-xdist worker to the controller) --------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": dict(self.shape),
            "model": self.model,
            "gross_joules": list(self.gross_joules),
            "windows": [
                {
                    "steady_s": w.steady_s,
                    "tokens": w.tokens,
                    "requests": w.requests,
                    "errors": w.errors,
                    "error_kinds": dict(w.error_kinds),
                    "error_examples": dict(w.error_examples),
                    "completed": w.completed,
                    "concurrency": w.concurrency,
                    "gross_tokens": w.gross_tokens,
                    "gross_s": w.gross_s,
                    "ttft_s": list(w.ttft_s),
                    "tpot_s": list(w.tpot_s),
                    "e2e_s": list(w.e2e_s),
                    "cut_short": w.cut_short,
                }
                for w in self.windows
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadFigures:
        return cls(
            shape=dict(data["shape"]),
            model=str(data["model"]),
            windows=[WindowFigures(**w) for w in data["windows"]],
            gross_joules=[float(j) for j in data["gross_joules"]],
        )


def limit_breaches(
    latency: Mapping[str, Mapping[str, Any]], limits: Mapping[str, float]
) -> Iterable[tuple[str, float | None, float]]:
    """``(limit name, observed or None, limit)`` for every latency limit broken (a limit on
    a latency with no data is broken too: nothing shows it was kept)."""
    for name, limit in limits.items():
        metric, _, pct = name.rpartition("_")
        observed = latency.get(f"{metric}_s", {}).get(pct)
        if observed is None or observed > limit:
            yield name, observed, limit


__all__ = [
    "LATENCIES",
    "PERCENTILES",
    "LoadFigures",
    "WindowFigures",
    "latency_json",
    "limit_breaches",
    "percentile",
    "steady_share",
]
