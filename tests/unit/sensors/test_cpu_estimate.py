"""``cpu-estimate`` over a process tree, and host contention marking, on a fake ``/proc``."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.host import procstat
from pytest_tpw.sensors import SensorOptions
from pytest_tpw.sensors import cpu_estimate as cpu_module
from pytest_tpw.sensors.cpu_estimate import CpuEstimateSensor
from tests.fakes.fake_proc import TICKS, FakeProc

SERVER = 500  # root pid of the followed tree in the fake /proc


class ProcessClock:
    """Stands in for ``time.process_time``."""

    def __init__(self) -> None:
        self.now = 1.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ProcessClock:
    fake = ProcessClock()
    monkeypatch.setattr(cpu_module, "time", types.SimpleNamespace(process_time=fake))
    return fake


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    fake = FakeProc(tmp_path / "proc")
    fake.process(1, 0)
    fake.process(os.getpid(), 1)  # this test process
    fake.process(SERVER, 1)  # a server with one worker
    fake.process(SERVER + 1, SERVER)
    fake.host(busy=0, idle=0, cpus=4)
    return fake


def sensor_on(proc: FakeProc, watts: float = 10.0) -> CpuEstimateSensor:
    sensor = CpuEstimateSensor(SensorOptions(cpu_watts_per_core=watts))
    sensor.proc_root = proc.root
    sensor.open()
    return sensor


def test_tree_joules_are_the_trees_cpu_seconds_times_watts(
    proc: FakeProc, clock: ProcessClock
) -> None:
    sensor = sensor_on(proc, watts=8.0)
    sensor.follow_process_tree(SERVER)
    token = sensor.begin()
    # 1 s on 4 CPUs; server 0.5 s, its worker 1 s, a worker forked mid-window 0.5 s
    proc.set_cpu(SERVER, TICKS // 2)
    proc.set_cpu(SERVER + 1, TICKS)
    proc.process(SERVER + 2, SERVER, cpu=TICKS // 2, start=7777)
    # the test process, the server's client, used 0.25 CPU-s: part of the measured work's
    # busy cores (not a competitor), but not of the tree's joules
    clock.now += 0.25
    busy = 2 * TICKS + TICKS // 4
    proc.host(busy=busy, idle=4 * TICKS - busy, cpus=4)
    energy = sensor.end(token)
    assert energy.state["cpu_seconds"] == pytest.approx(2.0)
    assert energy.joules == {"cpu:process": pytest.approx(16.0)}  # 2 CPU-s x 8 W
    assert energy.state["own_busy_cores"] == pytest.approx(2.25)
    assert energy.state["other_busy_cores"] == pytest.approx(0.0, abs=0.02)
    assert energy.state["appeared_pids"] == [SERVER + 2]
    assert energy.warnings == []  # nobody else was busy
    assert sensor.min_window_s() == sensor.tree_min_window_s >= 0.5
    assert "process tree of pid 500" in sensor.method
    described = sensor.describe()
    assert described["follows"] == "pid 500 and children"
    assert json.loads(json.dumps(described)) == described


def test_follow_self_goes_back_to_process_time(proc: FakeProc, clock: ProcessClock) -> None:
    sensor = sensor_on(proc)
    sensor.follow_process_tree(SERVER)
    assert sensor.followed_pid == SERVER
    sensor.follow_self()
    assert sensor.followed_pid is None and sensor.min_window_s() == 0.1
    token = sensor.begin()
    clock.now += 0.25
    proc.set_cpu(SERVER, 10 * TICKS)  # the server's time no longer counts
    proc.host(busy=TICKS // 4, idle=4 * TICKS - TICKS // 4, cpus=4)
    energy = sensor.end(token)
    assert energy.joules == {"cpu:process": pytest.approx(2.5)}  # 0.25 CPU-s x 10 W
    assert energy.state["cpu_seconds"] == pytest.approx(0.25)
    assert sensor.describe()["follows"] == "self"


def test_following_a_missing_process_is_refused(proc: FakeProc) -> None:
    sensor = sensor_on(proc)
    with pytest.raises(SensorUnavailable, match="pid 999"):
        sensor.follow_process_tree(999)
    assert sensor.followed_pid is None


def test_root_gone_before_the_window_is_an_error(proc: FakeProc, clock: ProcessClock) -> None:
    sensor = sensor_on(proc)
    sensor.follow_process_tree(SERVER)
    proc.remove(SERVER + 1)
    proc.remove(SERVER)
    (proc.root / "stat").unlink()  # and no host time to fall back on
    token = sensor.begin()
    with pytest.raises(SensorError, match="pid 500"):
        sensor.end(token)


def test_root_exiting_mid_window_warns(proc: FakeProc, clock: ProcessClock) -> None:
    sensor = sensor_on(proc)
    sensor.follow_process_tree(SERVER)
    token = sensor.begin()
    proc.remove(SERVER + 1)
    proc.remove(SERVER)
    proc.host(busy=TICKS, idle=3 * TICKS, cpus=4)
    energy = sensor.end(token)
    assert any("pid 500" in w and "exited" in w for w in energy.warnings)
    assert energy.state["vanished_pids"] == [SERVER, SERVER + 1]


def test_busy_neighbours_are_marked_in_a_self_window(proc: FakeProc, clock: ProcessClock) -> None:
    sensor = sensor_on(proc)
    token = sensor.begin()
    # 1 s on 4 CPUs: this process 1 core, something else 2.5 cores
    clock.now += 1.0
    proc.set_cpu(os.getpid(), TICKS)
    proc.set_cpu(1, int(2.5 * TICKS))  # init is not in this process's tree
    proc.host(busy=int(3.5 * TICKS), idle=TICKS // 2, cpus=4)
    energy = sensor.end(token)
    assert energy.joules == {"cpu:process": pytest.approx(10.0)}
    assert energy.state["host_busy_cores"] == pytest.approx(3.5, abs=0.02)
    assert energy.state["own_busy_cores"] == pytest.approx(1.0, abs=0.02)
    assert energy.state["other_busy_cores"] == pytest.approx(2.5, abs=0.02)
    assert energy.state["host_cpus"] == 4
    assert len(energy.warnings) == 1
    assert "2.50 of 4 CPU cores" in energy.warnings[0]


def test_quiet_host_gives_no_warning(proc: FakeProc, clock: ProcessClock) -> None:
    sensor = sensor_on(proc)
    token = sensor.begin()
    clock.now += 1.0
    proc.set_cpu(os.getpid(), TICKS)
    proc.host(busy=TICKS + TICKS // 10, idle=3 * TICKS - TICKS // 10, cpus=4)  # 0.1 core else
    energy = sensor.end(token)
    assert energy.warnings == []
    assert energy.state["other_busy_cores"] == pytest.approx(0.1, abs=0.02)


def test_torch_threads_warning_is_given_once(
    proc: FakeProc, clock: ProcessClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = types.ModuleType("torch")
    torch.get_num_threads = lambda: 4  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(procstat, "usable_cpus", lambda: 4)
    sensor = sensor_on(proc)
    assert sensor.advice() is None  # 4 threads, 4 free cores
    token = sensor.begin()
    clock.now += 1.0
    proc.set_cpu(1, 2 * TICKS)  # others keep 2 of the 4 cores busy
    proc.host(busy=2 * TICKS, idle=2 * TICKS, cpus=4)
    sensor.end(token)
    text = sensor.advice()
    assert text is not None and "torch.set_num_threads(2)" in text
    assert sensor.advice() is None  # once per sensor


def test_end_rejects_a_foreign_token(proc: FakeProc) -> None:
    sensor = sensor_on(proc)
    with pytest.raises(TypeError, match="token"):
        sensor.end(1.0)


def test_health_says_whether_cpu_time_advanced(proc: FakeProc, clock: ProcessClock) -> None:
    sensor = sensor_on(proc)
    assert sensor.health().counter_advances is None  # no window yet
    sensor.end(sensor.begin())  # no CPU time at all
    health = sensor.health()
    assert health.counter_advances is False
    assert health.notes == ("1 window(s) counted no CPU time",)
    token = sensor.begin()
    clock.now += 0.5
    sensor.end(token)
    health = sensor.health()
    assert (health.counter_advances, health.update_period_s, health.dropped_reads) == (
        True,
        None,
        0,
    )
