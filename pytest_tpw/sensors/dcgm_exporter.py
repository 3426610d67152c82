"""The ``dcgm-exporter`` sensor: the GPUs of a deployment, wherever they are, from NVIDIA's
dcgm-exporter on each host (``--tpw-sensor-url http://NODE:9400/metrics``, one per host).

At each edge of a window it reads every exporter's ``/metrics`` and takes
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (mJ since the driver loaded) of each selected GPU,
each GPU once (MIG instances repeat their GPU's counter). A counter that went backwards (the
driver reloaded) discards the window. The exporter refreshes the counter once per collect
interval (``-c``, default 30,000 ms): the sensor learns it at start by watching the counter
(or is told, ini ``tpw_sensor_interval``), sets its shortest window to ten intervals, states
each window's error bound (:func:`~pytest_tpw.sensors.remote.edge_bound` over the window),
and refuses an interval too coarse for the tolerance even over a 60 s window.
"""

from __future__ import annotations

import itertools
import statistics
import time
import urllib.parse
from typing import Any

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors import remote
from pytest_tpw.sensors.base import WindowEnergy

#: Seconds between polls while learning the collect interval.
POLL_S = 0.02
#: How many refreshes are watched to learn the interval.
REFRESHES = 3

FIX_INTERVAL = (
    "Run dcgm-exporter with a short collect interval, e.g. `-c 100` "
    "(DCGM_EXPORTER_INTERVAL=100, in ms; its default is 30000), or tell pytest-tpw the "
    "interval with the ini key tpw_sensor_interval"
)
FIX_REACH = (
    "Is dcgm-exporter running there (default port 9400, path /metrics) and reachable from "
    "this runner? Give one --tpw-sensor-url per host"
)


def metrics_url(url: str) -> str:
    """``http://node:9400`` -> ``http://node:9400/metrics``."""
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/metrics"
    return url


