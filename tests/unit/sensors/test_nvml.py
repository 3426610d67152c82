"""The ``nvml`` sensor against NVML traces replayed by a stand-in ``pynvml``.

The traces under tests/data/ are SYNTHETIC until real H100 recordings replace them (see
tests/data/README.md); expected joules here are computed by hand from the trace rows.
"""

from __future__ import annotations

import bisect
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.nvml import NvmlSensor
from tests.fakes import fake_pynvml
from tests.fakes.fake_pynvml import FakeClock, FakeNvml, Faults, ScriptedError, load_trace

H100 = "nvml_synthetic_h100.json"
P100 = "nvml_synthetic_p100_no_counter.json"
#: Hopper traces the trace-generic tests replay; add recorded ones here (tests/data/README.md).
HOPPER_TRACES = [H100]
UUID0 = "GPU-3f2a9c1e-7b4d-4e8a-9c61-0d2f5b7a8e13"
UUID1 = "GPU-b81d04c7-52e9-4f3b-a6d0-e4c9317f2b58"
ENERGY, POWER, TEMP, SM, MEM, REASONS = 1, 2, 3, 4, 5, 6  # trace row columns after t_s
#: Integrated instant power vs the counter's ground truth, over a >= 1.5 s window.
INTEGRATION_TOLERANCE = 0.015

Install = Callable[..., FakeNvml]
MakeSensor = Callable[..., NvmlSensor]


@pytest.fixture(autouse=True)
def _no_cuda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Install:
    """Put a fake ``pynvml`` replaying a trace (file name or dict) into ``sys.modules``."""

    def _install(trace: str | dict[str, Any] = H100, faults: Faults | None = None) -> FakeNvml:
        data = load_trace(trace) if isinstance(trace, str) else trace
        fake = FakeNvml(data, FakeClock(), faults)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return _install


@pytest.fixture
def make_sensor() -> Iterator[MakeSensor]:
    """An NvmlSensor on the fake's clock, opened unless asked not to; closed at teardown."""
    made: list[NvmlSensor] = []

    def _make(
        fake: FakeNvml, devices: tuple[int, ...] | None = None, open_: bool = True
    ) -> NvmlSensor:
        sensor = NvmlSensor(SensorOptions(devices=devices))
        sensor.clock = fake.clock.now
        sensor.sleep = fake.clock.sleep
        sensor.wait = fake.clock.wait
        made.append(sensor)
        if open_:
            sensor.open()
        return sensor

    yield _make
    for sensor in made:
        sensor.close()


def rows_of(fake: FakeNvml, nvml_index: int) -> list[list[float]]:
    rows: list[list[float]] = fake.trace["devices"][nvml_index]["rows"]
    return rows


def mid(rows: Sequence[Sequence[float]], k: int) -> float:
    """Halfway between row k and row k+1: far from any counter update."""
    return (rows[k][0] + rows[k + 1][0]) / 2.0


def counter_at(rows: Sequence[Sequence[float]], t: float) -> float:
    times = [row[0] for row in rows]
    return rows[bisect.bisect_right(times, t) - 1][ENERGY]


def true_joules(rows: Sequence[Sequence[float]], a: float, b: float) -> float:
    """The energy the board drew in [a, b]: the counter, linearly interpolated between updates."""
    times = [row[0] for row in rows]
    energy = [row[ENERGY] for row in rows]
    return float(np.interp(b, times, energy) - np.interp(a, times, energy)) / 1000.0


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tpw-nvml-power"]


# -- the stand-in itself -----------------------------------------------------------------


