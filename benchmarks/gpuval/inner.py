"""The plugin measured from outside: the GPU worker, the inner pytest sessions, A/A noise.

The worker (``gpu_validation.py --worker``) is a subprocess holding the GPU work (matmul
loads, the decode workload timed without the plugin), so that the script itself never holds a
CUDA context. The inner sessions run ``gpu_validation_suite/gpu_suite_decode.py`` under the
plugin and are read back from their ``--tpw-json``. The A/A noise figures (within-session CV
and lag-1 autocorrelation of the windows' tokens/J, the shift between the two sessions per
test and shared across tests) use the package's statistics (``pytest_tpw.stats``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from gpuval import ROOT, SCRIPT, SUITE, Json, Plan, inner_env
from gpuval.counter import spread
from pytest_tpw import stats

INNER_TEST_NAME = "test_decode_gpu.py"
REPLY_PREFIX = "@@ "

# -- the worker ------------------------------------------------------------------------------


def load_suite() -> Any:
    """The inner suite module, imported by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_suite_decode", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class WorkerState:
    """The worker process's side: CUDA (or CPU) work on request, answered in JSON lines."""

    def __init__(self, size: str) -> None:
        import torch

        self.torch = torch
        self.suite = load_suite()
        self.shape = self.suite.SHAPES[size]
        self.device = torch.device(self.shape.device)
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        n = 8192 if self.device.type == "cuda" else 256
        dtype = getattr(torch, self.shape.dtype)
        gen = torch.Generator(device=self.device).manual_seed(3)
        self.a, self.b = (
            torch.randn(n, n, generator=gen, device=self.device, dtype=dtype) for _ in range(2)
        )
        self.decodes: dict[float, Any] = {}
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.stats: Json = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def decode(self, extra: float) -> Any:
        if extra not in self.decodes:
            self.decodes[extra] = self.suite.Decode(self.shape, extra)
        return self.decodes[extra]

    def handle(self, msg: Json) -> Json:
        handler = getattr(self, "cmd_" + str(msg.get("cmd")), None)
        if handler is None:
            raise ValueError(f"unknown worker command {msg.get('cmd')!r}")
        reply: Json = handler(msg)
        return reply

    def cmd_hello(self, msg: Json) -> Json:
        for _ in range(3):
            self.a @ self.b  # warm-up: cuBLAS handles and kernels load here
        self.sync()
        torch = self.torch
        info: Json = {"device": str(self.device), "torch": torch.__version__}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            uuid = getattr(props, "uuid", None)
            info.update(
                name=props.name,
                cuda=torch.version.cuda,
                uuid=None if uuid is None else "GPU-" + str(uuid).removeprefix("GPU-"),
            )
        return info

    def cmd_load(self, msg: Json) -> Json:
        if self.thread is not None:
            raise RuntimeError("a load is already running")
        if msg.get("kind") == "extra":
            work: Callable[[], Any] = self.decode(float(msg["extra"])).extra_only
        else:

            def work() -> None:
                for _ in range(8):
                    self.a @ self.b

        started = threading.Event()
        self.stop_event.clear()
        self.stats = {"calls": 0, "error": None}
        self.thread = threading.Thread(target=self._load, args=(work, started), daemon=True)
        self.thread.start()
        if not started.wait(120):
            raise TimeoutError("the load did not start within 120 s")
        return {"started": True, "error": self.stats["error"]}

    def _load(self, work: Callable[[], Any], started: threading.Event) -> None:
        try:
            work()
            self.sync()
            started.set()
            t0 = time.perf_counter()
            while not self.stop_event.is_set():
                work()
                self.sync()
                self.stats["calls"] += 1
            self.stats["seconds"] = time.perf_counter() - t0
        except Exception as exc:
            self.stats["error"] = f"{type(exc).__name__}: {exc}"
            started.set()

    def cmd_stop(self, msg: Json) -> Json:
        if self.thread is None:
            raise RuntimeError("no load is running")
        self.stop_event.set()
        self.thread.join()
        self.thread = None
        result = dict(self.stats)
        calls, seconds = result.get("calls", 0), result.get("seconds")
        result["per_call_s"] = seconds / calls if calls and seconds else None
        return result

    def cmd_time_generate(self, msg: Json) -> Json:
        decode = self.decode(float(msg["extra"]))
        reps = int(msg.get("reps", 5))
        times: dict[str, list[float]] = {"base": [], "extra": []}
        for rep in range(reps + 1):  # the first round is a warm-up
            for key, enabled in (("base", False), ("extra", True)):
                decode.extra_enabled = enabled
                self.sync()
                t0 = time.perf_counter()
                decode.generate()
                self.sync()
                if rep:
                    times[key].append(time.perf_counter() - t0)
        decode.extra_enabled = True
        return {
            "base_s": statistics.median(times["base"]),
            "extra_s": statistics.median(times["extra"]),
            "reps": reps,
            "facts": decode.facts(),
        }

    def cmd_quit(self, msg: Json) -> Json:
        if self.thread is not None:
            self.cmd_stop(msg)
        return {"bye": True}


