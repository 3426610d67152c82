"""Turn a ``--tpw-json`` results document into the JSON that benchmark dashboards ingest.

Two formats, both plain text from plain data (the results document as it is on disk):

- ``bencher``: Bencher Metric Format (BMF), ``{benchmark: {measure: {value, lower_value,
  upper_value}}}``, for ``bencher run --adapter json --file OUT``. Measures:
  ``tokens-per-joule`` and ``joules-per-token`` with the summary interval as bounds, and
  ``watts`` (value only). :func:`bencher_testbed` gives the hardware key as the testbed, so
  that different machines never share one history:
  ``bencher run --testbed "$(pytest-tpw export --testbed results.json)" ...``.
- ``github-action-benchmark``: the ``customBiggerIsBetter`` input of
  benchmark-action/github-action-benchmark, a list of ``{name, unit, value, range, extra}``
  (every value there is bigger-is-better: a load's latencies are lines of ``extra``).

Measurements without a summary (no samples) or with non-finite numbers are left out: both
consumers reject NaN, and an empty measurement has nothing to chart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from pytest_tpw.config.options import EXPORT_FORMATS
from pytest_tpw.errors import TpwError
from pytest_tpw.present.loadtext import latency_text, shape_text

#: The export formats, as ``--format`` and ``--tpw-export FORMAT=PATH`` spell them.
FORMATS: tuple[str, ...] = EXPORT_FORMATS
BENCHER, GITHUB_ACTION_BENCHMARK = FORMATS

#: BMF measure slugs (Bencher creates a measure the first time it sees its slug).
TOKENS_PER_JOULE = "tokens-per-joule"
JOULES_PER_TOKEN = "joules-per-token"
WATTS = "watts"
#: A load measurement's latencies, as BMF measures ``<name>-p50`` ... ``<name>-p99`` (s).
LATENCY_MEASURES = ("ttft", "tpot", "e2e")
FAILED_REQUESTS = "failed-requests"


class ExportError(TpwError, ValueError):
    """An export cannot be made: unknown format, or a document that is not a results file."""


def render(doc: Mapping[str, Any], fmt: str) -> str:
    """The export of ``doc`` in format ``fmt`` (one of :data:`FORMATS`), as JSON text."""
    if fmt == BENCHER:
        data: Any = bencher(doc)
    elif fmt == GITHUB_ACTION_BENCHMARK:
        data = github_action_benchmark(doc)
    else:
        raise ExportError(f"unknown export format {fmt!r}; choose one of: " + ", ".join(FORMATS))
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def bencher(doc: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format: benchmark name -> measure slug -> value and optional bounds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, summary in _summaries(doc):
        level = _finite(summary.get("tokens_per_joule"))
        if level is None or level <= 0:
            continue
        measures: dict[str, dict[str, float]] = {}
        lo, hi = _interval(summary)
        tpj: dict[str, float] = {"value": level}
        jpt: dict[str, float] = {"value": _finite(summary.get("joules_per_token")) or 1 / level}
        if lo is not None and hi is not None:
            tpj.update(lower_value=lo, upper_value=hi)
            # joules per token is the reciprocal: the bounds swap
            jpt.update(lower_value=1 / hi, upper_value=1 / lo)
        measures[TOKENS_PER_JOULE] = tpj
        measures[JOULES_PER_TOKEN] = jpt
        watts = _finite(summary.get("watts"))
        if watts is not None:
            measures[WATTS] = {"value": watts}
        measures.update(_load_measures(doc["measurements"][key]))
        out[key] = measures
    return out


def _load_measures(entry: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A load measurement's latencies (``ttft-p90``... in seconds) and failed requests."""
    out: dict[str, dict[str, float]] = {}
    latency = entry.get("latency")
    if isinstance(latency, Mapping):
        for name in LATENCY_MEASURES:
            block = latency.get(f"{name}_s")
            if not isinstance(block, Mapping):
                continue
            for pct in ("p50", "p90", "p99"):
                value = _finite(block.get(pct))
                if value is not None:
                    out[f"{name}-{pct}"] = {"value": value}
    load = entry.get("load")
    if isinstance(load, Mapping):
        errors = _finite(load.get("errors"))
        if errors is not None:
            out[FAILED_REQUESTS] = {"value": errors}
    return out


def _load_extra(entry: Mapping[str, Any]) -> list[str]:
    """A load measurement's lines in github-action-benchmark's ``extra`` (its values must
    all be bigger-is-better, so latencies go in the text)."""
    load, latency = entry.get("load"), entry.get("latency")
    if not isinstance(load, Mapping):
        return []
    lines = [f"load: {shape_text(load)}, {load.get('errors')} of {load.get('requests')} failed"]
    if isinstance(latency, Mapping):
        lines.append(latency_text(latency))
    return lines


def bencher_testbed(doc: Mapping[str, Any]) -> str:
    """The Bencher testbed for this document: its hardware key (``unknown`` when absent)."""
    env = doc.get("environment")
    key = env.get("hardware_key") if isinstance(env, Mapping) else None
    return str(key) if key else "unknown"


def github_action_benchmark(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``customBiggerIsBetter`` entries: name, unit, value, ``± half-width`` range, extra."""
    env = doc.get("environment") if isinstance(doc.get("environment"), Mapping) else {}
    assert isinstance(env, Mapping)
    env_sensor = env.get("sensor") if isinstance(env.get("sensor"), Mapping) else {}
    assert isinstance(env_sensor, Mapping)
    hardware = bencher_testbed(doc)
    out: list[dict[str, Any]] = []
    for key, summary in _summaries(doc):
        level = _finite(summary.get("tokens_per_joule"))
        if level is None or level <= 0:
            continue
        entry = doc["measurements"][key]
        item: dict[str, Any] = {"name": key, "unit": "tokens/J", "value": level}
        lo, hi = _interval(summary)
        if lo is not None and hi is not None:
            item["range"] = f"± {_sig((hi - lo) / 2)}"
        verdict = entry.get("verdict") or "-"
        sensor = entry.get("sensor") or env_sensor.get("name") or "?"
        provenance = entry.get("provenance") or env_sensor.get("provenance") or "?"
        item["extra"] = "\n".join(
            [
                f"verdict: {verdict}",
                f"n: {summary.get('n', '?')}",
                f"sensor: {sensor} (joules {provenance})",
                f"hardware: {hardware}",
                *_load_extra(entry),
            ]
        )
        out.append(item)
    return out


# -- reading the document --------------------------------------------------------------------


def _summaries(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    measurements = doc.get("measurements")
    if not isinstance(measurements, Mapping):
        raise ExportError(
            'not a pytest-tpw results document: no "measurements" object '
            "(write one with pytest --tpw --tpw-json PATH)"
        )
    for key in sorted(measurements):
        entry = measurements[key]
        summary = entry.get("summary") if isinstance(entry, Mapping) else None
        if isinstance(summary, Mapping):
            yield str(key), summary


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _interval(summary: Mapping[str, Any]) -> tuple[float | None, float | None]:
    ci = summary.get("ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return None, None
    lo, hi = _finite(ci[0]), _finite(ci[1])
    if lo is None or hi is None or not 0 < lo <= hi:
        return None, None
    return lo, hi


def _sig(x: float) -> str:
    """Four significant digits, never in exponent form (the range is read by people)."""
    text = f"{x:.4g}"
    if "e" not in text:
        return text
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}" if x else "0"
