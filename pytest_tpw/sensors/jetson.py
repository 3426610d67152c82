"""The ``jetson`` sensor: NVIDIA Jetson module energy, integrated from its INA3221 rail power.

Jetson modules carry one or two TI INA3221 three-channel power monitors. They give POWER, not
energy: a sampling thread (:class:`~pytest_tpw.sensors.sampling.PowerSampler`) reads them while
a window is open and integrates by the trapezoidal rule. No ``jtop`` is needed: the rails are
plain sysfs files under ``/sys/bus/i2c/drivers`` (the same files Zeus reads), in one of two
layouts, found by their file names whatever the driver's name:

- JetPack >= 5 (``ina3221`` hwmon driver), ``<driver>/<bus-addr>/hwmon/hwmonN/``:
  ``in<N>_label`` (the rail's name, channels numbered from 1), ``in<N>_input`` (bus voltage,
  mV) and ``curr<N>_input`` (current, mA); power is their product. A ``power<N>_input`` file
  (hwmon ABI: microwatts) is used only where voltage and current are missing. ``in7_label``
  ("sum of shunt voltages") is the chip's summation channel, not a rail. ``update_interval``
  (ms) is the chip's refresh period.
- JetPack 4 (``ina3221x`` IIO driver), ``<driver>/<bus-addr>/iio:deviceN/``: ``rail_name_<N>``
  (channels from 0) and ``in_power<N>_input`` (mW), else ``in_voltage<N>_input`` (mV) x
  ``in_current<N>_input`` (mA).

What is summed, and why (the rails nest: the module's input feeds every other rail):

- when the module input rail is monitored (``VDD_IN``; ``POM_5V_IN`` on the Nano; ``5V_IN``
  as some guides name it), it alone is measured (domain ``soc:vdd-in``): it is the whole
  module, and CPU/GPU/SOC rails such as ``VDD_CPU_GPU_CV`` and ``VDD_SOC`` are parts of it.
  Carrier-board rails (``VDD_MUX``... on TX1/TX2) are outside the module and not counted;
- otherwise (AGX Xavier: ``GPU CPU SOC CV VDDRQ SYS5V``; AGX Orin: ``VDD_GPU_SOC VDD_CPU_CV
  VIN_SYS_5V0``) the rails are taken as disjoint and summed, except a rail known to be fed by
  another monitored one (AGX Orin's ``VDDQ_VDD2_1V8AO`` is fed by ``VIN_SYS_5V0``). That sum
  misses whatever the monitors do not see, and says so in ``describe()``.
- ``NC`` (not connected) channels are skipped. The rails not summed are still read at each
  window's edges into its state, to explain variance (CPU/GPU split), never into the joules.

The sysfs root, the device-tree model file and the L4T release file are attributes
(``sysfs_root``, ``model_path``, ``release_path``) that tests point at a fake tree.
"""

from __future__ import annotations

import platform
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import (
    Capabilities,
    Provenance,
    Sensor,
    SensorHealth,
    SensorOptions,
    WindowEnergy,
)
from pytest_tpw.sensors.sampling import PowerSampler, wait_event

#: Names the module's input rail goes by (the whole module: every other rail is part of it).
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "5V_IN")
#: Rails fed by another monitored rail: counting both would count the child twice.
NESTED_RAILS = {"VDDQ_VDD2_1V8AO": "VIN_SYS_5V0"}  # AGX Orin (Jetson developer guide)
#: No Jetson module draws this much on one rail (AGX Thor's module peaks near 130 W): a
#: reading above it is a misread file or a unit mistake, not power.
CEILING_W = 500.0

_I2C_DEVICE = re.compile(r"^\d+-[0-9a-fA-F]{4}$")
_HWMON_LABEL = re.compile(r"^in(\d+)_label$")
_IIO_LABEL = re.compile(r"^rail_name_(\d+)$")
_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def read_sysfs(path: Path) -> str:
    """The text of one sysfs file (the seam tests replace to simulate unreadable files)."""
    return path.read_text(encoding="ascii", errors="replace")


