"""The ``amdsmi`` sensor: AMD Instinct and Radeon joules from the amdsmi energy accumulator.

Joules come from ``amdsmi_get_energy_count``: a 64-bit accumulator (``energy_accumulator``,
named ``power`` before amdsmi 6.2.1) times its ``counter_resolution`` (microjoules per count,
about 15.3, read with every value). The counter is checked at open, Zeus-style (a power read,
the counter polled for half a second, kept when ``0.1 < measured / expected < 10``); where it
is missing (virtual machine guests) or wrong, joules are integrated from
``current_socket_power`` (MI300 and newer), else ``average_socket_power`` (MI200 and
earlier: a running average, so the windows' edges blur by about a second).

Devices are this process's HIP devices: the physical GPUs (in HIP order where
``amdsmi_get_gpu_enumeration_info`` gives it, ROCm >= 6.4; else amdsmi's order), filtered by
``ROCR_VISIBLE_DEVICES`` and then ``HIP_VISIBLE_DEVICES`` (``CUDA_VISIBLE_DEVICES`` when HIP's
is unset, as HIP does). An MI250/MI250X is two dies: the even one reports the power of both
and the odd one about 0 W, so a lone odd die is measured through its even sibling, and an
odd die measured beside its sibling counts 0 J (no double counting).

``amdsmi`` is imported in :meth:`AmdSmiSensor.open`; it must match the installed ROCm
(>= 6.3), or its import fails (OSError, AttributeError, KeyError depending on the version).
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable, Mapping
from typing import Any

from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.counters import (
    INCLUDED,
    NO_POWER_W,
    CounterDevice,
    CounterSensor,
    env_text,
    one_line,
    optional_call,
    select_visible,
    uuid_matches,
    visible_entries,
    wanted_indices,
)

INSTALL = "pip install 'pytest-tpw[amd]'"
ROCR = "ROCR_VISIBLE_DEVICES"
HIP = "HIP_VISIBLE_DEVICES"
CUDA = "CUDA_VISIBLE_DEVICES"

#: amdsmi_status_t AMDSMI_STATUS_NOT_SUPPORTED.
_NOT_SUPPORTED = 2
#: Sentinels amdsmi leaves in unsupported members (its Python layer turns 0xFFFF into "N/A").
_UNSET = {0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}
#: Power values above this are microwatts (amdsmi 7.x power caps), below it watts.
_MICROWATTS_ABOVE = 100_000
#: ``average_socket_power`` is a running average over about this long (seconds).
AVERAGE_SPAN_S = 1.0


class AmdSmiUnreadable(Exception):
    """amdsmi returned something this sensor cannot read (a missing key...)."""


def _import_amdsmi() -> Any:
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # amdsmi prints when libamd_smi.so is absent
            return importlib.import_module("amdsmi")
    except ModuleNotFoundError as exc:
        raise SensorUnavailable(
            f"the amdsmi Python package is not installed ({exc}): {INSTALL}, then install "
            "the amdsmi package of your ROCm (>= 6.3), e.g. from /opt/rocm/share/amd_smi"
        ) from exc
    except (ImportError, OSError, AttributeError, KeyError) as exc:
        said = printed.getvalue().strip().replace("\n", " ")
        raise SensorUnavailable(
            f"import amdsmi failed ({type(exc).__name__}: {exc}"
            + (f"; it printed: {said}" if said else "")
            + "): libamd_smi.so is missing or does not match the amdsmi Python package. "
            "Install ROCm >= 6.3 with amd-smi-lib, set ROCM_PATH, and install the amdsmi "
            f"package of the same ROCm version ({INSTALL} brings one; it must match)"
        ) from exc


def number(value: Any) -> float | None:
    """An amdsmi reading as a number; None for "N/A", missing and sentinel values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value in _UNSET or value < 0:
        return None
    return float(value)


