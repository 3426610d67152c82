"""The run's report: one table row per figure, the checks, summary.json/.md, artifacts."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuval import Json
from pytest_tpw.store.files import atomic_write_text

# -- how numbers read ------------------------------------------------------------------------


def g(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def scaled(value: Any, factor: float, digits: int = 4) -> str:
    return "-" if value is None else g(float(value) * factor, digits)


def ci(value: Any) -> str:
    if not value:
        return "-"
    return "[" + ", ".join(g(float(v)) for v in value) + "]"


def cuda(value: Any) -> str:
    """NVML's CUDA driver version integer (13000) as 13.0."""
    if value is None:
        return "?"
    return f"{int(value) // 1000}.{int(value) % 1000 // 10}"


def pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:+.2f} %"


def percent(value: Any) -> str:
    """A share that has no sign (a CV): 0.0123 as 1.23 %."""
    return "-" if value is None else f"{float(value) * 100:.2f} %"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]


# -- rows per section ------------------------------------------------------------------------


Row = tuple[str, str, str]


def rows_facts(res: Json) -> list[Row]:
    dev, system, lat, poll_ = (res.get(k, {}) for k in ("device", "system", "latency_s", "poll"))
    rows: list[Row] = [
        (
            "power limit (enforced)",
            f"{scaled(dev.get('power_limit_mw'), 1e-3)} "
            f"({scaled(dev.get('enforced_power_limit_mw'), 1e-3)})",
            "W",
        ),
        (
            "energy counter / instant-power field",
            f"{dev.get('energy_counter')} / {dev.get('power_instant_field')}",
            "",
        ),
        ("NVML version", g(system.get("nvml_version")), ""),
    ]
    for key, label in (
        ("counter_period_idle_s", "counter update period, idle"),
        ("counter_period_load_s", "counter update period, load"),
        ("field_period_load_s", "instant-power field update period, load"),
    ):
        q = poll_.get(key, {})
        rows.append(
            (
                f"{label} (median [p10, p90], n)",
                f"{scaled(q.get('median'), 1e3)} [{scaled(q.get('p10'), 1e3)}, "
                f"{scaled(q.get('p90'), 1e3)}], {q.get('n', 0)}",
                "ms",
            )
        )
    rows += [
        (
            "mean power idle / load (counter)",
            f"{g(poll_.get('power_idle_w'))} / {g(poll_.get('power_load_w'))}",
            "W",
        )
    ]
    for key, label in (
        ("energy", "nvmlDeviceGetTotalEnergyConsumption"),
        ("field", "nvmlDeviceGetFieldValues(POWER_INSTANT)"),
        ("usage", "nvmlDeviceGetPowerUsage"),
    ):
        q = lat.get(key, {})
        rows.append(
            (
                f"read latency {label} (median / p99, n)",
                f"{scaled(q.get('median'), 1e6)} / {scaled(q.get('p99'), 1e6)}, "
                f"{q.get('n', 0)}{' ' + q['error'] if q.get('error') else ''}",
                "us",
            )
        )
    plugin = res.get("plugin_sensor", {})
    devices = plugin.get("describe", {}).get("devices") or [{}]
    rows.append(
        (
            "plugin NvmlSensor: update period / min window",
            f"{scaled(devices[0].get('update_period_s'), 1e3)} ms "
            f"({devices[0].get('update_period')}) / {g(plugin.get('min_window_s'))} s",
            "",
        )
    )
    return rows


def rows_counter(res: Json) -> list[Row]:
    rows = []
    for key, label in (
        ("ratio_counter_over_field", "counter / integrated instant field"),
        ("ratio_counter_over_usage", "counter / integrated GetPowerUsage"),
    ):
        s = res.get(key, {})
        rows.append(
            (
                f"{label} (mean ± sd [min, max], n windows)",
                f"{g(s.get('mean'))} ± {g(s.get('sd'), 2)} [{g(s.get('min'))}, "
                f"{g(s.get('max'))}], {s.get('n', 0)}",
                "ratio",
            )
        )
    w = res.get("counter_w", {})
    rows.append(
        (
            "load power during those windows (mean ± sd)",
            f"{g(w.get('mean'))} ± {g(w.get('sd'), 2)}",
            "W",
        )
    )
    return rows


