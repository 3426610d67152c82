"""`pytest-tpw sensors`: which sensors work on this machine, which auto opens, and why each
other cannot (every sensor opened once and closed; nothing measured)."""

from __future__ import annotations

import sys

import pytest

from pytest_tpw import sensors
from pytest_tpw.cli import main as cli
from pytest_tpw.sensors.base import Sensor, SensorOptions, WindowEnergy


@pytest.fixture
def no_vendor_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host as a runner without the vendor libraries: their imports fail."""
    for module in ("pynvml", "amdsmi", "pyhlml", "pyzes", "zeus_apple_silicon"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(sensors, "AUTO_ORDER", ("nvml", "amdsmi", "cpu-estimate"))


def lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    out = capsys.readouterr().out.splitlines()
    return {line[2:].split()[0]: line for line in out[:-1]} | {"": out[-1]}


def test_each_sensor_works_or_says_why_not_and_auto_is_marked(
    no_vendor_libraries: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sensors"]) == 0
    got = lines(capsys)
    assert got["nvml"].startswith("  nvml") and "no: nvidia-ml-py is not installed" in got["nvml"]
    assert "pip install 'pytest-tpw[amd]'" in got["amdsmi"]
    assert got["cpu-estimate"].startswith("* cpu-estimate")  # what auto opens here
    assert "works: joules estimated, hardware key " in got["cpu-estimate"]
    assert "-cpu-estimate-x1" in got["cpu-estimate"]
    assert "works: joules simulated, hardware key sim-x1" in got["sim"]
    assert not got["sim"].startswith("*")  # never chosen by auto
    assert "needs its URL (--tpw-sensor-url)" in got["prometheus"]
    assert "tries nvml, amdsmi, cpu-estimate in turn and opens cpu-estimate here" in got[""]
    # auto's order first, then the rest
    names = list(got)[:-1]
    assert names[:3] == ["nvml", "amdsmi", "cpu-estimate"]


class Broken(Sensor):
    """A third-party sensor whose open() fails with something else than SensorUnavailable."""

    name = "broken"

    def open(self) -> None:
        raise RuntimeError("the vendor library crashed")

    def close(self) -> None:
        pass

    def begin(self) -> object:
        return None

    def end(self, token: object) -> WindowEnergy:
        return WindowEnergy({})

    def domains(self) -> tuple[str, ...]:
        return ("x",)

    def min_window_s(self) -> float:
        return 0.1


def test_a_sensor_that_fails_otherwise_is_reported_not_raised(no_vendor_libraries: None) -> None:
    found = sensors.survey(SensorOptions(), {"broken": Broken})
    (broken,) = [f for f in found if f.name == "broken"]
    assert broken.reason == "RuntimeError: the vendor library crashed"
    opened = [f.name for f in found if f.reason is None]
    assert "cpu-estimate" in opened and "sim" in opened
