"""The ``--tpw-json`` document: every sample, each summary and verdict, the environment.

Data only: :mod:`pytest_tpw.run.outputs` decides where it goes. Each compared measurement
carries the figures that decided its verdict (``comparison``), and each measurement what the
engine needs to judge it again offline (``order`` in the run, its ``tolerance``, ``rounds``
and ``canary`` role), so that ``pytest-tpw compare`` reaches the verdicts the run printed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_tpw.config.settings import Settings
from pytest_tpw.judging.judge import HardwareShare, Judgement
from pytest_tpw.measure.samples import Measurement, Result
from pytest_tpw.store.results import RESULTS_SCHEMA
from pytest_tpw.verdict import Verdict


def measurement_json(
    m: Measurement, result: Result | None, judgement: Judgement | None = None
) -> dict[str, Any]:
    verdict = (
        judgement.verdict
        if judgement is not None
        else (result.verdict if result is not None else Verdict.NO_BASELINE)
    )
    doc: dict[str, Any] = {
        "nodeid": m.nodeid,
        "name": m.name,
        "sensor": m.sensor,
        "provenance": m.provenance,
        "warmup": m.warmup,
        "verdict": verdict.value,
        "warnings": list(m.warnings),
        "samples": [s.to_dict() for s in m.samples],
    }
    if result is not None:
        doc["summary"] = {
            "tokens_per_joule": result.tokens_per_joule,
            "joules_per_token": result.joules_per_token,
            "watts": result.watts,
            "tokens_per_second": result.tokens_per_second,
            "n": result.n,
            "ci": list(result.ci) if result.ci else None,
        }
    if m.load is not None:
        doc["load"] = m.load.load_json()
        doc["latency"] = m.load.latency()
    if judgement is not None:
        doc["comparison"] = comparison_json(judgement)
    return doc


def json_document(
    measurements: Mapping[str, tuple[Measurement, Result | None]],
    judgements: Mapping[str, Judgement],
    environment: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``--tpw-json`` document: every sample, each summary and verdict, the environment."""
    return {
        "schema": RESULTS_SCHEMA,
        "environment": dict(environment),
        "settings": dict(settings),
        "measurements": {
            key: {**measurement_json(m, r, judgements.get(key)), "order": i}
            for i, (key, (m, r)) in enumerate(measurements.items())
        },
    }


def _finite(x: float | None) -> float | None:
    """NaN and infinities become null: JSON has no NaN."""
    return x if x is not None and math.isfinite(x) else None


def comparison_json(j: Judgement) -> dict[str, Any] | None:
    """The verdict engine's figures for one measurement, for ``--tpw-json``."""
    c = j.comparison
    out: dict[str, Any] = {
        "verdict": j.verdict.value,
        "baseline_tokens_per_joule": j.baseline_level,
        "tolerance": j.tolerance,
        "rounds": j.rounds,
        "canary": j.canary,
        "failures": list(j.failures),
        "notes": list(j.notes),
        "instrument_bound": j.instrument_bound,
    }
    if c is None:
        return out
    out.update(
        {
            "ratio": _finite(c.ratio),
            "ci": [c.ci_low, c.ci_high] if c.ci_low is not None else None,
            "p_regression": _finite(c.p_regression),
            "p_adjusted": c.p_adjusted,
            "n_baseline": c.n_baseline,
            "n_candidate": c.n_candidate,
            "baseline_sessions": c.n_sessions,
            "sigma_b": _finite(c.sigma_b),
            "shift": c.shift,
            "outliers": c.outliers,
            "why": c.why,
            "detectable_drop": j.detectable_drop,
            "too_noisy": j.too_noisy,
            "limited_by": j.limited_by,
        }
    )
    return out


def settings_json(settings: Settings) -> dict[str, Any]:
    """The session's settings as JSON holds them (paths as text, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(settings).items()}


def run_document(
    shares: Mapping[str, HardwareShare],
    own_key: str,
    environment: Mapping[str, Any],
    settings: Settings,
    idle_watts: float | None,
) -> dict[str, Any]:
    """The whole run's document: this process's hardware key first, each other key's
    measurements as ``<key>@<hardware key>``, the run-wide findings, net-of-idle figures."""
    own = shares[own_key]
    doc = json_document(
        own.measurements, own.judge.judgements, environment, settings_json(settings)
    )
    for share in shares.values():
        if share.key == own_key:
            continue
        for key, (m, r) in share.measurements.items():
            entry = measurement_json(m, r, share.judge.judgements.get(key))
            entry["order"] = len(doc["measurements"])
            doc["measurements"][f"{key}@{share.key}"] = {**entry, "hardware_key": share.key}
    findings = [s.judge.run_wide.to_json() for s in shares.values() if s.judge.run_wide]
    if findings:
        doc["run_wide"] = findings
    # the stored measurements each judge compared and learned its prior from (the run's
    # collected tests): what `pytest-tpw compare` needs to give the run's verdicts
    focused = {s.key: s.judge.focus_keys for s in shares.values() if s.judge.focus_keys}
    if focused:
        doc["prior_keys"] = focused
    if len(shares) > 1:
        doc["environment"]["hardware_keys"] = list(shares)
    if idle_watts is not None:
        for key, (m, _) in own.measurements.items():
            net = m.joules - idle_watts * m.seconds
            summary = doc["measurements"][key].get("summary")
            if summary is not None:
                # a diagnostic: what the work cost above idle (None when it did not show)
                summary["net_tokens_per_joule"] = m.tokens / net if net > 0 else None
    return doc
