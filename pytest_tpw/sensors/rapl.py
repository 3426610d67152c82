"""The ``rapl`` sensor: CPU energy from the Linux powercap RAPL counters, without double counting.

Zones live flat under the powercap root (default ``/sys/class/powercap``) as ``intel-rapl:N``
(top level: ``package-N``, ``psys``) and ``intel-rapl:N:M`` (inside zone N: ``core``,
``uncore``, ``dram``), each with ``name``, ``energy_uj`` and ``max_energy_range_uj``. AMD CPUs
(kernel >= 5.8) use the same ``intel-rapl`` control type and names, so there is no separate
AMD prefix to look for. ``intel-rapl-mmio:N`` zones repeat the MSR package counter through
another interface on client parts and are skipped, as CodeCarbon does.

What is summed, and why (domains nest: psys > package > core/uncore):

- every top-level ``package-*`` zone (``cpu:package-N``);
- each ``dram`` subzone as its own domain (``cpu:dram-N``): DRAM is outside the package
  domain (the package covers cores, caches and uncore; memory power is a separate RAPL domain
  on server parts), which is why Zeus and CodeCarbon add it beside the package;
- never ``core``/``uncore``: they are parts of their package;
- ``psys`` (the whole platform, package included) only when there is no package zone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.host import fingerprint, procstat
from pytest_tpw.sensors.base import (
    Capabilities,
    FollowedWork,
    Provenance,
    Sensor,
    SensorHealth,
    SensorOptions,
    WindowEnergy,
)
from pytest_tpw.sensors.cpu_estimate import cpu_model

#: ``intel-rapl:N`` or ``intel-rapl:N:M``; ``intel-rapl`` itself is the control type, not a zone.
_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_MMIO_DIR = re.compile(r"^intel-rapl-mmio:\d+(?::\d+)?$")

#: A per-domain power no CPU socket or DRAM channel set reaches; Zeus uses the same 1000 W
#: ceiling to decide how fast to poll for wraps. It bounds the time one wrap can take
#: (``max_energy_range_uj`` / 1000 W) and flags impossible deltas as counter resets.
_CEILING_W = 1000.0


def read_sysfs(path: Path) -> str:
    """The text of one sysfs file (the seam tests replace to simulate unreadable files)."""
    return path.read_text(encoding="ascii")


@dataclass(frozen=True)
class Zone:
    """One measured RAPL zone: its domain name, its directory and its counter's range."""

    domain: str
    path: Path
    name: str
    max_range_uj: int

    @property
    def counter(self) -> Path:
        return self.path / "energy_uj"


@dataclass(frozen=True)
class _Token:
    started: float
    counts: dict[Path, int]
    cpu: procstat.CpuSnapshot


def _permission_fix(path: Path, root: Path) -> str:
    return (
        f"cannot read {path}: RAPL energy counters are root-only since CVE-2020-8694. "
        "Fix: run as root, or make them world-readable until reboot with "
        f"`sudo chmod o+r {root}/intel-rapl:*/energy_uj`, or for good with the systemd-tmpfiles "
        f"line `z {root}/intel-rapl:*/energy_uj 0444 - - -` in /etc/tmpfiles.d/rapl.conf "
        "(then `sudo systemd-tmpfiles --create`); or choose --tpw-sensor cpu-estimate"
    )


def _read_uj(path: Path) -> int:
    """A non-negative integer counter; OSError/ValueError propagate for the caller to word."""
    value = int(read_sysfs(path).strip())
    if value < 0:
        raise ValueError(f"negative value {value}")
    return value


def _open_read_uj(path: Path, root: Path) -> int:
    """Read a counter at open time: any failure means the sensor cannot work here."""
    try:
        return _read_uj(path)
    except PermissionError as exc:
        raise SensorUnavailable(_permission_fix(path, root)) from exc
    except (OSError, ValueError) as exc:
        raise SensorUnavailable(f"cannot use RAPL counter {path}: {exc}") from exc


def _zone_name(path: Path) -> str:
    try:
        return read_sysfs(path / "name").strip()
    except OSError as exc:
        raise SensorUnavailable(f"cannot read RAPL zone name {path / 'name'}: {exc}") from exc


def _scan(root: Path) -> dict[tuple[int, int | None], tuple[Path, str]]:
    """Every ``intel-rapl`` zone under root, keyed by (zone, subzone), with its name."""
    found: dict[tuple[int, int | None], tuple[Path, str]] = {}
    for entry in sorted(root.iterdir()):
        match = _ZONE_DIR.match(entry.name)
        if match:
            sub = int(match[2]) if match[2] is not None else None
            found[(int(match[1]), sub)] = (entry, _zone_name(entry))
    return found


def _order(key: tuple[int, int | None]) -> tuple[int, int]:
    return (key[0], -1 if key[1] is None else key[1])


