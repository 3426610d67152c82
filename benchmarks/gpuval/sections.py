"""The five sections of the validation, each a function of the run's Ctx."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gpuval.common import Json, write_json
from gpuval.context import Ctx
from gpuval.fmt import g
from gpuval.inner import ratio_of_means, run_compare, run_inner
from gpuval.measure import (
    measure_latencies,
    measure_window,
    meter_bookkeeping,
    plugin_sensor,
    poll_stats,
    record_poll,
    time_pairs,
)
from gpuval.rig import open_rig, read_identity
from gpuval.stats_util import expected_ratio_from_energy, flop_ratio, spread
from gpuval.traces import write_traces

# -- section 1: NVML facts -------------------------------------------------------------------------


def section_nvml_facts(ctx: Ctx) -> Json:
    worker = ctx.worker()
    with open_rig(ctx.plan, worker.uuid) as rig:
        system, device = read_identity(rig)
        ctx.card.update(name=device["name"], uuid=device["uuid"], **system)
        ctx.say(f"card {device['name']}, driver {system['driver_version']}; counter "
                f"{rig.has_counter}, instant field {rig.has_field}; polling")
        log, load_start, load = record_poll(rig, ctx.plan, worker)
        ctx.say(f"poll: {len(log.rows)} changes in {log.polls} polls; measuring latencies")
        latency = measure_latencies(rig, ctx.plan)
        ctx.say("running the plugin's NvmlSensor calibration")
        plugin = plugin_sensor(rig)
    return {"system": system, "device": device, "latency_s": latency, "load": load,
            "poll": poll_stats(log, load_start, ctx.plan), "plugin_sensor": plugin,
            "traces": write_traces(ctx, system, device, latency, log, load_start)}


# -- section 2: counter vs integrated instant power ------------------------------------------------


def section_counter_vs_power(ctx: Ctx) -> Json:
    worker, plan = ctx.worker(), ctx.plan
    deadline = ctx.budget.elapsed() + plan.estimate("counter_vs_power") * 1.5
    windows: list[Json] = []
    with open_rig(plan, ctx.uuid() or worker.uuid, start_s=plan.fake_load_start_s) as rig:
        if not (rig.has_counter and rig.has_field):
            return {"status": "skipped", "why": f"counter {rig.has_counter}, "
                                                f"instant field {rig.has_field}"}
        worker.request({"cmd": "load", "kind": "matmul"})
        try:
            rig.sleep(plan.ramp_s * 2)
            rng = random.Random(20240611)
            for i in range(plan.windows):
                if ctx.budget.elapsed() > deadline or ctx.budget.left() < 10:
                    ctx.say(f"section 2: stopping after {i} windows (time)")
                    break
                windows.append(measure_window(rig, rng.uniform(*plan.window_s), plan))
        finally:
            load = worker.request({"cmd": "stop"})
    write_json(ctx.work / "counter_vs_power_windows.json", windows)
    ratios = [w["ratio_counter_over_field"] for w in windows if w["ratio_counter_over_field"]]
    usage = [w["ratio_counter_over_usage"] for w in windows if w["ratio_counter_over_usage"]]
    return {"windows": len(windows), "ratio_counter_over_field": spread(ratios),
            "ratio_counter_over_usage": spread(usage),
            "seconds": spread([w["seconds"] for w in windows]),
            "counter_w": spread([w["counter_w"] for w in windows if w["counter_w"]]),
            "load": load, "per_window": windows}


# -- sections 3 and 4: the plugin itself -----------------------------------------------------------


def section_aa(ctx: Ctx) -> Json:
    ctx.release_worker()
    first = run_inner(ctx, "aa1", update=True, extra=0.0)
    second = run_inner(ctx, "aa2", update=False, extra=0.0)
    m1, m2 = first["measurement"], second["measurement"]
    comparison = (m2 or {}).get("comparison") or {}
    return {**_incomplete([first, second]), "runs": [first, second],
            "verdict": (m2 or {}).get("verdict") or "unavailable",
            "verdict_expected": "UNCHANGED",
            "session_ratio": ratio_of_means(m1, m2),
            "plugin_ratio": comparison.get("ratio"), "plugin_ci": comparison.get("ci")}


def _incomplete(runs: Sequence[Json]) -> Json:
    """A section status of ``error`` when an inner session left no measurement."""
    bad = [f"{r['name']} (rc {r['rc']}{', timed out' if r.get('timed_out') else ''})"
           for r in runs if r["measurement"] is None]
    if not bad:
        return {}
    return {"status": "error", "why": f"no measurement from inner session {', '.join(bad)}; "
                                      "see log_tail and artifacts.tar.gz"}


def expected_ratio(ctx: Ctx, base_tpj: float | None) -> Json:
    """The A/B's expected ratio, measured without the plugin: generate time with and without
    the extra work, and the NVML energy of the extra work run alone."""
    worker, extra = ctx.worker(), ctx.plan.extra_work
    timed = worker.request({"cmd": "time_generate", "extra": extra,
                            "reps": ctx.plan.time_reps}, 120.0)
    facts = timed["facts"]
    out: Json = {"flop_fraction": facts["extra_flop_fraction"],
                 "by_flops": flop_ratio(facts["extra_flop_fraction"]),
                 "generate_s": {"base": timed["base_s"], "extra": timed["extra_s"]},
                 "by_time": timed["base_s"] / timed["extra_s"], "facts": facts}
    with open_rig(ctx.plan, ctx.uuid() or worker.uuid, start_s=ctx.plan.fake_load_start_s) as rig:
        if not rig.has_counter:
            return {**out, "by_energy": None, "why": "no energy counter"}
        worker.request({"cmd": "load", "kind": "extra", "extra": extra})
        try:
            rig.sleep(ctx.plan.ramp_s)
            window = measure_window(rig, ctx.plan.extra_window_s, ctx.plan)
        finally:
            load = worker.request({"cmd": "stop"})
    extra_j = (window["counter_w"] or 0.0) * (load.get("per_call_s") or 0.0)
    out.update(extra_only={"window": window, "load": load, "joules_per_call": extra_j})
    if base_tpj and extra_j > 0:
        base_j = facts["tokens_per_call"] / base_tpj
        out.update(base_joules_per_call=base_j,
                   by_energy=expected_ratio_from_energy(base_j, extra_j))
    return out


def section_ab(ctx: Ctx) -> Json:
    ctx.release_worker()
    if not (ctx.work / "baseline").exists():
        return {"status": "skipped", "why": "no A/A baseline (section 3 did not write one)"}
    ab = run_inner(ctx, "ab", update=False, extra=ctx.plan.extra_work)
    aa = ctx.results.get("aa", {}).get("runs", [])
    base = aa[0]["measurement"] if aa else None
    m = ab["measurement"] or {}
    comparison = m.get("comparison") or {}
    if ab["measurement"] is None:
        return {**_incomplete([ab]), "run": ab, "verdict": "unavailable"}
    out: Json = {"run": ab, "verdict": m.get("verdict") or "unavailable",
                 "verdict_expected": "REGRESSED", "extra_work": ctx.plan.extra_work,
                 "measured_ratio": ratio_of_means(base, ab["measurement"]),
                 "plugin_ratio": comparison.get("ratio"), "plugin_ci": comparison.get("ci"),
                 "compare_cli": run_compare(ctx, "aa2", "ab")}
    ctx.say(f"A/B verdict {out['verdict']}, measured ratio {g(out['measured_ratio'])}; "
            "measuring the expected ratio")
    try:
        expected = expected_ratio(ctx, (base or {}).get("tpj", {}).get("mean"))
        out["expected"] = expected
    finally:
        ctx.release_worker()
    ctx.say(f"A/B ratio {g(out['plugin_ratio'] or out['measured_ratio'])}; expected "
            f"{g(expected.get('by_energy'))} (energy of the extra work alone), "
            f"{g(expected.get('by_time'))} (generate time), {g(expected.get('by_flops'))} "
            "(1/(1+f))")
    return out


# -- section 5: overhead ---------------------------------------------------------------------------


def section_overhead(ctx: Ctx) -> Json:
    from pytest_tpw.sensors.base import SensorOptions
    from pytest_tpw.sensors.nvml import NvmlSensor

    ctx.release_worker()
    with open_rig(ctx.plan, ctx.uuid()) as rig:
        sensor = NvmlSensor(SensorOptions(devices=(0,)))
        rig.configure(sensor)
        sensor.open()
        try:
            sensor.min_window_s()  # calibration first: it is not part of a window's cost
            pairs = time_pairs(sensor, ctx.plan.overhead_pairs, ctx.plan.overhead_max_s)
        finally:
            sensor.close()
    meter = meter_bookkeeping(ctx.plan.meter_windows)
    total = pairs["median"] + meter["meter_only_call_form_s"]
    return {"nvml_pair_s": pairs, "meter": meter, "per_window_total_s": total,
            "note": "per-window total = NVML begin()+end() median + the meter's own "
                    "bookkeeping (call form, sim sensor) ; wall-clock on this host"}


# -- all of them -----------------------------------------------------------------------------------


Section = tuple[str, str, Callable[[Ctx], Json]]


SECTIONS: tuple[Section, ...] = (
    ("nvml_facts", "1. NVML facts, update period, read latency", section_nvml_facts),
    ("counter_vs_power", "2. counter vs integrated instant power", section_counter_vs_power),
    ("aa", "3. A/A through the plugin", section_aa),
    ("ab", "4. A/B through the plugin", section_ab),
    ("overhead", "5. plugin overhead per window", section_overhead),
)
