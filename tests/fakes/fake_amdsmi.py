"""A stand-in for the ``amdsmi`` Python package, built from its documented shapes.

Install it with ``monkeypatch.setitem(sys.modules, "amdsmi", FakeAmdSmi(gpus, clock))``.
What it mirrors (amdsmi 6.x/7.x ``amdsmi_interface.py``):

- ``amdsmi_get_energy_count(h)`` -> ``{"energy_accumulator", "counter_resolution",
  "timestamp"}``; the accumulator is named ``power`` before amdsmi 6.2.1
  (``legacy_energy_key=True``);
- ``amdsmi_get_power_info(h)`` -> ``socket_power``, ``current_socket_power`` (MI300+),
  ``average_socket_power`` (MI200 and earlier), voltages and ``power_limit``; unsupported
  members read ``"N/A"``; ``power_limit`` is W, or uW where ``power_limit_unit="uW"``
  (7.x preview documentation);
- ``amdsmi_get_power_cap_info(h)`` in microwatts; ``amdsmi_get_lib_version()`` as
  ``major/minor/release/build`` (``year/major/minor/release`` with ``lib_style="year"``);
- errors as ``AmdSmiLibraryException(code)`` under ``AmdSmiException``; a device without
  an energy counter (virtual machine guests) raises AMDSMI_STATUS_NOT_SUPPORTED (2).

Readings follow each GPU's :class:`~tests.fakes.energy_trace.Board` on the test's clock.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.energy_trace import Board

AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34

_INFO = {
    AMDSMI_STATUS_INVAL: "AMDSMI_STATUS_INVAL - Invalid parameters",
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_NO_PERM: "AMDSMI_STATUS_NO_PERM - Permission Denied",
    AMDSMI_STATUS_INIT_ERROR: "AMDSMI_STATUS_INIT_ERROR - Initialization error",
    AMDSMI_STATUS_NOT_INIT: "AMDSMI_STATUS_NOT_INIT - Device not initialized",
    AMDSMI_STATUS_DRIVER_NOT_LOADED: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
}


class AmdSmiException(Exception):
    """Base smi exception class (as amdsmi's)."""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        super().__init__(abs(err_code))
        self.err_code = abs(err_code)
        self.err_info = _INFO.get(self.err_code, "AMDSMI_STATUS_UNKNOWN_ERROR")

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_code(self) -> int:
        return self.err_code

    def get_error_info(self, detailed: bool = True) -> str:
        return self.err_info if detailed else self.err_info.split(" - ")[0]


class AmdSmiInitFlags(enum.IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1


class AmdSmiTemperatureType(enum.IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class AmdSmiTemperatureMetric(enum.IntEnum):
    CURRENT = 0
    MAX = 1


_InitFlags = AmdSmiInitFlags
_TemperatureType = AmdSmiTemperatureType
_TemperatureMetric = AmdSmiTemperatureMetric


@dataclass
class AmdGpu:
    """One GPU (or one die of an MI250) as amdsmi sees it."""

    name: str = "AMD Instinct MI300X"
    uuid: str = "a1ff74a1-0000-1000-80c1-3d0e5f7a9b01"
    board: Board = field(default_factory=Board)
    #: Microjoules per accumulator count (about 15.3 on Instinct boards).
    resolution_uj: float = 15.259
    energy_supported: bool = True
    current_power: bool = True
    average_power: bool = False
    #: The power reading, when it differs from the board's draw (an MI250's odd die: 0).
    reported_watts: float | None = None
    hip_id: int | None = None
    hip_uuid: str | None = None
    temperature_c: int = 55
    power_limit_w: int = 750
    max_power_cap_w: int = 750
    perf_level: str = "AMDSMI_DEV_PERF_LEVEL_AUTO"


@dataclass(frozen=True)
class ProcessorHandle:
    amd_index: int


class FakeAmdSmi:
    """The module-like object that stands in for ``amdsmi``."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    __version__ = "7.0.2"

    def __init__(
        self,
        gpus: list[AmdGpu],
        clock: Callable[[], float],
        *,
        legacy_energy_key: bool = False,
        lib_style: str = "release",
        power_limit_unit: str = "W",
        enumeration_info: bool = True,
        init_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self.clock = clock
        self.legacy_energy_key = legacy_energy_key
        self.lib_style = lib_style
        self.power_limit_unit = power_limit_unit
        self.enumeration_info = enumeration_info
        self.init_error = init_error
        self.initialised = 0
        self.calls: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        if name == "amdsmi_get_gpu_enumeration_info" and not object.__getattribute__(
            self, "enumeration_info"
        ):
            raise AttributeError(name)  # ROCm < 6.4 has no such function
        return object.__getattribute__(self, name)

    def _gpu(self, handle: ProcessorHandle, function: str) -> AmdGpu:
        self.calls[function] += 1
        if self.initialised <= 0:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        if not isinstance(handle, ProcessorHandle) or handle.amd_index >= len(self.gpus):
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        return self.gpus[handle.amd_index]

    def counts_at(self, amd_index: int, t: float) -> int:
        """The accumulator at fake time ``t`` (ground truth for tests)."""
        gpu = self.gpus[amd_index]
        return gpu.board.counts(t, gpu.resolution_uj * 1e-6)

    # -- library ---------------------------------------------------------------------------

    def amdsmi_init(self, flag: _InitFlags = _InitFlags.INIT_AMD_GPUS) -> None:
        self.calls["amdsmi_init"] += 1
        if self.init_error is not None:
            raise AmdSmiLibraryException(self.init_error)
        self.initialised += 1

    def amdsmi_shut_down(self) -> None:
        self.calls["amdsmi_shut_down"] += 1
        self.initialised -= 1

    def amdsmi_get_lib_version(self) -> dict[str, Any]:
        if self.lib_style == "year":
            return {"year": 24, "major": 6, "minor": 2, "release": 0}
        return {"major": 25, "minor": 5, "release": 1, "build": "7.0.2"}

    def amdsmi_get_processor_handles(self) -> list[ProcessorHandle]:
        self.calls["amdsmi_get_processor_handles"] += 1
        if self.initialised <= 0:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        return [ProcessorHandle(i) for i in range(len(self.gpus))]

    # -- identity --------------------------------------------------------------------------

    def amdsmi_get_gpu_device_uuid(self, handle: ProcessorHandle) -> str:
        return self._gpu(handle, "amdsmi_get_gpu_device_uuid").uuid

    def amdsmi_get_gpu_asic_info(self, handle: ProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_asic_info")
        return {
            "market_name": gpu.name,
            "vendor_id": "0x1002",
            "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "device_id": "0x74a1",
            "num_compute_units": 304,
            "target_graphics_version": "gfx942",
        }

    def amdsmi_get_gpu_enumeration_info(self, handle: ProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_enumeration_info")
        return {
            "drm_render": 128 + handle.amd_index,
            "drm_card": handle.amd_index,
            "hsa_id": handle.amd_index + 1,
            "hip_id": handle.amd_index if gpu.hip_id is None else gpu.hip_id,
            "hip_uuid": gpu.hip_uuid or "N/A",
        }

    def amdsmi_get_gpu_driver_info(self, handle: ProcessorHandle) -> dict[str, Any]:
        self._gpu(handle, "amdsmi_get_gpu_driver_info")
        return {"driver_name": "amdgpu", "driver_version": "6.10.5", "driver_date": "N/A"}

    # -- readings --------------------------------------------------------------------------

    def amdsmi_get_energy_count(self, handle: ProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_energy_count")
        if not gpu.energy_supported:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        t = self.clock()
        key = "power" if self.legacy_energy_key else "energy_accumulator"
        return {
            key: self.counts_at(handle.amd_index, t),
            "counter_resolution": gpu.resolution_uj,
            "timestamp": int(gpu.board.updated_at(t) * 1e9),
        }

    def _watts(self, gpu: AmdGpu) -> int:
        value = (
            gpu.board.power_at(self.clock()) if gpu.reported_watts is None else gpu.reported_watts
        )
        return round(value)

    def amdsmi_get_power_info(self, handle: ProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_power_info")
        watts = self._watts(gpu)
        limit = gpu.power_limit_w * (1_000_000 if self.power_limit_unit == "uW" else 1)
        return {
            "socket_power": watts,
            "current_socket_power": watts if gpu.current_power else "N/A",
            "average_socket_power": watts if gpu.average_power else "N/A",
            "gfx_voltage": "N/A",
            "soc_voltage": "N/A",
            "mem_voltage": "N/A",
            "power_limit": limit,
        }

    def amdsmi_get_power_cap_info(self, handle: ProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_power_cap_info")
        return {
            "power_cap": gpu.power_limit_w * 1_000_000,
            "default_power_cap": gpu.power_limit_w * 1_000_000,
            "dpm_cap": 2100,
            "min_power_cap": 0,
            "max_power_cap": gpu.max_power_cap_w * 1_000_000,
        }

    def amdsmi_get_temp_metric(
        self,
        handle: ProcessorHandle,
        sensor_type: _TemperatureType,
        metric: _TemperatureMetric,
    ) -> int:
        gpu = self._gpu(handle, "amdsmi_get_temp_metric")
        if not isinstance(sensor_type, _TemperatureType):
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        return gpu.temperature_c

    def amdsmi_get_gpu_perf_level(self, handle: ProcessorHandle) -> str:
        return self._gpu(handle, "amdsmi_get_gpu_perf_level").perf_level


def mi250(uuid_even: str, uuid_odd: str, watts: float = 500.0) -> list[AmdGpu]:
    """The two dies of one MI250X: the even one reports both dies' power (average_socket_power,
    as MI200 boards do), the odd one about 0 W."""
    name = "AMD Instinct MI250X"
    even = AmdGpu(name, uuid_even, Board(watts), current_power=False, average_power=True)
    odd = AmdGpu(
        name, uuid_odd, Board(0.0), current_power=False, average_power=True, reported_watts=0.0
    )
    return [even, odd]
