"""The ``cpu-estimate`` sensor: this process's CPU time x a per-core power figure.

Always available and always labelled *estimated*: with no energy counter there is no
physical signal, only a model, which is why comparisons made on it say so.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

from .base import Provenance, Sensor, WindowEnergy


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


class CpuEstimateSensor(Sensor):
    name = "cpu-estimate"
    provenance: Provenance = "estimated"

    def open(self) -> None:
        self.method = (
            f"process CPU time x {self.options.cpu_watts_per_core:g} W per busy core "
            "(no energy counter)"
        )

    def domains(self) -> Sequence[str]:
        return ("cpu:process",)

    def min_window_s(self) -> float:
        # CPU time is accounted at scheduler-tick granularity on some kernels (up to 10 ms);
        # 100 ms keeps that below 10 % of one window and far below after trimming.
        return 0.1

    def begin(self) -> object:
        return time.process_time()

    def end(self, token: object) -> WindowEnergy:
        assert isinstance(token, float)
        cpu_seconds = time.process_time() - token
        joules = cpu_seconds * self.options.cpu_watts_per_core
        return WindowEnergy({"cpu:process": joules}, state={"cpu_seconds": cpu_seconds})

    def describe(self) -> dict[str, object]:
        return {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "watts_per_core": self.options.cpu_watts_per_core,
        }

    def hardware(self) -> tuple[str, ...]:
        # keyed apart from rapl on the same CPU: estimated and measured joules never share
        # a baseline
        return (f"{cpu_model()} cpu-estimate",)
