"""Figures of results and history: a forest plot of one run, tokens/J over time.

- :func:`overview`: every compared measurement's ratio to its baseline with its interval,
  sorted, coloured by verdict, with the tolerance and noise-floor lines; one row per
  measurement, the figure grows with the count (readable at hundreds).
- :func:`history`: sessions on a date axis from baseline files and/or results files, one
  panel per (measurement, sensor, provenance, hardware key): numbers from different sensors,
  provenances or machines are never joined by one line.

matplotlib is optional and imported only here, lazily; the figure is drawn without pyplot
(no global state, no display needed). PNG or SVG, chosen by the output file's suffix.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from pytest_tpw import stats
from pytest_tpw.errors import TpwError
from pytest_tpw.store import baseline, results
from pytest_tpw.store.files import atomic_write_chunks

SUFFIXES = (".png", ".svg")
#: history panels drawn without a ``match``; more need one (a wall of panels is unreadable).
MAX_PANELS = 12
#: history panels drawn at all, even with a ``match``.
MAX_PANELS_MATCHED = 48

VERDICT_COLOURS = {
    "REGRESSED": "#d62728",
    "MINOR_REGRESSION": "#ff7f0e",
    "UNCHANGED": "#7f7f7f",
    "IMPROVED": "#2ca02c",
    "INCONCLUSIVE": "#9467bd",
}
OTHER_COLOUR = "#1f77b4"


class PlotError(TpwError, ValueError):
    """A figure cannot be drawn: bad suffix, no matplotlib, nothing to draw, too many panels."""


# -- matplotlib ------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plots need matplotlib: pip install matplotlib") from None
    return Figure(figsize=(width, height))


def _check_suffix(out: Path) -> None:
    if out.suffix.lower() not in SUFFIXES:
        raise PlotError(
            f"{out}: cannot write {out.suffix or 'a file without suffix'!r}; "
            "name the output .png or .svg"
        )


def _save(fig: Any, out: Path) -> Path:
    """Render in memory, then write atomically: a full disk or a killed run leaves the old
    file or none, never a truncated image."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format=out.suffix.lower().lstrip("."), bbox_inches="tight")
    try:
        atomic_write_chunks(out, [buffer.getvalue()])
    except OSError as exc:
        raise PlotError(
            f"{out}: cannot write the figure ({exc.strerror or exc}); check the path, its "
            "folder and the free space"
        ) from None
    return out


# -- overview: one run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    """One measurement's ratio to its baseline, as the results document has it."""

    key: str
    ratio: float
    ci: tuple[float, float] | None
    verdict: str


