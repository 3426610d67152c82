"""What a session shows in the terminal: the header lines, the table's rows, the notes.

Assembled from a run's state as :class:`RunState` describes it (a
:class:`pytest_tpw.run.session.TpwSession` is one), laid out by
:mod:`pytest_tpw.present.report`. Text only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pytest_tpw.config.settings import Settings
from pytest_tpw.judging.judge import LOWER_IT, HardwareShare, Judgement
from pytest_tpw.measure.samples import WAITED, Measurement
from pytest_tpw.present import report


class RunState(Protocol):
    """What the terminal section reads of a session."""

    @property
    def settings(self) -> Settings: ...

    @property
    def hardware_key(self) -> str: ...

    @property
    def shares(self) -> Mapping[str, HardwareShare]: ...

    @property
    def failed_tests(self) -> set[str]: ...

    def sensor_info(self) -> report.SensorInfo: ...


def header_lines(
    sensor: report.SensorInfo,
    skipped: Mapping[str, str],
    baseline_path: Path,
    stored: int | None,
    idle_watts: float | None,
    legacy: tuple[str, Path] | None = None,
) -> list[str]:
    """What the run header says about the sensor and the baselines (``stored``: how many
    measurements the baseline file holds, None without one; ``legacy``: the previous
    hardware key and its file, when those are the baselines compared)."""
    lines = [f"tpw: sensor {sensor.name}, joules {sensor.provenance} ({sensor.method})"]
    lines += [f"tpw: passed over {name}: {why}" for name, why in skipped.items()]
    if legacy is not None:
        key, path = legacy
        lines.append(
            f"tpw: baselines {baseline_path} (none yet): comparing with {path} "
            f"({stored} measurement(s)), this hardware's baselines under its previous key "
            f"{key} (keys now count the CPUs a runner has)"
        )
    else:
        found = f"{stored} measurement(s)" if stored is not None else "none yet"
        lines.append(f"tpw: baselines {baseline_path} ({found})")
    if idle_watts is not None:
        lines.append(
            f"tpw: idle power {idle_watts:.4g} W (one window with nothing running, at start; "
            "context only, verdicts use gross energy)"
        )
    return lines


def health_lines(health: Mapping[str, Any], provenance: str) -> list[str]:
    """``sensor health: counter advancing yes, update period 100 ms, idle 70.1 W, dropped
    reads 0, invalid windows 0`` and the sensor's notes under it. Said for every sensor but
    ``sim`` (whose health means nothing), and for ``sim`` too when a window was lost."""
    advances = health.get("counter_advances")
    period = health.get("update_period_s")
    idle = health.get("idle_watts")
    dropped = int(health.get("dropped_reads") or 0)
    invalid = int(health.get("invalid_windows") or 0)
    notes = [str(n) for n in health.get("notes") or []]
    if provenance == "simulated" and not (dropped or invalid or notes):
        return []
    parts = report.health_parts(
        advances if isinstance(advances, bool) else None,
        float(period) if isinstance(period, (int, float)) else None,
        float(idle) if isinstance(idle, (int, float)) else None,
        dropped,
        invalid,
    )
    return [f"sensor health: {', '.join(parts)}", *(f"  {n}" for n in notes)]


def implausible_lines(implausible: Mapping[str, Sequence[str]]) -> list[str]:
    """The results beyond physical bounds, each sentence on its own line."""
    texts = [t for key in sorted(implausible) for t in implausible[key]]
    if not texts:
        return []
    head = (
        f"implausible: {len(implausible)} measurement(s) beyond physical bounds "
        "(TpwImplausibleWarning; bounds and sources in docs/sensors.md):"
    )
    return [head, *(f"  {t}" for t in texts)]


def every_measurement(run: RunState) -> list[tuple[str, Measurement]]:
    """Every share's measurements, by the key they have in outputs: a measurement taken on
    another hardware key than this process's is ``<key>@<hardware key>``."""
    own = run.hardware_key
    return [
        (key if share.key == own else f"{key}@{share.key}", m)
        for share in run.shares.values()
        for key, (m, _) in share.measurements.items()
    ]


def _label(run: RunState, m: Measurement, j: Judgement | None) -> str | None:
    """The verdict column's words when the verdict alone would mislead: a run that writes
    baselines records what it measured whatever the verdict (``accepted``, ``recorded``),
    and an interval far wider than the tolerance is ``too noisy`` to judge."""
    if j is None:
        return None
    words = [j.verdict.value]
    mode = run.settings.baseline_mode
    written = m.finished and m.nodeid not in run.failed_tests
    if written and mode == "replace":
        words.append("accepted")
    elif written and (mode == "extend" or (mode == "missing" and j.baseline_level is None)):
        words.append("recorded")
    if j.too_noisy:
        words.append("too noisy")
    return ", ".join(words) if len(words) > 1 else None


def rows(run: RunState) -> list[report.Row]:
    """One row per measurement, with its final verdict, its ratio to the baseline and the
    interval of that ratio that decided the verdict."""
    out = []
    for share in run.shares.values():
        judgements = share.judge.judgements
        suffix = "" if share.key == run.hardware_key else f"@{share.key}"
        for key, (m, result) in share.measurements.items():
            j = judgements.get(key)
            c = j.comparison if j else None
            interval = None
            if c is not None and c.ci_low is not None and c.ci_high is not None:
                interval = (c.ci_low, c.ci_high)
            out.append(
                report.Row(
                    key + suffix,
                    result,
                    j.baseline_level if j else None,
                    len(m.warnings),
                    j.verdict if j else None,
                    j.ratio if j else None,
                    interval,
                    _label(run, m, j),
                )
            )
    return out


