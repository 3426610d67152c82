"""The ``nvml`` sensor: NVIDIA GPU joules from NVML, with the per-window GPU state behind them.

Joules come from ``nvmlDeviceGetTotalEnergyConsumption`` (Volta and newer); where a board has
no such counter they are integrated from the instant-power field by a sampling thread that
runs only while a window is open. Devices are the GPUs this process sees, resolved to NVML
by UUID through ``CUDA_VISIBLE_DEVICES``. ``pynvml`` is imported in :meth:`NvmlSensor.open`,
never at import time.

The counter's update period and the read latency are measured once per session, lazily, the
first time :meth:`NvmlSensor.min_window_s` or :meth:`NvmlSensor.describe` needs them, so that
``--tpw-sensor auto`` can open this sensor without spending a second polling it.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.host.distributed import local_rank_device
from pytest_tpw.sensors.base import (
    Capabilities,
    FollowedWork,
    Provenance,
    Sensor,
    SensorHealth,
    SensorOptions,
    WindowEnergy,
)
from pytest_tpw.sensors.sampling import PowerSampler, wait_event

COUNTER = "counter"
INSTANT_FIELD = "instant-field"
POWER_USAGE = "power-usage"

_SOURCE_LABELS = {
    COUNTER: "counter",
    INSTANT_FIELD: "integrated instant power (NVML_FI_DEV_POWER_INSTANT)",
    POWER_USAGE: "integrated instant power (nvmlDeviceGetPowerUsage, instantaneous here)",
}

#: Clock-event (throttle) reason bits; values are fixed by nvml.h and the same in every binding.
REASON_BITS = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
    0x200: "BoardLimit",
    0x400: "Reliability",
}

#: Reasons that change a window's joules and speed, with what each means for a reader.
SPOILING_REASONS = {
    "SwPowerCap": "software power cap",
    "HwSlowdown": "hardware slowdown",
    "SwThermalSlowdown": "software thermal slowdown",
    "HwThermalSlowdown": "hardware thermal slowdown",
    "HwPowerBrakeSlowdown": "external power brake",
}

#: Grace-based modules report the energy of the whole module, not of the GPU alone.
MODULE_SCOPE_MARKERS = ("GH200", "GB200")
MODULE_SCOPE = "module (CPU+GPU+memory)"

#: nvmlValueType_t -> the member of nvmlValue_t that holds the number.
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")

_NVML_ARCH_AMPERE = 7  # nvmlDeviceArchitecture_t; GetPowerUsage is a 1 s average from here on
_GA100_NAMES = ("A100", "A30")  # GA100 boards: instantaneous GetPowerUsage despite Ampere


def _import_pynvml() -> Any:
    """``pynvml`` from nvidia-ml-py, without the FutureWarning the deprecated ``pynvml`` 13.x
    package's import hook emits (it would break ``-W error`` suites)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import pynvml
    except ImportError as exc:
        raise SensorUnavailable(
            "nvidia-ml-py is not installed (import pynvml failed): pip install nvidia-ml-py"
        ) from exc
    return pynvml


def _short_uuid(uuid: str) -> str:
    return uuid[:12] + "…" if len(uuid) > 12 else uuid


@dataclass
class _Gpu:
    """One measured GPU: where it sits for the process and for NVML, and how it is read."""

    index: int
    nvml_index: int
    name: str
    uuid: str
    handle: Any
    source: str = COUNTER
    period_s: float | None = None
    period_measured: bool = False
    latency_s: dict[str, float] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return f"gpu:{self.index}"

    @property
    def label(self) -> str:
        return f"{self.domain} ({self.name}, {_short_uuid(self.uuid)})"

    @property
    def full_label(self) -> str:
        return f"{self.domain} (NVML index {self.nvml_index}, {self.name}, {self.uuid})"

    @property
    def module_scope(self) -> bool:
        return any(marker in self.name for marker in MODULE_SCOPE_MARKERS)


