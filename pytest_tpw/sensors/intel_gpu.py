"""The ``intel-gpu`` sensor: Intel Data Center and Arc GPU joules from Level Zero Sysman.

Joules come from ``zesPowerGetEnergyCounter`` on the device's power domain (``energy`` in
microjoules, a monotonic 64-bit counter), read through pyzes, Intel's ctypes binding of the
Sysman API (calls return a ``ze_result_t``, results are filled into structures passed by
reference). The card's domain is preferred, else its package; a tile (sub-device) selected
by ``ZE_AFFINITY_MASK`` is read from its own domain where the device has one. Sysman has no
instant-power reading, so a counter that does not advance at open cannot be replaced: the
sensor refuses.

Devices: Sysman lists the physical cards. This process's devices follow
``ZE_FLAT_DEVICE_HIERARCHY`` (FLAT, the default: every tile of a multi-tile card is a
device; COMPOSITE/COMBINED: every card is) and then ``ZE_AFFINITY_MASK`` (``N`` in FLAT
mode, ``N`` or ``N.M`` card.tile otherwise). Cards are assumed to be numbered alike by the
compute runtime and by Sysman (both enumerate in PCI order).
"""

from __future__ import annotations

import ctypes
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.counters import (
    CounterDevice,
    CounterSensor,
    env_text,
    visible_entries,
    wanted_indices,
)

INSTALL = "pip install 'pytest-tpw[intel-gpu]'"
AFFINITY = "ZE_AFFINITY_MASK"
HIERARCHY = "ZE_FLAT_DEVICE_HIERARCHY"

#: Constants of the Level Zero Sysman headers (the same in pyzes 0.1.3).
ZE_RESULT_SUCCESS = 0
ZE_DEVICE_TYPE_GPU = 1
ZES_POWER_DOMAIN_CARD = 1
ZES_POWER_DOMAIN_PACKAGE = 2
ZES_POWER_LEVEL_SUSTAINED = 1
ZES_LIMIT_UNIT_POWER = 2
ZES_FREQ_DOMAIN_GPU = 0
ZES_TEMP_SENSORS_GLOBAL = 0
ZES_TEMP_SENSORS_GPU = 1
ZES_STRUCTURE_TYPE_POWER_PROPERTIES = 0xD
ZES_STRUCTURE_TYPE_POWER_EXT_PROPERTIES = 0x28
ZES_STRUCTURE_TYPE_FREQ_PROPERTIES = 0x9
ZES_STRUCTURE_TYPE_FREQ_STATE = 0x1B
ZES_STRUCTURE_TYPE_TEMP_PROPERTIES = 0x14
_DOMAIN_NAMES = {0: "unknown", 1: "card", 2: "package", 3: "stack", 4: "memory", 5: "gpu"}
_DOMAIN_PREFERENCE = (ZES_POWER_DOMAIN_CARD, ZES_POWER_DOMAIN_PACKAGE)


class ZesCallError(Exception):
    """A Sysman call returned something other than ZE_RESULT_SUCCESS."""

    def __init__(self, function: str, code: int, name: str) -> None:
        super().__init__(f"{function} returned {name} (0x{code:08X})")
        self.function, self.code = function, code


def _import_pyzes() -> Any:
    try:
        return importlib.import_module("pyzes")
    except ModuleNotFoundError as exc:
        raise SensorUnavailable(f"the pyzes package is not installed ({exc}): {INSTALL}") from exc
    except Exception as exc:  # OSError on Linux, a bare Exception on Windows
        raise SensorUnavailable(
            f"import pyzes failed ({type(exc).__name__}: {exc}): pyzes loads the Level Zero "
            "loader when imported (on Linux from /usr/lib/x86_64-linux-gnu/libze_loader.so.1); "
            "install the Level Zero loader and Intel's GPU compute runtime (libze1 and "
            "libze-intel-gpu1, or level-zero and intel-level-zero-gpu)"
        ) from exc


@dataclass
class _Domain:
    handle: Any
    on_subdevice: bool
    subdevice: int
    kind: int | None
    max_limit_mw: int


@dataclass
class _Card:
    index: int
    handle: Any
    name: str
    uuid: str
    tiles: int