def watts(value: Any) -> float | None:
    """Watts from an amdsmi power figure, W or uW (the unit changed across versions)."""
    found = number(value)
    if found is None:
        return None
    return found / 1e6 if found > _MICROWATTS_ABOVE else found


def _version_text(version: Any) -> str | None:
    if isinstance(version, Mapping):
        keys = [k for k in ("year", "major", "minor", "release") if k in version]
        text = ".".join(str(version[k]) for k in keys)
        build = version.get("build")
        return f"{text} ({build})" if build not in (None, "") else (text or None)
    return None if version is None else str(version)


class AmdSmiSensor(CounterSensor):
    """AMD GPUs through amdsmi: the energy accumulator, else integrated socket power."""

    name = "amdsmi"
    vendor = "amdsmi"
    counter_method = (
        "amdsmi energy accumulator (amdsmi_get_energy_count: accumulator x counter_resolution)"
    )
    variables = (ROCR, HIP, CUDA)
    #: Until open() has seen the devices (it adds a power fallback where one is used).
    method = counter_method

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        self._amd: Any = None

    # -- vendor plumbing ------------------------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        base = getattr(self._amd, "AmdSmiException", None)
        found: tuple[type[BaseException], ...] = (AmdSmiUnreadable,)
        return (*found, base) if isinstance(base, type) else found

    def _optional(self, function: str, *args: Any) -> Any:
        return optional_call(self._amd, function, args, self._errors())

    def _start(self) -> list[CounterDevice]:
        amd = _import_amdsmi()
        try:
            amd.amdsmi_init()
        except (amd.AmdSmiException, OSError) as exc:
            raise SensorUnavailable(
                f"amdsmi could not start ({one_line(exc)}): no amdgpu driver is loaded here "
                "or this user cannot read it; check that `amd-smi list` works"
            ) from exc
        self._amd = amd
        return self._resolve()  # on failure open() shuts the library down (_stop)

    def _stop(self) -> None:
        if self._amd is not None:
            with contextlib.suppress(Exception):
                self._amd.amdsmi_shut_down()

    # -- devices --------------------------------------------------------------------------------

    def _resolve(self) -> list[CounterDevice]:
        amd = self._amd
        try:
            handles = list(amd.amdsmi_get_processor_handles())
            physical = [self._identify(i, handle) for i, handle in enumerate(handles)]
        except amd.AmdSmiException as exc:
            raise SensorUnavailable(f"amdsmi could not list the GPUs: {one_line(exc)}") from exc
        hip_order = all(isinstance(p["hip_id"], int) for p in physical)
        if hip_order:
            physical.sort(key=lambda p: int(p["hip_id"]))
        elif len(physical) > 1:
            self._notes.append(
                "HIP device indices were mapped to amdsmi devices in amdsmi's order "
                "(amdsmi_get_gpu_enumeration_info, ROCm >= 6.4, was not available); list "
                "GPU UUIDs in ROCR_VISIBLE_DEVICES to be sure the right GPU is measured"
            )
        visible = physical
        rocr = visible_entries(ROCR)
        if rocr is not None:
            visible = select_visible(rocr, visible, ROCR, _matches, what="GPU")
        hip_var = HIP if visible_entries(HIP) is not None else CUDA
        hip = visible_entries(hip_var)
        if hip is not None:
            visible = select_visible(hip, visible, hip_var, _matches, what="ROCr-visible GPU")
        indices = wanted_indices(self.options.devices, len(visible), env_text(self.variables))
        devices = [self._device(index, visible[index]) for index in indices]
        self._pair_dies(devices, physical)
        return devices

    def _identify(self, amd_index: int, handle: Any) -> dict[str, Any]:
        amd = self._amd
        asic = self._optional("amdsmi_get_gpu_asic_info", handle) or {}
        name = asic.get("market_name") if isinstance(asic, Mapping) else None
        enum = self._optional("amdsmi_get_gpu_enumeration_info", handle) or {}
        return {
            "amd_index": amd_index,
            "handle": handle,
            "uuid": str(amd.amdsmi_get_gpu_device_uuid(handle)),
            "name": str(name) if name not in (None, "", "N/A") else "AMD GPU",
            "hip_id": enum.get("hip_id") if isinstance(enum, Mapping) else None,
            "hip_uuid": enum.get("hip_uuid") if isinstance(enum, Mapping) else None,
        }

    def _device(self, index: int, gpu: dict[str, Any]) -> CounterDevice:
        handle = gpu["handle"]
        device = CounterDevice(
            index=index,
            name=gpu["name"],
            uuid=gpu["uuid"],
            where=f"amdsmi device {gpu['amd_index']}",
            read_counter=self._counter_reader(handle),
            counter_label="energy accumulator",
            handle=handle,
            extra={"amd_index": gpu["amd_index"], "hip_id": gpu["hip_id"]},
        )
        self._choose_power(device, handle)
        if device.read_counter is not None:
            try:
                device.read_counter()
            except self._errors() as exc:
                device.read_counter = None
                code = getattr(exc, "get_error_code", lambda: None)()
                hint = " (virtual machine guests have none)" if code == _NOT_SUPPORTED else ""
                why = one_line(exc)
                self._notes.append(
                    f"{device.label}: amdsmi_get_energy_count is not available{hint}: {why}"
                )
        device.max_power_w = self._max_power_w(handle)
        return device

    def _counter_reader(self, handle: Any) -> Callable[[], tuple[int, float]]:
        def read() -> tuple[int, float]:
            info = self._amd.amdsmi_get_energy_count(handle)
            counts = info.get("energy_accumulator", info.get("power"))
            resolution = number(info.get("counter_resolution"))
            if not isinstance(counts, int) or resolution is None or resolution <= 0:
                raise AmdSmiUnreadable(f"amdsmi_get_energy_count returned {info!r}")
            return counts, resolution * 1e-6  # microjoules per count

        return read

    def _choose_power(self, device: CounterDevice, handle: Any) -> None:
        """current_socket_power where reported (MI300+), else average_socket_power."""
        device.read_power_w = None
        info = self._optional("amdsmi_get_power_info", handle) or {}
        for key in ("current_socket_power", "average_socket_power"):
            if number(info.get(key)) is not None:
                device.read_power_w = self._power_reader(handle, key)
                device.power_label = key
                if key == "average_socket_power":
                    device.power_period_s = AVERAGE_SPAN_S
                return

    def _power_reader(self, handle: Any, key: str) -> Callable[[], float | None]:
        def read() -> float | None:
            return number(self._amd.amdsmi_get_power_info(handle).get(key))

        return read

    def _max_power_w(self, handle: Any) -> float | None:
        caps = self._optional("amdsmi_get_power_cap_info", handle)
        return watts(caps.get("max_power_cap")) if isinstance(caps, Mapping) else None

    def _pair_dies(self, devices: list[CounterDevice], physical: list[dict[str, Any]]) -> None:
        """MI250/MI250X: the even die reports both dies' power, the odd one ~0 W."""
        by_amd = {int(p["amd_index"]): p for p in physical}
        measured = {int(d.extra["amd_index"]): d for d in devices}
        for device in devices:
            amd_index = int(device.extra["amd_index"])
            if "MI250" not in device.name:
                continue
            if amd_index % 2 == 1 and self._reads_no_power(device):
                self._odd_die(device, amd_index, measured.get(amd_index - 1), by_amd)
            elif amd_index % 2 == 0 and "MI250" in str(by_amd.get(amd_index + 1, {}).get("name")):
                sibling = by_amd[amd_index + 1]
                if amd_index + 1 not in measured:
                    device.locks = (device.uuid, str(sibling["uuid"]))
                    device.window_warnings.append(
                        f"{device.label} is one die of an MI250: AMD reports the power of both "
                        f"dies on it, so its joules include amdsmi device {amd_index + 1}'s "
                        "(the other die), whatever runs there"
                    )

    def _reads_no_power(self, device: CounterDevice) -> bool:
        reading = self._power_or_none(device)
        return reading is None or reading < NO_POWER_W

    def _odd_die(
        self,
        device: CounterDevice,
        amd_index: int,
        sibling: CounterDevice | None,
        by_amd: Mapping[int, dict[str, Any]],
    ) -> None:
        if sibling is not None:
            device.source = INCLUDED
            device.included_in = sibling.domain
            device.read_counter = None
            self._notes.append(
                f"{device.label} is the odd die of an MI250, which reports about 0 W: its "
                f"energy is in {sibling.domain}'s reading (both dies), so it counts 0 J here"
            )
            return
        even = by_amd.get(amd_index - 1)
        if even is None:
            return
        handle = even["handle"]
        device.read_counter = self._counter_reader(handle)
        self._choose_power(device, handle)
        device.locks = (device.uuid, str(even["uuid"]))
        device.where = f"amdsmi device {amd_index}, read through device {amd_index - 1}"
        device.window_warnings.append(
            f"{device.label}: the odd die of an MI250 reports about 0 W, so both dies are "
            f"measured through amdsmi device {amd_index - 1}; whatever runs on that die "
            "is counted too"
        )
        self._notes.append(
            f"{device.label} is the odd die of an MI250 (it reads about 0 W alone); its "
            f"joules are the whole MI250's, read through amdsmi device {amd_index - 1}"
        )

    # -- state and description ------------------------------------------------------------------

    def _read_state(self, device: CounterDevice) -> dict[str, Any]:
        amd, handle = self._amd, device.handle
        temperature = None
        kinds = getattr(amd, "AmdSmiTemperatureType", None)
        metrics = getattr(amd, "AmdSmiTemperatureMetric", None)
        if kinds is not None and metrics is not None:
            temperature = number(
                self._optional("amdsmi_get_temp_metric", handle, kinds.HOTSPOT, metrics.CURRENT)
            )
        power = self._optional("amdsmi_get_power_info", handle) or {}
        return {
            "hotspot_temperature_c": temperature,
            "power_w": number(power.get(device.power_label)) if device.read_power_w else None,
        }

    def _describe_stack(self) -> dict[str, Any]:
        version = self._optional("amdsmi_get_lib_version")
        driver = None
        if self._devices:
            info = self._optional("amdsmi_get_gpu_driver_info", self._devices[0].handle)
            driver = info.get("driver_version") if isinstance(info, Mapping) else None
        return {
            "amdsmi_lib_version": _version_text(version),
            "amdsmi_package_version": getattr(self._amd, "__version__", None),
            "driver_version": None if driver is None else str(driver),
        }

    def _describe_device(self, device: CounterDevice) -> dict[str, Any]:
        info = self._optional("amdsmi_get_power_info", device.handle) or {}
        limit = watts(info.get("power_limit"))
        if limit is None:
            caps = self._optional("amdsmi_get_power_cap_info", device.handle)
            limit = watts(caps.get("power_cap")) if isinstance(caps, Mapping) else None
        level = self._optional("amdsmi_get_gpu_perf_level", device.handle)
        policy = None
        if isinstance(level, str) and level:
            policy = "perf level " + level.removeprefix("AMDSMI_DEV_PERF_LEVEL_").lower()
        return {
            "amd_index": device.extra.get("amd_index"),
            "hip_id": device.extra.get("hip_id"),
            "power_limit_w": limit,
            "clocks_policy": policy,
        }


def _matches(entry: str, gpu: dict[str, Any]) -> bool:
    """A ROCR/HIP visible-devices UUID entry against amdsmi's UUID or HIP's own."""
    hip_uuid = gpu.get("hip_uuid")
    if isinstance(hip_uuid, str) and hip_uuid and uuid_matches(entry, hip_uuid):
        return True
    return uuid_matches(entry, str(gpu["uuid"]))
