"""The start-of-run cost line: tests x windows x window length, from the stored sessions."""

from __future__ import annotations

import pytest

from pytest_tpw.config.settings import MarkerArgs, Settings
from pytest_tpw.judging.judge import Judge
from pytest_tpw.run import cost
from pytest_tpw.store.baseline import BaselineFile, StoredSession

KEY = "sim-x1"


def stored(seconds: float, n: int = 20) -> StoredSession:
    return StoredSession(
        date="2026-12-01T00:00:00+00:00",
        commit=None,
        software={},
        sensor="sim",
        provenance="simulated",
        samples=[(100, 1.0, seconds)] * n,
    )


def test_a_test_counts_each_stored_measurement_or_one_of_its_own() -> None:
    keys = cost.measurement_keys(
        ["t.py::test_a", "t.py::test_b", "t.py::test_c[x::y]", "t.py::test_d"],
        [
            "t.py::test_a",
            "t.py::test_b::prefill",
            "t.py::test_b::decode",
            "t.py::test_z",
            "t.py::test_d::stage::one",  # a name may hold "::" too
        ],
    )
    assert keys == {
        "t.py::test_a": ["t.py::test_a"],
        "t.py::test_b": ["t.py::test_b::decode", "t.py::test_b::prefill"],
        "t.py::test_c[x::y]": ["t.py::test_c[x::y]"],
        "t.py::test_d": ["t.py::test_d::stage::one"],
    }


def test_the_estimate_adds_windows_and_their_seconds() -> None:
    planned = [
        cost.Planned("a", (5, 20), warmup=1, seconds=2.0, min_window=0.1),
        cost.Planned("b", (5, 5), warmup=1, seconds=None, min_window=0.1),
    ]
    e = cost.estimate(planned, tests=2)
    # a: 6-21 windows of 2 s; b: 6 windows at the 0.1 s minimum
    assert e.windows == (12, 27)
    assert e.seconds == pytest.approx((6 * 2.0 + 6 * 0.1, 21 * 2.0 + 6 * 0.1))
    assert (e.tests, e.measurements, e.guessed) == (2, 2, 1)
    text = cost.line(e, 0.1)
    assert text.startswith("tpw: cost: 2 measured test(s), 12-27 windows with warm-up")
    assert "about 13 s-43 s of windows" in text
    assert "1 new at the 0.1 s minimum" in text


def test_without_stored_lengths_the_estimate_is_a_lower_bound() -> None:
    e = cost.estimate([cost.Planned("a", (5, 5), 1, None, 1.0)], tests=1)
    assert "at least 6 s of windows" in cost.line(e, 1.0)
    assert "about" not in cost.line(e, 1.0)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.2, "under 1 s"), (42, "42 s"), (600, "10 min"), (9000, "2.5 h")]
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert cost._duration(seconds) == text


def test_plan_follows_each_test_and_its_baseline() -> None:
    baseline = BaselineFile(
        KEY,
        {},
        {"t.py::test_a": [stored(3.0)], "t.py::test_b::decode": [stored(0.5)]},
    )
    judge = Judge(Settings(enabled=True), baseline, KEY)
    settings = judge.settings
    tests = [
        ("t.py::test_a", settings.for_test(None)),  # compared: 5-20 windows of 3 s
        ("t.py::test_b", settings.for_test(MarkerArgs(rounds=3))),  # fixed: 3 of 0.5 s
        ("t.py::test_c", settings.for_test(None)),  # new: 5 at the sensor's minimum
    ]
    e, minimum = cost.plan(tests, judge, sensor_min_window=0.25)
    assert minimum == 0.25
    assert e.windows == (6 + 4 + 6, 21 + 4 + 6)
    assert e.seconds == pytest.approx((6 * 3 + 4 * 0.5 + 6 * 0.25, 21 * 3 + 4 * 0.5 + 6 * 0.25))
    assert e.guessed == 1
