"""The ``jetson`` sensor against fake INA3221 sysfs trees, both driver layouts.

Power is integrated by the sensor's sampling thread, which the fake clock steps (as in
test_nvml.py): every sample lands at a known fake instant, so the joules are exact.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.jetson import JetsonSensor
from pytest_tpw.testing import check_sensor
from tests.fakes.fake_pynvml import FakeClock as SteppedClock
from tests.fakes.jetson_sysfs import AGX_ORIN, AGX_XAVIER, NANO, ORIN_NX, FakeJetsonSysfs

MakeSensor = Callable[..., JetsonSensor]
ORIN_NX_MODEL = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeJetsonSysfs:
    return FakeJetsonSysfs(tmp_path / "root")


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def make_sensor(sysfs: FakeJetsonSysfs, clock: SteppedClock) -> Iterator[MakeSensor]:
    """A JetsonSensor on the fake tree and clock, opened unless asked not to; closed after."""
    made: list[JetsonSensor] = []

    def _make(open_: bool = True, interval_s: float | None = None) -> JetsonSensor:
        sensor = JetsonSensor(SensorOptions())
        sensor.sysfs_root = sysfs.drivers
        sensor.model_path = sysfs.model_path
        sensor.release_path = sysfs.release_path
        sensor.clock = clock.now
        sensor.sleep = clock.sleep
        sensor.wait = clock.wait
        if interval_s is not None:
            sensor.sample_interval_s = interval_s
        made.append(sensor)
        if open_:
            sensor.open()
        return sensor

    yield _make
    for sensor in made:
        sensor.close()


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tpw-jetson-power"]


def orin_nx(sysfs: FakeJetsonSysfs, layout: str = "hwmon") -> float:
    """An Orin NX drawing 7.4 W at its input (3 W CPU/GPU/CV, 2 W SOC); returns the 7.4."""
    sysfs.board(ORIN_NX, layout)
    sysfs.set_power("VDD_CPU_GPU_CV", 5000, 600)
    sysfs.set_power("VDD_SOC", 5000, 400)
    return sysfs.set_power("VDD_IN", 5000, 1480)


# -- the contract and the integral -----------------------------------------------------------


def test_the_sensor_keeps_the_contract(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    orin_nx(sysfs)
    sensor = make_sensor(open_=False)
    check_sensor(sensor, work=lambda: clock.run_for(sensor.min_window_s()))
    assert sampler_threads() == []


@pytest.mark.parametrize(
    ("board", "layout", "rail", "domain"),
    [
        (ORIN_NX, "hwmon", "VDD_IN", "soc:vdd-in"),
        (NANO, "iio", "POM_5V_IN", "soc:pom-5v-in"),
    ],
)
def test_constant_power_integrates_to_power_times_time(
    sysfs: FakeJetsonSysfs,
    clock: SteppedClock,
    make_sensor: MakeSensor,
    board: dict[str, tuple[str, str, str]],
    layout: str,
    rail: str,
    domain: str,
) -> None:
    sysfs.board(board, layout)
    for label in sysfs.rails:
        sysfs.set_power(label, 5000, 200)
    watts = sysfs.set_power(rail, 5000, 1480)
    sensor = make_sensor()
    assert sensor.domains() == (domain,)
    t0 = clock.now()
    token = sensor.begin()
    assert len(sampler_threads()) == 1
    clock.run_for(2.0)
    window = sensor.end(token)
    t1 = clock.now()
    assert sampler_threads() == []
    assert t1 - t0 == pytest.approx(2.0)
    assert window.joules == {domain: pytest.approx(watts * (t1 - t0), rel=1e-12)}
    assert window.joules[domain] == pytest.approx(14.8, rel=1e-12)
    assert window.state["power_samples"] >= 100  # every 20 ms over 2 s
    assert window.state["power_w"][domain]["mean"] == pytest.approx(7.4)


def test_a_power_step_integrates_by_the_trapezoidal_rule(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    before = orin_nx(sysfs)
    sensor = make_sensor(interval_s=0.25)  # binary fractions: every instant is exact
    token = sensor.begin()  # at t = 0
    clock.run_for(1.0)  # samples at 0, 0.25, ..., 1.0 read 7.4 W
    after = sysfs.set_power("VDD_IN", 5000, 2400)  # 12 W from the next sample on
    clock.run_for(1.0)  # samples at 1.25, ..., 2.0 read 12 W
    window = sensor.end(token)
    expected = before * 1.0 + (before + after) / 2 * 0.25 + after * 0.75
    assert window.joules["soc:vdd-in"] == pytest.approx(expected, rel=1e-12)
    assert window.state["power_samples"] == 10  # 0..2 s every 0.25 s, and the closing one
    assert window.state["power_w"]["soc:vdd-in"]["min"] == pytest.approx(7.4)
    assert window.state["power_w"]["soc:vdd-in"]["max"] == pytest.approx(12.0)


# -- what is summed --------------------------------------------------------------------------


def test_the_module_input_rail_alone_is_measured(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    watts = orin_nx(sysfs)
    sensor = make_sensor()
    assert sensor.domains() == ("soc:vdd-in",)
    token = sensor.begin()
    clock.run_for(1.0)
    window = sensor.end(token)
    # 7.4 W x 1 s, not (7.4 + 3 + 2) W: the CPU/GPU and SOC rails are parts of VDD_IN
    assert window.total == pytest.approx(watts * 1.0, rel=1e-12)
    others = window.state["other_rails_w"]
    assert others["VDD_CPU_GPU_CV"] == {"start": pytest.approx(3.0), "end": pytest.approx(3.0)}
    assert others["VDD_SOC"] == {"start": pytest.approx(2.0), "end": pytest.approx(2.0)}
    rails = {r["name"]: r for r in sensor.describe()["rails"]}
    assert set(rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # each once: no symlink loops
    assert rails["VDD_IN"]["measured"] is True
    assert rails["VDD_SOC"]["measured"] is False
    assert "part of VDD_IN" in rails["VDD_SOC"]["reason"]
    assert "VDD_IN" in sensor.method
    assert "module input" in sensor.describe()["scope"]


def test_without_an_input_rail_disjoint_rails_are_summed_once(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    sysfs.board(AGX_ORIN)
    gpu = sysfs.set_power("VDD_GPU_SOC", 5000, 3000)  # 15 W
    cpu = sysfs.set_power("VDD_CPU_CV", 5000, 1000)  # 5 W
    sys5v = sysfs.set_power("VIN_SYS_5V0", 5000, 800)  # 4 W, which feeds the next one
    sysfs.set_power("VDDQ_VDD2_1V8AO", 1800, 1000)  # 1.8 W, inside VIN_SYS_5V0
    sensor = make_sensor()
    assert sensor.domains() == ("soc:vdd-gpu-soc", "soc:vdd-cpu-cv", "soc:vin-sys-5v0")
    token = sensor.begin()
    clock.run_for(1.0)
    window = sensor.end(token)
    assert window.total == pytest.approx(gpu + cpu + sys5v, rel=1e-12)
    described = sensor.describe()
    nested = next(r for r in described["rails"] if r["name"] == "VDDQ_VDD2_1V8AO")
    assert nested["measured"] is False
    assert "fed by VIN_SYS_5V0" in nested["reason"]
    reasons = {(s["chip"], s["channel"]): s["reason"] for s in described["skipped"]}
    assert reasons[("1-0041", 1)] == "not connected (NC)"
    assert reasons[("1-0040", 7)] == "the chip's summation channel, not a rail"
    assert any("no module input rail" in note for note in sensor.health().notes)


def test_agx_xavier_sums_its_six_rails(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    sysfs.board(AGX_XAVIER, "iio")
    total = sum(sysfs.set_power(label, 5000, 400) for label in list(sysfs.rails))
    sensor = make_sensor()
    assert len(sensor.domains()) == 6
    token = sensor.begin()
    clock.run_for(1.0)
    assert sensor.end(token).total == pytest.approx(total * 1.0, rel=1e-12)


# -- the two layouts' files ------------------------------------------------------------------


def test_legacy_layout_without_power_files_uses_voltage_times_current(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    sysfs.iio_chip("6-0040", NANO["6-0040"], power_files=False)
    sysfs.set_model("NVIDIA Jetson Nano Developer Kit")
    watts = sysfs.set_power("POM_5V_IN", 5080, 1234)
    sensor = make_sensor()
    rail = next(r for r in sensor.describe()["rails"] if r["measured"])
    assert rail["source"] == "in_voltage0_input (mV) x in_current0_input (mA)"
    token = sensor.begin()
    clock.run_for(1.0)
    assert sensor.end(token).joules["soc:pom-5v-in"] == pytest.approx(watts, rel=1e-12)
    assert watts == pytest.approx(5.08 * 1.234)


def test_legacy_layout_prefers_its_milliwatt_power_file(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    sysfs.iio_chip("6-0040", NANO["6-0040"])
    sysfs.set_power("POM_5V_IN", 5000, 1000)
    sensor = make_sensor()
    rail = next(r for r in sensor.describe()["rails"] if r["measured"])
    assert rail["source"] == "in_power0_input (mW)"


def test_a_hwmon_power_file_is_read_in_microwatts(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    sysfs.hwmon_chip("1-0040", ORIN_NX["1-0040"], power_files=True, voltage_current=False)
    sysfs.set_power("VDD_IN", 5000, 1480)
    sensor = make_sensor()
    token = sensor.begin()
    clock.run_for(1.0)
    assert sensor.end(token).joules["soc:vdd-in"] == pytest.approx(7.4, rel=1e-12)
    assert sensor.describe()["rails"][0]["source"] == "power1_input (uW)"


# -- timing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update_ms", "edge_s", "min_s"),
    [
        (7, 0.007, 0.4),  # 20 samples of 20 ms outlast 10 chip updates of 7 ms
        (50, 0.05, 0.5),  # a slow chip: 10 updates of 50 ms
        (None, 0.02, 0.4),  # refresh unknown: one sample interval assumed
    ],
)
def test_the_chip_refresh_sets_the_edge_error_and_minimum_window(
    sysfs: FakeJetsonSysfs,
    make_sensor: MakeSensor,
    update_ms: int | None,
    edge_s: float,
    min_s: float,
) -> None:
    sysfs.hwmon_chip("1-0040", ORIN_NX["1-0040"], update_interval_ms=update_ms)
    sysfs.set_power("VDD_IN", 5000, 1000)
    sensor = make_sensor()
    assert sensor.edge_error_s() == pytest.approx(edge_s)
    assert sensor.min_window_s() == pytest.approx(min_s)
    health = sensor.health()
    assert health.update_period_s == (None if update_ms is None else pytest.approx(edge_s))
    assert health.counter_advances is True
    assert any("update_interval" in note for note in health.notes) is (update_ms is None)


# -- identity --------------------------------------------------------------------------------


def test_identity_names_the_module_and_its_software(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    orin_nx(sysfs)
    sensor = make_sensor()
    assert sensor.hardware() == (ORIN_NX_MODEL,)  # the device tree's trailing NUL is gone
    described = sensor.describe()
    json.dumps(described, allow_nan=False)
    assert described["l4t"] == "36.4.3"
    assert described["devices"] == [{"name": ORIN_NX_MODEL, "scope": "module input (VDD_IN)"}]
    assert sensor.provenance == "measured"
    assert "sampled every 20 ms" in sensor.method
    caps = sensor.capabilities()
    assert (caps.attribution, caps.idle_power, caps.devices) == ("device", True, ("jetson-module",))
    assert sensor.host_wide


def test_a_missing_model_file_is_said(sysfs: FakeJetsonSysfs, make_sensor: MakeSensor) -> None:
    sysfs.hwmon_chip("1-0040", ORIN_NX["1-0040"])
    sysfs.set_power("VDD_IN", 5000, 1000)
    sensor = make_sensor()
    assert sensor.hardware() == ("NVIDIA Jetson (unknown model)",)
    assert sensor.describe()["l4t"] is None
    assert any("model could not be read" in note for note in sensor.health().notes)


# -- refusals --------------------------------------------------------------------------------


def test_no_ina3221_driver_is_unavailable(make_sensor: MakeSensor) -> None:
    with pytest.raises(SensorUnavailable, match=r"no INA3221 power monitor.*ina3221x"):
        make_sensor()


def test_only_unconnected_channels_is_unavailable(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    sysfs.hwmon_chip("1-0041", ("NC", "NC", "NC"))
    with pytest.raises(SensorUnavailable, match=r"no readable INA3221 power rail.*NC"):
        make_sensor()


def test_rails_reading_zero_are_unavailable_after_a_bounded_wait(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    sysfs.board(ORIN_NX)  # every rail reads 0 mV x 0 mA
    sensor = make_sensor(open_=False)
    with pytest.raises(SensorUnavailable, match=r"read no power for 0.5 s \(VDD_IN = 0 W\)"):
        sensor.open()
    assert sensor.poll_s <= clock.now() <= sensor.poll_s + sensor.poll_step_s + 1e-9
    assert sensor.health().counter_advances is False


def test_an_implausible_reading_is_refused_at_open(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    sysfs.board(ORIN_NX)
    sysfs.set_power("VDD_IN", 5000, 200_000)  # 1000 W: a unit mistake, not a Jetson
    with pytest.raises(SensorUnavailable, match=r"VDD_IN .*1000 W.*not a plausible power"):
        make_sensor()


def test_a_garbage_rail_file_is_unavailable(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    sysfs.board(ORIN_NX)
    sysfs.write(sysfs.rails["VDD_IN"].current, "not a number\n")
    with pytest.raises(SensorUnavailable, match=r"cannot use INA3221 rail VDD_IN"):
        make_sensor()


# -- failures mid-run ------------------------------------------------------------------------


def test_a_rail_vanishing_mid_window_names_it(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    orin_nx(sysfs)
    sensor = make_sensor()
    token = sensor.begin()
    clock.run_for(0.5)
    sysfs.rails["VDD_IN"].current.unlink()  # the driver unbound while the window was open
    with pytest.raises(SensorError, match=r"INA3221 rail VDD_IN .*curr1_input.* unreadable"):
        sensor.end(token)
    assert sensor.health().dropped_reads == 1
    assert sampler_threads() == []


def test_implausible_samples_invalidate_the_window(
    sysfs: FakeJetsonSysfs, clock: SteppedClock, make_sensor: MakeSensor
) -> None:
    orin_nx(sysfs)
    sensor = make_sensor(interval_s=0.25)
    token = sensor.begin()
    clock.run_for(1.0)
    sysfs.set_power("VDD_IN", 5000, 200_000)  # 1000 W from here on: 4 samples and the last
    clock.run_for(1.0)
    window = sensor.end(token)
    assert window.invalid is not None
    assert "5 INA3221 power sample(s) outside 0..500 W" in window.invalid
    assert sensor.health().dropped_reads == 5


def test_begin_twice_without_end_is_an_error(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    orin_nx(sysfs)
    sensor = make_sensor()
    sensor.begin()
    with pytest.raises(SensorError, match="still open"):
        sensor.begin()


def test_close_stops_an_open_windows_thread(
    sysfs: FakeJetsonSysfs, make_sensor: MakeSensor
) -> None:
    orin_nx(sysfs)
    sensor = make_sensor()
    sensor.begin()
    assert len(sampler_threads()) == 1
    sensor.close()
    assert sampler_threads() == []
