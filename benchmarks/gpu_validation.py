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
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import itertools
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
SUITE = ROOT / "benchmarks" / "gpu_validation_suite" / "gpu_suite_decode.py"
INNER_TEST_NAME = "test_decode_gpu.py"
SYNTHETIC_TRACE = "nvml_synthetic_h100.json"
TRACE_FORMAT = "pytest-tpw-nvml-trace/1"
COLUMNS = ["t_s", "energy_mj", "power_instant_mw", "temperature_c", "sm_clock_mhz",
           "mem_clock_mhz", "clocks_event_reasons"]
MAX_TRACE_BYTES = 190_000
POWER_INSTANT_FIELD = 186  # NVML_FI_DEV_POWER_INSTANT in nvml.h, for bindings that lack it
VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
REPLY_PREFIX = "@@ "
for _path in (ROOT, ROOT / "examples"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

Json = dict[str, Any]


# -- arithmetic ------------------------------------------------------------------------------


def quantiles(values: Sequence[float]) -> Json:
    """median, p10, p90, p99, mean, min, max and n of some numbers (empty: n = 0 only)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "median": statistics.median(ordered), "p10": pick(0.1),
            "p90": pick(0.9), "p99": pick(0.99), "mean": statistics.fmean(ordered),
            "min": ordered[0], "max": ordered[-1]}


def spread(values: Sequence[float]) -> Json:
    """mean, standard deviation, coefficient of variation, median, min, max, n."""
    if not values:
        return {"n": 0}
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": mean, "sd": sd, "cv": sd / mean if mean else None,
            "median": statistics.median(values), "min": min(values), "max": max(values)}


def trapezoid_joules(samples: Sequence[tuple[float, float]]) -> float:
    """Energy of (seconds, milliwatts) samples by the trapezoidal rule, in joules."""
    pairs = itertools.pairwise(samples)
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in pairs) / 1000.0


def change_times(rows: Sequence[Sequence[Any]], column: int, start: float = -math.inf,
                 end: float = math.inf) -> list[float]:
    """Times (column 0) at which ``column`` took a new value, within [start, end]."""
    times, last = [], None
    for index, row in enumerate(rows):
        if index > 0 and row[column] != last and start <= row[0] <= end:
            times.append(float(row[0]))
        last = row[column]
    return times


def intervals(times: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def expected_ratio_from_energy(base_j: float, extra_j: float) -> float:
    """tokens/J with the extra work over tokens/J without, for the same tokens."""
    return base_j / (base_j + extra_j)


def flop_ratio(fraction: float) -> float:
    """tokens/J ratio if energy grew exactly with matrix FLOPs: an upper bound on the drop."""
    return 1.0 / (1.0 + fraction)


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100_80gb_hbm3``."""
    text = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.IGNORECASE).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_") or "gpu"


# -- plan, budget, progress ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Every size and duration of a run: the GPU plan, or a small one for the CPU dry run."""

    dry: bool = False
    size: str = "gpu"
    inner_sensor: str = "nvml"
    inner_args: tuple[str, ...] = ()
    extra_work: float = 0.10
    latency_calls: int = 2000
    aux_latency_calls: int = 200
    latency_max_s: float = 2.0
    poll_step_s: float = 0.0002
    idle_s: float = 1.5
    load_s: float = 3.0
    ramp_s: float = 0.5
    windows: int = 20
    window_s: tuple[float, float] = (1.0, 3.0)
    sample_interval_s: float = 0.015
    fake_load_start_s: float = 0.6
    overhead_pairs: int = 1000
    overhead_max_s: float = 5.0
    meter_windows: int = 5000
    time_reps: int = 5
    extra_window_s: float = 2.0
    worker_timeout_s: float = 180.0
    inner_timeout_s: float = 180.0
    #: Seconds each section is expected to need; a section starts only if that much is left.
    estimates: tuple[tuple[str, float], ...] = (
        ("nvml_facts", 40.0), ("counter_vs_power", 65.0), ("aa", 130.0), ("ab", 100.0),
        ("overhead", 20.0))

    def estimate(self, section: str) -> float:
        return dict(self.estimates).get(section, 10.0)


