"""TpwSession: sensor, meters with marker overrides, records, environment, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_tpw import files
from pytest_tpw.meter import Measurement
from pytest_tpw.report import Row, SensorInfo
from pytest_tpw.sensors.sim import SimSensor
from pytest_tpw.session import TpwSession
from pytest_tpw.settings import MarkerArgs, Settings

SETTINGS = Settings(enabled=True, sensor="sim", max_delay=0, rounds=3)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[TpwSession]:
    s = TpwSession(SETTINGS, tmp_path)
    s.open_sensor()
    s.load_baselines()
    yield s
    s.close()


def work() -> str:
    return "ok"


def test_open_sensor_is_sim(tmp_path: Path) -> None:
    s = TpwSession(SETTINGS, tmp_path)
    sensor = s.open_sensor()
    assert isinstance(sensor, SimSensor)
    assert s.sensor is sensor
    assert s.skipped == {}
    assert sensor.options.sim_watts == 300.0
    assert s.sensor_info() == SensorInfo("sim", "simulated", sensor.method)
    s.close()


def test_open_sensor_passes_ini_tuning(tmp_path: Path) -> None:
    s = TpwSession(Settings(enabled=True, sensor="sim", sim_watts=42.0, sim_noise=0.0,
                            devices=(1,)), tmp_path)
    sensor = s.open_sensor()
    assert (sensor.options.sim_watts, sensor.options.sim_noise) == (42.0, 0.0)
    assert sensor.options.devices == (1,)


def test_extra_sensors_are_used(tmp_path: Path) -> None:
    s = TpwSession(Settings(enabled=True, sensor="mine"), tmp_path,
                   extra_sensors={"mine": SimSensor})
    assert isinstance(s.open_sensor(), SimSensor)


def test_meter_for_session_rounds(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_a", None)
    assert meter.enabled
    assert meter(work, tokens=10) == "ok"
    (m,) = meter.measurements
    assert len(m.samples) == 3  # the session's rounds=3
    assert m.warmup == 1  # the default warm-up
    assert meter.config.max_delay_s == 0


def test_meter_for_applies_marker_overrides(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_b", MarkerArgs(rounds=2, warmup=0, devices=(0,)))
    meter(work, tokens=10)
    (m,) = meter.measurements
    assert len(m.samples) == 2  # the marker's rounds=2 beats the session's 3
    assert m.warmup == 0
    assert meter.config.devices == (0,)
    assert session.settings.rounds == 3  # the session settings are untouched


def test_meter_for_disabled_measures_nothing(tmp_path: Path) -> None:
    s = TpwSession(Settings(enabled=False, sensor="sim", max_delay=0), tmp_path)
    meter = s.meter_for("t.py::test_c", None)
    assert not meter.enabled
    assert meter(work, tokens=10) == "ok"
    assert meter.measurements == []


def test_record_then_rows(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_a", None)
    meter(work, tokens=10)
    meter(work, tokens=5, name="second")
    for m in meter.measurements:
        result = session.record(m)
        assert result is not None
        assert result.n == 3
        assert result.name == m.key
        assert result.provenance == "simulated"
        assert result.tokens_per_joule > 0
    empty = Measurement("t.py::test_z", None, "sim", "simulated")
    assert session.record(empty) is None
    assert set(session.measurements) == {"t.py::test_a", "t.py::test_a::second",
                                         "t.py::test_z"}
    rows = session.rows()
    assert [r.name for r in rows] == ["t.py::test_a", "t.py::test_a::second"]
    assert all(isinstance(r, Row) and r.baseline is None and r.warnings == 0 for r in rows)
    assert rows[0].result is session.measurements["t.py::test_a"][1]


def test_rows_count_warnings(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_w", None)
    meter(work, tokens=10)
    (m,) = meter.measurements
    m.warnings.extend(["hot", "busy"])
    session.record(m)
    assert session.rows()[0].warnings == 2


def test_environment(session: TpwSession) -> None:
    env = session.environment()
    assert env["hardware_key"] == "sim-x1"  # slug("sim") with count 1
    sensor = env["sensor"]
    assert sensor["name"] == "sim"
    assert sensor["provenance"] == "simulated"
    assert sensor["domains"] == ["sim:0"]
    assert sensor["details"] == {"watts": 300.0, "noise": 0.01}
    assert sensor["skipped"] == {}
    assert sensor["min_window_s"] > 0
    assert "300 W" in sensor["method"]
    assert env["software"]["python"]
    assert "kernel" in env["software"]
    assert "commit" in env
    session.extra_environment["xdist"] = {"workers": 2}
    assert session.environment()["xdist"] == {"workers": 2}


def test_json_document_is_serialisable(tmp_path: Path) -> None:
    settings = Settings(enabled=True, sensor="sim", max_delay=0, rounds=3,
                        baseline_dir=tmp_path / "baselines", json=tmp_path / "out.json",
                        devices=(0, 1))
    s = TpwSession(settings, tmp_path)
    s.open_sensor()
    s.load_baselines()
    meter = s.meter_for("t.py::test_a", None)
    meter(work, tokens=10)
    s.record(meter.measurements[0])
    s.record(Measurement("t.py::test_z", None, "sim", "simulated"))
    doc = s.json_document()
    text = files.dump_json(doc)
    assert json.loads(text) == doc
    st = doc["settings"]
    assert st["baseline_dir"] == str(tmp_path / "baselines")
    assert st["json"] == str(tmp_path / "out.json")
    assert st["devices"] == [0, 1]
    assert st["rounds"] == 3
    assert st["sensor"] == "sim"
    assert doc["environment"]["hardware_key"] == "sim-x1"
    a = doc["measurements"]["t.py::test_a"]
    assert len(a["samples"]) == 3
    assert a["provenance"] == "simulated"
    assert "summary" in a
    assert "summary" not in doc["measurements"]["t.py::test_z"]
