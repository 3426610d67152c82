"""A stand-in for ``pyzes`` (Intel's ctypes binding of Level Zero Sysman), from its shapes.

Install it with ``monkeypatch.setitem(sys.modules, "pyzes", FakePyzes(cards, clock))``.
What it mirrors (pyzes 0.1.3 ``pyzes/__init__.py``): every call returns a ``ze_result_t``
int and fills the structures passed by reference (``ctypes.byref``); enumerations take
``(…, uint32_t* pCount, handle* phX)``, first with ``phX=None`` for the count; handles are
``c_void_p`` subclasses; ``zes_power_energy_counter_t`` holds ``energy`` (microjoules,
monotonic uint64) and ``timestamp`` (microseconds). The structure layouts below are those
of pyzes 0.1.3 (the Level Zero spec's), so the sensor's ctypes calls run on real memory.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.energy_trace import Board

ZE_RESULT_SUCCESS = 0
ZE_RESULT_ERROR_DEVICE_LOST = 0x70000001
ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS = 0x70010000
ZE_RESULT_ERROR_UNINITIALIZED = 0x78000001
ZE_RESULT_ERROR_UNSUPPORTED_FEATURE = 0x78000003
ZE_RESULT_ERROR_INVALID_ARGUMENT = 0x78000004
ZE_RESULT_ERROR_INVALID_NULL_HANDLE = 0x78000005
ZE_DEVICE_TYPE_GPU = 1
ZE_DEVICE_TYPE_VPU = 5
ZES_POWER_DOMAIN_UNKNOWN = 0
ZES_POWER_DOMAIN_CARD = 1
ZES_POWER_DOMAIN_PACKAGE = 2
ZES_POWER_DOMAIN_STACK = 3
ZES_POWER_LEVEL_SUSTAINED = 1
ZES_POWER_LEVEL_PEAK = 3
ZES_LIMIT_UNIT_POWER = 2
ZES_FREQ_DOMAIN_GPU = 0
ZES_FREQ_DOMAIN_MEMORY = 1
ZES_TEMP_SENSORS_GLOBAL = 0
ZES_TEMP_SENSORS_MEMORY = 2

ze_bool_t = ctypes.c_uint8


class zes_driver_handle_t(ctypes.c_void_p):
    pass


class zes_device_handle_t(ctypes.c_void_p):
    pass


class zes_pwr_handle_t(ctypes.c_void_p):
    pass


class zes_freq_handle_t(ctypes.c_void_p):
    pass


class zes_temp_handle_t(ctypes.c_void_p):
    pass


class ze_device_uuid_t(ctypes.Structure):
    _fields_ = [("id", ctypes.c_ubyte * 16)]


class ze_device_properties_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("type", ctypes.c_int32),
        ("vendorId", ctypes.c_uint32),
        ("deviceId", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("subdeviceId", ctypes.c_uint32),
        ("coreClockRate", ctypes.c_uint32),
        ("maxMemAllocSize", ctypes.c_uint64),
        ("maxHardwareContexts", ctypes.c_uint32),
        ("maxCommandQueuePriority", ctypes.c_uint32),
        ("numThreadsPerEU", ctypes.c_uint32),
        ("physicalEUSimdWidth", ctypes.c_uint32),
        ("numEUsPerSubslice", ctypes.c_uint32),
        ("numSubslicesPerSlice", ctypes.c_uint32),
        ("numSlices", ctypes.c_uint32),
        ("timerResolution", ctypes.c_uint64),
        ("timestampValidBits", ctypes.c_uint32),
        ("kernelTimestampValidBits", ctypes.c_uint32),
        ("uuid", ze_device_uuid_t),
        ("name", ctypes.c_char * 256),
    ]


class zes_device_properties_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("core", ze_device_properties_t),
        ("numSubdevices", ctypes.c_uint32),
        ("serialNumber", ctypes.c_char * 64),
        ("boardNumber", ctypes.c_char * 64),
        ("brandName", ctypes.c_char * 64),
        ("modelName", ctypes.c_char * 64),
        ("vendorName", ctypes.c_char * 64),
        ("driverVersion", ctypes.c_char * 64),
    ]


class zes_power_properties_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("onSubdevice", ze_bool_t),
        ("subdeviceId", ctypes.c_uint32),
        ("canControl", ze_bool_t),
        ("isEnergyThresholdSupported", ze_bool_t),
        ("defaultLimit", ctypes.c_int32),
        ("minLimit", ctypes.c_int32),
        ("maxLimit", ctypes.c_int32),
    ]


class zes_power_limit_ext_desc_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("level", ctypes.c_int32),
        ("source", ctypes.c_int32),
        ("limitUnit", ctypes.c_int32),
        ("enabledStateLocked", ze_bool_t),
        ("enabled", ze_bool_t),
        ("intervalValueLocked", ze_bool_t),
        ("interval", ctypes.c_int32),
        ("limitValueLocked", ze_bool_t),
        ("limit", ctypes.c_int32),
    ]


class zes_power_ext_properties_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("domain", ctypes.c_int32),
        ("defaultLimit", ctypes.POINTER(zes_power_limit_ext_desc_t)),
    ]


class zes_power_energy_counter_t(ctypes.Structure):
    _fields_ = [("energy", ctypes.c_uint64), ("timestamp", ctypes.c_uint64)]


class zes_freq_properties_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("type", ctypes.c_int32),
        ("onSubdevice", ze_bool_t),
        ("subdeviceId", ctypes.c_uint32),
        ("canControl", ze_bool_t),
        ("isThrottleEventSupported", ze_bool_t),
        ("min", ctypes.c_double),
        ("max", ctypes.c_double),
    ]


class zes_freq_range_t(ctypes.Structure):
    _fields_ = [("min", ctypes.c_double), ("max", ctypes.c_double)]


class zes_freq_state_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("currentVoltage", ctypes.c_double),
        ("request", ctypes.c_double),
        ("tdp", ctypes.c_double),
        ("efficient", ctypes.c_double),
        ("actual", ctypes.c_double),
        ("throttleReasons", ctypes.c_uint32),
    ]


class zes_temp_properties_t(ctypes.Structure):
    _fields_ = [
        ("stype", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("type", ctypes.c_int32),
        ("onSubdevice", ze_bool_t),
        ("subdeviceId", ctypes.c_uint32),
        ("maxTemperature", ctypes.c_double),
        ("isCriticalTempSupported", ze_bool_t),
        ("isThreshold1Supported", ze_bool_t),
        ("isThreshold2Supported", ze_bool_t),
    ]


@dataclass
class ZesDomain:
    """One power domain of a card: the card, its package, or one tile."""

    board: Board = field(default_factory=lambda: Board(400.0, update_period_s=0.01))
    kind: int = ZES_POWER_DOMAIN_PACKAGE
    on_subdevice: bool = False
    subdevice: int = 0
    max_limit_mw: int = 600_000
    sustained_limit_mw: int = 500_000


@dataclass
class ZesCard:
    """One card as Sysman lists it."""

    model: str = "Intel(R) Data Center GPU Max 1550"
    uuid: bytes = bytes.fromhex("8680bd0b08000000000000000000a1b2")
    tiles: int = 0
    domains: list[ZesDomain] = field(default_factory=lambda: [ZesDomain()])
    device_type: int = ZE_DEVICE_TYPE_GPU
    temperature_c: float = 48.5
    frequency_mhz: float = 1600.0
    throttle_reasons: int = 0
    frequency_range_mhz: tuple[float, float] = (800.0, 1600.0)


def _target(arg: Any) -> Any:
    """What a ``byref``/``pointer`` argument points at (an array is passed as itself)."""
    if hasattr(arg, "_obj"):
        return arg._obj
    if hasattr(arg, "contents"):
        return arg.contents
    return arg


class FakePyzes:
    """The module-like object that stands in for ``pyzes``."""

    zes_driver_handle_t = zes_driver_handle_t
    zes_device_handle_t = zes_device_handle_t
    zes_pwr_handle_t = zes_pwr_handle_t
    zes_freq_handle_t = zes_freq_handle_t
    zes_temp_handle_t = zes_temp_handle_t
    zes_device_properties_t = zes_device_properties_t
    zes_power_properties_t = zes_power_properties_t
    zes_power_ext_properties_t = zes_power_ext_properties_t
    zes_power_limit_ext_desc_t = zes_power_limit_ext_desc_t
    zes_power_energy_counter_t = zes_power_energy_counter_t
    zes_freq_properties_t = zes_freq_properties_t
    zes_freq_range_t = zes_freq_range_t
    zes_freq_state_t = zes_freq_state_t
    zes_temp_properties_t = zes_temp_properties_t
    ZE_RESULT_SUCCESS = ZE_RESULT_SUCCESS
    ZE_RESULT_ERROR_DEVICE_LOST = ZE_RESULT_ERROR_DEVICE_LOST
    ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS = ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS
    ZE_RESULT_ERROR_UNINITIALIZED = ZE_RESULT_ERROR_UNINITIALIZED
    ZE_RESULT_ERROR_UNSUPPORTED_FEATURE = ZE_RESULT_ERROR_UNSUPPORTED_FEATURE
    ZE_RESULT_ERROR_INVALID_ARGUMENT = ZE_RESULT_ERROR_INVALID_ARGUMENT

    def __init__(
        self,
        cards: list[ZesCard],
        clock: Callable[[], float],
        *,
        init_result: int = ZE_RESULT_SUCCESS,
        ext_properties: bool = True,
    ) -> None:
        self.cards = cards
        self.clock = clock
        self.init_result = init_result
        self.ext_properties = ext_properties
        self.initialised = False
        self.calls: Counter[str] = Counter()
        #: function name -> ze_result_t it returns from now on
        self.errors: dict[str, int] = {}

    def _enter(self, function: str) -> int:
        self.calls[function] += 1
        if not self.initialised and function != "zesInit":
            return ZE_RESULT_ERROR_UNINITIALIZED
        return self.errors.get(function, ZE_RESULT_SUCCESS)

    def energy_uj_at(self, card: int, domain: int, t: float) -> int:
        """A domain's energy counter at fake time ``t`` (ground truth for tests)."""
        return self.cards[card].domains[domain].board.counts(t, 1e-6)

    @staticmethod
    def _fill(p_count: Any, handles: Any, values: list[Any], kind: type[ctypes.c_void_p]) -> None:
        count = _target(p_count)
        if handles is None:
            count.value = len(values)
            return
        n = min(int(count.value), len(values))
        for i in range(n):
            handles[i] = kind(values[i])
        count.value = n

    # handle values: device 0x1000 + card; others 0x10000 * kind + 0x100 * card + item
    def _card(self, handle: Any) -> ZesCard | None:
        value = int(handle.value or 0) - 0x1000
        return self.cards[value] if 0 <= value < len(self.cards) else None

    def _item(self, handle: Any, kind: int) -> tuple[int, int] | None:
        value = int(handle.value or 0) - 0x10000 * kind
        card, item = divmod(value, 0x100)
        return (card, item) if 0 <= card < len(self.cards) and value >= 0 else None

    # -- library -------------------------------------------------------------------------

    def zesInit(self, flags: int) -> int:
        self._enter("zesInit")
        if self.init_result == ZE_RESULT_SUCCESS:
            self.initialised = True
        return self.init_result

    def zesDriverGet(self, p_count: Any, ph_drivers: Any) -> int:
        result = self._enter("zesDriverGet")
        if result == ZE_RESULT_SUCCESS:
            self._fill(p_count, ph_drivers, [0x500], zes_driver_handle_t)
        return result

    def zesDeviceGet(self, h_driver: Any, p_count: Any, ph_devices: Any) -> int:
        result = self._enter("zesDeviceGet")
        if result == ZE_RESULT_SUCCESS:
            values = [0x1000 + i for i in range(len(self.cards))]
            self._fill(p_count, ph_devices, values, zes_device_handle_t)
        return result

    def zesDeviceGetProperties(self, h_device: Any, p_properties: Any) -> int:
        result = self._enter("zesDeviceGetProperties")
        card = self._card(h_device)
        if card is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        if result == ZE_RESULT_SUCCESS:
            props = _target(p_properties)
            props.core.type = card.device_type
            props.core.name = card.model.encode()
            props.core.uuid.id[:] = list(card.uuid)
            props.numSubdevices = card.tiles
            props.modelName = card.model.encode()
            props.vendorName = b"Intel(R) Corporation"
            props.driverVersion = b"1.6.32224.5"
        return result

    # -- power ---------------------------------------------------------------------------

    def zesDeviceEnumPowerDomains(self, h_device: Any, p_count: Any, ph_power: Any) -> int:
        result = self._enter("zesDeviceEnumPowerDomains")
        card = self._card(h_device)
        if card is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        if result == ZE_RESULT_SUCCESS:
            base = 0x10000 + 0x100 * self.cards.index(card)
            values = [base + i for i in range(len(card.domains))]
            self._fill(p_count, ph_power, values, zes_pwr_handle_t)
        return result

    def _domain(self, h_power: Any) -> ZesDomain | None:
        found = self._item(h_power, 1)
        if found is None or found[1] >= len(self.cards[found[0]].domains):
            return None
        return self.cards[found[0]].domains[found[1]]

    def zesPowerGetProperties(self, h_power: Any, p_properties: Any) -> int:
        result = self._enter("zesPowerGetProperties")
        domain = self._domain(h_power)
        if domain is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        props = _target(p_properties)
        if props.pNext:
            if not self.ext_properties:
                return ZE_RESULT_ERROR_UNSUPPORTED_FEATURE
            ext = ctypes.cast(props.pNext, ctypes.POINTER(zes_power_ext_properties_t)).contents
            ext.domain = domain.kind
        if result == ZE_RESULT_SUCCESS:
            props.onSubdevice = int(domain.on_subdevice)
            props.subdeviceId = domain.subdevice
            props.canControl = 1
            props.defaultLimit = domain.sustained_limit_mw
            props.minLimit = -1
            props.maxLimit = domain.max_limit_mw
        return result

    def zesPowerGetEnergyCounter(self, h_power: Any, p_energy: Any) -> int:
        result = self._enter("zesPowerGetEnergyCounter")
        domain = self._domain(h_power)
        if domain is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        if result == ZE_RESULT_SUCCESS:
            counter = _target(p_energy)
            t = self.clock()
            counter.energy = domain.board.counts(t, 1e-6)
            counter.timestamp = int(t * 1e6)
        return result

    def zesPowerGetLimitsExt(self, h_power: Any, p_count: Any, p_sustained: Any) -> int:
        result = self._enter("zesPowerGetLimitsExt")
        domain = self._domain(h_power)
        if domain is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        if result != ZE_RESULT_SUCCESS:
            return result
        limits = [
            (ZES_POWER_LEVEL_PEAK, domain.max_limit_mw),
            (ZES_POWER_LEVEL_SUSTAINED, domain.sustained_limit_mw),
        ]
        count = _target(p_count)
        if p_sustained is None:
            count.value = len(limits)
            return result
        for i, (level, limit) in enumerate(limits[: count.value]):
            p_sustained[i].level = level
            p_sustained[i].limitUnit = ZES_LIMIT_UNIT_POWER
            p_sustained[i].enabled = 1
            p_sustained[i].limit = limit
        return result

    # -- frequency and temperature ------------------------------------------------------------

    def zesDeviceEnumFrequencyDomains(self, h_device: Any, p_count: Any, ph_freq: Any) -> int:
        result = self._enter("zesDeviceEnumFrequencyDomains")
        card = self._card(h_device)
        if card is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        if result == ZE_RESULT_SUCCESS:
            base = 0x20000 + 0x100 * self.cards.index(card)
            self._fill(p_count, ph_freq, [base, base + 1], zes_freq_handle_t)  # memory, GPU
        return result

    def zesFrequencyGetProperties(self, h_freq: Any, p_properties: Any) -> int:
        result = self._enter("zesFrequencyGetProperties")
        found = self._item(h_freq, 2)
        if found is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        props = _target(p_properties)
        props.type = ZES_FREQ_DOMAIN_MEMORY if found[1] == 0 else ZES_FREQ_DOMAIN_GPU
        props.onSubdevice = 0
        return result

    def zesFrequencyGetState(self, h_freq: Any, p_state: Any) -> int:
        result = self._enter("zesFrequencyGetState")
        found = self._item(h_freq, 2)
        if found is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        card = self.cards[found[0]]
        state = _target(p_state)
        state.actual = card.frequency_mhz if found[1] == 1 else 3200.0
        state.throttleReasons = card.throttle_reasons
        return result

    def zesFrequencyGetRange(self, h_freq: Any, p_limits: Any) -> int:
        result = self._enter("zesFrequencyGetRange")
        found = self._item(h_freq, 2)
        if found is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        bounds = _target(p_limits)
        bounds.min, bounds.max = self.cards[found[0]].frequency_range_mhz
        return result

    def zesDeviceEnumTemperatureSensors(self, h_device: Any, p_count: Any, ph_temp: Any) -> int:
        result = self._enter("zesDeviceEnumTemperatureSensors")
        card = self._card(h_device)
        if card is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        if result == ZE_RESULT_SUCCESS:
            base = 0x30000 + 0x100 * self.cards.index(card)
            self._fill(p_count, ph_temp, [base, base + 1], zes_temp_handle_t)  # memory, global
        return result

    def zesTemperatureGetProperties(self, h_temp: Any, p_properties: Any) -> int:
        result = self._enter("zesTemperatureGetProperties")
        found = self._item(h_temp, 3)
        if found is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        props = _target(p_properties)
        props.type = ZES_TEMP_SENSORS_MEMORY if found[1] == 0 else ZES_TEMP_SENSORS_GLOBAL
        props.onSubdevice = 0
        return result

    def zesTemperatureGetState(self, h_temp: Any, p_temperature: Any) -> int:
        result = self._enter("zesTemperatureGetState")
        found = self._item(h_temp, 3)
        if found is None:
            return ZE_RESULT_ERROR_INVALID_NULL_HANDLE
        value = _target(p_temperature)
        value.value = self.cards[found[0]].temperature_c if found[1] == 1 else 70.0
        return result


def max_1550(uuid_tail: int = 0xB2, watts: float = 600.0) -> ZesCard:
    """A two-tile Data Center GPU Max 1550: a package domain and one per tile."""
    half = Board(watts / 2, update_period_s=0.01)
    return ZesCard(
        uuid=bytes.fromhex("8680bd0b0800000000000000000000") + bytes([uuid_tail]),
        tiles=2,
        domains=[
            ZesDomain(Board(watts, update_period_s=0.01), ZES_POWER_DOMAIN_PACKAGE),
            ZesDomain(half, ZES_POWER_DOMAIN_STACK, on_subdevice=True, subdevice=0),
            ZesDomain(
                Board(watts / 2, update_period_s=0.01),
                ZES_POWER_DOMAIN_STACK,
                on_subdevice=True,
                subdevice=1,
            ),
        ],
    )
