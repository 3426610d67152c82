"""The ``sim`` and ``cpu-estimate`` sensors, on fake clocks."""

from __future__ import annotations

import json
import statistics
import types

import pytest

from pytest_tpw.sensors import SensorOptions
from pytest_tpw.sensors import cpu_estimate as cpu_module
from pytest_tpw.sensors import sim as sim_module
from pytest_tpw.sensors.cpu_estimate import CpuEstimateSensor
from pytest_tpw.sensors.sim import SimSensor


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(sim_module, "time", types.SimpleNamespace(perf_counter=clock))
    return clock


@pytest.fixture
def cpu_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(1.0)
    monkeypatch.setattr(cpu_module, "time", types.SimpleNamespace(process_time=clock))
    return clock


def opened_sim(**options: object) -> SimSensor:
    sensor = SimSensor(SensorOptions(**options))  # type: ignore[arg-type]
    sensor.open()
    return sensor


# -- sim ---------------------------------------------------------------------------------------


def test_sim_joules_are_watts_times_seconds_without_noise(sim_clock: FakeClock) -> None:
    sensor = opened_sim(sim_watts=300.0, sim_noise=0.0, seed=0)
    token = sensor.begin()
    sim_clock.now += 2.5
    energy = sensor.end(token)
    # 300 W x 2.5 s = 750 J exactly
    assert energy.joules == {"sim:0": 750.0}
    assert energy.total == 750.0
    assert energy.state == {"watts": 300.0}
    assert energy.warnings == [] and energy.invalid is None


def test_sim_windows_are_independent(sim_clock: FakeClock) -> None:
    sensor = opened_sim(sim_watts=40.0, sim_noise=0.0, seed=0)
    first = sensor.begin()
    sim_clock.now += 1.0
    assert sensor.end(first).total == 40.0  # 40 W x 1 s
    sim_clock.now += 5.0  # idle time between windows is not counted
    second = sensor.begin()
    sim_clock.now += 0.25
    assert sensor.end(second).total == 10.0  # 40 W x 0.25 s


def run_windows(sensor: SimSensor, clock: FakeClock, n: int) -> list[float]:
    out = []
    for _ in range(n):
        token = sensor.begin()
        clock.now += 1.0
        out.append(sensor.end(token).total)
    return out


def test_sim_noise_has_the_configured_spread(sim_clock: FakeClock) -> None:
    sensor = opened_sim(sim_watts=100.0, sim_noise=0.05, seed=1234)
    relative = [j / 100.0 - 1.0 for j in run_windows(sensor, sim_clock, 4000)]
    # each window: 100 W x 1 s x (1 + N(0, 0.05)); over 4000 windows the sample sd has a
    # relative standard error of about 1 / sqrt(2 x 4000) = 1.1 %, the mean one of
    # 0.05 / sqrt(4000) = 0.0008
    assert statistics.stdev(relative) == pytest.approx(0.05, rel=0.1)
    assert abs(statistics.fmean(relative)) < 0.005


def test_sim_seed_makes_noise_reproducible(sim_clock: FakeClock) -> None:
    a = run_windows(opened_sim(sim_noise=0.02, seed=7), sim_clock, 20)
    b = run_windows(opened_sim(sim_noise=0.02, seed=7), sim_clock, 20)
    c = run_windows(opened_sim(sim_noise=0.02, seed=8), sim_clock, 20)
    assert a == b
    assert a != c
    assert len(set(a)) > 1  # noise actually varies window to window


def test_sim_huge_noise_never_gives_negative_joules(sim_clock: FakeClock) -> None:
    sensor = opened_sim(sim_noise=5.0, seed=3)
    assert min(run_windows(sensor, sim_clock, 200)) >= 0.0


def test_sim_identity() -> None:
    sensor = opened_sim(sim_watts=300.0, sim_noise=0.01)
    assert sensor.name == "sim"
    assert sensor.provenance == "simulated"
    assert sensor.hardware() == ("sim",)  # the same device whatever its watts
    assert "300 W" in sensor.method and "1.0% noise" in sensor.method
    assert sensor.domains() == ("sim:0",)
    assert sensor.min_window_s() > 0
    assert sensor.describe() == {"watts": 300.0, "noise": 0.01}
    json.dumps(sensor.describe())
    assert opened_sim(sim_watts=42.5).hardware() == ("sim",)


def test_sim_with_real_clock_is_close_to_watts_times_elapsed() -> None:
    import time

    sensor = opened_sim(sim_watts=1000.0, sim_noise=0.0)
    start = time.perf_counter()
    token = sensor.begin()
    time.sleep(0.02)
    energy = sensor.end(token)
    elapsed = time.perf_counter() - start
    # joules / watts is the window's wall time: at least the 20 ms slept, at most elapsed
    assert 0.02 <= energy.total / 1000.0 <= elapsed


# -- cpu-estimate ------------------------------------------------------------------------------


def test_cpu_estimate_joules_are_cpu_seconds_times_watts(cpu_clock: FakeClock) -> None:
    sensor = CpuEstimateSensor(SensorOptions(cpu_watts_per_core=8.0))
    sensor.open()
    token = sensor.begin()
    cpu_clock.now += 0.25
    energy = sensor.end(token)
    # 0.25 CPU-seconds x 8 W per busy core = 2 J
    assert energy.joules == {"cpu:process": 2.0}
    assert energy.state["cpu_seconds"] == 0.25
    # the host's CPU figures join it only when the window's real time spans a /proc clock
    # tick (a loaded machine between begin and end): never anything else
    contention = {
        "host_busy_cores", "own_busy_cores", "other_busy_cores", "host_cpus",
        "cpu_resolution_cores",
    }  # fmt: skip
    assert set(energy.state) - {"cpu_seconds"} <= contention


def test_cpu_estimate_idle_window_is_zero_joules(cpu_clock: FakeClock) -> None:
    sensor = CpuEstimateSensor(SensorOptions())
    sensor.open()
    assert sensor.end(sensor.begin()).total == 0.0  # no CPU time, no estimated energy


def test_cpu_estimate_multi_core_time_scales(cpu_clock: FakeClock) -> None:
    sensor = CpuEstimateSensor(SensorOptions(cpu_watts_per_core=10.0))
    sensor.open()
    token = sensor.begin()
    cpu_clock.now += 4.0  # e.g. four cores busy for one wall second
    assert sensor.end(token).total == 40.0  # 4 CPU-s x 10 W


def test_cpu_estimate_identity() -> None:
    sensor = CpuEstimateSensor(SensorOptions(cpu_watts_per_core=12.5))
    sensor.open()
    assert sensor.name == "cpu-estimate"
    assert sensor.provenance == "estimated"
    assert "no energy counter" in sensor.method
    assert "12.5 W" in sensor.method
    assert sensor.domains() == ("cpu:process",)
    assert sensor.min_window_s() > 0
    described = sensor.describe()
    assert json.loads(json.dumps(described)) == described
    assert described["watts_per_core"] == 12.5
    assert isinstance(described["cpu"], str) and described["cpu"]
    hardware = sensor.hardware()
    # never keyed with rapl; the usable CPUs keep runners of different sizes apart
    assert hardware == (f"{described['cpu']} {described['usable_cpus']}c cpu-estimate",)
    assert sensor.legacy_hardware() == (f"{described['cpu']} cpu-estimate",)
