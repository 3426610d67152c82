"""Test doubles and a contract check, for pytest-tpw's own suite and for sensor authors.

- :class:`FakeClock`: time that moves only when told (``advance``), so no test depends on
  how fast the machine is.
- :class:`FakeSensor`: a sensor whose joules are ``watts x`` fake-clock time, with optional
  scripted invalid windows, GPU domains, device ids and warnings.
- :func:`make_meter`: a measuring ``tpw`` meter on any sensor, without a pytest session.
- :func:`check_sensor`: the contract every sensor must keep; call it from a test of your own
  sensor (``check_sensor(MySensor(SensorOptions()))``) and it raises ``AssertionError``
  naming the broken rule.

No pytest import: usable from any test runner.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_tpw.host.locks import DeviceLocks
from pytest_tpw.measure.meter import FixedRounds, Meter, RoundPolicy
from pytest_tpw.measure.window import Sync, WindowRunner
from pytest_tpw.sensors.base import (
    Capabilities,
    Provenance,
    Sensor,
    SensorOptions,
    WindowEnergy,
)


class FakeClock:
    """A clock that moves only when told to; call it for the time, ``advance`` to move it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance  # a fake ``time.sleep``: sleeping is advancing


class FakeSensor(Sensor):
    """Joules = ``watts`` x fake-clock time, per domain; scripted invalid windows.

    ``domains`` default to one (``fake:0``); with several, the watts are split evenly.
    ``invalid`` scripts which windows the sensor declares invalid (a counter reset), in
    order. ``warnings`` are attached to every window.
    """

    name = "fake"
    provenance: Provenance = "simulated"
    method = "fake: watts x fake-clock time"

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        *,
        watts: float = 100.0,
        min_s: float = 1.0,
        invalid: Sequence[bool] = (),
        domains: Sequence[str] = ("fake:0",),
        lock_ids: Sequence[str] = (),
        warnings: Sequence[str] = (),
        options: SensorOptions | None = None,
    ) -> None:
        super().__init__(options or SensorOptions())
        self.clock = clock or time.perf_counter
        self.watts = watts
        self.min_s = min_s
        self.invalid = list(invalid)
        self._domains = tuple(domains)
        self._lock_ids = tuple(lock_ids)
        self._warnings = list(warnings)
        self.begins = 0
        self.ends = 0
        self.opened = False
        self.closed = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True

    def domains(self) -> Sequence[str]:
        return self._domains

    def min_window_s(self) -> float:
        return self.min_s

    def begin(self) -> object:
        self.begins += 1
        return self.clock()

    def end(self, token: object) -> WindowEnergy:
        self.ends += 1
        assert isinstance(token, float)
        bad = self.invalid.pop(0) if self.invalid else False
        each = self.watts * (self.clock() - token) / len(self._domains)
        return WindowEnergy(
            {d: each for d in self._domains},
            warnings=list(self._warnings),
            invalid="counter went backwards" if bad else None,
        )

    def hardware(self) -> tuple[str, ...]:
        return ("Fake Device",)

    def lock_ids(self) -> tuple[str, ...]:
        return self._lock_ids


def make_meter(
    sensor: Sensor,
    *,
    clock: FakeClock | None = None,
    rounds: int | RoundPolicy = 5,
    warmup: int = 1,
    delay: float = 0.0,
    min_window_s: float | None = None,
    devices: tuple[int, ...] | None = None,
    sync: Sync | None = None,
    locks: DeviceLocks | None = None,
    nodeid: str = "test_x.py::test_y",
    confidence: float = 0.90,
) -> Meter:
    """A measuring meter on ``sensor``, as the ``tpw`` fixture gives one, without pytest.

    ``rounds`` is a fixed window count or a round policy; with a ``clock``, the meter's
    clock and its random start delay use it (the delay advances it).
    """
    runner_clock: Callable[[], float] = clock if clock is not None else time.perf_counter
    runner = WindowRunner(
        sensor,
        devices=devices,
        min_window_s=min_window_s,
        max_delay_s=delay,
        locks=locks,
        clock=runner_clock,
        sleep=clock.advance if clock is not None else time.sleep,
        rng=random.Random(0),
        sync=sync or (lambda devices: None),
    )
    policy = FixedRounds(rounds) if isinstance(rounds, int) else rounds
    return Meter(nodeid, runner, policy, warmup=warmup, confidence=confidence)


def check_sensor(
    sensor: Sensor, *, windows: int = 3, work: Callable[[], Any] | None = None
) -> None:
    """Check the sensor contract: open, a few windows around ``work``, close.

    ``work`` should keep the device busy at least ``sensor.min_window_s()`` (the default
    sleeps that long). Raises ``AssertionError`` naming the broken rule.
    """
    sensor.open()
    try:
        assert sensor.name, "a sensor needs a name (used by --tpw-sensor)"
        assert sensor.provenance in ("measured", "estimated", "simulated"), (
            f"provenance must be measured, estimated or simulated, got {sensor.provenance!r}"
        )
        assert sensor.method, "a sensor says how its joules are obtained (method)"
        domains = list(sensor.domains())
        assert domains, "domains() must name at least one measured domain after open()"
        min_s = sensor.min_window_s()
        assert math.isfinite(min_s) and min_s > 0, f"min_window_s() must be > 0, got {min_s}"
        _check_plain(sensor.describe(), "describe()")
        assert all(isinstance(h, str) for h in sensor.hardware()), "hardware() gives strings"
        assert all(isinstance(i, str) for i in sensor.lock_ids()), "lock_ids() gives strings"
        caps = sensor.capabilities()
        assert isinstance(caps, Capabilities), "capabilities() returns a Capabilities"
        assert caps.attribution in ("process", "device", "host", "none"), (
            f"attribution must be process, device, host or none, got {caps.attribution!r}"
        )
        assert all(isinstance(d, str) for d in caps.devices), "capabilities().devices: strings"
        assert not caps.idle_power or sensor.provenance == "measured", (
            "only a measured sensor's idle window measures idle power"
        )
        users = sensor.device_users()
        assert all(isinstance(d, str) and isinstance(p, set) for d, p in users.items()), (
            "device_users() maps device ids to sets of pids"
        )
        sensor.follow(None)  # following this process again is always allowed
        busy = work or (lambda: time.sleep(min_s))
        for _ in range(windows):
            token = sensor.begin()
            busy()
            energy = sensor.end(token)
            assert isinstance(energy, WindowEnergy), "end() must return a WindowEnergy"
            if energy.invalid is not None:
                assert isinstance(energy.invalid, str) and energy.invalid, "invalid says why"
                continue
            unknown = set(energy.joules) - set(domains)
            assert not unknown, f"end() reported domains not in domains(): {sorted(unknown)}"
            for domain, joules in energy.joules.items():
                assert isinstance(joules, float | int) and math.isfinite(joules), (
                    f"{domain}: joules must be a finite number, got {joules!r}"
                )
                assert joules >= 0, f"{domain}: a window used {joules} J (negative)"
            assert energy.total > 0, "a window of work must use some energy"
            _check_plain(energy.state, "WindowEnergy.state")
            assert all(isinstance(w, str) for w in energy.warnings), "warnings are strings"
    finally:
        sensor.close()


def _check_plain(value: object, what: str) -> None:
    """JSON-able data only: it goes into --tpw-json and the baselines."""
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} must be JSON-serialisable: {exc}") from None
    assert isinstance(value, Mapping), f"{what} must be a mapping"


__all__ = ["FakeClock", "FakeSensor", "check_sensor", "make_meter"]
