"""Live progress: one rewritten line in a terminal, one line per measurement in a CI log."""

from __future__ import annotations

import io

from pytest_tpw.present.progress import CLEAR_LINE, MAX_WIDTH, Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(tty: bool) -> tuple[Progress, io.StringIO, FakeClock]:
    stream, clock = io.StringIO(), FakeClock()
    return Progress(stream, tty=tty, clock=clock), stream, clock


def draws(stream: io.StringIO) -> list[str]:
    """The states of the live line, in order (each draw starts with CLEAR_LINE)."""
    return [part for part in stream.getvalue().split(CLEAR_LINE) if part]


def test_tty_line_shows_test_round_window_and_level() -> None:
    progress, stream, clock = make(tty=True)
    progress.start("t.py::test_decode", max_rounds=30)
    clock.now += 0.5
    progress.window("t.py::test_decode", 3, 0.254, 123.456)
    assert draws(stream) == [
        "tpw t.py::test_decode: warming up",
        "tpw t.py::test_decode: round 3/30, window 0.254 s, 123.5 tokens/J",
    ]
    assert "\n" not in stream.getvalue()  # rewritten in place, never a new line
    clock.now += 0.5
    progress.window("t.py::test_decode", 4, 0.25, 120.0)
    clock.now += 0.5
    progress.start("t.py::test_other", max_rounds=None)
    clock.now += 0.5
    progress.window("t.py::test_other", 7, 1.5, 80.0)
    assert draws(stream)[-1] == "tpw t.py::test_other: round 7, window 1.5 s, 80 tokens/J"


def test_tty_updates_are_throttled_to_ten_a_second() -> None:
    progress, stream, clock = make(tty=True)
    progress.start("k", max_rounds=1000)
    for k in range(1, 1001):  # 1000 rounds in one second
        clock.now += 0.001
        progress.window("k", k, 0.001, 50.0)
    n = len(draws(stream))
    assert 2 <= n <= 12  # start + about one per 0.1 s
    assert "round 1/1000" not in stream.getvalue()  # within 0.1 s of the start: skipped


def test_finish_and_clear_are_never_throttled() -> None:
    progress, stream, _clock = make(tty=True)
    progress.start("k", max_rounds=5)
    progress.window("k", 1, 0.1, 10.0)  # same instant: throttled
    assert len(draws(stream)) == 1
    progress.finish("k", 42.0, 5, "UNCHANGED")
    assert draws(stream)[-1] == "tpw k: 42 tokens/J, n=5, UNCHANGED"
    progress.clear()
    assert stream.getvalue().endswith(CLEAR_LINE)
    before = stream.getvalue()
    progress.clear()  # nothing on screen: nothing written
    assert stream.getvalue() == before
    progress.window("k", 2, 0.1, 10.0)  # right after a clear: drawn at once
    assert draws(stream)[-1].startswith("tpw k: round 2")
    progress.close()
    assert stream.getvalue().endswith(CLEAR_LINE)


def test_long_names_are_cut_from_the_left_and_the_line_never_wraps() -> None:
    progress, stream, clock = make(tty=True)
    key = "tests/" + "x" * 300 + "::test_the_end"
    progress.start(key, max_rounds=10)
    clock.now += 1
    progress.window(key, 10, 0.5, 99.0)
    for line in draws(stream):
        assert len(line) <= MAX_WIDTH
    assert draws(stream)[-1].endswith("::test_the_end: round 10/10, window 0.5 s, 99 tokens/J")


def test_ci_log_gets_one_line_per_finished_measurement() -> None:
    progress, stream, clock = make(tty=False)
    for i, key in enumerate(["t::a", "t::b"]):
        progress.start(key, max_rounds=20)
        for k in range(1, 21):
            clock.now += 1
            progress.window(key, k, 0.2, 50.0 + i)
        progress.finish(key, 50.0 + i, 20, None if i else "REGRESSED")
    progress.finish("t::c", None, 0, None)
    progress.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "tpw [1] t::a: 50 tokens/J, n=20, REGRESSED",
        "tpw [2] t::b: 51 tokens/J, n=20",
        "tpw [3] t::c: no valid sample, n=0",
    ]
