"""The baseline store: ``DIR/<hardware-key>.json`` files, loaded, validated, merged, written.

One file per hardware key. Inside: a schema version, the hardware, and per measurement the
last ``tpw_history`` sessions, each with its date, commit, software stack and raw samples
(tokens, joules, seconds per window). Formatting is deterministic and reviewable: sorted
keys, one session per line.

Hostile or damaged files are refused, never coerced: no oversized file, no
FIFO/device/directory, UTF-8 only, and every value checked
(:mod:`pytest_tpw.store.sessions`). Every refusal is a :class:`BaselineError` naming the
file, the measurement and the field, saying what to do, and leaving the file as it is.

Writes (:func:`flush`) hold an exclusive ``flock`` on the baseline folder itself across
re-read, merge and atomic replace (a lock on the folder leaves no lock file to commit), so
concurrent runs all land; temp files of a killed writer are removed under that lock; a
symlinked baseline is written through to its target.

Scale: a file in the layout this module writes is read without parsing its sessions
(:mod:`pytest_tpw.store.layout`); a file in any other layout (reformatted by hand) is
parsed and validated in full. Schema 1 is unchanged.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tpw.config.options import BASELINE_MODES
from pytest_tpw.config.settings import BaselineMode
from pytest_tpw.store import reading
from pytest_tpw.store.files import (
    TEMP_SUFFIX,
    atomic_write_chunks,
    make_folder,
    resolved,
    temp_prefix,
    write_error,
)
from pytest_tpw.store.layout import (
    FORMAT,
    SCHEMA_VERSION,
    Header,
    Measurements,
    Raw,
    chunks,
    known_valid,
    lines_valid,
    scan,
    session_count,
    session_line,
)
from pytest_tpw.store.sessions import (
    BaselineError,
    StoredSession,
    check_no_duplicates,
    fix_hint,
    is_scalar,
    json_error,
    shorten,
    strict_loads,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Larger files are refused before being read (``load(..., max_bytes=...)`` to change).
MAX_FILE_BYTES = 512 * 2**20
#: Files up to this size are validated in full at load; larger ones per measurement on first
#: read (and in full before any write), so that a huge file loads in well under a second.
CHECK_ALL_BELOW = 32 * 2**20
#: How long a write waits for another run's write of the same file.
LOCK_TIMEOUT_S = 300.0


#: What a write drops of each measurement, for its superseded file: the sessions' lines as
#: this module writes them (``,\n`` between), known valid.
Dropped = dict[str, bytes]


@dataclass
class BaselineFile:
    """The contents of one ``<hardware-key>.json``."""

    hardware_key: str
    hardware: dict[str, Any] = field(default_factory=dict)
    measurements: MutableMapping[str, list[StoredSession]] = field(default_factory=dict)

    def sessions(self, key: str) -> list[StoredSession]:
        return self.measurements.get(key, [])

    def count(self, key: str) -> int:
        """How many sessions ``key`` has (its entry is not parsed)."""
        return session_count(self.measurements, key)

    def newest(self, key: str) -> StoredSession | None:
        """``key``'s newest session (of an unread entry, only its last line is parsed)."""
        if isinstance(self.measurements, Measurements):
            return self.measurements.newest(key) if key in self.measurements else None
        sessions = self.measurements.get(key, [])
        return sessions[-1] if sessions else None

    def validate(self) -> None:
        """Parse and validate every measurement now (a lazily loaded file parses on use)."""
        for key in list(self.measurements):
            self.measurements[key]

    def merge(
        self,
        updates: Mapping[str, StoredSession],
        history: int,
        mode: BaselineMode,
        dropped: Dropped | None = None,
    ) -> list[str]:
        """Add this session's samples; returns the keys written, sorted.

        ``mode="replace"``: each measurement's history becomes this session.
        ``mode="extend"``: each gains this session and keeps its last ``history``.
        ``mode="missing"``: only measurements without sessions are written.
        ``dropped``, when given, receives the lines of the sessions each key loses (replaced,
        or rotated out of the history), oldest first, copied as bytes where the file holds
        them so (a damaged entry's are not kept).
        """
        if mode not in BASELINE_MODES:
            raise ValueError(f"baseline write mode must be one of {BASELINE_MODES}, not {mode!r}")
        history = max(1, int(history))
        written = []
        software_seen: set[bytes] = set()  # software objects already checked
        for key, session in sorted(updates.items()):
            count = session_count(self.measurements, key)
            if mode == "missing" and count:
                continue
            if (
                mode == "extend"
                and count
                and self._extend_raw(key, session, history, software_seen, dropped)
            ):
                written.append(key)
                continue
            if dropped is not None and count:
                lines = self._lines(key, software_seen)
                if mode == "extend" and lines:  # the oldest, rotated out
                    n = lines.count(b"\n") + 1
                    lines = _first_lines(lines, max(0, n + 1 - history))
                if lines:
                    dropped[key] = lines
            kept = [*self.sessions(key), session][-history:] if mode == "extend" else [session]
            self.measurements[key] = kept
            written.append(key)
        return written

    def _lines(self, key: str, software_seen: set[bytes]) -> bytes:
        """``key``'s sessions as lines (as this module writes them): its bytes when the file
        holds it so and they are valid, else its parsed sessions written out; empty for a
        damaged entry (it is being replaced: nothing of it is kept)."""
        if isinstance(self.measurements, Measurements):
            raw = self.measurements.raw(key)
            if raw is not None and (
                raw.checked or lines_valid(raw.buf, raw.start, raw.end, software_seen)
            ):
                return bytes(raw.buf[raw.start : raw.end])
        sessions = _readable(self, key)
        return b",\n".join(session_line(s) for s in sessions)

    def append_lines(self, key: str, lines: bytes, keep: int) -> None:
        """Add known-valid session lines to ``key``, keeping its newest ``keep`` (copied as
        bytes where the entry is still bytes: nothing is parsed)."""
        if not lines:
            return
        measurements = self.measurements
        if isinstance(measurements, Measurements) and (
            measurements.raw(key) is not None or key not in measurements
        ):
            raw = measurements.raw(key)
            old = b""
            if raw is not None and raw.end > raw.start:
                if not (raw.checked or lines_valid(raw.buf, raw.start, raw.end, set())):
                    measurements[key]  # parse it: a damaged entry is refused, named
                old = bytes(raw.buf[raw.start : raw.end])
            buf = _last_lines(old + b",\n" + lines if old else lines, keep)
            measurements.set_raw(key, Raw(buf, 0, len(buf), checked=True))
            return
        added = [known_valid(json.loads(line)) for line in lines.split(b",\n")]
        self.measurements[key] = [*self.sessions(key), *added][-keep:]

    def _extend_raw(
        self,
        key: str,
        session: StoredSession,
        history: int,
        software_seen: set[bytes],
        dropped: Dropped | None,
    ) -> bool:
        """Append ``session`` to an entry still held as bytes, without parsing it.

        Only the lines kept are checked (the oldest, rotated out, are dropped unread unless
        ``dropped`` asks for them); False when they are not one valid session a line: the
        caller then parses the entry.
        """
        if not isinstance(self.measurements, Measurements):
            return False
        raw = self.measurements.raw(key)
        if raw is None:
            return False
        start, n = raw.start, raw.n_sessions()
        for _ in range(max(0, n - (history - 1))):
            start = raw.buf.find(b"\n", start, raw.end) + 1 or raw.end
        if start < raw.end and not (
            raw.checked or lines_valid(raw.buf, start, raw.end, software_seen)
        ):
            return False
        if dropped is not None and start > raw.start:
            end = start - 2 if start < raw.end else raw.end  # without the ",\n" between
            # a damaged line is not kept anywhere; the rest still lands
            if raw.checked or lines_valid(raw.buf, raw.start, end, software_seen):
                dropped[key] = bytes(raw.buf[raw.start : end])
        kept = raw.buf[start : raw.end]
        buf = kept + (b",\n" if kept else b"") + session_line(session)
        self.measurements.set_raw(key, Raw(buf, 0, len(buf), checked=True))
        return True


