"""The baseline store: ``DIR/<hardware-key>.json`` files, loaded, validated, merged, written.

One file per hardware key. Inside: a schema version, the hardware, and per measurement the
last ``tpw_history`` sessions, each with its date, commit, software stack and raw samples
(tokens, joules, seconds per window). Formatting is deterministic and reviewable: sorted
keys, one session per line. Writes are atomic and merge into what is on disk at write time,
so a file is never left half-written nor silently replaced with less.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TpwError
from .files import atomic_write_text

SCHEMA_VERSION = 1
#: Marks the file as ours, so that a stray JSON file in the folder is never taken for one.
FORMAT = "pytest-tpw baseline"


class BaselineError(TpwError):
    """A baseline file cannot be used; the message names the file and what to do."""


@dataclass
class StoredSession:
    """One earlier session of one measurement."""

    date: str
    commit: str | None
    software: dict[str, Any]
    sensor: str
    provenance: str
    samples: list[tuple[int, float, float]]  # (tokens, joules, seconds) per window

    def values(self) -> list[float]:
        """The session's samples as tokens per joule."""
        return [t / j for t, j, _ in self.samples]

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "commit": self.commit,
            "software": self.software,
            "sensor": self.sensor,
            "provenance": self.provenance,
            "samples": [[t, _round(j), _round(s)] for t, j, s in self.samples],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> StoredSession:
        try:
            samples = [(int(t), float(j), float(s)) for t, j, s in data["samples"]]
            session = cls(date=str(data["date"]), commit=data.get("commit"),
                          software=dict(data.get("software") or {}),
                          sensor=str(data["sensor"]), provenance=str(data["provenance"]),
                          samples=samples)
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{where}: malformed session ({exc!r}). {_FIX}") from None
        if not samples or any(t <= 0 or not j > 0 or not math.isfinite(j)
                              for t, j, _ in samples):
            raise BaselineError(f"{where}: a session needs samples with positive tokens and "
                                f"joules. {_FIX}")
        return session


_FIX = ("Restore the file from version control (git checkout -- <file>), or delete this "
        "measurement's entry and record it again with --tpw-update")


def _round(x: float) -> float:
    """Nine significant digits: far below any sensor's resolution, and stable in diffs."""
    return float(f"{x:.9g}")


@dataclass
class BaselineFile:
    """The contents of one ``<hardware-key>.json``."""

    hardware_key: str
    hardware: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, list[StoredSession]] = field(default_factory=dict)

    def sessions(self, key: str) -> list[StoredSession]:
        return self.measurements.get(key, [])

    def merge(self, updates: Mapping[str, StoredSession], history: int,
              only_missing: bool) -> list[str]:
        """Add this session's samples; returns the keys written.

        ``only_missing`` writes measurements that have no baseline yet and leaves the others
        untouched. Otherwise each measurement gains a session and keeps its last ``history``.
        """
        written = []
        for key, session in sorted(updates.items()):
            if only_missing and self.measurements.get(key):
                continue
            kept = [*self.measurements.get(key, []), session][-history:]
            self.measurements[key] = kept
            written.append(key)
        return written


def path_for(directory: Path, hardware_key: str) -> Path:
    return directory / f"{hardware_key}.json"


