"""This machine's hardware key and software stack.

The hardware key names the measured accelerator model(s) and count (``nvidia-h100-80gb-hbm3-x1``):
baselines are kept per key. The software stack (driver, CUDA, torch, kernel, OS...) is
recorded beside every session, never keyed, so that a stack change that costs efficiency
shows up as a difference rather than as a fresh baseline.
"""

from __future__ import annotations

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


def software_stack(sensor_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The layers that move tokens per joule, from Python packages down to the kernel."""
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
    return stack
