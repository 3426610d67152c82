"""NVML access: the measured board (the stand-in in a dry run), read as a Rig; its identity."""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gpuval.common import Json
from gpuval.plan import Plan

SYNTHETIC_TRACE = "nvml_synthetic_h100.json"
POWER_INSTANT_FIELD = 186  # NVML_FI_DEV_POWER_INSTANT in nvml.h, for bindings that lack it
VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def import_pynvml() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module("pynvml")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class Rig:
    """One NVML board and the clock it is read on (the fake's clock in a dry run)."""

    nvml: Any
    handle: Any
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    fake: Any = None
    has_counter: bool = False
    has_field: bool = False

    def optional(self, function: str, *args: Any) -> Any:
        getter = getattr(self.nvml, function, None)
        if getter is None:
            return None
        try:
            return getter(*args)
        except Exception:
            return None

    def energy_mj(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def field_mw(self) -> float:
        nvml = self.nvml
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", POWER_INSTANT_FIELD)
        value = nvml.nvmlDeviceGetFieldValues(self.handle, [field_id])[0]
        if int(value.nvmlReturn) != 0:
            raise nvml.NVMLError(int(value.nvmlReturn))
        return float(getattr(value.value, VALUE_MEMBERS[int(value.valueType)]))

    def usage_mw(self) -> float:
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))

    def aux(self) -> list[int | None]:
        """temperature, SM clock, memory clock, clock-event reasons; None where unreadable."""
        nvml, h = self.nvml, self.handle
        values = [
            self.optional("nvmlDeviceGetTemperature", h, nvml.NVML_TEMPERATURE_GPU),
            self.optional("nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_SM),
            self.optional("nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_MEM),
            self.optional("nvmlDeviceGetCurrentClocksEventReasons", h)
            or self.optional("nvmlDeviceGetCurrentClocksThrottleReasons", h),
        ]
        return [None if v is None else int(v) for v in values]

    def probe(self) -> None:
        self.has_counter = _works(self.energy_mj)
        self.has_field = _works(self.field_mw)

    def configure(self, sensor: Any) -> None:
        """Point an NvmlSensor at this rig's clock (the fake's, in a dry run)."""
        if self.fake is not None:
            sensor.clock, sensor.sleep, sensor.wait = (
                self.fake.clock.now, self.fake.clock.sleep, self.fake.clock.wait)


def _works(read: Callable[[], Any]) -> bool:
    try:
        read()
    except Exception:
        return False
    return True


def _pick_handle(nvml: Any, uuid: str | None) -> Any:
    if uuid:
        with contextlib.suppress(Exception):
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
    return nvml.nvmlDeviceGetHandleByIndex(0)


@contextlib.contextmanager
def open_rig(plan: Plan, uuid: str | None = None, start_s: float = 0.0) -> Iterator[Rig]:
    """NVML opened on the measured board; in a dry run the stand-in replaying the synthetic
    H100 trace (installed as ``pynvml`` so that the plugin's sensor uses it too)."""
    previous = sys.modules.get("pynvml")
    if plan.dry:
        fakes = importlib.import_module("tests.fakes.fake_pynvml")
        clock = fakes.FakeClock(start_s)
        nvml: Any = fakes.FakeNvml(fakes.load_trace(SYNTHETIC_TRACE), clock)
        sys.modules["pynvml"] = nvml
        rig_clock, rig_sleep, fake = clock.now, clock.sleep, nvml
    else:
        nvml, rig_clock, rig_sleep, fake = import_pynvml(), time.perf_counter, time.sleep, None
    try:
        nvml.nvmlInit()
        try:
            rig = Rig(nvml, _pick_handle(nvml, uuid), rig_clock, rig_sleep, fake)
            rig.probe()
            yield rig
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
    finally:
        if plan.dry:
            if previous is None:
                sys.modules.pop("pynvml", None)
            else:
                sys.modules["pynvml"] = previous


def read_identity(rig: Rig) -> tuple[Json, Json]:
    """The trace's ``system`` and device identity, from the queries the sensor's describe() uses."""
    opt, h = rig.optional, rig.handle
    cuda = opt("nvmlSystemGetCudaDriverVersion_v2") or opt("nvmlSystemGetCudaDriverVersion")
    system = {"driver_version": _text(opt("nvmlSystemGetDriverVersion")),
              "cuda_driver_version": None if cuda is None else int(cuda),
              "nvml_version": _text(opt("nvmlSystemGetNVMLVersion"))}
    pci = opt("nvmlDeviceGetPciInfo", h)
    pcie = {key: opt(fn, h) for key, fn in (
        ("gen_current", "nvmlDeviceGetCurrPcieLinkGeneration"),
        ("width_current", "nvmlDeviceGetCurrPcieLinkWidth"),
        ("gen_max", "nvmlDeviceGetMaxPcieLinkGeneration"),
        ("width_max", "nvmlDeviceGetMaxPcieLinkWidth"))}
    device = {
        "nvml_index": 0,
        "name": _text(opt("nvmlDeviceGetName", h)) or "unknown GPU",
        "uuid": _text(opt("nvmlDeviceGetUUID", h)),
        "pci_bus_id": None if pci is None else _text(getattr(pci, "busId", None)),
        "vbios": _text(opt("nvmlDeviceGetVbiosVersion", h)),
        "architecture": _int_or_none(opt("nvmlDeviceGetArchitecture", h)),
        "power_limit_mw": _int_or_none(opt("nvmlDeviceGetPowerManagementLimit", h)),
        "enforced_power_limit_mw": _int_or_none(opt("nvmlDeviceGetEnforcedPowerLimit", h)),
        "persistence_mode": _int_or_none(opt("nvmlDeviceGetPersistenceMode", h)),
        "mig_mode": _pair(opt("nvmlDeviceGetMigMode", h)),
        "ecc_mode": _pair(opt("nvmlDeviceGetEccMode", h)),
        "pcie": {k: _int_or_none(v) for k, v in pcie.items()},
        "energy_counter": rig.has_counter,
        "power_instant_field": rig.has_field,
    }
    return system, device


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _pair(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]
