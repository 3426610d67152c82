"""A stand-in for ``pyhlml`` (PyPI ``habana-pyhlml``), built from its documented shapes.

Install it with ``monkeypatch.setitem(sys.modules, "pyhlml", FakeHlml(cards, clock))``.
What it mirrors (habana-pyhlml 1.24 ``pyhlml/main.py``, an NVML-like binding):

- ``hlmlInit()``, ``hlmlShutdown()``, ``hlmlDeviceGetCount()``,
  ``hlmlDeviceGetHandleByIndex(i)``; names, UUIDs and versions come back as ``bytes``;
- ``hlmlDeviceGetTotalEnergyConsumption(h)``: millijoules since the driver loaded (uint64);
  ``hlmlDeviceGetPowerUsage(h)`` and the power-limit calls: milliwatts;
- errors are ``HLMLError(code)`` (``str``: ``HLML Error with code N``); a library without
  ``libhlml.so`` fails ``hlmlInit`` with HLML_ERROR_UNINITIALIZED after printing
  ``Failed to load libhlml``; older releases lack some functions (``absent``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.energy_trace import Board

HLML_SUCCESS = 0
HLML_ERROR_UNINITIALIZED = 1
HLML_ERROR_INVALID_ARGUMENT = 2
HLML_ERROR_NOT_SUPPORTED = 3
HLML_ERROR_AIP_IS_LOST = 15


class HLMLError(Exception):
    """As pyhlml's: the code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"HLML Error with code {self.value}"


@dataclass
class GaudiCard:
    """One Gaudi device as HLML sees it."""

    name: str = "HL-325L"
    uuid: str = "01P0-HL3090A0-18-U4V193-22-07-00"
    module_id: int = 0
    board: Board = field(default_factory=lambda: Board(500.0, update_period_s=0.01))
    #: The power reading when it differs from the board's draw.
    reported_watts: float | None = None
    temperature_c: int = 40
    soc_clock_mhz: int = 1600
    throttle_reasons: int = 0
    power_limit_mw: int = 900_000
    default_limit_mw: int = 900_000
    limit_constraints_mw: tuple[int, int] = (100_000, 900_000)
    performance_state: int = 0


@dataclass(frozen=True)
class DeviceHandle:
    index: int


class FakeHlml:
    """The module-like object that stands in for ``pyhlml``."""

    HLMLError = HLMLError

    def __init__(
        self,
        cards: list[GaudiCard],
        clock: Callable[[], float],
        *,
        library_missing: bool = False,
        absent: set[str] | None = None,
    ) -> None:
        self.cards = cards
        self.clock = clock
        self.library_missing = library_missing
        self.absent = set(absent or ())
        self.initialised = 0
        self.calls: Counter[str] = Counter()
        self.errors: dict[str, int] = {}

    def __getattribute__(self, name: str) -> Any:
        if name in object.__getattribute__(self, "absent"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def _card(self, function: str, handle: DeviceHandle) -> GaudiCard:
        self.calls[function] += 1
        if self.initialised <= 0:
            raise HLMLError(HLML_ERROR_UNINITIALIZED)
        if function in self.errors:
            raise HLMLError(self.errors[function])
        if not isinstance(handle, DeviceHandle) or handle.index >= len(self.cards):
            raise HLMLError(HLML_ERROR_INVALID_ARGUMENT)
        return self.cards[handle.index]

    def energy_mj_at(self, index: int, t: float) -> int:
        """The total-energy counter at fake time ``t`` (ground truth for tests)."""
        return self.cards[index].board.counts(t, 1e-3)

    # -- library ---------------------------------------------------------------------------

    def hlmlInit(self) -> None:
        self.calls["hlmlInit"] += 1
        if self.library_missing:
            print("Failed to load libhlml")
            raise HLMLError(HLML_ERROR_UNINITIALIZED)
        self.initialised += 1

    def hlmlShutdown(self) -> None:
        self.calls["hlmlShutdown"] += 1
        self.initialised = 0

    def hlmlDeviceGetCount(self) -> int:
        self.calls["hlmlDeviceGetCount"] += 1
        if self.initialised <= 0:
            raise HLMLError(HLML_ERROR_UNINITIALIZED)
        return len(self.cards)

    def hlmlDeviceGetHandleByIndex(self, index: int) -> DeviceHandle:
        self._card("hlmlDeviceGetHandleByIndex", DeviceHandle(0))
        if not 0 <= index < len(self.cards):
            raise HLMLError(HLML_ERROR_INVALID_ARGUMENT)
        return DeviceHandle(index)

    def hlmlGetDriverVersion(self) -> bytes:
        return b"1.21.0-6c7d1a9"

    def hlmlGetHLMLVersion(self) -> bytes:
        return b"1.21.0"

    # -- identity --------------------------------------------------------------------------

    def hlmlDeviceGetName(self, handle: DeviceHandle) -> bytes:
        return self._card("hlmlDeviceGetName", handle).name.encode()

    def hlmlDeviceGetUUID(self, handle: DeviceHandle) -> bytes:
        return self._card("hlmlDeviceGetUUID", handle).uuid.encode()

    def hlmlDeviceGetModuleID(self, handle: DeviceHandle) -> int:
        return self._card("hlmlDeviceGetModuleID", handle).module_id

    # -- readings --------------------------------------------------------------------------

    def hlmlDeviceGetTotalEnergyConsumption(self, handle: DeviceHandle) -> int:
        self._card("hlmlDeviceGetTotalEnergyConsumption", handle)
        return self.energy_mj_at(handle.index, self.clock())

    def hlmlDeviceGetPowerUsage(self, handle: DeviceHandle) -> int:
        card = self._card("hlmlDeviceGetPowerUsage", handle)
        watts = (
            card.board.power_at(self.clock())
            if card.reported_watts is None
            else card.reported_watts
        )
        return round(watts * 1000)

    def hlmlDeviceGetTemperature(self, handle: DeviceHandle, sensor_type: int) -> int:
        card = self._card("hlmlDeviceGetTemperature", handle)
        if sensor_type not in (0, 1):
            raise HLMLError(HLML_ERROR_INVALID_ARGUMENT)
        return card.temperature_c

    def hlmlDeviceGetClockInfo(self, handle: DeviceHandle, clock_type: int = 0) -> int:
        return self._card("hlmlDeviceGetClockInfo", handle).soc_clock_mhz

    def hlmlDeviceGetCurrentClocksThrottleReasons(self, handle: DeviceHandle) -> int:
        return self._card("hlmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons

    def hlmlDeviceGetPowerManagementLimit(self, handle: DeviceHandle) -> int:
        return self._card("hlmlDeviceGetPowerManagementLimit", handle).power_limit_mw

    def hlmlDeviceGetPowerManagementDefaultLimit(self, handle: DeviceHandle) -> int:
        return self._card("hlmlDeviceGetPowerManagementDefaultLimit", handle).default_limit_mw

    def hlmlDeviceGetPowerManagementLimitConstraints(self, handle: DeviceHandle) -> tuple[int, int]:
        card = self._card("hlmlDeviceGetPowerManagementLimitConstraints", handle)
        return card.limit_constraints_mw

    def hlmlDeviceGetPerformanceState(self, handle: DeviceHandle) -> int:
        return self._card("hlmlDeviceGetPerformanceState", handle).performance_state