def _first_lines(lines: bytes, n: int) -> bytes:
    """The first ``n`` of ``,\n``-joined session lines."""
    if n <= 0:
        return b""
    end = 0
    for _ in range(n):
        end = lines.find(b"\n", end) + 1
        if end == 0:
            return lines
    return lines[: end - 2]


def _last_lines(lines: bytes, n: int) -> bytes:
    """The last ``n`` of ``,\n``-joined session lines."""
    if n <= 0:
        return b""
    start = len(lines)
    for _ in range(n):
        start = lines.rfind(b"\n", 0, start)
        if start < 0:
            return lines
    return lines[start + 1 :]


def path_for(directory: Path, hardware_key: str) -> Path:
    return directory / f"{hardware_key}.json"


#: The folder, inside the baseline folder, of the sessions that baselines no longer hold.
SUPERSEDED = "superseded"
#: Superseded sessions kept per measurement by default, the newest (``--tpw-superseded``).
SUPERSEDED_KEEP = 20


def superseded_path(path: Path) -> Path:
    """Where the sessions that the baseline file ``path`` no longer holds are kept: those an
    accept replaced or a full history rotated out, for plots and ``pytest-tpw show``; no
    verdict reads them. The same format, in ``superseded/`` beside the file."""
    return path.parent / SUPERSEDED / path.name


