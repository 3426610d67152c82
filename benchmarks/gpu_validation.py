"""Validate pytest-tpw on a real NVIDIA GPU in one run: NVML facts, counter vs instant power,
A/A and A/B through the plugin itself, the plugin's overhead, the A/A noise.

On the lent device machine (one H100 or H200, no network, plugin not installed), from the
repository root:

    PYTHONPATH=. python benchmarks/gpu_validation.py --out "$OUT" --budget-s 450

Here, on the CPU, the same code paths against the stand-in ``pynvml`` replaying
``tests/data/nvml_synthetic_h100.json`` and the ``sim`` sensor (about 15 s):

    PYTHONPATH=. python benchmarks/gpu_validation.py --cpu-dry-run --out /tmp/gpu-dry

Sections (each one's results are written as soon as it ends; one that fails is recorded and
the next one runs; one that would not fit in what is left of ``--budget-s`` is skipped):

1. NVML facts: identity, driver, power limit; the energy counter's update period (poll idle,
   then under a matmul load; median, p10, p90 of the intervals between changes); read latency
   of the counter, of ``NVML_FI_DEV_POWER_INSTANT`` and of ``nvmlDeviceGetPowerUsage``
   (median, p99); the plugin's own ``NvmlSensor.describe()``. The poll is written as NVML
   traces (``pytest-tpw-nvml-trace/1``, tests/data/README.md): rows at counter changes
   (``nvml_<card>_idle_load.json``, what the trace-generic NVML tests assume) and rows at any
   change (``nvml_<card>_idle_load_all.json``).
2. Counter vs integrated instant power over the same windows (1-3 s, aligned on counter
   updates, instant power sampled every 15 ms) under a steady matmul load.
3. A/A: the decode test of ``gpu_validation_suite/gpu_suite_decode.py`` in two separate pytest
   sessions (``--tpw-update``, then a comparison): the plugin's verdict, spread per window and
   between sessions.
4. A/B: the same test with ``TPW_EXTRA_WORK`` (10 % more matrix work per token) against the A/A
   baseline: the verdict, the measured ratio, and the expected ratio measured independently
   (generate time with and without the extra work; energy of the extra work alone).
5. The plugin's overhead per window with NVML (``begin()``+``end()``) and the meter's own
   bookkeeping (``sim`` sensor, ``benchmarks/overhead.py``'s ``meter_costs``).
6. A/A noise figures, from the windows of section 3's two sessions: within-session CV and
   lag-1 autocorrelation of the windows' tokens/J, the shift between the two sessions per
   test and shared across tests (``pytest_tpw.stats``).

Output (at most 8 files, flat, as the device tool returns them): ``progress.log``,
``summary.md``, ``summary.json``, the two traces, ``artifacts.tar.gz`` (the inner runs' JSON,
logs and baseline, per-window data). GPU work runs in a worker subprocess (``--worker``), so this
process never holds a CUDA context: the inner pytest sessions see no other process on the GPU.

This file parses the arguments and runs the sections; the work is in the package ``gpuval``
beside it (``counter``: NVML and the counter; ``inner``: the worker, the inner sessions, the
noise figures; ``summary``: the report), found as ``sys.path[0]`` is this folder.
"""

from __future__ import annotations

import argparse
import datetime
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from gpuval import DRY_PLAN, ROOT, Budget, Json, Plan, Progress
from gpuval.counter import (
    measure_latencies,
    measure_window,
    nvml_pair_cost,
    open_rig,
    plugin_sensor,
    poll_stats,
    read_identity,
    record_poll,
    spread,
    write_traces,
)
from gpuval.inner import (
    Worker,
    aa_noise,
    expected_ratio_from_energy,
    flop_ratio,
    ratio_of_means,
    run_compare,
    run_inner,
    worker_main,
)
from gpuval.summary import g, pct, percent, save