def test_fake_matches_the_real_pynvml_names_and_constants() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        real = importlib.import_module("pynvml")
    if isinstance(real, FakeNvml):  # pragma: no cover - only if a test leaked its fake
        pytest.fail("sys.modules['pynvml'] is a fake")
    constants = [n for n in vars(fake_pynvml) if n.startswith("NVML_")]
    assert constants
    for name in constants:
        assert getattr(fake_pynvml, name) == getattr(real, name), name
    functions = [n for n in dir(FakeNvml) if n.startswith("nvml")]
    missing = [n for n in functions if not hasattr(real, n)]
    assert not missing
    for name in (n for n in dir(FakeNvml) if n.startswith("NVMLError_")):
        assert getattr(FakeNvml, name).code == getattr(real, name)().value, name


# -- update period, minimum window, read latency -----------------------------------------


@pytest.mark.parametrize("trace", HOPPER_TRACES)
def test_update_period_is_measured_from_the_counter(
    install: Install, make_sensor: MakeSensor, trace: str
) -> None:
    fake = install(trace)
    sensor = make_sensor(fake)
    t_start = fake.clock.now()
    sensor.min_window_s()
    t_end = fake.clock.now()
    for device in sensor.describe()["devices"]:
        times = [row[0] for row in rows_of(fake, device["nvml_index"])]
        inside = [t for t in times if t_start < t <= t_end]
        expected = float(np.median(np.diff(inside)))
        assert device["update_period"] == "measured"
        # Each change is seen at most one poll (0.5 ms + reads) late.
        assert device["update_period_s"] == pytest.approx(expected, abs=0.001)
        assert device["update_period_s"] == pytest.approx(0.1, abs=0.005)


def test_min_window_is_ten_counter_updates(install: Install, make_sensor: MakeSensor) -> None:
    sensor = make_sensor(install())
    periods = [d["update_period_s"] for d in sensor.describe()["devices"]]
    assert sensor.min_window_s() == pytest.approx(10 * max(periods))
    assert 0.95 < sensor.min_window_s() < 1.05


def test_read_latency_is_recorded(install: Install, make_sensor: MakeSensor) -> None:
    fake = install()
    sensor = make_sensor(fake)
    latency = sensor.describe()["devices"][0]["read_latency_s"]
    assert latency["median"] == pytest.approx(fake.trace["call_latency_s"]["default"])
    assert latency["p99"] >= latency["median"]
    assert latency["reads"] > 100


def test_a_still_counter_falls_back_to_an_assumed_period(
    install: Install, make_sensor: MakeSensor
) -> None:
    trace = load_trace(H100)
    for device in trace["devices"]:
        for row in device["rows"]:
            row[ENERGY] = 1_000_000
    sensor = make_sensor(install(trace))
    sensor.poll_s = 0.5
    assert sensor.min_window_s() == pytest.approx(10 * 0.1)
    described = sensor.describe()
    assert {d["update_period"] for d in described["devices"]} == {"assumed"}
    assert any("assumed" in note for note in described["notes"])


# -- joules --------------------------------------------------------------------------------


@pytest.mark.parametrize("trace", HOPPER_TRACES)
@pytest.mark.parametrize("index", [0, 1])
def test_window_joules_are_the_counter_delta(
    install: Install, make_sensor: MakeSensor, trace: str, index: int
) -> None:
    fake = install(trace)
    if index >= len(fake.devices):
        pytest.skip(f"{trace} has {len(fake.devices)} board(s)")
    sensor = make_sensor(fake, devices=(index,))
    rows = rows_of(fake, index)
    fake.clock.advance_to(mid(rows, 10))
    token = sensor.begin()
    fake.clock.advance_to(mid(rows, 30))
    window = sensor.end(token)
    expected = (rows[30][ENERGY] - rows[10][ENERGY]) / 1000.0
    assert window.joules == {f"gpu:{index}": pytest.approx(expected, abs=1e-9)}
    assert expected > 0
    assert window.invalid is None