def is_superseded(path: Path) -> bool:
    """Whether ``path`` is a file of superseded sessions (by where it lies)."""
    return path.parent.name == SUPERSEDED


def _readable(baseline: BaselineFile, key: str) -> list[StoredSession]:
    """``key``'s sessions, or none when its entry is damaged (it is being replaced)."""
    try:
        return list(baseline.sessions(key))
    except BaselineError:
        return []


# -- reading ------------------------------------------------------------------------------------


def _kind(path: Path) -> reading.Kind:
    """How a baseline file is named, and fixed, when it cannot be read."""
    return reading.Kind(
        "baseline file",
        BaselineError,
        "Remove it, or point --tpw-baseline-dir at another folder",
        f"Restore it from version control (git checkout -- {path}) or delete it and record "
        "again with --tpw-update. The file was left as it is",
    )


def _check_header(
    path: Path, header: Header, hardware_key: str | None, legacy: Sequence[str] = ()
) -> str:
    """Refuse a header that is not ours or not for ``hardware_key`` (None: whatever key the
    file holds) nor one of its ``legacy`` keys (a file renamed after the key's new form,
    still holding the old one); returns the file's hardware key."""
    if header.format != FORMAT:
        raise BaselineError(
            f'{path}: not a pytest-tpw baseline file (no "format": '
            f'"{FORMAT}"); move it out of the baseline folder'
        )
    schema = header.schema
    if type(schema) is not int or schema < 1:
        raise BaselineError(
            f"{path}: baseline file without a valid schema version "
            f"({shorten(schema)}). Restore it from version control (git "
            f"checkout -- {path}) or delete it and record again with "
            "--tpw-update"
        )
    if schema > SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: written by a newer pytest-tpw (schema {schema}, this one reads "
            f"{SCHEMA_VERSION}); upgrade: pip install -U pytest-tpw. The file is left as it is"
        )
    if not isinstance(header.hardware_key, str):
        raise BaselineError(f"{path}: a baseline file without a hardware key. {fix_hint(path)}")
    if (
        hardware_key is not None
        and header.hardware_key != hardware_key
        and header.hardware_key not in legacy
    ):
        raise BaselineError(
            f"{path}: holds baselines for hardware {shorten(header.hardware_key)}, but its name "
            f"says {hardware_key!r}; rename it after the hardware it was recorded on"
        )
    hardware = header.hardware
    check_no_duplicates(hardware, f'{path}: "hardware"', fix_hint(path))
    ok = isinstance(hardware, dict) and all(
        is_scalar(v) or (isinstance(v, list) and all(is_scalar(x) for x in v))
        for v in hardware.values()
    )
    if not ok:
        raise BaselineError(
            f'{path}: "hardware" must be an object of strings, numbers and '
            f"lists of them, not {shorten(hardware)}. {fix_hint(path)}"
        )
    return header.hardware_key


