"""The ``tpw`` fixture's object: the call form, the loop form, ``acall``, results.

One meter per test. :class:`Meter` measures (``pytest --tpw``): it turns the user's work into
windows through a :class:`~pytest_tpw.window.WindowRunner`, counts tokens inside the same
window, and asks its :class:`RoundPolicy` how many windows to record. :class:`OffMeter` is
the plain run: the work runs once, unmeasured, yet every argument a measured run would refuse
is refused here too, so a pull request run without ``--tpw`` catches the same mistakes.
Neither decides anything about regressions.
"""

from __future__ import annotations

import abc
import inspect
import math
import operator
import re
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from pytest_tpw.errors import MeasurementError
from pytest_tpw.measure.samples import SHORT_WINDOW, WAITED, Measurement, Result
from pytest_tpw.measure.window import Closed, OpenWindow, WindowRunner
from pytest_tpw.sensors.base import Sensor
from pytest_tpw.verdict import Verdict

if TYPE_CHECKING:
    from pytest_tpw.load.plan import LoadPlan
    from pytest_tpw.measure.loaded import LoadSummary

R = TypeVar("R")
TokenSpec = int | Callable[[Any], Any]
#: The call form's plan (see :meth:`TokensPerJoule._calls`).
Plan = Generator[None, Any, Any]


class RoundPolicy(Protocol):
    """How many windows a measurement records, and the verdict its last look gave."""

    def more(self, measurement: Measurement) -> bool:
        """Asked after each recorded window: record another?"""

    def verdict(self, key: str) -> Verdict:
        """The verdict known for the measurement so far (NO_BASELINE when none)."""


class ProgressSink(Protocol):
    """Where a meter reports its progress (``pytest_tpw.progress.Progress`` is one)."""

    def start(self, key: str, max_rounds: int | None) -> None: ...

    def window(self, key: str, k: int, seconds: float, level: float) -> None: ...

    def finish(self, key: str, level: float | None, n: int, verdict: str | None) -> None: ...


@dataclass(frozen=True)
class FixedRounds:
    """The simplest policy: record exactly ``n`` windows, judge nothing."""

    n: int

    def more(self, measurement: Measurement) -> bool:
        return len(measurement.samples) < self.n

    def verdict(self, key: str) -> Verdict:
        return Verdict.NO_BASELINE


# -- tokens ----------------------------------------------------------------------------------


def as_tokens(value: object, where: str, *, allow_zero: bool = True) -> int:
    """A token count as an int; anything else is a :class:`MeasurementError` naming ``where``."""
    if isinstance(value, bool):
        raise MeasurementError(f"{where}: tokens must be an integer count, got {value!r}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise MeasurementError(
            f"{where}: tokens must be an integer count (or a callable returning one), "
            f"got {value!r} of type {type(value).__name__}"
        ) from None
    if n < 0 or (n == 0 and not allow_zero):
        raise MeasurementError(f"{where}: tokens must be positive, got {n}")
    return int(n)


def count_tokens(tokens: TokenSpec, result: object, where: str) -> int:
    """Tokens produced by one call: the int given, or ``tokens(result)`` validated."""
    if callable(tokens):
        return as_tokens(tokens(result), f"{where}: tokens(result)")
    return tokens


def _no_tokens(n: int, where: str) -> None:
    """Refuse a window (or, unmeasured, a call) that produced nothing: tokens/J is undefined."""
    if n <= 0:
        raise MeasurementError(
            f"{where}: the window produced 0 tokens, so tokens per joule is undefined; count "
            "them with w.add_tokens(n) inside `with w:` (loop form) or tokens= (call form)"
        )