def test_two_devices_are_two_domains(install: Install, make_sensor: MakeSensor) -> None:
    fake = install()
    sensor = make_sensor(fake)
    assert sensor.domains() == ("gpu:0", "gpu:1")
    assert sensor.hardware() == ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
    fake.clock.advance_to(1.05)
    t0 = fake.clock.now()
    token = sensor.begin()
    fake.clock.advance_to(3.05)
    window = sensor.end(token)
    for index in (0, 1):
        rows = rows_of(fake, index)
        # begin and end read within a few ms of t0 and 3.05 s; no update lies that close.
        expected = (counter_at(rows, 3.05) - counter_at(rows, t0)) / 1000.0
        assert window.joules[f"gpu:{index}"] == pytest.approx(expected, abs=1e-9)


def test_window_state_records_temperature_clocks_and_limits(
    install: Install, make_sensor: MakeSensor
) -> None:
    fake = install()
    sensor = make_sensor(fake, devices=(0,))
    rows = rows_of(fake, 0)
    fake.clock.advance_to(mid(rows, 8))
    token = sensor.begin()
    fake.clock.advance_to(mid(rows, 40))
    state = sensor.end(token).state["gpu:0"]
    json.dumps(state)
    assert state["energy_source"] == "counter"
    assert state["temperature_c"] == {"start": rows[8][TEMP], "end": rows[40][TEMP]}
    assert state["sm_clock_mhz"] == rows[40][SM]
    assert state["mem_clock_mhz"] == rows[40][MEM]
    assert state["enforced_power_limit_w"] == 700.0
    assert state["clocks_event_reasons"] == []
    assert state["other_pids"] == []
    assert state["seconds"] == pytest.approx(mid(rows, 40) - mid(rows, 8), abs=0.01)


def test_no_sampling_thread_when_the_counter_is_used(
    install: Install, make_sensor: MakeSensor
) -> None:
    fake = install()
    sensor = make_sensor(fake)
    token = sensor.begin()
    assert sampler_threads() == []
    fake.clock.advance(1.0)
    sensor.end(token)


# -- integrated instant power --------------------------------------------------------------


@pytest.mark.parametrize("trace", HOPPER_TRACES)
def test_without_a_counter_instant_power_is_integrated(
    install: Install, make_sensor: MakeSensor, trace: str
) -> None:
    fake = install(trace, Faults(no_energy_counter=True))
    sensor = make_sensor(fake, devices=(0,))
    assert "integrated instant power" in sensor.method
    assert "counter" not in sensor.method
    rows = rows_of(fake, 0)
    fake.clock.advance_to(mid(rows, 10))
    t0 = fake.clock.now()
    token = sensor.begin()
    assert len(sampler_threads()) == 1
    fake.clock.run_for(2.0)
    window = sensor.end(token)
    t1 = fake.clock.now()
    assert sampler_threads() == []
    expected = true_joules(rows, t0, t1)
    assert window.joules["gpu:0"] == pytest.approx(expected, rel=INTEGRATION_TOLERANCE)
    state = window.state["gpu:0"]
    assert "NVML_FI_DEV_POWER_INSTANT" in state["energy_source"]
    assert state["power_samples"] > 80  # every 20 ms over 2 s


def test_a_pre_volta_trace_integrates_instant_power(
    install: Install, make_sensor: MakeSensor
) -> None:
    fake = install(P100)
    sensor = make_sensor(fake)
    assert sensor.method.startswith("integrated instant power")
    assert sensor.min_window_s() == pytest.approx(10 * 0.02, abs=0.01)
    rows = rows_of(fake, 0)
    fake.clock.advance_to(1.0)
    t0 = fake.clock.now()
    token = sensor.begin()
    fake.clock.run_for(1.5)
    window = sensor.end(token)
    expected = true_joules(rows, t0, fake.clock.now())
    assert window.joules["gpu:0"] == pytest.approx(expected, rel=INTEGRATION_TOLERANCE)
    assert sensor.describe()["devices"][0]["energy_source"].startswith("integrated")


