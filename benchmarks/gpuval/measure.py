"""Measurements on a rig: polls, read latencies, counter windows, the plugin's costs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuval.common import Json
from gpuval.plan import Plan
from gpuval.rig import Rig
from gpuval.stats_util import change_times, intervals, quantiles, trapezoid_joules
from gpuval.worker import Worker

# -- polling: update periods and mean power (section 1) --------------------------------------------


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


def counter_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The first row and every row at which the energy counter changed."""
    kept: list[list[Any]] = []
    for row in rows:
        if not kept or row[1] != kept[-1][1]:
            kept.append(list(row))
    return kept


def period_stats(rows: Sequence[Sequence[Any]], column: int, start: float,
                 end: float) -> Json:
    return quantiles(intervals(change_times(rows, column, start, end)))


def counter_power(rows: Sequence[Sequence[Any]], start: float, end: float) -> float | None:
    """Mean watts from the counter between its first and last change within [start, end]."""
    inside = [r for r in counter_rows(rows)[1:] if start <= r[0] <= end and r[1] is not None]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return float((inside[-1][1] - inside[0][1]) / 1000.0 / (inside[-1][0] - inside[0][0]))


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


# -- read latencies and the plugin's sensor (section 1) --------------------------------------------


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


# -- counter windows (sections 2 and 4) ------------------------------------------------------------


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


# -- the plugin's cost per window (section 5) ------------------------------------------------------


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