def window_summaries(m: Measurement) -> list[str]:
    """One line per kind of window warning (the same sentence but for its numbers): how many
    of the windows had it, with the spread of the other busy cores for CPU contention, and
    the sentence that says why it matters. A warning per window would bury the results."""
    kinds: dict[str, tuple[str, list[int]]] = {}
    for i, sample in enumerate(m.samples):
        for text in sample.warnings:
            if not text.startswith(WAITED) and text != SHORT_WINDOW:
                kind = re.sub(r"\d+(\.\d+)?", "#", text)
                kinds.setdefault(kind, (text, []))[1].append(i)
    out = []
    n = len(m.samples)
    for first, windows in kinds.values():
        busy = [m.samples[i].state.get("other_busy_cores") for i in windows]
        cores = sorted(b for b in busy if isinstance(b, (int, float)))
        if cores and first.startswith("other processes kept"):
            cpus = m.samples[windows[0]].state.get("host_cpus", "?")
            low, high = f"{cores[0]:.1f}", f"{cores[-1]:.1f}"
            spread = low if low == high else f"{low}-{high}"
            out.append(
                f"{m.key}: {len(windows)} of {n} windows contended: other processes kept "
                f"{spread} of {cpus} CPU cores busy; they compete for cores, caches and memory "
                "bandwidth, so those windows may not compare with others. Measure on a quiet "
                "host (check `top`)"
            )
        else:
            out.append(f"{m.key}: {len(windows)} of {n} windows: {first}")
    return out


def _counted(tokens: TokenSpec, result: object, where: str) -> int:
    """Tokens of one call of the work, after refusing a result that did no work yet."""
    _lazy_result(result, where)
    return count_tokens(tokens, result, where)


def _check_token_spec(tokens: object, where: str) -> None:
    if not callable(tokens):
        as_tokens(tokens, where, allow_zero=False)


def _lazy_result(value: object, where: str) -> None:
    """Refuse work that returned without working: a generator or coroutine does nothing yet."""
    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        raise MeasurementError(
            f"{where}: the workload returned a generator, which has not run yet: nothing was "
            "measured. Consume it inside the measured call (e.g. tokens=... on "
            "`lambda: list(gen())`)"
        )
    if inspect.iscoroutine(value):
        value.close()  # never awaited: close it so Python does not warn
        raise MeasurementError(
            f"{where}: the workload returned a coroutine, which has not run yet: use "
            "`await tpw.acall(fn, ...)` for async work"
        )


# -- the loop form's window ------------------------------------------------------------------


