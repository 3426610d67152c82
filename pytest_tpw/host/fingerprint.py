"""This machine's hardware key and software stack.

The hardware key names the measured accelerator model(s) and count (``nvidia-h100-80gb-hbm3-x1``):
baselines are kept per key. A CPU sensor's model name carries the logical CPUs this process
may use (:func:`usable_cpus`, ``amd-epyc-16c-cpu-estimate-x1``), so that a 4-CPU and a 64-CPU
runner of one CPU model keep baselines apart. The software stack (driver, CUDA, torch,
kernel, OS, and the measured devices' power limit and clocks policy) is recorded beside
every session, never keyed, so that a stack change that costs efficiency shows up as a
difference rather than as a fresh baseline.
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: Python distributions whose versions move tokens per joule, recorded when installed.
STACK_PACKAGES = (
    "torch",
    "transformers",
    "vllm",
    "numpy",
    "nvidia-ml-py",
    "pytest",
    "pytest-tpw",
    "triton",
    "flash-attn",
    "jax",
)


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def hardware_key(names: Iterable[str]) -> str:
    """Key of the measured hardware: each distinct model with its count, joined by ``+``."""
    counts = Counter(names)
    if not counts:
        return "unknown-x0"
    return "+".join(f"{slug(name)}-x{n}" for name, n in sorted(counts.items()))


#: Stack entries of the measured devices' settings, from the sensor's ``describe()["devices"]``
#: (:func:`device_settings`). ``pytest_tpw.store.baseline.DEVICE_SETTINGS`` names the same
#: entries (the store may not import this room; a unit test checks that they agree).
DEVICE_SETTINGS = ("power_limit_w", "clocks_policy")

#: Where cgroup v2 is mounted (tests point it at a fake tree).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_cpus() -> int | None:
    """How many logical CPUs this process may be scheduled on (a container's cpuset, taskset)."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:  # pragma: no cover - not Linux
        return None
    try:
        return len(getter(0))
    except OSError:  # pragma: no cover
        return None


def _cgroup_quota_cpus(proc_self: Path, root: Path) -> int | None:
    """The CPU quota of this process's cgroup v2 (and its ancestors) in CPUs, rounded up:
    ``docker --cpus 4`` and a Kubernetes CPU limit set it. None when no quota is set or
    the files cannot be read (cgroup v1 is not read)."""
    try:
        lines = (proc_self / "cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    if not unified:
        return None
    found: int | None = None
    root = root.resolve()
    here = (root / unified[0].strip().lstrip("/")).resolve()
    for folder in (here, *here.parents):
        try:
            quota, _, period = (folder / "cpu.max").read_text(encoding="utf-8").partition(" ")
            cpus = math.ceil(int(quota) / int(period))
        except (OSError, ValueError, ZeroDivisionError):  # "max": no quota here
            cpus = None
        if cpus is not None and cpus > 0:
            found = cpus if found is None else min(found, cpus)
        if folder == root or root not in folder.parents:
            break
    return found


def usable_cpus(proc_self: Path = Path("/proc/self"), cgroup_root: Path | None = None) -> int:
    """The logical CPUs this process can use: the machine's (``os.cpu_count()``), narrowed
    to its CPU affinity (a cpuset) and its cgroup's CPU quota rounded up, whichever is
    smallest. What sizes a runner: a 4-vCPU and a 64-vCPU VM, or containers given 4 and 16
    CPUs of one host, measure the same work differently."""
    counts = [
        os.cpu_count(),
        _affinity_cpus(),
        _cgroup_quota_cpus(proc_self, cgroup_root or CGROUP_ROOT),
    ]
    known = [n for n in counts if n is not None and n > 0]
    return min(known, default=1)


def cpu_hardware(model: str, cpus: int | None = None) -> str:
    """A CPU sensor's hardware name: the model and the usable logical CPUs
    (``"AMD EPYC 16c"``; ``cpus`` defaults to :func:`usable_cpus`)."""
    return f"{model} {usable_cpus() if cpus is None else cpus}c"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _os_release() -> str | None:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _cuda_runtime() -> str | None:
    """CUDA runtime PyTorch was built with, only if torch is already imported (never import it)."""
    torch = sys.modules.get("torch")
    version = getattr(getattr(torch, "version", None), "cuda", None)
    return str(version) if version else None


def git_commit(cwd: Path) -> str | None:
    """The checked-out commit of the repository at ``cwd``, if git knows one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _compact(values: list[str]) -> str:
    """One text for the devices' values: the value when they agree, else each in order."""
    return values[0] if len(set(values)) == 1 else ", ".join(values)


def device_settings(sensor_info: Mapping[str, Any]) -> dict[str, str]:
    """The measured devices' power limit and clocks policy, from ``describe()["devices"]``:
    ``{"power_limit_w": "700", "clocks_policy": "default"}``, one value when every device
    agrees, else each device's in order (``"700, 500"``); a device that does not say is
    ``"?"``. An entry no device gives is left out."""
    devices = sensor_info.get("devices")
    if not isinstance(devices, list):
        return {}
    found = [d for d in devices if isinstance(d, Mapping)]
    out: dict[str, str] = {}
    limits = [d.get("power_limit_w") for d in found]
    if any(isinstance(w, (int, float)) for w in limits):
        out["power_limit_w"] = _compact(
            [f"{w:g}" if isinstance(w, (int, float)) else "?" for w in limits]
        )
    policies = [d.get("clocks_policy") for d in found]
    if any(isinstance(p, str) and p for p in policies):
        out["clocks_policy"] = _compact([p if isinstance(p, str) and p else "?" for p in policies])
    return out


def software_stack(sensor_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The layers that move tokens per joule, from Python packages down to the kernel and
    the measured devices' settings (:func:`device_settings`)."""
    info = dict(sensor_info or {})
    stack: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "os": _os_release() or platform.platform(),
        "machine": platform.machine(),
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cuda_runtime": _cuda_runtime(),
        "driver": info.get("driver_version"),
        "cuda_driver": info.get("cuda_driver_version"),
    }
    for dist in STACK_PACKAGES:
        stack[dist] = _version(dist)
    stack.update(device_settings(info))
    return stack
