"""The baseline store: ``DIR/<hardware-key>.json`` files, loaded, validated, merged, written.

One file per hardware key. Inside: a schema version, the hardware, and per measurement the
last ``tpw_history`` sessions, each with its date, commit, software stack and raw samples
(tokens, joules, seconds per window). Formatting is deterministic and reviewable: sorted
keys, one session per line.

Hostile or damaged files are refused, never coerced: every value is checked (tokens a
positive int below 10**18, joules and seconds finite numbers >= 1e-12, strings where strings
belong, no duplicate keys, no NaN/Infinity, no oversized file, no FIFO/device/directory,
UTF-8 only). Every refusal is a :class:`BaselineError` naming the file, the measurement and
the field, saying what to do, and leaving the file as it is.

Writes (:func:`flush`) hold an exclusive ``flock`` on the baseline folder itself across
re-read, merge and atomic replace (a lock on the folder leaves no lock file to commit), so
concurrent runs all land; temp files of a killed writer are removed under that lock; a
symlinked baseline is written through to its target.

Scale: a file in the layout this module writes is read without parsing its sessions. Each
measurement's lines are checked against a strict pattern in one C-level regex pass (lines
that do not match are parsed and validated in full), and parsed only when read; a write
copies untouched measurements byte for byte. A file in any other layout (reformatted by
hand) is parsed and validated in full. Schema 1 is unchanged.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn

from pytest_tpw.errors import TpwError
from pytest_tpw.store.files import (
    TEMP_SUFFIX,
    atomic_write_chunks,
    make_folder,
    resolved,
    temp_prefix,
    write_error,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
#: Marks the file as ours, so that a stray JSON file in the folder is never taken for one.
FORMAT = "pytest-tpw baseline"
#: Larger files are refused before being read (``load(..., max_bytes=...)`` to change).
MAX_FILE_BYTES = 512 * 2**20
#: Tokens per window: a positive int below 10**18 (18 digits at most).
MAX_TOKENS = 10**18 - 1
#: Joules and seconds per window: finite, at least this (no sensor resolves less).
MIN_VALUE = 1e-12
#: Digits allowed in any JSON integer of the file (hostile 5000-digit numbers).
_MAX_INT_DIGITS = 19
#: Files up to this size are validated in full at load; larger ones per measurement on first
#: read (and in full before any write), so that a huge file loads in well under a second.
CHECK_ALL_BELOW = 32 * 2**20
#: How long a write waits for another run's write of the same file.
LOCK_TIMEOUT_S = 300.0

#: ``replace``: a measurement's history becomes this session (``--tpw-update``);
#: ``extend``: append this session, keep the last ``history`` (``--tpw-record``);
#: ``missing``: write only measurements that have no session yet (``--tpw-update-missing``).
Mode = Literal["replace", "extend", "missing"]
MODES: tuple[Mode, ...] = ("replace", "extend", "missing")

_SESSION_FIELDS = ("commit", "date", "provenance", "samples", "sensor", "software")


class BaselineError(TpwError):
    """A baseline file cannot be used; the message names the file and what to do."""


def _fix(path: object) -> str:
    return (
        f"Restore the file from version control (git checkout -- {path}), or delete this "
        "measurement's entry and record it again with --tpw-update. The file was left as "
        "it is"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- strict JSON --------------------------------------------------------------------------------


class _Bad:
    """What the strict parser puts where a number cannot be taken as it is written."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Duplicated(dict[str, Any]):
    """An object that had a key twice (the parser keeps the last value, we refuse it)."""

    duplicate = ""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    marked = _Duplicated(out)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _parse_int(text: str) -> int | _Bad:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        return _Bad(f"<an integer of {len(text.lstrip('-'))} digits>")
    return int(text)


