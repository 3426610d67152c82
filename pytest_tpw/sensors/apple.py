"""The ``apple`` sensor: Apple Silicon SoC energy from IOReport, through ``zeus-apple-silicon``.

``zeus-apple-silicon`` (imported as ``zeus_apple_silicon`` in :meth:`AppleSiliconSensor.open`,
never at import time) subscribes to IOReport's "Energy Model" channel group: cumulative
counters, 1 mJ resolution, no sudo. ``AppleEnergyMonitor.begin_window(key)`` /
``end_window(key)`` return an ``AppleEnergyMetrics`` of the window's millijoules, each field
an ``int`` (or a list of them, per core or cluster), or ``None`` where the chip has no such
channel. IOReport's energy values are believed to be MODEL-BASED ESTIMATES (from utilization,
frequency and voltage), not readings of a power sensor, so this sensor's provenance is
``estimated``.

What is summed, and why (the channels nest: the CPU total holds the clusters, a cluster its
cores and shared cache):

- ``cpu_total_mj`` (``soc:cpu``): the "CPU Energy" channel, all CPU subsystems combined;
  never the per-core, per-cluster or core-manager fields, which are parts of it;
- ``gpu_mj`` (``soc:gpu``), ``ane_mj`` (``soc:ane``) and ``dram_mj`` (``soc:dram``): other
  parts of the SoC (and its memory), where the chip reports them;
- never ``gpu_sram_mj``: whether the "GPU Energy" channel already includes the GPU's SRAM is
  not documented, and counting it twice would be worse than missing it. It is recorded in
  each window's state with the other unsummed channels.

Only on macOS (``sys.platform == "darwin"``); the platform, the chip's name (``sysctl -n
machdep.cpu.brand_string``) and the clock are attributes that tests replace.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import (
    Capabilities,
    Provenance,
    Sensor,
    SensorHealth,
    SensorOptions,
    WindowEnergy,
)

INSTALL = "pip install 'pytest-tpw[apple]'"

#: The ``AppleEnergyMetrics`` fields summed, and their domains (see the module docstring).
SUMMED = (
    ("cpu_total_mj", "soc:cpu"),
    ("gpu_mj", "soc:gpu"),
    ("ane_mj", "soc:ane"),
    ("dram_mj", "soc:dram"),
)
#: Fields recorded in each window's state but never summed: parts of a summed field, or
#: (``gpu_sram_mj``) of undocumented relation to one.
RECORDED = (
    "efficiency_cores_mj",
    "performance_cores_mj",
    "efficiency_cluster_mj",
    "performance_cluster_mj",
    "efficiency_core_manager_mj",
    "performance_core_manager_mj",
    "gpu_sram_mj",
)
#: No Apple SoC draws this much (an M3 Ultra Mac Studio peaks in the hundreds of watts): a
#: larger delta is a counter reset or wrap, not energy.
CEILING_W = 1000.0


def brand_string() -> str | None:
    """The chip's name (``Apple M3 Max``) from ``sysctl``, or None when it cannot be read."""
    try:
        done = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _import_zeus_apple_silicon() -> Any:
    try:
        return importlib.import_module("zeus_apple_silicon")
    except ImportError as exc:
        raise SensorUnavailable(
            f"zeus-apple-silicon is not installed (import zeus_apple_silicon failed: {exc}): "
            f"{INSTALL}"
        ) from exc


def _package_version() -> str | None:
    try:
        return version("zeus-apple-silicon")
    except PackageNotFoundError:
        return None


def _total_mj(metrics: Any, fields: Sequence[str]) -> int:
    return sum(int(getattr(metrics, name, None) or 0) for name in fields)


def _channels(metrics: Any) -> dict[str, Any]:
    """Every field the chip reports (summed or not), as plain ints and lists of ints."""
    out: dict[str, Any] = {}
    for name in (*(f for f, _ in SUMMED), *RECORDED):
        value = getattr(metrics, name, None)
        if isinstance(value, list):
            out[name] = [int(v) for v in value]
        elif value is not None:
            out[name] = int(value)
    return out


