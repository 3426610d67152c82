"""One window on a sensor: the random phase, the device lock, CUDA sync, ranks, the reads.

A :class:`WindowRunner` owns everything between "start measuring now" and "here is a valid
sample": it sleeps a random phase (so periodic work does not alias with the sensor's
sampling), takes the host-wide device lock, synchronises the measured CUDA devices, aligns
torch.distributed ranks, reads the sensor at both ends, sums ranks, and validates the
energy. It knows nothing of tests, tokens callables or rounds: the meter (``meter.py``)
decides how many windows to run and what work goes in each.
"""

from __future__ import annotations

import math
import random
import socket
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from pytest_tpw.errors import MeasurementError, SensorError
from pytest_tpw.host import distributed
from pytest_tpw.host.locks import DeviceLocks
from pytest_tpw.measure.samples import SHORT_WINDOW, WAITED, Sample
from pytest_tpw.sensors.base import Sensor, WindowEnergy

#: Longest run of invalid windows (counter reset...) tolerated before giving up.
MAX_INVALID_WINDOWS = 3

Sync = Callable[[tuple[int, ...] | None], None]


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


@dataclass
class OpenWindow:
    """A window between its first and its last read."""

    token: object
    started: float
    ranks: distributed.Ranks | None
    waited: tuple[float, list[str]]


@dataclass(frozen=True)
class Spans:
    """What a deployment spans (marker ``gpus``, ``hosts``): a window that measured less
    cannot be its energy."""

    gpus: int | None = None
    hosts: tuple[str, ...] | None = None

    def check(self, domains: dict[str, float], where: str) -> None:
        """Raise :class:`MeasurementError` listing what the window measured when it is
        fewer GPUs, or lacks a host, than the deployment spans."""
        gpus = sorted(d for d in domains if d.startswith("gpu:"))
        hosts = {_host_of(d) for d in gpus}
        short = []
        if self.gpus is not None and len(gpus) < self.gpus:
            short.append(f"{len(gpus)} GPU(s) of the {self.gpus} it spans (gpus={self.gpus})")
        missing = sorted(set(self.hosts or ()) - hosts)
        if missing:
            short.append(f"no GPU of {', '.join(missing)} (hosts={list(self.hosts or ())})")
        if short:
            found = ", ".join(g[4:] for g in gpus) or "none"
            raise MeasurementError(
                f"{where}: the window measured {'; '.join(short)}. It measured: {found}. "
                "Widen the sensor's view (--tpw-devices, --tpw-sensor-url for each host, "
                "--tpw-sensor-select), or check that every exporter answered"
            )


def _host_of(domain: str) -> str:
    """``gpu:node1/GPU-...`` -> ``node1``; a local GPU (``gpu:0``) is this host's."""
    name = domain[4:]
    if "/" in name:
        return name.split("/", 1)[0]
    return socket.gethostname()


@dataclass(frozen=True)
class Reading:
    """A window's energy, read, waiting for its tokens."""

    window: OpenWindow
    seconds: float
    energy: WindowEnergy


@dataclass(frozen=True)
class Closed:
    """What one closed window gave: a sample, or the reason it had to be discarded."""

    sample: Sample | None
    discarded: str | None = None
    #: Warnings that concern the whole measurement (e.g. throttling), deduplicated by the meter.
    warnings: tuple[str, ...] = ()


