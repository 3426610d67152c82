"""The ``prometheus`` sensor: the same GPU energy counters as ``dcgm-exporter``, read through
a Prometheus server that scrapes the exporters (``--tpw-sensor-url http://PROM:9090``), for
clusters where only Prometheus is reachable.

Never ``increase()``: it extrapolates to the range's edges (a 60 s window at default settings
can be off by half). The sensor notes each window's edges on the wall clock, waits until
Prometheus holds a sample after the end, fetches the raw samples of each selected GPU with a
range selector, corrects counter resets, interpolates the counter at both edges, and counts
each GPU once (MIG instances repeat their GPU's counter). The counter moves once per
``Δ = max(collect interval, scrape interval)``, learned at start from the stored samples (or
told, ini ``tpw_sensor_interval``); it sets the shortest window and each window's error
bound, as for ``dcgm-exporter``. The runner's clock and Prometheus's must agree (NTP).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
import urllib.parse
from typing import Any

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors import remote
from pytest_tpw.sensors.base import WindowEnergy

#: Seconds of stored samples read at start to learn the interval.
LEARN_S = 30.0
#: How long a window's end waits beyond ``2 Δ`` for Prometheus to hold a sample after it.
EXTRA_WAIT_S = 10.0

FIX_REACH = (
    "Is the Prometheus server's URL right (--tpw-sensor-url http://HOST:9090) and reachable "
    "from this runner?"
)
FIX_INTERVAL = (
    "Scrape the exporters more often (scrape_interval: 1s) and run dcgm-exporter with a short "
    "collect interval (`-c 100`, DCGM_EXPORTER_INTERVAL=100), or tell pytest-tpw the interval "
    "with the ini key tpw_sensor_interval"
)

Series = list[tuple[float, float]]


def counter_at(samples: Series, t: float) -> float | None:
    """A counter's value at ``t``, linear between the stored samples around it, with resets
    (a value lower than the one before) corrected; None when ``t`` is not inside them."""
    if not samples or t < samples[0][0] or t > samples[-1][0]:
        return None
    offset, last = 0.0, samples[0][1]
    corrected = [(samples[0][0], samples[0][1])]
    for ts, value in samples[1:]:
        if value < last:
            offset += last  # the counter restarted from 0
        last = value
        corrected.append((ts, value + offset))
    for (ta, va), (tb, vb) in itertools.pairwise(corrected):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return corrected[-1][1]


class PrometheusSensor(remote.RemoteGpus):
    name = "prometheus"

    def open(self) -> None:
        if len(self.options.urls) != 1:
            raise SensorUnavailable(
                "prometheus needs one server's URL: --tpw-sensor-url http://HOST:9090 "
                f"(got {len(self.options.urls)})"
            )
        self._url = self.options.urls[0].rstrip("/")
        self._select = remote.parse_select(self.options.select)
        try:
            found, self.rtt_s = self._instant()
        except SensorError as exc:
            raise SensorUnavailable(str(exc)) from None
        chosen = remote.per_gpu(found, self._url, self._select)
        if not chosen:
            named = sorted({f"{g.host}/{g.uuid}" for g in self._all(found)})
            raise SensorUnavailable(
                f"{self._url} holds no {remote.ENERGY_METRIC} series of a selected GPU "
                f"(--tpw-sensor-select {', '.join(self.options.select) or 'none'}); it has: "
                f"{', '.join(named[:20]) or 'none: is it scraping dcgm-exporter?'}"
            )
        self._gpus = sorted(chosen, key=lambda g: (g.host, g.uuid))
        if self.options.interval_s is not None:
            self.interval_s, self.interval_source = self.options.interval_s, "told"
        else:
            self.interval_s, self.interval_source = self._learn_interval(), "learned"
        remote.check_interval(self.interval_s, self.rtt_s, self.options.tolerance, FIX_INTERVAL)
        self.method = (
            f"Prometheus at {self._url}: raw {remote.ENERGY_METRIC} samples of "
            f"{len(self._gpus)} GPU(s), interpolated at the window's edges; refresh every "
            f"{self.interval_s * 1000:.0f} ms ({self.interval_source})"
        )

    # -- the HTTP API ------------------------------------------------------------------------

    def _query(self, query: str, at: float | None = None) -> tuple[list[Any], float]:
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self._url}/api/v1/query?{urllib.parse.urlencode(params)}"
        doc, rtt = remote.http_json(url, "the Prometheus query API", FIX_REACH)
        if not isinstance(doc, dict) or doc.get("status") != "success":
            error = doc.get("error") if isinstance(doc, dict) else None
            raise SensorError(f"{self._url} refused the query {query!r}: {error or doc!r}")
        data = doc.get("data") or {}
        result = data.get("result") if isinstance(data, dict) else None
        return (result if isinstance(result, list) else []), rtt

    def _instant(self) -> tuple[list[tuple[dict[str, str], float]], float]:
        result, rtt = self._query(remote.ENERGY_METRIC)
        out = []
        for item in result:
            labels = dict(item.get("metric") or {})
            try:
                out.append((labels, float(item["value"][1])))
            except (KeyError, IndexError, TypeError, ValueError):
                continue
        return out, rtt

    def _all(self, found: list[tuple[dict[str, str], float]]) -> list[remote.Gpu]:
        gpus = (remote.gpu_of(labels, self._url) for labels, _ in found)
        return [g for g in gpus if g is not None]

    def _raw(self, seconds: float, at: float) -> dict[remote.Gpu, Series]:
        """Each selected GPU's raw samples over ``(at - seconds, at]``: one series per GPU
        (the first of those that repeat it, as MIG instances do)."""
        window = max(1, math.ceil(seconds))
        result, _ = self._query(f"{remote.ENERGY_METRIC}[{window}s]", at)
        out: dict[remote.Gpu, Series] = {}
        for item in result:
            labels = dict(item.get("metric") or {})
            gpu = remote.gpu_of(labels, self._url)
            if gpu is None or gpu in out or not remote.selected(labels, self._select):
                continue
            try:
                out[gpu] = [(float(t), float(v)) for t, v in item.get("values") or []]
            except (TypeError, ValueError):
                continue
        return out

    def _learn_interval(self) -> float:
        """The refresh interval from the stored samples: the larger of the median spacing of
        the samples (scrape) and of the value changes (collect)."""
        deadline = time.monotonic() + LEARN_S
        while True:
            raw = self._raw(LEARN_S, time.time())
            spacings, refreshes = [], []
            for series in raw.values():
                times = [t for t, _ in series]
                spacings += [b - a for a, b in itertools.pairwise(times)]
                changed = [t for (t, v), (_, w) in zip(series[1:], series, strict=False) if v != w]
                refreshes += [b - a for a, b in itertools.pairwise(changed)]
            if len(refreshes) >= 2:
                return max(statistics.median(spacings), statistics.median(refreshes))
            if time.monotonic() > deadline:
                raise SensorUnavailable(
                    f"{self._url}: the GPUs' energy counters changed {len(refreshes)} time(s) "
                    f"in {LEARN_S:g} s of stored samples, too rarely to measure a window. "
                    f"{FIX_INTERVAL}"
                )
            time.sleep(1.0)

    # -- windows -----------------------------------------------------------------------------

    def begin(self) -> object:
        return (time.time(), time.perf_counter())

    def end(self, token: object) -> WindowEnergy:
        assert isinstance(token, tuple)
        t0, p0 = token
        t1, seconds = time.time(), time.perf_counter() - p0
        deadline = time.monotonic() + 2 * self.interval_s + EXTRA_WAIT_S
        time.sleep(min(self.interval_s, 2.0))  # the next scrape holds the end
        while True:
            raw = self._raw(time.time() - t0 + 2 * self.interval_s, time.time())
            late = [g for g in self._gpus if not raw.get(g) or raw[g][-1][0] < t1]
            if not late or time.monotonic() > deadline:
                break
            time.sleep(min(self.interval_s / 2, 1.0))
        out = WindowEnergy(joules={})
        missing = []
        for gpu in self._gpus:
            series = raw.get(gpu) or []
            start, stop = counter_at(series, t0), counter_at(series, t1)
            if start is None or stop is None:
                missing.append(f"{gpu.host}/{gpu.uuid}")
                continue
            out.joules[gpu.domain] = max(stop - start, 0.0) / 1000.0
        if missing:  # a window without some of its GPUs would undercount: not used
            out.invalid = (
                f"no samples around an edge of this window for {len(missing)} GPU(s): "
                f"{', '.join(missing)} (scraped too rarely, or a target is down)"
            )
            self.dropped += 1
        bound = remote.edge_bound(self.interval_s, self.rtt_s)
        out.state = {
            "gpus": len(out.joules),
            "interval_s": self.interval_s,
            "bound": round(bound / seconds, 6) if seconds > 0 else None,
        }
        return out

    # -- identity ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "url": self._url,
            "select": list(self.options.select),
            "gpus": self.gpus_json(),
            "interval_s": self.interval_s,
            "interval_source": self.interval_source,
        }