def load(
    path: Path,
    hardware_key: str | None,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    check: bool | None = None,
    legacy: Sequence[str] = (),
) -> BaselineFile | None:
    """Read and validate one baseline file; None when it does not exist. ``hardware_key``:
    the key its name says (None for a file named on the command line: the key it holds).
    ``legacy``: older forms of that key the file may still hold inside (renamed by hand
    from the old key's name, ``git mv``): it is read as ``hardware_key``'s, and the next
    write puts ``hardware_key`` in it.

    Raises :class:`BaselineError` naming the file and the fix when it is corrupt, from a
    newer schema, not a pytest-tpw baseline, for other hardware, not a regular file, larger
    than ``max_bytes`` or not UTF-8.

    ``check``: validate every measurement now (True), or each when first read (False:
    ``sessions(key)`` and ``measurements[key]`` may then raise :class:`BaselineError` for
    a damaged entry, naming it). None (the default): now for files up to
    :data:`CHECK_ALL_BELOW` bytes, on first read for larger ones. A file's layout (and so
    truncation or damage between entries) is always checked at load.
    """
    path = Path(path)
    data = reading.read_bytes(path, max_bytes, _kind(path))
    if data is None:
        return None
    reading.check_utf8(path, data, _kind(path))
    scanned = scan(data)
    if scanned is not None:
        header, raw = scanned
        key = _check_header(path, header, hardware_key, legacy)
        measurements = Measurements(path, raw)
        if check or (check is None and len(data) <= CHECK_ALL_BELOW):
            measurements.check()
        return BaselineFile(hardware_key or key, dict(header.hardware), measurements)
    try:
        doc = strict_loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise json_error(path, exc) from None
    return _parse(doc, path, hardware_key, legacy)


def _parse(
    data: Any, path: Path, hardware_key: str | None, legacy: Sequence[str] = ()
) -> BaselineFile:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(
            f'{path}: not a pytest-tpw baseline file (no "format": '
            f'"{FORMAT}"); move it out of the baseline folder'
        )
    file_key = _check_header(
        path,
        Header(
            data.get("format"),
            data.get("hardware") or {},
            data.get("hardware_key"),
            data.get("schema"),
        ),
        hardware_key,
        legacy,
    )
    check_no_duplicates(data, f"{path}: top level", fix_hint(path))
    unknown = sorted(set(data) - {"format", "hardware", "hardware_key", "measurements", "schema"})
    if unknown:
        raise BaselineError(
            f"{path}: unknown top-level field {shorten(unknown[0])}. {fix_hint(path)}"
        )
    measurements = data.get("measurements")
    if not isinstance(measurements, dict):
        raise BaselineError(f'{path}: "measurements" must be an object. {fix_hint(path)}')
    check_no_duplicates(measurements, f'{path}: "measurements"', fix_hint(path))
    parsed: dict[str, list[StoredSession]] = {}
    for key, entry in measurements.items():
        sessions = entry.get("sessions") if isinstance(entry, dict) else None
        if not isinstance(sessions, list) or set(entry) != {"sessions"}:
            raise BaselineError(
                f"{path}: measurement {key!r} must be an object with just a "
                f'"sessions" list. {fix_hint(path)}'
            )
        check_no_duplicates(entry, f"{path}: measurement {key!r}", fix_hint(path))
        parsed[key] = [
            StoredSession.from_json(s, f"{path}: measurement {key!r}, session {i}")
            for i, s in enumerate(sessions, 1)
        ]
    return BaselineFile(hardware_key or file_key, dict(data.get("hardware") or {}), parsed)