def load(path: Path, hardware_key: str) -> BaselineFile | None:
    """Read and validate one baseline file; None when it does not exist.

    Raises :class:`BaselineError` naming the file and the fix when it is corrupt, from a
    newer schema, not a pytest-tpw baseline, or for other hardware.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: corrupt baseline file (invalid JSON at line {exc.lineno}: {exc.msg}). "
            f"Restore it from version control (git checkout -- {path}) or delete it and "
            "record a new baseline with --tpw-update") from None
    return _parse(data, path, hardware_key)


def _parse(data: Any, path: Path, hardware_key: str) -> BaselineFile:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"{path}: not a pytest-tpw baseline file (no \"format\": "
                            f"\"{FORMAT}\"); move it out of the baseline folder")
    schema = data.get("schema")
    if not isinstance(schema, int) or schema < 1:
        raise BaselineError(f"{path}: baseline file without a valid schema version")
    if schema > SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: written by a newer pytest-tpw (schema {schema}, this one reads "
            f"{SCHEMA_VERSION}); upgrade: pip install -U pytest-tpw. The file is left as it is")
    if data.get("hardware_key") != hardware_key:
        raise BaselineError(
            f"{path}: holds baselines for hardware {data.get('hardware_key')!r}, but its name "
            f"says {hardware_key!r}; rename it after the hardware it was recorded on")
    measurements = data.get("measurements")
    if not isinstance(measurements, dict):
        raise BaselineError(f"{path}: \"measurements\" must be an object")
    parsed: dict[str, list[StoredSession]] = {}
    for key, entry in measurements.items():
        sessions = entry.get("sessions") if isinstance(entry, dict) else None
        if not isinstance(sessions, list):
            raise BaselineError(f"{path}: measurement {key!r} has no \"sessions\" list")
        try:
            parsed[key] = [StoredSession.from_json(s, f"{path}: {key!r}") for s in sessions]
        except BaselineError as exc:
            raise BaselineError(str(exc).replace("<file>", str(path))) from None
    hardware = data.get("hardware") or {}
    if not isinstance(hardware, dict):
        raise BaselineError(f"{path}: \"hardware\" must be an object. "
                            + _FIX.replace("<file>", str(path)))
    return BaselineFile(hardware_key, dict(hardware), parsed)


def dumps(baseline: BaselineFile) -> str:
    """Deterministic text: sorted keys, two-space structure, one session per line."""

    def line(value: Any) -> str:
        return json.dumps(value, sort_keys=True, allow_nan=False, separators=(", ", ": "))

    out = ["{",
           f'  "format": {line(FORMAT)},',
           f'  "hardware": {line(baseline.hardware)},',
           f'  "hardware_key": {line(baseline.hardware_key)},',
           '  "measurements": {']
    keys = sorted(baseline.measurements)
    for i, key in enumerate(keys):
        sessions = baseline.measurements[key]
        out.append(f"    {line(key)}: {{")
        out.append('      "sessions": [')
        rows = [f"        {line(s.to_json())}" for s in sessions]
        out.append(",\n".join(rows))
        out.append("      ]")
        out.append("    }" + ("," if i < len(keys) - 1 else ""))
    out += ["  },", f'  "schema": {SCHEMA_VERSION}', "}", ""]
    return "\n".join(out)


def write(path: Path, baseline: BaselineFile) -> None:
    atomic_write_text(path, dumps(baseline))


def other_hardware(directory: Path, hardware_key: str) -> list[str]:
    """Hardware keys that have baseline files here, other than this machine's."""
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json") if p.stem != hardware_key)


def flush(path: Path, hardware_key: str, hardware: Mapping[str, Any],
          updates: Mapping[str, StoredSession], history: int, only_missing: bool) -> list[str]:
    """Merge this session's updates into the file as it is on disk now, atomically.

    Re-reads the file at write time so that nothing written meanwhile is lost; a file that
    cannot be parsed is never overwritten (:class:`BaselineError`).
    """
    current = load(path, hardware_key) or BaselineFile(hardware_key)
    current.hardware = dict(hardware)
    written = current.merge(updates, history, only_missing)
    if written:
        write(path, current)
    return written


def pooled(sessions: Sequence[StoredSession]) -> list[float]:
    return [v for s in sessions for v in s.values()]


def stack_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                  keys: Iterable[str] | None = None) -> list[str]:
    """``["driver 550.54 -> 560.28", ...]``: what differs between two software stacks."""
    names = sorted(set(old) | set(new)) if keys is None else list(keys)
    return [f"{k} {old.get(k)} -> {new.get(k)}" for k in names if old.get(k) != new.get(k)]