class Window:
    """One ``with w:`` block of the loop form. Count tokens with :meth:`add_tokens`."""

    def __init__(self, loop: _Loop, index: int, warmup: bool) -> None:
        self._loop = loop
        self.index = index
        self.warmup = warmup
        self._tokens = 0
        self._state = "new"  # new -> open -> closed

    @property
    def tokens(self) -> int:
        """Tokens counted in this window so far."""
        return self._tokens

    @tokens.setter
    def tokens(self, n: object) -> None:
        self._require_open("set w.tokens")
        self._tokens = as_tokens(n, self.where)

    def add_tokens(self, n: object) -> None:
        """Count ``n`` more tokens produced inside this window."""
        self._require_open("w.add_tokens()")
        self._tokens += as_tokens(n, self.where)

    @property
    def entered(self) -> bool:
        return self._state != "new"

    @property
    def where(self) -> str:
        return f"{self._loop.key} (window {self.index})"

    def _require_open(self, what: str) -> None:
        if self._state == "new":
            raise MeasurementError(
                f"{self.where}: {what} before `with w:`; count tokens inside the block that "
                "does the work"
            )
        if self._state == "closed":
            raise MeasurementError(
                f"{self.where}: {what} after its `with w:` block ended, so the tokens fall "
                "outside the window; count them inside the block"
            )

    def __enter__(self) -> Window:
        if self._state != "new":
            raise MeasurementError(
                f"{self.where}: this window was already entered; each window of tpw.rounds() "
                "is one `with w:` block"
            )
        self._state = "open"
        self._loop.opened(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        self._loop.closed(self, failed=exc_type is not None)


class _Loop(abc.ABC):
    """What a window reports to: the loop form of one measurement."""

    key: str

    @abc.abstractmethod
    def opened(self, window: Window) -> None: ...

    @abc.abstractmethod
    def closed(self, window: Window, failed: bool) -> None: ...


# -- the public API, shared by both meters ---------------------------------------------------


class TokensPerJoule(abc.ABC):
    """The ``tpw`` fixture: measure tokens per joule of the work given to it.

    Call form ``tpw(fn, *args, tokens=..., name=None, **kwargs)``, loop form
    ``for w in tpw.rounds(name=None): with w: ...``, coroutines ``await tpw.acall(...)``.
    """

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self._names: set[str | None] = set()
        self._loops: list[_LoopState] = []
        self._open: str | None = None  # key of the measurement whose window is open

    def _refuse_overlap(self, key: str) -> None:
        """One window at a time: a measurement started or a window opened inside another is
        refused at once (on a real device it would wait for its own lock for ever)."""
        if self._open is not None:
            raise MeasurementError(
                f"{key}: started while a window of {self._open} is open in the same test: one "
                "window at a time (measure one thing after the other, not inside a `with w:` "
                "block nor in concurrent tasks)"
            )

    # -- what both modes check alike ---------------------------------------------------------

    def _claim(self, name: str | None) -> str:
        """Check a measurement name and take it; returns the measurement's key."""
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"{self.nodeid}: name= must be a non-empty string, got {name!r}")
        if name in self._names:
            label = "the unnamed measurement" if name is None else f"measurement {name!r}"
            raise MeasurementError(
                f"{self.nodeid}: {label} was already taken in this test; "
                "give each measurement its own name="
            )
        self._names.add(name)
        return self.nodeid if name is None else f"{self.nodeid}::{name}"

    def _check_call(
        self, fn: object, tokens: object, name: str | None, *, asynchronous: bool
    ) -> str:
        key = self._claim(name)
        _check_token_spec(tokens, key)
        if not asynchronous and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{self.nodeid}: {fn!r} is a coroutine function; use `await tpw.acall(...)`"
            )
        return key

    def check_finished(self) -> None:
        """At teardown: a ``tpw.rounds()`` loop left before its end is an error."""
        for loop in self._loops:
            if not loop.done and not loop.failed:
                raise MeasurementError(
                    f"{loop.key}: the tpw.rounds() loop was left before its end (a `break` or "
                    "`return` inside it?), so the measurement has too few windows; let the "
                    "loop run out: the meter decides how many windows to take"
                )

    # -- the API -----------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def enabled(self) -> bool:
        """True when this run measures (``--tpw``); False runs the work once, unmeasured."""

    @property
    @abc.abstractmethod
    def result(self) -> Result | None:
        """The last finished measurement's summary, or None when nothing was measured."""

    @property
    @abc.abstractmethod
    def results(self) -> dict[str | None, Result]:
        """Every finished measurement of this test by name (``None`` key: the unnamed one)."""

    @property
    @abc.abstractmethod
    def min_window_s(self) -> float | None:
        """The shortest window the sensor measures well (None without ``--tpw``).

        The loop form cannot repeat the work for you: size each ``with w:`` block to last
        at least this long.
        """

    def __call__(
        self,
        fn: Callable[..., R],
        *args: Any,
        tokens: TokenSpec,
        name: str | None = None,
        **kwargs: Any,
    ) -> R:
        """Measure ``fn(*args, **kwargs)``; ``tokens`` is an int or ``callable(result)``.

        Returns the last call's result. Without ``--tpw`` the call runs once, unmeasured.
        """
        __tracebackhide__ = True
        key = self._check_call(fn, tokens, name, asynchronous=False)
        plan = self._calls(name, key, tokens)
        try:
            next(plan)
            while True:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    plan.throw(exc)  # the plan gives its window up and raises it again
                    raise
                plan.send(result)
        except StopIteration as done:
            return cast(R, done.value)

    async def acall(
        self,
        fn: Callable[..., Awaitable[R]],
        *args: Any,
        tokens: TokenSpec,
        name: str | None = None,
        **kwargs: Any,
    ) -> R:
        """The call form for coroutine functions: ``await tpw.acall(client.complete, ...)``."""
        __tracebackhide__ = True
        key = self._check_call(fn, tokens, name, asynchronous=True)
        plan = self._calls(name, key, tokens)
        try:
            next(plan)
            while True:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    plan.throw(exc)
                    raise
                plan.send(result)
        except StopIteration as done:
            return cast(R, done.value)

    def load(
        self,
        server: object,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        duration_s: float | None = None,
        requests: int | None = None,
        prompts: Sequence[str] | None = None,
        max_tokens: int = 64,
        endpoint: str = "chat",
        model: str | None = None,
        seed: int = 0,
        timeout_s: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        name: str | None = None,
    ) -> LoadSummary:
        """Measure a served model under load: ``concurrency`` streams (closed loop) or
        ``rate`` requests per second (open loop, Poisson arrivals from ``seed``).

        ``server`` is what ``tpw_server`` returned, or the URL of any OpenAI-compatible
        server. Each window is one whole load: its ramp and drain are left out, its steady
        part (``duration_s``, or until ``requests`` requests finished, whichever comes
        first; 10 s when neither is given) is measured, with tokens from the responses'
        ``usage``. Requests stream from ``/v1/chat/completions`` (``endpoint="chat"``) or
        ``/v1/completions``, take the ``prompts`` in turn (a built-in set by default) and
        ask for ``max_tokens``; ``extra_body`` goes with each (``{"ignore_eos": True}`` on
        vLLM fixes the output length). ``timeout_s`` bounds each whole load window.

        Returns the latencies (TTFT, time per output token, end-to-end at p50/p90/p99),
        the achieved concurrency and rate, requests and errors, and the measurement's
        result. Without ``--tpw`` one load window runs, unmeasured.
        """
        __tracebackhide__ = True
        from pytest_tpw.load.plan import plan_load

        key = self._claim(name)
        plan = plan_load(
            server,
            concurrency=concurrency,
            rate=rate,
            duration_s=duration_s,
            requests=requests,
            prompts=prompts,
            max_tokens=max_tokens,
            endpoint=endpoint,
            model=model,
            seed=seed,
            timeout_s=timeout_s,
            extra_body=extra_body,
            api_key=api_key,
        )
        return self._load(name, key, plan)

    @abc.abstractmethod
    def _load(self, name: str | None, key: str, plan: LoadPlan) -> LoadSummary:
        """Run a validated load: measured windows, or one unmeasured."""

    @abc.abstractmethod
    def _calls(self, name: str | None, key: str, tokens: TokenSpec) -> Plan:
        """The call form's plan, shared by ``__call__`` and ``acall``: a generator that
        yields each time it wants one more call of the work, is sent that call's result
        (or thrown its exception), counts its tokens, and returns the last result."""

    @abc.abstractmethod
    def rounds(self, name: str | None = None) -> Iterator[Window]:
        """Yield windows (warm-up first); each ``with w:`` block is one measured window."""


