"""What the vendor energy-counter sensors (``amdsmi``, ``gaudi``, ``intel-gpu``) share.

Each of them reads a per-device energy counter that runs since the driver loaded (AMD's
energy accumulator, HLML's total energy, Level Zero Sysman's energy counter). What differs
is the vendor call; what is the same lives here, once:

- :func:`visible_entries` and :func:`select_visible`: a comma list of indices or UUIDs in a
  visible-devices variable (``ROCR_VISIBLE_DEVICES``, ``HABANA_VISIBLE_MODULES``,
  ``ZE_AFFINITY_MASK``...) applied to a list of devices, refusing an entry that names none;
- :func:`counter_delta`: a window's counter delta, a wrap of the counter's known range
  accepted only when the power it implies is plausible, anything else going backwards
  (a driver reload, a device reset) turned into a reason to discard the window;
- :func:`probe_counters` and :func:`judge_probe`: the start-up check that each counter
  advances, Zeus-style (one power read, the counter polled over a short bounded wait, kept
  only when ``low < measured / expected < high``), which also measures the update period;
- :class:`CounterSensor`: the windows themselves (counter reads at both edges, power
  integrated by :class:`~pytest_tpw.sensors.sampling.PowerSampler` for devices whose counter
  cannot be used), health, description, and the Sensor plumbing. A vendor sensor subclasses
  it and says how to find its devices and read them.
"""

from __future__ import annotations

import abc
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.host.distributed import local_rank_device
from pytest_tpw.sensors.base import (
    Capabilities,
    Provenance,
    Sensor,
    SensorHealth,
    SensorOptions,
    WindowEnergy,
)
from pytest_tpw.sensors.sampling import PowerSampler, wait_event

#: The range of a 64-bit counter: every counter these sensors read is a uint64.
U64 = 1 << 64

#: How a device's joules are obtained.
COUNTER = "counter"  # the vendor's energy counter, delta between the window's edges
POWER = "power"  # integrated power readings (the counter is missing or does not work)
INCLUDED = "included"  # counted in another measured device's reading (MI250 odd die)

#: Power below this reads as "no power reported" (an idle board still draws tens of watts).
NO_POWER_W = 0.5

T = TypeVar("T")


def one_line(value: object) -> str:
    """An error's text on one line (amdsmi's messages hold newlines and tabs)."""
    return " ".join(str(value).split())


# -- visible devices ----------------------------------------------------------------------


