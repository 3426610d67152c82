"""What the parts of ``benchmarks/gpu_validation.py`` share: paths, the run's plan and budget.

The parts: ``counter`` (NVML on the measured board: polls, read latencies, counter windows,
traces), ``inner`` (the GPU worker and the inner pytest sessions, A/A noise figures),
``summary`` (the report).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_validation.py"
SUITE = ROOT / "benchmarks" / "gpu_validation_suite" / "gpu_suite_decode.py"

Json = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """Every size and duration of a run: the GPU plan, or a small one for the CPU dry run."""

    dry: bool = False
    size: str = "gpu"
    inner_sensor: str = "nvml"
    inner_args: tuple[str, ...] = ()
    extra_work: float = 0.10
    latency_calls: int = 2000
    aux_latency_calls: int = 200
    latency_max_s: float = 2.0
    poll_step_s: float = 0.0002
    idle_s: float = 1.5
    load_s: float = 3.0
    ramp_s: float = 0.5
    windows: int = 20
    window_s: tuple[float, float] = (1.0, 3.0)
    sample_interval_s: float = 0.015
    fake_load_start_s: float = 0.6
    overhead_pairs: int = 1000
    overhead_max_s: float = 5.0
    meter_windows: int = 5000
    time_reps: int = 5
    extra_window_s: float = 2.0
    worker_timeout_s: float = 180.0
    inner_timeout_s: float = 180.0
    #: Seconds of the budget kept back for stopping children and writing the results.
    reserve_s: float = 15.0
    #: Seconds each section is expected to need; a section starts only if that much is left.
    estimates: tuple[tuple[str, float], ...] = (
        ("nvml_facts", 40.0),
        ("counter_vs_power", 65.0),
        ("aa", 130.0),
        ("ab", 100.0),
        ("overhead", 20.0),
        ("noise", 1.0),
    )

    def estimate(self, section: str) -> float:
        return dict(self.estimates).get(section, 10.0)


DRY_PLAN = Plan(
    dry=True,
    size="dry",
    inner_sensor="sim",
    inner_args=("--tpw-min-window", "0.05"),
    latency_calls=300,
    aux_latency_calls=50,
    idle_s=0.4,
    load_s=2.0,
    ramp_s=0.2,
    windows=4,
    window_s=(0.3, 0.6),
    overhead_pairs=300,
    meter_windows=2000,
    time_reps=2,
    extra_window_s=0.3,
    worker_timeout_s=60.0,
    inner_timeout_s=60.0,
    reserve_s=2.0,
    estimates=(
        ("nvml_facts", 4.0),
        ("counter_vs_power", 3.0),
        ("aa", 8.0),
        ("ab", 8.0),
        ("overhead", 2.0),
        ("noise", 0.5),
    ),
)


class Budget:
    """The run's global time budget, counted from the script's start."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s = total_s
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def left(self) -> float:
        return self.total_s - self.elapsed()


class Progress:
    """Progress lines with the elapsed time, to stdout and to ``progress.log``."""

    def __init__(self, budget: Budget, path: Path | None) -> None:
        self.budget = budget
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"[{self.budget.elapsed():6.1f} s] {message}"
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")


def inner_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child process: this tree first on the path, no other plugins."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "examples"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # load the plugin from this tree, nothing else
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.update(extra)
    return env
