"""What the remote GPU sensors share: HTTP reads, the Prometheus text format, which GPU a
series is, selection by label, and the error bound of a counter refreshed every ``Δ``.

NVIDIA's dcgm-exporter publishes ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (DCGM field 156:
mJ since the driver loaded, the counter NVML has) once per collect interval, without a
timestamp; Prometheus stores what it scraped. A series is one GPU, named by ``UUID`` (``uuid``
under ``--use-old-namespace``) on a host (``Hostname``, ``hostname`` in the newest release);
MIG instances repeat their whole GPU's counter on series of their own, so a GPU is counted
once, however many series repeat it.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import Capabilities, Provenance, Sensor, SensorHealth

#: The energy counter, in mJ.
ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
#: Seconds an HTTP read may take before the sensor gives up on it.
HTTP_TIMEOUT_S = 5.0
#: The longest window the error bound is judged at: a counter whose refresh interval gives
#: more than the tolerance even over a window this long is refused.
LONGEST_WINDOW_S = 60.0
#: The shortest window, in refresh intervals (as NVML's: ten counter updates).
WINDOW_INTERVALS = 10

#: Label spellings, by the name users select with: the newest first.
LABELS = {
    "hostname": ("hostname", "Hostname"),
    "uuid": ("UUID", "uuid"),
    "pod": ("pod", "pod_name"),
    "namespace": ("namespace", "pod_namespace"),
    "container": ("container", "container_name"),
    "gpu": ("gpu",),
    "model": ("modelName",),
}

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def label(labels: Mapping[str, str], name: str) -> str | None:
    """A label under any of its spellings (:data:`LABELS`), or None."""
    for spelling in LABELS.get(name, (name,)):
        if spelling in labels:
            return labels[spelling]
    return None


def parse_exposition(text: str, metric: str = ENERGY_METRIC) -> list[tuple[dict[str, str], float]]:
    """The samples of ``metric`` in Prometheus's text format: ``(labels, value)`` each."""
    out = []
    for line in text.splitlines():
        if not line.startswith(metric) or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group("name") != metric:
            continue
        labels: dict[str, str] = {}
        raw = m.group("labels") or ""
        pos = 0
        while pos < len(raw):
            lm = _LABEL.match(raw, pos)
            if lm is None:
                break
            value = lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            labels[lm.group(1)] = value
            pos = lm.end()
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        if math.isfinite(value):
            out.append((labels, value))
    return out


@dataclass(frozen=True)
class Gpu:
    """One physical GPU of the deployment, as the telemetry names it."""

    host: str
    uuid: str
    model: str

    @property
    def domain(self) -> str:
        return f"gpu:{self.host}/{self.uuid}"


def gpu_of(labels: Mapping[str, str], default_host: str) -> Gpu | None:
    """The GPU a series is about (None without a UUID: not a GPU series)."""
    uuid = label(labels, "uuid")
    if not uuid:
        return None
    host = label(labels, "hostname") or labels.get("instance") or default_host
    return Gpu(host, uuid, label(labels, "model") or "NVIDIA GPU")