@dataclass
class _Window:
    key: str
    started: float


class AppleSiliconSensor(Sensor):
    """Apple Silicon: IOReport "Energy Model" counters (CPU + GPU + ANE + DRAM), estimated."""

    name = "apple"
    provenance: Provenance = "estimated"
    method = (
        "IOReport 'Energy Model' counters via zeus-apple-silicon (model-based estimates from "
        "utilization, frequency and voltage; 1 mJ resolution)"
    )
    host_wide = True  # every process on the Mac reads the same SoC counters

    #: Longest wait at open for the counters to move (seconds), and the pause between reads.
    poll_s: float = 1.0
    poll_step_s: float = 0.01
    #: Seconds of uncertainty at each edge: zeus-apple-silicon's README says windows under
    #: about 10 ms are dominated by the 1 mJ quantization.
    edge_s: float = 0.01
    #: A window lasts at least this many edge errors.
    edges_per_window: int = 10

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        #: Time source and sleep; tests point them at a fake clock.
        self.clock: Callable[[], float] = time.perf_counter
        self.sleep: Callable[[float], None] = time.sleep
        #: The OS (``sys.platform``), the chip's name and the macOS version; tests replace them.
        self.platform: str = sys.platform
        self.chip_name: Callable[[], str | None] = brand_string
        self.os_version: Callable[[], str] = lambda: platform.mac_ver()[0]
        self._monitor: Any = None
        self._fields: list[tuple[str, str]] = []
        self._chip = ""
        self._advances: bool | None = None
        self._dropped = 0
        self._windows = 0
        self._notes: list[str] = []
        self._open_window: _Window | None = None

    # -- session -------------------------------------------------------------------------

    def open(self) -> None:
        if self.platform != "darwin":
            raise SensorUnavailable(
                "Apple Silicon energy comes from macOS's IOReport framework, and this is "
                f"{self.platform!r}, not macOS (darwin)"
            )
        module = _import_zeus_apple_silicon()
        try:
            self._monitor = module.AppleEnergyMonitor()
            first = self._monitor.get_cumulative_energy()
        except (RuntimeError, OSError) as exc:
            raise SensorUnavailable(
                f"zeus-apple-silicon could not subscribe to IOReport's energy counters ({exc}); "
                "it needs an Apple Silicon Mac"
            ) from exc
        self._fields = [(f, d) for f, d in SUMMED if getattr(first, f, None) is not None]
        if not self._fields:
            self.close()
            raise SensorUnavailable(
                "IOReport reports no CPU, GPU, ANE or DRAM energy channel here (an Intel Mac, "
                "or a chip this zeus-apple-silicon does not know: upgrade it, "
                f"{INSTALL} --upgrade)"
            )
        if all(f != "cpu_total_mj" for f, _ in self._fields):
            self._notes.append("no 'CPU Energy' channel on this chip: CPU energy is not counted")
        self._check_advances(_total_mj(first, self.summed_fields()))
        chip = self.chip_name()
        if not chip:
            self._notes.append(
                "the chip's name could not be read (sysctl machdep.cpu.brand_string)"
            )
        self._chip = chip or "Apple Silicon (unknown chip)"

    def summed_fields(self) -> list[str]:
        return [name for name, _ in self._fields]

    def _check_advances(self, start_mj: int) -> None:
        """The summed counters move within a bounded wait (else every window reads 0 J)."""
        deadline = self.clock() + self.poll_s
        while self.clock() < deadline:
            self.sleep(self.poll_step_s)
            try:
                now_mj = _total_mj(self._monitor.get_cumulative_energy(), self.summed_fields())
            except RuntimeError as exc:
                raise SensorUnavailable(f"IOReport energy read failed: {exc}") from exc
            if now_mj != start_mj:
                self._advances = True
                return
        self._advances = False
        self.close()
        raise SensorUnavailable(
            f"IOReport's energy counters ({', '.join(self.summed_fields())}) did not move in "
            f"{self.poll_s:g} s: no energy would be measured"
        )

    def close(self) -> None:
        window, self._open_window = self._open_window, None
        monitor, self._monitor = self._monitor, None
        if window is not None and monitor is not None:
            with suppress(Exception):
                monitor.end_window(window.key)

    def domains(self) -> Sequence[str]:
        return tuple(domain for _, domain in self._fields)

    def hardware(self) -> tuple[str, ...]:
        return (self._chip,)

    def lock_ids(self) -> tuple[str, ...]:
        return ("apple-soc",)  # one SoC per Mac; every process reads its counters

    def capabilities(self) -> Capabilities:
        # estimated joules: an idle window measures the model, not the chip's idle power
        return Capabilities(self.lock_ids(), "device", False)

    def edge_error_s(self) -> float:
        return self.edge_s

    def min_window_s(self) -> float:
        return self.edges_per_window * self.edge_error_s()

    def health(self) -> SensorHealth:
        return SensorHealth(
            counter_advances=self._advances,
            update_period_s=None,  # IOReport samples on demand; its refresh is undocumented
            dropped_reads=self._dropped,
            notes=tuple(self._notes),
        )

    # -- windows -------------------------------------------------------------------------

    def begin(self) -> object:
        if self._open_window is not None:
            raise SensorError("apple: begin() called while a window is still open")
        if self._monitor is None:
            raise SensorError("apple: begin() called before open() or after close()")
        self._windows += 1
        key = f"pytest-tpw-{os.getpid()}-{self._windows}"
        try:
            self._monitor.begin_window(key)
        except RuntimeError as exc:
            raise SensorError(f"IOReport: could not begin a window: {exc}") from exc
        window = _Window(key, self.clock())
        self._open_window = window
        return window

    def end(self, token: object) -> WindowEnergy:
        if not isinstance(token, _Window) or token is not self._open_window:
            raise SensorError("apple: end() was given a token that this sensor's begin() did not")
        self._open_window = None
        try:
            metrics = self._monitor.end_window(token.key)
        except RuntimeError as exc:
            self._dropped += 1
            raise SensorError(f"IOReport: could not end a window: {exc}") from exc
        seconds = self.clock() - token.started
        result = WindowEnergy({}, state={"seconds": seconds, "channels_mj": _channels(metrics)})
        problems = [self._add(result, metrics, f, d, seconds) for f, d in self._fields]
        problems = [p for p in problems if p]
        if problems:
            self._dropped += len(problems)
            result.invalid = "; ".join(problems) + ": this window is discarded"
        return result

    def _add(self, out: WindowEnergy, metrics: Any, field: str, domain: str, seconds: float) -> str:
        """Add one field's joules to ``out``; the reason it cannot be trusted, else ''."""
        value = getattr(metrics, field, None)
        if value is None:
            out.joules[domain] = 0.0
            return f"{domain}: IOReport's {field} channel vanished during the window"
        millijoules = int(value)
        if millijoules < 0:
            out.joules[domain] = 0.0
            return (
                f"{domain}: IOReport's {field} counter went backwards ({millijoules} mJ): "
                "it was reset or wrapped during the window"
            )
        out.joules[domain] = millijoules / 1000.0
        if millijoules / 1000.0 > CEILING_W * max(seconds, self.min_window_s()):
            return (
                f"{domain}: IOReport's {field} counter moved {millijoules / 1000.0:.0f} J in "
                f"{seconds:.3g} s, more than {CEILING_W:.0f} W: a counter reset, not energy"
            )
        return ""

    # -- description ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "chip": self._chip,
            "macos": self.os_version() or None,
            "zeus_apple_silicon": _package_version(),
            "method": self.method,
            "summed": self.summed_fields(),
            "recorded_not_summed": list(RECORDED),
            "devices": [
                {
                    "name": self._chip,
                    "scope": "SoC: " + " + ".join(d.removeprefix("soc:") for d in self.domains()),
                }
            ],
            "notes": list(self._notes),
        }