def worker_main(size: str) -> int:
    """``--worker``: answer one JSON request per stdin line on stdout (prefixed lines)."""
    state: WorkerState | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            state = state or WorkerState(size)
            reply = state.handle(msg)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print(REPLY_PREFIX + json.dumps(reply, default=str), flush=True)
        if msg.get("cmd") == "quit":
            break
    return 0


class Worker:
    """This process's side of the worker: a subprocess holding the GPU work."""

    def __init__(self, plan: Plan, work: Path, timeout_s: float) -> None:
        self.log = (work / "worker.log").open("a", encoding="utf-8")
        cmd = [sys.executable, str(SCRIPT), "--worker", "--size", plan.size]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
            env=inner_env({}),
            cwd=ROOT,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.info = self.request({"cmd": "hello"}, timeout_s)
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(REPLY_PREFIX):
                self.replies.put(line[len(REPLY_PREFIX) :])
        self.replies.put(None)

    def request(self, msg: Json, timeout_s: float = 120.0) -> Json:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise RuntimeError(f"the worker is gone ({exc}); see worker.log") from exc
        try:
            line = self.replies.get(timeout=max(timeout_s, 1.0))
        except queue.Empty:
            raise TimeoutError(
                f"the worker did not answer {msg['cmd']!r} within {timeout_s:.0f} s; see worker.log"
            ) from None
        if line is None:
            raise RuntimeError(f"the worker exited during {msg['cmd']!r}; see worker.log")
        reply: Json = json.loads(line)
        if reply.get("error"):
            raise RuntimeError(f"worker {msg['cmd']!r}: {reply['error']}")
        return reply

    @property
    def uuid(self) -> str | None:
        value = self.info.get("uuid")
        return None if value is None else str(value)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.request({"cmd": "quit"}, 20.0)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        self.log.close()


# -- the inner pytest sessions ---------------------------------------------------------------


def inner_folder(work: Path) -> Path:
    folder = work / "inner"
    if not (folder / INNER_TEST_NAME).exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SUITE, folder / INNER_TEST_NAME)
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return folder


def inner_command(plan: Plan, work: Path, name: str, update: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "pytest_tpw.hooks.plugin",
        "-p",
        "no:cacheprovider",
        "-q",
        INNER_TEST_NAME,
        "--tpw",
        "--tpw-sensor",
        plan.inner_sensor,
        "--tpw-baseline-dir",
        str(work / "baseline"),
        "--tpw-json",
        str(work / f"{name}.json"),
        *plan.inner_args,
    ]
    return [*cmd, "--tpw-update"] if update else cmd


def run_inner(
    plan: Plan,
    work: Path,
    name: str,
    *,
    update: bool,
    extra: float,
    timeout_s: float,
    say: Callable[[str], None],
) -> Json:
    """One pytest session of the inner suite; its ``--tpw-json`` read back."""
    folder = inner_folder(work)
    facts_path = work / f"{name}_facts.json"
    env = inner_env(
        {
            "TPW_VALIDATION_SIZE": plan.size,
            "TPW_EXTRA_WORK": f"{extra:g}",
            "TPW_VALIDATION_FACTS": str(facts_path),
        }
    )
    cmd = inner_command(plan, work, name, update)
    say(f"inner session {name}: pytest ... {' '.join(cmd[7:])} (timeout {timeout_s:.0f} s)")
    log_path = work / f"{name}.log"
    result: Json = {"name": name, "update": update, "extra": extra, "log": log_path.name}
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        result.update(run_logged(cmd, folder, env, log, timeout_s))
    result["seconds"] = time.monotonic() - start
    result["measurement"] = read_measurement(work / f"{name}.json")
    result["tests"] = read_windows(work / f"{name}.json")
    if facts_path.exists():
        result["facts"] = json.loads(facts_path.read_text(encoding="utf-8"))
    if result["measurement"] is None or result["rc"] not in (0, 1):
        result["log_tail"] = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    m = result["measurement"] or {}
    tpj = m.get("tpj", {})
    say(
        f"inner session {name}: rc {result['rc']}, {result['seconds']:.0f} s, verdict "
        f"{m.get('verdict', 'unavailable')}, tokens/J {_g(tpj.get('mean'))} (n {tpj.get('n', 0)})"
    )
    return result