for _path in (ROOT, ROOT / "examples"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@dataclass
class Ctx:
    """What the sections share: plan, folders, budget, results, the worker."""

    plan: Plan
    out: Path
    work: Path
    budget: Budget
    say: Progress
    results: Json = field(default_factory=dict)
    card: Json = field(default_factory=dict)
    _worker: Worker | None = None

    def worker(self) -> Worker:
        if self._worker is None:
            self.say("starting the GPU worker (torch import, CUDA init, warm-up)")
            timeout = min(self.plan.worker_timeout_s, self.time_left())
            self._worker = Worker(self.plan, self.work, timeout)
            self.say(f"worker ready: {self._worker.info}")
        return self._worker

    def release_worker(self) -> None:
        """End the worker: the next sessions must find no other process on the GPU."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def release_worker_quietly(self) -> None:
        try:
            self.release_worker()
        except Exception:
            self._worker = None

    def uuid(self) -> str | None:
        value = self.card.get("uuid") or (self._worker.uuid if self._worker else None)
        return None if value is None else str(value)

    def time_left(self) -> float:
        """Seconds a child may take: what is left of the budget less the reserve."""
        return self.budget.left() - self.plan.reserve_s

    def inner(self, name: str, *, update: bool, extra: float) -> Json:
        """One inner pytest session, with what is left of the budget as its limit."""
        timeout = min(self.plan.inner_timeout_s, self.time_left())
        if timeout < 1.0:
            self.say(f"inner session {name}: not started, the budget is spent")
            return {
                "name": name,
                "rc": None,
                "timed_out": True,
                "measurement": None,
                "tests": {},
                "why": "not started: the budget is spent",
            }
        return run_inner(
            self.plan, self.work, name, update=update, extra=extra, timeout_s=timeout, say=self.say
        )


# -- section 1: NVML facts -------------------------------------------------------------------


def section_nvml_facts(ctx: Ctx) -> Json:
    worker = ctx.worker()
    with open_rig(ctx.plan, worker.uuid) as rig:
        system, device = read_identity(rig)
        ctx.card.update(name=device["name"], uuid=device["uuid"], **system)
        ctx.say(
            f"card {device['name']}, driver {system['driver_version']}; counter "
            f"{rig.has_counter}, instant field {rig.has_field}; polling"
        )
        log, load_start, load = record_poll(rig, ctx.plan, worker)
        ctx.say(f"poll: {len(log.rows)} changes in {log.polls} polls; measuring latencies")
        latency = measure_latencies(rig, ctx.plan)
        ctx.say("running the plugin's NvmlSensor calibration")
        plugin = plugin_sensor(rig)
    traces = write_traces(ctx.out, ctx.plan, system, device, latency, log, load_start)
    return {
        "system": system,
        "device": device,
        "latency_s": latency,
        "load": load,
        "poll": poll_stats(log, load_start, ctx.plan),
        "plugin_sensor": plugin,
        "traces": traces,
    }


# -- section 2: counter vs integrated instant power ------------------------------------------


def section_counter_vs_power(ctx: Ctx) -> Json:
    worker, plan = ctx.worker(), ctx.plan
    deadline = ctx.budget.elapsed() + plan.estimate("counter_vs_power") * 1.5
    windows: list[Json] = []
    with open_rig(plan, ctx.uuid() or worker.uuid, start_s=plan.fake_load_start_s) as rig:
        if not (rig.has_counter and rig.has_field):
            why = f"counter {rig.has_counter}, instant field {rig.has_field}"
            return {"status": "skipped", "why": why}
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
    if not windows:
        return {"status": "skipped", "why": "no time left for a window", "load": load}
    ratios = [w["ratio_counter_over_field"] for w in windows if w["ratio_counter_over_field"]]
    usage = [w["ratio_counter_over_usage"] for w in windows if w["ratio_counter_over_usage"]]
    return {
        "windows": len(windows),
        "ratio_counter_over_field": spread(ratios),
        "ratio_counter_over_usage": spread(usage),
        "seconds": spread([w["seconds"] for w in windows]),
        "counter_w": spread([w["counter_w"] for w in windows if w["counter_w"]]),
        "load": load,
        "per_window": windows,
    }


# -- sections 3 and 4: the plugin itself -----------------------------------------------------


def _incomplete(runs: Sequence[Json]) -> Json:
    """A section status of ``error`` when an inner session left no measurement."""
    bad = [
        f"{r['name']} ({r.get('why') or 'rc ' + str(r['rc'])}"
        f"{', timed out' if r.get('timed_out') and not r.get('why') else ''})"
        for r in runs
        if r["measurement"] is None
    ]
    if not bad:
        return {}
    return {
        "status": "error",
        "why": f"no measurement from inner session {', '.join(bad)}; "
        "see log_tail and artifacts.tar.gz",
    }


def section_aa(ctx: Ctx) -> Json:
    ctx.release_worker()
    first = ctx.inner("aa1", update=True, extra=0.0)
    if first["measurement"] is None:  # no baseline: a second session would compare nothing
        return {**_incomplete([first]), "runs": [first], "verdict": "unavailable"}
    second = ctx.inner("aa2", update=False, extra=0.0)
    m1, m2 = first["measurement"], second["measurement"]
    comparison = (m2 or {}).get("comparison") or {}
    return {
        **_incomplete([first, second]),
        "runs": [first, second],
        "verdict": (m2 or {}).get("verdict") or "unavailable",
        "verdict_expected": "UNCHANGED",
        "session_ratio": ratio_of_means(m1, m2),
        "plugin_ratio": comparison.get("ratio"),
        "plugin_ci": comparison.get("ci"),
    }


def expected_ratio(ctx: Ctx, base_tpj: float | None) -> Json:
    """The A/B's expected ratio, measured without the plugin: generate time with and without
    the extra work, and the NVML energy of the extra work run alone."""
    worker, extra = ctx.worker(), ctx.plan.extra_work
    timed = worker.request(
        {"cmd": "time_generate", "extra": extra, "reps": ctx.plan.time_reps},
        min(120.0, ctx.time_left()),
    )
    facts = timed["facts"]
    out: Json = {
        "flop_fraction": facts["extra_flop_fraction"],
        "by_flops": flop_ratio(facts["extra_flop_fraction"]),
        "generate_s": {"base": timed["base_s"], "extra": timed["extra_s"]},
        "by_time": timed["base_s"] / timed["extra_s"],
        "facts": facts,
    }
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
        out.update(
            base_joules_per_call=base_j, by_energy=expected_ratio_from_energy(base_j, extra_j)
        )
    return out


def section_ab(ctx: Ctx) -> Json:
    ctx.release_worker()
    if not (ctx.work / "baseline").exists():
        return {"status": "skipped", "why": "no A/A baseline (section 3 did not write one)"}
    ab = ctx.inner("ab", update=False, extra=ctx.plan.extra_work)
    aa = ctx.results.get("aa", {}).get("runs", [])
    base = aa[0]["measurement"] if aa else None
    if ab["measurement"] is None:
        return {**_incomplete([ab]), "run": ab, "verdict": "unavailable"}
    m = ab["measurement"]
    comparison = m.get("comparison") or {}
    out: Json = {
        "run": ab,
        "verdict": m.get("verdict") or "unavailable",
        "verdict_expected": "REGRESSED",
        "extra_work": ctx.plan.extra_work,
        "measured_ratio": ratio_of_means(base, m),
        "plugin_ratio": comparison.get("ratio"),
        "plugin_ci": comparison.get("ci"),
        "compare_cli": run_compare(ctx.work, "aa2", "ab", min(60.0, max(ctx.time_left(), 1.0))),
    }
    ctx.say(
        f"A/B verdict {out['verdict']}, measured ratio {g(out['measured_ratio'])}; "
        "measuring the expected ratio"
    )
    try:
        expected = expected_ratio(ctx, (base or {}).get("tpj", {}).get("mean"))
        out["expected"] = expected
    finally:
        ctx.release_worker()
    ctx.say(
        f"A/B ratio {g(out['plugin_ratio'] or out['measured_ratio'])}; expected "
        f"{g(expected.get('by_energy'))} (energy of the extra work alone), "
        f"{g(expected.get('by_time'))} (generate time), {g(expected.get('by_flops'))} "
        "(1/(1+f))"
    )
    return out


# -- section 5: overhead ---------------------------------------------------------------------


def section_overhead(ctx: Ctx) -> Json:
    from overhead import meter_costs  # benchmarks/overhead.py, beside this script

    ctx.release_worker()
    with open_rig(ctx.plan, ctx.uuid()) as rig:
        pairs = nvml_pair_cost(rig, ctx.plan.overhead_pairs, ctx.plan.overhead_max_s)
    costs = meter_costs(ctx.plan.meter_windows)
    meter = {
        "windows": ctx.plan.meter_windows,
        "sim_pair_s": costs["sensor_only_s"],
        "call_form_s": costs["call_form_s"],
        "loop_form_s": costs["loop_form_s"],
        "meter_only_call_form_s": costs["call_form_s"] - costs["sensor_only_s"],
        "meter_only_loop_form_s": costs["loop_form_s"] - costs["sensor_only_s"],
    }
    total = pairs["median"] + meter["meter_only_call_form_s"]
    return {
        "nvml_pair_s": pairs,
        "meter": meter,
        "per_window_total_s": total,
        "note": "per-window total = NVML begin()+end() median + the meter's own "
        "bookkeeping (call form, sim sensor); wall-clock on this host",
    }


# -- section 6: A/A noise --------------------------------------------------------------------


def section_noise(ctx: Ctx) -> Json:
    runs = ctx.results.get("aa", {}).get("runs", [])
    if len(runs) < 2 or not runs[0].get("tests") or not runs[1].get("tests"):
        return {"status": "skipped", "why": "no windows from two A/A sessions (section 3)"}
    noise = aa_noise(runs[0]["tests"], runs[1]["tests"])
    if not noise["n_tests"]:
        return {**noise, "status": "error", "why": "no test was measured in both A/A sessions"}
    for key, t in noise["tests"].items():
        s1, s2 = t["sessions"]
        ctx.say(
            f"A/A noise {key}: within-session CV {percent(s1['cv'])} / {percent(s2['cv'])} "
            f"(n {s1['n']} / {s2['n']}), lag-1 {g(s1['lag1'], 3)} / {g(s2['lag1'], 3)} "
            f"(pooled {g(t['lag1'], 3)}), shift between sessions {pct(t['shift'])}, "
            f"sigma_b {g(t['sigma_b'], 3)}"
        )
    ctx.say(
        f"A/A noise shared across {noise['n_tests']} test(s): shift {pct(noise['shared_shift'])}"
    )
    return noise


# -- all of them -----------------------------------------------------------------------------


Section = tuple[str, str, Callable[[Ctx], Json]]


SECTIONS: tuple[Section, ...] = (
    ("nvml_facts", "1. NVML facts, update period, read latency", section_nvml_facts),
    ("counter_vs_power", "2. counter vs integrated instant power", section_counter_vs_power),
    ("aa", "3. A/A through the plugin", section_aa),
    ("ab", "4. A/B through the plugin", section_ab),
    ("overhead", "5. plugin overhead per window", section_overhead),
    ("noise", "6. A/A noise: within-session CV, lag-1, shift between sessions", section_noise),
)


def run_section(ctx: Ctx, name: str, title: str, fn: Callable[[Ctx], Json]) -> Json:
    need, left = ctx.plan.estimate(name), ctx.budget.left()
    if left < need:
        ctx.say(f"{title}: SKIPPED ({left:.0f} s left, needs ~{need:.0f} s)")
        return {"status": "skipped", "why": f"{left:.0f} s left of the budget, needs ~{need:.0f} s"}
    ctx.say(f"{title}: start")
    start = time.monotonic()
    try:
        result = fn(ctx)
    except Exception as exc:
        ctx.say(f"{title}: FAILED {type(exc).__name__}: {exc}")
        ctx.release_worker_quietly()
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "seconds": time.monotonic() - start,
        }
    status, why = result.pop("status", "ok"), result.pop("why", None)
    ctx.say(f"{title}: {status} in {time.monotonic() - start:.1f} s{': ' + why if why else ''}")
    return {"status": status, "why": why, "result": result, "seconds": time.monotonic() - start}


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            timeout=10,
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def document(ctx: Ctx, sections: Json) -> Json:
    """summary.json's content: the run's facts and every section's outcome, in order."""
    return {
        "format": "pytest-tpw-gpu-validation/1",
        "dry": ctx.plan.dry,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "python": sys.version.split()[0],
        "card": dict(ctx.card),
        "budget_s": ctx.budget.total_s,
        "elapsed_s": ctx.budget.elapsed(),
        "plan": {k: v for k, v in vars(ctx.plan).items() if k != "estimates"},
        "sections": sections,
    }


def run_sections(ctx: Ctx, sections: Sequence[Section]) -> Json:
    """Run the sections in order, writing the summary after each; an interrupt keeps it."""
    done: Json = {}
    try:
        for name, title, fn in sections:
            done[name] = run_section(ctx, name, title, fn)
            ctx.results[name] = done[name].get("result", {})
            save(ctx.out, ctx.work, document(ctx, done))
    except KeyboardInterrupt:
        ctx.say("interrupted: writing what was measured")
        for name, _title, _fn in sections:
            done.setdefault(name, {"status": "interrupted"})
    finally:
        ctx.release_worker_quietly()
        save(ctx.out, ctx.work, document(ctx, done))
    return done


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the results (created)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="global time budget in seconds (default 450; dry run 60)",
    )
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run every section on the CPU: stand-in pynvml, sim sensor",
    )
    parser.add_argument(
        "--extra-work",
        type=float,
        default=0.10,
        help="A/B: fraction of extra matrix work per token (default 0.10)",
    )
    parser.add_argument(
        "--sections",
        default="1,2,3,4,5,6",
        help="which sections to run, by number or name, e.g. 1,2,5 (default all)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch folder for the inner runs (default: a temporary one)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="gpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker and args.out is None:
        parser.error("--out is required")
    return args


def make_ctx(args: argparse.Namespace) -> Ctx:
    plan = replace(DRY_PLAN if args.cpu_dry_run else Plan(), extra_work=args.extra_work)
    total = args.budget_s if args.budget_s is not None else (60.0 if plan.dry else 450.0)
    budget = Budget(total)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="tpw-gpu-validation-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return Ctx(plan, out, work, budget, Progress(budget, out / "progress.log"))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.size)
    ctx = make_ctx(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    wanted = {s.strip() for s in args.sections.split(",")}
    chosen = [s for i, s in enumerate(SECTIONS, 1) if str(i) in wanted or s[0] in wanted]
    ctx.say(
        f"pytest-tpw GPU validation{' (CPU dry run)' if ctx.plan.dry else ''}: "
        f"out {ctx.out}, work {ctx.work}, budget {ctx.budget.total_s:g} s"
    )
    sections = run_sections(ctx, chosen)
    print((ctx.out / "summary.md").read_text(encoding="utf-8"), flush=True)
    failed = [n for n, s in sections.items() if s.get("status") in ("error", "interrupted")]
    ctx.say(f"done; sections failed: {failed or 'none'}; results in {ctx.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
