"""What the sections share: one run's Ctx (plan, folders, budget, results, worker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpuval.common import Json
from gpuval.plan import Budget, Plan, Progress
from gpuval.worker import Worker


@dataclass
class Ctx:
    """What the sections share: plan, folders, budget, results, the worker."""

    plan: Plan
    out: Path
    work: Path
    budget: Budget
    say: Progress
    results: Json = field(default_factory=dict)
    card: Json = field(default_factory=dict)
    _worker: Worker | None = None

    def worker(self) -> Worker:
        if self._worker is None:
            self.say("starting the GPU worker (torch import, CUDA init, warm-up)")
            timeout = min(self.plan.worker_timeout_s, max(self.budget.left() - 10.0, 5.0))
            self._worker = Worker(self.plan, self.work, timeout)
            self.say(f"worker ready: {self._worker.info}")
        return self._worker

    def release_worker(self) -> None:
        """End the worker: the next sessions must find no other process on the GPU."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def release_worker_quietly(self) -> None:
        try:
            self.release_worker()
        except Exception:
            self._worker = None

    def uuid(self) -> str | None:
        value = self.card.get("uuid") or (self._worker.uuid if self._worker else None)
        return None if value is None else str(value)
