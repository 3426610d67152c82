"""A stand-in for ``pynvml`` that replays an NVML trace (tests/data/nvml_*.json) on a fake clock.

Install it with ``monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(trace))`` and point the
sensor's ``clock``/``sleep``/``wait`` at ``fake.clock``. Every NVML call advances the fake clock
by the trace's per-call latency; a read at time ``t`` returns the latest trace row at or before
``t`` (the rows are the instants the board's readings changed). Faults are scripted through
:class:`Faults`. Constants and error codes are those of nvidia-ml-py 13.615.71 (a unit test
checks them against the installed ``pynvml``).

The fake does not model the 1-second averaging of ``nvmlDeviceGetPowerUsage`` on Ampere and
newer: it returns the instant power, and the sensor must not use it there anyway.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

DATA = Path(__file__).resolve().parents[1] / "data"

# Constants copied from nvidia-ml-py 13.615.71 (checked by tests/unit/sensors/test_nvml.py).
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_DEVICE_ARCH_PASCAL = 4
NVML_DEVICE_ARCH_VOLTA = 5
NVML_DEVICE_ARCH_AMPERE = 7
NVML_DEVICE_ARCH_HOPPER = 9
NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1

_ERROR_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` builds the subclass for that code."""

    code: ClassVar[int] = NVML_ERROR_UNKNOWN
    value: int

    def __new__(cls, value: int | None = None) -> NVMLError:
        if cls is NVMLError and value is not None:
            cls = _ERROR_CLASSES.get(value, NVMLError)
        return Exception.__new__(cls)

    def __init__(self, value: int | None = None) -> None:
        self.value = type(self).code if value is None else value
        super().__init__(self.value)

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):
    code = NVML_ERROR_UNINITIALIZED


class NVMLError_InvalidArgument(NVMLError):
    code = NVML_ERROR_INVALID_ARGUMENT


class NVMLError_NotSupported(NVMLError):
    code = NVML_ERROR_NOT_SUPPORTED


class NVMLError_NoPermission(NVMLError):
    code = NVML_ERROR_NO_PERMISSION


class NVMLError_NotFound(NVMLError):
    code = NVML_ERROR_NOT_FOUND


class NVMLError_DriverNotLoaded(NVMLError):
    code = NVML_ERROR_DRIVER_NOT_LOADED


class NVMLError_LibraryNotFound(NVMLError):
    code = NVML_ERROR_LIBRARY_NOT_FOUND


class NVMLError_FunctionNotFound(NVMLError):
    code = NVML_ERROR_FUNCTION_NOT_FOUND


class NVMLError_GpuIsLost(NVMLError):
    code = NVML_ERROR_GPU_IS_LOST


class NVMLError_Unknown(NVMLError):
    code = NVML_ERROR_UNKNOWN


_ERROR_CLASSES: dict[int, type[NVMLError]] = {
    c.code: c
    for c in (
        NVMLError_Uninitialized,
        NVMLError_InvalidArgument,
        NVMLError_NotSupported,
        NVMLError_NoPermission,
        NVMLError_NotFound,
        NVMLError_DriverNotLoaded,
        NVMLError_LibraryNotFound,
        NVMLError_FunctionNotFound,
        NVMLError_GpuIsLost,
        NVMLError_Unknown,
    )
}


class FakeClock:
    """Seconds that pass only when told to: by NVML calls, ``sleep``, or ``run_for``.

    ``wait`` is the sensor's pause between power samples (its ``wait`` attribute). It steps
    time forward only up to a horizon that ``run_for`` sets, then parks until the window is
    closed or the horizon moves, so a sampler thread's samples land at the same fake instants
    on every run.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._horizon = start
        self._epoch = 0
        self._parked_epoch = -1
        self._interrupted = False
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance_to(self, t: float) -> None:
        with self._cond:
            if t < self._now:
                raise ValueError(f"fake clock is at {self._now} s, cannot go back to {t} s")
            self._now = t
            self._cond.notify_all()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._cond:
            while not event.is_set():
                if self._now + seconds <= self._horizon:
                    self._now += seconds
                    self._cond.notify_all()
                    return False
                self._parked_epoch = self._epoch
                self._cond.notify_all()
                self._cond.wait(0.05)
            return True

    def interrupt(self) -> None:
        """End a ``run_for`` early: a scripted fault may have killed the sampler thread."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def run_for(self, seconds: float, real_timeout_s: float = 10.0) -> None:
        """Let a sampler thread (which must be running) step time ``seconds`` forward."""
        deadline = time.monotonic() + real_timeout_s
        with self._cond:
            target = self._now + seconds
            self._horizon = target
            self._epoch += 1
            self._interrupted = False
            self._cond.notify_all()
            while self._parked_epoch != self._epoch and not self._interrupted:
                if time.monotonic() > deadline:
                    raise RuntimeError("run_for: no sampler thread reached the horizon")
                self._cond.wait(0.05)
            self._now = max(self._now, target)


