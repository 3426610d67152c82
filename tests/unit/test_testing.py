"""The shared test doubles and ``check_sensor``: good sensors pass, each broken rule is named."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Callable

import pytest

from pytest_tpw.sensors.base import SensorOptions, WindowEnergy
from pytest_tpw.sensors.cpu_estimate import CpuEstimateSensor
from pytest_tpw.sensors.sim import SimSensor
from pytest_tpw.testing import FakeClock, FakeSensor, check_sensor, make_meter


def cpu_work(seconds: float) -> Callable[[], None]:
    """Busy work for ``seconds`` of this process's CPU time (not wall time: a busy machine
    only makes it take longer)."""

    def work() -> None:
        start = time.process_time()
        total = 0
        while time.process_time() - start < seconds:
            total += sum(range(1000))

    return work


# -- good sensors pass ----------------------------------------------------------------------


def test_fake_sensor_passes_and_is_opened_and_closed() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock)
    check_sensor(sensor, work=lambda: clock.advance(1.0))
    assert sensor.opened and sensor.closed
    assert (sensor.begins, sensor.ends) == (3, 3)


def test_fake_sensor_with_invalid_windows_passes() -> None:
    # an invalid window that says why is within the contract
    clock = FakeClock()
    sensor = FakeSensor(clock, invalid=[True, False, True], domains=("gpu:0", "gpu:1"))
    check_sensor(sensor, work=lambda: clock.advance(1.0))
    assert sensor.ends == 3


def test_sim_sensor_passes() -> None:
    check_sensor(SimSensor(SensorOptions(sim_noise=0.0)))  # sleeps its 10 ms minimum


def test_cpu_estimate_sensor_passes() -> None:
    sensor = CpuEstimateSensor(SensorOptions())
    check_sensor(sensor, work=cpu_work(sensor.min_window_s()))


# -- broken sensors fail, naming the rule --------------------------------------------------


class _StateNotJson(FakeSensor):
    def end(self, token: object) -> WindowEnergy:
        energy = super().end(token)
        energy.state = {"read_at": dt.datetime(2026, 1, 1)}
        return energy


class _StateNan(FakeSensor):
    def end(self, token: object) -> WindowEnergy:
        energy = super().end(token)
        energy.state = {"temperature": math.nan}  # JSON has no NaN
        return energy


class _UnknownDomain(FakeSensor):
    def end(self, token: object) -> WindowEnergy:
        energy = super().end(token)
        return WindowEnergy({**energy.joules, "gpu:7": 1.0})


class _SilentlyInvalid(FakeSensor):
    def end(self, token: object) -> WindowEnergy:
        super().end(token)
        return WindowEnergy({"fake:0": 1.0}, invalid="")


class _BadProvenance(FakeSensor):
    provenance = "guessed"  # type: ignore[assignment]


class _DescribeNotJson(FakeSensor):
    def describe(self) -> dict[str, object]:
        return {"devices": {1, 2}}


#: name, how to build the broken sensor, the rule its failure names (plain text)
BROKEN: list[tuple[str, Callable[[FakeClock], FakeSensor], str]] = [
    (
        "no-domains",
        lambda c: FakeSensor(c, domains=()),
        "domains() must name at least one measured domain",
    ),
    (
        "negative-joules",
        lambda c: FakeSensor(c, watts=-50.0),
        "fake:0: a window used -50.0 J (negative)",
    ),
    ("zero-energy", lambda c: FakeSensor(c, watts=0.0), "a window of work must use some energy"),
    ("state-not-json", lambda c: _StateNotJson(c), "WindowEnergy.state must be JSON-serialisable"),
    ("state-nan", lambda c: _StateNan(c), "WindowEnergy.state must be JSON-serialisable"),
    ("describe-not-json", lambda c: _DescribeNotJson(c), "describe() must be JSON-serialisable"),
    (
        "unknown-domain",
        lambda c: _UnknownDomain(c),
        "end() reported domains not in domains(): ['gpu:7']",
    ),
    ("invalid-without-reason", lambda c: _SilentlyInvalid(c, invalid=[True]), "invalid says why"),
    ("zero-min-window", lambda c: FakeSensor(c, min_s=0.0), "min_window_s() must be > 0"),
    (
        "bad-provenance",
        lambda c: _BadProvenance(c),
        "provenance must be measured, estimated or simulated, got 'guessed'",
    ),
]


@pytest.mark.parametrize(
    ("build", "rule"), [(b, r) for _, b, r in BROKEN], ids=[name for name, _, _ in BROKEN]
)
def test_a_broken_sensor_fails_naming_the_rule(
    build: Callable[[FakeClock], FakeSensor], rule: str
) -> None:
    clock = FakeClock()
    sensor = build(clock)
    with pytest.raises(AssertionError, match=re.escape(rule)):
        check_sensor(sensor, work=lambda: clock.advance(1.0))
    assert sensor.closed  # closed again, whatever broke


# -- the fakes themselves --------------------------------------------------------------------


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(5.0)
    assert clock() == 5.0 and clock() == 5.0
    clock.advance(1.5)
    clock.sleep(0.5)  # a fake time.sleep
    assert clock() == 7.0


def test_fake_sensor_joules_are_watts_times_fake_time_split_over_domains() -> None:
    clock = FakeClock()
    sensor = FakeSensor(
        clock, watts=90.0, domains=("a", "b", "c"), warnings=["hot"], lock_ids=("dev-1",)
    )
    token = sensor.begin()
    clock.advance(2.0)
    energy = sensor.end(token)
    assert energy.joules == {"a": 60.0, "b": 60.0, "c": 60.0}  # 90 W x 2 s / 3
    assert energy.total == 180.0
    assert energy.warnings == ["hot"] and energy.invalid is None
    assert sensor.lock_ids() == ("dev-1",) and sensor.hardware() == ("Fake Device",)


def test_make_meter_measures_on_the_fake_clock() -> None:
    clock = FakeClock()
    meter = make_meter(FakeSensor(clock, watts=10.0), clock=clock, rounds=3, warmup=1)
    assert meter(lambda: clock.advance(1.0), tokens=20) is None
    (m,) = meter.measurements
    assert m.finished and len(m.samples) == 3  # the warm-up is not recorded
    assert [s.tokens_per_joule for s in m.samples] == [2.0, 2.0, 2.0]  # 20 tokens / 10 J
    assert meter.result is not None and meter.result.tokens_per_joule == pytest.approx(2.0)
