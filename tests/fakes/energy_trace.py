"""What the fake vendor energy libraries (``fake_amdsmi``, ``fake_pyhlml``, ``fake_pyzes``)
share: a board's power over fake time and the energy counter it drives, and an import that
fails the way a vendor package does when its shared library is missing.

A :class:`Board` draws ``watts`` (a constant, or steps ``[(from_s, watts), ...]``) on a
clock that moves only when the test says so. Its counter holds the energy used up to the
latest update instant (a multiple of ``update_period_s``), in whole counts, from
``start_counts``, wrapping at ``modulus``. ``reset_at_s`` restarts it from 0 (a driver
reload); ``stuck`` freezes it (a counter that never advances).
"""

from __future__ import annotations

import bisect
import importlib.abc
import importlib.machinery
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

U64 = 1 << 64


@dataclass
class Board:
    """One device's power and energy counter, read at fake times."""

    watts: float | Sequence[tuple[float, float]] = 300.0
    update_period_s: float = 0.001
    start_counts: int = 0
    reset_at_s: float | None = None
    stuck: bool = False
    modulus: int = U64

    def _steps(self) -> list[tuple[float, float]]:
        if isinstance(self.watts, int | float):
            return [(0.0, float(self.watts))]
        return sorted((float(t), float(w)) for t, w in self.watts)

    def power_at(self, t: float) -> float:
        steps = self._steps()
        i = max(bisect.bisect_right([s for s, _ in steps], t) - 1, 0)
        return steps[i][1]

    def energy_j(self, t: float) -> float:
        """Joules used from time 0 to ``t`` (the first step's power holds from 0)."""
        steps = self._steps()
        starts = [0.0] + [start for start, _ in steps[1:]]
        total = 0.0
        for i, (_, watts) in enumerate(steps):
            end = starts[i + 1] if i + 1 < len(starts) else math.inf
            if t <= starts[i]:
                break
            total += watts * (min(t, end) - starts[i])
        return total

    def updated_at(self, t: float) -> float:
        """The latest counter update at or before ``t``."""
        if self.update_period_s <= 0:
            return t
        return math.floor(t / self.update_period_s + 1e-9) * self.update_period_s

    def counts(self, t: float, joules_per_count: float) -> int:
        """The counter at ``t``: what a vendor library returns."""
        if self.stuck:
            return self.start_counts % self.modulus
        at = self.updated_at(t)
        if self.reset_at_s is not None and at >= self.reset_at_s:
            since = self.energy_j(at) - self.energy_j(self.updated_at(self.reset_at_s))
            return math.floor(since / joules_per_count + 1e-9) % self.modulus
        used = math.floor(self.energy_j(at) / joules_per_count + 1e-9)
        return (self.start_counts + used) % self.modulus


class RaisingFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta-path finder whose module ``name`` fails to import with ``error()``, as a
    vendor package does when its shared library is missing or mismatched. Put it first on
    ``sys.meta_path`` and remove ``name`` from ``sys.modules``."""

    def __init__(self, name: str, error: Callable[[], BaseException], printed: str = "") -> None:
        self.name, self.error, self.printed = name, error, printed

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        if self.printed:
            print(self.printed)
        raise self.error()