def _choose(
    found: dict[tuple[int, int | None], tuple[Path, str]],
) -> tuple[list[tuple[str, Path, str]], list[dict[str, str]]]:
    """Split zones into measured (domain, path, name) and skipped (with the reason)."""
    tops = {key[0]: val for key, val in found.items() if key[1] is None}
    has_package = any(name.startswith("package-") for _, name in tops.values())
    chosen: list[tuple[str, Path, str]] = []
    skipped: list[dict[str, str]] = []
    for zone, sub in sorted(found, key=_order):
        path, name = found[(zone, sub)]
        parent = tops.get(zone, (path, ""))[1]
        reason = _skip_reason(name, sub, parent, has_package)
        if reason:
            skipped.append({"path": str(path), "name": name, "reason": reason})
        elif sub is None:
            chosen.append((f"cpu:{name}", path, name))
        else:
            chosen.append((f"cpu:dram-{parent.removeprefix('package-')}", path, name))
    return chosen, skipped


def _skip_reason(name: str, sub: int | None, parent: str, has_package: bool) -> str:
    if sub is None:
        if name.startswith("package-"):
            return ""
        if name == "psys":
            return "includes the package zones" if has_package else ""
        return "not a package or psys zone"
    if name == "dram" and parent.startswith("package-"):
        return ""
    return f"part of {parent or 'its parent zone'}"


