"""Arithmetic on measurements: quantiles, spread, intervals, trapezoid energy, ratios."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from gpuval.common import Json


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
