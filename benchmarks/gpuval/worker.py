"""The GPU worker subprocess (``--worker``) and this process's handle on it."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuval.common import ROOT, SCRIPT, SUITE, Json, inner_env
from gpuval.plan import Plan

REPLY_PREFIX = "@@ "


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
        self.a, self.b = (torch.randn(n, n, generator=gen, device=self.device, dtype=dtype)
                          for _ in range(2))
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
            info.update(name=props.name, cuda=torch.version.cuda,
                        uuid=None if uuid is None else "GPU-" + str(uuid).removeprefix("GPU-"))
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
        stats = dict(self.stats)
        calls, seconds = stats.get("calls", 0), stats.get("seconds")
        stats["per_call_s"] = seconds / calls if calls and seconds else None
        return stats

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
        return {"base_s": statistics.median(times["base"]),
                "extra_s": statistics.median(times["extra"]), "reps": reps,
                "facts": decode.facts()}

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
        env = inner_env({})
        cmd = [sys.executable, str(SCRIPT), "--worker", "--size", plan.size]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, env=env, cwd=ROOT)
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
                self.replies.put(line[len(REPLY_PREFIX):])
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
            raise TimeoutError(f"the worker did not answer {msg['cmd']!r} within "
                               f"{timeout_s:.0f} s; see worker.log") from None
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
