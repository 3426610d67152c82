"""Results files (``--tpw-json``), read as the baseline store reads baselines: safely and checked.

:func:`read` takes any JSON file the command line is given through the one safe reader
(:mod:`pytest_tpw.store.reading`): no special files, a size limit, UTF-8, strict JSON, a
depth limit. :func:`load` checks that it is a results document; :func:`samples` validates a
measurement's windows (positive whole tokens, finite positive joules and seconds) before
any arithmetic sees them; :func:`in_run_order` gives the measurements in the order the run
took them. Each refusal is a :class:`ResultsError` naming the file, the measurement and the
field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_tpw.errors import TpwError
from pytest_tpw.store import reading
from pytest_tpw.store.layout import FORMAT
from pytest_tpw.store.sessions import MAX_TOKENS, MIN_VALUE, strict_loads

#: The results document's schema, written by :mod:`pytest_tpw.present.document`.
RESULTS_SCHEMA = 1
#: Larger files are refused before being read.
MAX_RESULTS_BYTES = 512 * 2**20
WRITE_ONE = "write one with pytest --tpw --tpw-json PATH"


class ResultsError(TpwError):
    """A file given to the command cannot be used; the message names it and what to do."""


_KIND = reading.Kind(
    "file",
    ResultsError,
    f"Name a results file ({WRITE_ONE}) or a baseline file (.tpw/KEY.json)",
    f"Name a results file ({WRITE_ONE}) or a baseline file (.tpw/KEY.json)",
)


def read(path: Path, max_bytes: int = MAX_RESULTS_BYTES) -> Any:
    """Any JSON file given on the command line, parsed strictly; a :class:`ResultsError`
    names it when it is missing, special, too large, not UTF-8, not JSON or too deep."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{path}: a folder; name a file")
    data = reading.read_bytes(path, max_bytes, _KIND)
    if data is None:
        raise ResultsError(f"{path}: no such file")
    reading.check_utf8(path, data, _KIND)
    try:
        return strict_loads(data)
    except RecursionError:
        raise ResultsError(f"{path}: nested too deeply to be a pytest-tpw file") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not readable as JSON ({exc})") from None


def is_baseline(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def looks_like_baseline(path: Path) -> bool:
    """True when the file's first bytes mark it as a baseline file (as this package writes
    them): it is then read by the baseline store's fast path, never parsed whole here."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{path}: a folder; name a file")
    start = reading.head(path, 4096, _KIND)
    if start is None:
        raise ResultsError(f"{path}: no such file")
    return b'"format": "' + FORMAT.encode() + b'"' in start


def load(path: Path) -> dict[str, Any]:
    """A ``--tpw-json`` document, checked enough to be read: an object with a known schema
    and an object of measurements, each an object."""
    doc = read(path)
    return check(doc, path)


def check(doc: Any, path: Path) -> dict[str, Any]:
    """``doc`` as a results document, or a :class:`ResultsError` saying what it is not."""
    if is_baseline(doc):
        raise ResultsError(
            f"{path}: a baseline file, not a results file; this command needs the file "
            "pytest --tpw --tpw-json PATH writes"
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("measurements"), dict):
        raise ResultsError(f"{path}: not a pytest-tpw result file ({WRITE_ONE})")
    schema = doc.get("schema")
    if type(schema) is not int or not 1 <= schema <= RESULTS_SCHEMA:
        raise ResultsError(
            f"{path}: results schema {schema!r}; this pytest-tpw reads schema "
            f"{RESULTS_SCHEMA} (write the file again with this version, or upgrade: "
            "pip install -U pytest-tpw)"
        )
    for key, entry in doc["measurements"].items():
        if not isinstance(entry, dict):
            raise ResultsError(f"{path}: measurement {key!r} must be an object")
    return doc


def mapping(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``doc[name]`` when it is an object, else empty."""
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    """A string field, or None for anything else."""
    return value if isinstance(value, str) else None


def samples(entry: Mapping[str, Any], where: str) -> list[tuple[int, float, float]]:
    """One measurement's windows as ``(tokens, joules, seconds)``, each checked."""
    raw = entry.get("samples")
    if not isinstance(raw, list) or not raw:
        raise ResultsError(f"{where}: no samples (a list of windows is needed)")
    out = []
    for i, sample in enumerate(raw, 1):
        if not isinstance(sample, dict):
            raise ResultsError(
                f"{where}: sample {i} must be an object, not {type(sample).__name__}"
            )
        tokens = sample.get("tokens")
        if type(tokens) is not int or not 1 <= tokens <= MAX_TOKENS:
            raise ResultsError(
                f"{where}: sample {i}: tokens must be a whole number from 1 to {MAX_TOKENS}, "
                f"not {tokens!r}"
            )
        values = []
        for name in ("joules", "seconds"):
            value = sample.get(name)
            number = math.nan
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            if not (math.isfinite(number) and number >= MIN_VALUE):
                raise ResultsError(
                    f"{where}: sample {i}: {name} must be a finite number >= {MIN_VALUE:g}, "
                    f"not {value!r}"
                )
            values.append(number)
        out.append((tokens, values[0], values[1]))
    return out


def in_run_order(doc: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The measurement keys in the order the run took them, and whether the document says
    so (files written before the order was recorded give name order)."""
    entries = doc["measurements"]
    orders = [entries[k].get("order") for k in entries]
    if all(type(o) is int for o in orders) and len(set(orders)) == len(orders):
        return sorted(entries, key=lambda k: entries[k]["order"]), True
    return sorted(entries), False