def _strict_loads(text: str | bytes) -> Any:
    """``json.loads`` that never coerces: a duplicate key gives a :class:`_Duplicated`,
    NaN/Infinity and integers of more than 19 digits a :class:`_Bad`, which validation
    refuses with the field's name. Raises ValueError (syntax) or RecursionError.
    """
    return json.loads(
        text, object_pairs_hook=_no_duplicates, parse_int=_parse_int, parse_constant=_Bad
    )


def _check_no_duplicates(obj: object, where: str, fix: str) -> None:
    if isinstance(obj, _Duplicated):
        raise BaselineError(
            f"{where}: duplicate key {_short(obj.duplicate)} in one object "
            f"(JSON keeps only the last). {fix}"
        )


def _json_error(path: Path, exc: BaseException, where: str = "") -> BaselineError:
    where = f" {where}" if where else ""
    if isinstance(exc, json.JSONDecodeError):
        problem = f"invalid JSON at line {exc.lineno}: {exc.msg}"
    elif isinstance(exc, RecursionError):
        problem = "nested too deeply"
    else:
        problem = str(exc)
    return BaselineError(
        f"{path}:{where} corrupt baseline file ({problem}). Restore it from version control "
        f"(git checkout -- {path}) or delete it and record a new baseline with --tpw-update. "
        "The file was left as it is"
    )


# -- sessions -----------------------------------------------------------------------------------


def _round(x: float) -> float:
    """Nine significant digits: far below any sensor's resolution, and stable in diffs."""
    return float(f"{x:.9g}")


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


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
    def from_json(cls, data: Any, where: str) -> StoredSession:
        """Validate one session's JSON; ``where`` prefixes messages (file, measurement).

        Raises :class:`BaselineError` naming the field and what is wrong with it.
        """
        fix = _fix(where.split(": ")[0])

        def bad(what: str) -> NoReturn:
            raise BaselineError(f"{where}: {what}. {fix}")

        if not isinstance(data, dict):
            bad(f"malformed session: an object is needed, not {type(data).__name__}")
        _check_no_duplicates(data, f"{where}: malformed session", fix)
        for name in _SESSION_FIELDS:
            if name not in data:
                bad(f"malformed session: missing field {name!r}")
        unknown = sorted(set(data) - set(_SESSION_FIELDS))
        if unknown:
            bad(f"malformed session: unknown field {_short(unknown[0])}")
        for name in ("date", "sensor", "provenance"):
            if not isinstance(data[name], str):
                bad(f"malformed session: {name} must be a string, not {_short(data[name])}")
        if data["commit"] is not None and not isinstance(data["commit"], str):
            bad(f"malformed session: commit must be a string or null, not {_short(data['commit'])}")
        software = data["software"]
        if not isinstance(software, dict):
            bad(f"malformed session: software must be an object, not {_short(software)}")
        _check_no_duplicates(software, f"{where}: software", fix)
        for name, value in software.items():
            if not _is_scalar(value):
                bad(
                    f"malformed session: software {name!r} must be a string, number or null, "
                    f"not {_short(value)}"
                )
        raw = data["samples"]
        if not isinstance(raw, list) or not raw:
            bad(
                "a session needs samples with positive tokens and joules: samples must be a "
                "non-empty list"
            )
        samples: list[tuple[int, float, float]] = []
        for i, sample in enumerate(raw, 1):
            if not isinstance(sample, list) or len(sample) != 3:
                bad(
                    f"malformed session: sample {i} must be [tokens, joules, seconds], not "
                    f"{_short(sample)}"
                )
            tokens, joules, seconds = sample
            if type(tokens) is not int:
                bad(
                    f"sample {i}: tokens must be a whole number, not {_short(tokens)} (a "
                    "session needs positive tokens and joules)"
                )
            if not 1 <= tokens <= MAX_TOKENS:
                bad(
                    f"sample {i}: tokens {_short(tokens)} out of range 1..{MAX_TOKENS} (a "
                    "session needs positive tokens and joules)"
                )
            values = []
            for name, value in (("joules", joules), ("seconds", seconds)):
                if type(value) not in (int, float):
                    bad(f"sample {i}: {name} must be a number, not {_short(value)}")
                number = float(value)
                if not (math.isfinite(number) and number >= MIN_VALUE):
                    bad(
                        f"sample {i}: {name} {_short(value)} is not a finite number >= "
                        f"{MIN_VALUE:g} (a session needs positive tokens and joules)"
                    )
                values.append(number)
            samples.append((tokens, values[0], values[1]))
        return cls(
            date=data["date"],
            commit=data["commit"],
            software=dict(software),
            sensor=data["sensor"],
            provenance=data["provenance"],
            samples=samples,
        )


