"""TpwSession: sensor, meters with marker overrides, records, environment, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.config.settings import MarkerArgs, Settings
from pytest_tpw.measure.meter import OffMeter
from pytest_tpw.present.document import run_document
from pytest_tpw.present.report import Row, SensorInfo
from pytest_tpw.present.summary import header_lines, notes, rows
from pytest_tpw.run.outputs import write_outputs
from pytest_tpw.run.roles import Controller, Worker
from pytest_tpw.run.session import TpwSession
from pytest_tpw.sensors.sim import SimSensor
from pytest_tpw.store import files
from pytest_tpw.testing import FakeClock, FakeSensor
from pytest_tpw.verdict import Verdict

SETTINGS = Settings(enabled=True, sensor="sim", max_delay=0, rounds=3)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[TpwSession]:
    s = TpwSession.start(SETTINGS, tmp_path)
    yield s
    s.close()


def work() -> str:
    return "ok"


def test_start_opens_the_sim_sensor(tmp_path: Path) -> None:
    s = TpwSession.start(SETTINGS, tmp_path)
    sensor = s.sensor
    assert isinstance(sensor, SimSensor)
    assert s.skipped == {}
    assert sensor.options.sim_watts == 300.0
    assert s.sensor_info() == SensorInfo("sim", "simulated", sensor.method)
    # the session is whole: the judge is built and knows this hardware
    assert s.judge.hardware_key == s.hardware_key == "sim-x1"
    assert s.judge.baseline is None  # nothing stored yet in tmp_path
    assert isinstance(s.role, Controller) and s.role.reports()
    s.close()


def test_start_passes_ini_tuning(tmp_path: Path) -> None:
    s = TpwSession.start(
        Settings(enabled=True, sensor="sim", sim_watts=42.0, sim_noise=0.0, devices=(1,)), tmp_path
    )
    sensor = s.sensor
    assert isinstance(sensor, SimSensor)
    assert (sensor.options.sim_watts, sensor.options.sim_noise) == (42.0, 0.0)
    assert sensor.options.devices == (1,)
    s.close()


class _MineSensor(FakeSensor):
    name = "mine"


def test_extra_sensors_are_used(tmp_path: Path) -> None:
    s = TpwSession.start(
        Settings(enabled=True, sensor="mine"),
        tmp_path,
        extra_sensors={"mine": lambda options: _MineSensor(options=options)},
    )
    assert isinstance(s.sensor, _MineSensor)
    header = header_lines(s.sensor_info(), s.skipped, s.baseline_path, None, s.idle_watts)
    assert header[0].startswith("tpw: sensor mine, joules simulated")
    s.close()
    assert s.sensor.closed  # close() closes the sensor


def test_start_as_worker(tmp_path: Path) -> None:
    s = TpwSession.start(SETTINGS, tmp_path, worker=True)
    assert isinstance(s.role, Worker) and not s.role.reports()
    sink: dict[str, object] = {}
    assert s.role.finish(False, sink, lambda: None)
    assert sink[Worker.PAYLOAD_KEY] == s.payload()
    s.close()


def test_meter_for_session_rounds(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_a", SETTINGS.for_test(None))
    assert meter.enabled
    assert meter(work, tokens=10) == "ok"
    (m,) = meter.measurements
    assert len(m.samples) == 3  # the session's rounds=3
    assert m.warmup == 1  # the default warm-up
    assert meter.runner.max_delay_s == 0
    assert meter.sensor is session.sensor


def test_meter_for_applies_marker_overrides(session: TpwSession) -> None:
    test = SETTINGS.for_test(MarkerArgs(rounds=2, warmup=0, devices=(0,)))
    meter = session.meter_for("t.py::test_b", test)
    meter(work, tokens=10)
    (m,) = meter.measurements
    assert len(m.samples) == 2  # the marker's rounds=2 beats the session's 3
    assert m.warmup == 0
    assert meter.runner.devices == (0,)
    assert session.settings.rounds == 3  # the session settings are untouched


def test_meter_for_passes_runner_options(session: TpwSession) -> None:
    clock = FakeClock()
    synced: list[tuple[int, ...] | None] = []
    test = SETTINGS.for_test(None)
    meter = session.meter_for("t.py::test_o", test, clock=clock, sync=synced.append)
    assert meter.runner.clock is clock
    assert meter.min_window_s == session.sensor.min_window_s()
    meter(lambda: clock.advance(1.0), tokens=10)
    assert len(synced) == 2 * (1 + 3)  # both reads of the warm-up and the 3 recorded windows


def test_off_meter_measures_nothing() -> None:
    # without --tpw the plugin hands out an OffMeter: the work runs once, nothing is kept
    calls: list[int] = []
    meter = OffMeter("t.py::test_c")
    assert not meter.enabled

    def once() -> str:
        calls.append(1)
        return "ok"

    assert meter(once, tokens=10) == "ok"
    assert calls == [1]
    assert meter.result is None and meter.results == {} and meter.min_window_s is None


def test_record_then_rows(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_a", SETTINGS.for_test(None))
    meter(work, tokens=10)
    meter(work, tokens=5, name="second")
    # a loop left before its first window: started, never finished, recorded by nobody
    loop = meter.rounds(name="unfinished")
    next(loop)
    kept = session.record(meter)
    assert [m.key for m, _ in kept] == ["t.py::test_a", "t.py::test_a::second"]
    for m, result in kept:
        assert result.n == 3
        assert result.name == m.key
        assert result.provenance == "simulated"
        assert result.tokens_per_joule > 0
        assert result.verdict is Verdict.NO_BASELINE
    assert set(session.measurements) == {"t.py::test_a", "t.py::test_a::second"}
    shown = rows(session)
    assert [r.name for r in shown] == ["t.py::test_a", "t.py::test_a::second"]
    assert all(isinstance(r, Row) and r.baseline is None and r.warnings == 0 for r in shown)
    assert all(r.verdict is None for r in shown)  # not judged yet
    assert shown[0].result is session.measurements["t.py::test_a"][1]


def test_judge_meter_then_rows_carry_the_verdict(session: TpwSession) -> None:
    test = SETTINGS.for_test(None)
    meter = session.meter_for("t.py::test_j", test)
    meter(work, tokens=10)
    (j,) = session.judge_meter(meter, test)
    assert j.key == "t.py::test_j" and j.verdict is Verdict.NO_BASELINE
    session.record(meter)
    (row,) = rows(session)
    assert row.verdict is Verdict.NO_BASELINE and row.final_verdict is Verdict.NO_BASELINE
    assert any(line.startswith("verdicts: 1 NO_BASELINE") for line in notes(session))


def test_rows_count_warnings(session: TpwSession) -> None:
    meter = session.meter_for("t.py::test_w", SETTINGS.for_test(None))
    meter(work, tokens=10)
    (m,) = meter.measurements
    m.warnings.extend(["hot", "busy"])
    session.record(meter)
    assert rows(session)[0].warnings == 2


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
    settings = Settings(
        enabled=True,
        sensor="sim",
        max_delay=0,
        rounds=3,
        baseline_dir=tmp_path / "baselines",
        json=tmp_path / "out.json",
        devices=(0, 1),
    )
    s = TpwSession.start(settings, tmp_path)
    meter = s.meter_for("t.py::test_a", settings.for_test(None))
    meter(work, tokens=10)
    z = s.meter_for("t.py::test_z", settings.for_test(None))
    next(z.rounds())  # started, never finished
    s.record(meter)
    s.record(z)
    doc = run_document(s.shares, s.hardware_key, s.environment(), s.settings, s.idle_watts)
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
    assert a["verdict"] == "NO_BASELINE"
    # an unfinished measurement is not recorded, so it is not in the document
    assert "t.py::test_z" not in doc["measurements"]
    s.close()


# -- baselines written at the end: --tpw-update replaces, --tpw-record extends --------------


def _session_with(tmp_path: Path, **flags: Any) -> TpwSession:
    settings = Settings(
        enabled=True, sensor="sim", max_delay=0, rounds=3, baseline_dir=Path("b"), **flags
    )
    return TpwSession.start(settings, tmp_path)


def _measure(s: TpwSession, nodeid: str) -> None:
    meter = s.meter_for(nodeid, s.settings.for_test(None))
    meter(work, tokens=10)
    s.record(meter)


def _stored(tmp_path: Path, key: str) -> list[int]:
    """Sample counts of each stored session of ``key`` in the file the next session reads."""
    s = _session_with(tmp_path)
    try:
        assert s.judge.baseline is not None
        return [len(x.samples) for x in s.judge.baseline.sessions(key)]
    finally:
        s.close()


def _run(
    tmp_path: Path, nodeids: list[str], failed: tuple[str, ...] = (), **flags: Any
) -> TpwSession:
    s = _session_with(tmp_path, **flags)
    for nodeid in nodeids:
        _measure(s, nodeid)
    s.failed_tests.update(failed)
    assert write_outputs(s, False, lambda: None)
    s.close()
    return s


def test_record_extends_the_history_and_update_replaces_it(tmp_path: Path) -> None:
    _run(tmp_path, ["t.py::test_a"], baseline_mode="extend")
    _run(tmp_path, ["t.py::test_a"], baseline_mode="extend")
    assert _stored(tmp_path, "t.py::test_a") == [3, 3]  # --tpw-record: one session more
    s = _run(tmp_path, ["t.py::test_a"], baseline_mode="replace")
    assert _stored(tmp_path, "t.py::test_a") == [3]  # --tpw-update: this session only
    assert any("1 measurement(s) written" in n for n in s.notes)


def test_update_missing_leaves_existing_histories(tmp_path: Path) -> None:
    _run(tmp_path, ["t.py::test_a"], baseline_mode="extend")
    _run(tmp_path, ["t.py::test_a", "t.py::test_b"], baseline_mode="missing")
    assert _stored(tmp_path, "t.py::test_a") == [3]
    assert _stored(tmp_path, "t.py::test_b") == [3]


def test_a_failed_test_records_nothing(tmp_path: Path) -> None:
    _run(
        tmp_path,
        ["t.py::test_a", "t.py::test_b"],
        failed=("t.py::test_b",),
        baseline_mode="replace",
    )
    assert _stored(tmp_path, "t.py::test_a") == [3]
    assert _stored(tmp_path, "t.py::test_b") == []  # its call failed: not a baseline


def test_no_baselines_without_a_writing_mode(tmp_path: Path) -> None:
    _run(tmp_path, ["t.py::test_a"])
    assert not (tmp_path / "b").exists()
