"""The dcgm-exporter sensor against replayed exporters on the loopback: watts recovered,
each GPU once, selection, the collect interval learned or told, a reset discarding its
window, and clear refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.dcgm_exporter import DcgmExporterSensor
from pytest_tpw.testing import check_sensor
from tests.fakes.dcgm_exporter import Exporter, FakeGpu, exporting


def two_hosts() -> list[Exporter]:
    return [
        Exporter(
            [FakeGpu("GPU-a", 300.0), FakeGpu("GPU-b", 150.0, 1, mig=3)],
            hostname="node1",
            host_label="Hostname",  # releases before the rename
        ),
        Exporter(
            [FakeGpu("GPU-c", 200.0, pod="vllm-0")],
            hostname="node2",
            host_label="hostname",  # the newest release
            uuid_label="uuid",  # --use-old-namespace
        ),
    ]


@pytest.fixture
def urls() -> Iterator[tuple[str, ...]]:
    with ExitStack() as stack:
        yield tuple(stack.enter_context(exporting(e)) for e in two_hosts())


def sensor(urls: tuple[str, ...], **kw: object) -> DcgmExporterSensor:
    s = DcgmExporterSensor(SensorOptions(urls=urls, **kw))  # type: ignore[arg-type]
    s.open()
    return s


def test_the_watts_of_every_gpu_once(urls: tuple[str, ...]) -> None:
    s = sensor(urls)
    assert s.domains() == ["gpu:node1/GPU-a", "gpu:node1/GPU-b", "gpu:node2/GPU-c"]
    assert s.interval_source == "learned" and 0.07 < s.interval_s < 0.2  # the replay's 100 ms
    assert s.min_window_s() >= 1.0
    token = s.begin()
    time.sleep(1.5)
    energy = s.end(token)
    seconds = 1.5
    watts = {d: j / seconds for d, j in energy.joules.items()}
    # within the bound the sensor states: one collect interval and the round trips
    assert sum(watts.values()) == pytest.approx(650.0, rel=energy.state["bound"] * 1.5 + 0.02)
    assert watts["gpu:node1/GPU-b"] == pytest.approx(150.0, rel=0.2)  # not 3 x 150 (MIG)
    assert energy.invalid is None and energy.state["gpus"] == 3
    assert s.hardware() == ("NVIDIA H100 80GB HBM3",) * 3
    assert s.capabilities().attribution == "device"
    assert s.edge_error_s() == pytest.approx(s.interval_s + 2 * s.rtt_s)
    described = s.describe()
    assert described["interval_source"] == "learned" and len(described["gpus"]) == 3
    health = s.health()  # learned by watching the counters change: they advance
    assert (health.counter_advances, health.update_period_s) == (True, s.interval_s)
    assert (health.dropped_reads, health.notes) == (0, ())


def test_it_passes_the_sensor_contract(urls: tuple[str, ...]) -> None:
    s = DcgmExporterSensor(SensorOptions(urls=urls, interval_s=0.1))
    check_sensor(s, windows=2, work=lambda: time.sleep(s.min_window_s()))


def test_gpus_are_selected_by_label(urls: tuple[str, ...]) -> None:
    assert sensor(urls, select=("hostname=node2",), interval_s=0.1).domains() == ["gpu:node2/GPU-c"]
    assert sensor(urls, select=("pod=vllm-0",), interval_s=0.1).domains() == ["gpu:node2/GPU-c"]
    assert sensor(urls, select=("uuid=GPU-a,GPU-c",), interval_s=0.1).domains() == [
        "gpu:node1/GPU-a",
        "gpu:node2/GPU-c",
    ]
    with pytest.raises(SensorUnavailable, match=r"no GPU of the exporters matches.*node1/GPU-a"):
        sensor(urls, select=("hostname=node9",), interval_s=0.1)


def test_a_told_interval_skips_learning_and_a_coarse_one_is_refused(
    urls: tuple[str, ...],
) -> None:
    started = time.monotonic()
    s = sensor(urls, interval_s=0.1)
    assert s.interval_source == "told" and time.monotonic() - started < 5
    with pytest.raises(SensorUnavailable, match=r"refreshed every 30 s.*-c 100"):
        sensor(urls, interval_s=30.0)


def test_a_counter_that_refreshes_too_rarely_is_refused_after_watching_it() -> None:
    slow = Exporter([FakeGpu("GPU-a", 300.0)], interval_s=3.0)
    with exporting(slow) as url, pytest.raises(SensorUnavailable) as info:
        sensor((url,), tolerance=0.01)  # 0.6 s a refresh at most: watched for 2.4 s
    assert "refreshed" in str(info.value) and "DCGM_EXPORTER_INTERVAL=100" in str(info.value)


def test_a_driver_reload_discards_the_window() -> None:
    exporter = Exporter([FakeGpu("GPU-a", 300.0)])
    with exporting(exporter) as url:
        s = sensor((url,), interval_s=0.1)
        token = s.begin()
        assert s.health().dropped_reads == 0
        exporter.reset_at = time.time()
        time.sleep(0.5)
        energy = s.end(token)
    assert energy.invalid is not None and "went backwards" in energy.invalid
    health = s.health()  # the discarded window is a dropped read; a told interval, unchecked
    assert (health.dropped_reads, health.counter_advances, health.update_period_s) == (1, None, 0.1)
    assert health.notes == ("refresh interval told (tpw_sensor_interval), not observed",)


def test_unreachable_exporters_and_missing_counters_say_what_to_do() -> None:
    with pytest.raises(SensorUnavailable, match=r"cannot read dcgm-exporter metrics at "
                       r"http://127\.0\.0\.1:9/metrics: .*default port 9400"):  # fmt: skip
        sensor(("http://127.0.0.1:9",))
    with pytest.raises(SensorUnavailable, match=r"needs the exporters' URLs: --tpw-sensor-url"):
        sensor(())
    empty = Exporter([])
    with exporting(empty) as url, pytest.raises(SensorUnavailable, match="serves no DCGM_FI"):
        sensor((url,))


def test_an_exporter_lost_during_a_window_leaves_its_gpus_out_and_says_so() -> None:
    with ExitStack() as stack:
        first = stack.enter_context(exporting(two_hosts()[0]))
        second_stack = ExitStack()
        second = second_stack.enter_context(exporting(two_hosts()[1]))
        s = sensor((first, second), interval_s=0.1)
        token = s.begin()
        second_stack.close()  # node2's exporter goes away
        with pytest.raises(SensorError, match=r"cannot read dcgm-exporter metrics at"):
            s.end(token)


def test_a_gpu_gone_at_an_edge_discards_the_window_rather_than_undercount() -> None:
    exporter = Exporter([FakeGpu("GPU-a", 300.0), FakeGpu("GPU-b", 100.0, 1)])
    with exporting(exporter) as url:
        s = sensor((url,), interval_s=0.1)
        token = s.begin()
        exporter.gpus.pop()  # its series is gone from the exporter
        energy = s.end(token)
    assert energy.invalid is not None and "GPU-b" in energy.invalid
