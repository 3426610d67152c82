"""The meter: windows, warm-up, rounds, calibration, token counting, CUDA synchronisation.

One :class:`Meter` per test (the ``tpw`` fixture is one). It turns the user's work into
windows on a :class:`~pytest_tpw.sensors.Sensor`, counts tokens inside the same window,
and keeps each window as a :class:`Sample` of a named :class:`Measurement`. It decides
nothing about regressions; how many rounds to record is asked of a :data:`RoundPolicy`.
"""

from __future__ import annotations

import inspect
import math
import operator
import random
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from . import distributed
from .errors import MeasurementError, SensorError
from .locks import DeviceLocks
from .sensors import Provenance, Sensor, WindowEnergy

R = TypeVar("R")
TokenSpec = int | Callable[[Any], Any]

#: Asked after each recorded window: record another? Gets the samples recorded so far.
RoundPolicy = Callable[["Measurement"], bool]

#: Marks a loop-form sample whose window was shorter than the sensor's minimum.
SHORT_WINDOW = "window shorter than the sensor's minimum"

#: Starts a sample's note that its window waited for a device lock ("...<seconds> s for <ids>").
WAITED = "waited for the device lock: "

#: Longest run of invalid windows (counter reset...) tolerated before giving up.
MAX_INVALID_WINDOWS = 3


@dataclass
class Sample:
    """One recorded window: tokens and joules from the same stretch of work."""

    tokens: int
    joules: float
    seconds: float
    calls: int
    domains: dict[str, float]
    state: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_joule(self) -> float:
        return self.tokens / self.joules

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "joules": self.joules,
            "seconds": self.seconds,
            "calls": self.calls,
            "tokens_per_joule": self.tokens_per_joule,
            "domains": dict(self.domains),
            "state": self.state,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        return cls(tokens=int(data["tokens"]), joules=float(data["joules"]),
                   seconds=float(data["seconds"]), calls=int(data["calls"]),
                   domains=dict(data.get("domains", {})), state=dict(data.get("state", {})),
                   warnings=list(data.get("warnings", [])))


@dataclass(frozen=True)
class Result:
    """Summary of a finished measurement, as ``tpw.result`` gives it to the test."""

    name: str
    tokens_per_joule: float
    joules_per_token: float
    watts: float
    tokens_per_second: float
    n: int
    ci: tuple[float, float] | None
    verdict: str
    samples: tuple[float, ...]
    provenance: Provenance


@dataclass
class Measurement:
    """The samples one test takes under one name, and what is known about them."""

    nodeid: str
    name: str | None
    sensor: str
    provenance: Provenance
    samples: list[Sample] = field(default_factory=list)
    warmup: int = 0
    warnings: list[str] = field(default_factory=list)
    verdict: str = "NO_BASELINE"
    complete: bool = False
    _result: tuple[tuple[int, float, str], Result] | None = field(
        default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        """The measurement's identity: the node id, or ``nodeid::name``."""
        return self.nodeid if self.name is None else f"{self.nodeid}::{self.name}"

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    def lock_waits(self) -> list[float]:
        """Seconds each recorded window waited for a device lock (only those that waited)."""
        return [float(w[len(WAITED):].split(" s ", 1)[0])
                for s in self.samples for w in s.warnings if w.startswith(WAITED)]

    @property
    def joules(self) -> float:
        return sum(s.joules for s in self.samples)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.samples)

    def values(self) -> list[float]:
        return [s.tokens_per_joule for s in self.samples]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able), e.g. to travel from an xdist worker to the controller."""
        return {"nodeid": self.nodeid, "name": self.name, "sensor": self.sensor,
                "provenance": self.provenance, "warmup": self.warmup,
                "warnings": list(self.warnings), "verdict": self.verdict,
                "complete": self.complete, "samples": [s.to_dict() for s in self.samples]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(nodeid=data["nodeid"], name=data["name"], sensor=data["sensor"],
                   provenance=data["provenance"], warmup=int(data["warmup"]),
                   warnings=list(data["warnings"]), verdict=data["verdict"],
                   complete=bool(data["complete"]),
                   samples=[Sample.from_dict(s) for s in data["samples"]])

    def result(self, confidence: float) -> Result:
        """The summary of the samples so far (computed once per state, then reused)."""
        state = (len(self.samples), confidence, self.verdict)
        if self._result is not None and self._result[0] == state:
            return self._result[1]
        result = self._summarize(confidence)
        self._result = (state, result)
        return result

    def _summarize(self, confidence: float) -> Result:
        from .stats import summarize  # numpy/scipy only once something is measured

        summary = summarize(self.values(), confidence)
        ci = None
        if summary.ci_low is not None and summary.ci_high is not None:
            ci = (summary.ci_low, summary.ci_high)
        return Result(
            name=self.key,
            tokens_per_joule=summary.estimate,
            joules_per_token=1.0 / summary.estimate,
            watts=self.joules / self.seconds,
            tokens_per_second=self.tokens / self.seconds,
            n=summary.n,
            ci=ci,
            verdict=self.verdict,
            samples=tuple(self.values()),
            provenance=self.provenance,
        )


def fixed_rounds(n: int) -> RoundPolicy:
    """The simplest policy: record exactly ``n`` windows."""

    def more(measurement: Measurement) -> bool:
        return len(measurement.samples) < n

    return more


def cuda_sync(devices: tuple[int, ...] | None) -> None:
    """Wait for queued kernels on the measured devices, if PyTorch already uses CUDA.

    Never imports torch or initialises CUDA itself: a test that did not touch the GPU has
    nothing queued there.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_initialized():
        return
    for index in devices if devices is not None else range(cuda.device_count()):
        cuda.synchronize(index)