@dataclass
class _LoopState:
    key: str
    done: bool = False
    failed: bool = False


# -- off: the plain run ----------------------------------------------------------------------


class OffMeter(TokensPerJoule):
    """Without ``--tpw``: the work runs once, nothing is measured, misuse is still refused."""

    @property
    def enabled(self) -> bool:
        return False

    @property
    def result(self) -> Result | None:
        return None

    @property
    def results(self) -> dict[str | None, Result]:
        return {}

    @property
    def min_window_s(self) -> float | None:
        return None

    def _calls(self, name: str | None, key: str, tokens: TokenSpec) -> Plan:
        self._refuse_overlap(key)
        self._open = key
        try:
            out = yield
        finally:
            self._open = None
        # what a measured run would refuse, refused here too
        _no_tokens(_counted(tokens, out, key), key)
        return out

    def _load(self, name: str | None, key: str, plan: LoadPlan) -> LoadSummary:
        from pytest_tpw.measure.loaded import unmeasured

        self._refuse_overlap(key)
        self._open = key
        try:
            return unmeasured(plan)
        finally:
            self._open = None

    def rounds(self, name: str | None = None) -> Iterator[Window]:
        loop = _OffLoop(self, self._claim(name))
        self._loops.append(loop.state)
        window = Window(loop, 0, warmup=False)
        yield window
        loop.finish(window)


