"""Validate pytest-tpw on a real NVIDIA GPU in one run: NVML facts, counter vs instant power,
A/A and A/B through the plugin itself, the plugin's overhead. MEASUREMENT.md, "On a real GPU".

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
   bookkeeping (``sim`` sensor, as ``benchmarks/overhead.py``).

Output (at most 8 files, flat, as the device tool returns them): ``progress.log``,
``summary.md``, ``summary.json``, the two traces, ``artifacts.tar.gz`` (the inner runs' JSON,
logs and baseline, per-window data). GPU work runs in a worker subprocess (``--worker``), so this
process never holds a CUDA context: the inner pytest sessions see no other process on the GPU.

This file parses the arguments and runs the sections; the work is in the package ``gpuval``
beside it (``benchmarks/gpuval/``, one job a module), found as ``sys.path[0]`` is this folder.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from gpuval.common import ROOT, Json
from gpuval.context import Ctx
from gpuval.plan import DRY_PLAN, Budget, Plan, Progress
from gpuval.sections import SECTIONS, Section
from gpuval.summary import save
from gpuval.worker import worker_main

for _path in (ROOT, ROOT / "examples"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def run_section(ctx: Ctx, name: str, title: str, fn: Callable[[Ctx], Json]) -> Json:
    need, left = ctx.plan.estimate(name), ctx.budget.left()
    if left < need:
        ctx.say(f"{title}: SKIPPED ({left:.0f} s left, needs ~{need:.0f} s)")
        return {"status": "skipped", "why": f"{left:.0f} s left of the budget, needs "
                                            f"~{need:.0f} s"}
    ctx.say(f"{title}: start")
    start = time.monotonic()
    try:
        result = fn(ctx)
    except Exception as exc:
        ctx.say(f"{title}: FAILED {type(exc).__name__}: {exc}")
        ctx.release_worker_quietly()
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "seconds": time.monotonic() - start}
    status, why = result.pop("status", "ok"), result.pop("why", None)
    ctx.say(f"{title}: {status} in {time.monotonic() - start:.1f} s{': ' + why if why else ''}")
    return {"status": status, "why": why, "result": result, "seconds": time.monotonic() - start}


def run_sections(ctx: Ctx, sections: Sequence[Section]) -> Json:
    done: Json = {}
    try:
        for name, title, fn in sections:
            done[name] = run_section(ctx, name, title, fn)
            ctx.results[name] = done[name].get("result", {})
            save(ctx, done)
    except KeyboardInterrupt:
        ctx.say("interrupted: writing what was measured")
        for name, _title, _fn in sections:
            done.setdefault(name, {"status": "interrupted"})
    finally:
        ctx.release_worker_quietly()
        save(ctx, done)
    return done


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the results (created)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="global time budget in seconds (default 450; dry run 60)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every section on the CPU: stand-in pynvml, sim sensor")
    parser.add_argument("--extra-work", type=float, default=0.10,
                        help="A/B: fraction of extra matrix work per token (default 0.10)")
    parser.add_argument("--sections", default="1,2,3,4,5",
                        help="which sections to run, e.g. 1,2,5 (default all)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for the inner runs (default: a temporary one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="gpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker and args.out is None:
        parser.error("--out is required")
    return args


def make_ctx(args: argparse.Namespace) -> Ctx:
    plan = replace(DRY_PLAN if args.cpu_dry_run else Plan(), extra_work=args.extra_work)
    budget = Budget(args.budget_s if args.budget_s is not None
                    else (60.0 if plan.dry else 450.0))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="tpw-gpu-validation-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    say = Progress(budget, out / "progress.log")
    return Ctx(plan, out, work, budget, say)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.size)
    ctx = make_ctx(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    wanted = {s.strip() for s in args.sections.split(",")}
    chosen = [s for i, s in enumerate(SECTIONS, 1) if str(i) in wanted or s[0] in wanted]
    ctx.say(f"pytest-tpw GPU validation{' (CPU dry run)' if ctx.plan.dry else ''}: "
            f"out {ctx.out}, work {ctx.work}, budget {ctx.budget.total_s:g} s")
    sections = run_sections(ctx, chosen)
    print((ctx.out / "summary.md").read_text(encoding="utf-8"), flush=True)
    failed = [n for n, s in sections.items() if s.get("status") in ("error", "interrupted")]
    ctx.say(f"done; sections failed: {failed or 'none'}; results in {ctx.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
