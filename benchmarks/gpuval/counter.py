"""The energy counter of the measured board (the stand-in in a dry run), through NVML.

Opening the board (``open_rig``), its identity, polls of the counter and the instant power
(update periods), read latencies, windows of counter energy against integrated instant power,
the plugin's ``NvmlSensor`` on the same board, and the poll written as NVML traces
(``pytest-tpw-nvml-trace/1``, tests/data/README.md). Integration, field reads and slugs are the
package's own (``pytest_tpw.sensors.nvml``, ``pytest_tpw.fingerprint``).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuval import Json, Plan
from pytest_tpw.host.fingerprint import slug as fingerprint_slug
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.nvml import NvmlSensor, _field_number, _import_pynvml
from pytest_tpw.sensors.sampling import trapezoid_joules
from pytest_tpw.store.files import atomic_write_text

SYNTHETIC_TRACE = "nvml_synthetic_h100.json"
POWER_INSTANT_FIELD = 186  # NVML_FI_DEV_POWER_INSTANT in nvml.h, for bindings that lack it
TRACE_FORMAT = "pytest-tpw-nvml-trace/1"
COLUMNS = [
    "t_s",
    "energy_mj",
    "power_instant_mw",
    "temperature_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "clocks_event_reasons",
]
MAX_TRACE_BYTES = 190_000
LATENCY_CALLS: tuple[tuple[str, str], ...] = (
    ("nvmlDeviceGetTotalEnergyConsumption", "energy"),
    ("nvmlDeviceGetFieldValues", "field"),
    ("nvmlDeviceGetPowerUsage", "usage"),
)

# -- numbers ---------------------------------------------------------------------------------


def quantiles(values: Sequence[float]) -> Json:
    """median, p10, p90, p99, mean, min, max and n of some numbers (empty: n = 0 only)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p10": pick(0.1),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def spread(values: Sequence[float]) -> Json:
    """mean, standard deviation, coefficient of variation, median, min, max, n."""
    if not values:
        return {"n": 0}
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "n": len(values),
        "mean": mean,
        "sd": sd,
        "cv": sd / mean if mean else None,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def change_times(
    rows: Sequence[Sequence[Any]], column: int, start: float = -math.inf, end: float = math.inf
) -> list[float]:
    """Times (column 0) at which ``column`` took a new value, within [start, end]."""
    times, last = [], None
    for index, row in enumerate(rows):
        if index > 0 and row[column] != last and start <= row[0] <= end:
            times.append(float(row[0]))
        last = row[column]
    return times