class _OffLoop(_Loop):
    def __init__(self, meter: OffMeter, key: str) -> None:
        self.meter = meter
        self.key = key
        self.state = _LoopState(key)

    def opened(self, window: Window) -> None:
        self.meter._refuse_overlap(window.where)
        self.meter._open = self.key

    def closed(self, window: Window, failed: bool) -> None:
        self.meter._open = None
        if failed:
            self.state.failed = True
        else:
            _no_tokens(window.tokens, window.where)

    def finish(self, window: Window) -> None:
        _require_entered(window)
        self.state.done = True


def _require_entered(window: Window) -> None:
    if not window.entered:
        raise MeasurementError(
            f"{window.where}: each window of tpw.rounds() must be used as `with w:` around "
            "the work it measures"
        )


# -- on: measuring ---------------------------------------------------------------------------


class Meter(TokensPerJoule):
    """With ``--tpw``: windows on the session's sensor, rounds asked of the policy."""

    def __init__(
        self,
        nodeid: str,
        runner: WindowRunner,
        policy: RoundPolicy,
        *,
        warmup: int = 1,
        confidence: float = 0.90,
        progress: ProgressSink | None = None,
        max_rounds: int | None = None,
    ) -> None:
        super().__init__(nodeid)
        self.runner = runner
        self.policy = policy
        self.warmup = warmup
        self.confidence = confidence
        self.measurements: list[Measurement] = []
        self._progress = progress
        self._max_rounds = max_rounds

    @property
    def sensor(self) -> Sensor:
        return self.runner.sensor

    @property
    def rank(self) -> int | None:
        """This process's rank when windows were aligned over a process group."""
        return self.runner.rank

    @property
    def enabled(self) -> bool:
        return True

    @property
    def result(self) -> Result | None:
        for m in reversed(self.measurements):
            if m.finished:
                return self.summary(m)
        return None

    @property
    def results(self) -> dict[str | None, Result]:
        return {m.name: self.summary(m) for m in self.measurements if m.finished}

    @property
    def min_window_s(self) -> float | None:
        return self.runner.min_window_s

    def summary(self, m: Measurement) -> Result:
        return m.summarize(self.confidence, self.policy.verdict(m.key))

    def _calls(self, name: str | None, key: str, tokens: TokenSpec) -> Plan:
        return self._windows_of_calls(self._start(name, key), tokens)

    def _windows_of_calls(self, m: Measurement, tokens: TokenSpec) -> Plan:
        result: object = None
        with closing(_CallPlan(self, m).windows()) as windows:
            for window in windows:
                count = 0
                for _ in range(window.calls):
                    result = yield
                    count += _counted(tokens, result, m.key)
                # top up: a window shorter than the sensor's minimum is not worth reading
                while window.short():
                    result = yield
                    count += _counted(tokens, result, m.key)
                    window.calls += 1
                window.tokens = count
        return result

    def _load(self, name: str | None, key: str, plan: LoadPlan) -> LoadSummary:
        from pytest_tpw.measure.loaded import measured, summary_of

        m = self._start(name, key)
        measured(self, m, plan)
        return summary_of(m, self.summary(m) if m.samples else None)

    def rounds(self, name: str | None = None) -> Iterator[Window]:
        key = self._claim(name)
        m = self._start(name, key)
        loop = _MeasuredLoop(self, m)
        self._loops.append(loop.state)
        index = 0
        while not loop.recording or self.policy.more(m):
            window = Window(loop, index, warmup=not loop.recording)
            yield window
            _require_entered(window)
            index += 1
        self._finish(m)
        loop.state.done = True

    # -- measurement lifecycle -----------------------------------------------------------

    def _start(self, name: str | None, key: str) -> Measurement:
        self._refuse_overlap(key)
        m = Measurement(
            self.nodeid, name, self.sensor.name, self.sensor.provenance, warmup=self.warmup
        )
        self.measurements.append(m)
        if self._progress is not None:
            self._progress.start(key, self._max_rounds)
        return m

    def _finish(self, m: Measurement) -> None:
        m.complete = True
        short = [s.seconds for s in m.samples if SHORT_WINDOW in s.warnings]
        if short:
            m.warnings.append(
                f"{m.key}: {len(short)} of {len(m.samples)} windows were shorter than the "
                f"{m.sensor} sensor's {self.runner.min_window_s:.3f} s minimum (shortest "
                f"{min(short):.3f} s); make each `with w:` block do more work"
            )
        m.warnings.extend(window_summaries(m))
        if self._progress is not None:
            # no verdict here: with a baseline it is final only once the whole run is in
            level = m.level() if m.samples else None
            self._progress.finish(m.key, level, len(m.samples), None)

    def _keep(self, m: Measurement, closed: Closed, record: bool) -> bool:
        """Keep one closed window's outcome; False when it was discarded (run it again)."""
        if closed.sample is None:
            m.warnings.append(closed.discarded or "window discarded")
            return False
        if record:
            m.samples.append(closed.sample)
            if self._progress is not None:
                self._progress.window(m.key, len(m.samples), closed.sample.seconds, m.level())
        return True