def _session_rows(label: str, m: Json | None) -> list[Row]:
    m = m or {}
    tpj = m.get("tpj", {})
    state = m.get("gpu_state") or {}
    return [
        (
            f"{label}: tokens/J mean (CV, n windows)",
            f"{g(tpj.get('mean'))} ({pct(tpj.get('cv'))}, {tpj.get('n', 0)})",
            "tokens/J",
        ),
        (
            f"{label}: W, tokens/s, s per call",
            f"{g(m.get('watts'))}, {g(m.get('tokens_per_s'))}, {g(m.get('seconds_per_call'))}",
            "",
        ),
        (
            f"{label}: temp, SM clock, clock events",
            f"{state.get('temperature_c')} C, {state.get('sm_clock_mhz')} MHz, "
            f"{state.get('clocks_event_reasons')}",
            "",
        ),
    ]


def rows_aa(res: Json) -> list[Row]:
    runs = res.get("runs", [])
    rows = [("A/A verdict (expected UNCHANGED)", str(res.get("verdict")), "")]
    for run in runs:
        rows += _session_rows(f"A/A {run['name']} (rc {run.get('rc')})", run.get("measurement"))
    rows += [
        (
            "A/A between sessions: mean tokens/J ratio aa2/aa1 - 1",
            pct(None if res.get("session_ratio") is None else res["session_ratio"] - 1),
            "",
        ),
        ("A/A plugin ratio [CI]", f"{g(res.get('plugin_ratio'))} {ci(res.get('plugin_ci'))}", ""),
    ]
    return rows


def rows_ab(res: Json) -> list[Row]:
    exp = res.get("expected", {})
    rows = [
        ("A/B verdict (expected REGRESSED)", str(res.get("verdict")), ""),
        (
            "A/B extra matrix work requested / actual",
            f"{g(res.get('extra_work'))} / {g(exp.get('flop_fraction'))}",
            "fraction",
        ),
    ]
    rows += _session_rows("A/B session", (res.get("run") or {}).get("measurement"))
    rows += [
        (
            "A/B measured ratio (ab/aa1 means) | plugin ratio [CI]",
            f"{g(res.get('measured_ratio'))} | {g(res.get('plugin_ratio'))} "
            f"{ci(res.get('plugin_ci'))}",
            "tokens/J ratio",
        ),
        (
            "A/B expected: by energy of extra work alone | by generate time | 1/(1+f)",
            f"{g(exp.get('by_energy'))} | {g(exp.get('by_time'))} | {g(exp.get('by_flops'))}",
            "tokens/J ratio",
        ),
        (
            "pytest-tpw compare",
            str(
                (res.get("compare_cli") or {}).get("rc", (res.get("compare_cli") or {}).get("why"))
            ),
            "rc",
        ),
    ]
    return rows


def rows_overhead(res: Json) -> list[Row]:
    pair, meter = res.get("nvml_pair_s", {}), res.get("meter", {})
    return [
        (
            "NVML begin()+end() (median / p99, n)",
            f"{scaled(pair.get('median'), 1e6)} / {scaled(pair.get('p99'), 1e6)}, "
            f"{pair.get('n', 0)}",
            "us",
        ),
        (
            "meter bookkeeping per window, call / loop form",
            f"{scaled(meter.get('meter_only_call_form_s'), 1e6)} / "
            f"{scaled(meter.get('meter_only_loop_form_s'), 1e6)}",
            "us",
        ),
        ("per-window overhead with NVML (sum)", scaled(res.get("per_window_total_s"), 1e6), "us"),
    ]


def rows_noise(res: Json) -> list[Row]:
    rows: list[Row] = [
        (
            "A/A shift shared across tests (median of tests' level2/level1 - 1, tests)",
            f"{pct(res.get('shared_shift'))}, {res.get('n_tests', 0)}",
            "",
        ),
    ]
    for key, t in (res.get("tests") or {}).items():
        s1, s2 = (t.get("sessions") or [{}, {}])[:2]
        rows += [
            (
                f"{key}: within-session CV of window tokens/J (aa1, aa2; mean)",
                f"{percent(s1.get('cv'))}, {percent(s2.get('cv'))}; {percent(t.get('within_cv'))}",
                "",
            ),
            (
                f"{key}: lag-1 autocorrelation of windows (aa1, aa2; pooled, pairs)",
                f"{g(s1.get('lag1'), 3)}, {g(s2.get('lag1'), 3)}; {g(t.get('lag1'), 3)}, "
                f"{t.get('lag1_pairs', 0)}",
                "",
            ),
            (
                f"{key}: shift between sessions (level2/level1 - 1; less shared; sigma_b)",
                f"{pct(t.get('shift'))}; {pct(t.get('shift_less_shared'))}; "
                f"{g(t.get('sigma_b'), 3)}",
                "log units for sigma_b",
            ),
        ]
    return rows