def run_logged(
    cmd: Sequence[str], cwd: Path, env: dict[str, str], log: IO[str], timeout: float
) -> Json:
    """Run a command into ``log``; on timeout (or an interrupt) kill its process group."""
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
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


def _measurements(path: Path) -> list[Json]:
    if not path.exists():
        return []
    found = json.loads(path.read_text(encoding="utf-8")).get("measurements", {})
    return list(found.values()) if isinstance(found, dict) else list(found)


def read_measurement(path: Path) -> Json | None:
    """The decode test's measurement from a ``--tpw-json`` file (None when there is none)."""
    items = _measurements(path)
    ours = [m for m in items if "test_decode" in str(m.get("nodeid", ""))] or items
    return summarize_measurement(ours[0]) if ours else None


def read_windows(path: Path) -> dict[str, list[float]]:
    """Every measurement's recorded windows' tokens/J, in time order, by test (and name)."""
    out: dict[str, list[float]] = {}
    for m in _measurements(path):
        key = str(m.get("nodeid")) + (f" [{m['name']}]" if m.get("name") else "")
        out[key] = [float(s["tokens_per_joule"]) for s in m.get("samples", [])]
    return out


def summarize_measurement(m: Json) -> Json:
    samples = m.get("samples", [])
    tpj = [float(s["tokens_per_joule"]) for s in samples]
    joules = sum(float(s["joules"]) for s in samples)
    seconds = sum(float(s["seconds"]) for s in samples)
    calls = sum(int(s.get("calls", 1)) for s in samples)
    tokens = sum(int(s["tokens"]) for s in samples)
    comparison = m.get("comparison") or {}
    return {
        "verdict": m.get("verdict") or comparison.get("verdict"),
        "comparison": comparison,
        "summary": m.get("summary"),
        "tpj": spread(tpj),
        "samples_tpj": tpj,
        "watts": joules / seconds if seconds else None,
        "tokens_per_s": tokens / seconds if seconds else None,
        "seconds_per_call": seconds / calls if calls else None,
        "window_s": spread([float(s["seconds"]) for s in samples]),
        "gpu_state": gpu_state(samples),
        "warnings": list(m.get("warnings", []))[:10],
    }


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
    return {
        "temperature_c": [min(temps), max(temps)] if temps else None,
        "sm_clock_mhz": [min(clocks), max(clocks)] if clocks else None,
        "clocks_event_reasons": sorted(reasons),
        "other_pids": sorted(pids),
    }


def ratio_of_means(a: Json | None, b: Json | None) -> float | None:
    """mean tokens/J of b over that of a."""
    if not a or not b or not a["tpj"].get("n") or not b["tpj"].get("n"):
        return None
    return float(b["tpj"]["mean"] / a["tpj"]["mean"])


def run_compare(work: Path, a: str, b: str, timeout_s: float) -> Json:
    """``python -m pytest_tpw.cli compare A B`` when the command exists."""
    if importlib.util.find_spec("pytest_tpw.cli") is None:
        return {"status": "skipped", "why": "pytest_tpw.cli does not exist in this tree"}
    paths = [str(work / f"{n}.json") for n in (a, b)]
    if not all(Path(p).exists() for p in paths):
        return {"status": "skipped", "why": "a result file is missing"}
    cmd = [sys.executable, "-m", "pytest_tpw.cli", "compare", *paths]
    log_path = work / "compare.log"
    with log_path.open("w", encoding="utf-8") as log:
        outcome = run_logged(cmd, ROOT, inner_env({}), log, timeout_s)
    return {**outcome, "output": log_path.read_text(encoding="utf-8", errors="replace")[-3000:]}