class _MeasuredLoop(_Loop):
    """The loop form of one measurement: warm-up windows first, then recorded ones."""

    def __init__(self, meter: Meter, m: Measurement) -> None:
        self.meter = meter
        self.m = m
        self.key = m.key
        self.state = _LoopState(m.key)
        self.warm_left = meter.warmup
        self._window: OpenWindow | None = None

    @property
    def recording(self) -> bool:
        return self.warm_left == 0

    def opened(self, window: Window) -> None:
        self.meter._refuse_overlap(window.where)
        self._window = self.meter.runner.open(self.key)
        self.meter._open = self.key

    def closed(self, window: Window, failed: bool) -> None:
        opened, self._window = self._window, None
        self.meter._open = None
        if opened is None:
            return
        if failed:
            # the work failed: its exception propagates, the window is not recorded
            self.state.failed = True
            self.meter.runner.abandon(opened)
            return
        closed = self.meter.runner.close(opened, window.tokens, 1, window.where, loop_form=True)
        kept = self.meter._keep(self.m, closed, record=self.recording)
        if kept and not self.recording:
            self.warm_left -= 1


@dataclass
class _CallWindow:
    runner: WindowRunner
    opened: OpenWindow
    min_s: float
    calls: int
    tokens: int = 0

    def short(self) -> bool:
        return self.runner.elapsed(self.opened) < self.min_s


class _CallPlan:
    """The call form's schedule: calibrate, warm up, then record windows while the policy
    asks, each window repeating the call enough times to last the minimum window.

    ``windows()`` yields open windows; the caller makes the calls (sync or async), sets
    ``window.tokens``, and the plan closes and records the window on the next step.
    """

    def __init__(self, meter: Meter, m: Measurement) -> None:
        self.meter = meter
        self.m = m
        # the first window starts with one call and tops up to the minimum window: that is
        # the calibration; later windows plan their call count from the last one's timing
        self.calls = 1

    def windows(self) -> Generator[_CallWindow, None, None]:
        meter, m = self.meter, self.m
        runner = meter.runner
        min_s = runner.min_window_s
        warm_left = meter.warmup
        index = 0
        while warm_left > 0 or meter.policy.more(m):
            opened = runner.open(m.key)
            meter._open = m.key
            window = _CallWindow(runner, opened, min_s, self.calls)
            try:
                yield window
            except BaseException:
                runner.abandon(opened)
                raise
            finally:
                meter._open = None
            where = f"{m.key} (window {index})"
            closed = runner.close(opened, window.tokens, window.calls, where)
            kept = meter._keep(m, closed, record=warm_left == 0)
            if closed.sample is not None:
                self._recalibrate(closed.sample.seconds, window.calls, min_s)
            index += 1
            if kept and warm_left > 0:
                warm_left -= 1
        meter._finish(m)

    def _recalibrate(self, seconds: float, calls: int, min_s: float) -> None:
        per_call = seconds / max(calls, 1)
        if per_call <= 0:
            self.calls = max(self.calls * 10, 1)
            return
        # aim 10 % above the minimum so that jitter rarely needs a top-up call
        self.calls = max(1, math.ceil(1.1 * min_s / per_call))


__all__ = [
    "FixedRounds",
    "Meter",
    "OffMeter",
    "RoundPolicy",
    "TokenSpec",
    "TokensPerJoule",
    "Window",
    "as_tokens",
    "count_tokens",
]