def _float(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def compared(doc: Mapping[str, Any]) -> list[Compared]:
    """The measurements of ``doc`` that have a ratio to a baseline, sorted by ratio."""
    measurements = doc.get("measurements")
    if not isinstance(measurements, Mapping):
        raise PlotError('not a pytest-tpw results document: no "measurements" object')
    out = []
    for key, entry in measurements.items():
        comparison = entry.get("comparison") if isinstance(entry, Mapping) else None
        if not isinstance(comparison, Mapping):
            continue
        ratio = _float(comparison.get("ratio"))
        if ratio is None:
            continue
        ci_raw = comparison.get("ci")
        ci = None
        if isinstance(ci_raw, list | tuple) and len(ci_raw) == 2:
            lo, hi = _float(ci_raw[0]), _float(ci_raw[1])
            ci = (lo, hi) if lo is not None and hi is not None else None
        verdict = str(comparison.get("verdict") or entry.get("verdict") or "-")
        out.append(Compared(str(key), ratio, ci, verdict))
    return sorted(out, key=lambda c: (c.ratio, c.key))


def _setting(doc: Mapping[str, Any], name: str, default: float) -> float:
    settings = doc.get("settings")
    value = _float(settings.get(name)) if isinstance(settings, Mapping) else None
    return default if value is None else value


def _label(key: str, width: int = 70) -> str:
    return key if len(key) <= width else "…" + key[-(width - 1) :]


def overview(doc: Mapping[str, Any], out: Path) -> Path:
    """Forest plot of every compared measurement of ``doc``, written to ``out``."""
    _check_suffix(out)
    rows = compared(doc)
    if not rows:
        raise PlotError(
            "nothing to plot: no measurement in this file was compared with a "
            "baseline (record baselines with pytest --tpw --tpw-update, then run "
            "pytest --tpw --tpw-json again)"
        )
    tolerance = _setting(doc, "tolerance", 0.05)
    noise = _setting(doc, "noise_floor", 0.01)
    n = len(rows)
    small = n > 40
    fig = _figure(9.0, min(max(2.5, 0.9 + (0.12 if small else 0.28) * n), 320.0))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(n))
    for y, row in zip(ys, rows, strict=True):
        colour = VERDICT_COLOURS.get(row.verdict, OTHER_COLOUR)
        if row.ci is not None:
            ax.plot([row.ci[0], row.ci[1]], [y, y], color=colour, linewidth=1.0)
        ax.plot([row.ratio], [y], "o", color=colour, markersize=2.5 if small else 4)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(
        1 - tolerance,
        color="#d62728",
        linestyle="--",
        linewidth=0.8,
        label=f"tolerance (-{tolerance:.0%})",
    )
    for x in (1 - noise, 1 + noise):
        ax.axvline(x, color="#7f7f7f", linestyle=":", linewidth=0.8)
    ax.plot([], [], color="#7f7f7f", linestyle=":", label=f"noise floor (±{noise:.0%})")
    for finding in doc.get("run_wide") or []:
        ratio = _float(finding.get("ratio")) if isinstance(finding, Mapping) else None
        if ratio is not None:
            ax.axvline(
                ratio,
                color="#17becf",
                linestyle="-.",
                linewidth=0.8,
                label=f"run-wide {finding.get('hardware_key', '')} ({ratio - 1:+.1%})",
            )
    for verdict, colour in VERDICT_COLOURS.items():
        if any(r.verdict == verdict for r in rows):
            ax.plot([], [], "o", color=colour, label=verdict)
    ax.set_yticks(ys, [_label(r.key) for r in rows], fontsize=5 if small else 8)
    ax.set_ylim(n, -1)  # the lowest ratio (the worst) at the top
    ax.set_xlabel("tokens/J, this run / baseline")
    ax.grid(axis="x", linewidth=0.3)
    # below the axes: inside, it would hide rows
    ax.legend(
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.6 / fig.get_figheight()),
        ncol=4,
        frameon=False,
    )
    env = doc.get("environment") if isinstance(doc.get("environment"), Mapping) else {}
    assert isinstance(env, Mapping)
    sensor = env.get("sensor") if isinstance(env.get("sensor"), Mapping) else {}
    assert isinstance(sensor, Mapping)
    ax.set_title(
        f"{n} measurement(s) vs baseline; hardware {env.get('hardware_key', '?')}, "
        f"sensor {sensor.get('name', '?')} (joules {sensor.get('provenance', '?')})",
        fontsize=9,
    )
    return _save(fig, out)


# -- history: sessions over time -------------------------------------------------------------


class Group(NamedTuple):
    """What may share one line: same measurement, sensor, provenance and hardware key."""

    measurement: str
    sensor: str
    provenance: str
    hardware_key: str


#: Where a point comes from: a session the baseline holds (the verdicts' reference), one
#: it no longer holds (replaced by an accept, or rotated out), or a run's results file.
STORED, SUPERSEDED, RESULTS = "stored", "superseded", "results"
#: Which copy of a session read twice is kept: the baseline's has the real date.
_PREFERRED = {STORED: 0, SUPERSEDED: 1, RESULTS: 2}


@dataclass(frozen=True)
class Point:
    """One session of one group."""

    date: datetime
    label: str  # the commit (short) or the date
    level: float  # tokens/J, robust level of the session's samples
    ci: tuple[float, float] | None
    kind: str  # STORED, SUPERSEDED or RESULTS
    fingerprint: tuple[float, ...]  # the samples, rounded: the same session read twice
    verdict: str | None = None  # a results file's verdict for it


Series = dict[Group, list[Point]]


