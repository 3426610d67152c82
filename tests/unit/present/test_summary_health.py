"""The terminal's sensor-health line and implausible-results block (present/summary.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_tpw.present.report import SensorInfo
from pytest_tpw.present.summary import header_lines, health_lines, implausible_lines

QUIET: dict[str, Any] = {
    "counter_advances": None,
    "update_period_s": None,
    "idle_watts": None,
    "dropped_reads": 0,
    "invalid_windows": 0,
    "notes": [],
}


def test_a_measured_sensor_always_shows_its_health() -> None:
    assert health_lines(QUIET, "measured") == [
        "sensor health: counter advancing not checked, update period unknown, "
        "idle not measured, dropped reads 0, invalid windows 0"
    ]
    lines = health_lines({**QUIET, "counter_advances": False, "notes": ["n"]}, "estimated")
    assert lines[0].startswith("sensor health: counter advancing NO,")
    assert lines[1:] == ["  n"]


def test_sim_shows_its_health_only_when_a_window_was_lost() -> None:
    assert health_lines(QUIET, "simulated") == []
    (line,) = health_lines({**QUIET, "invalid_windows": 3}, "simulated")
    assert line.endswith("invalid windows 3")


def test_implausible_results_one_per_line_under_a_head() -> None:
    assert implausible_lines({}) == []
    lines = implausible_lines({"b": ["b: implausible: x"], "a": ["a: one", "a: two"]})
    assert lines == [
        "implausible: 2 measurement(s) beyond physical bounds (TpwImplausibleWarning; "
        "bounds and sources in docs/sensors.md):",
        "  a: one",
        "  a: two",
        "  b: implausible: x",
    ]


def test_the_header_says_when_the_baselines_come_from_the_previous_key() -> None:
    info = SensorInfo("rapl", "measured", "m")
    new, old = Path(".tpw/amd-epyc-16c-x1.json"), Path(".tpw/amd-epyc-x1.json")
    lines = header_lines(info, {}, new, 7, None, ("amd-epyc-x1", old))
    assert lines[-1] == (
        "tpw: baselines .tpw/amd-epyc-16c-x1.json (none yet): comparing with "
        ".tpw/amd-epyc-x1.json (7 measurement(s)), this hardware's baselines under its "
        "previous key amd-epyc-x1 (keys now count the CPUs a runner has)"
    )
    assert header_lines(info, {}, new, None, None)[-1] == (
        "tpw: baselines .tpw/amd-epyc-16c-x1.json (none yet)"
    )