SECTION_ROWS: dict[str, Callable[[Json], list[Row]]] = {
    "nvml_facts": rows_facts,
    "counter_vs_power": rows_counter,
    "aa": rows_aa,
    "ab": rows_ab,
    "overhead": rows_overhead,
    "noise": rows_noise,
}


def summary_markdown(doc: Json) -> str:
    card = doc.get("card", {})
    head = [
        f"# pytest-tpw GPU validation{' (CPU DRY RUN: no real GPU)' if doc.get('dry') else ''}",
        "",
        f"card **{card.get('name', '?')}**, driver {card.get('driver_version', '?')}, "
        f"CUDA driver {cuda(card.get('cuda_driver_version'))}, {doc.get('date')}, "
        f"commit {doc.get('commit') or '?'}, total {g(doc.get('elapsed_s'), 3)} s "
        f"of a {g(doc.get('budget_s'), 3)} s budget",
        "",
        "| section | figure | value | unit |",
        "|---|---|---|---|",
    ]
    body = []
    for name, section in doc.get("sections", {}).items():
        status = section.get("status")
        body.append(
            f"| {name} | status | {status} ({g(section.get('seconds'), 3)} s) "
            f"{cell(section.get('why') or section.get('error') or '')} | |"
        )
        if section.get("result") and name in SECTION_ROWS:
            try:
                body += [
                    f"| {name} | {cell(a)} | {cell(b)} | {c} |"
                    for a, b, c in SECTION_ROWS[name](section.get("result", {}))
                ]
            except Exception as exc:  # a summary must never lose the run
                body.append(f"| {name} | summary failed | {cell(repr(exc))} | |")
    found = checks(doc)
    tail = ["", "## Checks", "", *found] if found else []
    return "\n".join(head + body + tail) + "\n"


def checks(doc: Json) -> list[str]:
    """The few lines that say whether the plugin passed its validation."""
    sections = doc.get("sections", {})
    aa = sections.get("aa", {}).get("result") or {}
    ab = sections.get("ab", {}).get("result") or {}
    cvp = sections.get("counter_vs_power", {}).get("result") or {}
    lines = []
    for res, want in ((aa, "UNCHANGED"), (ab, "REGRESSED")):
        if res:
            got = res.get("verdict")
            lines.append(
                f"- {'A/A' if want == 'UNCHANGED' else 'A/B'} verdict {got}, "
                f"expected {want}: {'PASS' if got == want else 'FAIL'}"
            )
    exp = ab.get("expected") or {}
    measured = ab.get("plugin_ratio") or ab.get("measured_ratio")
    for key, label in (
        ("by_energy", "energy of the extra work alone"),
        ("by_time", "generate time"),
        ("by_flops", "1/(1+f)"),
    ):
        if measured and exp.get(key):
            lines.append(
                f"- A/B ratio {g(measured)} vs expected {g(exp[key])} ({label}): "
                f"{pct(measured / exp[key] - 1)} off"
            )
    ratio = (cvp.get("ratio_counter_over_field") or {}).get("mean")
    if ratio:
        lines.append(
            f"- counter / integrated instant power: {pct(ratio - 1)} "
            f"(CV {pct((cvp['ratio_counter_over_field'] or {}).get('cv'))})"
        )
    noise = sections.get("noise", {}).get("result") or {}
    if noise.get("n_tests"):
        lines.append(
            f"- A/A noise: within-session CV {percent(noise.get('median_within_cv'))}, "
            f"lag-1 {g(noise.get('median_lag1'), 3)}, shift between sessions "
            f"{pct(noise.get('shared_shift'))} (shared over {noise['n_tests']} tests)"
        )
    return lines


def save(out: Path, work: Path, doc: Json) -> None:
    """summary.json, summary.md and the artifacts tarball (``work``), rewritten atomically."""
    atomic_write_text(out / "summary.json", json.dumps(doc, indent=1, default=str) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(doc))
    tmp = out / "artifacts.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(work, arcname="artifacts")
    tmp.replace(out / "artifacts.tar.gz")