# -- expected A/B ratios ---------------------------------------------------------------------


def expected_ratio_from_energy(base_j: float, extra_j: float) -> float:
    """tokens/J with the extra work over tokens/J without, for the same tokens."""
    return base_j / (base_j + extra_j)


def flop_ratio(fraction: float) -> float:
    """tokens/J ratio if energy grew exactly with matrix FLOPs: an upper bound on the drop."""
    return 1.0 / (1.0 + fraction)


# -- A/A noise figures -----------------------------------------------------------------------


def session_noise(values: Sequence[float]) -> Json:
    """One session's windows of one test: n, level, CV and lag-1 autocorrelation.

    ``level`` is the package's robust level (``stats.summarize``: exp of the 20 %-trimmed mean
    of log tokens/J); ``lag1`` is ``stats.lag1_autocorrelation`` (bias-corrected, outliers
    beyond 3 MADs left out; None under 4 windows).
    """
    if not values:
        return {"n": 0}
    rho, pairs = stats.lag1_autocorrelation([np.asarray(values, dtype=float)])
    return {
        "n": len(values),
        "level": stats.summarize(values).estimate,
        "cv": spread(values).get("cv"),
        "lag1": rho if pairs else None,
        "lag1_pairs": pairs,
    }


def between_session_sd(sessions: Sequence[np.ndarray]) -> float | None:
    """SD of session levels (20 %-trimmed means of log tokens/J) beyond what their Yuen
    squared standard errors explain, floored at 0; None with fewer than 2 usable sessions."""
    levels, errors = [], []
    for logs in sessions:
        m, d, h = stats.trimmed_stats(np.asarray(logs, dtype=float))
        if h >= 2:
            levels.append(float(m))
            errors.append(float(d))
    if len(levels) < 2:
        return None
    between = statistics.variance(levels) - statistics.fmean(errors)
    return math.sqrt(between) if between > 0.0 else 0.0


def aa_noise(first: dict[str, list[float]], second: dict[str, list[float]]) -> Json:
    """Noise figures of the A/A sessions, per test and shared across the tests.

    Per test: each session's :func:`session_noise`, the within-session CV (mean of the two),
    the lag-1 autocorrelation pooled over both sessions, the shift ``level2 / level1 - 1``
    and ``sigma_b`` (:func:`between_session_sd`: the between-session SD of log tokens/J
    beyond what within-session noise explains). Shared: the median of the tests' log shifts,
    and each test's shift with the shared one taken out.
    """
    tests: Json = {}
    logs: list[float] = []
    for key in sorted(set(first) & set(second)):
        a, b = first[key], second[key]
        if not a or not b:
            continue
        s1, s2 = session_noise(a), session_noise(b)
        rho, pairs = stats.lag1_autocorrelation([np.asarray(a), np.asarray(b)])
        log_shift = math.log(s2["level"] / s1["level"])
        logs.append(log_shift)
        cvs = [s["cv"] for s in (s1, s2) if s.get("cv") is not None]
        sigma_b = between_session_sd([np.log(np.asarray(a)), np.log(np.asarray(b))])
        tests[key] = {
            "sessions": [s1, s2],
            "within_cv": statistics.fmean(cvs) if cvs else None,
            "lag1": rho if pairs else None,
            "lag1_pairs": pairs,
            "shift": math.expm1(log_shift),
            "log_shift": log_shift,
            "sigma_b": sigma_b,
        }
    shared = statistics.median(logs) if logs else None
    for entry in tests.values():
        entry["shift_less_shared"] = (
            None if shared is None else math.expm1(entry["log_shift"] - shared)
        )
    cvs = [t["within_cv"] for t in tests.values() if t["within_cv"] is not None]
    lags = [t["lag1"] for t in tests.values() if t["lag1"] is not None]
    return {
        "tests": tests,
        "n_tests": len(tests),
        "shared_shift": None if shared is None else math.expm1(shared),
        "median_within_cv": statistics.median(cvs) if cvs else None,
        "median_lag1": statistics.median(lags) if lags else None,
        "note": "shared shift = median over tests of log(level2/level1); with one test it "
        "equals that test's shift",
    }


def _g(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