_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=False, separators=(", ", ": "))


def _line(value: Any) -> str:
    return _ENCODER.encode(value)


def _session_line(session: StoredSession) -> bytes:
    return b"        " + _line(session.to_json()).encode()


# -- the canonical layout, recognised without parsing sessions ---------------------------------

_STR = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
#: A float as ``repr`` writes it, finite and >= 1e-12 (so a match is always valid).
_NUM = (
    rb"(?:[1-9][0-9]{0,15}\.[0-9]{1,17}|0\.0{0,3}[1-9][0-9]{0,16}"
    rb"|[1-9](?:\.[0-9]{1,16})?e(?:\+[0-9]{2}|-(?:0[5-9]|1[0-2])))"
)
_SAMPLE = rb"\[[1-9][0-9]{0,17}, " + _NUM + rb", " + _NUM + rb"\]"
_SOFTWARE = (
    rb"\{(?:"
    + _STR
    + rb": (?:"
    + _STR
    + rb"|null)(?:, "
    + _STR
    + rb": (?:"
    + _STR
    + rb"|null))*)?\}"
)
_SESSION = (
    rb'        \{"commit": (?:null|'
    + _STR
    + rb'), "date": '
    + _STR
    + rb', "provenance": '
    + _STR
    + rb', "samples": \[(?:'
    + _SAMPLE
    + rb", )*"
    + _SAMPLE
    + rb'\], "sensor": '
    + _STR
    + rb', "software": '
    + _SOFTWARE
    + rb"\}"
)
#: One session line as this module writes it; a match is a valid session, but for duplicate
#: keys in its software object (group 1), which :func:`_lines_valid` checks apart.
_SESSION_RX = re.compile(
    _SESSION.replace(b'"software": ' + _SOFTWARE, b'"software": (' + _SOFTWARE + b")")
)


def _lines_valid(buf: bytes, start: int, end: int, software_seen: set[bytes]) -> bool:
    """Whether ``buf[start:end]`` is one valid session a line, as this module writes them.

    False means "not known valid": the caller parses and validates those lines in full.
    """
    pos, match = start, _SESSION_RX.match
    while True:
        m = match(buf, pos, end)
        if m is None:
            return False
        software = m.group(1)
        if software not in software_seen:
            if isinstance(_strict_loads(software), _Duplicated):
                return False
            software_seen.add(software)
        pos = m.end()
        if pos == end:
            return True
        if not buf.startswith(b",\n", pos):
            return False
        pos += 2


_TERM = b"\n      ]\n    }"


class _Raw(NamedTuple):
    """A measurement's session lines, still as bytes: ``buf[start:end]``."""

    buf: bytes
    start: int
    end: int
    checked: bool  # known valid: one valid session a line (_lines_valid)

    def n_sessions(self) -> int:
        return self.buf.count(b"\n", self.start, self.end) + 1 if self.end > self.start else 0


def _parse_region(path: Path, key: str, raw: _Raw) -> list[StoredSession]:
    where = f"measurement {key!r}:"
    try:
        data = _strict_loads(b"[" + raw.buf[raw.start : raw.end] + b"]")
    except (ValueError, RecursionError) as exc:
        raise _json_error(path, exc, where) from None
    return [
        StoredSession.from_json(s, f"{path}: measurement {key!r}, session {i}")
        for i, s in enumerate(data, 1)
    ]