# -- writing ------------------------------------------------------------------------------------


def dumps(baseline: BaselineFile) -> str:
    """Deterministic text: sorted keys, two-space structure, one session per line."""
    if isinstance(baseline.measurements, Measurements):
        baseline.measurements.check()
    return b"".join(chunks(baseline)).decode("utf-8")


def write(path: Path, baseline: BaselineFile) -> None:
    """Write atomically (through a symlink); :class:`files.OutputWriteError` on failure."""
    if isinstance(baseline.measurements, Measurements):
        baseline.measurements.check()  # never write out an unchecked damaged entry
    atomic_write_chunks(path, chunks(baseline))


def lock_path(path: Path) -> Path:
    """What serialises writes of ``path``: the folder of the (resolved) file."""
    return resolved(Path(path)).parent


class _WriteLock:
    """An exclusive ``flock`` on the folder of the (resolved) baseline file."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = lock_path(path)
        self.timeout_s = timeout_s
        self.fd = -1

    def __enter__(self) -> _WriteLock:
        try:
            make_folder(self.path)
            # a folder can be flock'ed through a read-only descriptor: whoever may write
            # the baselines may lock them, and no lock file appears beside them
            self.fd = os.open(
                self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
            )
        except OSError as exc:
            raise write_error(self.path, exc, "open the folder to lock it") from exc
        if fcntl is None:  # pragma: no cover - Windows
            return self
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise BaselineError(
                        f"{self.path}: another run has been writing this baseline for "
                        f"{self.timeout_s:.0f} s; nothing was written. Wait for it to finish "
                        "(or stop it) and run again"
                    ) from None
                time.sleep(0.02)
            except OSError as exc:
                os.close(self.fd)
                raise write_error(self.path, exc, "lock") from exc

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


#: A temp file this old (seconds) is stale: its writer died (a live write takes seconds).
STALE_TEMP_S = 60.0


def remove_stale_temps(path: Path, min_age_s: float = STALE_TEMP_S) -> list[str]:
    """Remove temp files a killed writer of ``path`` left; returns their names.

    Call only holding the file's lock (every writer of this version holds it while its temp
    file exists). Only our own names (``.<name>.<8 chars>.tmp``), only regular files, and
    only those unmodified for ``min_age_s``: a writer that does not lock (an older version)
    keeps its temp file.
    """
    target = resolved(Path(path))
    pattern = re.compile(
        re.escape(temp_prefix(target)) + r"[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX)
    )
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        if not (pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < min_age_s:
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            pass
    return sorted(removed)


def flush(
    path: Path,
    hardware_key: str,
    hardware: Mapping[str, Any],
    updates: Mapping[str, StoredSession],
    history: int,
    mode: BaselineMode,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    superseded: int = SUPERSEDED_KEEP,
    legacy: Sequence[tuple[str, Path]] = (),
) -> list[str]:
    """Merge this session's updates into the file as it is on disk now, atomically.

    ``legacy``: older forms of ``hardware_key`` with the files named after them. A file at
    ``path`` may hold one of those keys (renamed by hand); when there is no file at ``path``
    the first legacy file that exists is its start: every measurement it holds is carried
    into the new file (written even when this session adds nothing), and the legacy file
    is left as it is, for other machines that shared its key.

    Holds a lock on the folder across re-read, merge and replace, so that concurrent writers all
    land; removes stale temp files of killed writers; writes through a symlink. ``mode`` as
    in :meth:`BaselineFile.merge`; the sessions it drops go to :func:`superseded_path`, the
    newest ``superseded`` of each measurement kept there (0: none). Returns the keys
    written. A file that cannot be parsed is never overwritten (:class:`BaselineError`);
    a failed write is :class:`files.OutputWriteError` naming the path and the cause.
    """
    if not updates:
        return []
    target = resolved(Path(path))
    with _WriteLock(target, lock_timeout_s):
        remove_stale_temps(target)
        # unchecked here: what is kept is checked by merge/write, what is replaced never read
        old_keys = [key for key, _ in legacy]
        current = load(target, hardware_key, max_bytes=max_bytes, check=False, legacy=old_keys)
        carried = False
        if current is None:
            current = _carried(legacy, hardware_key, max_bytes)
            carried = current is not None
        if current is None:
            current = BaselineFile(hardware_key)
        dropped: Dropped = {}
        written = current.merge(updates, history, mode, dropped if superseded > 0 else None)
        if written or carried:
            if dropped:
                # first: a crash between the two writes keeps a session twice, never loses it
                _keep_superseded(target, hardware_key, hardware, dropped, superseded, max_bytes)
            current.hardware = dict(hardware)
            write(target, current)
    return written


def _carried(
    legacy: Sequence[tuple[str, Path]], hardware_key: str, max_bytes: int
) -> BaselineFile | None:
    """The first legacy file that exists, read as ``hardware_key``'s (its measurements are
    carried into the new file), or None."""
    for key, path in legacy:
        found = load(path, key, max_bytes=max_bytes, check=False)
        if found is not None:
            found.hardware_key = hardware_key
            return found
    return None


def _keep_superseded(
    target: Path,
    hardware_key: str,
    hardware: Mapping[str, Any],
    dropped: Dropped,
    keep: int,
    max_bytes: int,
) -> None:
    """Add the sessions a write drops to the superseded file (holding the folder's lock),
    as bytes: an accept of 10,000 tests parses none of their old sessions."""
    path = superseded_path(target)
    try:
        make_folder(path.parent)
    except OSError as exc:
        raise write_error(path.parent, exc, "create the folder of superseded sessions") from exc
    remove_stale_temps(path)
    kept = load(path, hardware_key, max_bytes=max_bytes, check=False) or BaselineFile(
        hardware_key, {}, Measurements(path)
    )
    for key, lines in sorted(dropped.items()):
        kept.append_lines(key, lines, keep)
    kept.hardware = dict(hardware)
    write(path, kept)


def other_hardware(directory: Path, hardware_key: str) -> list[str]:
    """Hardware keys that have baseline files here, other than this machine's."""
    if not directory.is_dir():
        return []
    return sorted(
        p.stem
        for p in directory.glob("*.json")
        if p.stem != hardware_key and not p.name.startswith(".")
    )


def pooled(sessions: Sequence[StoredSession]) -> list[float]:
    return [v for s in sessions for v in s.values()]


#: The stack entries of the measured devices' settings (``pytest_tpw.host.fingerprint``
#: records them under these names): compared whatever ``keys`` a caller names, so that a
#: changed power limit or clocks policy is a stack change wherever stacks are compared.
#: Compared only when both stacks hold them: a session recorded before they were (or by a
#: sensor that cannot read them) says nothing about them.
DEVICE_SETTINGS = ("power_limit_w", "clocks_policy")


def stack_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str] | None = None
) -> list[str]:
    """``["driver 550.54 -> 560.28", ...]``: what differs between two software stacks
    (``keys`` and the devices' settings, :data:`DEVICE_SETTINGS`; every key when None)."""
    if keys is None:
        names = sorted(set(old) | set(new))
    else:
        names = list(keys)
        names += [k for k in DEVICE_SETTINGS if k not in names]
    return [
        f"{k} {old.get(k)} -> {new.get(k)}"
        for k in names
        if old.get(k) != new.get(k)
        and (k not in DEVICE_SETTINGS or (old.get(k) is not None and new.get(k) is not None))
    ]


__all__ = [
    "DEVICE_SETTINGS",
    "FORMAT",
    "SCHEMA_VERSION",
    "SUPERSEDED",
    "SUPERSEDED_KEEP",
    "BaselineError",
    "BaselineFile",
    "Measurements",
    "StoredSession",
    "dumps",
    "flush",
    "is_superseded",
    "load",
    "lock_path",
    "other_hardware",
    "path_for",
    "pooled",
    "remove_stale_temps",
    "stack_changes",
    "superseded_path",
    "write",
]
