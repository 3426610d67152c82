"""``tpw.load`` on a meter (no pytest run): one sensor window at a time, as NVML demands; the
steady part is the sample, the ramp and the drain meet it for the gross figure; what a
window that cannot count tokens says."""

from __future__ import annotations

import time

import pytest

from pytest_tpw.errors import MeasurementError
from pytest_tpw.load.shape import LoadError
from pytest_tpw.sensors.base import SensorOptions, WindowEnergy
from pytest_tpw.sensors.sim import SimSensor
from pytest_tpw.testing import make_meter
from tests.fakes.openai_stream import Behaviour, serving

pytest.importorskip("openai")


class OneWindowSensor(SimSensor):
    """The sim sensor, refusing a second window while one is open (NVML does), and keeping
    every window's edges."""

    def open(self) -> None:
        super().open()
        self.open_token: object | None = None
        self.windows: list[tuple[float, float, float]] = []

    def begin(self) -> object:
        if self.open_token is not None:
            raise AssertionError("begin() while a window is open")
        self.open_token = super().begin()
        return self.open_token

    def end(self, token: object) -> WindowEnergy:
        assert token is self.open_token, "end() of a window that is not the open one"
        self.open_token = None
        assert isinstance(token, float)
        energy = super().end(token)
        self.windows.append((token, time.perf_counter(), sum(energy.joules.values())))
        return energy


def sensor() -> OneWindowSensor:
    s = OneWindowSensor(SensorOptions(sim_watts=100.0, sim_noise=0.0))
    s.open()
    return s


def test_the_steady_part_is_the_sample_and_the_whole_load_its_context() -> None:
    s = sensor()
    meter = make_meter(s, rounds=2, warmup=1)
    with serving() as (url, _):
        out = meter.load(url, concurrency=2, duration_s=0.2, max_tokens=4, name="c2")
    assert s.open_token is None
    # 3 load windows (1 warm-up), each read as ramp, steady part, drain: 9 windows in turn
    assert len(s.windows) == 9
    for (_, end, _), (start, _, _) in zip(s.windows, s.windows[1:], strict=False):
        assert start >= end  # never two at once
    assert out.result is not None and out.result.n == 2
    (m,) = meter.measurements
    assert [smp.joules for smp in m.samples] == [s.windows[4][2], s.windows[7][2]]
    load = out.load
    assert m.load is not None
    whole = [sum(w[2] for w in s.windows[i : i + 3]) for i in (3, 6)]
    tokens = sum(w.gross_tokens for w in m.load.windows)
    assert load["gross_tokens_per_joule"] == pytest.approx(tokens / sum(whole), rel=1e-5)
    assert load["windows"] == 2
    assert load["requests"] == sum(w.requests for w in m.load.windows)


def test_a_window_without_tokens_says_why() -> None:
    s = sensor()
    meter = make_meter(s, rounds=1, warmup=0)
    # the ramp's 2 requests answer, then the server fails every request
    with serving(Behaviour(fail_after=2)) as (url, _), pytest.raises(MeasurementError) as info:
        meter.load(url, concurrency=2, duration_s=0.2, max_tokens=4)
    text = str(info.value)
    assert "(load window 0): no tokens were generated in the steady part" in text
    assert "requests failed; the most frequent: HTTP 500 (InternalServerError)" in text
    assert s.open_token is None  # nothing left open on the sensor
    with serving(Behaviour(fail_every=1)) as (url, _), pytest.raises(LoadError) as fails:
        meter.load(url, concurrency=2, duration_s=0.2, max_tokens=4, name="all")
    assert "every request of the ramp failed" in str(fails.value)
    assert s.open_token is None


def test_a_second_measurement_of_the_same_name_is_refused_before_any_load() -> None:
    meter = make_meter(sensor(), rounds=1, warmup=0)
    with serving() as (url, b):
        meter.load(url, concurrency=1, duration_s=0.1, max_tokens=2, name="x")
        sent = b.received
        with pytest.raises(MeasurementError, match="already taken"):
            meter.load(url, concurrency=1, duration_s=0.1, max_tokens=2, name="x")
        assert b.received == sent