@dataclass
class ScriptedError:
    """Raise NVML error ``code`` on the ``call``-th call (1-based) of ``function``."""

    function: str
    call: int
    code: int = NVML_ERROR_GPU_IS_LOST


@dataclass
class Faults:
    """What should go wrong, on purpose."""

    init_error: int | None = None
    shutdown_error: bool = False
    errors: list[ScriptedError] = field(default_factory=list)
    #: NVML index -> time at which that board's energy counter restarts from zero.
    counter_reset_at_s: dict[int, float] = field(default_factory=dict)
    #: NVML index -> PIDs of compute processes on that board.
    processes: dict[int, list[int]] = field(default_factory=dict)
    no_energy_counter: bool = False
    no_instant_field: bool = False
    #: Functions that raise NVMLError_FunctionNotFound (an old driver lacks the symbol).
    function_not_found: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class FakeHandle:
    nvml_index: int


@dataclass
class FieldNumber:
    """nvmlValue_t: the member named by the field's valueType holds the number."""

    dVal: float = 0.0
    uiVal: int = 0
    ulVal: int = 0
    ullVal: int = 0
    sllVal: int = 0
    siVal: int = 0
    usVal: int = 0


@dataclass
class FieldValue:
    """nvmlFieldValue_t."""

    fieldId: int
    scopeId: int = 0
    timestamp: int = 0
    latencyUsec: int = 0
    valueType: int = 0
    nvmlReturn: int = NVML_SUCCESS
    value: FieldNumber = field(default_factory=FieldNumber)


@dataclass
class ProcessInfo:
    pid: int
    usedGpuMemory: int = 0


def load_trace(name_or_path: str | Path) -> dict[str, Any]:
    """A trace by file name under tests/data/, or by path."""
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists():
        path = DATA / path
    trace: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return trace


