"""The sensor registry: names, ``auto`` selection, hook-registered and entry-point sensors."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_tpw import sensors
from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors import Selection, Sensor, SensorOptions, WindowEnergy, known_names, select
from pytest_tpw.sensors.cpu_estimate import CpuEstimateSensor
from pytest_tpw.sensors.sim import SimSensor


class Working(Sensor):
    name = "working"
    provenance = "measured"
    opened = 0

    def open(self) -> None:
        type(self).opened += 1
        self.is_open = True

    def domains(self) -> Sequence[str]:
        return ("x:0",)

    def min_window_s(self) -> float:
        return 0.5

    def begin(self) -> object:
        return 0.0

    def end(self, token: object) -> WindowEnergy:
        return WindowEnergy({"x:0": 1.0})


class Refusing(Working):
    name = "refusing"

    def open(self) -> None:
        raise SensorUnavailable("no")


@pytest.fixture(autouse=True)
def no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed third-party sensors must not leak into these tests."""
    monkeypatch.setattr(sensors, "_entry_point_factories", dict)


def test_select_sim_opens_it() -> None:
    selection = select("sim", SensorOptions(sim_watts=250.0, seed=1))
    assert isinstance(selection, Selection)
    assert isinstance(selection.sensor, SimSensor)
    assert selection.sensor.name == "sim"
    assert selection.skipped == {}
    assert "250 W" in selection.sensor.method  # set by open()
    assert selection.sensor.options.sim_watts == 250.0


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(SensorUnavailable) as info:
        select("nvlm", SensorOptions())
    text = str(info.value)
    assert "'nvlm'" in text
    assert (
        "choose one of: auto, amdsmi, apple, cpu-estimate, dcgm-exporter, gaudi, intel-gpu, "
        "jetson, nvml, prometheus, rapl, sim"
    ) in text


def test_unknown_name_lists_extra_sensors_too() -> None:
    with pytest.raises(SensorUnavailable, match=r"mine"):
        select("nope", SensorOptions(), extra={"mine": Working})


def test_known_names() -> None:
    builtin = [
        "auto", "amdsmi", "apple", "cpu-estimate", "dcgm-exporter", "gaudi", "intel-gpu",
        "jetson", "nvml", "prometheus", "rapl", "sim",
    ]  # fmt: skip
    assert known_names() == builtin
    assert known_names({"zz": Working, "sim": Working}) == [*builtin, "zz"]


def test_auto_tries_the_accelerators_before_the_cpu_and_says_why_each_was_passed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a host with none of the vendor libraries or devices (this one, with an empty
    powercap tree), auto falls through every accelerator to the CPU-time estimate, and the
    reasons name what to install."""
    from pytest_tpw.sensors import AUTO_ORDER
    from pytest_tpw.sensors.jetson import JetsonSensor

    for module in ("pynvml", "amdsmi", "pyhlml", "pyzes", "zeus_apple_silicon"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails: not installed
    monkeypatch.setattr(JetsonSensor, "sysfs_root", str(tmp_path / "no-sysfs"))
    selection = select("auto", SensorOptions(powercap_root=str(tmp_path / "no-powercap")))
    assert selection.sensor.name == "cpu-estimate"
    assert list(selection.skipped) == list(AUTO_ORDER[: AUTO_ORDER.index("cpu-estimate")])
    assert "pytest-tpw[amd]" in selection.skipped["amdsmi"]
    assert "pytest-tpw[gaudi]" in selection.skipped["gaudi"]
    assert "pytest-tpw[intel-gpu]" in selection.skipped["intel-gpu"]
    assert "not macOS" in selection.skipped["apple"]


def test_auto_picks_first_working_and_records_skips() -> None:
    Working.opened = 0
    selection = select(
        "auto",
        SensorOptions(),
        extra={"refusing": Refusing, "working": Working, "later": Working},
        order=("refusing", "working", "later"),
    )
    assert isinstance(selection.sensor, Working)
    assert selection.sensor.is_open
    assert Working.opened == 1  # stops at the first that works
    assert selection.skipped == {"refusing": "no"}


def test_auto_skips_a_factory_that_refuses_when_built() -> None:
    def refuse(options: SensorOptions) -> Sensor:
        raise SensorUnavailable("no driver")

    selection = select(
        "auto", SensorOptions(), extra={"r": refuse, "w": Working}, order=("r", "unknown-one", "w")
    )
    assert isinstance(selection.sensor, Working)
    assert selection.skipped["r"] == "no driver"
    assert "unknown sensor 'unknown-one'" in selection.skipped["unknown-one"]


def test_auto_with_nothing_working_gives_every_reason() -> None:
    with pytest.raises(SensorUnavailable) as info:
        select("auto", SensorOptions(), extra={"a": Refusing, "b": Refusing}, order=("a", "b"))
    assert str(info.value) == "no sensor works here (a: no; b: no)"


def test_auto_reaches_builtin_cpu_estimate() -> None:
    selection = select("auto", SensorOptions(), extra={"r": Refusing}, order=("r", "cpu-estimate"))
    assert isinstance(selection.sensor, CpuEstimateSensor)
    assert selection.skipped == {"r": "no"}


def test_auto_never_picks_sim_by_default() -> None:
    assert "sim" not in sensors.AUTO_ORDER


def test_explicit_name_that_refuses_raises() -> None:
    with pytest.raises(SensorUnavailable, match=r"^no$"):
        select("refusing", SensorOptions(), extra={"refusing": Refusing})


def test_extra_overrides_nothing_builtin_unless_named() -> None:
    extra = {"mine": Working}
    assert isinstance(select("sim", SensorOptions(), extra).sensor, SimSensor)
    assert isinstance(select("cpu-estimate", SensorOptions(), extra).sensor, CpuEstimateSensor)
    assert isinstance(select("mine", SensorOptions(), extra).sensor, Working)
    # named like a built-in, the extra one replaces it
    assert isinstance(select("sim", SensorOptions(), {"sim": Working}).sensor, Working)


def test_entry_point_sensor_selectable_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensors, "_entry_point_factories", lambda: {"ep": lambda: Working})
    assert "ep" in known_names()
    names = known_names()
    assert names[0] == "auto" and names[1:] == sorted(names[1:])
    selection = select("ep", SensorOptions())
    assert isinstance(selection.sensor, Working)
    assert selection.sensor.is_open
    # usable from auto as well
    auto = select("auto", SensorOptions(), order=("ep",))
    assert isinstance(auto.sensor, Working)


def test_extra_sensor_wins_over_entry_point_of_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensors, "_entry_point_factories", lambda: {"ep": lambda: Refusing})
    assert isinstance(select("ep", SensorOptions(), {"ep": Working}).sensor, Working)


def test_entry_point_not_loaded_for_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    def loader() -> type[Sensor]:
        raise AssertionError("entry point loaded for a built-in name")

    monkeypatch.setattr(sensors, "_entry_point_factories", lambda: {"sim": loader})
    assert isinstance(select("sim", SensorOptions()).sensor, SimSensor)