DRY_PLAN = Plan(
    dry=True, size="dry", inner_sensor="sim", inner_args=("--tpw-min-window", "0.05"),
    latency_calls=300, aux_latency_calls=50, idle_s=0.4, load_s=2.0, ramp_s=0.2, windows=4,
    window_s=(0.3, 0.6), overhead_pairs=300, meter_windows=2000, time_reps=2,
    extra_window_s=0.3, worker_timeout_s=60.0, inner_timeout_s=60.0,
    estimates=(("nvml_facts", 4.0), ("counter_vs_power", 3.0), ("aa", 8.0), ("ab", 8.0),
               ("overhead", 2.0)),
)


class Budget:
    """The run's global time budget, counted from the script's start."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s = total_s
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def left(self) -> float:
        return self.total_s - self.elapsed()


class Progress:
    """Progress lines with the elapsed time, to stdout and to ``progress.log``."""

    def __init__(self, budget: Budget, path: Path | None) -> None:
        self.budget = budget
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"[{self.budget.elapsed():6.1f} s] {message}"
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")


# -- NVML access -----------------------------------------------------------------------------


def import_pynvml() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module("pynvml")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class Rig:
    """One NVML board and the clock it is read on (the fake's clock in a dry run)."""

    nvml: Any
    handle: Any
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    fake: Any = None
    has_counter: bool = False
    has_field: bool = False

    def optional(self, function: str, *args: Any) -> Any:
        getter = getattr(self.nvml, function, None)
        if getter is None:
            return None
        try:
            return getter(*args)
        except Exception:
            return None

    def energy_mj(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def field_mw(self) -> float:
        nvml = self.nvml
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", POWER_INSTANT_FIELD)
        value = nvml.nvmlDeviceGetFieldValues(self.handle, [field_id])[0]
        if int(value.nvmlReturn) != 0:
            raise nvml.NVMLError(int(value.nvmlReturn))
        return float(getattr(value.value, VALUE_MEMBERS[int(value.valueType)]))

    def usage_mw(self) -> float:
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))

    def aux(self) -> list[int | None]:
        """temperature, SM clock, memory clock, clock-event reasons; None where unreadable."""
        nvml, h = self.nvml, self.handle
        values = [
            self.optional("nvmlDeviceGetTemperature", h, nvml.NVML_TEMPERATURE_GPU),
            self.optional("nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_SM),
            self.optional("nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_MEM),
            self.optional("nvmlDeviceGetCurrentClocksEventReasons", h)
            or self.optional("nvmlDeviceGetCurrentClocksThrottleReasons", h),
        ]
        return [None if v is None else int(v) for v in values]

    def probe(self) -> None:
        self.has_counter = _works(self.energy_mj)
        self.has_field = _works(self.field_mw)

    def configure(self, sensor: Any) -> None:
        """Point an NvmlSensor at this rig's clock (the fake's, in a dry run)."""
        if self.fake is not None:
            sensor.clock, sensor.sleep, sensor.wait = (
                self.fake.clock.now, self.fake.clock.sleep, self.fake.clock.wait)


def _works(read: Callable[[], Any]) -> bool:
    try:
        read()
    except Exception:
        return False
    return True


def _pick_handle(nvml: Any, uuid: str | None) -> Any:
    if uuid:
        with contextlib.suppress(Exception):
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
    return nvml.nvmlDeviceGetHandleByIndex(0)


@contextlib.contextmanager
def open_rig(plan: Plan, uuid: str | None = None, start_s: float = 0.0) -> Iterator[Rig]:
    """NVML opened on the measured board; in a dry run the stand-in replaying the synthetic
    H100 trace (installed as ``pynvml`` so that the plugin's sensor uses it too)."""
    previous = sys.modules.get("pynvml")
    if plan.dry:
        fakes = importlib.import_module("tests.fakes.fake_pynvml")
        clock = fakes.FakeClock(start_s)
        nvml: Any = fakes.FakeNvml(fakes.load_trace(SYNTHETIC_TRACE), clock)
        sys.modules["pynvml"] = nvml
        rig_clock, rig_sleep, fake = clock.now, clock.sleep, nvml
    else:
        nvml, rig_clock, rig_sleep, fake = import_pynvml(), time.perf_counter, time.sleep, None
    try:
        nvml.nvmlInit()
        try:
            rig = Rig(nvml, _pick_handle(nvml, uuid), rig_clock, rig_sleep, fake)
            rig.probe()
            yield rig
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
    finally:
        if plan.dry:
            if previous is None:
                sys.modules.pop("pynvml", None)
            else:
                sys.modules["pynvml"] = previous


def read_identity(rig: Rig) -> tuple[Json, Json]:
    """The trace's ``system`` and device identity, from the queries the sensor's describe() uses."""
    opt, h = rig.optional, rig.handle
    cuda = opt("nvmlSystemGetCudaDriverVersion_v2") or opt("nvmlSystemGetCudaDriverVersion")
    system = {"driver_version": _text(opt("nvmlSystemGetDriverVersion")),
              "cuda_driver_version": None if cuda is None else int(cuda),
              "nvml_version": _text(opt("nvmlSystemGetNVMLVersion"))}
    pci = opt("nvmlDeviceGetPciInfo", h)
    pcie = {key: opt(fn, h) for key, fn in (
        ("gen_current", "nvmlDeviceGetCurrPcieLinkGeneration"),
        ("width_current", "nvmlDeviceGetCurrPcieLinkWidth"),
        ("gen_max", "nvmlDeviceGetMaxPcieLinkGeneration"),
        ("width_max", "nvmlDeviceGetMaxPcieLinkWidth"))}
    device = {
        "nvml_index": 0,
        "name": _text(opt("nvmlDeviceGetName", h)) or "unknown GPU",
        "uuid": _text(opt("nvmlDeviceGetUUID", h)),
        "pci_bus_id": None if pci is None else _text(getattr(pci, "busId", None)),
        "vbios": _text(opt("nvmlDeviceGetVbiosVersion", h)),
        "architecture": _int_or_none(opt("nvmlDeviceGetArchitecture", h)),
        "power_limit_mw": _int_or_none(opt("nvmlDeviceGetPowerManagementLimit", h)),
        "enforced_power_limit_mw": _int_or_none(opt("nvmlDeviceGetEnforcedPowerLimit", h)),
        "persistence_mode": _int_or_none(opt("nvmlDeviceGetPersistenceMode", h)),
        "mig_mode": _pair(opt("nvmlDeviceGetMigMode", h)),
        "ecc_mode": _pair(opt("nvmlDeviceGetEccMode", h)),
        "pcie": {k: _int_or_none(v) for k, v in pcie.items()},
        "energy_counter": rig.has_counter,
        "power_instant_field": rig.has_field,
    }
    return system, device


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _pair(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]


# -- polling and traces ----------------------------------------------------------------------


@dataclass
class PollLog:
    """Rows ``[t_s, energy_mj, power_instant_mw, temp, sm, mem, reasons]`` at every change of
    the counter or the instant power, timestamped with the poll that first saw it."""

    rows: list[list[Any]] = field(default_factory=list)
    polls: int = 0
    #: The rig clock's reading at t_s = 0.
    t0: float = 0.0


def poll(rig: Rig, seconds: float, t0: float, log: PollLog, step_s: float) -> None:
    """Read the counter and the instant power in a loop for ``seconds``; log the changes."""
    deadline = rig.clock() + seconds
    last = tuple(log.rows[-1][1:3]) if log.rows else None
    while (now := rig.clock()) < deadline:
        reading = (rig.energy_mj() if rig.has_counter else None,
                   rig.field_mw() if rig.has_field else None)
        if reading != last:
            log.rows.append([round(now - t0, 6), *reading, *rig.aux()])
            last = reading
        log.polls += 1
        rig.sleep(step_s)


def counter_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The first row and every row at which the energy counter changed."""
    kept: list[list[Any]] = []
    for row in rows:
        if not kept or row[1] != kept[-1][1]:
            kept.append(list(row))
    return kept


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


def write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


# -- the GPU worker --------------------------------------------------------------------------


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


# -- context ---------------------------------------------------------------------------------


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
            timeout = min(self.plan.worker_timeout_s, max(self.budget.left() - 10.0, 5.0))
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


# -- section 1: NVML facts -------------------------------------------------------------------


LATENCY_CALLS: tuple[tuple[str, str], ...] = (
    ("nvmlDeviceGetTotalEnergyConsumption", "energy"),
    ("nvmlDeviceGetFieldValues", "field"),
    ("nvmlDeviceGetPowerUsage", "usage"),
)


def time_calls(rig: Rig, read: Callable[[], Any], n: int, max_s: float) -> Json:
    """Latency (s) of ``n`` calls of ``read``, on the rig's clock, stopping after ``max_s``."""
    samples: list[float] = []
    end = rig.clock() + max_s
    try:
        for _ in range(n):
            t0 = rig.clock()
            read()
            samples.append(rig.clock() - t0)
            if rig.clock() > end:
                break
    except Exception as exc:
        return {"n": len(samples), "error": f"{type(exc).__name__}: {exc}"}
    return quantiles(samples)


def measure_latencies(rig: Rig, plan: Plan) -> Json:
    reads: dict[str, Callable[[], Any]] = {
        "energy": rig.energy_mj, "field": rig.field_mw, "usage": rig.usage_mw}
    out = {name: time_calls(rig, read, plan.latency_calls, plan.latency_max_s)
           for name, read in reads.items()}
    nvml, h = rig.nvml, rig.handle
    aux: dict[str, Callable[[], Any]] = {
        "nvmlDeviceGetTemperature": lambda: nvml.nvmlDeviceGetTemperature(
            h, nvml.NVML_TEMPERATURE_GPU),
        "nvmlDeviceGetClockInfo": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda: (
            nvml.nvmlDeviceGetCurrentClocksEventReasons(h)),
        "nvmlDeviceGetComputeRunningProcesses": lambda: (
            nvml.nvmlDeviceGetComputeRunningProcesses(h)),
    }
    out["aux"] = {name: time_calls(rig, read, plan.aux_latency_calls, plan.latency_max_s / 4)
                  for name, read in aux.items()}
    return out


def trace_latencies(latency: Json) -> Json:
    """The trace's ``call_latency_s``: median seconds per call, by NVML function."""
    medians = {fn: latency[key].get("median") for fn, key in LATENCY_CALLS}
    medians.update({fn: stats.get("median") for fn, stats in latency["aux"].items()})
    found = {fn: float(f"{v:.3g}") for fn, v in medians.items() if v is not None}
    default = found.get("nvmlDeviceGetTotalEnergyConsumption",
                        statistics.median(found.values()) if found else 0.0)
    return {"default": default, **found}


def plugin_sensor(rig: Rig) -> Json:
    """What the plugin's own NvmlSensor measures and says on this board."""
    from pytest_tpw.sensors.base import SensorOptions
    from pytest_tpw.sensors.nvml import NvmlSensor

    sensor = NvmlSensor(SensorOptions(devices=(0,)))
    rig.configure(sensor)
    sensor.open()
    try:
        return {"min_window_s": sensor.min_window_s(), "method": sensor.method,
                "describe": sensor.describe()}
    finally:
        sensor.close()


def period_stats(rows: Sequence[Sequence[Any]], column: int, start: float,
                 end: float) -> Json:
    return quantiles(intervals(change_times(rows, column, start, end)))


def counter_power(rows: Sequence[Sequence[Any]], start: float, end: float) -> float | None:
    """Mean watts from the counter between its first and last change within [start, end]."""
    inside = [r for r in counter_rows(rows)[1:] if start <= r[0] <= end and r[1] is not None]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return float((inside[-1][1] - inside[0][1]) / 1000.0 / (inside[-1][0] - inside[0][0]))


def record_poll(rig: Rig, plan: Plan, worker: Worker | None) -> tuple[PollLog, float, Json]:
    """Idle poll, then the worker's matmul load with the poll going on; the load start time."""
    t0 = rig.clock()
    log = PollLog(t0=t0)
    poll(rig, plan.idle_s, t0, log, plan.poll_step_s)
    load: Json = {}
    if worker is not None:
        worker.request({"cmd": "load", "kind": "matmul"})
    load_start = rig.clock() - t0
    poll(rig, plan.load_s, t0, log, plan.poll_step_s)
    if worker is not None:
        load = worker.request({"cmd": "stop"})
    return log, load_start, load


def poll_stats(log: PollLog, load_start: float, plan: Plan) -> Json:
    rows, end = log.rows, (log.rows[-1][0] if log.rows else 0.0)
    steady = load_start + plan.ramp_s
    return {
        "polls": log.polls, "rows": len(rows), "load_start_s": load_start,
        "counter_period_idle_s": period_stats(rows, 1, 0.0, load_start),
        "counter_period_load_s": period_stats(rows, 1, steady, end),
        "field_period_load_s": period_stats(rows, 2, steady, end),
        "power_idle_w": counter_power(rows, 0.0, load_start),
        "power_load_w": counter_power(rows, steady, end),
    }


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


# -- section 2: counter vs integrated instant power ------------------------------------------


def wait_counter_change(rig: Rig, timeout_s: float, step_s: float) -> tuple[float, int]:
    """Poll the counter until it changes: the time of the first read that saw the new value."""
    last, deadline = rig.energy_mj(), rig.clock() + timeout_s
    while rig.clock() < deadline:
        t, value = rig.clock(), rig.energy_mj()
        if value != last:
            return t, value
        rig.sleep(step_s)
    raise TimeoutError(f"the energy counter did not change within {timeout_s:g} s")


def measure_window(rig: Rig, seconds: float, plan: Plan) -> Json:
    """A window from one counter update to the first update after ``seconds``; instant power
    (and GetPowerUsage) sampled every ``sample_interval_s`` over the same stretch."""
    t_start, e_start = wait_counter_change(rig, 2.0, plan.poll_step_s)
    field_s: list[tuple[float, float]] = [(t_start, rig.field_mw())]
    usage_s: list[tuple[float, float]] = []
    with contextlib.suppress(Exception):
        usage_s.append((t_start, rig.usage_mw()))
    next_sample, last = t_start + plan.sample_interval_s, e_start
    while True:
        t, value = rig.clock(), rig.energy_mj()
        if value != last and t >= t_start + seconds:
            t_end, e_end = t, value
            break
        last = value
        if t > t_start + seconds + 2.0:
            raise TimeoutError("the energy counter stopped changing inside a window")
        if t >= next_sample:
            field_s.append((rig.clock(), rig.field_mw()))
            with contextlib.suppress(Exception):
                usage_s.append((rig.clock(), rig.usage_mw()))
            next_sample += plan.sample_interval_s
        rig.sleep(plan.poll_step_s)
    field_s.append((rig.clock(), rig.field_mw()))
    with contextlib.suppress(Exception):
        usage_s.append((rig.clock(), rig.usage_mw()))
    return window_result(t_end - t_start, (e_end - e_start) / 1000.0, field_s, usage_s)


def window_result(seconds: float, counter_j: float, field_s: Sequence[tuple[float, float]],
                  usage_s: Sequence[tuple[float, float]]) -> Json:
    field_j = trapezoid_joules(field_s)
    usage_j = trapezoid_joules(usage_s) if len(usage_s) > 1 else None
    return {"seconds": seconds, "counter_j": counter_j, "field_j": field_j,
            "usage_j": usage_j, "samples": len(field_s),
            "counter_w": counter_j / seconds if seconds > 0 else None,
            "ratio_counter_over_field": counter_j / field_j if field_j > 0 else None,
            "ratio_counter_over_usage": counter_j / usage_j if usage_j else None}


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


# -- sections 3 and 4: the plugin itself -----------------------------------------------------


def inner_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "examples"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # load the plugin from this tree, nothing else
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.update(extra)
    return env


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
            f"{m.get('verdict', 'unavailable')}, tokens/J {_g(m.get('tpj', {}).get('mean'))} "
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
    ctx.say(f"A/B verdict {out['verdict']}, measured ratio {_g(out['measured_ratio'])}; "
            "measuring the expected ratio")
    try:
        expected = expected_ratio(ctx, (base or {}).get("tpj", {}).get("mean"))
        out["expected"] = expected
    finally:
        ctx.release_worker()
    ctx.say(f"A/B ratio {_g(out['plugin_ratio'] or out['measured_ratio'])}; expected "
            f"{_g(expected.get('by_energy'))} (energy of the extra work alone), "
            f"{_g(expected.get('by_time'))} (generate time), {_g(expected.get('by_flops'))} "
            "(1/(1+f))")
    return out


# -- section 5: overhead ---------------------------------------------------------------------


def time_pairs(sensor: Any, pairs: int, max_s: float) -> Json:
    samples: list[float] = []
    end = time.perf_counter() + max_s
    for _ in range(pairs):
        t0 = time.perf_counter()
        sensor.end(sensor.begin())
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() > end:
            break
    return quantiles(samples)


def meter_bookkeeping(windows: int) -> Json:
    """The meter's own cost per window with the sim sensor (as benchmarks/overhead.py)."""
    from pytest_tpw.meter import Meter, MeterConfig, fixed_rounds
    from pytest_tpw.sensors.base import SensorOptions
    from pytest_tpw.sensors.sim import SimSensor

    sensor = SimSensor(SensorOptions(seed=1))
    sensor.open()
    config = MeterConfig(enabled=True, warmup=0, min_window_s=0.0, max_delay_s=0.0,
                         confidence=0.9, devices=None)
    sim_pair = time_pairs(sensor, windows, 10.0)["median"]

    def noop() -> int:
        return 1

    start = time.perf_counter()
    Meter("bench", config, sensor, fixed_rounds(windows))(noop, tokens=1)
    call_form = (time.perf_counter() - start) / windows
    meter = Meter("bench", config, sensor, fixed_rounds(windows))
    start = time.perf_counter()
    for w in meter.rounds():
        with w:
            w.add_tokens(noop())
    loop_form = (time.perf_counter() - start) / windows
    return {"windows": windows, "sim_pair_s": sim_pair,
            "call_form_s": call_form, "loop_form_s": loop_form,
            "meter_only_call_form_s": call_form - sim_pair,
            "meter_only_loop_form_s": loop_form - sim_pair}


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


# -- summary ---------------------------------------------------------------------------------


def _g(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _scaled(value: Any, factor: float, digits: int = 4) -> str:
    return "-" if value is None else _g(float(value) * factor, digits)


def _ci(value: Any) -> str:
    if not value:
        return "-"
    return "[" + ", ".join(_g(float(v)) for v in value) + "]"


def _cuda(value: Any) -> str:
    """NVML's CUDA driver version integer (13000) as 13.0."""
    if value is None:
        return "?"
    return f"{int(value) // 1000}.{int(value) % 1000 // 10}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:+.2f} %"


Row = tuple[str, str, str]


def rows_facts(res: Json) -> list[Row]:
    dev, system, lat, poll_ = (res.get(k, {}) for k in ("device", "system", "latency_s", "poll"))
    rows: list[Row] = [
        ("power limit (enforced)", f"{_scaled(dev.get('power_limit_mw'), 1e-3)} "
         f"({_scaled(dev.get('enforced_power_limit_mw'), 1e-3)})", "W"),
        ("energy counter / instant-power field", f"{dev.get('energy_counter')} / "
         f"{dev.get('power_instant_field')}", ""),
        ("NVML version", _g(system.get("nvml_version")), ""),
    ]
    for key, label in (("counter_period_idle_s", "counter update period, idle"),
                       ("counter_period_load_s", "counter update period, load"),
                       ("field_period_load_s", "instant-power field update period, load")):
        q = poll_.get(key, {})
        rows.append((f"{label} (median [p10, p90], n)",
                     f"{_scaled(q.get('median'), 1e3)} [{_scaled(q.get('p10'), 1e3)}, "
                     f"{_scaled(q.get('p90'), 1e3)}], {q.get('n', 0)}", "ms"))
    rows += [("mean power idle / load (counter)",
              f"{_g(poll_.get('power_idle_w'))} / {_g(poll_.get('power_load_w'))}", "W")]
    for key, label in (("energy", "nvmlDeviceGetTotalEnergyConsumption"),
                       ("field", "nvmlDeviceGetFieldValues(POWER_INSTANT)"),
                       ("usage", "nvmlDeviceGetPowerUsage")):
        q = lat.get(key, {})
        rows.append((f"read latency {label} (median / p99, n)",
                     f"{_scaled(q.get('median'), 1e6)} / {_scaled(q.get('p99'), 1e6)}, "
                     f"{q.get('n', 0)}{' ' + q['error'] if q.get('error') else ''}", "us"))
    plugin = res.get("plugin_sensor", {})
    devices = plugin.get("describe", {}).get("devices") or [{}]
    rows.append(("plugin NvmlSensor: update period / min window",
                 f"{_scaled(devices[0].get('update_period_s'), 1e3)} ms "
                 f"({devices[0].get('update_period')}) / {_g(plugin.get('min_window_s'))} s", ""))
    return rows


def rows_counter(res: Json) -> list[Row]:
    rows = []
    for key, label in (("ratio_counter_over_field", "counter / integrated instant field"),
                       ("ratio_counter_over_usage", "counter / integrated GetPowerUsage")):
        s = res.get(key, {})
        rows.append((f"{label} (mean ± sd [min, max], n windows)",
                     f"{_g(s.get('mean'))} ± {_g(s.get('sd'), 2)} [{_g(s.get('min'))}, "
                     f"{_g(s.get('max'))}], {s.get('n', 0)}", "ratio"))
    w = res.get("counter_w", {})
    rows.append(("load power during those windows (mean ± sd)",
                 f"{_g(w.get('mean'))} ± {_g(w.get('sd'), 2)}", "W"))
    return rows


def _session_rows(label: str, m: Json | None) -> list[Row]:
    m = m or {}
    tpj = m.get("tpj", {})
    state = m.get("gpu_state") or {}
    return [
        (f"{label}: tokens/J mean (CV, n windows)",
         f"{_g(tpj.get('mean'))} ({_pct(tpj.get('cv'))}, {tpj.get('n', 0)})", "tokens/J"),
        (f"{label}: W, tokens/s, s per call",
         f"{_g(m.get('watts'))}, {_g(m.get('tokens_per_s'))}, "
         f"{_g(m.get('seconds_per_call'))}", ""),
        (f"{label}: temp, SM clock, clock events",
         f"{state.get('temperature_c')} C, {state.get('sm_clock_mhz')} MHz, "
         f"{state.get('clocks_event_reasons')}", ""),
    ]


def rows_aa(res: Json) -> list[Row]:
    runs = res.get("runs", [])
    rows = [("A/A verdict (expected UNCHANGED)", str(res.get("verdict")), "")]
    for run in runs:
        rows += _session_rows(f"A/A {run['name']} (rc {run.get('rc')})", run.get("measurement"))
    rows += [("A/A between sessions: mean tokens/J ratio aa2/aa1 - 1",
              _pct(None if res.get("session_ratio") is None else res["session_ratio"] - 1), ""),
             ("A/A plugin ratio [CI]", f"{_g(res.get('plugin_ratio'))} {_ci(res.get('plugin_ci'))}",
              "")]
    return rows


def rows_ab(res: Json) -> list[Row]:
    exp = res.get("expected", {})
    rows = [("A/B verdict (expected REGRESSED)", str(res.get("verdict")), ""),
            ("A/B extra matrix work requested / actual",
             f"{_g(res.get('extra_work'))} / {_g(exp.get('flop_fraction'))}", "fraction")]
    rows += _session_rows("A/B session", (res.get("run") or {}).get("measurement"))
    rows += [("A/B measured ratio (ab/aa1 means) | plugin ratio [CI]",
              f"{_g(res.get('measured_ratio'))} | {_g(res.get('plugin_ratio'))} "
              f"{_ci(res.get('plugin_ci'))}", "tokens/J ratio"),
             ("A/B expected: by energy of extra work alone | by generate time | 1/(1+f)",
              f"{_g(exp.get('by_energy'))} | {_g(exp.get('by_time'))} | "
              f"{_g(exp.get('by_flops'))}", "tokens/J ratio"),
             ("pytest-tpw compare", str((res.get("compare_cli") or {}).get("rc",
                                        (res.get("compare_cli") or {}).get("why"))), "rc")]
    return rows


def rows_overhead(res: Json) -> list[Row]:
    pair, meter = res.get("nvml_pair_s", {}), res.get("meter", {})
    return [("NVML begin()+end() (median / p99, n)",
             f"{_scaled(pair.get('median'), 1e6)} / {_scaled(pair.get('p99'), 1e6)}, "
             f"{pair.get('n', 0)}", "us"),
            ("meter bookkeeping per window, call / loop form",
             f"{_scaled(meter.get('meter_only_call_form_s'), 1e6)} / "
             f"{_scaled(meter.get('meter_only_loop_form_s'), 1e6)}", "us"),
            ("per-window overhead with NVML (sum)",
             _scaled(res.get("per_window_total_s"), 1e6), "us")]


SECTION_ROWS: dict[str, Callable[[Json], list[Row]]] = {
    "nvml_facts": rows_facts, "counter_vs_power": rows_counter, "aa": rows_aa,
    "ab": rows_ab, "overhead": rows_overhead}


def summary_markdown(doc: Json) -> str:
    card = doc.get("card", {})
    head = [f"# pytest-tpw GPU validation{' (CPU DRY RUN: no real GPU)' if doc.get('dry') else ''}",
            "",
            f"card **{card.get('name', '?')}**, driver {card.get('driver_version', '?')}, "
            f"CUDA driver {_cuda(card.get('cuda_driver_version'))}, {doc.get('date')}, "
            f"commit {doc.get('commit') or '?'}, total {_g(doc.get('elapsed_s'), 3)} s "
            f"of a {_g(doc.get('budget_s'), 3)} s budget",
            "", "| section | figure | value | unit |", "|---|---|---|---|"]
    body = []
    for name, section in doc.get("sections", {}).items():
        status = section.get("status")
        body.append(f"| {name} | status | {status} ({_g(section.get('seconds'), 3)} s) "
                    f"{_cell(section.get('why') or section.get('error') or '')} | |")
        if section.get("result") and name in SECTION_ROWS:
            try:
                body += [f"| {name} | {_cell(a)} | {_cell(b)} | {c} |"
                         for a, b, c in SECTION_ROWS[name](section.get("result", {}))]
            except Exception as exc:  # a summary must never lose the run
                body.append(f"| {name} | summary failed | {_cell(repr(exc))} | |")
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
            lines.append(f"- {'A/A' if want == 'UNCHANGED' else 'A/B'} verdict {got}, "
                         f"expected {want}: {'PASS' if got == want else 'FAIL'}")
    exp = ab.get("expected") or {}
    measured = ab.get("plugin_ratio") or ab.get("measured_ratio")
    for key, label in (("by_energy", "energy of the extra work alone"),
                       ("by_time", "generate time"), ("by_flops", "1/(1+f)")):
        if measured and exp.get(key):
            lines.append(f"- A/B ratio {_g(measured)} vs expected {_g(exp[key])} ({label}): "
                         f"{_pct(measured / exp[key] - 1)} off")
    ratio = (cvp.get("ratio_counter_over_field") or {}).get("mean")
    if ratio:
        lines.append(f"- counter / integrated instant power: {_pct(ratio - 1)} "
                     f"(CV {_pct((cvp['ratio_counter_over_field'] or {}).get('cv'))})")
    return lines


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]


# -- the run ---------------------------------------------------------------------------------


Section = tuple[str, str, Callable[[Ctx], Json]]
SECTIONS: tuple[Section, ...] = (
    ("nvml_facts", "1. NVML facts, update period, read latency", section_nvml_facts),
    ("counter_vs_power", "2. counter vs integrated instant power", section_counter_vs_power),
    ("aa", "3. A/A through the plugin", section_aa),
    ("ab", "4. A/B through the plugin", section_ab),
    ("overhead", "5. plugin overhead per window", section_overhead),
)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, timeout=10,
                             capture_output=True, text=True, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def document(ctx: Ctx, sections: Json) -> Json:
    return {"format": "pytest-tpw-gpu-validation/1", "dry": ctx.plan.dry,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(), "python": sys.version.split()[0], "card": dict(ctx.card),
            "budget_s": ctx.budget.total_s, "elapsed_s": ctx.budget.elapsed(),
            "plan": {k: v for k, v in vars(ctx.plan).items() if k != "estimates"},
            "sections": sections}


def save(ctx: Ctx, sections: Json) -> None:
    """summary.json, summary.md and the artifacts tarball, rewritten after every section."""
    doc = document(ctx, sections)
    write_json(ctx.out / "summary.json", doc)
    (ctx.out / "summary.md").write_text(summary_markdown(doc), encoding="utf-8")
    tmp = ctx.out / "artifacts.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(ctx.work, arcname="artifacts")
    tmp.replace(ctx.out / "artifacts.tar.gz")


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
