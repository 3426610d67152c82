"""The canonical layout of a baseline file: one session a line, read and written as bytes.

A file in the layout :func:`chunks` writes is read without parsing its sessions
(:func:`scan`): each measurement's lines are checked against a strict pattern in one C-level
regex pass (lines that do not match are parsed and validated in full), and parsed only when
read (:class:`Measurements`); a write copies untouched measurements byte for byte. A file in
any other layout (reformatted by hand) is parsed and validated in full by
:mod:`pytest_tpw.store.baseline`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pytest_tpw.store.sessions import (
    BaselineError,
    Duplicated,
    StoredSession,
    json_error,
    strict_loads,
)

if TYPE_CHECKING:
    from pytest_tpw.store.baseline import BaselineFile

SCHEMA_VERSION = 1
#: Marks the file as ours, so that a stray JSON file in the folder is never taken for one.
FORMAT = "pytest-tpw baseline"

_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=False, separators=(", ", ": "))


def line(value: Any) -> str:
    return _ENCODER.encode(value)


def session_line(session: StoredSession) -> bytes:
    return b"        " + line(session.to_json()).encode()


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
#: keys in its software object (group 1), which :func:`lines_valid` checks apart.
_SESSION_RX = re.compile(
    _SESSION.replace(b'"software": ' + _SOFTWARE, b'"software": (' + _SOFTWARE + b")")
)


def lines_valid(buf: bytes, start: int, end: int, software_seen: set[bytes]) -> bool:
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
            if isinstance(strict_loads(software), Duplicated):
                return False
            software_seen.add(software)
        pos = m.end()
        if pos == end:
            return True
        if not buf.startswith(b",\n", pos):
            return False
        pos += 2


TERM = b"\n      ]\n    }"


class Raw(NamedTuple):
    """A measurement's session lines, still as bytes: ``buf[start:end]``."""

    buf: bytes
    start: int
    end: int
    checked: bool  # known valid: one valid session a line (lines_valid)

    def n_sessions(self) -> int:
        return self.buf.count(b"\n", self.start, self.end) + 1 if self.end > self.start else 0


def parse_region(path: Path, key: str, raw: Raw) -> list[StoredSession]:
    where = f"measurement {key!r}:"
    try:
        data = strict_loads(b"[" + raw.buf[raw.start : raw.end] + b"]")
    except (ValueError, RecursionError) as exc:
        raise json_error(path, exc, where) from None
    return [
        StoredSession.from_json(s, f"{path}: measurement {key!r}, session {i}")
        for i, s in enumerate(data, 1)
    ]


def known_valid(data: Any) -> StoredSession:
    """A session from one line that :func:`lines_valid` accepted (so every field is there
    and of its type, every number in range)."""
    return StoredSession(
        date=data["date"],
        commit=data["commit"],
        software=data["software"],
        sensor=data["sensor"],
        provenance=data["provenance"],
        samples=[(t, j, sec) for t, j, sec in data["samples"]],
    )


class Measurements(MutableMapping[str, list[StoredSession]]):
    """Measurement key -> sessions, parsing a measurement's lines the first time it is read.

    Reading a damaged entry raises :class:`BaselineError` naming the file and measurement.
    """

    def __init__(self, path: Path, raw: dict[str, Raw] | None = None) -> None:
        self.path = path
        self._raw: dict[str, Raw] = raw or {}
        self._parsed: dict[str, list[StoredSession]] = {}
        #: Software objects already checked for duplicate keys (:func:`lines_valid`).
        self._software_seen: set[bytes] = set()

    def __getitem__(self, key: str) -> list[StoredSession]:
        if key in self._parsed:
            return self._parsed[key]
        raw = self._raw[key]
        if raw.end > raw.start and (
            raw.checked or lines_valid(raw.buf, raw.start, raw.end, self._software_seen)
        ):
            # the strict pattern proved every line valid: plain JSON, no field-by-field checks
            sessions = [
                known_valid(data) for data in json.loads(b"[" + raw.buf[raw.start : raw.end] + b"]")
            ]
        else:
            sessions = parse_region(self.path, key, raw)
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

    def raw(self, key: str) -> Raw | None:
        return self._raw.get(key)

    def newest(self, key: str) -> StoredSession | None:
        """``key``'s newest session; an unread entry has only its last line parsed (and
        validated), unless its lines are not one session each (then all of it)."""
        raw = self._raw.get(key)
        if raw is None:
            sessions = self[key]
            return sessions[-1] if sessions else None
        if raw.end == raw.start:
            return None
        start = raw.buf.rfind(b"\n", raw.start, raw.end) + 1 or raw.start
        if lines_valid(raw.buf, start, raw.end, self._software_seen):
            # the strict pattern proved it valid: plain JSON, no field-by-field checks
            return known_valid(json.loads(raw.buf[start : raw.end]))
        try:
            (last,) = parse_region(self.path, key, Raw(raw.buf, start, raw.end, False))
        except (BaselineError, ValueError):  # not one session a line: read the entry whole
            sessions = self[key]
            return sessions[-1] if sessions else None
        return last

    def set_raw(self, key: str, raw: Raw) -> None:
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
            if raw.end == raw.start or lines_valid(raw.buf, raw.start, raw.end, software_seen):
                self._raw[key] = raw._replace(checked=True)
            else:
                self[key]  # parse and validate in full; raises naming the measurement


def session_count(measurements: Mapping[str, list[StoredSession]], key: str) -> int:
    if isinstance(measurements, Measurements):
        return measurements.count(key)
    return len(measurements.get(key, []))


class Header(NamedTuple):
    format: Any
    hardware: Any
    hardware_key: Any
    schema: Any


def scan(data: bytes) -> tuple[Header, dict[str, Raw]] | None:
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
        return strict_loads(line[len(prefix) : len(line) - comma])

    try:
        if take() != b"{":
            return None
        fmt = value(b'  "format": ', True)
        hardware = value(b'  "hardware": ', True)
        hardware_key = value(b'  "hardware_key": ', True)
        if take() != b'  "measurements": {':
            return None
        raw: dict[str, Raw] = {}
        line = take()
        while line != b"  },":
            if line is None or not (line.startswith(b'    "') and line.endswith(b'": {')):
                return None
            key = strict_loads(line[4:-3])
            if not isinstance(key, str) or key in raw:
                return None  # the full parse names the problem
            if take() != b'      "sessions": [':
                return None
            term = data.find(TERM, pos)
            if term < 0:
                return None
            raw[key] = Raw(data, pos, term, checked=False)
            pos = term + len(TERM)
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
    return Header(fmt, hardware, hardware_key, schema), raw


def chunks(baseline: BaselineFile) -> Iterator[bytes | memoryview]:
    yield (
        f'{{\n  "format": {line(FORMAT)},\n  "hardware": {line(baseline.hardware)},\n'
        f'  "hardware_key": {line(baseline.hardware_key)},\n  "measurements": {{\n'
    ).encode()
    measurements = baseline.measurements
    lazy = measurements if isinstance(measurements, Measurements) else None
    keys = sorted(measurements)
    for i, key in enumerate(keys):
        yield f'    {line(key)}: {{\n      "sessions": [\n'.encode()
        raw = lazy.raw(key) if lazy is not None else None
        if raw is not None:
            yield memoryview(raw.buf)[raw.start : raw.end]
        else:
            yield b",\n".join(session_line(s) for s in measurements[key])
        yield TERM + (b",\n" if i < len(keys) - 1 else b"\n")
    yield f'  }},\n  "schema": {SCHEMA_VERSION}\n}}\n'.encode()
