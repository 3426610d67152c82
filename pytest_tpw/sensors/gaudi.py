"""The ``gaudi`` sensor: Intel Gaudi joules from HLML's total-energy counter.

Joules come from ``hlmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver
loaded, a 64-bit counter), checked at open Zeus-style against ``hlmlDeviceGetPowerUsage``
(milliwatts); where the counter does not advance, joules are integrated from that power
reading instead. pyhlml (PyPI ``habana-pyhlml``) mirrors NVML one to one; it is imported in
:meth:`GaudiSensor.open`.

Devices: ``HABANA_VISIBLE_MODULES`` (module ids, ``hlmlDeviceGetModuleID``) is the process's
selection; this process's device ``i`` is the ``i``-th visible module in module-id order.
``HABANA_VISIBLE_DEVICES`` is applied by the Habana container runtime, which mounts only the
listed devices: when HLML already sees no more devices than it lists it is not applied again;
outside such a container it filters HLML's device indices.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from collections.abc import Callable
from typing import Any

from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.counters import (
    CounterDevice,
    CounterSensor,
    env_text,
    optional_call,
    select_visible,
    visible_entries,
    wanted_indices,
)

INSTALL = "pip install 'pytest-tpw[gaudi]'"
MODULES = "HABANA_VISIBLE_MODULES"
DEVICES = "HABANA_VISIBLE_DEVICES"
#: HLML_TEMPERATURE_ON_AIP and HLML_CLOCK_SOC (pyhlml_types_generated).
_TEMPERATURE_ON_AIP = 0
_CLOCK_SOC = 0
#: HLML_PSTATE_UNKNOWN and above: no performance state to report.
_PSTATE_UNKNOWN = 32


def _import_pyhlml() -> Any:
    try:
        with warnings.catch_warnings():
            # pyhlml.hlml_types warns that it is deprecated on import (it breaks -W error)
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("pyhlml")
    except ImportError as exc:
        raise SensorUnavailable(
            f"the pyhlml package is not installed (import pyhlml failed: {exc}): {INSTALL} "
            "(PyPI habana-pyhlml; pick the version of your Gaudi software release)"
        ) from exc


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GaudiSensor(CounterSensor):
    """Intel Gaudi through HLML: the total-energy counter, else integrated power."""

    name = "gaudi"
    vendor = "HLML"
    counter_method = "HLML total-energy counter (hlmlDeviceGetTotalEnergyConsumption, mJ)"
    variables = (MODULES, DEVICES)
    #: Until open() has seen the devices (it adds a power fallback where one is used).
    method = counter_method

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        self._hlml: Any = None

    # -- vendor plumbing ------------------------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        error = getattr(self._hlml, "HLMLError", None)
        return (error,) if isinstance(error, type) else ()

    def _optional(self, function: str, *args: Any) -> Any:
        return optional_call(self._hlml, function, args, self._errors())

    def _start(self) -> list[CounterDevice]:
        hlml = _import_pyhlml()
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):  # "Failed to load libhlml"
                hlml.hlmlInit()
        except (hlml.HLMLError, OSError) as exc:
            said = printed.getvalue().strip()
            raise SensorUnavailable(
                f"HLML could not start ({exc}{'; ' + said if said else ''}): the habanalabs "
                "driver is not loaded or /usr/lib/habanalabs/libhlml.so is missing; check "
                "that `hl-smi` works"
            ) from exc
        self._hlml = hlml
        return self._resolve()  # on failure open() shuts the library down (_stop)

    def _stop(self) -> None:
        if self._hlml is not None:
            with contextlib.suppress(Exception):
                self._hlml.hlmlShutdown()

    # -- devices --------------------------------------------------------------------------------

    def _resolve(self) -> list[CounterDevice]:
        hlml = self._hlml
        try:
            cards = [self._identify(i) for i in range(hlml.hlmlDeviceGetCount())]
        except hlml.HLMLError as exc:
            raise SensorUnavailable(f"HLML could not list the Gaudi devices: {exc}") from exc
        cards = self._container_devices(cards)
        if all(card["module_id"] is not None for card in cards):
            cards.sort(key=lambda card: int(card["module_id"]))
        modules = visible_entries(MODULES)
        if modules and any(card["module_id"] is None for card in cards):
            raise SensorUnavailable(
                f"{MODULES}={','.join(modules)!r} is set but this pyhlml has no "
                "hlmlDeviceGetModuleID to map module ids to devices; install the habana-pyhlml "
                f"of your Gaudi software release ({INSTALL}) or unset {MODULES}"
            )
        if modules is not None:
            known = ", ".join(str(card["module_id"]) for card in cards)
            cards = select_visible(
                modules,
                cards,
                MODULES,
                lambda entry, card: entry == str(card["module_id"]),
                what="Gaudi module",
                numbers_are_indices=False,
                known=f"module ids {known}",
            )
        if len(cards) > 1:
            self._notes.append(
                "several Gaudi modules are visible: this process's device i was taken as "
                "the i-th visible module in module-id order; set HABANA_VISIBLE_MODULES to "
                "the module this process uses to be sure the right device is measured"
            )
        indices = wanted_indices(self.options.devices, len(cards), env_text(self.variables))
        return [self._device(index, cards[index]) for index in indices]

    def _identify(self, index: int) -> dict[str, Any]:
        hlml = self._hlml
        handle = hlml.hlmlDeviceGetHandleByIndex(index)
        module = self._optional("hlmlDeviceGetModuleID", handle)
        return {
            "index": index,
            "handle": handle,
            "name": _text(hlml.hlmlDeviceGetName(handle)),
            "uuid": _text(hlml.hlmlDeviceGetUUID(handle)),
            "module_id": None if module is None else int(module),
        }

    def _container_devices(self, cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entries = visible_entries(DEVICES)
        if entries is None or [e.lower() for e in entries] == ["all"]:
            return cards
        if len(cards) <= len(entries):
            self._notes.append(
                f"{DEVICES} lists {len(entries)} device(s) and HLML sees {len(cards)}: the "
                "container runtime already applied it, so it is not applied again"
            )
            return cards
        return select_visible(entries, cards, DEVICES, what="HLML device")

    def _device(self, index: int, card: dict[str, Any]) -> CounterDevice:
        handle = card["handle"]
        module = card["module_id"]
        where = f"HLML index {card['index']}" + ("" if module is None else f", module {module}")
        limits = self._optional("hlmlDeviceGetPowerManagementLimitConstraints", handle)
        top = limits[1] if isinstance(limits, tuple | list) and len(limits) == 2 else None
        if top is None:  # the most it can be set to draw: the top of its range, else default
            top = self._optional("hlmlDeviceGetPowerManagementDefaultLimit", handle)
        return CounterDevice(
            index=index,
            name=card["name"],
            uuid=card["uuid"],
            where=where,
            read_counter=self._counter_reader(handle),
            read_power_w=self._power_reader(handle),
            counter_label="total-energy counter",
            power_label="hlmlDeviceGetPowerUsage",
            max_power_w=None if top is None else float(top) / 1000.0,
            handle=handle,
            extra={"module_id": module, "hlml_index": card["index"]},
        )

    def _counter_reader(self, handle: Any) -> Callable[[], tuple[int, float]]:
        def read() -> tuple[int, float]:
            return int(self._hlml.hlmlDeviceGetTotalEnergyConsumption(handle)), 1e-3

        return read

    def _power_reader(self, handle: Any) -> Callable[[], float | None]:
        def read() -> float | None:
            return float(self._hlml.hlmlDeviceGetPowerUsage(handle)) / 1000.0

        return read

    # -- state and description ------------------------------------------------------------------

    def _read_state(self, device: CounterDevice) -> dict[str, Any]:
        handle = device.handle
        temperature = self._optional("hlmlDeviceGetTemperature", handle, _TEMPERATURE_ON_AIP)
        power = self._optional("hlmlDeviceGetPowerUsage", handle)
        clock = self._optional("hlmlDeviceGetClockInfo", handle, _CLOCK_SOC)
        reasons = self._optional("hlmlDeviceGetCurrentClocksThrottleReasons", handle)
        return {
            "temperature_c": None if temperature is None else int(temperature),
            "power_w": None if power is None else float(power) / 1000.0,
            "soc_clock_mhz": None if clock is None else int(clock),
            "throttle_reasons_mask": None if reasons is None else int(reasons),
        }

    def _describe_stack(self) -> dict[str, Any]:
        driver = self._optional("hlmlGetDriverVersion")
        version = self._optional("hlmlGetHLMLVersion")
        return {
            "driver_version": None if driver is None else _text(driver),
            "hlml_version": None if version is None else _text(version),
        }

    def _describe_device(self, device: CounterDevice) -> dict[str, Any]:
        handle = device.handle
        limit = self._optional("hlmlDeviceGetPowerManagementLimit", handle)
        if limit is None:
            limit = self._optional("hlmlDeviceGetPowerManagementDefaultLimit", handle)
        state = self._optional("hlmlDeviceGetPerformanceState", handle)
        policy = None
        if state is not None and 0 <= int(state) < _PSTATE_UNKNOWN:
            policy = f"performance state P{int(state)}"
        return {
            "module_id": device.extra.get("module_id"),
            "hlml_index": device.extra.get("hlml_index"),
            "power_limit_w": None if limit is None else float(limit) / 1000.0,
            "clocks_policy": policy,
        }
