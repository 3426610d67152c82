"""A session's measurements into its baseline file: one stored session per measurement.

Only complete measurements of tests that passed are written, merged into the file as it is
on disk now (:func:`pytest_tpw.store.baseline.flush`): an interrupted session adds what it
finished and removes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_tpw.config.settings import BaselineMode
from pytest_tpw.store.baseline import StoredSession, flush


def record(
    path: Path,
    hardware_key: str,
    hardware: Mapping[str, Any],
    measurements: Iterable[
        tuple[str, str, str, list[tuple[int, float, float]], dict[str, Any] | None]
    ],
    *,
    date: str,
    commit: str | None,
    software: Mapping[str, Any],
    history: int,
    superseded: int,
    mode: BaselineMode,
    interrupted: bool,
    legacy: Sequence[tuple[str, Path]] = (),
) -> str:
    """Write ``measurements`` — ``(key, sensor, provenance, samples, load)`` with samples as
    ``(tokens, joules, seconds)`` per window and ``load`` the shape of a load measurement's
    load (or None) — as this session of each; returns the note
    the run prints. ``superseded``: how many sessions each measurement keeps of those it
    no longer holds. ``legacy``: older forms of the key and their files (see
    :func:`pytest_tpw.store.baseline.flush`): the note says when one was carried over."""
    carried = None if path.exists() else next((p for _, p in legacy if p.exists()), None)
    updates = {
        key: StoredSession(
            date=date,
            commit=commit,
            software=dict(software),
            sensor=sensor,
            provenance=provenance,
            samples=samples,
            load=load,
        )
        for key, sensor, provenance, samples, load in measurements
    }
    written = flush(
        path,
        hardware_key,
        hardware,
        updates,
        history,
        mode,
        superseded=superseded,
        legacy=legacy,
    )
    what = f"{len(written)} measurement(s) written to {path}"
    if carried is not None and path.exists():
        what += (
            f", starting from the baselines of {carried} (this hardware's previous key, "
            "without the CPU count), carried over whole; that file is left for other "
            f"runners that shared it: git rm {carried} once each has its own"
        )
    if interrupted:
        what += " (interrupted: only the measurements that finished; the rest untouched)"
    return what
