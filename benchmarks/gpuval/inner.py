"""The inner pytest sessions of the plugin: running them, reading their --tpw-json."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from gpuval.common import ROOT, SUITE, Json, inner_env
from gpuval.context import Ctx
from gpuval.fmt import g
from gpuval.stats_util import spread

INNER_TEST_NAME = "test_decode_gpu.py"


def inner_folder(work: Path) -> Path:
    folder = work / "inner"
    if not (folder / INNER_TEST_NAME).exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SUITE, folder / INNER_TEST_NAME)
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return folder


def inner_command(ctx: Ctx, name: str, update: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "pytest_tpw.plugin", "-p", "no:cacheprovider",
           "-q", INNER_TEST_NAME, "--tpw", "--tpw-sensor", ctx.plan.inner_sensor,
           "--tpw-baseline-dir", str(ctx.work / "baseline"),
           "--tpw-json", str(ctx.work / f"{name}.json"), *ctx.plan.inner_args]
    return [*cmd, "--tpw-update"] if update else cmd


def run_inner(ctx: Ctx, name: str, update: bool, extra: float) -> Json:
    """One pytest session of the inner suite; its ``--tpw-json`` parsed."""
    folder = inner_folder(ctx.work)
    facts_path = ctx.work / f"{name}_facts.json"
    env = inner_env({"TPW_VALIDATION_SIZE": ctx.plan.size, "TPW_EXTRA_WORK": f"{extra:g}",
                     "TPW_VALIDATION_FACTS": str(facts_path)})
    cmd = inner_command(ctx, name, update)
    timeout = min(ctx.plan.inner_timeout_s, max(ctx.budget.left() - 15.0, 5.0))
    ctx.say(f"inner session {name}: pytest ... {' '.join(cmd[7:])} (timeout {timeout:.0f} s)")
    log_path = ctx.work / f"{name}.log"
    result: Json = {"name": name, "update": update, "extra": extra, "log": log_path.name}
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        result.update(run_logged(cmd, folder, env, log, timeout))
    result["seconds"] = time.monotonic() - start
    result["measurement"] = read_measurement(ctx.work / f"{name}.json")
    if facts_path.exists():
        result["facts"] = json.loads(facts_path.read_text(encoding="utf-8"))
    if result["measurement"] is None or result["rc"] not in (0, 1):
        result["log_tail"] = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    m = result["measurement"] or {}
    ctx.say(f"inner session {name}: rc {result['rc']}, {result['seconds']:.0f} s, verdict "
            f"{m.get('verdict', 'unavailable')}, tokens/J {g(m.get('tpj', {}).get('mean'))} "
            f"(n {m.get('tpj', {}).get('n', 0)})")
    return result


def run_logged(cmd: Sequence[str], cwd: Path, env: dict[str, str], log: IO[str],
               timeout: float) -> Json:
    """Run a command into ``log``; on timeout kill its process group."""
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        return {"rc": proc.wait(timeout=timeout), "timed_out": False}
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"rc": None, "timed_out": True}
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def read_measurement(path: Path) -> Json | None:
    """The decode test's measurement from a ``--tpw-json`` file (None when there is none)."""
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    found = doc.get("measurements", {})
    items = list(found.values()) if isinstance(found, dict) else list(found)
    ours = [m for m in items if "test_decode" in str(m.get("nodeid", ""))] or items
    if not ours:
        return None
    return summarize_measurement(ours[0])


def summarize_measurement(m: Json) -> Json:
    samples = m.get("samples", [])
    tpj = [float(s["tokens_per_joule"]) for s in samples]
    joules = sum(float(s["joules"]) for s in samples)
    seconds = sum(float(s["seconds"]) for s in samples)
    calls = sum(int(s.get("calls", 1)) for s in samples)
    comparison = m.get("comparison") or {}
    return {"verdict": m.get("verdict") or comparison.get("verdict"), "comparison": comparison,
            "summary": m.get("summary"), "tpj": spread(tpj), "samples_tpj": tpj,
            "watts": joules / seconds if seconds else None,
            "tokens_per_s": sum(int(s["tokens"]) for s in samples) / seconds if seconds else None,
            "seconds_per_call": seconds / calls if calls else None,
            "window_s": spread([float(s["seconds"]) for s in samples]),
            "gpu_state": gpu_state(samples), "warnings": list(m.get("warnings", []))[:10]}


def gpu_state(samples: Sequence[Json]) -> Json:
    """Ranges of the NVML per-window state: temperatures, SM clocks, clock-event reasons."""
    temps: list[int] = []
    clocks: list[int] = []
    reasons: set[str] = set()
    pids: set[int] = set()
    for sample in samples:
        for state in sample.get("state", {}).values():
            if not isinstance(state, dict):
                continue
            temps += [v for v in (state.get("temperature_c") or {}).values() if v is not None]
            clocks += [state["sm_clock_mhz"]] if state.get("sm_clock_mhz") else []
            reasons.update(state.get("clocks_event_reasons") or [])
            pids.update(state.get("other_pids") or [])
    return {"temperature_c": [min(temps), max(temps)] if temps else None,
            "sm_clock_mhz": [min(clocks), max(clocks)] if clocks else None,
            "clocks_event_reasons": sorted(reasons), "other_pids": sorted(pids)}


def ratio_of_means(a: Json | None, b: Json | None) -> float | None:
    """mean tokens/J of b over that of a."""
    if not a or not b or not a["tpj"].get("n") or not b["tpj"].get("n"):
        return None
    return float(b["tpj"]["mean"] / a["tpj"]["mean"])


def run_compare(ctx: Ctx, a: str, b: str) -> Json:
    """``python -m pytest_tpw.cli compare A B`` when the command exists."""
    if importlib.util.find_spec("pytest_tpw.cli") is None:
        return {"status": "skipped", "why": "pytest_tpw.cli does not exist in this tree"}
    paths = [str(ctx.work / f"{n}.json") for n in (a, b)]
    if not all(Path(p).exists() for p in paths):
        return {"status": "skipped", "why": "a result file is missing"}
    cmd = [sys.executable, "-m", "pytest_tpw.cli", "compare", *paths]
    log_path = ctx.work / "compare.log"
    with log_path.open("w", encoding="utf-8") as log:
        outcome = run_logged(cmd, ROOT, inner_env({}), log, min(60.0, ctx.budget.left()))
    return {**outcome, "output": log_path.read_text(encoding="utf-8", errors="replace")[-3000:]}