def _parse_date(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        date = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return date if date.tzinfo else date.replace(tzinfo=timezone.utc)


def _point(
    values: Sequence[float], date: datetime, commit: Any, kind: str, verdict: str | None = None
) -> Point:
    s = stats.summarize(values)
    ci = (s.ci_low, s.ci_high) if s.ci_low is not None and s.ci_high is not None else None
    label = str(commit)[:7] if commit else date.strftime("%m-%d %H:%M")
    fingerprint = tuple(sorted(float(f"{v:.6g}") for v in values))
    return Point(date, label, s.estimate, ci, kind, fingerprint, verdict)


def _read_json(path: Path) -> Any:
    """Through the one safe reader (no special files, a size limit, UTF-8, strict JSON,
    a depth limit); its refusals name the file."""
    try:
        return results.read(path)
    except results.ResultsError as exc:
        raise PlotError(str(exc)) from None


def _from_results(path: Path, doc: Mapping[str, Any], out: Series) -> None:
    env = doc.get("environment") if isinstance(doc.get("environment"), Mapping) else {}
    assert isinstance(env, Mapping)
    sensor = env.get("sensor") if isinstance(env.get("sensor"), Mapping) else {}
    assert isinstance(sensor, Mapping)
    # a results document may carry its date; otherwise the file's modification time
    date = (
        _parse_date(env.get("date"))
        or _parse_date(doc.get("date"))
        or datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    )
    hardware = str(env.get("hardware_key") or "unknown")
    for key, entry in doc["measurements"].items():
        if not isinstance(entry, Mapping):
            raise PlotError(f"{path}: measurement {key!r} is not an object")
        try:
            values = [float(s["tokens"]) / float(s["joules"]) for s in entry.get("samples") or []]
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise PlotError(f"{path}: {key}: malformed samples ({exc!r})") from None
        values = [v for v in values if math.isfinite(v) and v > 0]
        if not values:
            continue
        group = Group(
            str(key),
            str(entry.get("sensor") or sensor.get("name") or "unknown"),
            str(entry.get("provenance") or sensor.get("provenance") or "unknown"),
            hardware,
        )
        verdict = entry.get("verdict")
        out.setdefault(group, []).append(
            _point(
                values,
                date,
                env.get("commit"),
                RESULTS,
                verdict if isinstance(verdict, str) and verdict in VERDICT_COLOURS else None,
            )
        )


def _from_baseline(path: Path, out: Series) -> None:
    kind = SUPERSEDED if baseline.is_superseded(path) else STORED
    data = _read_json(path)
    key = data.get("hardware_key") if isinstance(data, dict) else None
    try:
        stored = baseline.load(path, str(key))
    except baseline.BaselineError as exc:
        raise PlotError(str(exc)) from None
    assert stored is not None
    for measurement, sessions in stored.measurements.items():
        for s in sessions:
            date = _parse_date(s.date)
            if date is None:
                raise PlotError(
                    f"{path}: {measurement}: session date {s.date!r} is not an ISO date"
                )
            group = Group(measurement, s.sensor, s.provenance, stored.hardware_key)
            out.setdefault(group, []).append(_point(s.values(), date, s.commit, kind))


def load_series(paths: Iterable[Path]) -> Series:
    """Points per group from baseline files, results files and folders of baseline files
    (with the sessions they no longer hold, in their ``superseded/`` folder).

    A session read twice (the run that wrote the baseline also wrote a results file) is kept
    once; points are in date order.
    """
    out: Series = {}
    for path in paths:
        files = [path]
        if path.is_dir():
            old = path / baseline.SUPERSEDED
            files = sorted(path.glob("*.json")) + sorted(old.glob("*.json"))
            if not files:
                raise PlotError(f"{path}: a folder without .json files")
        for file in files:
            data = _read_json(file)
            if isinstance(data, dict) and data.get("format") == baseline.FORMAT:
                _from_baseline(file, out)
            elif isinstance(data, dict) and isinstance(data.get("measurements"), dict):
                try:
                    results.check(data, file)  # every value validated before any arithmetic
                except results.ResultsError as exc:
                    raise PlotError(str(exc)) from None
                _from_results(file, data, out)
            else:
                raise PlotError(
                    f"{file}: neither a pytest-tpw baseline file nor a results "
                    "file (pytest --tpw --tpw-json PATH writes one)"
                )
    for group, points in out.items():
        seen: dict[tuple[float, ...], Point] = {}
        for p in sorted(points, key=lambda p: (_PREFERRED[p.kind], p.date)):
            seen.setdefault(p.fingerprint, p)  # the baseline's copy has the real date
        out[group] = sorted(seen.values(), key=lambda p: p.date)
    return out


def matches(key: str, pattern: str) -> bool:
    """A glob when ``pattern`` has ``*?[``, else a substring."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(key, pattern)
    return pattern in key


def select(series: Series, match: str | None) -> Series:
    """The groups to draw: those whose measurement matches, at most the panel limit."""
    chosen = {g: p for g, p in series.items() if match is None or matches(g.measurement, match)}
    if not chosen:
        raise PlotError(
            "nothing to plot"
            + (
                f": no measurement matches {match!r}"
                if match
                else ": the files hold no measurements"
            )
        )
    limit = MAX_PANELS if match is None else MAX_PANELS_MATCHED
    if len(chosen) > limit:
        how = (
            "choose some with --match PATTERN (a substring or a glob such as "
            "'tests/test_decode.py::*')"
            if match is None
            else f"narrow --match {match!r}"
        )
        raise PlotError(
            f"{len(chosen)} panels (one per measurement, sensor, provenance and "
            f"hardware key) is more than {limit}: {how}"
        )
    return chosen


#: How each kind of point is drawn: marker, filled, the colour when it has no verdict.
_KIND_STYLE = {
    STORED: ("o", True, OTHER_COLOUR),
    SUPERSEDED: ("o", False, "#7f7f7f"),
    RESULTS: ("s", True, "#17becf"),
}
_KIND_LABEL = {
    STORED: "baseline session (judged against)",
    SUPERSEDED: "superseded session (replaced or rotated out; never judged against)",
    RESULTS: "results file (marker colour: its verdict)",
}
#: Sessions labelled with their commit at most, per panel (evenly spaced, the last always).
MAX_LABELS = 10


def _labelled(n: int) -> set[int]:
    """Which of ``n`` points carry a label: every one up to :data:`MAX_LABELS`, else an even
    spread that ends with the newest."""
    if n <= MAX_LABELS:
        return set(range(n))
    step = math.ceil(n / MAX_LABELS)
    return {*range(n - 1, -1, -step)}


def _panel(ax: Any, group: Group, points: Sequence[Point]) -> set[str]:
    """One group's sessions on ``ax``; returns the kinds and verdicts drawn (for the legend)."""
    from matplotlib import dates

    mdates: Any = dates  # its locator and formatter are untyped
    drawn: set[str] = set()
    ax.plot(
        [p.date for p in points], [p.level for p in points], "-", color="#bbbbbb", linewidth=0.8
    )
    for p in points:
        marker, filled, plain = _KIND_STYLE[p.kind]
        colour = VERDICT_COLOURS.get(p.verdict or "", plain)
        err = None
        if p.ci is not None:
            err = [[p.level - p.ci[0]], [p.ci[1] - p.level]]
        ax.errorbar(
            [p.date],
            [p.level],
            yerr=err,
            fmt=marker,
            color=colour,
            markerfacecolor=colour if filled else "white",
            markeredgecolor=colour,
            capsize=2,
            markersize=4,
            elinewidth=0.8,
        )
        drawn.add(p.kind)
        if p.verdict in VERDICT_COLOURS:
            drawn.add(p.verdict)
    stored = [p for p in points if p.kind == STORED]
    if stored:
        # the band the next run is judged against: the stored sessions' levels
        lo, hi = min(p.level for p in stored), max(p.level for p in stored)
        ax.axhspan(lo, hi, color="#2ca02c", alpha=0.12)
        drawn.add("band")
    for i in sorted(_labelled(len(points))):
        p = points[i]
        ax.annotate(
            p.label,
            (p.date, p.level),
            textcoords="offset points",
            xytext=(0, 7),
            ha="left",
            fontsize=6,
            rotation=35,
        )
    first, last = points[0].date, points[-1].date
    span = last - first
    pad = max(span * 0.06, timedelta(hours=12))  # one session: a day around it, not years
    ax.set_xlim(first - pad, last + pad)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.xaxis.get_offset_text().set_fontsize(7)
    ax.set_title(
        f"{group.measurement}  [{group.hardware_key}, sensor {group.sensor}, "
        f"joules {group.provenance}]  {len(points)} session(s)",
        fontsize=8,
    )
    ax.set_ylabel("tokens/J (level, CI)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.margins(y=0.3)
    ax.grid(axis="y", linewidth=0.3)
    return drawn


def _legend_handles(drawn: set[str]) -> list[Any]:
    """The figure's legend: the kinds of point, the verdict colours, the band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def marker(shape: str, colour: str, filled: bool, label: str) -> Any:
        face = colour if filled else "white"
        return Line2D(
            [], [], marker=shape, linestyle="", color=colour, markerfacecolor=face, label=label
        )

    handles: list[Any] = []
    for kind in (STORED, SUPERSEDED, RESULTS):
        if kind in drawn:
            shape, filled, colour = _KIND_STYLE[kind]
            if kind == RESULTS:  # its colour is its verdict's: the shape alone in the legend
                colour, filled = "#444444", False
            handles.append(marker(shape, colour, filled, _KIND_LABEL[kind]))
    for verdict, colour in VERDICT_COLOURS.items():
        if verdict in drawn:
            handles.append(marker("s", colour, True, verdict))
    if "band" in drawn:
        handles.append(
            Patch(color="#2ca02c", alpha=0.12, label="range of the baseline sessions' levels")
        )
    return handles


def history(series: Series, out: Path, match: str | None = None) -> Path:
    """tokens/J over time, one panel per group, with the baseline band; written to ``out``.

    Baseline sessions, superseded ones and results files are told apart by their markers;
    a results file's point has its verdict's colour."""
    _check_suffix(out)
    chosen = select(series, match)
    groups = sorted(chosen)
    drawn: set[str] = set()
    fig = _figure(9.0, 2.4 * len(groups) + 0.4)
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, group in zip(axes, groups, strict=True):
        drawn |= _panel(ax, group, chosen[group])
    handles = _legend_handles(drawn)
    legend_in = 0.18 * math.ceil(len(handles) / 2) + 0.05
    fig.set_figheight(fig.get_figheight() + legend_in)
    fig.tight_layout(rect=(0.0, legend_in / fig.get_figheight(), 1.0, 1.0))
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    return _save(fig, out)
