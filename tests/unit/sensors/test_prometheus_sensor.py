"""The prometheus sensor against a real Prometheus server (Debian's ``prometheus``) scraping
replayed exporters on the loopback: raw samples interpolated at the window's edges, each GPU
once, both label spellings, selection, and clear refusals. Skipped, saying how to install
it, where the binary is absent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.prometheus import PrometheusSensor
from tests.fakes import prometheus_server
from tests.fakes.dcgm_exporter import Exporter, FakeGpu, exporting

pytestmark = pytest.mark.skipif(
    prometheus_server.binary() is None,
    reason=f"needs a Prometheus server: {prometheus_server.INSTALL}",
)

EXPORTERS = (
    Exporter([FakeGpu("GPU-a", 300.0), FakeGpu("GPU-b", 150.0, 1, mig=2)], hostname="node1"),
    Exporter([FakeGpu("GPU-c", 200.0)], hostname="node2", host_label="hostname", uuid_label="uuid"),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ExitStack() as stack:
        urls = [stack.enter_context(exporting(e)) for e in EXPORTERS]
        targets = [u.split("//", 1)[1].split("/", 1)[0] for u in urls]
        folder = tmp_path_factory.mktemp("prometheus")
        yield stack.enter_context(prometheus_server.prometheus(targets, Path(folder)))


def sensor(url: str, **kw: object) -> PrometheusSensor:
    s = PrometheusSensor(SensorOptions(urls=(url,), **kw))  # type: ignore[arg-type]
    s.open()
    return s


def test_the_watts_of_every_gpu_once_from_raw_samples(server: str) -> None:
    s = sensor(server)
    assert s.domains() == ["gpu:node1/GPU-a", "gpu:node1/GPU-b", "gpu:node2/GPU-c"]
    # the replay refreshes every 100 ms, Prometheus scrapes every 200 ms: the coarser counts
    assert s.interval_source == "learned" and 0.15 < s.interval_s < 0.4
    for _ in range(2):
        token = s.begin()
        started = time.perf_counter()
        time.sleep(2.0)
        seconds = time.perf_counter() - started
        energy = s.end(token)
        assert energy.warnings == [] and energy.invalid is None
        watts = {d: j / seconds for d, j in energy.joules.items()}
        assert sum(watts.values()) == pytest.approx(650.0, rel=0.1)  # the 10 %
        assert watts["gpu:node1/GPU-b"] == pytest.approx(150.0, rel=0.2)  # not 2 x (MIG)
        assert energy.state["bound"] < 0.5


def test_gpus_are_selected_by_label_and_a_miss_lists_what_is_there(server: str) -> None:
    assert sensor(server, select=("hostname=node2",), interval_s=0.2).domains() == [
        "gpu:node2/GPU-c"
    ]
    with pytest.raises(SensorUnavailable, match=r"no DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION "
                       r"series of a selected GPU.*node1/GPU-a"):  # fmt: skip
        sensor(server, select=("pod=nothing",), interval_s=0.2)


def test_an_unreachable_server_and_a_second_url_are_refused() -> None:
    with pytest.raises(SensorUnavailable, match=r"cannot read the Prometheus query API at "
                       r"http://127\.0\.0\.1:9/api/v1/query"):  # fmt: skip
        sensor("http://127.0.0.1:9")
    with pytest.raises(SensorUnavailable, match="needs one server's URL"):
        PrometheusSensor(SensorOptions(urls=("http://a:9090", "http://b:9090"))).open()
