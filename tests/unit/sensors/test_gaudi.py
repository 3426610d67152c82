"""The ``gaudi`` sensor against a stand-in ``pyhlml`` built from its documented shapes."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.gaudi import GaudiSensor
from pytest_tpw.testing import FakeClock, check_sensor
from tests.fakes.energy_trace import Board
from tests.fakes.fake_pyhlml import HLML_ERROR_AIP_IS_LOST, FakeHlml, GaudiCard

Install = Callable[..., FakeHlml]
Make = Callable[..., GaudiSensor]


def hold(event: threading.Event, seconds: float) -> bool:
    """The sampler's wait: no samples between a window's edges (bounded in real time)."""
    return event.wait(10.0)


def cards(modules: Sequence[int] = (0, 1), watts: float = 500.0) -> list[GaudiCard]:
    return [
        GaudiCard(
            uuid=f"01P0-HL3090A0-18-U4V193-22-07-0{m}", module_id=m, board=Board(watts + m, 0.01)
        )
        for m in modules
    ]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HABANA_VISIBLE_MODULES", "HABANA_VISIBLE_DEVICES", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Install:
    def _install(found: list[GaudiCard] | None = None, **kwargs: Any) -> FakeHlml:
        fake = FakeHlml(found if found is not None else cards(), clock, **kwargs)
        monkeypatch.setitem(sys.modules, "pyhlml", fake)
        return fake

    return _install


@pytest.fixture
def make(clock: FakeClock) -> Iterator[Make]:
    made: list[GaudiSensor] = []

    def _make(devices: tuple[int, ...] | None = None) -> GaudiSensor:
        sensor = GaudiSensor(SensorOptions(devices=devices))
        sensor.clock, sensor.sleep, sensor.wait = clock, clock.sleep, hold
        made.append(sensor)
        sensor.open()
        return sensor

    yield _make
    for sensor in made:
        sensor.close()


def window(sensor: GaudiSensor, clock: FakeClock, seconds: float) -> Any:
    token = sensor.begin()
    clock.advance(seconds)
    return sensor.end(token)


class _WarningModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``pyhlml`` as the real package imports: with a DeprecationWarning from hlml_types."""

    def __init__(self, fake: FakeHlml) -> None:
        self.fake = fake

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(fullname, self) if fullname == "pyhlml" else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        warnings.warn("pyhlml.hlml_types is deprecated", DeprecationWarning, stacklevel=2)
        for name in dir(self.fake):
            if name.startswith("hlml") or name == "HLMLError":
                setattr(module, name, getattr(self.fake, name))


# -- the contract, and joules --------------------------------------------------------------


def test_passes_the_sensor_contract(install: Install, clock: FakeClock) -> None:
    install()
    sensor = GaudiSensor(SensorOptions())
    sensor.clock, sensor.sleep, sensor.wait = clock, clock.sleep, hold
    check_sensor(sensor, work=lambda: clock.advance(1.0))


