"""The terminal's tokens-per-joule section and JUnit properties: how results look as text.

Text only: this module decides how results look, never where they go. The JSON document is
:mod:`pytest_tpw.present.document`; what a session contributes to the section,
:mod:`pytest_tpw.present.summary`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_tpw.measure.samples import Measurement, Result
from pytest_tpw.present.loadtext import load_lines
from pytest_tpw.verdict import Verdict

PROVENANCE_TEXT = {
    "measured": "MEASURED",
    "estimated": "ESTIMATED (a model, not a measurement: do not compare with measured joules)",
    "simulated": "SIMULATED (sim sensor: invented joules for demos and tests)",
}


@dataclass(frozen=True)
class Row:
    """One measurement as the report shows it."""

    name: str
    result: Result
    baseline: float | None = None
    warnings: int = 0
    #: The final verdict (after suite-wide FDR); the result's own when None.
    verdict: Verdict | None = None
    #: candidate / baseline as the verdict engine estimated it (run-wide shift divided out).
    ratio: float | None = None
    #: The interval of ``ratio`` that decided the verdict.
    interval: tuple[float, float] | None = None
    #: What the verdict column says, when more than the verdict (accepted, too noisy).
    label: str | None = None

    @property
    def change(self) -> float | None:
        if self.ratio is not None:
            return self.ratio - 1.0
        if self.baseline is None:
            return None
        return self.result.tokens_per_joule / self.baseline - 1.0

    @property
    def final_verdict(self) -> Verdict:
        return self.verdict if self.verdict is not None else self.result.verdict


@dataclass(frozen=True)
class SensorInfo:
    """What the report says about the sensor."""

    name: str
    provenance: str
    method: str


def num(value: float | None) -> str:
    """Four significant digits, no exponent for the magnitudes a report shows."""
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        text = f"{value:.4g}"
        # 4 significant digits of 9999.96 round up to "1e+04": print the integer instead
        return f"{value:.0f}" if "e" in text or abs(value) >= 1e4 else text
    return f"{value:.3e}"


def _interval(result: Result) -> str:
    if result.ci is None:
        return "-"
    return f"[{num(result.ci[0])}, {num(result.ci[1])}]"


def _pct(x: float) -> str:
    return f"{x - 1:+.1%}"


def _versus(row: Row) -> str:
    """The change from the baseline and, when it was judged, the interval that decided."""
    if row.change is None:
        return "-"
    text = f"{row.change:+.1%}"
    if row.interval is not None:
        text += f" [{_pct(row.interval[0])}, {_pct(row.interval[1])}]"
    return text


def _cut(name: str, width: int) -> str:
    """A name in at most ``width`` characters: its head goes first (the test's own name,
    at the end of a node id, is what tells rows apart)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


#: The name column keeps at least this many characters when the table must fit a terminal.
MIN_NAME = 24
#: In a log (no terminal width), names longer than this lose their head: one test id of
#: thousands of characters must not widen every row (the JSON keeps the whole name).
MAX_NAME = 160


def table_lines(rows: Sequence[Row], confidence: float, width: int | None = None) -> list[str]:
    """The per-measurement table, columns aligned, at most ``width`` columns wide when given
    (long names lose their head; the name column keeps at least :data:`MIN_NAME`, and never
    more than :data:`MAX_NAME`)."""
    header = (
        "measurement",
        "tokens/J",
        f"{confidence:.0%} CI",
        "J/token",
        "W",
        "tokens/s",
        "n",
        "baseline",
        f"vs baseline [{confidence:.0%} CI]",
        "verdict",
    )
    body = [
        (
            row.name,
            num(row.result.tokens_per_joule),
            _interval(row.result),
            num(row.result.joules_per_token),
            num(row.result.watts),
            num(row.result.tokens_per_second),
            str(row.result.n),
            num(row.baseline),
            _versus(row),
            (row.label or row.final_verdict.value) + (" (!)" if row.warnings else ""),
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    if width is not None:
        others = sum(widths[1:]) + 2 * (len(widths) - 1)
        widths[0] = min(widths[0], max(width - others, MIN_NAME))
    widths[0] = min(widths[0], MAX_NAME)

    def fmt(cells: Sequence[str]) -> str:
        first = _cut(cells[0], widths[0]).ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True))
        return "  ".join([first, *rest, cells[-1]]).rstrip()

    return [fmt(header), *(fmt(r) for r in body)]


