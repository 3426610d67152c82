"""What tpw_server does with the session's sensor: it asks the sensor what it can do (its
capabilities) and asks it to follow the server; it never checks a sensor's name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_tpw.errors import TpwError
from pytest_tpw.sensors.base import Attribution, Capabilities, FollowedWork, SensorOptions
from pytest_tpw.sensors.cpu_estimate import CpuEstimateSensor
from pytest_tpw.sensors.sim import SimSensor
from pytest_tpw.serving.servers import Servers
from pytest_tpw.testing import FakeSensor


class DeclaringSensor(FakeSensor):
    """A sensor of any name that declares its attribution and who uses which device."""

    name = "vendor-x"

    def __init__(self, attribution: Attribution, users: dict[str, set[int]]) -> None:
        super().__init__(lock_ids=("GPU-A",))
        self.attribution = attribution
        self.users = users
        self.followed: list[FollowedWork | None] = []

    def capabilities(self) -> Capabilities:
        return Capabilities(("GPU-A",), self.attribution, False)

    def follow(self, work: FollowedWork | None) -> None:
        self.followed.append(work)

    def device_users(self) -> dict[str, set[int]]:
        return self.users


class StubServer:
    """A started server: pid 100 with a worker, pid 101."""

    pid = 100
    returncode: int | None = None
    argv = ("serve",)

    def process_tree_pids(self) -> list[int]:
        return [100, 101]

    def stop(self) -> None:
        self.returncode = 0


def aimed(sensor: DeclaringSensor, tmp_path: Path) -> Servers:
    servers = Servers(sensor, tmp_path)
    stub = StubServer()
    servers.started.append(stub)  # type: ignore[arg-type]
    servers._aim(stub)  # type: ignore[arg-type]
    return servers


def test_the_sensor_follows_the_server_then_this_process_again(tmp_path: Path) -> None:
    sensor = DeclaringSensor("process", {})
    servers = aimed(sensor, tmp_path)
    (work,) = sensor.followed
    assert work is not None and work.root_pid == 100 and work.pids() == {100, 101}
    servers.stop()
    assert sensor.followed[-1] is None
    assert servers.warnings == []


def test_a_device_sensor_refuses_a_server_on_a_device_it_does_not_measure(
    tmp_path: Path,
) -> None:
    sensor = DeclaringSensor("device", {"GPU-A": {1}, "GPU-B": {101}})
    with pytest.raises(TpwError, match=r"uses GPU\(s\) GPU-B, .* \(measured: GPU-A\)"):
        aimed(sensor, tmp_path)
    assert sensor.followed[-1] is None  # stopped, and aimed back at this process


def test_a_device_sensor_names_other_processes_on_the_servers_device(tmp_path: Path) -> None:
    sensor = DeclaringSensor("device", {"GPU-A": {100, 999, os.getpid()}, "GPU-C": {5}})
    servers = aimed(sensor, tmp_path)
    (warning,) = servers.warnings
    assert "GPU-A (pids 999)" in warning and "whole board" in warning


def test_a_process_or_host_sensor_does_not_ask_who_uses_a_device(tmp_path: Path) -> None:
    attributions: tuple[Attribution, ...] = ("process", "host", "none")
    for attribution in attributions:
        sensor = DeclaringSensor(attribution, {"GPU-B": {101}})
        assert aimed(sensor, tmp_path).warnings == []


def test_the_built_in_sensors_declare_what_they_can_do() -> None:
    sim = SimSensor(SensorOptions())
    sim.open()
    assert sim.capabilities() == Capabilities(("sim-device",), "none", False)
    cpu = CpuEstimateSensor(SensorOptions())
    cpu.open()
    assert cpu.capabilities() == Capabilities((), "process", False)
    cpu.follow(_Work(os.getpid()))
    assert cpu.followed_pid == os.getpid()
    cpu.follow(None)
    assert cpu.followed_pid is None


class _Work:
    def __init__(self, pid: int) -> None:
        self.root_pid = pid

    def pids(self) -> set[int]:
        return {self.root_pid}