@dataclass(frozen=True)
class MeterConfig:
    """What one test's meter needs from the session settings (after marker overrides)."""

    enabled: bool
    warmup: int
    min_window_s: float | None
    max_delay_s: float
    confidence: float
    devices: tuple[int, ...] | None


class Window:
    """One ``with w:`` block of the loop form. Count tokens with :meth:`add_tokens`."""

    def __init__(self, meter: Meter, measurement: Measurement | None, index: int,
                 warmup: bool) -> None:
        self._meter = meter
        self._measurement = measurement
        self.index = index
        self.warmup = warmup
        self.tokens = 0
        self._token: object = None
        self._started: float | None = None
        self.entered = False

    def add_tokens(self, n: object) -> None:
        """Count ``n`` more tokens produced inside this window."""
        self.tokens += self._meter._as_tokens(n, self._where())

    def _where(self) -> str:
        name = self._measurement.key if self._measurement else self._meter.nodeid
        return f"{name} (window {self.index})"

    def __enter__(self) -> Window:
        self.entered = True
        if self._measurement is not None:
            self._token, self._started = self._meter._open_window()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._measurement is None or self._started is None:
            return
        if exc_type is not None:
            # the work failed: its exception propagates, the window is not recorded
            self._meter._abandon_window(self._token)
            return
        energy, seconds = self._meter._close_window(self._token, self._started)
        self._meter._accept(self._measurement, energy, seconds, self.tokens, 1,
                            record=not self.warmup, where=self._where(), loop_form=True)