def _number(path: Path) -> float:
    return float(read_sysfs(path).strip())


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its name, where its files are, and how its power is read."""

    name: str
    chip: str
    channel: int
    directory: Path
    power: Path | None = None
    #: Watts per unit of the power file (hwmon: microwatts; IIO: milliwatts).
    power_scale: float = 1e-3
    voltage: Path | None = None
    current: Path | None = None
    domain: str = ""

    def watts(self) -> float:
        if self.voltage is not None and self.current is not None:
            return _number(self.voltage) * _number(self.current) / 1e6  # mV x mA = uW
        assert self.power is not None
        return _number(self.power) * self.power_scale

    @property
    def source(self) -> str:
        if self.voltage is not None and self.current is not None:
            return f"{self.voltage.name} (mV) x {self.current.name} (mA)"
        unit = "uW" if self.power_scale == 1e-6 else "mW"
        return f"{self.power.name if self.power else '?'} ({unit})"

    def describe(self, measured: bool, reason: str = "") -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "chip": self.chip,
            "channel": self.channel,
            "path": str(self.directory),
            "source": self.source,
            "measured": measured,
        }
        if measured:
            entry["domain"] = self.domain
        else:
            entry["reason"] = reason
        return entry


def _hwmon_rail(directory: Path, chip: str, channel: int, name: str) -> Rail | None:
    voltage, current = directory / f"in{channel}_input", directory / f"curr{channel}_input"
    if voltage.is_file() and current.is_file():
        return Rail(name, chip, channel, directory, voltage=voltage, current=current)
    power = directory / f"power{channel}_input"
    if power.is_file():
        return Rail(name, chip, channel, directory, power=power, power_scale=1e-6)
    return None


def _iio_rail(directory: Path, chip: str, channel: int, name: str) -> Rail | None:
    power = directory / f"in_power{channel}_input"
    if power.is_file():
        return Rail(name, chip, channel, directory, power=power, power_scale=1e-3)
    voltage = directory / f"in_voltage{channel}_input"
    current = directory / f"in_current{channel}_input"
    if voltage.is_file() and current.is_file():
        return Rail(name, chip, channel, directory, voltage=voltage, current=current)
    return None


def _rail_dirs(driver: Path) -> Iterator[tuple[str, Path]]:
    """(bus address, directory) of every place an INA3221's rail files may live: directly
    under a device's child (IIO: ``iio:device0``) or one deeper (hwmon: ``hwmon/hwmon3``).
    Symlinks inside a device (``driver``, ``subsystem``, ``of_node``) lead elsewhere."""
    for device in sorted(driver.iterdir()):
        if not _I2C_DEVICE.match(device.name) or not device.is_dir():
            continue
        for child in sorted(device.iterdir()):
            if child.is_symlink() or not child.is_dir():
                continue
            yield device.name, child
            for sub in sorted(child.glob("hwmon*")):
                if sub.is_dir() and not sub.is_symlink():
                    yield device.name, sub


def _labels(directory: Path) -> Iterator[tuple[int, str, str]]:
    """(channel, label file name, layout) of each labelled channel in one directory."""
    for path in sorted(directory.iterdir()):
        for pattern, layout in ((_HWMON_LABEL, "hwmon"), (_IIO_LABEL, "iio")):
            match = pattern.match(path.name)
            if match:
                yield int(match[1]), path.name, layout


def scan(drivers: Sequence[Path]) -> tuple[list[Rail], list[dict[str, Any]]]:
    """Every readable rail under the driver directories, and the channels skipped (why)."""
    rails: list[Rail] = []
    skipped: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for driver in drivers:
        for chip, directory in _rail_dirs(driver):
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            for channel, label_file, layout in _labels(directory):
                name = read_sysfs(directory / label_file).strip()
                where = {"name": name, "chip": chip, "channel": channel, "path": str(directory)}
                reason = _not_a_rail(name)
                rail = None
                if not reason:
                    reader = _hwmon_rail if layout == "hwmon" else _iio_rail
                    rail = reader(directory, chip, channel, name)
                    reason = "" if rail else "no power file, nor voltage and current files"
                if rail is None:
                    skipped.append({**where, "reason": reason})
                else:
                    rails.append(rail)
    return rails, skipped


def _not_a_rail(name: str) -> str:
    if not name or name.upper() == "NC":
        return "not connected (NC)"
    if name.lower().startswith("sum of"):
        return "the chip's summation channel, not a rail"
    return ""


def _domains(rails: Sequence[Rail]) -> list[Rail]:
    """The rails with their domain names (``soc:vdd-in``), unique even if a name repeats."""
    named: list[Rail] = []
    used: set[str] = set()
    for rail in rails:
        domain = "soc:" + rail.name.lower().replace("_", "-").replace(" ", "-")
        if domain in used:
            domain = f"{domain}-{rail.chip}"
        used.add(domain)
        named.append(replace(rail, domain=domain))
    return named


def choose(rails: Sequence[Rail]) -> tuple[list[Rail], list[tuple[Rail, str]], str]:
    """Split rails into measured and others (with the reason), and name the scope."""
    totals = [rail for rail in rails if rail.name.upper() in TOTAL_RAILS]
    if totals:
        total = totals[0]
        others = [
            (rail, f"part of {total.name}, the module's input rail, which is measured")
            for rail in rails
            if rail is not total
        ]
        return _domains([total]), others, f"module input ({total.name})"
    names = {rail.name.upper() for rail in rails}
    measured, others = [], []
    for rail in rails:
        parent = NESTED_RAILS.get(rail.name.upper())
        if parent is not None and parent in names:
            others.append((rail, f"fed by {parent}, which is measured"))
        else:
            measured.append(rail)
    listed = " + ".join(rail.name for rail in measured)
    return _domains(measured), others, f"sum of the monitored rails ({listed}), no input rail"


@dataclass
class _Window:
    """What ``begin`` started, for ``end``."""

    started: float
    sampler: PowerSampler
    others: dict[str, float | None] = field(default_factory=dict)


class JetsonSensor(Sensor):
    """NVIDIA Jetson: the module's INA3221 rail power, sampled on a thread and integrated."""

    name = "jetson"
    provenance: Provenance = "measured"
    method = "integrated INA3221 rail power (trapezoidal rule)"
    host_wide = True  # every process on the module reads the same rails

    #: Where the I2C drivers are, the device-tree model, and the L4T release file; tests
    #: point them at a fake tree.
    sysfs_root: Path = Path("/sys/bus/i2c/drivers")
    model_path: Path = Path("/proc/device-tree/model")
    release_path: Path = Path("/etc/nv_tegra_release")

    #: Interval of the power-sampling thread (seconds). The INA3221 refreshes every few ms
    #: (``update_interval``); 20 ms keeps the thread's GIL share small on a Jetson's CPU.
    sample_interval_s: float = 0.02
    #: A window holds at least this many power samples.
    samples_per_window: int = 20
    #: ...and lasts at least this many updates of the chip.
    updates_per_window: int = 10
    #: Longest time spent at open waiting for a non-zero power reading (seconds).
    poll_s: float = 0.5
    #: Pause between two such reads (seconds).
    poll_step_s: float = 0.01

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        #: Time source, sleep and event wait; tests point them at a fake clock.
        self.clock: Callable[[], float] = time.perf_counter
        self.sleep: Callable[[float], None] = time.sleep
        self.wait: Callable[[threading.Event, float], bool] = wait_event
        self._rails: list[Rail] = []
        self._others: list[tuple[Rail, str]] = []
        self._skipped: list[dict[str, Any]] = []
        self._scope = ""
        self._model = ""
        self._update_period_s: float | None = None
        self._advances: bool | None = None
        self._dropped = 0
        self._notes: list[str] = []
        self._open_window: _Window | None = None

    # -- session -------------------------------------------------------------------------

    def open(self) -> None:
        root = Path(self.sysfs_root)
        drivers = [root / name for name in ("ina3221", "ina3221x") if (root / name).is_dir()]
        if not drivers:
            raise SensorUnavailable(
                f"no INA3221 power monitor: neither {root}/ina3221 nor {root}/ina3221x exists "
                "(not an NVIDIA Jetson, or a Jetson without one, such as the Nano 2GB)"
            )
        try:
            rails, self._skipped = scan(drivers)
        except OSError as exc:
            raise SensorUnavailable(f"cannot read the INA3221 rails under {root}: {exc}") from exc
        if not rails:
            found = ", ".join(f"{s['name'] or '?'} ({s['reason']})" for s in self._skipped)
            raise SensorUnavailable(
                f"no readable INA3221 power rail under {', '.join(map(str, drivers))}"
                + (f" (found: {found})" if found else "")
            )
        self._rails, self._others, self._scope = choose(rails)
        self._check_power()
        self._update_period_s = self._read_update_period()
        self._model = self._read_model()
        names = ", ".join(rail.name for rail in self._rails)
        self.method = (
            f"integrated INA3221 rail power ({names}: {self._scope}), sampled every "
            f"{self.sample_interval_s * 1000:g} ms, trapezoidal rule"
        )
        if not self._scope.startswith("module input"):
            self._notes.append(
                "no module input rail (VDD_IN) is monitored here: the joules are the sum of "
                f"{names}, taken as disjoint; parts of the module no monitor sees are missing"
            )

    def close(self) -> None:
        window, self._open_window = self._open_window, None
        if window is not None:
            window.sampler.abandon()

    def domains(self) -> Sequence[str]:
        return tuple(rail.domain for rail in self._rails)

    def hardware(self) -> tuple[str, ...]:
        return (self._model,)

    def lock_ids(self) -> tuple[str, ...]:
        return ("jetson-module",)  # one module per host; every process reads its rails

    def capabilities(self) -> Capabilities:
        return Capabilities(self.lock_ids(), "device", True)

    def edge_error_s(self) -> float:
        """A reading at a window's edge may be one chip update old (or one sample interval,
        when the chip's refresh period is unknown)."""
        return self._update_period_s or self.sample_interval_s

    def min_window_s(self) -> float:
        return max(
            self.samples_per_window * self.sample_interval_s,
            self.updates_per_window * self.edge_error_s(),
        )

    def health(self) -> SensorHealth:
        return SensorHealth(
            counter_advances=self._advances,
            update_period_s=self._update_period_s,
            dropped_reads=self._dropped,
            notes=tuple(self._notes),
        )

    # -- open-time checks ----------------------------------------------------------------

    def _check_power(self) -> None:
        """The measured rails read, plausibly, and not all zero (a bounded wait)."""
        deadline = self.clock() + self.poll_s
        while True:
            readings = {rail.name: self._open_read(rail) for rail in self._rails}
            for rail in self._rails:
                watts = readings[rail.name]
                if not 0.0 <= watts <= CEILING_W:
                    raise SensorUnavailable(
                        f"INA3221 rail {rail.name} ({rail.directory}) reads {watts:g} W from "
                        f"{rail.source}: not a plausible power (0..{CEILING_W:g} W); "
                        "the driver's units differ from what this sensor assumes"
                    )
            if sum(readings.values()) > 0.0:
                self._advances = True
                return
            if self.clock() >= deadline:
                self._advances = False
                shown = ", ".join(f"{name} = 0 W" for name in readings)
                raise SensorUnavailable(
                    f"the INA3221 rails read no power for {self.poll_s:g} s ({shown}): the "
                    "monitor is not converting (check `cat` on the files, or tegrastats)"
                )
            self.sleep(self.poll_step_s)

    def _open_read(self, rail: Rail) -> float:
        try:
            return rail.watts()
        except PermissionError as exc:
            raise SensorUnavailable(
                f"cannot read INA3221 rail {rail.name} ({rail.source} in {rail.directory}): "
                f"{exc}; make the files readable (udev rule or chmod o+r) or run as root"
            ) from exc
        except (OSError, ValueError) as exc:
            raise SensorUnavailable(
                f"cannot use INA3221 rail {rail.name} ({rail.source} in {rail.directory}): {exc}"
            ) from exc

    def _read_update_period(self) -> float | None:
        """The longest ``update_interval`` (ms) of the measured rails' chips, in seconds."""
        periods = []
        for directory in {rail.directory for rail in self._rails}:
            try:
                periods.append(_number(directory / "update_interval") / 1000.0)
            except (OSError, ValueError):
                continue
        periods = [p for p in periods if p > 0]
        if not periods:
            self._notes.append(
                "the INA3221 refresh period is not exposed here (no update_interval file); "
                f"one sample interval ({self.sample_interval_s * 1000:g} ms) is assumed"
            )
            return None
        return max(periods)

    def _read_model(self) -> str:
        try:
            model = read_sysfs(Path(self.model_path)).replace("\x00", "").strip()
        except OSError:
            model = ""
        if not model:
            self._notes.append(f"the module's model could not be read from {self.model_path}")
            return "NVIDIA Jetson (unknown model)"
        return model

    # -- windows -------------------------------------------------------------------------

    def _watts(self, domain: str) -> float:
        return next(rail for rail in self._rails if rail.domain == domain).watts()

    def _read_others(self) -> dict[str, float | None]:
        readings: dict[str, float | None] = {}
        for rail, _ in self._others:
            try:
                readings[rail.name] = rail.watts()
            except (OSError, ValueError):
                readings[rail.name] = None
        return readings

    def begin(self) -> object:
        if self._open_window is not None:
            raise SensorError("jetson: begin() called while a window is still open")
        others = self._read_others()
        sampler = PowerSampler(
            self._watts,
            self.domains(),
            self.clock,
            self.wait,
            self.sample_interval_s,
            name="tpw-jetson-power",
        )
        try:
            sampler.start()
        except (OSError, ValueError) as exc:
            raise self._read_failed(sampler, exc, "at the start of a window") from exc
        window = _Window(self.clock(), sampler, others)
        self._open_window = window
        return window

    def _read_failed(self, sampler: PowerSampler, exc: BaseException, when: str) -> SensorError:
        self._dropped += 1
        rail = next((r for r in self._rails if r.domain == sampler.failed), None)
        what = f"{rail.name} ({rail.source} in {rail.directory})" if rail else "?"
        return SensorError(f"INA3221 rail {what} unreadable {when}: {exc}")

    def end(self, token: object) -> WindowEnergy:
        if not isinstance(token, _Window) or token is not self._open_window:
            raise SensorError("jetson: end() was given a token that this sensor's begin() did not")
        self._open_window = None
        sampler = token.sampler
        try:
            sampler.stop()
        except (OSError, ValueError) as exc:
            raise self._read_failed(sampler, exc, "during a window") from exc
        seconds = self.clock() - token.started
        result = WindowEnergy(sampler.joules())
        result.state = self._state(sampler, result.joules, seconds, token.others)
        bad = [
            (domain, watts)
            for domain, samples in sampler.samples.items()
            for _, watts in samples
            if not 0.0 <= watts <= CEILING_W
        ]
        if bad:
            self._dropped += len(bad)
            domain, watts = bad[0]
            result.invalid = (
                f"{len(bad)} INA3221 power sample(s) outside 0..{CEILING_W:g} W ({domain} read "
                f"{watts:g} W): a misread rail, so this window is discarded"
            )
        return result

    def _state(
        self,
        sampler: PowerSampler,
        joules: dict[str, float],
        seconds: float,
        others: dict[str, float | None],
    ) -> dict[str, Any]:
        power: dict[str, Any] = {}
        for domain, samples in sampler.samples.items():
            watts = [w for _, w in samples]
            power[domain] = {
                "mean": joules[domain] / seconds if seconds > 0 else None,
                "min": min(watts),
                "max": max(watts),
            }
        ends = self._read_others()
        return {
            "seconds": seconds,
            "power_samples": min(len(s) for s in sampler.samples.values()),
            "power_w": power,
            "other_rails_w": {
                name: {"start": others.get(name), "end": ends.get(name)} for name in ends
            },
        }

    # -- description ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "model": self._model,
            "l4t": self._l4t(),
            "kernel": platform.release(),
            "method": self.method,
            "scope": self._scope,
            "sysfs_root": str(self.sysfs_root),
            "rails": [rail.describe(True) for rail in self._rails]
            + [rail.describe(False, reason) for rail, reason in self._others],
            "skipped": list(self._skipped),
            "sample_interval_s": self.sample_interval_s,
            "update_period_s": self._update_period_s,
            # nvpmodel's mode (its power budget, its clocks) is not in sysfs: omitted here
            "devices": [{"name": self._model, "scope": self._scope}],
            "notes": list(self._notes),
        }

    def _l4t(self) -> str | None:
        """The L4T (Jetson Linux) release, ``36.4.3``, from its release file."""
        try:
            text = read_sysfs(Path(self.release_path))
        except OSError:
            return None
        match = _L4T.search(text)
        return f"{match[1]}.{match[2]}" if match else None
