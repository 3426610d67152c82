"""The poll as NVML traces (pytest-tpw-nvml-trace/1): rows, fitting to size, files."""

from __future__ import annotations

import datetime
import json
import re
import statistics
from collections.abc import Sequence
from typing import Any

from gpuval.common import Json
from gpuval.context import Ctx
from gpuval.measure import PollLog, counter_rows
from gpuval.rig import SYNTHETIC_TRACE

TRACE_FORMAT = "pytest-tpw-nvml-trace/1"
COLUMNS = ["t_s", "energy_mj", "power_instant_mw", "temperature_c", "sm_clock_mhz",
           "mem_clock_mhz", "clocks_event_reasons"]
MAX_TRACE_BYTES = 190_000


LATENCY_CALLS: tuple[tuple[str, str], ...] = (
    ("nvmlDeviceGetTotalEnergyConsumption", "energy"),
    ("nvmlDeviceGetFieldValues", "field"),
    ("nvmlDeviceGetPowerUsage", "usage"),
)


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100_80gb_hbm3``."""
    text = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.IGNORECASE).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_") or "gpu"


def _filled(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows the stand-in can replay: a missing reading repeats the last one (0 if none)."""
    out, last = [], [0] * len(COLUMNS)
    for row in rows:
        filled = [last[i] if v is None else v for i, v in enumerate(row)]
        filled[2] = round(filled[2])
        out.append(filled)
        last = filled
    return out


def make_trace(system: Json, device: Json, latency_s: Json, rows: Sequence[Sequence[Any]],
               source: str, generator: str) -> Json:
    """One ``pytest-tpw-nvml-trace/1`` document (tests/data/README.md) holding one board."""
    t_first = rows[0][0] if rows else 0.0
    rebased = [[round(r[0] - t_first, 6), *r[1:]] for r in _filled(rows)]
    return {"format": TRACE_FORMAT, "source": source, "generator": generator,
            "system": system, "call_latency_s": latency_s,
            "devices": [{**device, "columns": list(COLUMNS), "rows": rebased}]}


def trace_text(trace: Json) -> str:
    """The trace as JSON with one row per line, like the synthetic traces (small files)."""
    rows = [device["rows"] for device in trace["devices"]]
    shell = {**trace, "devices": [{**d, "rows": f"@ROWS{i}@"}
                                  for i, d in enumerate(trace["devices"])]}
    text = json.dumps(shell, indent=1)
    for i, device_rows in enumerate(rows):
        body = ",\n".join("    " + json.dumps(row) for row in device_rows)
        text = text.replace(f'"@ROWS{i}@"', "[\n" + body + "\n   ]")
    return text + "\n"


def trace_bytes(trace: Json) -> int:
    return len(trace_text(trace).encode())


def fit_trace(trace: Json, max_bytes: int, around_s: float) -> tuple[Json, str | None]:
    """Cut the trace to the stretch around ``around_s`` that fits in ``max_bytes``."""
    rows = trace["devices"][0]["rows"]
    if trace_bytes(trace) <= max_bytes or len(rows) < 4:
        return trace, None
    centre = min(range(len(rows)), key=lambda i: abs(rows[i][0] - around_s))
    keep = len(rows)
    while keep > 4:
        keep = int(keep * 0.9)
        lo = max(0, min(centre - keep // 2, len(rows) - keep))
        part = rows[lo:lo + keep]
        t0 = part[0][0]
        cut = {**trace, "devices": [{**trace["devices"][0],
                                     "rows": [[round(r[0] - t0, 6), *r[1:]] for r in part]}]}
        if trace_bytes(cut) <= max_bytes:
            return cut, f"cut to {part[0][0]:.3f}..{part[-1][0]:.3f} s of the recording"
    raise ValueError("trace does not fit even when cut to 4 rows")


def trace_latencies(latency: Json) -> Json:
    """The trace's ``call_latency_s``: median seconds per call, by NVML function."""
    medians = {fn: latency[key].get("median") for fn, key in LATENCY_CALLS}
    medians.update({fn: stats.get("median") for fn, stats in latency["aux"].items()})
    found = {fn: float(f"{v:.3g}") for fn, v in medians.items() if v is not None}
    default = found.get("nvmlDeviceGetTotalEnergyConsumption",
                        statistics.median(found.values()) if found else 0.0)
    return {"default": default, **found}


def write_traces(ctx: Ctx, system: Json, device: Json, latency: Json, log: PollLog,
                 load_start: float) -> Json:
    """The poll as two traces: rows at counter changes, and rows at any change."""
    date = datetime.date.today().isoformat()
    prefix = "nvml_dryrun_" if ctx.plan.dry else "nvml_"
    source = (f"CPU dry run of benchmarks/gpu_validation.py replaying tests/data/"
              f"{SYNTHETIC_TRACE} (SYNTHETIC, not a recording)" if ctx.plan.dry else
              f"recorded on {device['name']}, driver {system['driver_version']}, {date}")
    what = (f"benchmarks/gpu_validation.py section 1: {ctx.plan.idle_s:g} s idle, then "
            f"{ctx.plan.load_s:g} s of a bf16 8192^3 matmul loop from t = {load_start:.3f} s")
    written: Json = {}
    for suffix, rows, how in (("idle_load", counter_rows(log.rows), "rows at counter changes"),
                              ("idle_load_all", log.rows, "rows at any change of the counter "
                                                          "or the instant power")):
        trace = make_trace(system, device, trace_latencies(latency), rows, source,
                           f"{what}; {how}")
        trace, note = fit_trace(trace, MAX_TRACE_BYTES, load_start)
        if note:
            trace["generator"] += f"; {note}"
        name = f"{prefix}{slug(device['name'])}_{suffix}.json"
        (ctx.out / name).write_text(trace_text(trace), encoding="utf-8")
        written[suffix] = {"file": name, "rows": len(trace["devices"][0]["rows"]),
                           "bytes": (ctx.out / name).stat().st_size, "cut": note}
    return written