class Meter:
    """The ``tpw`` fixture's object: measure tokens per joule of the work given to it."""

    def __init__(self, nodeid: str, config: MeterConfig, sensor: Sensor | None,
                 policy: RoundPolicy, *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None,
                 sync: Callable[[tuple[int, ...] | None], None] = cuda_sync,
                 locks: DeviceLocks | None = None) -> None:
        self.nodeid = nodeid
        self.config = config
        self.sensor = sensor
        self.policy = policy
        self.measurements: list[Measurement] = []
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._sync = sync
        self._locks = locks
        self._invalid_run = 0  # consecutive invalid windows (counter resets...)
        self._waited: tuple[float, list[str]] = (0.0, [])
        self._ranks: distributed.Ranks | None = None
        #: This process's rank when windows were aligned over a process group.
        self.rank: int | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when this run measures (``--tpw``); False runs the work once, unmeasured."""
        return self.config.enabled and self.sensor is not None

    @property
    def result(self) -> Result | None:
        """The last finished measurement's summary, or None when nothing was measured."""
        for m in reversed(self.measurements):
            if m.complete and m.samples:
                return m.result(self.config.confidence)
        return None

    @property
    def results(self) -> dict[str | None, Result]:
        """Every finished measurement of this test by name (``None`` key: the unnamed one)."""
        return {m.name: m.result(self.config.confidence)
                for m in self.measurements if m.complete and m.samples}

    @property
    def min_window_s(self) -> float | None:
        """The shortest window the sensor measures well (None without ``--tpw``).

        The loop form cannot repeat the work for you: size each ``with w:`` block to last
        at least this long.
        """
        return self._min_window() if self.enabled else None

    def __call__(self, fn: Callable[..., R], *args: Any, tokens: TokenSpec,
                 name: str | None = None, **kwargs: Any) -> R:
        """Measure ``fn(*args, **kwargs)``; ``tokens`` is an int or ``callable(result)``.

        Returns the last call's result. Without ``--tpw`` the call runs once, unmeasured.
        """
        __tracebackhide__ = True
        self._check_token_spec(tokens, name)
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{self.nodeid}: {fn!r} is a coroutine function; "
                            "use `await tpw.acall(...)`")
        if not self.enabled:
            return fn(*args, **kwargs)
        measurement = self._start(name)
        return self._measure_calls(measurement, lambda: fn(*args, **kwargs), tokens)

    async def acall(self, fn: Callable[..., Awaitable[R]], *args: Any, tokens: TokenSpec,
                    name: str | None = None, **kwargs: Any) -> R:
        """The call form for coroutine functions: ``await tpw.acall(client.complete, ...)``."""
        __tracebackhide__ = True
        self._check_token_spec(tokens, name)
        if not self.enabled:
            return await fn(*args, **kwargs)
        measurement = self._start(name)
        result: R | None = None
        with closing(_CallPlan(self, measurement).windows()) as plan:
            for window, calls in plan:
                count = 0
                for _ in range(calls):
                    result = await fn(*args, **kwargs)
                    count += self._count(tokens, result, measurement.key)
                while self._clock() - window.started < window.min_s:
                    result = await fn(*args, **kwargs)
                    count += self._count(tokens, result, measurement.key)
                    window.calls += 1
                window.tokens = count
        return result  # type: ignore[return-value]

    def rounds(self, name: str | None = None) -> Iterator[Window]:
        """Yield windows (warm-up first); each ``with w:`` block is one measured window."""
        self._check_name(name)
        if not self.enabled:
            yield Window(self, None, 0, warmup=False)
            return
        measurement = self._start(name)
        index = 0
        for _ in range(self.config.warmup):
            window = Window(self, measurement, index, warmup=True)
            yield window
            self._require_entered(window)
            index += 1
        while self.policy(measurement):
            window = Window(self, measurement, index, warmup=False)
            yield window
            self._require_entered(window)
            index += 1
        self._finish(measurement)

    # -- measurement lifecycle -------------------------------------------------------------

    def _start(self, name: str | None) -> Measurement:
        """A new measurement; every public entry has checked ``name`` already."""
        assert self.sensor is not None
        m = Measurement(self.nodeid, name, self.sensor.name, self.sensor.provenance,
                        warmup=self.config.warmup)
        self.measurements.append(m)
        return m

    def _finish(self, measurement: Measurement) -> None:
        measurement.complete = True
        short = [s.seconds for s in measurement.samples if SHORT_WINDOW in s.warnings]
        if short:
            measurement.warnings.append(
                f"{measurement.key}: {len(short)} of {len(measurement.samples)} windows were "
                f"shorter than the {measurement.sensor} sensor's {self._min_window():.3f} s "
                f"minimum (shortest {min(short):.3f} s); make each `with w:` block do more "
                "work")

    def _check_name(self, name: str | None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"{self.nodeid}: name= must be a non-empty string, got {name!r}")
        taken = {m.name for m in self.measurements}
        if name in taken:
            label = "the unnamed measurement" if name is None else f"measurement {name!r}"
            raise MeasurementError(
                f"{self.nodeid}: {label} was already taken in this test; "
                "give each measurement its own name=")

    def _min_window(self) -> float:
        assert self.sensor is not None
        if self.config.min_window_s is not None:
            return self.config.min_window_s
        return self.sensor.min_window_s()

    # -- the call form ---------------------------------------------------------------------

    def _measure_calls(self, measurement: Measurement, call: Callable[[], R],
                       tokens: TokenSpec) -> R:
        __tracebackhide__ = True
        result: R | None = None
        with closing(_CallPlan(self, measurement).windows()) as plan:
            for window, calls in plan:
                count = 0
                for _ in range(calls):
                    result = call()
                    count += self._count(tokens, result, measurement.key)
                # top up: a window shorter than the sensor's minimum is not worth reading
                while self._clock() - window.started < window.min_s:
                    result = call()
                    count += self._count(tokens, result, measurement.key)
                    window.calls += 1
                window.tokens = count
        return result  # type: ignore[return-value]

    # -- windows ---------------------------------------------------------------------------

    def _open_window(self) -> tuple[object, float]:
        assert self.sensor is not None
        if self.config.max_delay_s > 0:
            # a random phase keeps periodic work from aliasing with the sensor's sampling
            self._sleep(self._rng.uniform(0.0, self.config.max_delay_s))
        self._ranks = distributed.current()
        if self._locks is not None and self._ranks is None:
            # the ranks of one job measure their devices together, in aligned windows: a
            # lock between them would deadlock at the barrier; locks keep *independent*
            # processes (xdist workers, other jobs) apart
            self._waited = self._locks.acquire()
        try:
            self._sync(self.config.devices)
            if self._ranks is not None:
                self.rank = self._ranks.rank
                self._ranks.barrier()  # every rank's window starts together
            token = self.sensor.begin()
        except BaseException:
            self._release()
            raise
        return token, self._clock()

    def _release(self) -> None:
        if self._locks is not None:
            self._locks.release()

    def _abandon_window(self, token: object) -> None:
        """The work raised inside a window: close it on the sensor, keep nothing."""
        assert self.sensor is not None
        try:
            with suppress(Exception):  # the work's own exception is the one to report
                self.sensor.end(token)
        finally:
            self._release()

    def _close_window(self, token: object, started: float) -> tuple[WindowEnergy, float]:
        assert self.sensor is not None
        try:
            self._sync(self.config.devices)
            if self._ranks is not None:
                self._ranks.barrier()  # and ends when the slowest rank is done
            seconds = self._clock() - started
            energy = self.sensor.end(token)
        except SensorError as exc:
            raise SensorError(f"{self.nodeid}: {exc}") from exc
        finally:
            self._release()
        return energy, seconds

    def _accept(self, measurement: Measurement, energy: WindowEnergy, seconds: float,
                tokens: int, calls: int, *, record: bool, where: str,
                loop_form: bool = False) -> bool:
        """Validate one closed window and record it; False when it must be run again."""
        domains = self._selected_domains(energy.joules, where)
        joules = float(sum(domains.values()))
        invalid = energy.invalid
        if self._ranks is not None:
            assert self.sensor is not None
            own = distributed.counted_joules(joules, self.sensor.host_wide)
            tokens, joules, seconds, any_invalid = self._ranks.reduce(
                tokens, own, seconds, invalid is not None)
            domains = {f"rank{self._ranks.rank}:{d}": j for d, j in domains.items()}
            if any_invalid and invalid is None:
                invalid = "another rank's window was invalid"
        if invalid is not None:
            measurement.warnings.append(f"{where}: window discarded: {invalid}")
            self._invalid_run += 1
            if self._invalid_run >= MAX_INVALID_WINDOWS:
                raise MeasurementError(f"{where}: {self._invalid_run} windows in a row were "
                                       f"invalid ({invalid}); the sensor cannot be "
                                       "trusted now")
            return False
        self._invalid_run = 0
        self._validate_tokens(tokens, where)
        if not joules > 0 or math.isnan(joules):
            raise MeasurementError(
                f"{where}: the {measurement.sensor} sensor measured {joules:g} J over "
                f"{seconds:.4f} s; a window needs positive energy. The window may be shorter "
                "than the sensor can resolve: raise --tpw-min-window or give each window "
                "more work.")
        warnings = [*energy.warnings, *self._wait_warning()]
        if loop_form and seconds < self._min_window():
            warnings.append(SHORT_WINDOW)
        for text in warnings:
            if text != SHORT_WINDOW and not text.startswith(WAITED) and \
                    text not in measurement.warnings:
                measurement.warnings.append(text)
        if record:
            measurement.samples.append(Sample(tokens, joules, seconds, calls, domains,
                                              energy.state, warnings))
        return True

    def _wait_warning(self) -> list[str]:
        waited, devices = self._waited
        self._waited = (0.0, [])
        if not devices:
            return []
        return [f"{WAITED}{waited:.6f} s for {', '.join(devices)}"]

    def _selected_domains(self, joules: dict[str, float], where: str) -> dict[str, float]:
        """The window's energy on this test's devices (marker ``devices=``) only.

        The sensor measures every device of the session; a test that names its devices
        counts theirs (``gpu:<index>``) and every non-GPU domain.
        """
        devices = self.config.devices
        if devices is None or not any(d.startswith("gpu:") for d in joules):
            return dict(joules)
        wanted = {f"gpu:{i}" for i in devices}
        missing = sorted(wanted - set(joules))
        if missing:
            raise MeasurementError(
                f"{where}: devices {', '.join(missing)} are not measured in this session "
                f"(measured: {', '.join(sorted(joules))}); widen --tpw-devices")
        return {d: j for d, j in joules.items() if d in wanted or not d.startswith("gpu:")}

    # -- tokens ----------------------------------------------------------------------------

    def _check_token_spec(self, tokens: object, name: str | None) -> None:
        self._check_name(name)
        if callable(tokens):
            return
        self._as_tokens(tokens, self.nodeid, allow_zero=False)

    def _as_tokens(self, value: object, where: str, allow_zero: bool = True) -> int:
        if isinstance(value, bool):
            raise MeasurementError(f"{where}: tokens must be an integer count, got {value!r}")
        try:
            n = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise MeasurementError(
                f"{where}: tokens must be an integer count (or a callable returning one), "
                f"got {value!r} of type {type(value).__name__}") from None
        if n < 0 or (n == 0 and not allow_zero):
            raise MeasurementError(f"{where}: tokens must be positive, got {n}")
        return int(n)

    def _count(self, tokens: TokenSpec, result: object, where: str) -> int:
        if callable(tokens):
            return self._as_tokens(tokens(result), f"{where}: tokens(result)")
        return tokens

    def _validate_tokens(self, tokens: int, where: str) -> None:
        if tokens <= 0:
            raise MeasurementError(
                f"{where}: the window produced 0 tokens, so tokens per joule is undefined; "
                "count them with w.add_tokens(n) (loop form) or tokens= (call form)")

    def _require_entered(self, window: Window) -> None:
        if not window.entered:
            raise MeasurementError(f"{window._where()}: each window of tpw.rounds() must be "
                                   "used as `with w:` around the work it measures")


