"""The ``apple`` sensor against a stand-in ``zeus_apple_silicon`` on a fake clock."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.apple import AppleSiliconSensor
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.testing import FakeClock, check_sensor
from tests.fakes.fake_zeus_apple_silicon import (
    M1_NO_DRAM,
    M3_MAX,
    NO_CHANNELS,
    FakeIOReport,
    FakeZeusAppleSilicon,
    Watts,
)

Install = Callable[..., FakeIOReport]
INSTALL_LINE = "pip install 'pytest-tpw[apple]'"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Install:
    """Put a fake ``zeus_apple_silicon`` for a chip (watts per channel) into sys.modules."""

    def _install(chip: Mapping[str, Watts] = M3_MAX) -> FakeIOReport:
        io = FakeIOReport(chip, clock)
        monkeypatch.setitem(sys.modules, "zeus_apple_silicon", FakeZeusAppleSilicon(io))
        return io

    return _install


def make(
    clock: FakeClock,
    *,
    chip: str | None = "Apple M3 Max",
    os_name: str = "darwin",
    open_: bool = True,
) -> AppleSiliconSensor:
    sensor = AppleSiliconSensor(SensorOptions())
    sensor.clock = clock
    sensor.sleep = clock.sleep
    sensor.platform = os_name
    sensor.chip_name = lambda: chip
    sensor.os_version = lambda: "14.5"
    if open_:
        sensor.open()
    return sensor


def test_the_sensor_keeps_the_contract(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock, open_=False)
    check_sensor(sensor, work=lambda: clock.advance(sensor.min_window_s()))


def test_window_joules_are_the_summed_channels_deltas(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock)
    token = sensor.begin()
    clock.advance(2.0)
    window = sensor.end(token)
    # watts x 2 s of the four summed channels, exactly (1 mJ resolution, whole mJ here)
    assert window.joules == {"soc:cpu": 12.0, "soc:gpu": 24.0, "soc:ane": 0.5, "soc:dram": 1.5}
    assert window.invalid is None
    assert window.state["seconds"] == pytest.approx(2.0)


def test_nested_and_undocumented_channels_are_not_summed(
    install: Install, clock: FakeClock
) -> None:
    install()
    sensor = make(clock)
    token = sensor.begin()
    clock.advance(2.0)
    window = sensor.end(token)
    channels = window.state["channels_mj"]
    # cores, clusters, managers are inside cpu_total; gpu_sram's relation to GPU is unknown
    assert channels["performance_cluster_mj"] == [5000, 4600]
    assert channels["efficiency_cores_mj"] == [400, 400, 400, 400]
    assert channels["gpu_sram_mj"] == 1000
    everything = sum(
        sum(v) if isinstance(v, list) else v for v in channels.values()
    )  # what a naive sum of every field would say
    assert window.total == pytest.approx(38.0)
    assert everything / 1000.0 > window.total + 10.0
    assert "gpu_sram_mj" not in sensor.summed_fields()
    assert set(sensor.describe()["recorded_not_summed"]) >= {"gpu_sram_mj", "efficiency_cluster_mj"}


def test_channels_the_chip_lacks_are_none_and_no_domain(install: Install, clock: FakeClock) -> None:
    install(M1_NO_DRAM)
    sensor = make(clock, chip="Apple M1")
    assert sensor.domains() == ("soc:cpu", "soc:gpu")
    token = sensor.begin()
    clock.advance(1.0)
    window = sensor.end(token)
    assert window.joules == {"soc:cpu": 3.0, "soc:gpu": 2.0}
    assert "dram_mj" not in window.state["channels_mj"]
    assert "ane_mj" not in window.state["channels_mj"]
    assert sensor.describe()["devices"] == [{"name": "Apple M1", "scope": "SoC: cpu + gpu"}]


def test_provenance_is_estimated_and_an_idle_window_means_nothing(
    install: Install, clock: FakeClock
) -> None:
    install()
    sensor = make(clock)
    assert sensor.provenance == "estimated"
    assert "estimate" in sensor.method
    caps = sensor.capabilities()
    assert caps.attribution == "device"
    assert caps.idle_power is False
    assert caps.devices == ("apple-soc",)
    assert sensor.host_wide


def test_the_hardware_key_names_the_chip(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock, chip="Apple M3 Max")
    assert sensor.hardware() == ("Apple M3 Max",)
    described = sensor.describe()
    json.dumps(described, allow_nan=False)
    assert described["chip"] == "Apple M3 Max"
    assert described["macos"] == "14.5"
    assert described["devices"][0]["name"] == "Apple M3 Max"
    assert described["summed"] == ["cpu_total_mj", "gpu_mj", "ane_mj", "dram_mj"]


def test_an_unreadable_chip_name_is_said(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock, chip=None)
    assert sensor.hardware() == ("Apple Silicon (unknown chip)",)
    assert any("machdep.cpu.brand_string" in note for note in sensor.health().notes)


def test_window_length_limits(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock)
    assert sensor.edge_error_s() == pytest.approx(0.01)
    assert sensor.min_window_s() == pytest.approx(0.1)


# -- refusals --------------------------------------------------------------------------------


def test_elsewhere_than_macos_it_is_unavailable(install: Install, clock: FakeClock) -> None:
    io = install()
    with pytest.raises(SensorUnavailable, match=r"macOS.*'linux'"):
        make(clock, os_name="linux")
    assert io.calls == {}  # refused before touching the package


def test_without_the_package_it_is_unavailable_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", None)  # import raises ImportError
    with pytest.raises(SensorUnavailable, match="zeus-apple-silicon is not installed") as info:
        make(clock)
    assert INSTALL_LINE in str(info.value)


def test_a_failed_subscription_is_unavailable(install: Install, clock: FakeClock) -> None:
    io = install()
    io.init_error = "Failed to create IOReport subscription."
    with pytest.raises(SensorUnavailable, match="Failed to create IOReport subscription"):
        make(clock)


def test_no_energy_channel_is_unavailable(install: Install, clock: FakeClock) -> None:
    install(NO_CHANNELS)
    with pytest.raises(SensorUnavailable, match="no CPU, GPU, ANE or DRAM energy channel"):
        make(clock)


def test_still_counters_are_unavailable_after_a_bounded_wait(
    install: Install, clock: FakeClock
) -> None:
    install({"cpu_total_mj": 0.0, "gpu_mj": 0.0})
    sensor = make(clock, open_=False)
    start = clock()
    with pytest.raises(SensorUnavailable, match=r"did not move in 1 s"):
        sensor.open()
    assert sensor.poll_s <= clock() - start <= sensor.poll_s + sensor.poll_step_s + 1e-9
    assert sensor.health().counter_advances is False


def test_moving_counters_pass_the_open_check(install: Install, clock: FakeClock) -> None:
    io = install()
    sensor = make(clock)
    assert sensor.health().counter_advances is True
    assert io.calls["get_cumulative_energy"] >= 2


# -- bad windows -----------------------------------------------------------------------------


def test_a_counter_going_backwards_invalidates_the_window(
    install: Install, clock: FakeClock
) -> None:
    io = install()
    sensor = make(clock)
    io.reset_at_s["gpu_mj"] = clock() + 1.0
    token = sensor.begin()
    clock.advance(2.0)
    window = sensor.end(token)
    assert window.invalid is not None
    assert "soc:gpu" in window.invalid
    assert "went backwards" in window.invalid
    assert window.joules["soc:gpu"] == 0.0
    assert window.joules["soc:cpu"] == 12.0
    assert sensor.health().dropped_reads == 1


def test_an_impossible_jump_invalidates_the_window(install: Install, clock: FakeClock) -> None:
    io = install()
    sensor = make(clock)
    token = sensor.begin()
    io.watts["cpu_total_mj"] = 5000.0  # the counter now reads as if 5 kW since boot
    clock.advance(1.0)
    window = sensor.end(token)
    assert window.invalid is not None
    assert "soc:cpu" in window.invalid
    assert "more than 1000 W" in window.invalid
    assert sensor.health().dropped_reads == 1


def test_later_windows_are_fine_again(install: Install, clock: FakeClock) -> None:
    io = install()
    sensor = make(clock)
    io.reset_at_s["gpu_mj"] = clock() + 0.5
    first = sensor.begin()
    clock.advance(1.0)
    assert sensor.end(first).invalid is not None
    second = sensor.begin()
    clock.advance(1.0)
    window = sensor.end(second)
    assert window.invalid is None
    assert window.joules["soc:gpu"] == 12.0


# -- the window protocol ---------------------------------------------------------------------


def test_begin_twice_without_end_is_an_error(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock)
    sensor.begin()
    with pytest.raises(SensorError, match="still open"):
        sensor.begin()


def test_end_with_a_foreign_token_is_an_error(install: Install, clock: FakeClock) -> None:
    install()
    sensor = make(clock)
    sensor.begin()
    with pytest.raises(SensorError, match="token"):
        sensor.end(object())


def test_each_window_uses_a_fresh_key_and_close_ends_an_open_one(
    install: Install, clock: FakeClock
) -> None:
    io = install()
    sensor = make(clock)
    for _ in range(3):
        token = sensor.begin()
        clock.advance(0.5)
        sensor.end(token)
    sensor.begin()
    assert len(io.open_keys) == 1
    sensor.close()
    assert io.open_keys == set()
    assert io.calls["begin_window"] == 4
    assert io.calls["end_window"] == 4


def test_importing_the_module_does_not_import_the_package() -> None:
    code = (
        "import sys; import pytest_tpw.sensors.apple; "
        "sys.exit(1 if 'zeus_apple_silicon' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
