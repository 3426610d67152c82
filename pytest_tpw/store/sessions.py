"""One stored session of one measurement, validated, and the strict JSON it is read with.

Hostile or damaged files are refused, never coerced: every value is checked (tokens a
positive int below 10**18, joules and seconds finite numbers >= 1e-12, strings where strings
belong, no duplicate keys, no NaN/Infinity, no integer of more than 19 digits). Every refusal
is a :class:`BaselineError` naming the file, the measurement and the field, and saying what
to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pytest_tpw.errors import TpwError

#: Tokens per window: a positive int below 10**18 (18 digits at most).
MAX_TOKENS = 10**18 - 1
#: Joules and seconds per window: finite, at least this (no sensor resolves less).
MIN_VALUE = 1e-12
#: Digits allowed in any JSON integer of the file (hostile 5000-digit numbers).
_MAX_INT_DIGITS = 19

_SESSION_FIELDS = ("commit", "date", "provenance", "samples", "sensor", "software")
#: Fields a session may hold besides those: ``load``, the shape of a load measurement's load.
_OPTIONAL_FIELDS = ("load",)


class BaselineError(TpwError):
    """A baseline file cannot be used; the message names the file and what to do."""


def fix_hint(path: object) -> str:
    return (
        f"Restore the file from version control (git checkout -- {path}), or delete this "
        "measurement's entry and record it again with --tpw-update. The file was left as "
        "it is"
    )


def shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- strict JSON --------------------------------------------------------------------------------


class Bad:
    """What the strict parser puts where a number cannot be taken as it is written."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Duplicated(dict[str, Any]):
    """An object that had a key twice (the parser keeps the last value, we refuse it)."""

    duplicate = ""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    marked = Duplicated(out)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _parse_int(text: str) -> int | Bad:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        return Bad(f"<an integer of {len(text.lstrip('-'))} digits>")
    return int(text)


def strict_loads(text: str | bytes) -> Any:
    """``json.loads`` that never coerces: a duplicate key gives a :class:`Duplicated`,
    NaN/Infinity and integers of more than 19 digits a :class:`Bad`, which validation
    refuses with the field's name. Raises ValueError (syntax) or RecursionError.
    """
    return json.loads(
        text, object_pairs_hook=_no_duplicates, parse_int=_parse_int, parse_constant=Bad
    )


def check_no_duplicates(obj: object, where: str, fix: str) -> None:
    if isinstance(obj, Duplicated):
        raise BaselineError(
            f"{where}: duplicate key {shorten(obj.duplicate)} in one object "
            f"(JSON keeps only the last). {fix}"
        )


def json_error(path: Path, exc: BaseException, where: str = "") -> BaselineError:
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


def round(x: float) -> float:
    """Nine significant digits: far below any sensor's resolution, and stable in diffs."""
    return float(f"{x:.9g}")


def is_scalar(value: object) -> bool:
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
    #: The load a ``tpw.load`` measurement ran under (concurrency or rate, prompts, output
    #: length, endpoint); None for any other measurement.
    load: dict[str, Any] | None = None

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
            "samples": [[t, round(j), round(s)] for t, j, s in self.samples],
            **({} if self.load is None else {"load": self.load}),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> StoredSession:
        """Validate one session's JSON; ``where`` prefixes messages (file, measurement).

        Raises :class:`BaselineError` naming the field and what is wrong with it.
        """
        fix = fix_hint(where.split(": ")[0])

        def bad(what: str) -> NoReturn:
            raise BaselineError(f"{where}: {what}. {fix}")

        if not isinstance(data, dict):
            bad(f"malformed session: an object is needed, not {type(data).__name__}")
        check_no_duplicates(data, f"{where}: malformed session", fix)
        for name in _SESSION_FIELDS:
            if name not in data:
                bad(f"malformed session: missing field {name!r}")
        unknown = sorted(set(data) - set(_SESSION_FIELDS) - set(_OPTIONAL_FIELDS))
        if unknown:
            bad(f"malformed session: unknown field {shorten(unknown[0])}")
        for name in ("date", "sensor", "provenance"):
            if not isinstance(data[name], str):
                bad(f"malformed session: {name} must be a string, not {shorten(data[name])}")
        if data["commit"] is not None and not isinstance(data["commit"], str):
            commit = shorten(data["commit"])
            bad(f"malformed session: commit must be a string or null, not {commit}")

        def scalars(label: str, value: Any) -> dict[str, Any]:
            """An object whose values are strings, numbers or null (software, load)."""
            if not isinstance(value, dict):
                bad(f"malformed session: {label} must be an object, not {shorten(value)}")
            check_no_duplicates(value, f"{where}: {label}", fix)
            for name, item in value.items():
                if not is_scalar(item):
                    bad(
                        f"malformed session: {label} {name!r} must be a string, number or "
                        f"null, not {shorten(item)}"
                    )
            return dict(value)

        software = scalars("software", data["software"])
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
                    f"{shorten(sample)}"
                )
            tokens, joules, seconds = sample
            if type(tokens) is not int:
                bad(
                    f"sample {i}: tokens must be a whole number, not {shorten(tokens)} (a "
                    "session needs positive tokens and joules)"
                )
            if not 1 <= tokens <= MAX_TOKENS:
                bad(
                    f"sample {i}: tokens {shorten(tokens)} out of range 1..{MAX_TOKENS} (a "
                    "session needs positive tokens and joules)"
                )
            values = []
            for name, value in (("joules", joules), ("seconds", seconds)):
                if type(value) not in (int, float):
                    bad(f"sample {i}: {name} must be a number, not {shorten(value)}")
                number = float(value)
                if not (math.isfinite(number) and number >= MIN_VALUE):
                    bad(
                        f"sample {i}: {name} {shorten(value)} is not a finite number >= "
                        f"{MIN_VALUE:g} (a session needs positive tokens and joules)"
                    )
                values.append(number)
            samples.append((tokens, values[0], values[1]))
        load = None if data.get("load") is None else scalars("load", data["load"])
        return cls(
            date=data["date"],
            commit=data["commit"],
            software=software,
            sensor=data["sensor"],
            provenance=data["provenance"],
            samples=samples,
            load=load,
        )