@dataclass
class _OpenWindow:
    started: float
    min_s: float
    calls: int
    tokens: int = 0


class _CallPlan:
    """The call form's schedule: calibrate, warm up, then record windows while the policy
    asks, each window repeating the call enough times to last the minimum window.

    ``windows()`` yields ``(window, calls)``; the caller makes the calls (sync or async), sets
    ``window.tokens``, and the plan closes and records the window on the next step.
    """

    def __init__(self, meter: Meter, measurement: Measurement) -> None:
        self.meter = meter
        self.m = measurement
        # the first window starts with one call and tops up to the minimum window: that is
        # the calibration; later windows plan their call count from the last one's timing
        self.calls = 1

    def windows(self) -> Generator[tuple[_OpenWindow, int], None, None]:
        meter, m = self.meter, self.m
        min_s = meter._min_window()
        warm_left = meter.config.warmup
        index = 0
        while warm_left > 0 or meter.policy(m):
            token, started = meter._open_window()
            window = _OpenWindow(started, min_s, self.calls)
            try:
                yield window, window.calls
            except GeneratorExit:
                meter._abandon_window(token)
                raise
            energy, seconds = meter._close_window(token, started)
            where = f"{m.key} (window {index})"
            recorded = meter._accept(m, energy, seconds, window.tokens, window.calls,
                                     record=warm_left == 0, where=where)
            self._recalibrate(seconds, window.calls, min_s)
            index += 1
            if recorded and warm_left > 0:
                warm_left -= 1
        meter._finish(m)

    def _recalibrate(self, seconds: float, calls: int, min_s: float) -> None:
        per_call = seconds / max(calls, 1)
        if per_call <= 0:
            self.calls = max(self.calls * 10, 1)
            return
        # aim 10 % above the minimum so that jitter rarely needs a top-up call
        self.calls = max(1, math.ceil(1.1 * min_s / per_call))