def test_joules_are_the_millijoule_counter_delta(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install()
    sensor = make()
    t0 = clock()
    energy = window(sensor, clock, 2.0)
    for index in (0, 1):
        delta = fake.energy_mj_at(index, clock()) - fake.energy_mj_at(index, t0)
        assert energy.joules[f"gpu:{index}"] == delta * 1e-3
    assert energy.joules["gpu:0"] == pytest.approx(1000.0, abs=5.0)
    assert energy.joules["gpu:1"] == pytest.approx(1002.0, abs=5.0)
    assert sensor.method.startswith("HLML total-energy counter")
    assert sensor.health().update_period_s == pytest.approx(0.01, abs=1e-6)
    assert sensor.min_window_s() == pytest.approx(0.1, abs=1e-5)


def test_a_counter_that_goes_backwards_discards_the_window(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install([GaudiCard(board=Board(500.0, start_counts=10**7, reset_at_s=2.0))])
    sensor = make()
    energy = window(sensor, clock, 2.0)
    assert energy.invalid is not None and "gpu:0" in energy.invalid
    assert sensor.health().dropped_reads == 1


def test_a_still_counter_falls_back_to_integrated_power(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install([GaudiCard(board=Board(450.0, stuck=True))])
    sensor = make()
    assert "integrated hlmlDeviceGetPowerUsage" in sensor.method
    assert sensor.health().counter_advances is False
    energy = window(sensor, clock, 2.0)
    assert energy.joules["gpu:0"] == pytest.approx(900.0, rel=1e-12)
    assert energy.state["gpu:0"]["power_samples"] == 2


def test_a_still_counter_with_no_power_is_refused(install: Install, make: Make) -> None:
    install([GaudiCard(board=Board(450.0, stuck=True), reported_watts=0.0)])
    with pytest.raises(SensorUnavailable, match=r"gpu:0 .*did not advance.*reads 0 W"):
        make()


def test_a_failed_power_sample_is_a_sensor_error_and_a_dropped_read(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install([GaudiCard(board=Board(450.0, stuck=True))])
    sensor = make()
    token = sensor.begin()
    clock.advance(1.0)
    fake.errors["hlmlDeviceGetPowerUsage"] = HLML_ERROR_AIP_IS_LOST
    with pytest.raises(SensorError, match=r"gpu:0 .*power sample failed.*code 15"):
        sensor.end(token)
    assert sensor.health().dropped_reads == 1


# -- visible devices -------------------------------------------------------------------------


def test_habana_visible_modules_picks_by_module_id(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = cards((3, 1, 0, 2))
    install(found)
    monkeypatch.setenv("HABANA_VISIBLE_MODULES", "2")
    sensor = make()
    assert sensor.lock_ids() == (found[3].uuid,)
    assert sensor.describe()["devices"][0]["module_id"] == 2


def test_devices_are_numbered_in_module_id_order(install: Install, make: Make) -> None:
    found = cards((3, 1, 0, 2))
    install(found)
    sensor = make(devices=(0,))
    assert sensor.lock_ids() == (found[2].uuid,)  # module 0, HLML index 2
    assert any("module-id order" in note for note in sensor.health().notes)


def test_an_unknown_module_is_refused_naming_the_variable(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(cards((0, 1)))
    monkeypatch.setenv("HABANA_VISIBLE_MODULES", "1,7")
    with pytest.raises(SensorUnavailable, match=r"HABANA_VISIBLE_MODULES='1,7' names '7'.*0, 1"):
        make()


def test_habana_visible_devices_filters_only_outside_a_container(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = cards((0, 1, 2, 3))
    install(found)
    monkeypatch.setenv("HABANA_VISIBLE_DEVICES", "2")
    assert make().lock_ids() == (found[2].uuid,)


def test_habana_visible_devices_already_applied_is_not_applied_again(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = cards((4, 5))  # the container runtime mounted modules 4 and 5 only
    install(found)
    monkeypatch.setenv("HABANA_VISIBLE_DEVICES", "4,5")
    sensor = make()
    assert sensor.lock_ids() == (found[0].uuid, found[1].uuid)
    assert any("already applied" in note for note in sensor.health().notes)


def test_no_visible_module_is_refused_naming_the_variables(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install()
    monkeypatch.setenv("HABANA_VISIBLE_MODULES", "")
    with pytest.raises(SensorUnavailable, match=r"no device is visible.*HABANA_VISIBLE_MODULES=''"):
        make()


def test_visible_modules_without_module_ids_are_refused(
    install: Install, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(absent={"hlmlDeviceGetModuleID"})
    monkeypatch.setenv("HABANA_VISIBLE_MODULES", "1")
    with pytest.raises(SensorUnavailable, match=r"HABANA_VISIBLE_MODULES='1' .*no hlmlDevice"):
        make()


# -- refusals at import and start --------------------------------------------------------------


def test_a_missing_package_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch, make: Make
) -> None:
    monkeypatch.setitem(sys.modules, "pyhlml", None)
    with pytest.raises(SensorUnavailable, match=r"pip install 'pytest-tpw\[gaudi\]'"):
        make()


def test_a_missing_libhlml_is_refused_with_what_pyhlml_printed(
    install: Install, make: Make, capsys: pytest.CaptureFixture[str]
) -> None:
    install(library_missing=True)
    with pytest.raises(SensorUnavailable, match=r"HLML could not start.*Failed to load libhlml"):
        make()
    assert "Failed to load libhlml" not in capsys.readouterr().out


def test_the_deprecation_warning_of_the_import_does_not_escape(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, make: Make
) -> None:
    fake = FakeHlml(cards(), clock)
    monkeypatch.delitem(sys.modules, "pyhlml", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_WarningModule(fake), *sys.meta_path])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sensor = make()
    assert sensor.domains() == ("gpu:0", "gpu:1")


def test_an_older_pyhlml_without_optional_calls_still_measures(
    install: Install, make: Make, clock: FakeClock
) -> None:
    install(
        absent={
            "hlmlDeviceGetModuleID",
            "hlmlDeviceGetPowerManagementLimit",
            "hlmlDeviceGetPowerManagementLimitConstraints",
            "hlmlDeviceGetPerformanceState",
        }
    )
    sensor = make()
    device = sensor.describe()["devices"][0]
    assert device["module_id"] is None and device["where"] == "HLML index 0"
    assert device["power_limit_w"] == 900.0  # the default limit
    assert device["max_power_w"] == 900.0  # no range: the default limit again
    assert device["clocks_policy"] is None
    assert window(sensor, clock, 1.0).total > 0


# -- description and state ---------------------------------------------------------------------


def test_describe_names_versions_devices_and_limits(install: Install, make: Make) -> None:
    install()
    sensor = make()
    described = sensor.describe()
    json.dumps(described, allow_nan=False)
    assert described["driver_version"] == "1.21.0-6c7d1a9"
    assert described["hlml_version"] == "1.21.0"
    device = described["devices"][0]
    assert device["name"] == "HL-325L"
    assert device["uuid"] == "01P0-HL3090A0-18-U4V193-22-07-00"
    assert device["power_limit_w"] == 900.0
    assert device["max_power_w"] == 900.0
    assert device["clocks_policy"] == "performance state P0"
    assert sensor.hardware() == ("HL-325L", "HL-325L")


def test_window_state_holds_temperature_power_clock_and_throttling(
    install: Install, make: Make, clock: FakeClock
) -> None:
    fake = install([GaudiCard(board=Board([(0.0, 400.0), (1.0, 600.0)]))])
    sensor = make()
    fake.cards[0].throttle_reasons = 0x4
    state = window(sensor, clock, 1.0).state["gpu:0"]
    json.dumps(state, allow_nan=False)
    assert state["temperature_c"] == {"start": 40, "end": 40}
    assert state["power_w"] == {"start": 400.0, "end": 600.0}
    assert state["soc_clock_mhz"] == {"start": 1600, "end": 1600}
    assert state["throttle_reasons_mask"] == {"start": 4, "end": 4}
