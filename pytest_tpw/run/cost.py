"""What a measured run will cost, said at its start: tests x windows x window length.

Each measured test records the windows its policy asks for (fixed rounds; 20 when writing
baselines; 5 without a baseline; 5 to 20 against one, stopping at the first look that
decides) after its warm-up windows. A window lasts what the stored sessions say it lasted
for that measurement; without a stored session, at least the sensor's minimum window (the
call form repeats short calls to fill it). The time a test spends outside its windows
(loading a model, its own setup) is not known before it runs and is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_tpw.config.settings import TestSettings
from pytest_tpw.judging.judge import Judge, owners
from pytest_tpw.store.baseline import BaselineError, StoredSession


@dataclass(frozen=True)
class Planned:
    """One measurement as the estimate sees it."""

    key: str
    windows: tuple[int, int]  # the fewest and the most windows it records
    warmup: int
    seconds: float | None  # its stored window length; None without a stored session
    min_window: float  # the shortest window the sensor measures well


@dataclass(frozen=True)
class Estimate:
    tests: int
    measurements: int
    windows: tuple[int, int]  # fewest, most, warm-up windows included
    seconds: tuple[float, float]
    guessed: int  # measurements counted at the minimum window (no stored length)


def measurement_keys(nodeids: Iterable[str], stored: Iterable[str]) -> dict[str, list[str]]:
    """Each test's stored measurement keys (its unnamed one is ``nodeid``, a named one
    ``nodeid::name``); a test with none has one, named after it."""
    index: dict[str, list[str]] = {}
    for key in stored:
        for test in owners(key):
            index.setdefault(test, []).append(key)
    return {nodeid: sorted(set(index.get(nodeid) or [nodeid])) for nodeid in nodeids}


def window_seconds(sessions: Sequence[StoredSession]) -> float | None:
    """The mean window length of a measurement's newest stored session."""
    if not sessions or not sessions[-1].samples:
        return None
    samples = sessions[-1].samples
    return sum(s[2] for s in samples) / len(samples)


def estimate(planned: Sequence[Planned], tests: int) -> Estimate:
    """The run's windows and their seconds, warm-up included."""
    low = high = guessed = 0
    fast = slow = 0.0
    for p in planned:
        seconds = p.seconds
        if seconds is None:
            guessed += 1
            seconds = p.min_window
        few, many = p.windows[0] + p.warmup, p.windows[1] + p.warmup
        low, high = low + few, high + many
        fast, slow = fast + few * seconds, slow + many * seconds
    return Estimate(tests, len(planned), (low, high), (fast, slow), guessed)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def line(e: Estimate, min_window: float) -> str:
    """The start-of-run line: ``tpw: cost: 3 measured test(s), 18-63 windows, about 1-4 min
    of windows (...)``."""
    low, high = e.windows
    windows = f"{low}" if low == high else f"{low}-{high}"
    fast, slow = e.seconds
    took = _duration(fast)
    if _duration(slow) != took:
        took = f"{took}-{_duration(slow)}"
    tests = f"{e.tests} measured test(s)"
    if e.measurements != e.tests:
        tests += f" ({e.measurements} measurements)"
    about = "about"
    if e.guessed == e.measurements:
        how = f"no window lengths stored yet: each at least the {min_window:.3g} s minimum"
        about, took = "at least", _duration(fast)
    elif e.guessed:
        how = f"lengths from the baselines, {e.guessed} new at the {min_window:.3g} s minimum"
    else:
        how = "lengths from the baselines"
    return (
        f"tpw: cost: {tests}, {windows} windows with warm-up, {about} {took} of windows "
        f"({how}; setup not counted; docs/cost.md)"
    )


def plan(
    tests: Sequence[tuple[str, TestSettings]], judge: Judge, sensor_min_window: float
) -> tuple[Estimate, float]:
    """The estimate for ``tests`` (node id and effective settings, one per measured test)
    under ``judge``'s baselines, and the minimum window it assumed."""
    stored = judge.baseline.measurements if judge.baseline is not None else {}
    keys = measurement_keys((nodeid for nodeid, _ in tests), stored)
    planned = []
    for nodeid, test in tests:
        policy = judge.policy(test)
        min_window = test.min_window if test.min_window is not None else sensor_min_window
        for key in keys[nodeid]:
            try:
                sessions = stored.get(key, [])
            except BaselineError:  # a damaged entry: the run says so where it reads it
                sessions = []
            planned.append(
                Planned(key, policy.planned(key), test.warmup, window_seconds(sessions), min_window)
            )
    return estimate(planned, len(tests)), sensor_min_window
