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
from pytest_tpw.verdict import Verdict

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
        _check_entry(entry, f"{path}: measurement {key!r}")
    findings = doc.get("run_wide")
    if findings is not None and not (
        isinstance(findings, list) and all(isinstance(f, dict) for f in findings)
    ):
        raise ResultsError(f"{path}: run_wide must be a list of objects")
    for f in findings or []:
        for name in ("stack_changes", "suspects", "notes"):
            value = f.get(name)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise ResultsError(f"{path}: run_wide {name} must be a list of strings")
    return doc


#: The verdicts a results document may hold.
VERDICTS = frozenset(v.value for v in Verdict)


def _number(value: Any, where: str, name: str, *, zero: bool = False) -> None:
    """``value`` is null, or a finite number > 0 (>= 0 with ``zero``)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    if not (math.isfinite(number) and (number >= 0 if zero else number > 0)):
        rule = ">= 0" if zero else "> 0"
        raise ResultsError(f"{where}: {name} must be a finite number {rule}, not {value!r}")


#: The ``load`` block's counts and figures, as a command reads them.
LOAD_COUNTS = ("concurrency", "n_prompts", "max_tokens", "windows", "requests", "errors")
LOAD_FIGURES = (
    "rate",
    "steady_s",
    "achieved_concurrency",
    "achieved_rate",
    "gross_tokens_per_joule",
)
LOAD_TEXTS = ("prompts", "endpoint", "model", "cut_short", "first_error")
LATENCY_NAMES = ("ttft_s", "tpot_s", "e2e_s")
LATENCY_PERCENTILES = ("p50", "p90", "p99")


def _check_load(entry: Mapping[str, Any], where: str) -> None:
    """A load measurement's ``load`` and ``latency`` blocks."""
    load = entry.get("load")
    if load is not None:
        if not isinstance(load, dict):
            raise ResultsError(f"{where}: load must be an object")
        for name in LOAD_COUNTS:
            value = load.get(name)
            if value is not None and not (type(value) is int and value >= 0):
                raise ResultsError(
                    f"{where}: load.{name} must be a whole number >= 0, not {value!r}"
                )
        for name in LOAD_FIGURES:
            _number(load.get(name), where, f"load.{name}", zero=True)
        for name in LOAD_TEXTS:
            value = load.get(name)
            if value is not None and not isinstance(value, str):
                raise ResultsError(f"{where}: load.{name} must be text, not {value!r}")
        kinds = load.get("error_kinds")
        if kinds is not None and not (
            isinstance(kinds, dict) and all(type(n) is int and n >= 0 for n in kinds.values())
        ):
            raise ResultsError(f"{where}: load.error_kinds must map texts to counts")
    latency = entry.get("latency")
    if latency is None:
        return
    if not isinstance(latency, dict):
        raise ResultsError(f"{where}: latency must be an object")
    for name in LATENCY_NAMES:
        block = latency.get(name)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise ResultsError(f"{where}: latency.{name} must be an object")
        for pct in LATENCY_PERCENTILES:
            _number(block.get(pct), where, f"latency.{name}.{pct}", zero=True)


def _check_entry(entry: Mapping[str, Any], where: str) -> None:
    """Every value a command reads of one measurement: signs, types, ranges."""
    _check_load(entry, where)
    raw = entry.get("samples")
    if raw is not None and not isinstance(raw, list):
        raise ResultsError(f"{where}: samples must be a list")
    if raw:
        samples(entry, where)
    verdict = entry.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise ResultsError(
            f"{where}: verdict {verdict!r} is not one of {', '.join(sorted(VERDICTS))}"
        )
    for part, fields in (
        ("summary", ("tokens_per_joule", "joules_per_token", "watts", "tokens_per_second")),
        ("comparison", ("ratio", "baseline_tokens_per_joule")),
    ):
        section = entry.get(part)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ResultsError(f"{where}: {part} must be an object")
        for name in fields:
            _number(section.get(name), where, f"{part}.{name}")
        ci = section.get("ci")
        if ci is not None:
            if not (isinstance(ci, list) and len(ci) == 2):
                raise ResultsError(f"{where}: {part}.ci must be [low, high] or null")
            for bound in ci:
                _number(bound, where, f"{part}.ci")
        n = section.get("n")
        if n is not None and not (type(n) is int and n >= 0):
            raise ResultsError(f"{where}: {part}.n must be a whole number >= 0, not {n!r}")
        for name in ("p_regression", "p_adjusted"):
            value = section.get(name)
            if value is not None and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and 0.0 <= float(value) <= 1.0
            ):
                raise ResultsError(f"{where}: {part}.{name} must be in [0, 1], not {value!r}")
        verdict = section.get("verdict")
        if verdict is not None and verdict not in VERDICTS:
            raise ResultsError(f"{where}: {part}.verdict {verdict!r} is not a verdict")


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
