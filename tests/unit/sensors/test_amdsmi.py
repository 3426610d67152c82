"""The ``amdsmi`` sensor against a stand-in ``amdsmi`` built from its documented shapes."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.amdsmi import AmdSmiSensor
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.testing import FakeClock, check_sensor
from tests.fakes.energy_trace import U64, Board, RaisingFinder
from tests.fakes.fake_amdsmi import AmdGpu, FakeAmdSmi, ProcessorHandle, mi250

UUID0 = "a1ff74a1-0000-1000-80c1-3d0e5f7a9b01"
UUID1 = "b2ff74a1-0000-1000-80c2-4e1f608bac12"
UUID2 = "c3ff74a1-0000-1000-80c3-5f2071c9bd23"
RES = 15.259  # microjoules per count

Install = Callable[..., FakeAmdSmi]
Make = Callable[..., AmdSmiSensor]


def hold(event: threading.Event, seconds: float) -> bool:
    """The sampler's wait: no samples between a window's edges (bounded in real time)."""
    return event.wait(10.0)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ROCR_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "CUDA_VISIBLE_DEVICES",
        "LOCAL_RANK",
        "WORLD_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Install:
    def _install(gpus: list[AmdGpu] | None = None, **kwargs: Any) -> FakeAmdSmi:
        fake = FakeAmdSmi(gpus if gpus is not None else [AmdGpu()], clock, **kwargs)
        monkeypatch.setitem(sys.modules, "amdsmi", fake)
        return fake

    return _install


@pytest.fixture
def make(clock: FakeClock) -> Iterator[Make]:
    made: list[AmdSmiSensor] = []

    def _make(devices: tuple[int, ...] | None = None, open_: bool = True) -> AmdSmiSensor:
        sensor = AmdSmiSensor(SensorOptions(devices=devices))
        sensor.clock, sensor.sleep, sensor.wait = clock, clock.sleep, hold
        made.append(sensor)
        if open_:
            sensor.open()
        return sensor

    yield _make
    for sensor in made:
        sensor.close()


def gpus(n: int, watts: float = 300.0) -> list[AmdGpu]:
    uuids = [UUID0, UUID1, UUID2]
    return [AmdGpu(uuid=uuids[i], board=Board(watts + 100 * i)) for i in range(n)]


def window(sensor: AmdSmiSensor, clock: FakeClock, seconds: float) -> Any:
    token = sensor.begin()
    clock.advance(seconds)
    return sensor.end(token)


# -- the contract, and joules --------------------------------------------------------------


def test_passes_the_sensor_contract(install: Install, clock: FakeClock) -> None:
    install(gpus(2))
    sensor = AmdSmiSensor(SensorOptions())
    sensor.clock, sensor.sleep, sensor.wait = clock, clock.sleep, hold
    check_sensor(sensor, work=lambda: clock.advance(1.0))


def test_joules_are_the_accumulator_delta_times_its_resolution(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install(gpus(2))
    sensor = make()
    t0 = clock()
    energy = window(sensor, clock, 2.0)
    t1 = clock()
    for amd_index, domain in enumerate(("gpu:0", "gpu:1")):
        counts = fake.counts_at(amd_index, t1) - fake.counts_at(amd_index, t0)
        assert energy.joules[domain] == counts * (RES * 1e-6)
    assert energy.joules["gpu:0"] == pytest.approx(300.0 * 2.0, abs=300 * 0.002)
    assert energy.joules["gpu:1"] == pytest.approx(400.0 * 2.0, abs=400 * 0.002)
    assert energy.invalid is None
    assert sensor.method.startswith("amdsmi energy accumulator")


def test_the_pre_6_2_1_power_key_is_read_alike(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install(gpus(1), legacy_energy_key=True)
    sensor = make()
    assert set(fake.amdsmi_get_energy_count(ProcessorHandle(0))) == {
        "power",
        "counter_resolution",
        "timestamp",
    }
    t0 = clock()
    energy = window(sensor, clock, 1.0)
    counts = fake.counts_at(0, clock()) - fake.counts_at(0, t0)
    assert energy.joules["gpu:0"] == counts * (RES * 1e-6)
    assert energy.joules["gpu:0"] > 0


def test_the_counter_wrapping_at_64_bits_is_a_wrap_not_a_reset(
    install: Install, make: Make, clock: FakeClock
) -> None:
    per_second = round(300.0 / (RES * 1e-6))
    board = Board(300.0, start_counts=U64 - 2 * per_second)  # wraps about 2 s in
    fake = install([AmdGpu(uuid=UUID0, board=board)])
    sensor = make()
    clock.advance(1.0)
    t0 = clock()
    energy = window(sensor, clock, 2.0)
    start, end = fake.counts_at(0, t0), fake.counts_at(0, clock())
    assert end < start  # the fake did wrap
    assert energy.invalid is None
    assert energy.joules["gpu:0"] == (end + U64 - start) * (RES * 1e-6)
    assert energy.state["gpu:0"]["counter_wrapped"] is True
    assert sensor.health().dropped_reads == 0


def test_a_counter_that_goes_backwards_discards_the_window(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install([AmdGpu(uuid=UUID0, board=Board(300.0, start_counts=10**9, reset_at_s=3.0))])
    sensor = make()
    clock.advance(2.0)
    energy = window(sensor, clock, 2.0)  # the driver reloads at 3 s
    assert energy.invalid is not None
    assert "gpu:0" in energy.invalid and "backwards" in energy.invalid
    assert sensor.health().dropped_reads == 1
    after = window(sensor, clock, 1.0)  # the next window is fine again
    assert after.invalid is None
    assert after.joules["gpu:0"] == pytest.approx(300.0, abs=1.0)


# -- the start-up check, and falling back to power -----------------------------------------


def test_the_check_measures_the_update_period_and_the_minimum_window(
    install: Install, make: Make
) -> None:
    install([AmdGpu(uuid=UUID0, board=Board(300.0, update_period_s=0.01))])
    sensor = make()
    health = sensor.health()
    assert health.counter_advances is True
    assert health.update_period_s == pytest.approx(0.01, abs=1e-6)
    assert sensor.edge_error_s() == pytest.approx(0.01, abs=1e-6)
    assert sensor.min_window_s() == pytest.approx(10 * 0.01, abs=1e-5)
    check = sensor.describe()["devices"][0]["counter_check"]
    assert check["ratio"] == pytest.approx(1.0, abs=0.05)


def test_a_still_counter_falls_back_to_integrated_current_socket_power(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install([AmdGpu(uuid=UUID0, board=Board(250.0, stuck=True))])
    sensor = make()
    assert "integrated current_socket_power" in sensor.method
    assert "amdsmi energy accumulator" not in sensor.method
    assert sensor.health().counter_advances is False
    assert any("did not advance" in note for note in sensor.health().notes)
    energy = window(sensor, clock, 2.0)
    assert energy.joules["gpu:0"] == pytest.approx(250.0 * 2.0, rel=1e-12)
    assert energy.state["gpu:0"]["energy_source"] == "integrated current_socket_power"


def test_a_counter_that_disagrees_with_power_is_not_used(install: Install, make: Make) -> None:
    # the counter runs at 600 W while the power reading says 30 W: 20x, outside 0.1..10
    install([AmdGpu(uuid=UUID0, board=Board(600.0), reported_watts=30.0)])
    sensor = make()
    assert sensor.describe()["devices"][0]["energy_source"] == "integrated current_socket_power"
    check = sensor.describe()["devices"][0]["counter_check"]
    assert check["ratio"] == pytest.approx(20.0, rel=0.01)
    assert "outside 0.1..10x" in check["verdict"]


def test_mi200_boards_integrate_average_socket_power_with_a_longer_minimum_window(
    install: Install, make: Make, clock: FakeClock
) -> None:
    gpu = AmdGpu(uuid=UUID0, board=Board(200.0), energy_supported=False)
    gpu.current_power, gpu.average_power = False, True
    install([gpu])
    sensor = make()
    assert "integrated average_socket_power" in sensor.method
    assert sensor.min_window_s() == pytest.approx(10 * 1.0)
    assert any("not available" in note for note in sensor.health().notes)
    energy = window(sensor, clock, 10.0)
    assert energy.joules["gpu:0"] == pytest.approx(2000.0, rel=1e-12)


def test_a_virtual_machine_guest_without_the_counter_says_so(install: Install, make: Make) -> None:
    install([AmdGpu(uuid=UUID0, energy_supported=False)])
    sensor = make()
    notes = " ".join(sensor.health().notes)
    assert "virtual machine guests have none" in notes
    assert sensor.describe()["devices"][0]["energy_source"] == "integrated current_socket_power"


def test_no_counter_and_no_power_is_refused(install: Install, make: Make) -> None:
    gpu = AmdGpu(uuid=UUID0, board=Board(300.0, stuck=True), current_power=False)
    install([gpu])
    with pytest.raises(SensorUnavailable) as excinfo:
        make()
    message = str(excinfo.value)
    assert "gpu:0" in message and "did not advance" in message
    assert "no power reading either" in message


def test_a_counter_read_failing_mid_session_is_a_sensor_error(install: Install, make: Make) -> None:
    fake = install(gpus(1))
    sensor = make()
    fake.gpus[0].energy_supported = False
    with pytest.raises(SensorError, match=r"gpu:0 .*amdsmi error while reading the energy"):
        sensor.begin()


# -- MI250 / MI250X: two dies, one power reading ------------------------------------------------


def test_an_mi250_odd_die_alone_is_measured_through_its_even_sibling(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install(mi250(UUID0, UUID1, watts=500.0))
    sensor = make(devices=(1,))
    assert sensor.domains() == ("gpu:1",)
    assert set(sensor.lock_ids()) == {UUID0, UUID1}
    t0 = clock()
    energy = window(sensor, clock, 2.0)
    counts = fake.counts_at(0, clock()) - fake.counts_at(0, t0)  # the even die's counter
    assert energy.joules["gpu:1"] == counts * (RES * 1e-6)
    assert energy.joules["gpu:1"] == pytest.approx(1000.0, abs=1.0)
    assert any("odd die of an MI250" in w for w in energy.warnings)


def test_both_mi250_dies_count_the_module_once(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install(mi250(UUID0, UUID1, watts=500.0))
    sensor = make()
    energy = window(sensor, clock, 2.0)
    assert energy.joules["gpu:1"] == 0.0
    assert energy.total == pytest.approx(1000.0, abs=1.0)
    assert energy.state["gpu:1"]["energy_source"] == "included in gpu:0"
    assert any("counts 0 J" in note for note in sensor.health().notes)
    assert sensor.health().counter_advances is True


def test_an_mi250_even_die_alone_warns_that_it_holds_both_dies(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install(mi250(UUID0, UUID1))
    sensor = make(devices=(0,))
    energy = window(sensor, clock, 1.0)
    assert any("include amdsmi device 1" in w for w in energy.warnings)
    assert set(sensor.lock_ids()) == {UUID0, UUID1}


# -- visible devices -------------------------------------------------------------------------


def test_rocr_then_hip_visible_devices_pick_the_gpu(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gpus(3))
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "2,0")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    sensor = make()
    assert sensor.lock_ids() == (UUID0,)
    assert sensor.describe()["devices"][0]["amd_index"] == 0


def test_rocr_visible_devices_accepts_uuids(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gpus(3))
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "GPU-c3ff74a1,0")
    sensor = make(devices=(0,))
    assert sensor.lock_ids() == (UUID2,)


def test_cuda_visible_devices_counts_when_hip_is_unset(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gpus(3))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert make().lock_ids() == (UUID1,)


def test_hip_indices_follow_the_enumeration_info_order(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    three = gpus(3)
    for gpu, hip_id in zip(three, (2, 0, 1), strict=True):
        gpu.hip_id = hip_id
    install(three)
    sensor = make(devices=(0,))
    assert sensor.lock_ids() == (UUID1,)  # HIP device 0 is amdsmi device 1


def test_without_enumeration_info_the_amdsmi_order_is_assumed_and_noted(
    install: Install, make: Make
) -> None:
    install(gpus(2), enumeration_info=False)
    sensor = make(devices=(1,))
    assert sensor.lock_ids() == (UUID1,)
    assert any("amdsmi's order" in note for note in sensor.health().notes)


def test_an_unknown_visible_entry_is_refused_naming_the_variable(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install(gpus(2))
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "0,5")
    with pytest.raises(SensorUnavailable, match=r"ROCR_VISIBLE_DEVICES='0,5' names '5'"):
        make()
    # amdsmi was initialised before its devices were refused: it is shut down again
    assert fake.calls["amdsmi_shut_down"] == 1 and fake.initialised == 0


def test_no_visible_gpu_is_refused_naming_the_variables(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gpus(2))
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "")
    with pytest.raises(SensorUnavailable, match=r"no device is visible.*HIP_VISIBLE_DEVICES=''"):
        make()


def test_a_requested_index_past_the_visible_gpus_is_refused(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gpus(3))
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1")
    with pytest.raises(SensorUnavailable, match=r"index 1 .* sees 1 device.*ROCR_VISIBLE"):
        make(devices=(1,))


def test_torchrun_ranks_measure_their_own_gpu(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gpus(2))
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert make().lock_ids() == (UUID1,)


# -- refusals at import and start --------------------------------------------------------------


def test_a_missing_package_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch, make: Make
) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    with pytest.raises(SensorUnavailable, match=r"not installed.*pip install 'pytest-tpw\[amd\]'"):
        make()


@pytest.mark.parametrize(
    ("error", "printed"),
    [
        (lambda: OSError("libamd_smi.so: cannot open shared object file"), ""),
        (lambda: KeyError("libamd_smi.so"), "Unable to find libamd_smi.so library"),
        (lambda: AttributeError("undefined symbol: amdsmi_get_gpu_enumeration_info"), ""),
    ],
)
def test_a_package_that_does_not_match_rocm_says_so(
    monkeypatch: pytest.MonkeyPatch,
    make: Make,
    capsys: pytest.CaptureFixture[str],
    error: Callable[[], BaseException],
    printed: str,
) -> None:
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    monkeypatch.setattr(sys, "meta_path", [RaisingFinder("amdsmi", error, printed), *sys.meta_path])
    with pytest.raises(SensorUnavailable) as excinfo:
        make()
    message = str(excinfo.value)
    assert type(error()).__name__ in message
    assert "does not match the amdsmi Python package" in message
    assert "ROCm >= 6.3" in message
    if printed:  # what amdsmi prints on import goes into the reason, not onto the terminal
        assert printed in message
        assert printed not in capsys.readouterr().out


def test_a_library_that_cannot_start_is_refused(install: Install, make: Make) -> None:
    install(gpus(1), init_error=34)
    with pytest.raises(SensorUnavailable, match=r"amdsmi could not start.*amd-smi list"):
        make()


# -- description and state ---------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["W", "uW"])
def test_power_limits_are_watts_whatever_the_unit(install: Install, make: Make, unit: str) -> None:
    install(gpus(1), power_limit_unit=unit)
    device = make().describe()["devices"][0]
    assert device["power_limit_w"] == 750.0
    assert device["max_power_w"] == 750.0


@pytest.mark.parametrize(
    ("style", "version"), [("release", "25.5.1 (7.0.2)"), ("year", "24.6.2.0")]
)
def test_describe_names_versions_devices_and_policy(
    install: Install, make: Make, style: str, version: str
) -> None:
    install(gpus(2), lib_style=style)
    described = make().describe()
    json.dumps(described, allow_nan=False)
    assert described["amdsmi_lib_version"] == version
    assert described["driver_version"] == "6.10.5"
    assert [d["name"] for d in described["devices"]] == ["AMD Instinct MI300X"] * 2
    assert [d["uuid"] for d in described["devices"]] == [UUID0, UUID1]
    assert described["devices"][0]["clocks_policy"] == "perf level auto"


def test_hardware_names_one_model_per_gpu(install: Install, make: Make) -> None:
    install(gpus(2))
    sensor = make()
    assert sensor.hardware() == ("AMD Instinct MI300X", "AMD Instinct MI300X")
    assert sensor.domains() == ("gpu:0", "gpu:1")
    assert sensor.capabilities().attribution == "device"


def test_window_state_holds_temperature_and_power(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install([AmdGpu(uuid=UUID0, board=Board([(0.0, 300.0), (1.5, 500.0)]))])
    sensor = make()
    fake.gpus[0].temperature_c = 61
    energy = window(sensor, clock, 1.5)
    state = energy.state["gpu:0"]
    json.dumps(state, allow_nan=False)
    assert state["hotspot_temperature_c"] == {"start": 61.0, "end": 61.0}
    assert state["power_w"] == {"start": 300.0, "end": 500.0}
    assert state["seconds"] == pytest.approx(1.5)