class DcgmExporterSensor(remote.RemoteGpus):
    name = "dcgm-exporter"

    def open(self) -> None:
        if not self.options.urls:
            raise SensorUnavailable(
                "dcgm-exporter needs the exporters' URLs: --tpw-sensor-url "
                "http://NODE:9400/metrics, one per host (ini tpw_sensor_url)"
            )
        self._urls = [metrics_url(u) for u in self.options.urls]
        self._select = remote.parse_select(self.options.select)
        try:
            first, rtts = self._read_all()
        except SensorError as exc:
            raise SensorUnavailable(str(exc)) from None
        if not first:
            raise SensorUnavailable(self._none_selected())
        self._gpus = sorted(first, key=lambda g: (g.host, g.uuid))
        self.rtt_s = max(rtts)
        if self.options.interval_s is not None:
            self.interval_s, self.interval_source = self.options.interval_s, "told"
        else:
            self.interval_s, self.interval_source = self._learn_interval(first), "learned"
        remote.check_interval(self.interval_s, self.rtt_s, self.options.tolerance, FIX_INTERVAL)
        hosts = sorted({g.host for g in self._gpus})
        self.method = (
            f"dcgm-exporter DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION of {len(self._gpus)} GPU(s) on "
            f"{', '.join(hosts)}; collect interval {self.interval_s * 1000:.0f} ms "
            f"({self.interval_source}), HTTP round trip {self.rtt_s * 1000:.0f} ms"
        )

    # -- reading -------------------------------------------------------------------------

    def _read(self, url: str) -> tuple[dict[remote.Gpu, float], float]:
        body, rtt = remote.http_get(url, "dcgm-exporter metrics", FIX_REACH)
        samples = remote.parse_exposition(body.decode("utf-8", errors="replace"))
        if not samples:
            raise SensorError(
                f"{url} serves no {remote.ENERGY_METRIC}: enable it in the exporter's "
                "counters file (-f; it is in the default counters)"
            )
        return remote.per_gpu(samples, remote.host_of(url), self._select), rtt

    def _read_all(self) -> tuple[dict[remote.Gpu, float], list[float]]:
        values: dict[remote.Gpu, float] = {}
        rtts = []
        for url in self._urls:
            found, rtt = self._read(url)
            values.update(found)
            rtts.append(rtt)
        return values, rtts

    def _none_selected(self) -> str:
        everything: list[str] = []
        for url in self._urls:
            body, _ = remote.http_get(url, "dcgm-exporter metrics", FIX_REACH)
            for labels, _ in remote.parse_exposition(body.decode("utf-8", errors="replace")):
                gpu = remote.gpu_of(labels, remote.host_of(url))
                if gpu is not None:
                    everything.append(f"{gpu.host}/{gpu.uuid}")
        wanted = "; ".join(f"{k}={','.join(sorted(v))}" for k, v in self._select.items())
        return (
            f"no GPU of the exporters matches --tpw-sensor-select {wanted}; they serve: "
            f"{', '.join(sorted(set(everything))[:20]) or 'no GPU series'}"
        )

    def _learn_interval(self, first: dict[remote.Gpu, float]) -> float:
        """Watch each exporter's counters until they refreshed :data:`REFRESHES` times; the
        interval is the median time between refreshes (of the slowest exporter)."""
        limit = remote.LONGEST_WINDOW_S * self.options.tolerance  # coarser is refused anyway
        deadline = time.monotonic() + (REFRESHES + 1) * limit
        intervals = []
        for url in self._urls:
            last, _ = self._read(url)
            changes: list[float] = []
            while len(changes) <= REFRESHES and time.monotonic() < deadline:
                time.sleep(POLL_S)
                now, _ = self._read(url)
                if any(now.get(g) != v for g, v in last.items()):
                    changes.append(time.monotonic())
                    last = now
            if len(changes) < 2:
                raise SensorUnavailable(
                    f"the energy counters at {url} refreshed {len(changes)} time(s) in "
                    f"{(REFRESHES + 1) * limit:.0f} s, so a window could not reach the "
                    f"{self.options.tolerance:.0%} tolerance. {FIX_INTERVAL}"
                )
            gaps = [b - a for a, b in itertools.pairwise(changes)]
            intervals.append(statistics.median(gaps))
        return max(intervals)

    # -- windows -------------------------------------------------------------------------

    def begin(self) -> object:
        values, rtts = self._read_all()
        return (time.perf_counter(), values, max(rtts))

    def end(self, token: object) -> WindowEnergy:
        assert isinstance(token, tuple)
        started, before, rtt_before = token
        after, rtts = self._read_all()
        seconds = time.perf_counter() - started
        rtt = max(rtt_before, *rtts)
        out = WindowEnergy(joules={})
        missing = []
        for gpu in self._gpus:
            if gpu not in before or gpu not in after:
                missing.append(f"{gpu.host}/{gpu.uuid}")
                continue
            if after[gpu] < before[gpu]:
                out.invalid = (
                    f"{gpu.host}/{gpu.uuid}: the energy counter went backwards "
                    f"({before[gpu]:.0f} mJ, then {after[gpu]:.0f} mJ): the driver was "
                    "reloaded or the GPU reset during the window"
                )
                continue
            out.joules[gpu.domain] = (after[gpu] - before[gpu]) / 1000.0
        if missing:  # a window without some of its GPUs would undercount: not used
            reason = (
                f"{len(missing)} GPU(s) gave no reading at an edge of this window: "
                f"{', '.join(missing)}"
            )
            out.invalid = reason if out.invalid is None else f"{out.invalid}; {reason}"
        if out.invalid is not None:
            self.dropped += 1
        bound = remote.edge_bound(self.interval_s, rtt)
        out.state = {
            "gpus": len(out.joules),
            "interval_s": self.interval_s,
            "rtt_s": round(rtt, 6),
            "bound": round(bound / seconds, 6) if seconds > 0 else None,
        }
        return out

    # -- identity --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "urls": list(self._urls),
            "select": list(self.options.select),
            "gpus": self.gpus_json(),
            "interval_s": self.interval_s,
            "interval_source": self.interval_source,
            "rtt_s": round(self.rtt_s, 6),
        }
