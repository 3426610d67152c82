"""GPU pinning for pytest-xdist workers: each worker gets its own GPUs.

With ``--tpw-gpus-per-worker N``, worker ``gwK`` sees only the K-th group of N devices,
through ``CUDA_VISIBLE_DEVICES`` set before any conftest runs (so before CUDA initialises).
The devices to split are those the controller sees: ``CUDA_VISIBLE_DEVICES`` when set
(indices or UUIDs, kept as written), else every GPU NVML counts.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping

from pytest_tpw.errors import TpwError


class PinningError(TpwError):
    """The GPUs cannot be split among the workers; the message says why and what to do."""


def _nvml_count() -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import pynvml
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no binding, no driver: say so in the caller's words
        raise PinningError(
            f"cannot count the GPUs through NVML ({exc}); set "
            "CUDA_VISIBLE_DEVICES to the GPUs to share among the workers"
        ) from None


def visible_devices(env: Mapping[str, str], count: Callable[[], int] = _nvml_count) -> list[str]:
    """The devices this host offers to the workers, as ``CUDA_VISIBLE_DEVICES`` entries."""
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        return [entry.strip() for entry in raw.split(",") if entry.strip()]
    return [str(i) for i in range(count())]


def worker_index(worker_id: str) -> int:
    match = re.fullmatch(r"gw(\d+)", worker_id)
    if match is None:
        raise PinningError(f"unexpected xdist worker id {worker_id!r} (expected gw<N>)")
    return int(match[1])


def check_capacity(devices: list[str], workers: int, per_worker: int) -> None:
    if workers * per_worker > len(devices):
        raise PinningError(
            f"--tpw-gpus-per-worker {per_worker} with {workers} workers needs "
            f"{workers * per_worker} GPUs, but {len(devices)} are visible "
            f"({','.join(devices) or 'none'}); use -n {len(devices) // per_worker or 1} "
            "or fewer GPUs per worker"
        )


def worker_devices(devices: list[str], index: int, workers: int, per_worker: int) -> list[str]:
    """The group of ``per_worker`` devices of worker number ``index`` (0-based)."""
    check_capacity(devices, workers, per_worker)
    return devices[index * per_worker : (index + 1) * per_worker]


def pin_this_worker(
    env: dict[str, str] | os._Environ[str], per_worker: int, count: Callable[[], int] = _nvml_count
) -> str | None:
    """Set ``CUDA_VISIBLE_DEVICES`` of this xdist worker; returns the value (None: no worker)."""
    worker = env.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return None
    workers = int(env.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    mine = worker_devices(visible_devices(env, count), worker_index(worker), workers, per_worker)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return env["CUDA_VISIBLE_DEVICES"]
