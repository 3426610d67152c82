"""The sensor registry: built-in sensors by name, third-party ones by entry point or hook,
and ``auto`` selection (the first of :data:`AUTO_ORDER` that works here)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors.base import Provenance, Sensor, SensorOptions, WindowEnergy

__all__ = [
    "AUTO_ORDER",
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Provenance",
    "Selection",
    "Sensor",
    "SensorFactory",
    "SensorOptions",
    "WindowEnergy",
    "known_names",
    "select",
]

SensorFactory = Callable[[SensorOptions], Sensor]

ENTRY_POINT_GROUP = "pytest_tpw.sensors"

#: Built-in sensors, imported only when chosen so that loading the plugin stays cheap.
BUILTIN: dict[str, str] = {
    "nvml": "pytest_tpw.sensors.nvml:NvmlSensor",
    "rapl": "pytest_tpw.sensors.rapl:RaplSensor",
    "cpu-estimate": "pytest_tpw.sensors.cpu_estimate:CpuEstimateSensor",
    "sim": "pytest_tpw.sensors.sim:SimSensor",
    "dcgm-exporter": "pytest_tpw.sensors.dcgm_exporter:DcgmExporterSensor",
    "prometheus": "pytest_tpw.sensors.prometheus:PrometheusSensor",
    "amdsmi": "pytest_tpw.sensors.amdsmi:AmdSmiSensor",
    "gaudi": "pytest_tpw.sensors.gaudi:GaudiSensor",
    "intel-gpu": "pytest_tpw.sensors.intel_gpu:IntelGpuSensor",
    "jetson": "pytest_tpw.sensors.jetson:JetsonSensor",
    "apple": "pytest_tpw.sensors.apple:AppleSiliconSensor",
}

#: What ``--tpw-sensor auto`` tries, best first: the accelerators' own energy counters, then
#: a SoC's (Jetson's rails, Apple's energy model), then the CPU's RAPL counters, then the CPU
#: time estimate. ``sim`` and the remote sensors (they need a URL) are never chosen
#: automatically.
AUTO_ORDER = ("nvml", "amdsmi", "gaudi", "intel-gpu", "jetson", "apple", "rapl", "cpu-estimate")


@dataclass
class Selection:
    """The opened sensor and, for ``auto``, why the better ones were passed over."""

    sensor: Sensor
    skipped: dict[str, str] = field(default_factory=dict)


def _load_builtin(name: str) -> SensorFactory:
    module_name, _, attr = BUILTIN[name].partition(":")
    factory: SensorFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def _entry_point_factories() -> dict[str, Callable[[], SensorFactory]]:
    return {ep.name: ep.load for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_names(extra: Mapping[str, SensorFactory] | None = None) -> list[str]:
    """Every selectable sensor name: built-in, hook-registered and entry-point ones."""
    names = set(BUILTIN) | set(extra or {}) | set(_entry_point_factories())
    return ["auto", *sorted(names)]


def _factory(name: str, extra: Mapping[str, SensorFactory]) -> SensorFactory:
    if name in extra:
        return extra[name]
    if name in BUILTIN:
        return _load_builtin(name)
    plugins = _entry_point_factories()
    if name in plugins:
        return plugins[name]()
    allowed = ", ".join(known_names(extra))
    raise SensorUnavailable(f"unknown sensor {name!r}; choose one of: {allowed}")


def _open(name: str, options: SensorOptions, extra: Mapping[str, SensorFactory]) -> Sensor:
    try:
        factory = _factory(name, extra)
    except ImportError as exc:  # a sensor module or a plugin's entry point that cannot load
        raise SensorUnavailable(f"cannot import the {name!r} sensor: {exc}") from exc
    sensor = factory(options)
    sensor.open()
    return sensor


def select(
    name: str,
    options: SensorOptions,
    extra: Mapping[str, SensorFactory] | None = None,
    order: Iterable[str] = AUTO_ORDER,
) -> Selection:
    """Build and open the sensor called ``name`` (or the best available for ``auto``).

    Raises :class:`SensorUnavailable` when an explicitly named sensor cannot work here.
    """
    extra = dict(extra or {})
    if name != "auto":
        return Selection(_open(name, options, extra))
    skipped: dict[str, str] = {}
    for candidate in order:
        try:
            return Selection(_open(candidate, options, extra), skipped)
        except SensorUnavailable as exc:
            skipped[candidate] = str(exc)
    reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    raise SensorUnavailable(f"no sensor works here ({reasons})")


#: Sensors that read another machine's telemetry: they need ``--tpw-sensor-url``.
REMOTE = ("dcgm-exporter", "prometheus")


@dataclass
class Survey:
    """One sensor tried here: ``reason`` is None when it opened (then its provenance and
    the hardware it measures), else why it cannot work here."""

    name: str
    reason: str | None
    provenance: str = ""
    hardware: tuple[str, ...] = ()


def survey(
    options: SensorOptions, extra: Mapping[str, SensorFactory] | None = None
) -> list[Survey]:
    """Every known sensor opened once and closed, in ``auto``'s order first, then the rest:
    what ``pytest-tpw sensors`` prints. A remote sensor is only tried when ``options``
    has URLs."""
    extra = dict(extra or {})
    names = [n for n in known_names(extra) if n != "auto"]
    ordered = [n for n in AUTO_ORDER if n in names] + [n for n in names if n not in AUTO_ORDER]
    found: list[Survey] = []
    for name in ordered:
        if name in REMOTE and not options.urls:
            found.append(
                Survey(name, "reads another machine's telemetry: needs its URL (--tpw-sensor-url)")
            )
            continue
        try:
            sensor = _open(name, options, extra)
        except SensorUnavailable as exc:
            found.append(Survey(name, str(exc)))
            continue
        except Exception as exc:  # a third-party sensor that fails otherwise: say so
            found.append(Survey(name, f"{type(exc).__name__}: {exc}"))
            continue
        try:
            found.append(Survey(name, None, sensor.provenance, tuple(sensor.hardware())))
        finally:
            sensor.close()
    return found