class IntelGpuSensor(CounterSensor):
    """Intel GPUs through Level Zero Sysman: the power domain's energy counter."""

    name = "intel-gpu"
    vendor = "Level Zero Sysman"
    counter_method = "Level Zero Sysman energy counter (zesPowerGetEnergyCounter, uJ)"
    variables = (AFFINITY, HIERARCHY)
    #: Until open() has seen the devices (it adds a power fallback where one is used).
    method = counter_method

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        self._zes: Any = None
        self._driver_version: str | None = None

    # -- vendor plumbing ------------------------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (ZesCallError,)

    def _result_name(self, code: int) -> str:
        for name in dir(self._zes):
            if name.startswith("ZE_RESULT_") and getattr(self._zes, name, None) == code:
                return name
        return "an unknown ze_result_t"

    def _call(self, function: str, *args: Any) -> None:
        code = int(getattr(self._zes, function)(*args))
        if code != ZE_RESULT_SUCCESS:
            raise ZesCallError(function, code, self._result_name(code))

    def _list(self, function: str, handle_type: Any, *args: Any) -> list[Any]:
        """The handles an ``(…, uint32_t* pCount, handle* phX)`` enumeration returns."""
        count = ctypes.c_uint32(0)
        self._call(function, *args, ctypes.byref(count), None)
        if count.value == 0:
            return []
        handles = (handle_type * count.value)()
        self._call(function, *args, ctypes.byref(count), handles)
        return [handles[i] for i in range(count.value)]

    def _start(self) -> list[CounterDevice]:
        zes = _import_pyzes()
        self._zes = zes
        try:
            self._call("zesInit", 0)
        except ZesCallError as exc:
            self._zes = None
            raise SensorUnavailable(
                f"Level Zero Sysman could not start ({exc}): no Intel GPU driver is loaded "
                "here, or this user cannot read its telemetry (render group); check that "
                "`xpu-smi discovery` or `sycl-ls` sees the GPU"
            ) from exc
        try:
            return self._resolve()
        except ZesCallError as exc:
            self._zes = None
            raise SensorUnavailable(f"Level Zero Sysman could not list the GPUs: {exc}") from exc
        except BaseException:
            self._zes = None
            raise

    def _stop(self) -> None:
        """pyzes has no shutdown call: Sysman lives as long as the process."""

    # -- devices --------------------------------------------------------------------------------

    def _resolve(self) -> list[CounterDevice]:
        zes = self._zes
        cards: list[_Card] = []
        for driver in self._list("zesDriverGet", zes.zes_driver_handle_t):
            for handle in self._list("zesDeviceGet", zes.zes_device_handle_t, driver):
                card = self._identify(len(cards), handle)
                if card is not None:
                    cards.append(card)
        units = self._process_devices(cards)
        indices = wanted_indices(self.options.devices, len(units), env_text(self.variables))
        return [self._device(index, *units[index]) for index in indices]

    def _identify(self, index: int, handle: Any) -> _Card | None:
        props = self._zes.zes_device_properties_t()
        self._call("zesDeviceGetProperties", handle, ctypes.byref(props))
        if int(props.core.type) != ZE_DEVICE_TYPE_GPU:
            return None
        model = props.modelName.decode(errors="replace").strip()
        core_name = props.core.name.decode(errors="replace").strip()
        raw = bytes(props.core.uuid.id)
        text = raw.hex()
        uuid = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
        version = props.driverVersion.decode(errors="replace").strip()
        if version and self._driver_version is None:
            self._driver_version = version
        return _Card(
            index, handle, model or core_name or "Intel GPU", uuid, int(props.numSubdevices)
        )

    def _process_devices(self, cards: list[_Card]) -> list[tuple[_Card, int | None]]:
        """(card, tile) per device of this process, in its order; tile None: whole card."""
        flat = os.environ.get(HIERARCHY, "FLAT").strip().upper() == "FLAT"
        units: list[tuple[_Card, int | None]] = []
        for card in cards:
            if flat and card.tiles > 1:
                units.extend((card, tile) for tile in range(card.tiles))
            else:
                units.append((card, None))
        entries = visible_entries(AFFINITY)
        if entries is None:
            return units
        chosen: list[tuple[_Card, int | None]] = []
        for entry in entries:
            unit = self._affinity_unit(entry, units, cards, flat)
            if unit not in chosen:
                chosen.append(unit)
        return chosen

    def _affinity_unit(
        self,
        entry: str,
        units: list[tuple[_Card, int | None]],
        cards: list[_Card],
        flat: bool,
    ) -> tuple[_Card, int | None]:
        parts = entry.split(".")
        ok = all(part.isdigit() for part in parts) and len(parts) <= (1 if flat else 2)
        if ok and len(parts) == 1 and int(parts[0]) < len(units):
            return units[int(parts[0])]
        if ok and len(parts) == 2 and int(parts[0]) < len(cards):
            card = cards[int(parts[0])]
            if int(parts[1]) < max(card.tiles, 1):
                return (card, int(parts[1]) if card.tiles > 1 else None)
        mode = "FLAT" if flat else os.environ.get(HIERARCHY, "COMPOSITE")
        raise SensorUnavailable(
            f"{AFFINITY}={os.environ.get(AFFINITY)!r} names {entry!r}, which matches none of "
            f"the {len(units)} device(s) here ({HIERARCHY}={mode}: indices "
            f"0..{len(units) - 1}"
            + ("" if flat else ", or card.tile")
            + f"); fix {AFFINITY} or unset it"
        )

    def _device(self, index: int, card: _Card, tile: int | None) -> CounterDevice:
        zes = self._zes
        domains = [
            self._domain(h)
            for h in self._list("zesDeviceEnumPowerDomains", zes.zes_pwr_handle_t, card.handle)
        ]
        where = f"Sysman device {card.index}" + ("" if tile is None else f", tile {tile}")
        device = CounterDevice(
            index=index,
            name=card.name,
            uuid=card.uuid,
            where=where,
            read_counter=None,
            counter_label="energy counter",
            handle=card.handle,
            extra={"card": card.index, "tile": tile},
        )
        chosen = self._choose_domains(device, domains, tile)
        if chosen:
            device.read_counter = self._counter_reader([d.handle for d in chosen])
            device.extra["domain"] = chosen[0].handle
            device.extra["power_domain"] = "+".join(self._domain_name(d) for d in chosen)
            limits = [d.max_limit_mw for d in chosen if d.max_limit_mw > 0]
            device.max_power_w = sum(limits) / 1000.0 if len(limits) == len(chosen) else None
        else:
            self._notes.append(f"{device.label}: Sysman lists no power domain for it")
        return device

    def _domain(self, handle: Any) -> _Domain:
        zes = self._zes
        ext = zes.zes_power_ext_properties_t()
        ext.stype = ZES_STRUCTURE_TYPE_POWER_EXT_PROPERTIES
        props = zes.zes_power_properties_t()
        props.stype = ZES_STRUCTURE_TYPE_POWER_PROPERTIES
        props.pNext = ctypes.cast(ctypes.pointer(ext), ctypes.c_void_p)
        kind: int | None = None
        try:
            self._call("zesPowerGetProperties", handle, ctypes.byref(props))
            kind = int(ext.domain)
        except ZesCallError:  # an older driver may refuse the extension structure
            props = zes.zes_power_properties_t()
            props.stype = ZES_STRUCTURE_TYPE_POWER_PROPERTIES
            self._call("zesPowerGetProperties", handle, ctypes.byref(props))
        return _Domain(
            handle, bool(props.onSubdevice), int(props.subdeviceId), kind, int(props.maxLimit)
        )

    def _domain_name(self, domain: _Domain) -> str:
        name = "domain" if domain.kind is None else _DOMAIN_NAMES.get(domain.kind, "domain")
        return f"tile {domain.subdevice} {name}" if domain.on_subdevice else name

    def _choose_domains(
        self, device: CounterDevice, domains: list[_Domain], tile: int | None
    ) -> list[_Domain]:
        whole = [d for d in domains if not d.on_subdevice]
        tiles = [d for d in domains if d.on_subdevice]
        if tile is not None:
            own = [d for d in tiles if d.subdevice == tile]
            if own:
                return own[:1]
            device.window_warnings.append(
                f"{device.label}: the card has no power domain for tile {tile} alone, so the "
                "whole card's energy (all its tiles) is counted"
            )
        if whole:
            ranked = sorted(
                whole,
                key=lambda d: (
                    _DOMAIN_PREFERENCE.index(d.kind) if d.kind in _DOMAIN_PREFERENCE else 9
                ),
            )
            return ranked[:1]
        if tiles:
            self._notes.append(
                f"{device.label}: no card-level power domain; the tiles' counters are summed"
            )
        return tiles

    def _counter_reader(self, handles: list[Any]) -> Callable[[], tuple[int, float]]:
        def read() -> tuple[int, float]:
            total = 0
            for handle in handles:
                counter = self._zes.zes_power_energy_counter_t()
                self._call("zesPowerGetEnergyCounter", handle, ctypes.byref(counter))
                total += int(counter.energy)
            return total, 1e-6  # microjoules

        return read

    # -- state and description ------------------------------------------------------------------

    def _optional(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except (ZesCallError, AttributeError):
            return None

    def _freq_domain(self, device: CounterDevice) -> Any:
        zes = self._zes
        tile = device.extra.get("tile")
        for handle in self._list(
            "zesDeviceEnumFrequencyDomains", zes.zes_freq_handle_t, device.handle
        ):
            props = zes.zes_freq_properties_t()
            props.stype = ZES_STRUCTURE_TYPE_FREQ_PROPERTIES
            self._call("zesFrequencyGetProperties", handle, ctypes.byref(props))
            if int(props.type) != ZES_FREQ_DOMAIN_GPU:
                continue
            if tile is None or not props.onSubdevice or int(props.subdeviceId) == tile:
                return handle
        return None

    def _temperature(self, device: CounterDevice) -> float | None:
        zes = self._zes
        for handle in self._list(
            "zesDeviceEnumTemperatureSensors", zes.zes_temp_handle_t, device.handle
        ):
            props = zes.zes_temp_properties_t()
            props.stype = ZES_STRUCTURE_TYPE_TEMP_PROPERTIES
            self._call("zesTemperatureGetProperties", handle, ctypes.byref(props))
            if (
                int(props.type) in (ZES_TEMP_SENSORS_GLOBAL, ZES_TEMP_SENSORS_GPU)
                and not props.onSubdevice
            ):
                value = ctypes.c_double(0.0)
                self._call("zesTemperatureGetState", handle, ctypes.byref(value))
                return float(value.value)
        return None

    def _read_state(self, device: CounterDevice) -> dict[str, Any]:
        freq = self._optional(lambda: self._freq_state(device))
        return {
            "temperature_c": self._optional(lambda: self._temperature(device)),
            "gpu_frequency_mhz": None if freq is None else freq[0],
            "throttle_reasons_mask": None if freq is None else freq[1],
        }

    def _freq_state(self, device: CounterDevice) -> tuple[float, int] | None:
        handle = self._freq_domain(device)
        if handle is None:
            return None
        state = self._zes.zes_freq_state_t()
        state.stype = ZES_STRUCTURE_TYPE_FREQ_STATE
        self._call("zesFrequencyGetState", handle, ctypes.byref(state))
        return float(state.actual), int(state.throttleReasons)

    def _describe_stack(self) -> dict[str, Any]:
        return {
            "driver_version": self._driver_version,
            "pyzes_version": _package_version("pyzes"),
        }

    def _describe_device(self, device: CounterDevice) -> dict[str, Any]:
        return {
            "card": device.extra.get("card"),
            "tile": device.extra.get("tile"),
            "power_domain": device.extra.get("power_domain"),
            "power_limit_w": self._optional(lambda: self._sustained_limit_w(device)),
            "clocks_policy": self._optional(lambda: self._clocks_policy(device)),
        }

    def _sustained_limit_w(self, device: CounterDevice) -> float | None:
        domain = device.extra.get("domain")
        if domain is None:
            return None
        zes = self._zes
        count = ctypes.c_uint32(0)
        self._call("zesPowerGetLimitsExt", domain, ctypes.byref(count), None)
        if count.value == 0:
            return None
        limits = (zes.zes_power_limit_ext_desc_t * count.value)()
        self._call("zesPowerGetLimitsExt", domain, ctypes.byref(count), limits)
        for limit in limits[: count.value]:
            sustained = int(limit.level) == ZES_POWER_LEVEL_SUSTAINED
            if sustained and limit.enabled and int(limit.limitUnit) == ZES_LIMIT_UNIT_POWER:
                return float(limit.limit) / 1000.0
        return None

    def _clocks_policy(self, device: CounterDevice) -> str | None:
        handle = self._freq_domain(device)
        if handle is None:
            return None
        bounds = self._zes.zes_freq_range_t()
        self._call("zesFrequencyGetRange", handle, ctypes.byref(bounds))
        low, high = float(bounds.min), float(bounds.max)
        locked = " (locked)" if low == high else ""
        return f"GPU frequency range {low:g}-{high:g} MHz{locked}"


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
