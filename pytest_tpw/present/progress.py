"""Live progress of a long measured suite: which test, which round, the running tokens/J.

In a terminal one status line is rewritten in place (carriage return, then clear to the end
of the line), at most :data:`MAX_UPDATES_PER_S` times a second, and erased with
:meth:`Progress.clear` before anything else is printed. In a CI log (not a tty) nothing is
rewritten: one line per finished measurement, nothing per round. Plain Python, no pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Protocol

#: Updates of the live line per second, at most (a terminal redraw costs little, a log a lot).
MAX_UPDATES_PER_S = 10.0
#: ``\r`` goes to the start of the line, ``ESC [ K`` clears from there to its end.
CLEAR_LINE = "\r\x1b[K"
#: The live line is cut to this width so that it never wraps (a wrapped line cannot be undone).
MAX_WIDTH = 120


def _num(value: float) -> str:
    """Four significant digits without an exponent in the usual range."""
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        text = f"{value:.4g}"
        return f"{value:.0f}" if "e" in text or abs(value) >= 1e4 else text
    return f"{value:.3e}"


def _line(key: str, rest: str) -> str:
    """``tpw KEY: REST`` in at most :data:`MAX_WIDTH` characters; a long key loses its head."""
    room = max(8, MAX_WIDTH - len(rest) - 6)
    if len(key) > room:
        key = "…" + key[-(room - 1) :]
    return f"tpw {key}: {rest}"[:MAX_WIDTH]


class Stream(Protocol):
    """Where progress goes: a text file, or :class:`TerminalStream`."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class TerminalStream:
    """Progress's stream on pytest's terminal reporter, on a line of its own.

    Measuring happens inside a test, while pytest captures its output: each write goes out
    past the capture (the capture manager's ``global_and_fixture_disabled``, as pytest's own
    live logging does). Before its first write it moves to a fresh line (pytest's
    half-written line of dots stays as it is); once its line is done or cleared it hands
    the line back, and pytest starts its next result on a new line with the file's name.
    Duck-typed: ``terminal`` is a ``pytest.TerminalReporter``, ``capture`` its
    ``CaptureManager`` or None.
    """

    def __init__(self, terminal: Any, capture: Any) -> None:
        self.terminal = terminal
        self.capture = capture
        self.active = False

    def write(self, text: str, /) -> int:
        with self.capture.global_and_fixture_disabled() if self.capture else nullcontext():
            if not self.active:
                self.terminal.ensure_newline()
                self.active = True
            self.terminal.write(text, flush=True)
        if text.endswith("\n"):
            self.hand_back()
        return len(text)

    def flush(self) -> None:
        pass

    def hand_back(self) -> None:
        self.active = False
        self.terminal.currentfspath = None  # pytest reprints the file name on a fresh line


class Progress:
    """Progress of measurements on ``stream``; ``tty`` picks the live line or log lines."""

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
        """True while a live line is on screen (it must be cleared before pytest prints)."""
        return self._shown

    # -- the calls the meter and the plugin make ---------------------------------------------

    def start(self, key: str, max_rounds: int | None) -> None:
        """A measurement begins (warm-up included); ``max_rounds`` is None when unbounded."""
        self._max_rounds[key] = max_rounds
        if self.tty:
            self._draw(_line(key, "warming up"), force=True)

    def window(self, key: str, k: int, seconds: float, tokens_per_joule: float) -> None:
        """Round ``k`` (from 1) of ``key`` ended: a window of ``seconds``, tokens/J so far."""
        if not self.tty:
            return
        limit = self._max_rounds.get(key)
        rounds = f"round {k}" + (f"/{limit}" if limit is not None else "")
        self._draw(
            _line(key, f"{rounds}, window {seconds:.3g} s, {_num(tokens_per_joule)} tokens/J")
        )

    def finish(self, key: str, tokens_per_joule: float | None, n: int, verdict: str | None) -> None:
        """``key`` is done: its level (None without a valid sample), samples, verdict."""
        self._max_rounds.pop(key, None)
        self._done += 1
        level = (
            "no valid sample"
            if tokens_per_joule is None
            else (f"{_num(tokens_per_joule)} tokens/J")
        )
        rest = f"{level}, n={n}" + (f", {verdict}" if verdict else "")
        if self.tty:
            self._draw(_line(key, rest), force=True)
        else:
            self.stream.write(f"tpw [{self._done}] {key}: {rest}\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the live line (call before pytest prints anything of its own)."""
        if self._shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._shown = False
            self._last_draw = None  # whatever comes next is drawn at once

    def close(self) -> None:
        """End of the session: nothing is left on the line."""
        self.clear()
        self._max_rounds.clear()

    # -- drawing ------------------------------------------------------------------------------

    def _draw(self, text: str, force: bool = False) -> None:
        now = self.clock()
        if (
            not force
            and self._last_draw is not None
            and now - self._last_draw < 1.0 / MAX_UPDATES_PER_S
        ):
            return
        self.stream.write(CLEAR_LINE + text)
        self.stream.flush()
        self._shown = True
        self._last_draw = now
