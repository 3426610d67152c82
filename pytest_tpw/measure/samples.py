"""What a measurement is made of, and its wire format: samples, measurements, results.

Plain data that travels: from the meter to the judge and the report, from an xdist worker
to the controller (``to_dict``/``from_dict``), into ``--tpw-json``. Nothing here measures or
decides; a :class:`Result` carries the verdict the judge gave, it never computes one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tpw.sensors.base import Provenance
from pytest_tpw.verdict import Verdict

if TYPE_CHECKING:
    from pytest_tpw.load.figures import LoadFigures

#: Starts a sample's note that its window waited for a device lock ("...<seconds> s for <ids>").
WAITED = "waited for the device lock: "

#: Marks a loop-form sample whose window was shorter than the sensor's minimum.
SHORT_WINDOW = "window shorter than the sensor's minimum"


@dataclass
class Sample:
    """One recorded window: tokens and joules from the same stretch of work."""

    tokens: int
    joules: float
    seconds: float
    calls: int
    domains: dict[str, float]
    state: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_joule(self) -> float:
        return self.tokens / self.joules

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "joules": self.joules,
            "seconds": self.seconds,
            "calls": self.calls,
            "tokens_per_joule": self.tokens_per_joule,
            "domains": dict(self.domains),
            "state": self.state,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        return cls(
            tokens=int(data["tokens"]),
            joules=float(data["joules"]),
            seconds=float(data["seconds"]),
            calls=int(data["calls"]),
            domains=dict(data.get("domains", {})),
            state=dict(data.get("state", {})),
            warnings=list(data.get("warnings", [])),
        )


@dataclass(frozen=True)
class Result:
    """Summary of a finished measurement, as ``tpw.result`` gives it to the test."""

    name: str
    tokens_per_joule: float
    joules_per_token: float
    watts: float
    tokens_per_second: float
    n: int
    ci: tuple[float, float] | None
    verdict: Verdict
    samples: tuple[float, ...]
    provenance: Provenance
    #: A load measurement's ``load`` block (shape, requests, errors, steady seconds...).
    load: dict[str, Any] | None = None
    #: A load measurement's latencies: ``{"ttft_s": {"p50":..., "p90":..., "p99":...}, ...}``.
    latency: dict[str, dict[str, Any]] | None = None


@dataclass
class Measurement:
    """The samples one test takes under one name, and what is known about them."""

    nodeid: str
    name: str | None
    sensor: str
    provenance: Provenance
    samples: list[Sample] = field(default_factory=list)
    warmup: int = 0
    warnings: list[str] = field(default_factory=list)
    complete: bool = False
    #: What a load measurement's windows saw (``tpw.load``); None for any other.
    load: LoadFigures | None = None

    @property
    def key(self) -> str:
        """The measurement's identity: the node id, or ``nodeid::name``."""
        return self.nodeid if self.name is None else f"{self.nodeid}::{self.name}"

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def joules(self) -> float:
        return sum(s.joules for s in self.samples)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.samples)

    @property
    def finished(self) -> bool:
        """Complete with samples: worth judging, recording and reporting."""
        return self.complete and bool(self.samples)

    def values(self) -> list[float]:
        return [s.tokens_per_joule for s in self.samples]

    def lock_waits(self) -> list[float]:
        """Seconds each recorded window waited for a device lock (only those that waited)."""
        return [
            float(w[len(WAITED) :].split(" s ", 1)[0])
            for s in self.samples
            for w in s.warnings
            if w.startswith(WAITED)
        ]

    def level(self) -> float:
        """The level the table reports: the 20 %-trimmed geometric mean of the windows'
        tokens per joule (robust to a throttled window)."""
        from pytest_tpw.stats import summarize

        return summarize(self.values()).estimate

    def summarize(self, confidence: float, verdict: Verdict) -> Result:
        """The summary of the samples, with the verdict the judge gave them."""
        from pytest_tpw.stats import summarize  # numpy/scipy only once something is measured

        summary = summarize(self.values(), confidence)
        ci = None
        if summary.ci_low is not None and summary.ci_high is not None:
            ci = (summary.ci_low, summary.ci_high)
        seconds = self.seconds
        return Result(
            name=self.key,
            tokens_per_joule=summary.estimate,
            joules_per_token=1.0 / summary.estimate,
            watts=self.joules / seconds if seconds > 0 else math.nan,
            tokens_per_second=self.tokens / seconds if seconds > 0 else math.nan,
            n=summary.n,
            ci=ci,
            verdict=verdict,
            samples=tuple(self.values()),
            provenance=self.provenance,
            load=None if self.load is None else self.load.load_json(),
            latency=None if self.load is None else self.load.latency(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able), e.g. to travel from an xdist worker to the controller."""
        return {
            "nodeid": self.nodeid,
            "name": self.name,
            "sensor": self.sensor,
            "provenance": self.provenance,
            "warmup": self.warmup,
            "warnings": list(self.warnings),
            "complete": self.complete,
            "samples": [s.to_dict() for s in self.samples],
            "load": None if self.load is None else self.load.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(
            nodeid=data["nodeid"],
            name=data["name"],
            sensor=data["sensor"],
            provenance=data["provenance"],
            warmup=int(data["warmup"]),
            warnings=list(data["warnings"]),
            complete=bool(data["complete"]),
            samples=[Sample.from_dict(s) for s in data["samples"]],
            load=_load_from(data.get("load")),
        )


def _load_from(data: Any) -> LoadFigures | None:
    if data is None:
        return None
    from pytest_tpw.load.figures import LoadFigures

    return LoadFigures.from_dict(data)
