"""``tpw.load``: a served model measured under a stated load, one load window per sample.

Each window runs a whole load (:func:`pytest_tpw.load.driver.drive`): its ramp and drain are
not measured, its steady part is the window the sensor reads, and the steady part's tokens
come from the requests' ``usage``. The windows go through the same rounds, baselines and
verdicts as any measurement; the load's shape, requests, errors and latencies travel with the
measurement (:class:`pytest_tpw.load.figures.LoadFigures`).
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_tpw.errors import MeasurementError
from pytest_tpw.load.plan import LoadPlan
from pytest_tpw.load.shape import load_text

if TYPE_CHECKING:
    from pytest_tpw.load.driver import Edges, LoadRun
    from pytest_tpw.load.figures import LoadFigures, WindowFigures
    from pytest_tpw.measure.meter import Meter
    from pytest_tpw.measure.samples import Measurement, Result
    from pytest_tpw.measure.window import OpenWindow, Reading, WindowRunner


@dataclass(frozen=True)
class LoadSummary:
    """What ``tpw.load`` returns: the load's figures, and its tokens per joule when measured.

    ``load`` and ``latency`` are the blocks the results file holds (``latency["tpot_s"]
    ["p90"]``, seconds); ``result`` is the measurement's summary (None without ``--tpw``).
    """

    result: Result | None
    load: dict[str, Any]
    latency: dict[str, dict[str, Any]]

    @property
    def tokens_per_joule(self) -> float | None:
        return None if self.result is None else self.result.tokens_per_joule

    @property
    def requests(self) -> int:
        return int(self.load["requests"])

    @property
    def errors(self) -> int:
        return int(self.load["errors"])


def _drive(plan: LoadPlan, edges: Edges) -> LoadRun:
    from pytest_tpw.load.driver import drive

    return drive(plan, edges=edges)


class _Clock:
    """Edges of an unmeasured load: the instants only."""

    def open(self) -> float:
        return time.perf_counter()

    def close(self) -> float:
        return time.perf_counter()


def unmeasured(plan: LoadPlan) -> LoadSummary:
    """Without ``--tpw``: one load window, nothing read; its latencies still come back."""
    from pytest_tpw.load.figures import LoadFigures, WindowFigures

    run = _drive(plan, _Clock())
    figures = LoadFigures(plan.shape.to_json(), run.model)
    figures.add(WindowFigures.of(run), None)
    return LoadSummary(None, figures.load_json(), figures.latency())


class _Whole:
    """The whole load's energy beside its steady part: the ramp and the drain read as
    windows of their own that meet the steady one (a sensor has one window open at a
    time), their joules added to the steady part's for the gross figure."""

    def __init__(self, runner: WindowRunner, where: str) -> None:
        self.runner = runner
        self.where = where
        self.token: object | None = None
        self.joules: float | None = 0.0

    def begin(self) -> None:
        self.token = self.runner.sensor.begin()

    def end(self) -> None:
        token, self.token = self.token, None
        if token is None:
            return
        try:
            energy = self.runner.sensor.end(token)
        except Exception:  # context only: a failed read costs the gross figure, not the test
            self.joules = None
            return
        if energy.invalid is not None or self.joules is None:
            self.joules = None
            return
        self.joules += float(sum(self.runner.selected_domains(energy.joules, self.where).values()))

    def abandon(self) -> None:
        if self.token is not None:
            token, self.token = self.token, None
            with suppress(Exception):
                self.runner.sensor.end(token)


class _SensorEdges:
    """Edges of a measured load: the ramp's read ends and the runner's window opens at the
    first, the runner's window is read and the drain's begins at the second."""

    def __init__(self, runner: WindowRunner, key: str, where: str, whole: _Whole) -> None:
        self.runner = runner
        self.key = key
        self.where = where
        self.whole = whole
        self.opened: OpenWindow | None = None
        self.reading: Reading | None = None

    def open(self) -> float:
        self.opened = self.runner.open(self.key, just_before=self.whole.end)
        return self.opened.started

    def close(self) -> float:
        assert self.opened is not None
        opened, self.opened = self.opened, None
        self.reading = self.runner.read(opened, self.where)
        self.whole.begin()
        return opened.started + self.reading.seconds

    def abandon(self) -> None:
        if self.opened is not None:
            opened, self.opened = self.opened, None
            self.runner.abandon(opened)
        self.whole.abandon()


def measured(meter: Meter, m: Measurement, plan: LoadPlan) -> None:
    """Warm-up load windows, then recorded ones while the round policy asks."""
    from pytest_tpw.load.figures import LoadFigures, WindowFigures

    runner = meter.runner
    figures = LoadFigures(plan.shape.to_json(), plan.model or "")
    m.load = figures
    warm_left = meter.warmup
    index = 0
    while warm_left > 0 or meter.policy.more(m):
        where = f"{m.key} (load window {index})"
        whole = _Whole(runner, where)
        edges = _SensorEdges(runner, m.key, where, whole)
        meter._open = m.key
        try:
            whole.begin()  # the ramp
            run = _drive(plan, edges)
            whole.end()  # the drain
        except BaseException:
            edges.abandon()
            raise
        finally:
            meter._open = None
        window = WindowFigures.of(run)
        figures.model = run.model
        assert edges.reading is not None
        tokens = round(window.tokens)
        if tokens <= 0:
            raise MeasurementError(_no_tokens(where, window))
        closed = runner.sample(edges.reading, tokens, 1, where, loop_form=True)
        record = warm_left == 0
        kept = meter._keep(m, closed, record=record)
        if kept and record:
            gross = None
            if whole.joules is not None and closed.sample is not None:
                gross = whole.joules + closed.sample.joules
            figures.add(window, gross)
        elif kept:
            warm_left -= 1
        index += 1
    m.warnings.extend(load_warnings(m.key, figures))
    meter._finish(m)


def _no_tokens(where: str, window: WindowFigures) -> str:
    head = f"{where}: no tokens were generated in the steady part ({window.steady_s:.3f} s)"
    if window.errors:
        kind = max(window.error_kinds, key=lambda k: window.error_kinds[k])
        return (
            f"{head}: {window.errors} of {window.requests} requests failed; the most "
            f"frequent: {kind}: {window.error_examples.get(kind, kind)}"
        )
    return (
        f"{head}: no request streamed text inside it; give the steady part more time "
        "(duration_s=) or requests (requests=)"
    )


def load_warnings(key: str, figures: LoadFigures) -> list[str]:
    """Failed requests and a steady part cut short, said once per measurement."""
    out = []
    if figures.errors:
        kinds = figures.error_kinds()
        listed = ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
        first = figures.first_error(next(iter(kinds)))
        out.append(
            f"{key}: {figures.errors} of {figures.requests} requests failed under "
            f"{load_text(figures.shape)} ({listed}; the first: {first}). Failed requests add no "
            "tokens and no latency; the energy they used stays in the windows"
        )
    cut = [w.cut_short for w in figures.windows if w.cut_short]
    if cut:
        out.append(f"{key}: {cut[0]}; raise timeout_s or lower requests=")
    return out


def summary_of(m: Measurement, result: Result | None) -> LoadSummary:
    assert m.load is not None
    return LoadSummary(result, m.load.load_json(), m.load.latency())


__all__ = ["LoadSummary", "measured", "summary_of", "unmeasured"]
