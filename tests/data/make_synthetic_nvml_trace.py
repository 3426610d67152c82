"""Write the SYNTHETIC NVML traces under tests/data/ (seeded, so reruns give the same bytes).

These stand in for real H100 recordings until those exist; README.md in this folder lists
every number assumed here and the format a recorded trace must follow.

    python tests/data/make_synthetic_nvml_trace.py
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 20240611
COLUMNS = [
    "t_s",
    "energy_mj",
    "power_instant_mw",
    "temperature_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "clocks_event_reasons",
]
GPU_IDLE, SW_POWER_CAP = 0x1, 0x4


def _rows(
    rng: random.Random,
    *,
    seconds: float,
    period_s: float,
    jitter_s: float,
    idle_until_s: float,
    idle_w: float,
    load_w: float,
    noise_w: float,
    clocks: tuple[int, int, int],
    capped: tuple[float, float, float] | None = None,
) -> list[list[float | int]]:
    """Rows at the counter's update instants; each row's power is what the interval ending
    at its instant drew, and its energy is the previous energy plus that power x interval."""
    idle_sm, load_sm, mem = clocks
    t, energy = 0.0, rng.randrange(2_000_000_000, 4_000_000_000)
    rows: list[list[float | int]] = [[0.0, energy, int(idle_w * 1000), 34, idle_sm, mem, GPU_IDLE]]
    while t < seconds:
        dt = max(period_s + rng.gauss(0.0, jitter_s), period_s / 2)
        t = round(t + dt, 6)
        busy = t > idle_until_s
        watts = (load_w if busy else idle_w) + rng.gauss(0.0, noise_w if busy else noise_w / 5)
        sm, reasons = (load_sm, 0) if busy else (idle_sm, GPU_IDLE)
        if capped is not None and capped[0] <= t < capped[1]:
            watts, sm, reasons = capped[2] + rng.gauss(0.0, 2.0), int(load_sm * 0.88), SW_POWER_CAP
        energy += round(watts * dt * 1000)
        warm = max(0.0, t - idle_until_s)
        temp = round(34 + 28 * (1 - math.exp(-warm / 3.0)))
        rows.append([t, energy, round(watts * 1000), temp, sm, mem, reasons])
    return rows


def _h100(rng: random.Random, index: int, uuid: str, bus: str, **kw: Any) -> dict[str, Any]:
    return {
        "nvml_index": index,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": uuid,
        "pci_bus_id": bus,
        "architecture": 9,
        "vbios": "96.00.99.00.01",
        "power_limit_mw": 700_000,
        "enforced_power_limit_mw": 700_000,
        "power_limit_constraints_mw": [200_000, 700_000],
        "default_power_limit_mw": 700_000,
        "applications_clocks_mhz": {"sm": 1980, "mem": 2619},
        "default_applications_clocks_mhz": {"sm": 1980, "mem": 2619},
        "persistence_mode": 1,
        "mig_mode": [0, 0],
        "ecc_mode": [1, 1],
        "pcie": {"gen_current": 5, "width_current": 16, "gen_max": 5, "width_max": 16},
        "energy_counter": True,
        "power_instant_field": True,
        "columns": COLUMNS,
        "rows": _rows(rng, clocks=(345, 1980, 2619), **kw),
    }


def h100_trace() -> dict[str, Any]:
    rng = random.Random(SEED)
    common = {"seconds": 5.0, "period_s": 0.1, "jitter_s": 0.001, "idle_until_s": 0.5}
    gpu0 = _h100(
        rng, 0, "GPU-3f2a9c1e-7b4d-4e8a-9c61-0d2f5b7a8e13", "00000000:19:00.0",
        idle_w=70.0, load_w=650.0, noise_w=15.0, **common,
    )  # fmt: skip
    gpu1 = _h100(
        rng, 1, "GPU-b81d04c7-52e9-4f3b-a6d0-e4c9317f2b58", "00000000:3B:00.0",
        idle_w=72.0, load_w=640.0, noise_w=15.0, capped=(3.5, 4.2, 700.0), **common,
    )  # fmt: skip
    return {
        "format": "pytest-tpw-nvml-trace/1",
        "source": "synthetic",
        "generator": f"tests/data/make_synthetic_nvml_trace.py (seed {SEED})",
        "system": {
            "driver_version": "550.54.15",
            "cuda_driver_version": 12040,
            "nvml_version": "12.550.54.15",
        },
        "call_latency_s": {"default": 4e-05, "nvmlDeviceGetComputeRunningProcesses": 3e-04},
        "devices": [gpu0, gpu1],
    }


def p100_trace() -> dict[str, Any]:
    """A pre-Volta board: no energy counter, instant power updated every ~20 ms."""
    rng = random.Random(SEED + 1)
    rows = _rows(
        rng, seconds=3.0, period_s=0.02, jitter_s=0.0005, idle_until_s=0.3,
        idle_w=30.0, load_w=240.0, noise_w=6.0, clocks=(544, 1328, 715),
    )  # fmt: skip
    device = {
        "nvml_index": 0,
        "name": "Tesla P100-PCIE-16GB",
        "uuid": "GPU-5c0e6a2d-91f4-4b7e-8d33-a1f06c9e4b27",
        "pci_bus_id": "00000000:04:00.0",
        "architecture": 4,
        "vbios": "86.00.52.00.02",
        "power_limit_mw": 250_000,
        "enforced_power_limit_mw": 250_000,
        "power_limit_constraints_mw": [125_000, 250_000],
        "default_power_limit_mw": 250_000,
        "applications_clocks_mhz": {"sm": 1189, "mem": 715},
        "default_applications_clocks_mhz": {"sm": 1189, "mem": 715},
        "auto_boost": [1, 1],
        "persistence_mode": 0,
        "mig_mode": None,
        "ecc_mode": [1, 1],
        "pcie": {"gen_current": 3, "width_current": 16, "gen_max": 3, "width_max": 16},
        "energy_counter": False,
        "power_instant_field": True,
        "columns": COLUMNS,
        "rows": rows,
    }
    return {
        "format": "pytest-tpw-nvml-trace/1",
        "source": "synthetic",
        "generator": f"tests/data/make_synthetic_nvml_trace.py (seed {SEED + 1})",
        "system": {
            "driver_version": "535.183.01",
            "cuda_driver_version": 12020,
            "nvml_version": "12.535.183.01",
        },
        "call_latency_s": {"default": 4e-05},
        "devices": [device],
    }


def _write(name: str, trace: dict[str, Any]) -> None:
    text = json.dumps(trace, indent=1, sort_keys=True)
    # One row per line: collapse every innermost list onto a single line.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    (HERE / name).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    _write("nvml_synthetic_h100.json", h100_trace())
    _write("nvml_synthetic_p100_no_counter.json", p100_trace())