def legend(confidence: float, rows: Sequence[Row]) -> list[str]:
    """What each number of the table is."""
    lines = [
        f"tokens/J: the level, the 20%-trimmed geometric mean of the windows, with its "
        f"{confidence:.0%} CI (n windows); J/token, W, tokens/s: totals over the windows",
    ]
    if any(row.interval is not None for row in rows):
        lines.append(
            f"vs baseline: this run over the baseline after the run-wide shift, with the "
            f"{confidence:.0%} interval that decided the verdict"
        )
    if any(row.warnings for row in rows):
        lines.append("(!) windows of this measurement had warnings: see the warnings summary")
    return lines


def totals_line(measurements: Iterable[Measurement]) -> str:
    ms = [m for m in measurements if m.samples]
    tokens = sum(m.tokens for m in ms)
    joules = sum(m.joules for m in ms)
    overall = num(tokens / joules) if joules > 0 else "-"
    return (
        f"total: {tokens} tokens, {num(joules)} J, {overall} tokens/J overall, "
        f"{len(ms)} measurement(s)"
    )


def health_parts(
    advances: bool | None,
    period_s: float | None,
    idle_watts: float | None,
    dropped: int,
    invalid: int,
    no: str = "NO",
) -> list[str]:
    """The sensor-health figures as the terminal and the Markdown report say them
    (``no``: how a counter that does not advance is written)."""
    said = ("yes" if advances else no) if advances is not None else "not checked"
    return [
        f"counter advancing {said}",
        f"update period {period_s * 1000:.3g} ms"
        if period_s is not None
        else "update period unknown",
        f"idle {idle_watts:.4g} W" if idle_watts is not None else "idle not measured",
        f"dropped reads {dropped}",
        f"invalid windows {invalid}",
    ]


def sensor_line(sensor: SensorInfo) -> str:
    label = PROVENANCE_TEXT.get(sensor.provenance, sensor.provenance.upper())
    return f"sensor: {sensor.name} ({sensor.method}); joules {label}"


def terminal_lines(
    rows: Sequence[Row],
    measurements: Sequence[Measurement],
    sensor: SensorInfo,
    confidence: float,
    notes: Sequence[str] = (),
    width: int | None = None,
) -> list[str]:
    """Everything under the ``tokens per joule`` heading of the terminal summary, the table
    at most ``width`` columns wide when given."""
    if not rows:
        # say what is true: a marker error or a failed measurement also leaves none
        return [
            "no measurements: no test finished a measurement with the tpw fixture",
            sensor_line(sensor),
            *notes,
        ]
    lines = [
        *table_lines(rows, confidence, width),
        *legend(confidence, rows),
        "",
        totals_line(measurements),
        sensor_line(sensor),
    ]
    loaded = [m for m in measurements if m.load is not None and m.load.windows]
    if loaded:
        lines.append("under load (steady part of each window; latencies of its requests):")
        for m in loaded:
            assert m.load is not None
            lines.extend(load_lines(_cut(m.key, MAX_NAME), m.load.load_json(), m.load.latency()))
    lines.extend(notes)
    return lines


def junit_properties(
    result: Result, name: str | None, sensor: SensorInfo, verdict: Verdict
) -> list[tuple[str, object]]:
    """``record_property`` pairs for one measurement (they land in JUnit XML).

    Names are ``tpw.<field>`` for a test's unnamed measurement, ``tpw[<name>].<field>``
    for a named one, so several measurements of one test stay apart.
    """
    prefix = "tpw" if name is None else f"tpw[{name}]"
    props: list[tuple[str, object]] = [
        (f"{prefix}.measurement", result.name),
        (f"{prefix}.tokens_per_joule", round(result.tokens_per_joule, 6)),
        (f"{prefix}.joules_per_token", result.joules_per_token),
        (f"{prefix}.watts", round(result.watts, 4)),
        (f"{prefix}.tokens_per_second", round(result.tokens_per_second, 4)),
        (f"{prefix}.n", result.n),
        (f"{prefix}.verdict", verdict.value),
        (f"{prefix}.sensor", sensor.name),
        (f"{prefix}.joules", sensor.provenance),
    ]
    if result.ci is not None:
        props.append((f"{prefix}.ci", f"{result.ci[0]:.6g}..{result.ci[1]:.6g}"))
    return props
