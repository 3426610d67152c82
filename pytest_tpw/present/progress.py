"""Live progress of a long measured suite: which test, which round, the running level.

In a terminal, the live text is drawn after pytest's own progress on the current line
(after its dots, or after a test's name under ``-v``) with the cursor left where pytest
left it, at most :data:`MAX_UPDATES_PER_S` times a second, and erased with
:meth:`Progress.clear` before pytest prints anything: pytest's lines keep their form. In a
CI log (not a tty) nothing is rewritten: one line per finished measurement, nothing per
round. Plain Python, no pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Protocol

#: Updates of the live text per second, at most (a terminal redraw costs little, a log a lot).
MAX_UPDATES_PER_S = 10.0
#: ``ESC 7`` saves the cursor, ``ESC 8`` restores it, ``ESC [ K`` clears to the line's end.
SAVE, RESTORE, CLEAR_TO_END = "\x1b7", "\x1b8", "\x1b[K"
#: The live text is never longer than this (a line of its own in a log is not cut).
MAX_WIDTH = 120


def _num(value: float) -> str:
    """Four significant digits without an exponent in the usual range."""
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        text = f"{value:.4g}"
        return f"{value:.0f}" if "e" in text or abs(value) >= 1e4 else text
    return f"{value:.3e}"


def _fit(key: str, rest: str, width: int) -> str:
    """``tpw KEY: REST`` in at most ``width`` characters; a long key loses its head first,
    then the end of the text goes."""
    room = max(8, width - len(rest) - 6)
    if len(key) > room:
        key = "…" + key[-(room - 1) :]
    return f"tpw {key}: {rest}"[: max(width, 0)]


class Stream(Protocol):
    """Where progress goes (:class:`TerminalStream` on pytest's terminal)."""

    def room(self) -> int:
        """Columns left on the current line for live text (0: none)."""

    def show(self, text: str) -> None:
        """Draw ``text`` after the cursor, leaving the cursor where it was."""

    def hide(self) -> None:
        """Erase what :meth:`show` drew."""

    def line(self, text: str) -> None:
        """Write ``text`` as a line of its own."""


class TerminalStream:
    """Progress's stream on pytest's terminal.

    Measuring happens inside a test, while pytest captures its output: each write goes out
    past the capture (the capture manager's ``global_and_fixture_disabled``, as pytest's own
    live logging does), straight to the stream pytest's terminal writer writes to, so that
    the writer's idea of the current line (and so pytest's ``[ 42%]`` column) is untouched.
    ``writer`` is pytest's ``TerminalWriter`` (``config.get_terminal_writer()``); ``out``
    the stream it writes to; ``capture`` pytest's ``CaptureManager`` or None; ``terminal``
    pytest's ``TerminalReporter``, for log lines.
    """

    def __init__(self, terminal: Any, writer: Any, out: Any, capture: Any) -> None:
        self.terminal = terminal
        self.writer = writer
        self.out = out
        self.capture = capture

    def _uncaptured(self) -> Any:
        return self.capture.global_and_fixture_disabled() if self.capture else nullcontext()

    def room(self) -> int:
        return max(int(self.writer.fullwidth) - int(self.writer.width_of_current_line) - 2, 0)

    def show(self, text: str) -> None:
        with self._uncaptured():
            self.out.write(f"{CLEAR_TO_END}{SAVE} {text}{RESTORE}")
            self.out.flush()

    def hide(self) -> None:
        with self._uncaptured():
            self.out.write(CLEAR_TO_END)
            self.out.flush()

    def line(self, text: str) -> None:
        with self._uncaptured():
            self.terminal.ensure_newline()
            self.terminal.write_line(text, flush=True)
        # pytest starts its next result on a new line, with the file's name
        self.terminal.currentfspath = None


class Progress:
    """Progress of measurements on ``stream``; ``tty`` picks live text or log lines."""

    def __init__(
        self, stream: Stream, tty: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.tty = tty
        self.clock = clock
        self._shown = False  # a live line is on screen now
        self._last_draw: float | None = None
        self._max_rounds: dict[str, int | None] = {}
        self._done = 0

    @property
    def shown(self) -> bool:
        """True while live text is on screen (it must be cleared before pytest prints)."""
        return self._shown

    # -- the calls the meter and the plugin make ---------------------------------------------

    def start(self, key: str, max_rounds: int | None) -> None:
        """A measurement begins (warm-up included); ``max_rounds`` is None when unbounded."""
        self._max_rounds[key] = max_rounds
        if self.tty:
            self._draw(key, "warming up", force=True)

    def window(self, key: str, k: int, seconds: float, level: float) -> None:
        """Round ``k`` (from 1) of ``key`` ended: a window of ``seconds``; ``level`` is the
        measurement's level so far (the statistic the table reports)."""
        if not self.tty:
            return
        limit = self._max_rounds.get(key)
        rounds = f"round {k}" + (f"/{limit}" if limit is not None else "")
        self._draw(key, f"{rounds}, window {seconds:.3g} s, level {_num(level)} tokens/J")

    def finish(self, key: str, level: float | None, n: int, verdict: str | None) -> None:
        """``key`` is done: its level (the table's statistic; None without a valid sample),
        windows, verdict."""
        self._max_rounds.pop(key, None)
        self._done += 1
        text = "no valid sample" if level is None else f"level {_num(level)} tokens/J"
        rest = f"{text}, n={n}" + (f", {verdict}" if verdict else "")
        if self.tty:
            self._draw(key, rest, force=True)
        else:
            self.stream.line(f"tpw [{self._done}] {key}: {rest}")

    def clear(self) -> None:
        """Erase the live text (call before pytest prints anything of its own)."""
        if self._shown:
            self.stream.hide()
            self._shown = False
            self._last_draw = None  # whatever comes next is drawn at once

    def close(self) -> None:
        """End of the session: nothing is left on the line."""
        self.clear()
        self._max_rounds.clear()

    # -- drawing ------------------------------------------------------------------------------

    def _draw(self, key: str, rest: str, force: bool = False) -> None:
        now = self.clock()
        if (
            not force
            and self._last_draw is not None
            and now - self._last_draw < 1.0 / MAX_UPDATES_PER_S
        ):
            return
        width = min(self.stream.room(), MAX_WIDTH)
        if width < 20:  # too little room left on this line: nothing rather than a wrap
            self.clear()
            return
        self.stream.show(_fit(key, rest, width))
        self._shown = True
        self._last_draw = now