def visible_entries(variable: str, environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The comma-separated entries of ``variable``; None when it is unset, [] when empty."""
    value = (os.environ if environ is None else environ).get(variable)
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def select_visible(
    entries: Sequence[str],
    candidates: Sequence[T],
    variable: str,
    match: Callable[[str, T], bool] | None = None,
    *,
    what: str = "device",
    numbers_are_indices: bool = True,
    known: str | None = None,
) -> list[T]:
    """The candidates ``entries`` name, in the entries' order, duplicates dropped.

    An entry of digits is an index into ``candidates`` (unless ``numbers_are_indices`` is
    false: module ids...); any other entry is passed to ``match`` (a UUID...). An entry that
    names no candidate raises :class:`SensorUnavailable` naming the variable, its value, the
    entry and what is ``known`` (default: the valid indices).
    """
    chosen: list[T] = []
    seen: set[int] = set()
    for entry in entries:
        found = _find(entry, candidates, match, numbers_are_indices)
        if found is None:
            value = os.environ.get(variable, ",".join(entries))
            listed = known or f"indices 0..{len(candidates) - 1}"
            raise SensorUnavailable(
                f"{variable}={value!r} names {entry!r}, which matches none of the "
                f"{len(candidates)} {what}(s) here ({listed}); fix {variable} or unset it"
            )
        if found not in seen:
            seen.add(found)
            chosen.append(candidates[found])
    return chosen


def _find(
    entry: str,
    candidates: Sequence[T],
    match: Callable[[str, T], bool] | None,
    numbers_are_indices: bool,
) -> int | None:
    if entry.isdigit() and numbers_are_indices:
        index = int(entry)
        return index if index < len(candidates) else None
    if match is None:
        return None
    hits = [i for i, candidate in enumerate(candidates) if match(entry, candidate)]
    return hits[0] if len(hits) == 1 else None


def uuid_matches(entry: str, uuid: str) -> bool:
    """Whether a visible-devices entry names ``uuid``: case, hyphens and a ``GPU-`` prefix
    are ignored, and a unique prefix of at least 8 hex digits is enough."""

    def plain(text: str) -> str:
        text = text.strip().lower()
        return text.removeprefix("gpu-").replace("-", "")

    wanted, have = plain(entry), plain(uuid)
    return bool(have) and len(wanted) >= 8 and have.startswith(wanted)


def wanted_indices(requested: tuple[int, ...] | None, visible: int, env_text: str) -> list[int]:
    """The process's device indices to measure among ``visible``: the requested ones
    (``--tpw-devices``), else this rank's one under torchrun, else all of them.

    ``env_text`` names the visible-devices variables in effect, for the refusal messages.
    """
    if visible == 0:
        raise SensorUnavailable(
            f"no device is visible to this process ({env_text}); unset the variable or "
            "list the devices to measure"
        )
    if requested is None:
        local = local_rank_device(visible)
        return list(range(visible)) if local is None else [local]
    wanted = list(dict.fromkeys(requested))
    for index in wanted:
        if not 0 <= index < visible:
            raise SensorUnavailable(
                f"device index {index} was requested but this process sees {visible} "
                f"device(s) (indices 0..{visible - 1}, {env_text}); fix --tpw-devices or "
                "the visible-devices variable"
            )
    return wanted


def optional_call(
    library: Any, function: str, args: Sequence[Any], errors: tuple[type[BaseException], ...]
) -> Any:
    """``library.function(*args)``, or None when the library has no such function (an
    older release) or the call raises one of ``errors`` (a field this device does not
    give): for what only describes a device or a window."""
    getter = getattr(library, function, None)
    if getter is None:
        return None
    try:
        return getter(*args)
    except errors:
        return None


def env_text(variables: Sequence[str]) -> str:
    """``A='0,1', B unset`` for the variables a sensor maps devices through."""
    parts = []
    for name in variables:
        value = os.environ.get(name)
        parts.append(f"{name} unset" if value is None else f"{name}={value!r}")
    return ", ".join(parts)


# -- counter arithmetic ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """A counter's change over a window: ``counts`` (None when the window must be
    discarded, ``reason`` saying why) and whether the counter wrapped."""

    counts: int | None
    wrapped: bool = False
    reason: str | None = None


def counter_delta(start: int, end: int, modulus: int | None, max_counts: float) -> Delta:
    """The counts between two reads of a counter that wraps at ``modulus`` (None: never).

    A counter lower at the end is a wrap only when the wrapped delta is at most
    ``max_counts`` (the most the device could use in the window); otherwise it went
    backwards (driver reload, device reset) and the window is invalid.
    """
    if end >= start:
        return Delta(end - start)
    if modulus is not None:
        wrapped = end + modulus - start
        if 0 <= wrapped <= max_counts:
            return Delta(wrapped, wrapped=True)
    return Delta(
        None,
        reason=(
            f"the energy counter went backwards ({start} at the start, {end} at the end"
            + (", more than a wrap of its range could explain" if modulus is not None else "")
            + "): the driver was probably reloaded or the device reset during the window"
        ),
    )


# -- the start-up check -------------------------------------------------------------------------


@dataclass
class Probe:
    """One counter polled over the start-up check: first and last reads, the instants its
    value changed, and the power read just before (None: no power reading)."""

    first: int
    last: int
    seconds: float
    changes: list[float] = field(default_factory=list)
    power_w: float | None = None
    joules_per_count: float = 1.0

    @property
    def joules(self) -> float:
        return (self.last - self.first) * self.joules_per_count

    @property
    def advanced(self) -> bool:
        return self.last > self.first

    @property
    def period_s(self) -> float | None:
        """Median interval between observed changes (None: fewer than three changes)."""
        intervals = [b - a for a, b in itertools.pairwise(self.changes)]
        return statistics.median(intervals) if len(intervals) >= 2 else None


def probe_counters(
    readers: Mapping[str, Callable[[], tuple[int, float]]],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    duration_s: float,
    step_s: float,
) -> dict[str, Probe]:
    """Poll every counter for ``duration_s`` (bounded), recording when each one changes.

    ``readers`` maps a name to a function returning ``(counts, joules per count)``.
    """
    probes: dict[str, Probe] = {}
    start = clock()
    for name, read in readers.items():
        counts, resolution = read()
        probes[name] = Probe(counts, counts, 0.0, joules_per_count=resolution)
    deadline = start + duration_s
    while clock() < deadline:
        sleep(step_s)
        for name, read in readers.items():
            counts, _ = read()
            probe = probes[name]
            if counts != probe.last:
                probe.changes.append(clock())
            probe.last = counts
    for probe in probes.values():
        probe.seconds = clock() - start
    return probes


@dataclass(frozen=True)
class Verdict:
    """What the start-up check concluded about one counter."""

    use_counter: bool
    reason: str
    ratio: float | None = None


def judge_probe(probe: Probe, low: float, high: float) -> Verdict:
    """Keep the counter when it advanced and agrees with the power read (Zeus's loose
    ``low < measured / expected < high``); a counter that advanced with no power to compare
    is kept, unchecked."""
    if not probe.advanced:
        return Verdict(False, f"the counter did not advance in {probe.seconds:.2g} s")
    power = probe.power_w
    if power is None or power < NO_POWER_W:
        return Verdict(True, "advanced; no power reading to cross-check it against")
    expected = power * probe.seconds
    ratio = probe.joules / expected
    if low < ratio < high:
        return Verdict(True, f"advanced, {ratio:.2f}x the energy the power read implies", ratio)
    return Verdict(
        False,
        f"it counted {probe.joules:.3g} J in {probe.seconds:.2g} s while the power read "
        f"({power:.1f} W) implies {expected:.3g} J ({ratio:.3g}x, outside {low:g}..{high:g}x)",
        ratio,
    )


# -- the sensor -----------------------------------------------------------------------------


@dataclass
class CounterDevice:
    """One measured device, as a vendor sensor resolved it.

    ``read_counter`` returns ``(counts, joules per count)`` (None: no usable counter);
    ``read_power_w`` returns watts or None when the device reports none (None: no power
    reading at all). ``where`` locates the device in the vendor's own numbering.
    """

    index: int
    name: str
    uuid: str
    where: str
    read_counter: Callable[[], tuple[int, float]] | None
    read_power_w: Callable[[], float | None] | None = None
    modulus: int | None = U64
    counter_label: str = "energy counter"
    power_label: str = "power"
    #: How often the power reading refreshes, or the span it averages over (seconds).
    power_period_s: float = 0.1
    max_power_w: float | None = None
    source: str = COUNTER
    #: The domain whose reading already holds this device's energy (source INCLUDED).
    included_in: str | None = None
    period_s: float | None = None
    period_measured: bool = False
    check: dict[str, Any] = field(default_factory=dict)
    #: Devices whose counters this one's readings depend on (defaults to its own UUID).
    locks: tuple[str, ...] = ()
    #: Sentences attached to every window of this device (a shared die...).
    window_warnings: list[str] = field(default_factory=list)
    #: Vendor data: handles, module ids...
    handle: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return f"gpu:{self.index}"

    @property
    def label(self) -> str:
        return f"{self.domain} ({self.name}, {self.where})"


@dataclass
class _Window:
    started: float
    counts: dict[str, tuple[int, float]]
    state: dict[str, dict[str, Any]]
    sampler: PowerSampler | None


class CounterSensor(Sensor):
    """A vendor energy counter per device, with power integration where it fails.

    Subclasses set ``name``, ``vendor`` (the library's name in messages), ``counter_method``
    and ``variables`` (the visible-devices variables they honour), and implement
    :meth:`_start` (import, initialise, return the devices), :meth:`_stop`,
    :meth:`_errors` and optionally :meth:`_settle`, :meth:`_read_state`,
    :meth:`_describe_stack` and :meth:`_describe_device`.
    """

    provenance: Provenance = "measured"
    #: The vendor library, for messages ("amdsmi", "HLML"...).
    vendor: str = ""
    #: How the counter is read, for ``method``.
    counter_method: str = ""
    #: The visible-devices variables this sensor maps devices through.
    variables: tuple[str, ...] = ()

    #: Start-up check: how long each counter is polled (seconds, bounded) and how often.
    check_s: float = 0.5
    check_step_s: float = 0.0005
    #: A counter is kept when low < measured / expected < high (Zeus's bounds).
    ratio_low: float = 0.1
    ratio_high: float = 10.0
    #: Period assumed when the counter changed fewer than three times during the check.
    assumed_period_s: float = 0.1
    #: A window lasts at least this many counter updates (as nvml).
    updates_per_window: int = 10
    #: Interval of the power-sampling thread, for devices read by power (seconds).
    sample_interval_s: float = 0.02
    #: The most one device can draw, for telling a wrap from a reset when the vendor
    #: gives no maximum (watts; no accelerator board reaches it).
    plausible_max_w: float = 5000.0

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        #: Time source, sleep and the sampler's wait; tests point them at a fake clock.
        self.clock: Callable[[], float] = time.perf_counter
        self.sleep: Callable[[float], None] = time.sleep
        self.wait: Callable[[threading.Event, float], bool] = wait_event
        self._devices: list[CounterDevice] = []
        self._notes: list[str] = []
        self._backwards = 0  # windows discarded: a counter went backwards
        self._failed = 0  # window reads that failed (vendor errors, power samples)
        self._counter_advances: bool | None = None
        self._window: _Window | None = None
        self._opened = False

    # -- what a vendor sensor provides ----------------------------------------------------------

    @abc.abstractmethod
    def _start(self) -> list[CounterDevice]:
        """Import and initialise the vendor library; the devices to measure, mapped through
        the visible-devices variables. Raise :class:`SensorUnavailable` with the reason."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Shut the vendor library down if it was initialised (must not raise); also
        called when :meth:`_start` fails."""

    @abc.abstractmethod
    def _errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions the vendor library raises, turned into SensorError in windows."""

    def _read_state(self, device: CounterDevice) -> dict[str, Any]:
        """What explains a window's variance, read at each edge (JSON-able)."""
        return {}

    def _describe_stack(self) -> dict[str, Any]:
        """Driver and library versions."""
        return {}

    def _describe_device(self, device: CounterDevice) -> dict[str, Any]:
        """Vendor fields of one device: ``power_limit_w``, ``max_power_w``, ``clocks_policy``..."""
        return {}

    # -- session --------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self._devices = self._start()
        except BaseException:
            self._stop()  # a library initialised before its devices failed is shut down
            raise
        self._opened = True
        try:
            self._check()
        except BaseException:
            self.close()
            raise
        self.method = self._method()

    def close(self) -> None:
        window, self._window = self._window, None
        if window is not None and window.sampler is not None:
            window.sampler.abandon()
        if self._opened:
            self._opened = False
            with suppress(Exception):
                self._stop()

    def domains(self) -> Sequence[str]:
        return tuple(device.domain for device in self._devices)

    def hardware(self) -> tuple[str, ...]:
        return tuple(device.name for device in self._devices)

    def lock_ids(self) -> tuple[str, ...]:
        ids = [lock for device in self._devices for lock in (device.locks or (device.uuid,))]
        return tuple(dict.fromkeys(ids))

    def capabilities(self) -> Capabilities:
        return Capabilities(self.lock_ids(), "device", True)

    def edge_error_s(self) -> float:
        """The slowest refresh among the measured readings: an edge read may be that old."""
        periods = [self._period(device) for device in self._devices]
        return max((p for p in periods if p is not None), default=self.assumed_period_s)

    def min_window_s(self) -> float:
        return self.updates_per_window * self.edge_error_s()

    def _period(self, device: CounterDevice) -> float | None:
        if device.source == COUNTER:
            return device.period_s or self.assumed_period_s
        if device.source == POWER:
            return max(device.power_period_s, self.sample_interval_s)
        return None

    def health(self) -> SensorHealth:
        """What the start-up check saw (the counters advance; their update period), and the
        windows discarded for a counter going backwards plus the reads that failed."""
        periods = [d.period_s for d in self._devices if d.source == COUNTER and d.period_measured]
        notes = list(self._notes)
        if self._backwards:
            notes.append(f"{self._backwards} window(s) discarded: an energy counter went backwards")
        if self._failed:
            notes.append(f"{self._failed} read(s) failed during windows ({self.vendor} errors)")
        return SensorHealth(
            counter_advances=self._counter_advances,
            update_period_s=max((p for p in periods if p is not None), default=None),
            dropped_reads=self._backwards + self._failed,
            notes=tuple(notes),
        )

    # -- the start-up check -------------------------------------------------------------------

    def _check(self) -> None:
        """Zeus-style: a power read, then each counter polled over ``check_s``."""
        probed = [d for d in self._devices if d.source == COUNTER and d.read_counter is not None]
        powers = {d.domain: self._power_or_none(d) for d in probed}
        readers = {d.domain: self._guarded_reader(d) for d in probed}
        probes = probe_counters(readers, self.clock, self.sleep, self.check_s, self.check_step_s)
        for device in self._devices:
            if device.source == INCLUDED:
                continue
            probe = probes.get(device.domain)
            if probe is not None:
                probe.power_w = powers[device.domain]
            self._settle(device, probe)
        counted = [d for d in self._devices if d.source in (COUNTER, POWER)]
        self._counter_advances = all(d.source == COUNTER for d in counted)

    def _guarded_reader(self, device: CounterDevice) -> Callable[[], tuple[int, float]]:
        read = device.read_counter
        assert read is not None

        def reader() -> tuple[int, float]:
            try:
                return read()
            except self._errors() as exc:
                raise SensorUnavailable(
                    f"{self.name}: {device.label}: reading its {device.counter_label} failed: {exc}"
                ) from exc

        return reader

    def _power_or_none(self, device: CounterDevice) -> float | None:
        if device.read_power_w is None:
            return None
        try:
            return device.read_power_w()
        except self._errors():
            return None

    def _settle(self, device: CounterDevice, probe: Probe | None) -> None:
        """Decide how ``device`` is read from what the check saw (counter or power), or
        refuse it. ``probe`` is None when the device has no usable counter."""
        if probe is not None:
            verdict = judge_probe(probe, self.ratio_low, self.ratio_high)
            device.check = {
                "seconds": probe.seconds,
                "counter_joules": probe.joules,
                "power_w": probe.power_w,
                "ratio": verdict.ratio,
                "verdict": verdict.reason,
            }
            period = probe.period_s
            device.period_measured = period is not None
            device.period_s = period if period is not None else self.assumed_period_s
            if verdict.use_counter:
                if probe.power_w is None or probe.power_w < NO_POWER_W:
                    self._notes.append(f"{device.label}: {device.counter_label} {verdict.reason}")
                if period is None:
                    self._notes.append(
                        f"{device.label}: its {device.counter_label} changed fewer than three "
                        f"times in the {probe.seconds:.2g} s check; an update period of "
                        f"{self.assumed_period_s * 1000:g} ms is assumed"
                    )
                return
            why = f"its {device.counter_label} cannot be used: {verdict.reason}"
        else:
            why = f"it has no usable {device.counter_label}"
        self._fall_back_to_power(device, why)

    def _fall_back_to_power(self, device: CounterDevice, why: str) -> None:
        watts = self._power_or_none(device)
        if watts is None or watts < NO_POWER_W:
            if device.read_power_w is None:
                reading = "no power reading either"
            elif watts is None:
                reading = f"its {device.power_label} is not reported"
            else:
                reading = f"its {device.power_label} reads {watts:g} W"
            raise SensorUnavailable(
                f"{self.name}: {device.label}: {why}, and {reading}, so nothing measures "
                "its energy; check the device with the vendor's tool, update its driver, "
                "or pick another sensor"
            )
        device.source = POWER
        device.period_s = None
        device.period_measured = False
        device.check["fallback"] = device.power_label
        self._notes.append(
            f"{device.label}: {why}; its joules are integrated from {device.power_label} "
            f"instead (sampled every {self.sample_interval_s * 1000:g} ms)"
        )

    def _method(self) -> str:
        parts = []
        if any(d.source == COUNTER for d in self._devices):
            parts.append(self.counter_method)
        labels = sorted({d.power_label for d in self._devices if d.source == POWER})
        if labels:
            parts.append(
                f"integrated {' / '.join(labels)} (sampled every "
                f"{self.sample_interval_s * 1000:g} ms, trapezoidal rule)"
            )
        if any(d.source == INCLUDED for d in self._devices):
            parts.append("devices whose energy another measured device reports count 0 J")
        return "; ".join(parts)

    # -- windows --------------------------------------------------------------------------------

    @contextmanager
    def _device_errors(self, device: CounterDevice, doing: str) -> Iterator[None]:
        try:
            yield
        except self._errors() as exc:
            self._failed += 1
            raise SensorError(
                f"{self.name}: {device.label}: {self.vendor} error while {doing}: {one_line(exc)}. "
                "Check the device with the vendor's tool; if it was reset or the driver "
                "reloaded, rerun the session"
            ) from exc

    def begin(self) -> object:
        if self._window is not None:
            raise SensorError(f"{self.name}: begin() called while a window is still open")
        state = {d.domain: self._safe_state(d) for d in self._devices}
        counts: dict[str, tuple[int, float]] = {}
        for device in self._counter_devices():
            assert device.read_counter is not None
            with self._device_errors(device, "reading the energy counter at a window's start"):
                counts[device.domain] = device.read_counter()
        window = _Window(self.clock(), counts, state, self._start_sampler())
        self._window = window
        return window

    def _counter_devices(self) -> list[CounterDevice]:
        return [d for d in self._devices if d.source == COUNTER]

    def _start_sampler(self) -> PowerSampler | None:
        devices = {d.domain: d for d in self._devices if d.source == POWER}
        if not devices:
            return None

        def read(domain: str) -> float:
            reader = devices[domain].read_power_w
            assert reader is not None
            watts = reader()
            if watts is None:
                raise SensorError(f"{devices[domain].label}: its power reading stopped")
            return watts

        sampler = PowerSampler(
            read, list(devices), self.clock, self.wait, self.sample_interval_s, f"tpw-{self.name}"
        )
        first = next(iter(devices.values()))
        try:
            with self._device_errors(first, "reading power at a window's start"):
                sampler.start()
        except SensorError:
            sampler.abandon()
            raise
        return sampler

    def end(self, token: object) -> WindowEnergy:
        if not isinstance(token, _Window) or token is not self._window:
            raise SensorError(f"{self.name}: end() was given a token its begin() did not")
        self._window = None
        result = WindowEnergy(joules={})
        seconds = 0.0
        try:
            for device in self._counter_devices():
                assert device.read_counter is not None
                with self._device_errors(device, "reading the energy counter at a window's end"):
                    end = device.read_counter()
                seconds = self.clock() - token.started
                self._counter_joules(device, token.counts[device.domain], end, seconds, result)
        except BaseException:
            if token.sampler is not None:
                token.sampler.abandon()
            raise
        self._integrated_joules(token.sampler, result)
        seconds = self.clock() - token.started
        for device in self._devices:
            if device.source == INCLUDED:
                result.joules[device.domain] = 0.0
            self._record_state(device, token, seconds, result)
        return result

    def _counter_joules(
        self,
        device: CounterDevice,
        start: tuple[int, float],
        end: tuple[int, float],
        seconds: float,
        out: WindowEnergy,
    ) -> None:
        resolution = end[1]
        ceiling = device.max_power_w or self.plausible_max_w
        max_counts = 2.0 * ceiling * max(seconds, 1e-3) / resolution
        delta = counter_delta(start[0], end[0], device.modulus, max_counts)
        if delta.counts is None:
            self._backwards += 1
            out.joules[device.domain] = 0.0
            reason = f"{device.label}: {delta.reason}; this window is discarded"
            out.invalid = reason if out.invalid is None else f"{out.invalid}; {reason}"
            return
        if delta.wrapped:
            self._notes.append(f"{device.label}: its {device.counter_label} wrapped in a window")
        out.joules[device.domain] = delta.counts * resolution
        out.state.setdefault(device.domain, {})["counter_wrapped"] = delta.wrapped

    def _integrated_joules(self, sampler: PowerSampler | None, out: WindowEnergy) -> None:
        if sampler is None:
            return
        errors: tuple[type[BaseException], ...] = (SensorError, *self._errors())
        try:
            sampler.stop()
        except errors as exc:
            self._failed += 1
            failed = next((d for d in self._devices if d.domain == sampler.failed), None)
            label = failed.label if failed is not None else self.name
            raise SensorError(
                f"{self.name}: {label}: a power sample failed during the window: {one_line(exc)}"
            ) from exc
        out.joules.update(sampler.joules())

    def _safe_state(self, device: CounterDevice) -> dict[str, Any]:
        try:
            return self._read_state(device)
        except self._errors():
            return {}

    def _record_state(
        self, device: CounterDevice, token: _Window, seconds: float, out: WindowEnergy
    ) -> None:
        state = out.state.setdefault(device.domain, {})
        state["energy_source"] = self._source_label(device)
        state["seconds"] = seconds
        start, end = token.state.get(device.domain, {}), self._safe_state(device)
        for key in dict.fromkeys([*start, *end]):
            state[key] = {"start": start.get(key), "end": end.get(key)}
        if token.sampler is not None and device.domain in token.sampler.samples:
            state["power_samples"] = len(token.sampler.samples[device.domain])
        out.warnings.extend(device.window_warnings)

    def _source_label(self, device: CounterDevice) -> str:
        if device.source == COUNTER:
            return device.counter_label
        if device.source == POWER:
            return f"integrated {device.power_label}"
        return f"included in {device.included_in}"

    # -- description ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "visible_devices": {name: os.environ.get(name) for name in self.variables},
            **self._describe_stack(),
            "devices": [self._describe_one(device) for device in self._devices],
            "notes": list(self._notes),
        }

    def _describe_one(self, device: CounterDevice) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": device.index,
            "name": device.name,
            "uuid": device.uuid,
            "where": device.where,
            "energy_source": self._source_label(device),
            "update_period_s": self._period(device),
            "update_period": "measured" if device.period_measured else "assumed",
            "counter_check": dict(device.check),
            "power_limit_w": None,
            "max_power_w": device.max_power_w,
            "clocks_policy": None,
        }
        out.update(self._describe_device(device))
        return out