def parse_select(items: Iterable[str]) -> dict[str, set[str]]:
    """``["hostname=node1", "hostname=node2", "pod=vllm-0"]`` -> {hostname: {node1, node2},
    pod: {vllm-0}}: values of one label are alternatives, labels must all match."""
    out: dict[str, set[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise SensorUnavailable(
                f"--tpw-sensor-select {item!r}: write LABEL=VALUE, e.g. hostname=node1, "
                "uuid=GPU-..., pod=vllm-0"
            )
        out.setdefault(name.strip(), set()).update(v.strip() for v in value.split(","))
    return out


def selected(labels: Mapping[str, str], select: Mapping[str, set[str]]) -> bool:
    return all(label(labels, name) in values for name, values in select.items())


def per_gpu(
    samples: Iterable[tuple[Mapping[str, str], float]],
    default_host: str,
    select: Mapping[str, set[str]],
) -> dict[Gpu, float]:
    """One value per GPU: the selected series, each GPU once (MIG instances repeat their
    GPU's counter; the largest reading is kept)."""
    out: dict[Gpu, float] = {}
    for labels, value in samples:
        gpu = gpu_of(labels, default_host)
        if gpu is None or not selected(labels, select):
            continue
        out[gpu] = max(value, out.get(gpu, -math.inf))
    return out


def http_get(url: str, what: str, fix: str) -> tuple[bytes, float]:
    """GET ``url`` (no proxy: telemetry is read in the cluster); returns the body and the
    round trip in seconds. :class:`SensorError` names the URL, what was read and ``fix``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    try:
        with opener.open(url, timeout=HTTP_TIMEOUT_S) as response:
            body: bytes = response.read(64 * 2**20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SensorError(f"cannot read {what} at {url}: {reason}. {fix}") from None
    return body, time.perf_counter() - start


def http_json(url: str, what: str, fix: str) -> tuple[Any, float]:
    body, rtt = http_get(url, what, fix)
    try:
        return json.loads(body), rtt
    except ValueError:
        raise SensorError(f"{url} did not answer JSON for {what}. {fix}") from None


def edge_bound(interval_s: float, rtt_s: float) -> float:
    """Seconds of uncertainty a window gets from its two edges: a read may be up to one
    refresh interval old, and it is taken somewhere in an HTTP round trip. At constant
    power the relative error of a window of ``T`` seconds is at most this over ``T``."""
    return interval_s + 2.0 * rtt_s


def check_interval(interval_s: float, rtt_s: float, tolerance: float, fix: str) -> None:
    """Refuse a refresh interval whose error exceeds the tolerance even over the longest
    window (:data:`LONGEST_WINDOW_S`)."""
    bound = edge_bound(interval_s, rtt_s) / LONGEST_WINDOW_S
    if bound > tolerance:
        raise SensorUnavailable(
            f"the energy counter is refreshed every {interval_s:g} s: a window of "
            f"{LONGEST_WINDOW_S:g} s would still be off by up to {bound:.0%}, more than the "
            f"{tolerance:.0%} tolerance. {fix}"
        )


def min_window(interval_s: float, rtt_s: float) -> float:
    """Ten refresh intervals (and never under a second): a window's edges then cost it at
    most a tenth of its length."""
    return max(1.0, WINDOW_INTERVALS * edge_bound(interval_s, rtt_s))


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


class RemoteGpus(Sensor):
    """What both remote sensors are once open: GPUs named by host and UUID, a refresh
    interval and a round trip, from which the shortest window and the edge error follow."""

    provenance: Provenance = "measured"
    _gpus: list[Gpu]
    interval_s: float
    interval_source: str
    rtt_s: float
    #: Windows discarded for a counter that went backwards or a GPU without a reading at
    #: an edge (the sensor's dropped reads).
    dropped: int = 0

    def domains(self) -> Sequence[str]:
        return [g.domain for g in self._gpus]

    def min_window_s(self) -> float:
        return min_window(self.interval_s, self.rtt_s)

    def edge_error_s(self) -> float:
        return edge_bound(self.interval_s, self.rtt_s)

    def health(self) -> SensorHealth:
        """The refresh interval learned by watching the counters change (so they advance),
        or told (not checked); the windows discarded as dropped reads."""
        learned = self.interval_source == "learned"
        notes = () if learned else ("refresh interval told (tpw_sensor_interval), not observed",)
        return SensorHealth(True if learned else None, self.interval_s, self.dropped, notes)

    def gpus_json(self) -> list[dict[str, str]]:
        return [{"host": g.host, "uuid": g.uuid, "model": g.model} for g in self._gpus]

    def hardware(self) -> tuple[str, ...]:
        return tuple(g.model for g in self._gpus)

    def lock_ids(self) -> tuple[str, ...]:
        return tuple(f"dcgm:{g.host}/{g.uuid}" for g in self._gpus)

    def capabilities(self) -> Capabilities:
        return Capabilities(tuple(g.uuid for g in self._gpus), "device", True)


__all__ = [
    "ENERGY_METRIC",
    "LABELS",
    "LONGEST_WINDOW_S",
    "Gpu",
    "RemoteGpus",
    "check_interval",
    "edge_bound",
    "gpu_of",
    "host_of",
    "http_get",
    "http_json",
    "label",
    "min_window",
    "parse_exposition",
    "parse_select",
    "per_gpu",
    "selected",
]
