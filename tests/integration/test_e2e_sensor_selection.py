"""``--tpw-sensor``: built-in names, ``auto``, and third-party sensors from the pluggy hook."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

import pytest_tpw.sensors

SENSORS_DIR = Path(pytest_tpw.sensors.__file__).parent

show_tpw_warnings = pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")

#: An inner conftest registering fake sensors through ``pytest_tpw_sensor_factories``.
FAKE_SENSORS = """
import time

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors import Sensor, WindowEnergy


class Steady(Sensor):
    name = "fake-steady"
    provenance = "measured"
    method = "fake counter, 50 W"

    def open(self):
        self.ends = 0

    def domains(self):
        return ("fake:0",)

    def min_window_s(self):
        return 0.01

    def begin(self):
        return time.perf_counter()

    def joules(self, seconds):
        return 50.0 * seconds

    def end(self, token):
        self.ends += 1
        return WindowEnergy({"fake:0": self.joules(time.perf_counter() - token)})

    def close(self):
        with open("closed.txt", "a") as f:
            f.write(self.name + "\\n")


class Zero(Steady):
    name = "fake-zero"

    def joules(self, seconds):
        return 0.0


class GlitchOnce(Steady):
    name = "fake-glitch-once"

    def end(self, token):
        energy = super().end(token)
        if self.ends == 3:
            energy.invalid = "counter went backwards"
        return energy


class GlitchEveryOther(Steady):
    name = "fake-glitch-every-other"

    def end(self, token):
        energy = super().end(token)
        if self.ends % 2 == 0:
            energy.invalid = "counter went backwards"
        return energy


class AlwaysInvalid(Steady):
    name = "fake-always-invalid"

    def end(self, token):
        energy = super().end(token)
        energy.invalid = "counter went backwards"
        return energy


class Lost(Steady):
    name = "fake-lost"

    def end(self, token):
        raise SensorError("fake:0: the device fell off the bus; reset it")


class Absent(Steady):
    name = "fake-absent"

    def open(self):
        raise SensorUnavailable("no fake device on this bus; plug one in")


def pytest_tpw_sensor_factories():
    return {cls.name: cls for cls in (Steady, Zero, GlitchOnce, GlitchEveryOther,
                                      AlwaysInvalid, Lost, Absent)}
"""

CALL_TEST = """
def test_call(tpw):
    tpw(lambda: None, tokens=1)
    assert tpw.result.n == 3
"""


@pytest.fixture
def fake_sensors(tpwtester: pytest.Pytester) -> pytest.Pytester:
    tpwtester.makeconftest(FAKE_SENSORS)
    tpwtester.makepyfile(test_sensor=CALL_TEST)
    return tpwtester


def test_unknown_sensor_lists_the_allowed_names(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_sensor=CALL_TEST)
    result = tpwtester.runpytest("--tpw", "--tpw-sensor", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*unknown sensor 'nope'; choose one of: auto*cpu-estimate*nvml*rapl*sim*"]
    )


def test_hook_sensor_is_selectable_and_reported(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-sensor", "fake-steady")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "tpw: sensor fake-steady, joules measured (fake counter, 50 W)",
            "*= tokens per joule =*",
            "test_sensor.py::test_call *NO_BASELINE",
            "sensor: fake-steady (fake counter, 50 W); joules MEASURED",
        ]
    )
    # the session closes its sensor exactly once, at the end
    closed = (fake_sensors.path / "closed.txt").read_text(encoding="utf-8")
    assert closed == "fake-steady\n"


def test_unknown_sensor_lists_hook_sensors_too(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest("--tpw", "--tpw-sensor", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown sensor 'nope'; choose one of:*fake-steady*"])


def test_zero_energy_fails_naming_the_test(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-sensor", "fake-zero")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_sensor.py::test_call (window 0): the fake-zero sensor measured 0 J*"
            "needs positive energy*"
        ]
    )


@show_tpw_warnings
def test_one_invalid_window_is_discarded_with_a_warning(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest(
        "--tpw", "--tpw-rounds", "3", "--tpw-json", "out.json", "--tpw-sensor", "fake-glitch-once"
    )
    result.assert_outcomes(passed=1, warnings=1)  # test_call itself asserts n == 3
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "*TpwMeasurementWarning: test_sensor.py::test_call (window *): window discarded: "
            "counter went backwards*",
        ]
    )


@show_tpw_warnings
def test_scattered_invalid_windows_are_not_a_run(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest(
        "--tpw", "--tpw-rounds", "3", "--tpw-sensor", "fake-glitch-every-other"
    )
    result.assert_outcomes(passed=1)


def test_always_invalid_fails_after_three(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest(
        "--tpw", "--tpw-rounds", "3", "--tpw-sensor", "fake-always-invalid"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_sensor.py::test_call (window *): 3 windows in a row were invalid "
            "(counter went backwards)*"
        ]
    )


def test_sensor_error_mid_window_fails_naming_the_test(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-sensor", "fake-lost")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*SensorError: test_sensor.py::test_call (window 0): fake:0: the device fell off the bus*"]
    )


def test_unavailable_sensor_is_a_usage_error(fake_sensors: pytest.Pytester) -> None:
    result = fake_sensors.runpytest("--tpw", "--tpw-sensor", "fake-absent")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sensor 'fake-absent': no fake device on this bus; plug one in*"])


def _auto_skip_reason() -> str | None:
    missing = [n for n in ("nvml.py", "rapl.py") if not (SENSORS_DIR / n).exists()]
    if missing:
        return f"pytest_tpw/sensors/{' and '.join(missing)} not written yet"
    if glob.glob("/dev/nvidia[0-9]*"):
        return "an NVIDIA GPU is present: auto would pick nvml"
    if any(os.access(p, os.R_OK) for p in glob.glob("/sys/class/powercap/*/energy_uj")):
        return "readable RAPL counters are present: auto would pick rapl"
    return None


@pytest.mark.skipif(_auto_skip_reason() is not None, reason=str(_auto_skip_reason()))
def test_auto_falls_back_to_cpu_estimate_and_says_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("--tpw", "--tpw-sensor", "auto")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "tpw: sensor cpu-estimate, joules estimated*",
            "tpw: passed over nvml: ?*",
            "tpw: passed over rapl: ?*",
        ]
    )
    result.stdout.fnmatch_lines(["sensor: cpu-estimate *ESTIMATED*"])
