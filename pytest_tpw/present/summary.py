"""What a session shows in the terminal: the header lines, the table's rows, the notes.

Assembled from a run's state as :class:`RunState` describes it (a
:class:`pytest_tpw.run.session.TpwSession` is one), laid out by
:mod:`pytest_tpw.present.report`. Text only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pytest_tpw.config.settings import Settings
from pytest_tpw.judging.judge import HardwareShare
from pytest_tpw.measure.samples import Measurement
from pytest_tpw.present import report


class RunState(Protocol):
    """What the terminal section reads of a session."""

    @property
    def settings(self) -> Settings: ...

    @property
    def hardware_key(self) -> str: ...

    @property
    def shares(self) -> Mapping[str, HardwareShare]: ...

    def sensor_info(self) -> report.SensorInfo: ...


def header_lines(
    sensor: report.SensorInfo,
    skipped: Mapping[str, str],
    baseline_path: Path,
    stored: int | None,
    idle_watts: float | None,
) -> list[str]:
    """What the run header says about the sensor and the baselines (``stored``: how many
    measurements the baseline file holds, None without one)."""
    lines = [f"tpw: sensor {sensor.name}, joules {sensor.provenance} ({sensor.method})"]
    lines += [f"tpw: passed over {name}: {why}" for name, why in skipped.items()]
    found = f"{stored} measurement(s)" if stored is not None else "none yet"
    lines.append(f"tpw: baselines {baseline_path} ({found})")
    if idle_watts is not None:
        lines.append(
            f"tpw: idle power {idle_watts:.4g} W (one window with nothing running, at start; "
            "context only, verdicts use gross energy)"
        )
    return lines


def every_measurement(run: RunState) -> list[tuple[str, Measurement]]:
    """Every share's measurements, by the key they have in outputs: a measurement taken on
    another hardware key than this process's is ``<key>@<hardware key>``."""
    own = run.hardware_key
    return [
        (key if share.key == own else f"{key}@{share.key}", m)
        for share in run.shares.values()
        for key, (m, _) in share.measurements.items()
    ]


def rows(run: RunState) -> list[report.Row]:
    """One row per measurement, with its final verdict and its ratio to the baseline."""
    out = []
    for share in run.shares.values():
        judgements = share.judge.judgements
        label = "" if share.key == run.hardware_key else f"@{share.key}"
        for key, (m, result) in share.measurements.items():
            j = judgements.get(key)
            out.append(
                report.Row(
                    key + label,
                    result,
                    j.baseline_level if j else None,
                    len(m.warnings),
                    j.verdict if j else None,
                    j.ratio if j else None,
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


def terminal_lines(run: RunState, extra: Sequence[str] = ()) -> list[str]:
    """Everything under the ``tokens per joule`` heading."""
    return report.terminal_lines(
        rows(run),
        [m for _, m in every_measurement(run)],
        run.sensor_info(),
        run.settings.confidence,
        notes(run, extra),
    )