def notes(run: RunState, extra: Sequence[str] = ()) -> list[str]:
    """Under the table: each key's run-wide finding, the verdict counts, the judgements'
    notes, hardware without a baseline, lock waits, then ``extra`` (files written...)."""
    lines: list[str] = []
    several = len(run.shares) > 1
    for share in run.shares.values():
        run_wide = share.judge.run_wide
        if run_wide is None:
            continue
        text = run_wide.text
        lines.append(text.replace("run-wide:", f"run-wide ({share.key}):", 1) if several else text)
        lines += [f"  {note}" for note in run_wide.notes]
        if run_wide.fails:
            lines.append(
                "the run FAILS on the run-wide stack regression (--tpw-strict or "
                "--tpw-fail-stack); no test failed for it"
            )
    every = [j for share in run.shares.values() for j in share.judge.judgements.values()]
    if every:
        counts: dict[str, int] = {}
        for j in every:
            counts[j.verdict.value] = counts.get(j.verdict.value, 0) + 1
        s = run.settings
        lines.append(
            "verdicts: "
            + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
            + f" (tolerance {s.tolerance:.0%}, noise floor {s.noise_floor:.0%}, "
            f"FDR q = {s.fdr:g})"
        )
        lines += [note for j in every for note in j.notes]
        settled = sum(1 for j in every if j.without_suite)
        if settled:
            lines.append(
                f"{settled} comparison(s) decided per test, without the run-wide shift of the "
                "whole suite nor Benjamini-Hochberg across it: pytest-rerunfailures runs (and "
                "logs) those tests itself, so their verdicts cannot wait for the rest of the run"
            )
    lines += limits(every)
    lines += bound_line(every, run.shares[run.hardware_key].judge.edge_error_s)
    lines += warning_counts(run)
    own = run.shares[run.hardware_key]
    judge = own.judge
    if judge.other_hardware and judge.baseline is None and own.measurements:
        lines.append(
            f"no baseline for {run.hardware_key}; baselines exist for "
            f"{', '.join(judge.other_hardware)} (not compared)"
        )
    waits = [(key, m.lock_waits()) for key, m in every_measurement(run)]
    waits = [(key, w) for key, w in waits if w]
    if waits:
        windows = sum(len(w) for _, w in waits)
        total = sum(sum(w) for _, w in waits)
        lines.append(
            f"{windows} window(s) of {len(waits)} measurement(s) waited for a device lock "
            f"({total:.2f} s in all): another process was measuring the same device; the "
            "waits were outside the windows"
        )
    return [*lines, *extra]


def bound_line(judgements: Sequence[Judgement], edge_error_s: float) -> list[str]:
    """The instrument's bound, when the sensor states an edge error: how large it was for
    the compared tests, and what it means for their verdicts."""
    bounds = [j.instrument_bound for j in judgements if j.instrument_bound is not None]
    if edge_error_s <= 0 or not bounds:
        return []
    return [
        f"instrument bound: the sensor's window edges are uncertain by {edge_error_s:.3g} s, "
        f"so a ratio may be off by {min(bounds):.1%} to {max(bounds):.1%} (compared tests); "
        "a drop within it is never REGRESSED (docs/verdicts.md)"
    ]


#: At most this many tests are named per line of :func:`limits`.
NAMED = 5


def limits(judgements: Sequence[Judgement]) -> list[str]:
    """The compared tests that cannot catch a drop of their own tolerance now, grouped by
    what widens their intervals, each group with what would lower it."""
    short = [j for j in judgements if j.limited_by is not None and not j.canary]
    if not short:
        return []
    compared = sum(1 for j in judgements if j.detectable_drop is not None and not j.canary)
    tolerances = {j.tolerance for j in short}
    common = f" ({next(iter(tolerances)):.0%})" if len(tolerances) == 1 else ""
    lines = [
        f"detectable drop: {len(short)} of {compared} compared test(s) cannot catch a drop of "
        f"their tolerance{common} now; the smallest drop each would find REGRESSED 4 times "
        "in 5 (detectable_drop in --tpw-json), by what limits it:"
    ]
    groups: dict[str, list[Judgement]] = {}
    for j in sorted(short, key=lambda j: -(j.detectable_drop or 0.0)):
        groups.setdefault(j.limited_by or "windows", []).append(j)
    for part, group in groups.items():
        lines.append(f"  {LOWER_IT[part]}:")
        for j in group[:NAMED]:
            own = "" if common else f" (tolerance {j.tolerance:.0%})"
            lines.append(f"    {j.key}: {j.detectable_drop or 0.0:.0%}{own}")
        if len(group) > NAMED:
            lines.append(f"    and {len(group) - NAMED} more")
    return lines


def warning_counts(run: RunState) -> list[str]:
    """How many measurements had warnings, and how many of their windows."""
    warned = [m for _, m in every_measurement(run) if m.warnings]
    if not warned:
        return []
    windows = sum(len(m.samples) for m in warned)
    flagged = sum(
        1
        for m in warned
        for sample in m.samples
        if any(not text.startswith(WAITED) for text in sample.warnings)
    )
    return [
        f"warnings: {len(warned)} measurement(s) marked (!), {flagged} of their {windows} "
        "windows with a warning; one line per measurement and kind in the warnings summary"
    ]


def terminal_lines(run: RunState, extra: Sequence[str] = (), width: int | None = None) -> list[str]:
    """Everything under the ``tokens per joule`` heading, the table at most ``width``
    columns wide when given."""
    return report.terminal_lines(
        rows(run),
        [m for _, m in every_measurement(run)],
        run.sensor_info(),
        run.settings.confidence,
        notes(run, extra),
        width,
    )