class WindowRunner:
    """Opens and closes windows on one sensor for one test's settings."""

    def __init__(
        self,
        sensor: Sensor,
        *,
        devices: tuple[int, ...] | None = None,
        min_window_s: float | None = None,
        max_delay_s: float = 0.0,
        locks: DeviceLocks | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        sync: Sync = cuda_sync,
        spans: Spans | None = None,
    ) -> None:
        self.sensor = sensor
        self.spans = spans
        self.devices = devices
        self._min_window_s = min_window_s
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._sync = sync
        self._locks = locks
        self._invalid_run = 0  # consecutive invalid windows (counter resets...)
        #: Windows discarded as invalid, in all (the session's sensor-health count).
        self.invalid_windows = 0
        #: This process's rank when windows were aligned over a process group.
        self.rank: int | None = None

    @property
    def min_window_s(self) -> float:
        """The shortest window worth reading: the setting, else the sensor's own."""
        if self._min_window_s is not None:
            return self._min_window_s
        return self.sensor.min_window_s()

    def open(self, owner: str = "", *, just_before: Callable[[], None] | None = None) -> OpenWindow:
        """Start a window: random phase, lock, sync, barrier, first read.

        ``owner`` (the measurement's key) names the window in lock messages; ``just_before``
        runs right before the first read (a load ends its ramp's read there, so that the
        two windows meet).
        """
        if self.max_delay_s > 0:
            # a random phase keeps periodic work from aliasing with the sensor's sampling
            self._sleep(self._rng.uniform(0.0, self.max_delay_s))
        ranks = distributed.current()
        waited: tuple[float, list[str]] = (0.0, [])
        if self._locks is not None and ranks is None:
            # the ranks of one job measure their devices together, in aligned windows: a
            # lock between them would deadlock at the barrier; locks keep *independent*
            # processes (xdist workers, other jobs) apart
            waited = self._locks.acquire(owner)
        try:
            self._sync(self.devices)
            if ranks is not None:
                self.rank = ranks.rank
                ranks.barrier()  # every rank's window starts together
            if just_before is not None:
                just_before()
            token = self.sensor.begin()
        except BaseException:
            self._release()
            raise
        return OpenWindow(token, self.clock(), ranks, waited)

    def elapsed(self, window: OpenWindow) -> float:
        return self.clock() - window.started

    def abandon(self, window: OpenWindow) -> None:
        """The work raised inside a window: close it on the sensor, keep nothing."""
        try:
            with suppress(Exception):  # the work's own exception is the one to report
                self.sensor.end(window.token)
        finally:
            self._release()

    def close(
        self, window: OpenWindow, tokens: int, calls: int, where: str, *, loop_form: bool = False
    ) -> Closed:
        """Last read; returns the validated sample, or why the window was discarded.

        Raises :class:`MeasurementError` for a window that cannot give a sample at all (zero
        tokens, no energy) and after :data:`MAX_INVALID_WINDOWS` invalid windows in a row.
        """
        return self.sample(self.read(window, where), tokens, calls, where, loop_form=loop_form)

    def read(self, window: OpenWindow, where: str) -> Reading:
        """The window's last read (and the lock released), before its tokens are known: a
        load counts the tokens of its steady part once the requests in flight finished."""
        try:
            self._sync(self.devices)
            if window.ranks is not None:
                window.ranks.barrier()  # and ends when the slowest rank is done
            seconds = self.clock() - window.started
            energy = self.sensor.end(window.token)
        except SensorError as exc:
            raise SensorError(f"{where}: {exc}") from exc
        finally:
            self._release()
        return Reading(window, seconds, energy)

    def sample(
        self, reading: Reading, tokens: int, calls: int, where: str, *, loop_form: bool = False
    ) -> Closed:
        """A read window with its tokens: the validated sample, or why it was discarded."""
        window, seconds, energy = reading.window, reading.seconds, reading.energy
        domains = self.selected_domains(energy.joules, where)
        if self.spans is not None and energy.invalid is None:
            self.spans.check(domains, where)
        joules = float(sum(domains.values()))
        invalid = energy.invalid
        if window.ranks is not None:
            own = distributed.counted_joules(joules, self.sensor.host_wide)
            tokens, joules, seconds, any_invalid = window.ranks.reduce(
                tokens, own, seconds, invalid is not None
            )
            domains = {f"rank{window.ranks.rank}:{d}": j for d, j in domains.items()}
            if any_invalid and invalid is None:
                invalid = "another rank's window was invalid"
        if invalid is not None:
            self.invalid_windows += 1
            self._invalid_run += 1
            if self._invalid_run >= MAX_INVALID_WINDOWS:
                raise MeasurementError(
                    f"{where}: {self._invalid_run} windows in a row were invalid "
                    f"({invalid}); the sensor cannot be trusted now"
                )
            return Closed(None, discarded=f"{where}: window discarded: {invalid}")
        self._invalid_run = 0
        if tokens <= 0:
            raise MeasurementError(
                f"{where}: the window produced 0 tokens, so tokens per joule is undefined; "
                "count them with w.add_tokens(n) inside `with w:` (loop form) or tokens= "
                "(call form)"
            )
        if not joules > 0 or math.isnan(joules):
            raise MeasurementError(
                f"{where}: the {self.sensor.name} sensor measured {joules:g} J over "
                f"{seconds:.4f} s; a window needs positive energy. The window may be shorter "
                "than the sensor can resolve: raise --tpw-min-window or give each window "
                "more work."
            )
        notes = [*energy.warnings, *_wait_note(window.waited)]
        if loop_form and seconds < self.min_window_s:
            notes.append(SHORT_WINDOW)
        sample = Sample(tokens, joules, seconds, calls, domains, energy.state, notes)
        shared = tuple(n for n in energy.warnings if n != SHORT_WINDOW)
        return Closed(sample, warnings=shared)

    def _release(self) -> None:
        if self._locks is not None:
            self._locks.release()

    def selected_domains(self, joules: dict[str, float], where: str) -> dict[str, float]:
        """The window's energy on this test's devices (marker ``devices=``) only.

        The sensor measures every device of the session; a test that names its devices
        counts theirs (``gpu:<index>``) and every non-GPU domain.
        """
        devices = self.devices
        if devices is None or not any(d.startswith("gpu:") for d in joules):
            return dict(joules)
        wanted = {f"gpu:{i}" for i in devices}
        missing = sorted(wanted - set(joules))
        if missing:
            raise MeasurementError(
                f"{where}: devices {', '.join(missing)} are not measured in this session "
                f"(measured: {', '.join(sorted(joules))}); widen --tpw-devices"
            )
        return {d: j for d, j in joules.items() if d in wanted or not d.startswith("gpu:")}


def _wait_note(waited: tuple[float, list[str]]) -> list[str]:
    seconds, devices = waited
    if not devices:
        return []
    return [f"{WAITED}{seconds:.6f} s for {', '.join(devices)}"]
