"""TpwSession: sensor, meters with marker overrides, records, environment, JSON."""

from __future__ import annotations

import json
import time
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
from pytest_tpw.sensors.base import SensorHealth
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


# -- hardware keys that changed form, the plausibility guard, sensor health ------------------

H100 = "NVIDIA H100 80GB HBM3"


class _Board(FakeSensor):
    """A measured device sensor: hardware names, an older form of them, a described maximum
    power and power limit, and a health of its own."""

    name = "board"
    provenance = "measured"

    def __init__(self, options: Any = None, **kw: Any) -> None:
        self.names: tuple[str, ...] = kw.pop("names", (H100,))
        self.legacy: tuple[str, ...] | None = kw.pop("legacy", None)
        self.limit: float = kw.pop("limit", 700.0)
        self.dropped: int = kw.pop("dropped", 0)
        super().__init__(options=options, min_s=0.01, **kw)

    def hardware(self) -> tuple[str, ...]:
        return self.names

    def legacy_hardware(self) -> tuple[str, ...] | None:
        return self.legacy

    def describe(self) -> dict[str, Any]:
        device = {"power_limit_w": self.limit, "max_power_w": 700.0, "clocks_policy": "default"}
        return {"devices": [{"name": n, **device} for n in self.names]}

    def health(self) -> SensorHealth:
        return SensorHealth(True, 0.1, self.dropped, ("a note",) if self.dropped else ())


def _board_session(tmp_path: Path, mode: Any = None, **kw: Any) -> TpwSession:
    settings = Settings(
        enabled=True,
        sensor="board",
        max_delay=0,
        rounds=3,
        warmup=0,
        baseline_dir=Path("b"),
        idle_power=False,
        baseline_mode=mode,
    )
    return TpwSession.start(settings, tmp_path, {"board": lambda o: _Board(o, **kw)})


def _busy(s: TpwSession, nodeid: str) -> None:
    """A test of about 1 token/J on a 450 W board: 10 tokens in 20 ms windows."""
    meter = s.meter_for(nodeid, s.settings.for_test(None))
    meter(time.sleep, 0.02, tokens=10)
    s.record(meter)


def _board_run(tmp_path: Path, nodeids: list[str], mode: Any = None, **kw: Any) -> TpwSession:
    s = _board_session(tmp_path, mode, **kw)
    for nodeid in nodeids:
        _busy(s, nodeid)
    assert write_outputs(s, False, lambda: None)
    s.close()
    return s


def test_a_baseline_under_the_legacy_key_is_compared_then_carried_over(tmp_path: Path) -> None:
    old = _board_run(tmp_path, ["t.py::test_a", "t.py::test_b"], "extend", names=("Chip",))
    assert old.hardware_key == "chip-x1"
    kw: dict[str, Any] = {"names": ("Chip 16c",), "legacy": ("Chip",)}
    s = _board_session(tmp_path, **kw)
    assert (s.hardware_key, s.legacy_key) == ("chip-16c-x1", "chip-x1")
    assert s.legacy_baselines == tmp_path / "b" / "chip-x1.json"
    assert s.judge.baseline is not None and "t.py::test_b" in s.judge.baseline.measurements
    header = header_lines(s.sensor_info(), {}, s.baseline_path, 2, None, ("chip-x1", Path("o")))
    assert "comparing with o (2 measurement(s))" in header[-1]
    (note,) = [n for n in s.closing_notes() if "previous key" in n]
    assert "git mv b/chip-x1.json b/chip-16c-x1.json" in note
    assert "--tpw-update-missing changes no baseline" in note
    s.close()
    new = _board_run(tmp_path, ["t.py::test_a"], "extend", **kw)
    (written,) = [n for n in new.notes if "written to" in n]
    assert "starting from the baselines of" in written and "git rm" in written
    assert not [n for n in new.closing_notes() if "Keep them under it" in n]
    s = _board_session(tmp_path, **kw)
    assert s.legacy_baselines is None  # the new file is read from now on
    stored = s.judge.baseline
    assert stored is not None
    assert len(stored.sessions("t.py::test_a")) == 2  # the old session and this one
    assert len(stored.sessions("t.py::test_b")) == 1  # carried over, not lost
    assert (tmp_path / "b" / "chip-x1.json").exists()  # left for other runners
    s.close()


def test_an_implausible_result_is_said_and_still_stored(tmp_path: Path) -> None:
    s = _board_session(tmp_path, "extend", watts=4 * 700.0)  # 4 boards summed as one
    _busy(s, "t.py::test_a")
    (text,) = s.implausible["t.py::test_a"]
    assert "above the measured devices' maximum power 700 W" in text
    lines = s.closing_notes()
    assert any(
        line.startswith("implausible: 1 measurement(s) beyond physical bounds") for line in lines
    )
    assert f"  {text}" in lines
    settings = s.settings
    s.settings = Settings(**{**settings.__dict__, "json": tmp_path / "out.json"})
    assert write_outputs(s, False, lambda: None)
    s.close()
    assert (tmp_path / "b" / "nvidia-h100-80gb-hbm3-x1.json").exists()  # stored anyway
    doc = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert doc["measurements"]["t.py::test_a"]["implausible"] == [text]


def test_a_plausible_result_and_a_simulated_one_are_quiet(tmp_path: Path) -> None:
    s = _board_session(tmp_path, watts=450.0)
    _busy(s, "t.py::test_a")
    assert s.implausible == {}
    s.close()
    sim = TpwSession.start(Settings(enabled=True, sensor="sim", max_delay=0, rounds=3), tmp_path)
    sim.idle_watts = 10_000.0  # no sim run is ever checked, whatever it is given
    _busy(sim, "t.py::test_a")
    assert sim.implausible == {}
    sim.close()


def test_health_reaches_the_environment_and_the_controller(tmp_path: Path) -> None:
    worker = _board_session(tmp_path, dropped=2)
    worker.role = Worker(worker)
    _busy(worker, "t.py::test_a")
    worker.invalid_windows = 1
    worker.implausible["t.py::test_a"] = ["t.py::test_a: implausible: ..."]
    controller = _board_session(tmp_path)
    controller.idle_watts = 70.0
    controller.merge(worker.payload("t.py::test_a"))
    controller.merge(worker.payload())  # twice is once
    health = controller.environment()["sensor"]["health"]
    assert health == {
        "counter_advances": True,
        "update_period_s": 0.1,
        "idle_watts": 70.0,
        "dropped_reads": 2,
        "invalid_windows": 1,
        "notes": ["a note"],
    }
    assert controller.implausible == {"t.py::test_a": ["t.py::test_a: implausible: ..."]}
    lines = controller.closing_notes()
    assert lines[0] == (
        "sensor health: counter advancing yes, update period 100 ms, idle 70 W, "
        "dropped reads 2, invalid windows 1"
    )
    assert lines[1] == "  a note"
    worker.close()
    controller.close()


def test_invalid_windows_are_counted_by_the_session(tmp_path: Path) -> None:
    s = _board_session(tmp_path, invalid=[False, True, False, False])
    _busy(s, "t.py::test_a")
    assert s.invalid_windows == 1
    assert s.health()["invalid_windows"] == 1
    s.close()
