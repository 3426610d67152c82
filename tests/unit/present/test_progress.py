"""Live progress: live text after pytest's own progress in a terminal, one line per
measurement in a CI log."""

from __future__ import annotations

import io

from pytest_tpw.present.progress import (
    CLEAR_TO_END,
    MAX_WIDTH,
    RESTORE,
    SAVE,
    Progress,
    TerminalStream,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Screen:
    """A stream that records what is drawn, with ``room`` columns left on the line."""

    def __init__(self, room: int = 200) -> None:
        self.columns = room
        self.shown: list[str] = []
        self.hidden = 0
        self.lines: list[str] = []

    def room(self) -> int:
        return self.columns

    def show(self, text: str) -> None:
        self.shown.append(text)

    def hide(self) -> None:
        self.hidden += 1

    def line(self, text: str) -> None:
        self.lines.append(text)


def make(tty: bool, room: int = 200) -> tuple[Progress, Screen, FakeClock]:
    screen, clock = Screen(room), FakeClock()
    return Progress(screen, tty=tty, clock=clock), screen, clock


def test_tty_text_shows_test_round_window_and_level() -> None:
    progress, screen, clock = make(tty=True)
    progress.start("t.py::test_decode", max_rounds=30)
    clock.now += 0.5
    progress.window("t.py::test_decode", 3, 0.254, 123.456)
    assert screen.shown == [
        "tpw t.py::test_decode: warming up",
        "tpw t.py::test_decode: round 3/30, window 0.254 s, level 123.5 tokens/J",
    ]
    assert screen.lines == []  # drawn in place, never a line of its own
    clock.now += 0.5
    progress.window("t.py::test_decode", 4, 0.25, 120.0)
    clock.now += 0.5
    progress.start("t.py::test_other", max_rounds=None)
    clock.now += 0.5
    progress.window("t.py::test_other", 7, 1.5, 80.0)
    assert screen.shown[-1] == "tpw t.py::test_other: round 7, window 1.5 s, level 80 tokens/J"


def test_tty_updates_are_throttled_to_ten_a_second() -> None:
    progress, screen, clock = make(tty=True)
    progress.start("k", max_rounds=1000)
    for k in range(1, 1001):  # 1000 rounds in one second
        clock.now += 0.001
        progress.window("k", k, 0.001, 50.0)
    assert 2 <= len(screen.shown) <= 12  # start + about one per 0.1 s
    assert not any("round 1/1000" in text for text in screen.shown)  # within 0.1 s


def test_finish_and_clear_are_never_throttled() -> None:
    progress, screen, _clock = make(tty=True)
    progress.start("k", max_rounds=5)
    progress.window("k", 1, 0.1, 10.0)  # same instant: throttled
    assert len(screen.shown) == 1
    progress.finish("k", 42.0, 5, "UNCHANGED")
    assert screen.shown[-1] == "tpw k: level 42 tokens/J, n=5, UNCHANGED"
    progress.clear()
    assert screen.hidden == 1 and not progress.shown
    progress.clear()  # nothing on screen: nothing erased
    assert screen.hidden == 1
    progress.window("k", 2, 0.1, 10.0)  # right after a clear: drawn at once
    assert screen.shown[-1].startswith("tpw k: round 2")
    progress.close()
    assert screen.hidden == 2


def test_the_text_fits_the_room_left_and_long_names_lose_their_head() -> None:
    progress, screen, clock = make(tty=True, room=60)
    key = "tests/" + "x" * 300 + "::test_the_end"
    progress.start(key, max_rounds=10)
    clock.now += 1
    progress.window(key, 10, 0.5, 99.0)
    assert all(len(text) <= 60 for text in screen.shown)
    assert screen.shown[-1].startswith("tpw …t_the_end: round 10/10")
    wide, wide_screen, _ = make(tty=True, room=500)
    wide.start(key, max_rounds=10)
    assert all(len(text) <= MAX_WIDTH for text in wide_screen.shown)


def test_no_room_left_on_the_line_draws_nothing() -> None:
    progress, screen, _clock = make(tty=True, room=10)
    progress.start("t.py::test_x", max_rounds=5)
    assert screen.shown == [] and not progress.shown


def test_ci_log_gets_one_line_per_finished_measurement() -> None:
    progress, screen, clock = make(tty=False)
    for i, key in enumerate(["t::a", "t::b"]):
        progress.start(key, max_rounds=20)
        for k in range(1, 21):
            clock.now += 1
            progress.window(key, k, 0.2, 50.0 + i)
        progress.finish(key, 50.0 + i, 20, None if i else "REGRESSED")
    progress.finish("t::c", None, 0, None)
    progress.close()
    assert screen.shown == []
    assert screen.lines == [
        "tpw [1] t::a: level 50 tokens/J, n=20, REGRESSED",
        "tpw [2] t::b: level 51 tokens/J, n=20",
        "tpw [3] t::c: no valid sample, n=0",
    ]


class Writer:
    """pytest's TerminalWriter, as far as the terminal stream reads it."""

    fullwidth = 80
    width_of_current_line = 30


def test_the_terminal_stream_leaves_the_cursor_and_pytests_line_alone() -> None:
    out = io.StringIO()
    stream = TerminalStream(terminal=None, writer=Writer(), out=out, capture=None)
    assert stream.room() == 80 - 30 - 2
    stream.show("tpw t::x: warming up")
    stream.hide()
    assert out.getvalue() == f"{CLEAR_TO_END}{SAVE} tpw t::x: warming up{RESTORE}{CLEAR_TO_END}"
