"""The ``intel-gpu`` sensor against a stand-in ``pyzes`` built from its documented shapes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.intel_gpu import IntelGpuSensor
from pytest_tpw.testing import FakeClock, check_sensor
from tests.fakes.energy_trace import U64, Board, RaisingFinder
from tests.fakes.fake_pyzes import (
    ZE_DEVICE_TYPE_VPU,
    ZE_RESULT_ERROR_DEVICE_LOST,
    ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS,
    ZES_POWER_DOMAIN_CARD,
    ZES_POWER_DOMAIN_PACKAGE,
    FakePyzes,
    ZesCard,
    ZesDomain,
    max_1550,
)

UUID = "8680bd0b-0800-0000-0000-00000000a1b2"

Install = Callable[..., FakePyzes]
Make = Callable[..., IntelGpuSensor]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ZE_AFFINITY_MASK", "ZE_FLAT_DEVICE_HIERARCHY", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Install:
    def _install(cards: list[ZesCard] | None = None, **kwargs: Any) -> FakePyzes:
        fake = FakePyzes(cards if cards is not None else [ZesCard()], clock, **kwargs)
        monkeypatch.setitem(sys.modules, "pyzes", fake)
        return fake

    return _install


@pytest.fixture
def make(clock: FakeClock) -> Iterator[Make]:
    made: list[IntelGpuSensor] = []

    def _make(devices: tuple[int, ...] | None = None) -> IntelGpuSensor:
        sensor = IntelGpuSensor(SensorOptions(devices=devices))
        sensor.clock, sensor.sleep = clock, clock.sleep
        made.append(sensor)
        sensor.open()
        return sensor

    yield _make
    for sensor in made:
        sensor.close()


def window(sensor: IntelGpuSensor, clock: FakeClock, seconds: float) -> Any:
    token = sensor.begin()
    clock.advance(seconds)
    return sensor.end(token)


# -- the contract, and joules --------------------------------------------------------------


def test_passes_the_sensor_contract(install: Install, clock: FakeClock) -> None:
    install([ZesCard(), max_1550()])
    sensor = IntelGpuSensor(SensorOptions())
    sensor.clock, sensor.sleep = clock, clock.sleep
    check_sensor(sensor, work=lambda: clock.advance(1.0))


def test_joules_are_the_microjoule_counter_delta(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install()
    sensor = make()
    t0 = clock()
    energy = window(sensor, clock, 2.0)
    delta = fake.energy_uj_at(0, 0, clock()) - fake.energy_uj_at(0, 0, t0)
    assert energy.joules["gpu:0"] == delta * 1e-6
    assert energy.joules["gpu:0"] == pytest.approx(800.0, abs=4.0)
    assert sensor.method.startswith("Level Zero Sysman energy counter")
    assert sensor.health().counter_advances is True
    assert sensor.min_window_s() == pytest.approx(10 * 0.01, abs=1e-5)
    assert any("no power reading to cross-check" in n for n in sensor.health().notes)


def test_the_card_domain_is_preferred_to_the_package(
    install: Install, make: Make, clock: FakeClock
) -> None:
    card = ZesCard(
        domains=[
            ZesDomain(Board(300.0, update_period_s=0.01), ZES_POWER_DOMAIN_PACKAGE),
            ZesDomain(Board(350.0, update_period_s=0.01), ZES_POWER_DOMAIN_CARD),
        ]
    )
    install([card])
    sensor = make()
    assert sensor.describe()["devices"][0]["power_domain"] == "card"
    assert window(sensor, clock, 1.0).joules["gpu:0"] == pytest.approx(350.0, abs=4.0)


def test_a_driver_refusing_the_extension_structure_still_measures(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install(ext_properties=False)
    sensor = make()
    assert sensor.describe()["devices"][0]["power_domain"] == "domain"
    assert window(sensor, clock, 1.0).joules["gpu:0"] == pytest.approx(400.0, abs=4.0)


def test_the_counter_wrapping_at_64_bits_is_a_wrap(
    install: Install, make: Make, clock: FakeClock
) -> None:
    board = Board(400.0, update_period_s=0.01, start_counts=U64 - 1_000_000_000)  # 2.5 s in
    fake = install([ZesCard(domains=[ZesDomain(board)])])
    sensor = make()
    clock.advance(1.5)
    t0 = clock()
    energy = window(sensor, clock, 2.0)
    start, end = fake.energy_uj_at(0, 0, t0), fake.energy_uj_at(0, 0, clock())
    assert end < start
    assert energy.invalid is None
    assert energy.joules["gpu:0"] == (end + U64 - start) * 1e-6


def test_a_counter_that_goes_backwards_discards_the_window(
    install: Install, make: Make, clock: FakeClock
) -> None:
    board = Board(400.0, update_period_s=0.01, start_counts=10**12, reset_at_s=2.0)
    install([ZesCard(domains=[ZesDomain(board)])])
    sensor = make()
    energy = window(sensor, clock, 2.0)
    assert energy.invalid is not None and "gpu:0" in energy.invalid
    assert sensor.health().dropped_reads == 1
    assert any("1 window(s) discarded" in note for note in sensor.health().notes)


def test_a_still_counter_is_refused_as_there_is_no_power_to_fall_back_to(
    install: Install, make: Make
) -> None:
    install([ZesCard(domains=[ZesDomain(Board(400.0, stuck=True))])])
    with pytest.raises(SensorUnavailable, match=r"gpu:0 .*did not advance.*no power reading"):
        make()


def test_a_failed_read_in_a_window_is_a_sensor_error(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install()
    sensor = make()
    token = sensor.begin()
    fake.errors["zesPowerGetEnergyCounter"] = ZE_RESULT_ERROR_DEVICE_LOST
    with pytest.raises(SensorError, match=r"gpu:0 .*ZE_RESULT_ERROR_DEVICE_LOST \(0x70000001\)"):
        sensor.end(token)
    assert sensor.health().dropped_reads == 1


# -- devices: flat hierarchy, tiles, ZE_AFFINITY_MASK -------------------------------------------


def test_a_flat_hierarchy_measures_each_tile_as_a_device(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install([max_1550(watts=600.0)])
    sensor = make()
    assert sensor.domains() == ("gpu:0", "gpu:1")
    assert len(sensor.lock_ids()) == 1  # one card, locked once
    energy = window(sensor, clock, 1.0)
    assert energy.joules["gpu:0"] == pytest.approx(300.0, abs=3.0)
    assert energy.joules["gpu:1"] == pytest.approx(300.0, abs=3.0)
    assert [d["power_domain"] for d in sensor.describe()["devices"]] == [
        "tile 0 stack",
        "tile 1 stack",
    ]


def test_a_composite_hierarchy_measures_the_whole_card(
    install: Install, make: Make, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZE_FLAT_DEVICE_HIERARCHY", "COMPOSITE")
    install([max_1550(watts=600.0)])
    sensor = make()
    assert sensor.domains() == ("gpu:0",)
    assert sensor.describe()["devices"][0]["power_domain"] == "package"
    assert window(sensor, clock, 1.0).joules["gpu:0"] == pytest.approx(600.0, abs=6.0)


def test_the_affinity_mask_picks_a_flat_device(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install([max_1550(0xB1), max_1550(0xB2)])
    monkeypatch.setenv("ZE_AFFINITY_MASK", "3")
    device = make().describe()["devices"][0]
    assert (device["card"], device["tile"]) == (1, 1)
    assert device["uuid"].endswith("b2")


def test_the_affinity_mask_picks_a_card_tile_in_composite_mode(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZE_FLAT_DEVICE_HIERARCHY", "COMPOSITE")
    install([max_1550(0xB1), max_1550(0xB2)])
    monkeypatch.setenv("ZE_AFFINITY_MASK", "1.0")
    device = make().describe()["devices"][0]
    assert (device["card"], device["tile"], device["power_domain"]) == (1, 0, "tile 0 stack")


def test_a_tile_without_its_own_domain_counts_the_whole_card_and_warns(
    install: Install, make: Make, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = ZesCard(tiles=2)  # one package domain, no per-tile domains
    install([card])
    monkeypatch.setenv("ZE_AFFINITY_MASK", "1")
    sensor = make()
    energy = window(sensor, clock, 1.0)
    assert energy.joules["gpu:0"] == pytest.approx(400.0, abs=4.0)
    assert any("whole card's energy" in w for w in energy.warnings)


@pytest.mark.parametrize(("hierarchy", "mask"), [("FLAT", "0,4"), ("COMPOSITE", "0.3")])
def test_an_unknown_affinity_entry_is_refused_naming_the_variable(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch, hierarchy: str, mask: str
) -> None:
    monkeypatch.setenv("ZE_FLAT_DEVICE_HIERARCHY", hierarchy)
    install([max_1550()])
    monkeypatch.setenv("ZE_AFFINITY_MASK", mask)
    with pytest.raises(SensorUnavailable, match=rf"ZE_AFFINITY_MASK='{mask}' names"):
        make()


def test_devices_that_are_not_gpus_are_left_out(install: Install, make: Make) -> None:
    install([ZesCard(device_type=ZE_DEVICE_TYPE_VPU), ZesCard()])
    sensor = make()
    assert sensor.domains() == ("gpu:0",)
    assert sensor.describe()["devices"][0]["card"] == 0  # numbered among the GPUs


def test_no_visible_gpu_is_refused_naming_the_variables(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install()
    monkeypatch.setenv("ZE_AFFINITY_MASK", "")
    with pytest.raises(SensorUnavailable, match=r"no device is visible.*ZE_AFFINITY_MASK=''"):
        make()


# -- refusals at import and start --------------------------------------------------------------


def test_a_missing_package_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch, make: Make
) -> None:
    monkeypatch.setitem(sys.modules, "pyzes", None)
    with pytest.raises(SensorUnavailable, match=r"pip install 'pytest-tpw\[intel-gpu\]'"):
        make()


def test_a_missing_level_zero_loader_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, make: Make
) -> None:
    error = OSError("libze_loader.so.1: cannot open shared object file")
    monkeypatch.delitem(sys.modules, "pyzes", raising=False)
    monkeypatch.setattr(sys, "meta_path", [RaisingFinder("pyzes", lambda: error), *sys.meta_path])
    with pytest.raises(SensorUnavailable, match=r"OSError: libze_loader.*Level Zero loader"):
        make()


def test_sysman_that_cannot_start_is_refused_with_the_result_name(
    install: Install, make: Make
) -> None:
    install(init_result=ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS)
    with pytest.raises(
        SensorUnavailable, match=r"could not start.*ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS"
    ):
        make()


# -- description and state ---------------------------------------------------------------------


def test_describe_names_driver_devices_limits_and_clocks(install: Install, make: Make) -> None:
    install()
    sensor = make()
    described = sensor.describe()
    json.dumps(described, allow_nan=False)
    assert described["driver_version"] == "1.6.32224.5"
    device = described["devices"][0]
    assert device["name"] == "Intel(R) Data Center GPU Max 1550"
    assert device["uuid"] == UUID
    assert device["power_limit_w"] == 500.0
    assert device["max_power_w"] == 600.0
    assert device["clocks_policy"] == "GPU frequency range 800-1600 MHz"
    assert sensor.lock_ids() == (UUID,)
    assert sensor.hardware() == ("Intel(R) Data Center GPU Max 1550",)


def test_window_state_holds_temperature_frequency_and_throttling(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install()
    sensor = make()
    fake.cards[0].throttle_reasons = 0x1
    state = window(sensor, clock, 1.0).state["gpu:0"]
    json.dumps(state, allow_nan=False)
    assert state["temperature_c"] == {"start": 48.5, "end": 48.5}
    assert state["gpu_frequency_mhz"] == {"start": 1600.0, "end": 1600.0}
    assert state["throttle_reasons_mask"] == {"start": 1, "end": 1}