def test_power_usage_is_integrated_only_where_it_is_instantaneous(
    install: Install, make_sensor: MakeSensor
) -> None:
    pascal = install(P100, Faults(no_instant_field=True))
    sensor = make_sensor(pascal)
    assert "nvmlDeviceGetPowerUsage" in sensor.describe()["devices"][0]["energy_source"]
    hopper = install(H100, Faults(no_energy_counter=True, no_instant_field=True))
    with pytest.raises(SensorUnavailable, match="1-second average"):
        make_sensor(hopper)


def test_an_nvml_error_on_the_sampling_thread_names_the_device(
    install: Install, make_sensor: MakeSensor
) -> None:
    # Field-value calls: 1 probe in open, 1 first sample in begin, then the thread's.
    fault = ScriptedError("nvmlDeviceGetFieldValues", call=20)
    fake = install(P100, Faults(errors=[fault]))
    sensor = make_sensor(fake)
    token = sensor.begin()
    fake.clock.run_for(1.0)
    with pytest.raises(SensorError, match=r"gpu:0 .*Tesla P100.*GPU-5c0e6a2d.*GPU is lost"):
        sensor.end(token)
    assert sampler_threads() == []


# -- which devices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [UUID0, UUID1]),
        ("0,1", [UUID0, UUID1]),
        ("1,0", [UUID1, UUID0]),
        ("1", [UUID1]),
        (f"{UUID1},{UUID0}", [UUID1, UUID0]),
        ("GPU-b81d,GPU-3f2a", [UUID1, UUID0]),
        ("b81d04c7", [UUID1]),
        ("0,7,1", [UUID0]),  # CUDA ignores an invalid entry and everything after it
        ("1,1", [UUID1]),
    ],
)
def test_cuda_visible_devices_maps_process_indices_to_boards(
    install: Install,
    make_sensor: MakeSensor,
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None,
    expected: list[str],
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    sensor = make_sensor(install())
    devices = sensor.describe()["devices"]
    assert [d["uuid"] for d in devices] == expected
    assert [d["index"] for d in devices] == list(range(len(expected)))
    assert sensor.domains() == tuple(f"gpu:{i}" for i in range(len(expected)))


def test_reordered_devices_read_the_right_board(
    install: Install, make_sensor: MakeSensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    fake = install()
    sensor = make_sensor(fake, devices=(0,))
    rows = rows_of(fake, 1)  # process gpu:0 is NVML device 1
    fake.clock.advance_to(mid(rows, 12))
    token = sensor.begin()
    fake.clock.advance_to(mid(rows, 22))
    window = sensor.end(token)
    expected = (rows[22][ENERGY] - rows[12][ENERGY]) / 1000.0
    assert window.joules == {"gpu:0": pytest.approx(expected, abs=1e-9)}


@pytest.mark.parametrize(
    ("local_rank", "world", "devices", "expected"),
    [
        ("1", "2", None, ["gpu:1"]),  # torchrun rank 1 of 2: its own GPU only
        ("0", "2", None, ["gpu:0"]),
        ("1", "1", None, ["gpu:0", "gpu:1"]),  # one rank: every GPU
        ("5", "8", None, ["gpu:0", "gpu:1"]),  # fewer GPUs than ranks here: no guess
        ("1", "2", (0,), ["gpu:0"]),  # --tpw-devices wins
    ],
)
def test_a_torchrun_rank_measures_its_local_gpu(
    install: Install,
    make_sensor: MakeSensor,
    monkeypatch: pytest.MonkeyPatch,
    local_rank: str,
    world: str,
    devices: tuple[int, ...] | None,
    expected: list[str],
) -> None:
    """Summed over ranks, a board measured by every rank would count once per rank."""
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    sensor = make_sensor(install(), devices=devices)
    assert list(sensor.domains()) == expected


@pytest.mark.parametrize("visible", ["", "-1"])
def test_no_visible_gpu_is_unavailable(
    install: Install, make_sensor: MakeSensor, monkeypatch: pytest.MonkeyPatch, visible: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fake = install()
    with pytest.raises(SensorUnavailable, match="no GPU is visible"):
        make_sensor(fake)
    assert fake.init_count == 0  # open() shut NVML down again


def test_mig_instances_are_unavailable(
    install: Install, make_sensor: MakeSensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-4f0a2b1c-1d2e-5f6a-8b9c-0d1e2f3a4b5c")
    with pytest.raises(SensorUnavailable, match=r"MIG instance.*per-instance energy"):
        make_sensor(install())


@pytest.mark.parametrize(
    ("visible", "devices", "message"),
    [
        (None, (2,), r"GPU index 2 was requested but this process sees 2 GPU"),
        ("1", (1,), r"GPU index 1 was requested but this process sees 1 GPU"),
    ],
)
def test_a_device_index_beyond_the_visible_ones_is_unavailable(
    install: Install,
    make_sensor: MakeSensor,
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None,
    devices: tuple[int, ...],
    message: str,
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(SensorUnavailable, match=message):
        make_sensor(install(), devices=devices)


def _mixed_models() -> dict[str, Any]:
    trace = load_trace(H100)
    trace["devices"][1]["name"] = "NVIDIA H100 PCIe"
    return trace


@pytest.mark.parametrize(
    ("visible", "order", "noted"),
    [
        (None, None, True),
        ("0,1", None, True),
        ("0,1", "PCI_BUS_ID", False),
        (f"{UUID0},{UUID1}", None, False),
    ],
)
def test_index_mapping_states_its_pci_order_assumption_on_mixed_models(
    install: Install,
    make_sensor: MakeSensor,
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None,
    order: str | None,
    noted: bool,
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if order is not None:
        monkeypatch.setenv("CUDA_DEVICE_ORDER", order)
    notes = make_sensor(install(_mixed_models())).describe()["notes"]
    assert any("PCI bus order" in note for note in notes) == noted


def test_identical_models_need_no_order_note(install: Install, make_sensor: MakeSensor) -> None:
    notes = make_sensor(install()).describe()["notes"]
    assert not any("PCI bus order" in note for note in notes)


# -- what spoils a window ------------------------------------------------------------------


def test_a_counter_going_backwards_invalidates_the_window(
    install: Install, make_sensor: MakeSensor
) -> None:
    fake = install(faults=Faults(counter_reset_at_s={0: 2.0}))
    sensor = make_sensor(fake)
    fake.clock.advance_to(1.05)
    token = sensor.begin()
    fake.clock.advance_to(3.05)
    window = sensor.end(token)
    assert window.invalid is not None
    assert "gpu:0 (NVIDIA H100 80GB HBM3, GPU-3f2a9c1e" in window.invalid
    assert "went backwards" in window.invalid
    assert "driver was probably reloaded" in window.invalid
    assert window.joules["gpu:0"] == 0.0
    assert window.joules["gpu:1"] > 1000  # the other board is unaffected


def test_an_nvml_error_mid_window_names_the_device(
    install: Install, make_sensor: MakeSensor
) -> None:
    # Energy reads of NVML device 1: 1 probe in open, 1 in begin, the 3rd in end.
    fault = ScriptedError("nvmlDeviceGetTotalEnergyConsumption", call=3)
    fake = install(faults=Faults(errors=[fault]))
    sensor = make_sensor(fake, devices=(1,))
    token = sensor.begin()
    fake.clock.advance(1.0)
    with pytest.raises(SensorError) as caught:
        sensor.end(token)
    message = str(caught.value)
    for part in ("gpu:1", "NVML index 1", "NVIDIA H100 80GB HBM3", UUID1, "GPU is lost"):
        assert part in message
    assert "nvidia-smi" in message


def test_another_process_on_the_gpu_is_a_warning(install: Install, make_sensor: MakeSensor) -> None:
    fake = install(faults=Faults(processes={0: [os.getpid(), 4242]}))
    sensor = make_sensor(fake)
    fake.clock.advance_to(1.05)
    token = sensor.begin()
    fake.clock.advance_to(2.55)
    window = sensor.end(token)
    assert window.state["gpu:0"]["other_pids"] == [4242]
    assert window.state["gpu:1"]["other_pids"] == []
    assert len(window.warnings) == 1
    warning = window.warnings[0]
    assert warning.startswith("gpu:0 (NVIDIA H100 80GB HBM3, GPU-3f2a9c1e")
    assert "another process (pid 4242)" in warning
    assert "its energy is counted in this window" in warning


def test_the_measured_process_tree_is_not_another_process(
    install: Install, make_sensor: MakeSensor
) -> None:
    # a served model measured from its client: the server's processes are the work itself
    fake = install(faults=Faults(processes={0: [os.getpid(), 5000, 5001, 4242]}))
    sensor = make_sensor(fake)
    caps = sensor.capabilities()
    assert caps.attribution == "device" and caps.idle_power
    assert caps.devices == sensor.lock_ids() and all(d.startswith("GPU-") for d in caps.devices)
    assert sensor.device_users()[caps.devices[0]] == {os.getpid(), 5000, 5001, 4242}
    sensor.follow(_Server(5000, {5000, 5001}))
    fake.clock.advance_to(1.05)
    token = sensor.begin()
    fake.clock.advance_to(2.55)
    window = sensor.end(token)
    assert window.state["gpu:0"]["other_pids"] == [4242]
    assert len(window.warnings) == 1 and "pid 4242" in window.warnings[0]
    assert "5000" not in window.warnings[0]
    sensor.follow(None)  # the server stopped: its processes would be others again
    assert sensor.own_pids() == {os.getpid()}


class _Server:
    """What a sensor follows: a served model's root and its processes."""

    def __init__(self, root_pid: int, pids: set[int]) -> None:
        self.root_pid = root_pid
        self._pids = pids

    def pids(self) -> set[int]:
        return self._pids


def _capped_window(fake: FakeNvml, sensor: NvmlSensor) -> tuple[list[str], list[str]]:
    rows = rows_of(fake, 1)
    first = next(k for k, row in enumerate(rows) if int(row[REASONS]) & 0x4)
    fake.clock.advance_to(mid(rows, first))
    token = sensor.begin()
    fake.clock.advance_to(mid(rows, first + 12))  # past the end of the cap
    window = sensor.end(token)
    return window.warnings, window.state["gpu:1"]["clocks_event_reasons"]


def test_power_capping_is_a_warning(install: Install, make_sensor: MakeSensor) -> None:
    fake = install()
    warnings_, reasons = _capped_window(fake, make_sensor(fake, devices=(1,)))
    assert reasons == ["SwPowerCap"]
    assert len(warnings_) == 1
    assert warnings_[0].startswith("gpu:1 (NVIDIA H100 80GB HBM3, GPU-b81d04c7")
    assert "SwPowerCap (software power cap)" in warnings_[0]


def test_legacy_throttle_reasons_are_used_on_older_drivers(
    install: Install, make_sensor: MakeSensor
) -> None:
    faults = Faults(function_not_found={"nvmlDeviceGetCurrentClocksEventReasons"})
    fake = install(faults=faults)
    _, reasons = _capped_window(fake, make_sensor(fake, devices=(1,)))
    assert reasons == ["SwPowerCap"]
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] >= 2


def test_an_idle_gpu_is_not_a_warning(install: Install, make_sensor: MakeSensor) -> None:
    fake = install()
    sensor = make_sensor(fake, devices=(0,))
    rows = rows_of(fake, 0)
    fake.clock.advance_to(mid(rows, 0))
    token = sensor.begin()
    fake.clock.advance_to(mid(rows, 3))
    window = sensor.end(token)
    assert window.state["gpu:0"]["clocks_event_reasons"] == ["GpuIdle"]
    assert window.warnings == []


def test_begin_twice_without_end_is_an_error(install: Install, make_sensor: MakeSensor) -> None:
    sensor = make_sensor(install())
    sensor.begin()
    with pytest.raises(SensorError, match="still open"):
        sensor.begin()


# -- availability --------------------------------------------------------------------------


def test_without_pynvml_the_sensor_is_unavailable_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(SensorUnavailable, match="pip install nvidia-ml-py"):
        NvmlSensor(SensorOptions()).open()


def test_nvml_init_failure_is_unavailable(install: Install, make_sensor: MakeSensor) -> None:
    fake = install(faults=Faults(init_error=fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(SensorUnavailable, match=r"Driver Not Loaded.*nvidia-smi"):
        make_sensor(fake)


class _DeprecatedPynvmlFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Behaves like the ``pynvml`` 13.x redirector: warns on import, then serves the fake."""

    def __init__(self, fake: FakeNvml) -> None:
        self.fake = fake

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "pynvml":
            return None
        warnings.warn("The pynvml package is deprecated.", FutureWarning, stacklevel=2)
        return importlib.util.spec_from_loader(name, self)

    def exec_module(self, module: ModuleType) -> None:
        for name in dir(self.fake):
            if not name.startswith("_"):
                setattr(module, name, getattr(self.fake, name))


def test_the_deprecated_pynvml_future_warning_does_not_break_strict_suites(
    install: Install, make_sensor: MakeSensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install()
    monkeypatch.delitem(sys.modules, "pynvml")
    monkeypatch.setattr(sys, "meta_path", [_DeprecatedPynvmlFinder(fake), *sys.meta_path])
    sensor = make_sensor(fake)  # filterwarnings=error: a leaked FutureWarning would raise
    assert sensor.domains() == ("gpu:0", "gpu:1")


def test_importing_the_module_does_not_import_pynvml() -> None:
    code = "import sys, pytest_tpw.sensors.nvml; print('pynvml' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_close_never_raises(install: Install, make_sensor: MakeSensor) -> None:
    NvmlSensor(SensorOptions()).close()  # never opened
    fake = install(P100, Faults(shutdown_error=True))
    sensor = make_sensor(fake)
    sensor.begin()
    assert len(sampler_threads()) == 1
    sensor.close()  # with a window open and nvmlShutdown failing
    sensor.close()
    assert sampler_threads() == []
    assert fake.calls["nvmlShutdown"] == 1


# -- description ---------------------------------------------------------------------------


def test_describe_is_json_and_names_the_stack(install: Install, make_sensor: MakeSensor) -> None:
    described = make_sensor(install()).describe()
    assert json.loads(json.dumps(described)) == described
    assert described["driver_version"] == "550.54.15"
    assert described["cuda_driver_version"] == "12.4"
    assert described["nvml_version"] == "12.550.54.15"
    device = described["devices"][0]
    assert device["uuid"] == UUID0
    assert device["name"] == "NVIDIA H100 80GB HBM3"
    assert device["vbios"] == "96.00.99.00.01"
    assert device["power_limit_w"] == 700.0
    assert (device["persistence_mode"], device["mig_mode"], device["ecc_mode"]) == (
        "enabled",
        "disabled",
        "enabled",
    )
    assert device["pcie"] == {"gen_current": 5, "width_current": 16, "gen_max": 5, "width_max": 16}
    assert device["energy_source"] == "counter"
    assert device["scope"] == "board (GPU)"


def test_unsupported_queries_describe_as_none(install: Install, make_sensor: MakeSensor) -> None:
    trace = load_trace(P100)
    del trace["devices"][0]["vbios"]
    described = make_sensor(install(trace)).describe()
    assert json.loads(json.dumps(described)) == described
    assert described["devices"][0]["mig_mode"] is None  # no MIG before Ampere
    assert described["devices"][0]["vbios"] is None


def test_grace_hopper_energy_is_labelled_module_scope(
    install: Install, make_sensor: MakeSensor
) -> None:
    trace = copy.deepcopy(load_trace(H100))
    for device in trace["devices"]:
        device["name"] = "NVIDIA GH200 480GB"
    sensor = make_sensor(install(trace))
    assert "module (CPU+GPU+memory)" in sensor.method
    assert sensor.describe()["devices"][0]["scope"] == "module (CPU+GPU+memory)"


# -- power limits, clocks policy, health ----------------------------------------------------


def test_describe_gives_the_maximum_power_and_the_clocks_policy(
    install: Install, make_sensor: MakeSensor
) -> None:
    device = make_sensor(install()).describe()["devices"][0]
    assert (device["power_limit_w"], device["max_power_w"]) == (700.0, 700.0)
    assert device["clocks_policy"] == "default application clocks"


def test_the_maximum_falls_back_to_the_default_limit_and_may_be_unknown(
    install: Install, make_sensor: MakeSensor
) -> None:
    trace = copy.deepcopy(load_trace(H100))
    del trace["devices"][0]["power_limit_constraints_mw"]
    trace["devices"][0]["default_power_limit_mw"] = 650_000
    del trace["devices"][1]["power_limit_constraints_mw"]
    del trace["devices"][1]["default_power_limit_mw"]
    devices = make_sensor(install(trace)).describe()["devices"]
    assert [d["max_power_w"] for d in devices] == [650.0, None]


def test_set_application_clocks_and_auto_boost_are_the_clocks_policy(
    install: Install, make_sensor: MakeSensor
) -> None:
    trace = copy.deepcopy(load_trace(P100))
    trace["devices"][0]["applications_clocks_mhz"] = {"sm": 1000, "mem": 715}
    trace["devices"][0]["auto_boost"] = [0, 1]
    (device,) = make_sensor(install(trace)).describe()["devices"]
    assert device["clocks_policy"] == (
        "application clocks SM 1000 MHz, memory 715 MHz (default SM 1189, memory 715); "
        "auto boost off"
    )
    for key in ("applications_clocks_mhz", "default_applications_clocks_mhz", "auto_boost"):
        del trace["devices"][0][key]
    (device,) = make_sensor(install(trace)).describe()["devices"]
    assert device["clocks_policy"] is None  # NVML said nothing: nothing claimed


def test_health_reports_the_measured_period_and_the_dropped_reads(
    install: Install, make_sensor: MakeSensor
) -> None:
    fake = install(faults=Faults(counter_reset_at_s={0: 2.0}))
    sensor = make_sensor(fake)
    health = sensor.health()
    assert health.counter_advances is True
    assert health.update_period_s == pytest.approx(0.1, abs=0.005)
    assert health.dropped_reads == 0 and health.notes == ()
    fake.clock.advance_to(1.05)
    token = sensor.begin()
    fake.clock.advance_to(3.05)
    assert sensor.end(token).invalid is not None
    health = sensor.health()
    assert health.dropped_reads == 1
    assert health.notes == ("1 window(s) discarded: the energy counter went backwards",)


def test_health_of_a_still_counter_says_it_does_not_advance(
    install: Install, make_sensor: MakeSensor
) -> None:
    trace = load_trace(H100)
    for device in trace["devices"]:
        for row in device["rows"]:
            row[ENERGY] = 1_000_000
    sensor = make_sensor(install(trace))
    sensor.poll_s = 0.5
    health = sensor.health()
    assert health.counter_advances is False
    assert health.update_period_s is None
    assert "did not change while polled" in health.notes[0] and "gpu:1" in health.notes[0]


def test_a_failed_read_mid_window_is_a_dropped_read(
    install: Install, make_sensor: MakeSensor
) -> None:
    fault = ScriptedError("nvmlDeviceGetTotalEnergyConsumption", call=3)
    fake = install(faults=Faults(errors=[fault]))
    sensor = make_sensor(fake, devices=(1,))
    token = sensor.begin()
    fake.clock.advance(1.0)
    with pytest.raises(SensorError):
        sensor.end(token)
    assert sensor.health().dropped_reads == 1
