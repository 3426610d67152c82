"""The Markdown report of a results document, for a pull-request comment or a job summary.

GitHub-flavoured Markdown from the plain ``--tpw-json`` document: the run-wide finding first
(when the document has one), then regressions and improvements with their numbers, the other
measurements in a collapsed table, the software stack and what changed in it, and the sensor
with the provenance of its joules said plainly. The text always fits the limit given: rows of
the collapsed table go first, then improvement rows, then regression rows, and the report says
how many measurements it left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_tpw.present.loadtext import seconds, shape_text
from pytest_tpw.present.report import health_parts, num
from pytest_tpw.verdict import Verdict

#: GitHub's largest pull-request (issue) comment body, in characters.
COMMENT_LIMIT = 65_536
#: GitHub's largest ``$GITHUB_STEP_SUMMARY`` per step, in bytes (1 MiB).
STEP_SUMMARY_LIMIT = 1_048_576

HEADING = "## tokens per joule (pytest-tpw)"

REGRESSION_VERDICTS = frozenset({"REGRESSED", "MINOR_REGRESSION"})
IMPROVEMENT_VERDICTS = frozenset({"IMPROVED"})

PROVENANCE_TEXT = {
    "measured": "measured",
    "estimated": "ESTIMATED from a model, not measured: do not compare with measured joules",
    "simulated": "SIMULATED by the sim sensor: invented numbers for demos and tests",
}

RUN_WIDE_TEXT = {
    "FINE": "fine",
    "STACK_REGRESSION": "stack regression: every test moved down together",
    "STACK_IMPROVEMENT": "stack improvement: every test moved up together",
    "ENVIRONMENT_ANOMALY": "environment anomaly: all tests moved but the stack did not change",
    "TOO_FEW_TESTS": "too few tests for a run-wide estimate",
    "NO_BASELINE": "no baseline",
}


@dataclass(frozen=True)
class _Row:
    key: str
    verdict: str
    level: float | None
    ci: tuple[float, float] | None
    n: int | None
    baseline: float | None
    ratio: float | None
    ratio_ci: tuple[float, float] | None
    p: float | None


def render(doc: Mapping[str, Any], limit: int = COMMENT_LIMIT) -> str:
    """The report of ``doc``, under ``limit`` (counted in UTF-8 bytes, so it holds for both
    GitHub limits: characters for a comment, bytes for a step summary); never cut mid-row."""
    if limit < 400:
        raise ValueError(f"limit {limit} is too small for a report (at least 400 characters)")
    rows = _rows(doc)
    regressions = sorted((r for r in rows if r.verdict in REGRESSION_VERDICTS), key=_by_ratio)
    improvements = sorted(
        (r for r in rows if r.verdict in IMPROVEMENT_VERDICTS), key=_by_ratio, reverse=True
    )
    others = [r for r in rows if r.verdict not in REGRESSION_VERDICTS | IMPROVEMENT_VERDICTS]
    shown = [len(regressions), len(improvements), len(others)]

    def text() -> str:
        return _compose(
            doc,
            rows,
            regressions[: shown[0]],
            improvements[: shown[1]],
            others[: shown[2]],
            len(rows) - sum(shown),
        )

    out = text()
    # drop rows from the least to the most important section until the text fits
    for section in (2, 1, 0):
        if _size(out) < limit:
            break
        lo, hi = 0, shown[section]  # the largest count in [lo, hi] that fits
        while lo < hi:
            shown[section] = (lo + hi + 1) // 2
            if _size(text()) < limit:
                lo = shown[section]
            else:
                hi = shown[section] - 1
        shown[section] = lo
        out = text()
    if _size(out) >= limit:  # the head alone is too long (a huge stack): cut it, say so
        note = "\n\n… report cut to fit; see the JSON\n"
        budget = limit - _size(note) - 1
        out = out.encode("utf-8")[:budget].decode("utf-8", errors="ignore") + note
    return out


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _by_ratio(row: _Row) -> float:
    return row.ratio if row.ratio is not None else math.inf


# -- reading the document --------------------------------------------------------------------


def _float(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _mapping(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _pair(x: Any) -> tuple[float, float] | None:
    if not isinstance(x, list | tuple) or len(x) != 2:
        return None
    lo, hi = _float(x[0]), _float(x[1])
    return (lo, hi) if lo is not None and hi is not None else None


def _rows(doc: Mapping[str, Any]) -> list[_Row]:
    measurements = doc.get("measurements")
    if not isinstance(measurements, Mapping):
        raise ValueError('not a pytest-tpw results document: no "measurements" object')
    rows = []
    for key in sorted(measurements):
        entry = _mapping(measurements[key])
        summary = _mapping(entry.get("summary"))
        comparison = _mapping(entry.get("comparison"))
        n = summary.get("n")
        p = comparison.get("p_adjusted")
        rows.append(
            _Row(
                key=str(key),
                verdict=str(comparison.get("verdict") or entry.get("verdict") or "-"),
                level=_float(summary.get("tokens_per_joule")),
                ci=_pair(summary.get("ci")),
                n=n if isinstance(n, int) else None,
                baseline=_float(comparison.get("baseline_tokens_per_joule")),
                ratio=_float(comparison.get("ratio")),
                ratio_ci=_pair(comparison.get("ci")),
                p=_float(p if p is not None else comparison.get("p_regression")),
            )
        )
    return rows


# -- formatting ------------------------------------------------------------------------------


#: Characters that Markdown, GitHub or HTML would read as markup in plain text.
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:])")
#: The verdicts a results document may hold (anything else is shown as code).
VERDICTS = frozenset(v.value for v in Verdict)


def plain(text: str) -> str:
    """``text`` as literal Markdown text on one line: no emphasis, links, images, headings,
    HTML or @mentions come from it (a results file is data, whoever wrote it)."""
    text = _MARKUP.sub(r"\\\1", " ".join(str(text).splitlines()))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("@", "&#64;")


def verdict_text(verdict: str) -> str:
    """A verdict as it is written, or as code when it is not one."""
    return verdict if verdict in VERDICTS else code(verdict)


def _strings(x: Any) -> list[str]:
    """A list of strings from a results document (anything else: none)."""
    return [v for v in x if isinstance(v, str)] if isinstance(x, list) else []


def code(text: str) -> str:
    """``text`` as a Markdown code span that survives backticks, pipes and newlines."""
    text = " ".join(text.splitlines()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest or text.startswith(" ") or text.endswith(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _change(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio - 1:+.1%}"


def _ratio_interval(row: _Row) -> str:
    if row.ratio is None:
        return "-"
    if row.ratio_ci is None:
        return f"{row.ratio:.3f}"
    return f"{row.ratio:.3f} [{row.ratio_ci[0]:.3f}, {row.ratio_ci[1]:.3f}]"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _changed_table(rows: Sequence[_Row], confidence: str) -> list[str]:
    lines = [
        f"| measurement | tokens/J now | baseline | change | ratio [{confidence}] | "
        "p (adj.) | verdict |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    lines += [
        f"| {code(r.key)} | {num(r.level)} | {num(r.baseline)} | {_change(r.ratio)} | "
        f"{_ratio_interval(r)} | {_p(r.p)} | {verdict_text(r.verdict)} |"
        for r in rows
    ]
    return lines


def _other_table(rows: Sequence[_Row], confidence: str) -> list[str]:
    lines = [
        f"| measurement | tokens/J | {confidence} CI | n | baseline | change | verdict |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ci = "-" if r.ci is None else f"[{num(r.ci[0])}, {num(r.ci[1])}]"
        lines.append(
            f"| {code(r.key)} | {num(r.level)} | {ci} | "
            f"{r.n if r.n is not None else '-'} | {num(r.baseline)} | "
            f"{_change(r.ratio)} | {verdict_text(r.verdict)} |"
        )
    return lines


def _confidence(doc: Mapping[str, Any]) -> str:
    settings = doc.get("settings")
    c = _float(settings.get("confidence")) if isinstance(settings, Mapping) else None
    return f"{c:.0%}" if c is not None else "CI"


def _environment(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    env = doc.get("environment")
    return env if isinstance(env, Mapping) else {}


def sensor_line(doc: Mapping[str, Any]) -> str:
    """``Sensor: sim (method); joules SIMULATED ...``: what the numbers rest on."""
    sensor = _environment(doc).get("sensor")
    sensor = sensor if isinstance(sensor, Mapping) else {}
    name = sensor.get("name") or "unknown"
    method = f" ({plain(sensor['method'])})" if sensor.get("method") else ""
    provenance = str(sensor.get("provenance") or "unknown")
    said = PROVENANCE_TEXT.get(provenance) or code(provenance)
    line = f"**Sensor:** {code(str(name))}{method}; joules {said}."
    edge = _float(sensor.get("edge_error_s"))
    if edge:
        line += (
            f" Window edges uncertain by {edge:.3g} s: a drop within a test's instrument "
            "bound is not counted as a regression."
        )
    return line if provenance == "measured" else f"> [!WARNING]\n> {line}"


def health_lines(doc: Mapping[str, Any]) -> list[str]:
    """``**Sensor health:** counter advancing yes, ...``: the sensor's view of its own
    counters and the windows the run lost (nothing for ``sim`` unless one was lost)."""
    sensor = _mapping(_environment(doc).get("sensor"))
    health = _mapping(sensor.get("health"))
    if not health:
        return []
    advances = health.get("counter_advances")
    period, idle = _float(health.get("update_period_s")), _float(health.get("idle_watts"))
    dropped, invalid = (
        value if isinstance(value := health.get(name), int) else 0
        for name in ("dropped_reads", "invalid_windows")
    )
    notes = _strings(health.get("notes"))
    if sensor.get("provenance") == "simulated" and not (dropped or invalid or notes):
        return []
    parts = health_parts(
        advances if isinstance(advances, bool) else None,
        period or None,
        idle,
        dropped,
        invalid,
        "**NO**",
    )
    lines = ["**Sensor health:** " + ", ".join(parts) + "."]
    lines += [f"- {plain(n)}" for n in notes]
    return [*lines, ""]


#: Implausible results named in the report (the rest are counted).
MAX_IMPLAUSIBLE = 10


def _implausible(doc: Mapping[str, Any]) -> list[str]:
    """The results beyond physical bounds (``implausible`` in the JSON), in a warning."""
    found = [
        text
        for entry in _mapping(doc.get("measurements")).values()
        for text in _strings(_mapping(entry).get("implausible"))
    ]
    if not found:
        return []
    lines = [
        "> [!WARNING]",
        "> **Implausible results** (probably measured wrongly; docs/sensors.md):",
    ]
    lines += [f"> - {plain(t)}" for t in found[:MAX_IMPLAUSIBLE]]
    if len(found) > MAX_IMPLAUSIBLE:
        lines.append(f"> - … {len(found) - MAX_IMPLAUSIBLE} more; see the JSON")
    return [*lines, ""]


def _run_wide(doc: Mapping[str, Any]) -> list[str]:
    findings = doc.get("run_wide")
    if not isinstance(findings, list) or not findings:
        return []
    lines = ["### Run-wide", ""]
    for f in findings:
        if not isinstance(f, Mapping):
            continue
        verdict = str(f.get("verdict") or "-")
        if verdict in RUN_WIDE_TEXT:
            head = f"- {code(str(f.get('hardware_key') or '?'))}: **{verdict}** "
            head += f"({RUN_WIDE_TEXT[verdict]})"
        else:
            head = f"- {code(str(f.get('hardware_key') or '?'))}: {code(verdict)}"
        ratio, ci = _float(f.get("ratio")), _pair(f.get("ci"))
        if ratio is not None:
            head += f", ratio {ratio:.3f}"
            if ci is not None:
                head += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        if isinstance(f.get("n_tests"), int):
            head += f" over {f['n_tests']} tests"
        lines.append(head)
        if f.get("text"):
            lines.append(f"  - {plain(str(f['text']))}")
        changes = _strings(f.get("stack_changes"))
        if changes:
            lines.append("  - stack changes: " + ", ".join(code(c) for c in changes))
        suspects = _strings(f.get("suspects"))
        if suspects:
            lines.append("  - suspects: " + ", ".join(code(s) for s in suspects))
        lines += [f"  - {plain(note)}" for note in _strings(f.get("notes"))]
    return [*lines, ""]


def _stack(doc: Mapping[str, Any]) -> list[str]:
    env = _environment(doc)
    software = env.get("software")
    software = software if isinstance(software, Mapping) else {}
    known = [(str(k), str(v)) for k, v in sorted(software.items()) if v not in (None, "")]
    lines = ["### Stack", ""]
    facts = []
    if env.get("hardware_key"):
        facts.append(f"hardware {code(str(env['hardware_key']))}")
    if env.get("commit"):
        facts.append(f"commit {code(str(env['commit'])[:12])}")
    if facts:
        lines += [", ".join(facts), ""]
    if known:
        lines.append(", ".join(f"{k} {code(v)}" for k, v in known))
        lines.append("")
    changes = []
    for f in doc.get("run_wide") or []:
        if isinstance(f, Mapping):
            changes += [c for c in _strings(f.get("stack_changes")) if c not in changes]
    if changes:
        lines += ["Changed since the baseline: " + ", ".join(code(c) for c in changes), ""]
    return lines if len(lines) > 2 else []


#: Load measurements shown in the report's table (the rest are counted).
MAX_LOAD_ROWS = 50


def _load(doc: Mapping[str, Any]) -> list[str]:
    """The load measurements: the load as driven, failures, latencies at p50/p90/p99."""
    measurements = _mapping(doc.get("measurements"))
    loaded = [
        (str(k), _mapping(e.get("load")), _mapping(e.get("latency")))
        for k, e in sorted(measurements.items(), key=lambda kv: str(kv[0]))
        if isinstance(e, Mapping) and isinstance(e.get("load"), Mapping)
    ]
    if not loaded:
        return []
    lines = [
        f"### Under load ({len(loaded)})",
        "",
        "| measurement | load | achieved | failed | TTFT p50 / p90 / p99 | "
        "TPOT p50 / p90 / p99 | E2E p50 / p90 / p99 |",
        "|---|---|---|---:|---|---|---|",
    ]
    for key, load, latency in loaded[:MAX_LOAD_ROWS]:
        achieved = (
            f"{num(_float(load.get('achieved_concurrency')))} in flight, "
            f"{num(_float(load.get('achieved_rate')))} req/s"
        )
        cells = []
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            block = _mapping(latency.get(name))
            cells.append(" / ".join(seconds(block.get(q)) for q in ("p50", "p90", "p99")))
        lines.append(
            f"| {code(key)} | {plain(shape_text(load))} | {achieved} | "
            f"{load.get('errors') if isinstance(load.get('errors'), int) else '-'} of "
            f"{load.get('requests') if isinstance(load.get('requests'), int) else '-'} | "
            + " | ".join(cells)
            + " |"
        )
    if len(loaded) > MAX_LOAD_ROWS:
        lines.append(f"… {len(loaded) - MAX_LOAD_ROWS} more load measurement(s); see the JSON.")
    return [*lines, ""]


def _compose(
    doc: Mapping[str, Any],
    rows: Sequence[_Row],
    regressions: Sequence[_Row],
    improvements: Sequence[_Row],
    others: Sequence[_Row],
    hidden: int,
) -> str:
    confidence = _confidence(doc)
    n_reg = sum(r.verdict in REGRESSION_VERDICTS for r in rows)
    n_imp = sum(r.verdict in IMPROVEMENT_VERDICTS for r in rows)
    lines = [HEADING, ""]
    if not rows:
        lines += ["No measurements: no test used the `tpw` fixture.", ""]
    else:
        n_minor = sum(r.verdict == "MINOR_REGRESSION" for r in rows)
        minor = f", {n_minor} dropped within the tolerance" if n_minor else ""
        lines += [
            f"**{n_reg - n_minor} regressed**{minor}, **{n_imp} improved**, of {len(rows)} "
            "measurement(s).",
            "",
        ]
    lines += _run_wide(doc)
    if n_reg:
        lines += [f"### Regressions ({n_reg})", "", *_changed_table(regressions, confidence), ""]
    if n_imp:
        lines += [f"### Improvements ({n_imp})", "", *_changed_table(improvements, confidence), ""]
    n_other = len(rows) - n_reg - n_imp
    if n_other:
        lines += ["<details>", f"<summary>All other measurements ({n_other})</summary>", ""]
        if others:
            lines += [*_other_table(others, confidence), ""]
        lines += ["</details>", ""]
    if hidden:
        lines += [f"… {hidden} more measurement(s) not shown; see the JSON.", ""]
    lines += _load(doc)
    lines += _stack(doc)
    lines += [sensor_line(doc), ""]
    lines += health_lines(doc)
    lines += _implausible(doc)
    return "\n".join(lines)