def _visible_nvml_indices(value: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices of the GPUs CUDA shows this process, in the process's order.

    Mirrors CUDA: integer entries are indices (taken in PCI order, which is NVML's), full
    UUIDs and unique UUID prefixes name a device, and the list ends at the first entry that
    names nothing or repeats one, because CUDA ignores that entry and all after it.
    """
    if value is None:
        return list(range(len(uuids)))
    entries = [entry.strip() for entry in value.split(",")]
    mig = [entry for entry in entries if entry.upper().startswith("MIG-")]
    if mig:
        raise SensorUnavailable(
            f"CUDA_VISIBLE_DEVICES names a MIG instance ({mig[0]}); NVML has no per-instance "
            "energy counter, only one for the whole board. Measure on a whole GPU (MIG "
            "disabled, CUDA_VISIBLE_DEVICES=<GPU index or GPU-UUID>) or pick another sensor."
        )
    chosen: list[int] = []
    for entry in entries:
        found = _match_entry(entry, uuids)
        if found is None or found in chosen:
            break
        chosen.append(found)
    return chosen


def _match_entry(entry: str, uuids: Sequence[str]) -> int | None:
    if not entry:
        return None
    if entry.isdigit():
        return int(entry) if int(entry) < len(uuids) else None
    prefix = entry if entry.upper().startswith("GPU-") else f"GPU-{entry}"
    matches = [i for i, uuid in enumerate(uuids) if uuid.lower().startswith(prefix.lower())]
    return matches[0] if len(matches) == 1 else None


def _field_number(value: Any) -> float:
    member = _VALUE_MEMBERS[int(value.valueType)]
    return float(getattr(value.value, member))


def _median_interval(times: Sequence[float]) -> float | None:
    intervals = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(intervals) if len(intervals) >= 2 else None


def _latency_stats(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"median": statistics.median(ordered), "p99": p99, "reads": len(ordered)}


def _or_masks(start: int | None, end: int | None) -> int | None:
    """Reasons seen at either end of a window; None when neither read worked."""
    return None if start is None and end is None else (start or 0) | (end or 0)


def _enabled(value: Any) -> str | None:
    return None if value is None else ("enabled" if int(value) else "disabled")


def _reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASON_BITS.items() if mask & bit]


@dataclass
class _Window:
    """What ``begin`` read, for ``end``."""

    started: float
    energy_mj: dict[str, float]
    temperature: dict[str, int | None]
    reasons: dict[str, int | None]
    pids: dict[str, set[int]]
    sampler: PowerSampler | None


class NvmlSensor(Sensor):
    """NVIDIA GPUs through NVML: the total-energy counter, else integrated instant power."""

    name = "nvml"
    provenance: Provenance = "measured"

    #: Longest time spent polling the counter to find its update period (seconds).
    poll_s: float = 1.0
    #: Pause between two polls of the counter (seconds).
    poll_step_s: float = 0.0005
    #: Enough observed counter changes per device to stop polling early.
    poll_changes: int = 8
    #: Period assumed when the counter never changed during the poll (seconds).
    assumed_period_s: float = 0.1
    #: A window lasts at least this many counter updates (docs/measurement.md).
    updates_per_window: int = 10
    #: Interval of the instant-power sampling thread (seconds).
    sample_interval_s: float = 0.02

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        #: Time source, sleep and event wait; tests point them at a fake clock.
        self.clock: Callable[[], float] = time.perf_counter
        self.sleep: Callable[[float], None] = time.sleep
        self.wait: Callable[[threading.Event, float], bool] = wait_event
        #: The processes whose use of a measured GPU is the measured work (this one, and a
        #: served model's process tree while the sensor follows it: :meth:`follow`).
        self.own_pids: Callable[[], set[int]] = lambda: {os.getpid()}
        self._nvml: Any = None
        self._gpus: list[_Gpu] = []
        self._notes: list[str] = []
        self._calibrated = False
        self._open_window: _Window | None = None
        #: Health: windows discarded for a counter that went backwards, and window reads
        #: (counter or instant power) that failed.
        self._backwards = 0
        self._failed_reads = 0

    # -- session -------------------------------------------------------------------------

    def open(self) -> None:
        nvml = _import_pynvml()
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError, OSError) as exc:
            raise SensorUnavailable(
                f"NVML could not start ({exc}): no NVIDIA driver is loaded here or "
                "libnvidia-ml.so.1 is not on the library path; check that `nvidia-smi` works"
            ) from exc
        self._nvml = nvml
        try:
            self._gpus = self._resolve_devices()
            for gpu in self._gpus:
                gpu.source = self._energy_source(gpu)
        except BaseException:
            self.close()
            raise
        self.method = self._method()

    def close(self) -> None:
        window, self._open_window = self._open_window, None
        if window is not None:
            _abandon(window.sampler)
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            with suppress(Exception):
                nvml.nvmlShutdown()

    def domains(self) -> Sequence[str]:
        return tuple(gpu.domain for gpu in self._gpus)

    def hardware(self) -> tuple[str, ...]:
        return tuple(gpu.name for gpu in self._gpus)

    def lock_ids(self) -> tuple[str, ...]:
        return tuple(gpu.uuid for gpu in self._gpus)  # the board, whatever its index here

    def capabilities(self) -> Capabilities:
        return Capabilities(self.lock_ids(), "device", True)

    def follow(self, work: FollowedWork | None) -> None:
        if work is None:
            self.own_pids = lambda: {os.getpid()}
        else:
            self.own_pids = lambda: {os.getpid(), *work.pids()}

    def device_users(self) -> dict[str, set[int]]:
        return {uuid: set(pids) for uuid, pids in gpu_processes(self._nvml).items()}

    def min_window_s(self) -> float:
        return self.updates_per_window * self.edge_error_s()

    def edge_error_s(self) -> float:
        """The counter's update period: a read at a window's edge may be that old."""
        self._calibrate()
        periods = [gpu.period_s or self.assumed_period_s for gpu in self._gpus]
        return max(periods, default=self.assumed_period_s)

    # -- devices -------------------------------------------------------------------------

    def _resolve_devices(self) -> list[_Gpu]:
        nvml = self._nvml
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            uuids = [str(nvml.nvmlDeviceGetUUID(h)) for h in handles]
            names = [str(nvml.nvmlDeviceGetName(h)) for h in handles]
        except nvml.NVMLError as exc:
            raise SensorUnavailable(f"NVML could not list the GPUs: {exc}") from exc
        visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = _visible_nvml_indices(visible_env, uuids)
        self._note_order_assumption(visible_env, names)
        wanted = self._wanted_indices(visible, visible_env)
        return [self._gpu(i, visible[i], names, uuids) for i in wanted]

    def _wanted_indices(self, visible: Sequence[int], env: str | None) -> Sequence[int]:
        shown = "unset" if env is None else repr(env)
        if not visible:
            raise SensorUnavailable(
                f"no GPU is visible to this process (CUDA_VISIBLE_DEVICES={shown}); "
                "unset it or list the GPUs to measure"
            )
        if self.options.devices is None:
            local = local_rank_device(len(visible))
            return range(len(visible)) if local is None else [local]
        wanted = list(dict.fromkeys(self.options.devices))
        for index in wanted:
            if not 0 <= index < len(visible):
                raise SensorUnavailable(
                    f"GPU index {index} was requested but this process sees {len(visible)} "
                    f"GPU(s) (indices 0..{len(visible) - 1}, CUDA_VISIBLE_DEVICES={shown}); "
                    "fix --tpw-devices or CUDA_VISIBLE_DEVICES"
                )
        return wanted

    def _gpu(self, index: int, nvml_index: int, names: Sequence[str], uuids: Sequence[str]) -> _Gpu:
        try:
            handle = self._nvml.nvmlDeviceGetHandleByUUID(uuids[nvml_index])
        except self._nvml.NVMLError as exc:
            raise SensorUnavailable(
                f"NVML could not open gpu:{index} by its UUID {uuids[nvml_index]}: {exc}"
            ) from exc
        return _Gpu(index, nvml_index, names[nvml_index], uuids[nvml_index], handle)

    def _note_order_assumption(self, env: str | None, names: Sequence[str]) -> None:
        by_index = env is None or any(e.strip().isdigit() for e in env.split(","))
        pci_order = os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
        if by_index and not pci_order and len(set(names)) > 1:
            self._notes.append(
                "GPU indices were mapped to NVML devices in PCI bus order, but "
                "CUDA_DEVICE_ORDER is not PCI_BUS_ID and the GPUs differ in model, so CUDA "
                "may number them fastest-first; set CUDA_DEVICE_ORDER=PCI_BUS_ID or list "
                "GPU UUIDs in CUDA_VISIBLE_DEVICES to be sure the right board is measured"
            )

    # -- how a GPU is read -----------------------------------------------------------------

    def _energy_source(self, gpu: _Gpu) -> str:
        nvml = self._nvml
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)
            return COUNTER
        except nvml.NVMLError_NotSupported:
            pass
        except nvml.NVMLError as exc:
            raise SensorUnavailable(f"{gpu.full_label}: NVML energy read failed: {exc}") from exc
        try:
            self._instant_field_mw(gpu)
            return INSTANT_FIELD
        except nvml.NVMLError:
            pass
        if self._power_usage_is_instant(gpu):
            return POWER_USAGE
        raise SensorUnavailable(
            f"{gpu.full_label} has no energy counter and no instant-power field, and its "
            "nvmlDeviceGetPowerUsage is a 1-second average (Ampere and newer), which must "
            "not be integrated into energy; update the NVIDIA driver or pick another sensor"
        )

    def _power_usage_is_instant(self, gpu: _Gpu) -> bool:
        """GetPowerUsage is instantaneous before Ampere and on GA100 (A100, A30) only."""
        arch = self._optional("nvmlDeviceGetArchitecture", gpu.handle)
        if arch is None:
            return False
        return int(arch) < _NVML_ARCH_AMPERE or (
            int(arch) == _NVML_ARCH_AMPERE and any(n in gpu.name for n in _GA100_NAMES)
        )

    def _instant_field_mw(self, gpu: _Gpu) -> float:
        nvml = self._nvml
        value = nvml.nvmlDeviceGetFieldValues(gpu.handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if int(value.nvmlReturn) != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(int(value.nvmlReturn))
        return _field_number(value)

    def _power_mw(self, gpu: _Gpu) -> float:
        if gpu.source == POWER_USAGE:
            return float(self._nvml.nvmlDeviceGetPowerUsage(gpu.handle))
        return self._instant_field_mw(gpu)

    def _energy_mj(self, gpu: _Gpu) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))

    def _raw_reading(self, gpu: _Gpu) -> float:
        return self._energy_mj(gpu) if gpu.source == COUNTER else self._power_mw(gpu)

    def _method(self) -> str:
        parts = []
        if any(gpu.source == COUNTER for gpu in self._gpus):
            parts.append("NVML total-energy counter")
        if any(gpu.source != COUNTER for gpu in self._gpus):
            parts.append(
                f"integrated instant power (sampled every {self.sample_interval_s * 1000:g} ms, "
                "trapezoidal rule)"
            )
        if any(gpu.module_scope for gpu in self._gpus):
            parts.append(f"{MODULE_SCOPE} scope on Grace-based modules")
        return "; ".join(parts)

    @contextmanager
    def _device_errors(self, gpu: _Gpu, doing: str) -> Iterator[None]:
        try:
            yield
        except self._nvml.NVMLError as exc:
            raise SensorError(
                f"{gpu.full_label}: NVML error while {doing}: {exc}. Check the GPU with "
                "`nvidia-smi`; if it was reset or the driver reloaded, rerun the session"
            ) from exc

    def _optional(self, function: str, *args: Any) -> Any:
        """An NVML query that may be missing or unsupported here: its value, else None."""
        getter = getattr(self._nvml, function, None)
        if getter is None:
            return None
        try:
            return getter(*args)
        except self._nvml.NVMLError:
            return None

    # -- calibration ---------------------------------------------------------------------

    def _calibrate(self) -> None:
        """Poll each GPU's energy reading: update period from its changes, and read latency."""
        if self._calibrated:
            return
        changes: dict[str, list[float]] = {gpu.domain: [] for gpu in self._gpus}
        latencies: dict[str, list[float]] = {gpu.domain: [] for gpu in self._gpus}
        last: dict[str, float] = {}
        deadline = self.clock() + self.poll_s
        while self.clock() < deadline and not self._enough(changes):
            for gpu in self._gpus:
                with self._device_errors(gpu, "measuring the counter's update period"):
                    self._poll_once(gpu, last, changes, latencies)
            self.sleep(self.poll_step_s)
        for gpu in self._gpus:
            self._settle_period(gpu, changes[gpu.domain], latencies[gpu.domain])
        self._calibrated = True

    def _enough(self, changes: dict[str, list[float]]) -> bool:
        return all(len(times) > self.poll_changes for times in changes.values())

    def _poll_once(
        self,
        gpu: _Gpu,
        last: dict[str, float],
        changes: dict[str, list[float]],
        latencies: dict[str, list[float]],
    ) -> None:
        t0 = self.clock()
        value = self._raw_reading(gpu)
        latencies[gpu.domain].append(self.clock() - t0)
        if gpu.domain in last and value != last[gpu.domain]:
            changes[gpu.domain].append(t0)
        last[gpu.domain] = value

    def _settle_period(self, gpu: _Gpu, changes: list[float], latencies: list[float]) -> None:
        period = _median_interval(changes)
        gpu.period_measured = period is not None
        gpu.period_s = period if period is not None else self.assumed_period_s
        gpu.latency_s = _latency_stats(latencies) if latencies else {}
        if period is None:
            self._notes.append(
                f"{gpu.label}: its energy reading did not change during a "
                f"{self.poll_s:g} s poll; an update period of "
                f"{self.assumed_period_s * 1000:g} ms is assumed"
            )

    # -- windows -------------------------------------------------------------------------

    def begin(self) -> object:
        if self._open_window is not None:
            raise SensorError("nvml: begin() called while a window is still open")
        temps, reasons, pids = {}, {}, {}
        for gpu in self._gpus:
            temps[gpu.domain] = self._temperature(gpu)
            reasons[gpu.domain] = self._reasons(gpu)
            pids[gpu.domain] = self._other_pids(gpu)
        energy = {}
        for gpu in self._counter_gpus():
            with self._device_errors(gpu, "reading the energy counter at the start of a window"):
                energy[gpu.domain] = self._energy_mj(gpu)
        window = _Window(self.clock(), energy, temps, reasons, pids, self._start_sampler())
        self._open_window = window
        return window

    def _counter_gpus(self) -> list[_Gpu]:
        return [gpu for gpu in self._gpus if gpu.source == COUNTER]

    def _start_sampler(self) -> PowerSampler | None:
        gpus = [gpu for gpu in self._gpus if gpu.source != COUNTER]
        if not gpus:
            return None
        by_domain = {gpu.domain: gpu for gpu in gpus}
        sampler = PowerSampler(
            lambda domain: self._power_mw(by_domain[domain]) / 1000.0,
            list(by_domain),
            self.clock,
            self.wait,
            self.sample_interval_s,
            name="tpw-nvml-power",
        )
        with self._device_errors(gpus[0], "reading instant power at the start of a window"):
            sampler.start()
        return sampler

    def end(self, token: object) -> WindowEnergy:
        if not isinstance(token, _Window) or token is not self._open_window:
            raise SensorError("nvml: end() was given a token that this sensor's begin() did not")
        self._open_window = None
        result = WindowEnergy(joules={})
        try:
            for gpu in self._counter_gpus():
                with self._device_errors(gpu, "reading the energy counter at the end of a window"):
                    self._counter_joules(gpu, token, self._energy_mj(gpu), result)
        except BaseException as exc:
            if isinstance(exc, SensorError):
                self._failed_reads += 1
            _abandon(token.sampler)
            raise
        seconds = self.clock() - token.started
        self._integrated_joules(token.sampler, result)
        for gpu in self._gpus:
            self._record_state(gpu, token, seconds, result)
        return result

    def _counter_joules(self, gpu: _Gpu, token: _Window, end_mj: float, out: WindowEnergy) -> None:
        start_mj = token.energy_mj[gpu.domain]
        if end_mj < start_mj:
            out.joules[gpu.domain] = 0.0
            reason = (
                f"{gpu.label}: the energy counter went backwards ({start_mj:.0f} mJ at the start, "
                f"{end_mj:.0f} mJ at the end); the NVIDIA driver was probably reloaded or the "
                "GPU reset during the window, so this window is discarded"
            )
            out.invalid = reason if out.invalid is None else f"{out.invalid}; {reason}"
            self._backwards += 1
            return
        out.joules[gpu.domain] = (end_mj - start_mj) / 1000.0

    def _integrated_joules(self, sampler: PowerSampler | None, out: WindowEnergy) -> None:
        if sampler is None:
            return
        try:
            sampler.stop()
        except self._nvml.NVMLError:
            self._failed_reads += 1
            gpu = next(g for g in self._gpus if g.domain == (sampler.failed or g.domain))
            with self._device_errors(gpu, "sampling instant power during a window"):
                raise
        out.joules.update(sampler.joules())

    # -- per-window state ----------------------------------------------------------------

    def _record_state(self, gpu: _Gpu, token: _Window, seconds: float, out: WindowEnergy) -> None:
        mask = _or_masks(token.reasons[gpu.domain], self._reasons(gpu))
        pids = sorted(token.pids[gpu.domain] | self._other_pids(gpu))
        state: dict[str, Any] = {
            "energy_source": _SOURCE_LABELS[gpu.source],
            "seconds": seconds,
            "temperature_c": {
                "start": token.temperature[gpu.domain],
                "end": self._temperature(gpu),
            },
            "sm_clock_mhz": self._clock_mhz(gpu, "NVML_CLOCK_SM"),
            "mem_clock_mhz": self._clock_mhz(gpu, "NVML_CLOCK_MEM"),
            "clocks_event_mask": mask,
            "clocks_event_reasons": _reason_names(mask or 0),
            "enforced_power_limit_w": self._watts("nvmlDeviceGetEnforcedPowerLimit", gpu),
            "other_pids": pids,
        }
        if token.sampler is not None and gpu.domain in token.sampler.samples:
            state["power_samples"] = len(token.sampler.samples[gpu.domain])
        out.state[gpu.domain] = state
        out.warnings.extend(_window_warnings(gpu, pids, state["clocks_event_reasons"]))

    def _temperature(self, gpu: _Gpu) -> int | None:
        sensor = self._nvml.NVML_TEMPERATURE_GPU
        value = self._optional("nvmlDeviceGetTemperature", gpu.handle, sensor)
        return None if value is None else int(value)

    def _clock_mhz(self, gpu: _Gpu, clock: str) -> int | None:
        value = self._optional("nvmlDeviceGetClockInfo", gpu.handle, getattr(self._nvml, clock))
        return None if value is None else int(value)

    def _watts(self, function: str, gpu: _Gpu) -> float | None:
        milliwatts = self._optional(function, gpu.handle)
        return None if milliwatts is None else float(milliwatts) / 1000.0

    def _reasons(self, gpu: _Gpu) -> int | None:
        """Current clock-event reasons; the legacy 'throttle' call on drivers before 535."""
        nvml = self._nvml
        getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if getter is not None:
            try:
                return int(getter(gpu.handle))
            except nvml.NVMLError_FunctionNotFound:
                pass
            except nvml.NVMLError:
                return None
        value = self._optional("nvmlDeviceGetCurrentClocksThrottleReasons", gpu.handle)
        return None if value is None else int(value)

    def _other_pids(self, gpu: _Gpu) -> set[int]:
        processes = self._optional("nvmlDeviceGetComputeRunningProcesses", gpu.handle) or []
        return {int(p.pid) for p in processes} - self.own_pids()

    # -- description ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        try:
            self._calibrate()
        except SensorError as exc:
            self._notes.append(f"the update period could not be measured: {exc}")
        return {
            "driver_version": self._text("nvmlSystemGetDriverVersion"),
            "cuda_driver_version": self._cuda_driver_version(),
            "nvml_version": self._text("nvmlSystemGetNVMLVersion"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
            "method": self.method,
            "devices": [self._describe_gpu(gpu) for gpu in self._gpus],
            "notes": list(self._notes),
        }

    def _text(self, function: str, *args: Any) -> str | None:
        value = self._optional(function, *args)
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return None if value is None else str(value)

    def _cuda_driver_version(self) -> str | None:
        value = self._optional("nvmlSystemGetCudaDriverVersion_v2")
        if value is None:
            value = self._optional("nvmlSystemGetCudaDriverVersion")
        if value is None:
            return None
        return f"{int(value) // 1000}.{int(value) % 1000 // 10}"

    def health(self) -> SensorHealth:
        """The update period measured at calibration (the counter, or the instant power,
        changed while polled: it advances); windows discarded for a counter that went
        backwards and window reads that failed are the dropped reads."""
        with suppress(SensorError):  # said in describe()'s notes
            self._calibrate()
        measured = [gpu.period_s for gpu in self._gpus if gpu.period_measured and gpu.period_s]
        still = [gpu.label for gpu in self._gpus if self._calibrated and not gpu.period_measured]
        advances = None if not self._calibrated else not still
        notes = []
        if still:
            notes.append(
                f"reading did not change while polled ({self.poll_s:g} s): {', '.join(still)}; "
                f"an update period of {self.assumed_period_s * 1000:g} ms is assumed"
            )
        if self._backwards:
            notes.append(
                f"{self._backwards} window(s) discarded: the energy counter went backwards"
            )
        if self._failed_reads:
            notes.append(f"{self._failed_reads} window read(s) failed (NVML error)")
        return SensorHealth(
            advances,
            max(measured) if measured else None,
            self._backwards + self._failed_reads,
            tuple(notes),
        )

    def _max_power_w(self, gpu: _Gpu) -> float | None:
        """The most the board can be set to draw: the top of its power-limit range, else
        its default limit."""
        constraints = self._optional("nvmlDeviceGetPowerManagementLimitConstraints", gpu.handle)
        if isinstance(constraints, (list, tuple)) and len(constraints) == 2:
            return float(constraints[1]) / 1000.0
        return self._watts("nvmlDeviceGetPowerManagementDefaultLimit", gpu)

    def _clocks_policy(self, gpu: _Gpu) -> str | None:
        """How the board's clocks are set, as far as NVML tells: application clocks at
        their defaults or set (SM/memory MHz), and auto boost when it is not at its default.
        None when none of it can be read. Locked clocks (``nvidia-smi -lgc``) have no NVML
        query and are not in it."""
        nvml, parts = self._nvml, []
        current, default = {}, {}
        for label, clock in (("SM", "NVML_CLOCK_SM"), ("memory", "NVML_CLOCK_MEM")):
            kind = getattr(nvml, clock, None)
            if kind is None:
                continue
            now = self._optional("nvmlDeviceGetApplicationsClock", gpu.handle, kind)
            base = self._optional("nvmlDeviceGetDefaultApplicationsClock", gpu.handle, kind)
            if now is not None:
                current[label] = int(now)
            if base is not None:
                default[label] = int(base)
        if current and current == default:
            parts.append("default application clocks")
        elif current:
            said = ", ".join(f"{k} {v} MHz" for k, v in current.items())
            parts.append(f"application clocks {said}")
            if default:
                parts[-1] += " (default " + ", ".join(f"{k} {v}" for k, v in default.items()) + ")"
        boost = self._optional("nvmlDeviceGetAutoBoostedClocksEnabled", gpu.handle)
        if isinstance(boost, (list, tuple)) and len(boost) == 2 and int(boost[0]) != int(boost[1]):
            parts.append(f"auto boost {'on' if int(boost[0]) else 'off'}")
        return "; ".join(parts) or None

    def _describe_gpu(self, gpu: _Gpu) -> dict[str, Any]:
        return {
            "index": gpu.index,
            "nvml_index": gpu.nvml_index,
            "name": gpu.name,
            "uuid": gpu.uuid,
            "vbios": self._text("nvmlDeviceGetVbiosVersion", gpu.handle),
            "power_limit_w": self._watts("nvmlDeviceGetPowerManagementLimit", gpu),
            "max_power_w": self._max_power_w(gpu),
            "clocks_policy": self._clocks_policy(gpu),
            "persistence_mode": _enabled(
                self._optional("nvmlDeviceGetPersistenceMode", gpu.handle)
            ),
            "mig_mode": self._current_mode("nvmlDeviceGetMigMode", gpu),
            "ecc_mode": self._current_mode("nvmlDeviceGetEccMode", gpu),
            "pcie": self._pcie(gpu),
            "energy_source": _SOURCE_LABELS[gpu.source],
            "scope": MODULE_SCOPE if gpu.module_scope else "board (GPU)",
            "update_period_s": gpu.period_s,
            "update_period": "measured" if gpu.period_measured else "assumed",
            "read_latency_s": dict(gpu.latency_s),
        }

    def _current_mode(self, function: str, gpu: _Gpu) -> str | None:
        modes = self._optional(function, gpu.handle)
        return None if modes is None else _enabled(modes[0])

    def _pcie(self, gpu: _Gpu) -> dict[str, int | None]:
        queries = {
            "gen_current": "nvmlDeviceGetCurrPcieLinkGeneration",
            "width_current": "nvmlDeviceGetCurrPcieLinkWidth",
            "gen_max": "nvmlDeviceGetMaxPcieLinkGeneration",
            "width_max": "nvmlDeviceGetMaxPcieLinkWidth",
        }
        values = {key: self._optional(function, gpu.handle) for key, function in queries.items()}
        return {key: None if v is None else int(v) for key, v in values.items()}


def _abandon(sampler: PowerSampler | None) -> None:
    """Stop a sampler whose window is being given up; nothing it raises matters now."""
    if sampler is not None:
        sampler.abandon()


def _window_warnings(gpu: _Gpu, pids: Sequence[int], reasons: Sequence[str]) -> list[str]:
    """The sentences that say why this GPU's window may not compare well."""
    found = []
    if len(pids) == 1:
        found.append(
            f"{gpu.label}: another process (pid {pids[0]}) was using the GPU; "
            "its energy is counted in this window"
        )
    elif pids:
        listed = ", ".join(str(pid) for pid in pids)
        found.append(
            f"{gpu.label}: other processes (pids {listed}) were using the GPU; "
            "their energy is counted in this window"
        )
    spoiling = [f"{r} ({SPOILING_REASONS[r]})" for r in reasons if r in SPOILING_REASONS]
    if spoiling:
        found.append(
            f"{gpu.label}: clocks were held down by {', '.join(spoiling)}; this window's "
            "joules and speed may not compare with unthrottled runs"
        )
    return found


def gpu_processes(nvml: Any = None) -> dict[str, list[int]]:
    """GPU UUID -> pids of the compute and graphics processes NVML lists on it.

    ``nvml`` is the ``pynvml`` module (imported lazily when None); {} when NVML cannot start.
    A device whose process list cannot be read is listed with no pids.
    """
    if nvml is None:
        try:
            nvml = _import_pynvml()
        except SensorUnavailable:
            return {}
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError, OSError: no driver here
        return {}
    out: dict[str, list[int]] = {}
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            pids: set[int] = set()
            for function in (
                "nvmlDeviceGetComputeRunningProcesses",
                "nvmlDeviceGetGraphicsRunningProcesses",
            ):
                reader = getattr(nvml, function, None)
                if reader is None:
                    continue
                with suppress(Exception):
                    pids.update(int(proc.pid) for proc in reader(handle))
            out[uuid] = sorted(pids)
    except Exception:
        return out
    finally:
        with suppress(Exception):
            nvml.nvmlShutdown()
    return out