class _Device:
    """One board of the trace, read at fake times."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.columns: list[str] = spec["columns"]
        self.rows: list[list[float]] = spec["rows"]
        self.times = [row[0] for row in self.rows]

    def column(self, name: str, t: float) -> float:
        if t > self.times[-1] + 1.0:
            raise RuntimeError(f"fake NVML read at {t:.3f} s, past the trace's end")
        i = max(bisect.bisect_right(self.times, t) - 1, 0)
        return self.rows[i][self.columns.index(name)]


_PM = "nvmlDeviceGetPowerManagement"


class FakeNvml:
    """The module-like object that stands in for ``pynvml``."""

    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    NVML_VALUE_TYPE_UNSIGNED_INT = NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_DEVICE_ARCH_PASCAL = NVML_DEVICE_ARCH_PASCAL
    NVML_DEVICE_ARCH_VOLTA = NVML_DEVICE_ARCH_VOLTA
    NVML_DEVICE_ARCH_AMPERE = NVML_DEVICE_ARCH_AMPERE
    NVML_DEVICE_ARCH_HOPPER = NVML_DEVICE_ARCH_HOPPER
    NVML_FEATURE_DISABLED = NVML_FEATURE_DISABLED
    NVML_FEATURE_ENABLED = NVML_FEATURE_ENABLED
    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Unknown = NVMLError_Unknown

    def __init__(
        self,
        trace: dict[str, Any],
        clock: FakeClock | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.trace = trace
        self.clock = clock or FakeClock()
        self.faults = faults or Faults()
        self.devices = [_Device(spec) for spec in trace["devices"]]
        self.calls: Counter[str] = Counter()
        self.init_count = 0
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, function: str, needs_init: bool = True) -> float:
        """Count the call, raise scripted faults, advance the clock; the time of the read."""
        with self._lock:
            self.calls[function] += 1
            nth = self.calls[function]
        if needs_init and self.init_count <= 0:
            raise NVMLError_Uninitialized()
        if function in self.faults.function_not_found:
            raise NVMLError_FunctionNotFound()
        for scripted in self.faults.errors:
            if scripted.function == function and scripted.call == nth:
                self.clock.interrupt()
                raise NVMLError(scripted.code)
        t = self.clock.now()
        latency = self.trace.get("call_latency_s", {})
        self.clock.advance(float(latency.get(function, latency.get("default", 0.0))))
        return t

    def _device(self, handle: FakeHandle) -> _Device:
        if not isinstance(handle, FakeHandle) or handle.nvml_index >= len(self.devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[handle.nvml_index]

    def _spec(self, function: str, handle: FakeHandle, key: str) -> Any:
        self._call(function)
        value = self._device(handle).spec.get(key)
        if value is None:
            raise NVMLError_NotSupported()
        return value

    def energy_at(self, nvml_index: int, t: float) -> float:
        """The board's counter at time t, resets included (ground truth for tests too)."""
        device = self.devices[nvml_index]
        energy = device.column("energy_mj", t)
        reset = self.faults.counter_reset_at_s.get(nvml_index)
        if reset is not None and t >= reset:
            energy -= device.column("energy_mj", reset)
        return energy

    # -- session -------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._call("nvmlInit", needs_init=False)
        if self.faults.init_error is not None:
            raise NVMLError(self.faults.init_error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self.init_count -= 1
        if self.faults.shutdown_error:
            raise NVMLError(NVML_ERROR_UNKNOWN)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        return str(self.trace["system"]["driver_version"])

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._call("nvmlSystemGetNVMLVersion")
        return str(self.trace["system"]["nvml_version"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._call("nvmlSystemGetCudaDriverVersion")
        return int(self.trace["system"]["cuda_driver_version"])

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._call("nvmlSystemGetCudaDriverVersion_v2")
        return int(self.trace["system"]["cuda_driver_version"])

    # -- identity ------------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeHandle:
        self._call("nvmlDeviceGetHandleByUUID")
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, device in enumerate(self.devices):
            if device.spec["uuid"] == text:
                return FakeHandle(i)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return str(self._spec("nvmlDeviceGetUUID", handle, "uuid"))

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return str(self._spec("nvmlDeviceGetName", handle, "name"))

    def nvmlDeviceGetVbiosVersion(self, handle: FakeHandle) -> str:
        return str(self._spec("nvmlDeviceGetVbiosVersion", handle, "vbios"))

    def nvmlDeviceGetArchitecture(self, handle: FakeHandle) -> int:
        return int(self._spec("nvmlDeviceGetArchitecture", handle, "architecture"))

    def nvmlDeviceGetPersistenceMode(self, handle: FakeHandle) -> int:
        return int(self._spec("nvmlDeviceGetPersistenceMode", handle, "persistence_mode"))

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        return list(self._spec("nvmlDeviceGetMigMode", handle, "mig_mode"))

    def nvmlDeviceGetEccMode(self, handle: FakeHandle) -> list[int]:
        return list(self._spec("nvmlDeviceGetEccMode", handle, "ecc_mode"))

    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeHandle) -> int:
        return int(self._spec("nvmlDeviceGetPowerManagementLimit", handle, "power_limit_mw"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        key = "enforced_power_limit_mw"
        return int(self._spec("nvmlDeviceGetEnforcedPowerLimit", handle, key))

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: FakeHandle) -> list[int]:
        key = "power_limit_constraints_mw"
        return [int(v) for v in self._spec(f"{_PM}LimitConstraints", handle, key)]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeHandle) -> int:
        key = "default_power_limit_mw"
        return int(self._spec(f"{_PM}DefaultLimit", handle, key))

    def _app_clock(self, function: str, handle: FakeHandle, key: str, clock_type: int) -> int:
        clocks = self._spec(function, handle, key)
        names = {NVML_CLOCK_SM: "sm", NVML_CLOCK_MEM: "mem"}
        if clock_type not in names:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return int(clocks[names[clock_type]])

    def nvmlDeviceGetApplicationsClock(self, handle: FakeHandle, clock_type: int) -> int:
        function, key = "nvmlDeviceGetApplicationsClock", "applications_clocks_mhz"
        return self._app_clock(function, handle, key, clock_type)

    def nvmlDeviceGetDefaultApplicationsClock(self, handle: FakeHandle, clock_type: int) -> int:
        function, key = "nvmlDeviceGetDefaultApplicationsClock", "default_applications_clocks_mhz"
        return self._app_clock(function, handle, key, clock_type)

    def nvmlDeviceGetAutoBoostedClocksEnabled(self, handle: FakeHandle) -> list[int]:
        """(enabled, enabled by default); NotSupported on most data-centre boards."""
        return [
            int(v)
            for v in self._spec("nvmlDeviceGetAutoBoostedClocksEnabled", handle, "auto_boost")
        ]

    def _pcie(self, function: str, handle: FakeHandle, key: str) -> int:
        return int(self._spec(function, handle, "pcie")[key])

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: FakeHandle) -> int:
        return self._pcie("nvmlDeviceGetCurrPcieLinkGeneration", handle, "gen_current")

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: FakeHandle) -> int:
        return self._pcie("nvmlDeviceGetCurrPcieLinkWidth", handle, "width_current")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: FakeHandle) -> int:
        return self._pcie("nvmlDeviceGetMaxPcieLinkGeneration", handle, "gen_max")

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: FakeHandle) -> int:
        return self._pcie("nvmlDeviceGetMaxPcieLinkWidth", handle, "width_max")

    # -- readings ------------------------------------------------------------------------

    def _has_counter(self, device: _Device) -> bool:
        return bool(device.spec.get("energy_counter")) and not self.faults.no_energy_counter

    def _has_instant(self, device: _Device) -> bool:
        return bool(device.spec.get("power_instant_field")) and not self.faults.no_instant_field

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        t = self._call("nvmlDeviceGetTotalEnergyConsumption")
        if not self._has_counter(self._device(handle)):
            raise NVMLError_NotSupported()
        return int(self.energy_at(handle.nvml_index, t))

    def nvmlDeviceGetFieldValues(
        self, handle: FakeHandle, field_ids: list[int | tuple[int, int]]
    ) -> list[FieldValue]:
        t = self._call("nvmlDeviceGetFieldValues")
        return [self._field(handle, fid, t) for fid in field_ids]

    def _field(self, handle: FakeHandle, fid: int | tuple[int, int], t: float) -> FieldValue:
        field_id, scope = fid if isinstance(fid, tuple) else (fid, 0)
        device = self._device(handle)
        out = FieldValue(field_id, scope, timestamp=math.floor(t * 1e6))
        if field_id == NVML_FI_DEV_POWER_INSTANT and self._has_instant(device):
            out.valueType = NVML_VALUE_TYPE_UNSIGNED_INT
            out.value.uiVal = int(device.column("power_instant_mw", t))
        elif field_id == NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION and self._has_counter(device):
            out.valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            out.value.ullVal = int(self.energy_at(handle.nvml_index, t))
        else:
            out.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
        return out

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        t = self._call("nvmlDeviceGetPowerUsage")
        return int(self._device(handle).column("power_instant_mw", t))

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        t = self._call("nvmlDeviceGetTemperature")
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return int(self._device(handle).column("temperature_c", t))

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        t = self._call("nvmlDeviceGetClockInfo")
        columns = {NVML_CLOCK_SM: "sm_clock_mhz", NVML_CLOCK_MEM: "mem_clock_mhz"}
        if clock_type not in columns:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return int(self._device(handle).column(columns[clock_type], t))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:
        t = self._call("nvmlDeviceGetCurrentClocksEventReasons")
        return int(self._device(handle).column("clocks_event_reasons", t))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:
        t = self._call("nvmlDeviceGetCurrentClocksThrottleReasons")
        return int(self._device(handle).column("clocks_event_reasons", t))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[ProcessInfo]:
        self._call("nvmlDeviceGetComputeRunningProcesses")
        pids = self.faults.processes.get(self._device(handle).spec["nvml_index"], [])
        return [ProcessInfo(pid) for pid in pids]