def intervals(times: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# -- the board -------------------------------------------------------------------------------


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
        return _field_number(value)

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

    def sensor(self) -> NvmlSensor:
        """The plugin's own NvmlSensor on board 0, on this rig's clock (the fake's, dry)."""
        sensor = NvmlSensor(SensorOptions(devices=(0,)))
        if self.fake is not None:
            clock = self.fake.clock
            sensor.clock, sensor.sleep, sensor.wait = clock.now, clock.sleep, clock.wait
        return sensor


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
        nvml, rig_clock, rig_sleep, fake = _import_pynvml(), time.perf_counter, time.sleep, None
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
    """The trace's ``system`` and device identity, as raw NVML values (tests/data/README.md)."""
    opt, h = rig.optional, rig.handle
    cuda = opt("nvmlSystemGetCudaDriverVersion_v2") or opt("nvmlSystemGetCudaDriverVersion")
    system = {
        "driver_version": _text(opt("nvmlSystemGetDriverVersion")),
        "cuda_driver_version": None if cuda is None else int(cuda),
        "nvml_version": _text(opt("nvmlSystemGetNVMLVersion")),
    }
    pci = opt("nvmlDeviceGetPciInfo", h)
    pcie = {
        key: opt(fn, h)
        for key, fn in (
            ("gen_current", "nvmlDeviceGetCurrPcieLinkGeneration"),
            ("width_current", "nvmlDeviceGetCurrPcieLinkWidth"),
            ("gen_max", "nvmlDeviceGetMaxPcieLinkGeneration"),
            ("width_max", "nvmlDeviceGetMaxPcieLinkWidth"),
        )
    }
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


# -- polls: update periods and mean power (section 1) ----------------------------------------


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
        reading = (
            rig.energy_mj() if rig.has_counter else None,
            rig.field_mw() if rig.has_field else None,
        )
        if reading != last:
            log.rows.append([round(now - t0, 6), *reading, *rig.aux()])
            last = reading
        log.polls += 1
        rig.sleep(step_s)


def record_poll(rig: Rig, plan: Plan, worker: Any | None) -> tuple[PollLog, float, Json]:
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


def counter_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The first row and every row at which the energy counter changed."""
    kept: list[list[Any]] = []
    for row in rows:
        if not kept or row[1] != kept[-1][1]:
            kept.append(list(row))
    return kept


def counter_power(rows: Sequence[Sequence[Any]], start: float, end: float) -> float | None:
    """Mean watts from the counter between its first and last change within [start, end]."""
    inside = [r for r in counter_rows(rows)[1:] if start <= r[0] <= end and r[1] is not None]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return float((inside[-1][1] - inside[0][1]) / 1000.0 / (inside[-1][0] - inside[0][0]))


def poll_stats(log: PollLog, load_start: float, plan: Plan) -> Json:
    rows, end = log.rows, (log.rows[-1][0] if log.rows else 0.0)
    steady = load_start + plan.ramp_s

    def period(column: int, start: float, stop: float) -> Json:
        return quantiles(intervals(change_times(rows, column, start, stop)))

    return {
        "polls": log.polls,
        "rows": len(rows),
        "load_start_s": load_start,
        "counter_period_idle_s": period(1, 0.0, load_start),
        "counter_period_load_s": period(1, steady, end),
        "field_period_load_s": period(2, steady, end),
        "power_idle_w": counter_power(rows, 0.0, load_start),
        "power_load_w": counter_power(rows, steady, end),
    }


# -- read latencies and the plugin's sensor (section 1) --------------------------------------


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
        "energy": rig.energy_mj,
        "field": rig.field_mw,
        "usage": rig.usage_mw,
    }
    out = {
        name: time_calls(rig, read, plan.latency_calls, plan.latency_max_s)
        for name, read in reads.items()
    }
    nvml, h = rig.nvml, rig.handle
    aux: dict[str, Callable[[], Any]] = {
        "nvmlDeviceGetTemperature": lambda: nvml.nvmlDeviceGetTemperature(
            h, nvml.NVML_TEMPERATURE_GPU
        ),
        "nvmlDeviceGetClockInfo": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda: (
            nvml.nvmlDeviceGetCurrentClocksEventReasons(h)
        ),
        "nvmlDeviceGetComputeRunningProcesses": lambda: nvml.nvmlDeviceGetComputeRunningProcesses(
            h
        ),
    }
    out["aux"] = {
        name: time_calls(rig, read, plan.aux_latency_calls, plan.latency_max_s / 4)
        for name, read in aux.items()
    }
    return out


def plugin_sensor(rig: Rig) -> Json:
    """What the plugin's own NvmlSensor measures and says on this board."""
    sensor = rig.sensor()
    sensor.open()
    try:
        return {
            "min_window_s": sensor.min_window_s(),
            "method": sensor.method,
            "describe": sensor.describe(),
        }
    finally:
        sensor.close()


def time_pairs(sensor: Any, pairs: int, max_s: float) -> Json:
    """Wall-clock seconds of ``sensor.end(sensor.begin())``, ``pairs`` times or ``max_s``."""
    samples: list[float] = []
    end = time.perf_counter() + max_s
    for _ in range(pairs):
        t0 = time.perf_counter()
        sensor.end(sensor.begin())
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() > end:
            break
    return quantiles(samples)


def nvml_pair_cost(rig: Rig, pairs: int, max_s: float) -> Json:
    """The plugin's NvmlSensor begin()+end() cost per window, after its calibration."""
    sensor = rig.sensor()
    sensor.open()
    try:
        sensor.min_window_s()  # calibration first: it is not part of a window's cost
        return time_pairs(sensor, pairs, max_s)
    finally:
        sensor.close()


# -- counter windows (sections 2 and 4) ------------------------------------------------------


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

    def sample_usage() -> None:
        with contextlib.suppress(Exception):
            usage_s.append((rig.clock(), rig.usage_mw()))

    sample_usage()
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
            sample_usage()
            next_sample += plan.sample_interval_s
        rig.sleep(plan.poll_step_s)
    field_s.append((rig.clock(), rig.field_mw()))
    sample_usage()
    return window_result(t_end - t_start, (e_end - e_start) / 1000.0, field_s, usage_s)


def window_result(
    seconds: float,
    counter_j: float,
    field_s: Sequence[tuple[float, float]],
    usage_s: Sequence[tuple[float, float]],
) -> Json:
    # NVML's power readings are milliwatts; the integral is in watt-seconds
    field_j = trapezoid_joules(field_s) / 1000.0
    usage_j = trapezoid_joules(usage_s) / 1000.0 if len(usage_s) > 1 else None
    return {
        "seconds": seconds,
        "counter_j": counter_j,
        "field_j": field_j,
        "usage_j": usage_j,
        "samples": len(field_s),
        "counter_w": counter_j / seconds if seconds > 0 else None,
        "ratio_counter_over_field": counter_j / field_j if field_j > 0 else None,
        "ratio_counter_over_usage": counter_j / usage_j if usage_j else None,
    }


# -- the poll as NVML traces (section 1) -----------------------------------------------------


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100_80gb_hbm3`` (the trace file names)."""
    return fingerprint_slug(name).removeprefix("nvidia-").replace("-", "_") or "gpu"


def _filled(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows the stand-in can replay: a missing reading repeats the last one (0 if none)."""
    out, last = [], [0] * len(COLUMNS)
    for row in rows:
        filled = [last[i] if v is None else v for i, v in enumerate(row)]
        filled[2] = round(filled[2])
        out.append(filled)
        last = filled
    return out


def make_trace(
    system: Json,
    device: Json,
    latency_s: Json,
    rows: Sequence[Sequence[Any]],
    source: str,
    generator: str,
) -> Json:
    """One ``pytest-tpw-nvml-trace/1`` document (tests/data/README.md) holding one board."""
    t_first = rows[0][0] if rows else 0.0
    rebased = [[round(r[0] - t_first, 6), *r[1:]] for r in _filled(rows)]
    return {
        "format": TRACE_FORMAT,
        "source": source,
        "generator": generator,
        "system": system,
        "call_latency_s": latency_s,
        "devices": [{**device, "columns": list(COLUMNS), "rows": rebased}],
    }


def trace_text(trace: Json) -> str:
    """The trace as JSON with one row per line, like the synthetic traces (small files)."""
    rows = [device["rows"] for device in trace["devices"]]
    shell = {
        **trace,
        "devices": [{**d, "rows": f"@ROWS{i}@"} for i, d in enumerate(trace["devices"])],
    }
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
        part = rows[lo : lo + keep]
        t0 = part[0][0]
        cut_rows = [[round(r[0] - t0, 6), *r[1:]] for r in part]
        cut = {**trace, "devices": [{**trace["devices"][0], "rows": cut_rows}]}
        if trace_bytes(cut) <= max_bytes:
            return cut, f"cut to {part[0][0]:.3f}..{part[-1][0]:.3f} s of the recording"
    raise ValueError("trace does not fit even when cut to 4 rows")


def trace_latencies(latency: Json) -> Json:
    """The trace's ``call_latency_s``: median seconds per call, by NVML function."""
    medians = {fn: latency[key].get("median") for fn, key in LATENCY_CALLS}
    medians.update({fn: stats.get("median") for fn, stats in latency["aux"].items()})
    found = {fn: float(f"{v:.3g}") for fn, v in medians.items() if v is not None}
    default = found.get(
        "nvmlDeviceGetTotalEnergyConsumption",
        statistics.median(found.values()) if found else 0.0,
    )
    return {"default": default, **found}


def write_traces(
    out: Path,
    plan: Plan,
    system: Json,
    device: Json,
    latency: Json,
    log: PollLog,
    load_start: float,
) -> Json:
    """The poll as two traces in ``out``: rows at counter changes, and rows at any change."""
    date = datetime.date.today().isoformat()
    prefix = "nvml_dryrun_" if plan.dry else "nvml_"
    source = (
        f"CPU dry run of benchmarks/gpu_validation.py replaying tests/data/{SYNTHETIC_TRACE} "
        "(SYNTHETIC, not a recording)"
        if plan.dry
        else f"recorded on {device['name']}, driver {system['driver_version']}, {date}"
    )
    what = (
        f"benchmarks/gpu_validation.py section 1: {plan.idle_s:g} s idle, then "
        f"{plan.load_s:g} s of a bf16 8192^3 matmul loop from t = {load_start:.3f} s"
    )
    written: Json = {}
    for suffix, rows, how in (
        ("idle_load", counter_rows(log.rows), "rows at counter changes"),
        ("idle_load_all", log.rows, "rows at any change of the counter or the instant power"),
    ):
        trace = make_trace(system, device, trace_latencies(latency), rows, source, f"{what}; {how}")
        trace, note = fit_trace(trace, MAX_TRACE_BYTES, load_start)
        if note:
            trace["generator"] += f"; {note}"
        name = f"{prefix}{slug(device['name'])}_{suffix}.json"
        atomic_write_text(out / name, trace_text(trace))
        written[suffix] = {
            "file": name,
            "rows": len(trace["devices"][0]["rows"]),
            "bytes": (out / name).stat().st_size,
            "cut": note,
        }
    return written