class RaplSensor(Sensor):
    name = "rapl"
    provenance: Provenance = "measured"
    method = "Linux powercap RAPL energy counters (package + dram, or psys alone)"
    host_wide = True

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        #: Monotonic clock for window length; tests replace it.
        self.clock: Callable[[], float] = time.perf_counter
        self._zones: list[Zone] = []
        self._skipped: list[dict[str, str]] = []
        #: Where /proc is (tests point it at a fake tree), and the process trees whose CPU
        #: time is "ours" when judging contention: this process, plus a followed server.
        self.proc_root: Path = procstat.DEFAULT_PROC_ROOT
        self._followed: int | None = None
        #: Health: the zones whose counter moved in some window, the windows read, the
        #: wraps undone, the resets (windows discarded) and the windows long enough to
        #: have lost a wrap.
        self._moved: set[str] = set()
        self._windows = 0
        self._wraps = 0
        self._resets = 0
        self._long = 0

    def follow_process_tree(self, root_pid: int) -> None:
        """Count ``root_pid``'s tree (a served model) as measured work, not as contention.

        RAPL joules are host-wide whatever is followed; this only changes what the
        contention check calls "other processes".
        """
        self._followed = root_pid

    def follow_self(self) -> None:
        self._followed = None

    def capabilities(self) -> Capabilities:
        return Capabilities(self.lock_ids(), "host", True)

    def follow(self, work: FollowedWork | None) -> None:
        if work is None:
            self.follow_self()
        else:
            self.follow_process_tree(work.root_pid)

    def _watch(self) -> procstat.ProcessWatch:
        roots = [os.getpid()] if self._followed is None else [os.getpid(), self._followed]
        return procstat.ProcessWatch(roots, self.proc_root)

    @property
    def root(self) -> Path:
        return Path(self.options.powercap_root)

    def open(self) -> None:
        root = self.root
        if not root.is_dir():
            raise SensorUnavailable(
                f"no RAPL counters: {root} does not exist (virtual machine or non-Linux?)"
            )
        found = _scan(root)
        if not found:
            raise SensorUnavailable(
                f"no RAPL counters: {root} has no intel-rapl:N zones "
                "(virtual machine, or RAPL driver not loaded: `sudo modprobe intel_rapl_msr`)"
            )
        chosen, self._skipped = _choose(found)
        self._skipped += [
            {"path": str(p), "name": p.name, "reason": "MMIO copy of the MSR package counter"}
            for p in sorted(root.iterdir())
            if _MMIO_DIR.match(p.name)
        ]
        if not chosen:
            names = ", ".join(name for _, name in found.values())
            raise SensorUnavailable(f"no RAPL package or psys zone under {root} (found: {names})")
        self._zones = [self._zone(domain, path, name) for domain, path, name in chosen]

    def _zone(self, domain: str, path: Path, name: str) -> Zone:
        zone = Zone(domain, path, name, _open_read_uj(path / "max_energy_range_uj", self.root))
        if zone.max_range_uj <= 0:
            raise SensorUnavailable(f"RAPL zone {path} reports max_energy_range_uj = 0")
        _open_read_uj(zone.counter, self.root)  # the root-only file: fail now, not mid-run
        return zone

    def domains(self) -> Sequence[str]:
        return tuple(zone.domain for zone in self._zones)

    def min_window_s(self) -> float:
        # RAPL counters update about every 1 ms, so each edge of a window is off by up to one
        # update; at 100 ms that is <= 2 % per window, and the protocol's random start delay
        # turns it into noise that averages out instead of a bias.
        return 0.1

    def wrap_bound_s(self) -> float:
        """The shortest time any measured counter could take to wrap (at the 1000 W ceiling)."""
        return min(zone.max_range_uj for zone in self._zones) / 1e6 / _CEILING_W

    def _read_all(self) -> dict[Path, int]:
        counts: dict[Path, int] = {}
        for zone in self._zones:
            try:
                counts[zone.counter] = _read_uj(zone.counter)
            except (OSError, ValueError) as exc:
                raise SensorError(f"RAPL counter {zone.counter} unreadable mid-run: {exc}") from exc
        return counts

    def begin(self) -> object:
        cpu = self._watch().snapshot()
        counts = self._read_all()
        return _Token(self.clock(), counts, cpu)

    def end(self, token: object) -> WindowEnergy:
        if not isinstance(token, _Token):
            raise TypeError(f"end() needs the token begin() returned, got {token!r}")
        counts = self._read_all()
        seconds = self.clock() - token.started
        watch = self._watch()
        usage = watch.usage(token.cpu, watch.snapshot())
        window = WindowEnergy({}, state={"seconds": seconds})
        # RAPL counts every process on the host: others busy in the window are in the joules
        procstat.mark_contention(usage, window.state, window.warnings)
        self._windows += 1
        for zone in self._zones:
            start, end = token.counts[zone.counter], counts[zone.counter]
            delta = _delta(start, end, zone.max_range_uj)
            window.joules[zone.domain] = delta / 1e6
            if delta > 0:
                self._moved.add(zone.domain)
            # A reset (driver reload) also reads as end < start; unlike a wrap, it leaves a
            # delta no CPU could draw in the window. Short windows get min_window_s of slack
            # so one counter update (about 1 ms of energy) is never mistaken for a reset.
            if delta / 1e6 > _CEILING_W * max(seconds, self.min_window_s()):
                window.invalid = (
                    f"{zone.counter} moved {delta / 1e6:.0f} J in {seconds:.3g} s, more than "
                    f"{_CEILING_W:.0f} W: the counter was reset (driver reload?), not wrapped"
                )
            elif end < start:
                self._wraps += 1
        if window.invalid is not None:
            self._resets += 1
        self._warn_long(window, seconds)
        return window

    def _warn_long(self, window: WindowEnergy, seconds: float) -> None:
        # Two reads cannot tell one wrap from two: a window longer than a wrap period (minutes
        # at full power) may have lost whole multiples of max_energy_range_uj. We only warn;
        # tracking wraps would need a polling thread, which windows this short do not need.
        bound = self.wrap_bound_s()
        if seconds > bound:
            self._long += 1
            window.warnings.append(
                f"RAPL window of {seconds:.0f} s is longer than the {bound:.0f} s a counter "
                "can take to wrap at 1000 W: energy may be short by whole wraps"
            )

    def health(self) -> SensorHealth:
        """Whether every zone's counter moved in some window; resets (windows discarded)
        as dropped reads; wraps undone and windows long enough to hide one, as notes. The
        counters update about every millisecond: no period is observed."""
        advances = None if not self._windows else len(self._moved) == len(self._zones)
        notes = []
        still = [z.domain for z in self._zones if z.domain not in self._moved]
        if self._windows and still:
            notes.append(f"counter never moved in {self._windows} window(s): {', '.join(still)}")
        if self._wraps:
            notes.append(f"{self._wraps} counter wrap(s) undone (max_energy_range_uj)")
        if self._long:
            notes.append(
                f"{self._long} window(s) longer than a wrap can take at 1000 W: "
                "energy may be short by whole wraps"
            )
        return SensorHealth(advances, None, self._resets, tuple(notes))

    def describe(self) -> dict[str, object]:
        return {
            "cpu": cpu_model(),
            "usable_cpus": fingerprint.usable_cpus(),
            "root": str(self.root),
            "zones": [
                {
                    "domain": z.domain,
                    "name": z.name,
                    "path": str(z.path),
                    "max_energy_range_uj": z.max_range_uj,
                }
                for z in self._zones
            ],
            "skipped": list(self._skipped),
            "wrap_warning_after_s": self.wrap_bound_s() if self._zones else None,
        }

    def hardware(self) -> tuple[str, ...]:
        # the usable CPUs keep runners of different sizes apart (docs/sensors.md)
        return (fingerprint.cpu_hardware(cpu_model()),)

    def legacy_hardware(self) -> tuple[str, ...]:
        return (cpu_model(),)

    def lock_ids(self) -> tuple[str, ...]:
        return ("rapl-host",)  # package counters see every process on the host


def _delta(start: int, end: int, max_range: int) -> int:
    """Microjoules between two reads; a smaller end means the counter wrapped once."""
    return end - start if end >= start else end + max_range - start