class Measurements(MutableMapping[str, list[StoredSession]]):
    """Measurement key -> sessions, parsing a measurement's lines the first time it is read.

    Reading a damaged entry raises :class:`BaselineError` naming the file and measurement.
    """

    def __init__(self, path: Path, raw: dict[str, _Raw] | None = None) -> None:
        self.path = path
        self._raw: dict[str, _Raw] = raw or {}
        self._parsed: dict[str, list[StoredSession]] = {}

    def __getitem__(self, key: str) -> list[StoredSession]:
        if key in self._parsed:
            return self._parsed[key]
        raw = self._raw[key]
        sessions = _parse_region(self.path, key, raw)
        del self._raw[key]
        self._parsed[key] = sessions
        return sessions

    def __setitem__(self, key: str, value: list[StoredSession]) -> None:
        self._raw.pop(key, None)
        self._parsed[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._raw:
            del self._raw[key]
        else:
            del self._parsed[key]

    def __contains__(self, key: object) -> bool:
        return key in self._parsed or key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter([*self._parsed, *self._raw])

    def __len__(self) -> int:
        return len(self._parsed) + len(self._raw)

    def count(self, key: str) -> int:
        """Sessions stored for ``key``, without parsing them."""
        if key in self._raw:
            return self._raw[key].n_sessions()
        return len(self._parsed.get(key, []))

    def raw(self, key: str) -> _Raw | None:
        return self._raw.get(key)

    def set_raw(self, key: str, raw: _Raw) -> None:
        self._parsed.pop(key, None)
        self._raw[key] = raw

    def check(self) -> None:
        """Make sure every entry still held as bytes is valid (parsing those that do not match
        the strict pattern); raises :class:`BaselineError` for the first invalid one."""
        software_seen: set[bytes] = set()
        for key in sorted(self._raw):
            raw = self._raw[key]
            if raw.checked:
                continue
            if raw.end == raw.start or _lines_valid(raw.buf, raw.start, raw.end, software_seen):
                self._raw[key] = raw._replace(checked=True)
            else:
                self[key]  # parse and validate in full; raises naming the measurement


def _session_count(measurements: Mapping[str, list[StoredSession]], key: str) -> int:
    if isinstance(measurements, Measurements):
        return measurements.count(key)
    return len(measurements.get(key, []))


@dataclass
class BaselineFile:
    """The contents of one ``<hardware-key>.json``."""

    hardware_key: str
    hardware: dict[str, Any] = field(default_factory=dict)
    measurements: MutableMapping[str, list[StoredSession]] = field(default_factory=dict)

    def sessions(self, key: str) -> list[StoredSession]:
        return self.measurements.get(key, [])

    def validate(self) -> None:
        """Parse and validate every measurement now (a lazily loaded file parses on use)."""
        for key in list(self.measurements):
            self.measurements[key]

    def merge(
        self,
        updates: Mapping[str, StoredSession],
        history: int,
        only_missing: bool | None = None,
        *,
        mode: Mode | None = None,
    ) -> list[str]:
        """Add this session's samples; returns the keys written, sorted.

        ``mode="replace"``: each measurement's history becomes this session.
        ``mode="extend"``: each gains this session and keeps its last ``history``.
        ``mode="missing"``: only measurements without sessions are written.
        The older ``only_missing`` flag means ``"missing"`` (True) or ``"extend"`` (False).
        """
        mode = _resolve_mode(mode, only_missing)
        history = max(1, int(history))
        written = []
        software_seen: set[bytes] = set()  # software objects already checked
        for key, session in sorted(updates.items()):
            count = _session_count(self.measurements, key)
            if mode == "missing" and count:
                continue
            if (
                mode == "extend"
                and count
                and self._extend_raw(key, session, history, software_seen)
            ):
                written.append(key)
                continue
            kept = [*self.sessions(key), session][-history:] if mode == "extend" else [session]
            self.measurements[key] = kept
            written.append(key)
        return written

    def _extend_raw(
        self, key: str, session: StoredSession, history: int, software_seen: set[bytes]
    ) -> bool:
        """Append ``session`` to an entry still held as bytes, without parsing it.

        Only the lines kept are checked (the oldest, rotated out, are dropped unread); False
        when they are not one valid session a line: the caller then parses the entry.
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
            raw.checked or _lines_valid(raw.buf, start, raw.end, software_seen)
        ):
            return False
        kept = raw.buf[start : raw.end]
        buf = kept + (b",\n" if kept else b"") + _session_line(session)
        self.measurements.set_raw(key, _Raw(buf, 0, len(buf), checked=True))
        return True


def _resolve_mode(mode: Mode | bool | None, only_missing: bool | None) -> Mode:
    if isinstance(mode, bool):  # the old positional only_missing
        only_missing, mode = mode, None
    if mode is None:
        return "missing" if only_missing else "extend"
    if mode not in MODES:
        raise ValueError(f"baseline write mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def path_for(directory: Path, hardware_key: str) -> Path:
    return directory / f"{hardware_key}.json"


# -- reading ------------------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> BaselineError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return BaselineError(
        f"{path}: the baseline file is {kind}, not a regular file; it was "
        "not opened. Remove it, or point --tpw-baseline-dir at another "
        "folder"
    )


def _too_big(path: Path, size: int, max_bytes: int) -> BaselineError:
    return BaselineError(
        f"{path}: the baseline file is {size} bytes, more than the limit of {max_bytes}; it "
        "was not read. A baseline this size is damaged or not ours: restore it from version "
        f"control (git checkout -- {path}) or delete it and record again with --tpw-update"
    )


def _read(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes; None when missing. Never opens a special file, never reads more
    than ``max_bytes``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline file: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    if st.st_size > max_bytes:
        raise _too_big(path, st.st_size, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline file: {exc}") from None
    try:
        st = os.fstat(fd)  # it may have been swapped since the stat
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        chunks = []
        total = 0
        want = min(st.st_size, max_bytes) + 1  # one read, one buffer: no copy to join
        while True:
            chunk = os.read(fd, min(max_bytes + 1 - total, want))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _too_big(path, total, max_bytes)
        return b"".join(chunks)
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline file: {exc}") from None
    finally:
        os.close(fd)


def _check_utf8(path: Path, data: bytes) -> None:
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BaselineError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, offset "
            f"{exc.start}); a baseline file is UTF-8 JSON. Restore it from version control "
            f"(git checkout -- {path}) or delete it and record again with --tpw-update. The "
            "file was left as it is"
        ) from None


class _Header(NamedTuple):
    format: Any
    hardware: Any
    hardware_key: Any
    schema: Any


def _scan(data: bytes) -> tuple[_Header, dict[str, _Raw]] | None:
    """The header and each measurement's session lines of a file in this module's exact
    layout, without parsing sessions; None for any other layout."""
    pos = 0

    def take() -> bytes | None:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        if pos > len(data):
            return None
        line, pos = data[pos:end], end + 1
        return line

    def value(prefix: bytes, comma: bool) -> Any:
        line = take()
        if line is None or not line.startswith(prefix) or line.endswith(b",") != comma:
            raise ValueError("layout")
        return _strict_loads(line[len(prefix) : len(line) - comma])

    try:
        if take() != b"{":
            return None
        fmt = value(b'  "format": ', True)
        hardware = value(b'  "hardware": ', True)
        hardware_key = value(b'  "hardware_key": ', True)
        if take() != b'  "measurements": {':
            return None
        raw: dict[str, _Raw] = {}
        line = take()
        while line != b"  },":
            if line is None or not (line.startswith(b'    "') and line.endswith(b'": {')):
                return None
            key = _strict_loads(line[4:-3])
            if not isinstance(key, str) or key in raw:
                return None  # the full parse names the problem
            if take() != b'      "sessions": [':
                return None
            term = data.find(_TERM, pos)
            if term < 0:
                return None
            raw[key] = _Raw(data, pos, term, checked=False)
            pos = term + len(_TERM)
            more = data.startswith(b",\n", pos)
            if not (more or data.startswith(b"\n", pos)):
                return None
            pos += 2 if more else 1
            line = take()
            if more == (line == b"  },"):
                return None
        schema = value(b'  "schema": ', False)
        if take() != b"}" or data[pos:] not in (b"", b"\n"):
            return None
    except (ValueError, RecursionError):
        return None
    return _Header(fmt, hardware, hardware_key, schema), raw


def _check_header(path: Path, header: _Header, hardware_key: str) -> None:
    if header.format != FORMAT:
        raise BaselineError(
            f'{path}: not a pytest-tpw baseline file (no "format": '
            f'"{FORMAT}"); move it out of the baseline folder'
        )
    schema = header.schema
    if type(schema) is not int or schema < 1:
        raise BaselineError(
            f"{path}: baseline file without a valid schema version "
            f"({_short(schema)}). Restore it from version control (git "
            f"checkout -- {path}) or delete it and record again with "
            "--tpw-update"
        )
    if schema > SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: written by a newer pytest-tpw (schema {schema}, this one reads "
            f"{SCHEMA_VERSION}); upgrade: pip install -U pytest-tpw. The file is left as it is"
        )
    if header.hardware_key != hardware_key:
        raise BaselineError(
            f"{path}: holds baselines for hardware {_short(header.hardware_key)}, but its name "
            f"says {hardware_key!r}; rename it after the hardware it was recorded on"
        )
    hardware = header.hardware
    _check_no_duplicates(hardware, f'{path}: "hardware"', _fix(path))
    ok = isinstance(hardware, dict) and all(
        _is_scalar(v) or (isinstance(v, list) and all(_is_scalar(x) for x in v))
        for v in hardware.values()
    )
    if not ok:
        raise BaselineError(
            f'{path}: "hardware" must be an object of strings, numbers and '
            f"lists of them, not {_short(hardware)}. {_fix(path)}"
        )


def load(
    path: Path, hardware_key: str, *, max_bytes: int = MAX_FILE_BYTES, check: bool | None = None
) -> BaselineFile | None:
    """Read and validate one baseline file; None when it does not exist.

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
    data = _read(path, max_bytes)
    if data is None:
        return None
    _check_utf8(path, data)
    scanned = _scan(data)
    if scanned is not None:
        header, raw = scanned
        _check_header(path, header, hardware_key)
        measurements = Measurements(path, raw)
        if check or (check is None and len(data) <= CHECK_ALL_BELOW):
            measurements.check()
        return BaselineFile(hardware_key, dict(header.hardware), measurements)
    try:
        doc = _strict_loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _json_error(path, exc) from None
    return _parse(doc, path, hardware_key)


def _parse(data: Any, path: Path, hardware_key: str) -> BaselineFile:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(
            f'{path}: not a pytest-tpw baseline file (no "format": '
            f'"{FORMAT}"); move it out of the baseline folder'
        )
    _check_header(
        path,
        _Header(
            data.get("format"),
            data.get("hardware") or {},
            data.get("hardware_key"),
            data.get("schema"),
        ),
        hardware_key,
    )
    _check_no_duplicates(data, f"{path}: top level", _fix(path))
    unknown = sorted(set(data) - {"format", "hardware", "hardware_key", "measurements", "schema"})
    if unknown:
        raise BaselineError(f"{path}: unknown top-level field {_short(unknown[0])}. {_fix(path)}")
    measurements = data.get("measurements")
    if not isinstance(measurements, dict):
        raise BaselineError(f'{path}: "measurements" must be an object. {_fix(path)}')
    _check_no_duplicates(measurements, f'{path}: "measurements"', _fix(path))
    parsed: dict[str, list[StoredSession]] = {}
    for key, entry in measurements.items():
        sessions = entry.get("sessions") if isinstance(entry, dict) else None
        if not isinstance(sessions, list) or set(entry) != {"sessions"}:
            raise BaselineError(
                f"{path}: measurement {key!r} must be an object with just a "
                f'"sessions" list. {_fix(path)}'
            )
        _check_no_duplicates(entry, f"{path}: measurement {key!r}", _fix(path))
        parsed[key] = [
            StoredSession.from_json(s, f"{path}: measurement {key!r}, session {i}")
            for i, s in enumerate(sessions, 1)
        ]
    return BaselineFile(hardware_key, dict(data.get("hardware") or {}), parsed)


# -- writing ------------------------------------------------------------------------------------


def _chunks(baseline: BaselineFile) -> Iterator[bytes | memoryview]:
    yield (
        f'{{\n  "format": {_line(FORMAT)},\n  "hardware": {_line(baseline.hardware)},\n'
        f'  "hardware_key": {_line(baseline.hardware_key)},\n  "measurements": {{\n'
    ).encode()
    measurements = baseline.measurements
    lazy = measurements if isinstance(measurements, Measurements) else None
    keys = sorted(measurements)
    for i, key in enumerate(keys):
        yield f'    {_line(key)}: {{\n      "sessions": [\n'.encode()
        raw = lazy.raw(key) if lazy is not None else None
        if raw is not None:
            yield memoryview(raw.buf)[raw.start : raw.end]
        else:
            yield b",\n".join(_session_line(s) for s in measurements[key])
        yield _TERM + (b",\n" if i < len(keys) - 1 else b"\n")
    yield f'  }},\n  "schema": {SCHEMA_VERSION}\n}}\n'.encode()


def dumps(baseline: BaselineFile) -> str:
    """Deterministic text: sorted keys, two-space structure, one session per line."""
    if isinstance(baseline.measurements, Measurements):
        baseline.measurements.check()
    return b"".join(_chunks(baseline)).decode("utf-8")


def write(path: Path, baseline: BaselineFile) -> None:
    """Write atomically (through a symlink); :class:`files.OutputWriteError` on failure."""
    if isinstance(baseline.measurements, Measurements):
        baseline.measurements.check()  # never write out an unchecked damaged entry
    atomic_write_chunks(path, _chunks(baseline))


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
    mode: Mode | bool | None = None,
    *,
    only_missing: bool | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> list[str]:
    """Merge this session's updates into the file as it is on disk now, atomically.

    Holds a lock on the folder across re-read, merge and replace, so that concurrent writers all
    land; removes stale temp files of killed writers; writes through a symlink. ``mode`` as
    in :meth:`BaselineFile.merge` (a bool is the older ``only_missing``). Returns the keys
    written. A file that cannot be parsed is never overwritten (:class:`BaselineError`);
    a failed write is :class:`files.OutputWriteError` naming the path and the cause.
    """
    resolved_mode = _resolve_mode(mode, only_missing)
    if not updates:
        return []
    target = resolved(Path(path))
    with _WriteLock(target, lock_timeout_s):
        remove_stale_temps(target)
        # unchecked here: what is kept is checked by merge/write, what is replaced never read
        current = load(target, hardware_key, max_bytes=max_bytes, check=False) or BaselineFile(
            hardware_key
        )
        written = current.merge(updates, history, mode=resolved_mode)
        if written:
            current.hardware = dict(hardware)
            write(target, current)
    return written


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


def stack_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str] | None = None
) -> list[str]:
    """``["driver 550.54 -> 560.28", ...]``: what differs between two software stacks."""
    names = sorted(set(old) | set(new)) if keys is None else list(keys)
    return [f"{k} {old.get(k)} -> {new.get(k)}" for k in names if old.get(k) != new.get(k)]


__all__ = [
    "MODES",
    "BaselineError",
    "BaselineFile",
    "Measurements",
    "Mode",
    "StoredSession",
    "dumps",
    "flush",
    "load",
    "lock_path",
    "other_hardware",
    "path_for",
    "pooled",
    "remove_stale_temps",
    "stack_changes",
    "write",
]
