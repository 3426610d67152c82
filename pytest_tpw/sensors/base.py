"""The one small interface every energy sensor implements, and the data it returns."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: How a sensor's joules came to be: read from a hardware energy counter or integrated from
#: a hardware power sensor ("measured"), computed from a model such as CPU time x watts
#: ("estimated"), or invented by the ``sim`` sensor ("simulated").
Provenance = Literal["measured", "estimated", "simulated"]


#: How a sensor's joules divide among processes: ``process`` (it counts one process tree's
#: share, from its CPU time: it can follow a served model), ``device`` (a whole device's
#: energy, whoever used it: the measured work must have the device alone), ``host``
#: (host-wide counters such as RAPL packages), ``none`` (nothing physical: ``sim``).
Attribution = Literal["process", "device", "host", "none"]


@dataclass(frozen=True)
class Capabilities:
    """What a sensor can do, declared, so that the session and ``tpw_server`` ask it instead
    of checking its name or its attributes.

    ``devices``: the physical devices measured (GPU UUIDs...), empty when none of its own;
    ``attribution``: see :data:`Attribution`; ``idle_power``: a window with nothing running
    measures the devices' idle power (a measured sensor). The shortest window the sensor
    measures well is :meth:`Sensor.min_window_s`.
    """

    devices: tuple[str, ...]
    attribution: Attribution
    idle_power: bool


@dataclass(frozen=True)
class SensorHealth:
    """What a sensor saw of its own counters, for the report's sensor-health block.

    ``counter_advances``: checked at open that the counter (or power reading) moves while
    the device is powered (None: not checked); ``update_period_s``: the counter's observed
    refresh period (None: unknown or negligible); ``dropped_reads``: reads that failed or
    were thrown away this session (a counter that went backwards, a wrap the counter's range
    cannot explain, a failed power sample); ``notes``: anything else a reader should know.
    The session adds what it measures itself: idle power and the windows judged invalid.
    """

    counter_advances: bool | None = None
    update_period_s: float | None = None
    dropped_reads: int = 0
    notes: tuple[str, ...] = ()


class FollowedWork(Protocol):
    """Work a sensor can follow (a served model): its root process and its processes now."""

    @property
    def root_pid(self) -> int: ...

    def pids(self) -> set[int]: ...


@dataclass(frozen=True)
class SensorOptions:
    """What the session tells a sensor when it builds one (flags and ini values, parsed)."""

    #: GPU indices as this process sees them (after ``CUDA_VISIBLE_DEVICES``); None = all visible.
    devices: tuple[int, ...] | None = None
    #: ``sim``: constant power drawn, in watts.
    sim_watts: float = 300.0
    #: ``sim``: relative standard deviation of each window's joules.
    sim_noise: float = 0.01
    #: ``sim``: seed of the noise (None = fresh randomness).
    seed: int | None = None
    #: ``cpu-estimate``: watts per busy core.
    cpu_watts_per_core: float = 10.0
    #: ``rapl``: root of the powercap tree (tests point it at a fake tree).
    powercap_root: str = "/sys/class/powercap"
    #: Remote telemetry (``dcgm-exporter``, ``prometheus``): where to read it.
    urls: tuple[str, ...] = ()
    #: Remote telemetry: ``LABEL=VALUE[,VALUE]`` selections of the GPUs to measure.
    select: tuple[str, ...] = ()
    #: Remote telemetry: seconds between the counter's refreshes (None: learned at open).
    interval_s: float | None = None
    #: The session's tolerance: a sensor whose error bound exceeds it is refused.
    tolerance: float = 0.05


@dataclass
class WindowEnergy:
    """The outcome of one window as a sensor sees it.

    ``joules`` maps each measured domain (``gpu:0``, ``cpu:package-0``, ...) to the energy it
    used in the window; the window's energy is their sum. ``state`` holds what explains
    variance (temperatures, clocks, throttle reasons...), JSON-serialisable. ``warnings``
    are human-readable reasons this window may not compare well (another process on the
    GPU, thermal throttling...). ``invalid`` is set when the window must not be used at all
    (counter went backwards) and says why.
    """

    joules: dict[str, float]
    state: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    invalid: str | None = None

    @property
    def total(self) -> float:
        return float(sum(self.joules.values()))


class Sensor(abc.ABC):
    """An energy source. Lifecycle: ``open()`` once, many ``begin()``/``end()``, ``close()``.

    ``begin()`` returns an opaque token that ``end()`` turns into a :class:`WindowEnergy`;
    windows never nest within one sensor. Implementations import their optional
    dependencies lazily (inside ``open``), so building the registry costs nothing.
    """

    #: Name used by ``--tpw-sensor``.
    name: str = ""
    #: Whether joules are measured, estimated or simulated; printed with every result.
    provenance: Provenance = "estimated"
    #: One line on how joules are obtained ("NVML total-energy counter", ...).
    method: str = ""
    #: True when every process on the host reads the same counters (RAPL packages): under
    #: torch.distributed only one rank per host then contributes the window's joules.
    host_wide: bool = False

    def __init__(self, options: SensorOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device; raise :class:`SensorUnavailable` with the reason if impossible."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sensors hold nothing
        """Release the device. Called once at the end of the session; must not raise."""

    @abc.abstractmethod
    def domains(self) -> Sequence[str]:
        """The measured domains (``gpu:0``, ``cpu:package-0``...), valid after ``open``."""

    @abc.abstractmethod
    def min_window_s(self) -> float:
        """The shortest window this sensor can measure well, in seconds (after ``open``)."""

    @abc.abstractmethod
    def begin(self) -> object:
        """Start a window: read the counters now. Returns the token ``end`` needs."""

    @abc.abstractmethod
    def end(self, token: object) -> WindowEnergy:
        """Close the window opened by ``begin``: read again and return the energy used."""

    def describe(self) -> Mapping[str, Any]:
        """Identity of what is measured, for the environment record (models, UUIDs, driver).

        A device sensor lists its devices under ``"devices"``, one mapping each, with at
        least ``name`` and, where the vendor API gives them, ``power_limit_w`` (the enforced
        limit), ``max_power_w`` (the most the device can be set to draw) and
        ``clocks_policy`` (a short text: locked/application clocks, power profile...). The
        power limit and clocks policy are recorded with the software stack, so a change in
        either shows as a stack change; ``max_power_w`` bounds the plausibility check.
        """
        return {}

    def hardware(self) -> tuple[str, ...]:
        """Names of the measured hardware (e.g. ``("NVIDIA H100 80GB HBM3",)``) for the key."""
        return ()

    def legacy_hardware(self) -> tuple[str, ...] | None:
        """What :meth:`hardware` returned before its names changed (the CPU sensors' names
        before they counted CPUs), or None when they never changed: a baseline file still
        named after that older key is found and carried over (docs/sensors.md)."""
        return None

    def lock_ids(self) -> tuple[str, ...]:
        """Ids of the physical devices whose counters other processes could disturb.

        While a window is open the meter holds a host-wide lock on each (``locks.py``), so
        two processes never measure one device at once. Empty: nothing to lock.
        """
        return ()

    def capabilities(self) -> Capabilities:
        """What this sensor can do (after ``open``): by default its locked devices, no
        attribution to processes, and idle power when its joules are measured."""
        return Capabilities(self.lock_ids(), "none", self.provenance == "measured")

    def follow(self, work: FollowedWork | None) -> None:  # noqa: B027 - optional hook
        """Measure ``work`` (a served model's process tree) instead of this process; None
        measures this process again. What that changes depends on the attribution: the CPU
        time counted, or which processes on a measured device are the work's own."""

    def device_users(self) -> dict[str, set[int]]:
        """The processes using each device this sensor can see, measured or not, by device
        id (as :meth:`lock_ids` names them); empty when the sensor cannot tell."""
        return {}

    def edge_error_s(self) -> float:
        """Seconds of uncertainty a window gets from its two edges (a counter's refresh
        interval, an HTTP round trip...): at constant power a window of ``T`` seconds is off
        by at most this over ``T``. 0 when negligible against the window (the default)."""
        return 0.0

    def health(self) -> SensorHealth:
        """The sensor's view of its own counters so far (see :class:`SensorHealth`)."""
        return SensorHealth()

    def advice(self) -> str | None:
        """Once per session at most: advice about this host that affects every measurement
        (PyTorch using more threads than the cores left free...), or None."""
        return None
