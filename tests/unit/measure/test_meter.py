"""The meter on a scripted sensor and a fake clock: calibration, rounds, tokens, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal, overload

import pytest

from pytest_tpw import testing
from pytest_tpw.errors import MeasurementError
from pytest_tpw.measure.meter import Meter, OffMeter, TokensPerJoule
from pytest_tpw.sensors import Sensor, WindowEnergy
from pytest_tpw.testing import FakeClock, FakeSensor


class WattSensor(FakeSensor):
    """The suite's fake sensor on a fake clock: joules = watts x fake-clock time."""

    def __init__(
        self,
        clock: FakeClock,
        watts: float = 100.0,
        min_s: float = 1.0,
        invalid: Sequence[bool] = (),
    ) -> None:
        super().__init__(clock, watts=watts, min_s=min_s, invalid=invalid)


@overload
def make_meter(
    clock: FakeClock,
    sensor: Sensor,
    rounds: int = 5,
    warmup: int = 1,
    delay: float = 0.0,
    enabled: Literal[True] = True,
    syncs: list[object] | None = None,
) -> Meter: ...


@overload
def make_meter(
    clock: FakeClock,
    sensor: Sensor,
    rounds: int = 5,
    warmup: int = 1,
    delay: float = 0.0,
    *,
    enabled: bool,
    syncs: list[object] | None = None,
) -> TokensPerJoule: ...


def make_meter(
    clock: FakeClock,
    sensor: Sensor,
    rounds: int = 5,
    warmup: int = 1,
    delay: float = 0.0,
    enabled: bool = True,
    syncs: list[object] | None = None,
) -> TokensPerJoule:
    if not enabled:
        return OffMeter("test_x.py::test_y")
    log = syncs if syncs is not None else []
    return testing.make_meter(
        sensor, clock=clock, rounds=rounds, warmup=warmup, delay=delay, sync=log.append
    )


def test_calibration_repeats_short_calls_to_fill_the_minimum_window() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, watts=100.0, min_s=1.0)
    calls = []

    def work() -> str:
        clock.advance(0.01)  # each call: 10 ms of "work"
        calls.append(1)
        return "out"

    meter = make_meter(clock, sensor, rounds=5, warmup=1)
    assert meter(work, tokens=4) == "out"
    (m,) = meter.measurements
    assert len(m.samples) == 5
    for s in m.samples:
        assert s.seconds >= 1.0 - 1e-9  # never shorter than the sensor's minimum
        assert s.calls >= 100  # 1 s / 10 ms
        assert s.tokens == 4 * s.calls
        # 100 W for s.seconds, 4 tokens per 10 ms => 400 tokens/s / 100 W = 4 tokens/J
        assert s.tokens_per_joule == pytest.approx(4.0)
    # warm-up window + 5 recorded windows, each read once at each end
    assert sensor.begins == sensor.ends == 6
    assert len(calls) > sum(s.calls for s in m.samples)  # the warm-up window's calls too


def test_recorded_calls_exclude_the_warmup_window() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=0.5)
    calls: list[int] = []

    def work() -> None:
        clock.advance(0.1)
        calls.append(1)

    meter = make_meter(clock, sensor, rounds=3, warmup=2)
    meter(work, tokens=1)
    m = meter.measurements[0]
    recorded = sum(s.calls for s in m.samples)
    assert len(m.samples) == 3
    assert len(calls) > recorded  # two warm-up windows ran calls that were not recorded
    assert sensor.begins == 5


def test_long_calls_run_once_per_window() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=1.0)

    def work() -> int:
        clock.advance(3.0)
        return 7

    meter = make_meter(clock, sensor, rounds=4, warmup=0)
    meter(work, tokens=lambda r: r)
    assert [s.calls for s in meter.measurements[0].samples] == [1, 1, 1, 1]
    assert [s.tokens for s in meter.measurements[0].samples] == [7, 7, 7, 7]


def test_result_summarises_the_samples() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, watts=50.0, min_s=1.0)

    def work() -> None:
        clock.advance(0.25)

    meter = make_meter(clock, sensor, rounds=6)
    assert meter.result is None
    meter(work, tokens=10)
    result = meter.result
    assert result is not None
    # 10 tokens per 0.25 s at 50 W: 40 tokens/s, 0.8 tokens/J
    assert result.tokens_per_joule == pytest.approx(0.8)
    assert result.joules_per_token == pytest.approx(1.25)
    assert result.watts == pytest.approx(50.0)
    assert result.tokens_per_second == pytest.approx(40.0)
    assert result.n == 6
    assert result.verdict == "NO_BASELINE"
    assert result.name == "test_x.py::test_y"


def test_sync_brackets_every_window_and_delay_precedes_it() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=0.1)
    syncs: list[object] = []

    def work() -> None:
        clock.advance(0.2)

    meter = make_meter(clock, sensor, rounds=3, warmup=1, delay=0.1, syncs=syncs)
    meter(work, tokens=1)
    assert len(syncs) == 2 * 4  # before and after each of 1 warm-up + 3 recorded windows
    # the random delays are outside the windows: windows hold only the work
    assert all(s.seconds == pytest.approx(0.2) for s in meter.measurements[0].samples)


def test_loop_form_yields_warmup_then_recorded_windows() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=0.5)
    meter = make_meter(clock, sensor, rounds=4, warmup=2)
    seen = []
    for w in meter.rounds(name="stream"):
        with w:
            clock.advance(1.0)
            w.add_tokens(3)
            w.add_tokens(2)
        seen.append(w.warmup)
    assert seen == [True, True, False, False, False, False]
    m = meter.measurements[0]
    assert m.key == "test_x.py::test_y::stream"
    assert [s.tokens for s in m.samples] == [5, 5, 5, 5]
    assert m.complete
    assert not m.warnings


def test_loop_form_short_windows_warn_once() -> None:
    clock = FakeClock()
    meter = make_meter(clock, WattSensor(clock, min_s=1.0), rounds=3, warmup=0)
    for w in meter.rounds():
        with w:
            clock.advance(0.1)
            w.tokens = 1
    (warning,) = meter.measurements[0].warnings
    assert "3 of 3 windows were shorter" in warning
    assert "1.000 s minimum" in warning


def test_zero_tokens_in_a_window_is_an_error_naming_the_test() -> None:
    clock = FakeClock()
    meter = make_meter(clock, WattSensor(clock, min_s=0.1))
    with pytest.raises(MeasurementError, match=r"test_x.py::test_y.*0 tokens"):
        for w in meter.rounds():
            with w:
                clock.advance(0.2)


@pytest.mark.parametrize("bad", [0, -1, True, "3", 2.5, None])
def test_bad_token_values_are_refused(bad: object) -> None:
    clock = FakeClock()
    meter = make_meter(clock, WattSensor(clock, min_s=0.1))

    def work() -> None:
        clock.advance(0.2)

    with pytest.raises(MeasurementError, match=r"test_x\.py::test_y"):
        meter(work, tokens=lambda _: bad)
    if not callable(bad) and bad not in (0,):
        with pytest.raises(MeasurementError, match=r"test_x\.py::test_y"):
            meter(work, tokens=bad, name="direct")  # type: ignore[arg-type]


def test_zero_joules_is_an_error_with_the_cause() -> None:
    clock = FakeClock()
    meter = make_meter(clock, WattSensor(clock, watts=0.0, min_s=0.1))

    def work() -> None:
        clock.advance(0.2)

    with pytest.raises(MeasurementError, match=r"test_x.py::test_y.*0 J.*positive energy"):
        meter(work, tokens=1)


def test_an_invalid_window_is_discarded_and_rerun() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=0.1, invalid=[False, True, False, False, False])

    def work() -> None:
        clock.advance(0.2)

    meter = make_meter(clock, sensor, rounds=3, warmup=1)
    meter(work, tokens=1)
    m = meter.measurements[0]
    assert len(m.samples) == 3
    assert any("counter went backwards" in w for w in m.warnings)
    assert sensor.begins == 5  # one extra window replaced the invalid one


def test_invalid_windows_in_a_row_give_up() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=0.1, invalid=[True] * 10)

    def work() -> None:
        clock.advance(0.2)

    meter = make_meter(clock, sensor, rounds=3, warmup=0)
    with pytest.raises(MeasurementError, match="3 windows in a row were invalid"):
        meter(work, tokens=1)


def test_work_raising_closes_the_window_and_records_nothing() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, min_s=0.1)

    def work() -> None:
        raise RuntimeError("boom")

    meter = make_meter(clock, sensor)
    with pytest.raises(RuntimeError, match="boom"):
        meter(work, tokens=1)
    assert sensor.begins == sensor.ends == 1
    assert not meter.measurements[0].complete
    assert meter.result is None


def test_names_must_be_unique_within_a_test() -> None:
    clock = FakeClock()
    meter = make_meter(clock, WattSensor(clock, min_s=0.1), rounds=2)

    def work() -> None:
        clock.advance(0.2)

    meter(work, tokens=1, name="a")
    with pytest.raises(MeasurementError, match="'a' was already taken"):
        meter(work, tokens=1, name="a")


def test_disabled_meter_runs_the_work_once() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock)
    calls: list[int] = []
    meter = make_meter(clock, sensor, enabled=False)

    def work() -> int:
        calls.append(1)
        return 5

    assert meter(work, tokens=1) == 5
    windows = []
    for w in meter.rounds(name="loop"):
        with w:
            w.add_tokens(1)
        windows.append(w)
    assert calls == [1]
    assert len(windows) == 1
    assert sensor.begins == 0
    assert meter.result is None
    meter.check_finished()  # the loop ran out: nothing to complain about


def test_acall_measures_coroutines() -> None:
    clock = FakeClock()
    sensor = WattSensor(clock, watts=10.0, min_s=1.0)

    async def complete(prompt: str) -> int:
        clock.advance(0.05)
        return len(prompt)

    meter = make_meter(clock, sensor, rounds=3)
    out = asyncio.run(meter.acall(complete, "abcd", tokens=lambda n: n))
    assert out == 4
    result = meter.result
    assert result is not None
    # 4 tokens per 50 ms at 10 W = 80 tokens/s / 10 W = 8 tokens/J
    assert result.tokens_per_joule == pytest.approx(8.0)


def test_call_form_refuses_coroutine_functions() -> None:
    clock = FakeClock()
    meter = make_meter(clock, WattSensor(clock))

    async def complete() -> int:
        return 1

    with pytest.raises(TypeError, match="acall"):
        _ = meter(complete, tokens=1)


class TwoGpuSensor(WattSensor):
    """Two GPU domains: gpu:0 draws watts, gpu:1 draws 3x watts."""

    def domains(self) -> Sequence[str]:
        return ("gpu:0", "gpu:1")

    def end(self, token: object) -> WindowEnergy:
        assert isinstance(token, float)
        j = self.watts * (self.clock() - token)
        return WindowEnergy({"gpu:0": j, "gpu:1": 3 * j})


def devices_meter(clock: FakeClock, sensor: Sensor, devices: tuple[int, ...]) -> Meter:
    return testing.make_meter(
        sensor, clock=clock, rounds=2, warmup=0, devices=devices, nodeid="t.py::test_g"
    )


def test_marker_devices_count_only_their_gpus() -> None:
    clock = FakeClock()
    sensor = TwoGpuSensor(clock, watts=10.0, min_s=0.1)
    meter = devices_meter(clock, sensor, (1,))

    def work() -> None:
        clock.advance(0.2)

    meter(work, tokens=6)
    sample = meter.measurements[0].samples[0]
    assert sample.domains == {"gpu:1": pytest.approx(6.0)}  # 3 x 10 W x 0.2 s
    assert sample.joules == pytest.approx(6.0)


def test_marker_devices_not_measured_is_an_error() -> None:
    clock = FakeClock()
    sensor = TwoGpuSensor(clock, min_s=0.1)
    meter = devices_meter(clock, sensor, (2,))
    with pytest.raises(MeasurementError, match=r"gpu:2 are not measured.*--tpw-devices"):
        meter(lambda: clock.advance(0.2), tokens=1)


def test_window_warnings_become_one_line_per_kind_with_their_count() -> None:
    """Contention in 3 of 4 windows (1.2 to 1.6 other cores) and a throttled window: two
    lines for the measurement, each saying how many windows had it."""
    from pytest_tpw.measure.meter import window_summaries
    from pytest_tpw.measure.samples import WAITED, Measurement, Sample

    busy = "other processes kept {:.2f} of 2 CPU cores busy during this window (80% ...)"
    m = Measurement("t.py::test_x", None, "cpu-estimate", "estimated")
    for i, other in enumerate([1.2, 1.6, None, 1.45]):
        warnings = [busy.format(other)] if other is not None else ["gpu:0: clocks held down"]
        if i == 0:
            warnings.append(WAITED + "0.5 s for sim-device")
        state = {"other_busy_cores": other, "host_cpus": 2} if other else {}
        m.samples.append(Sample(10, 1.0, 1.0, 1, {}, state=state, warnings=warnings))
    contended, throttled = window_summaries(m)
    assert contended.startswith(
        "t.py::test_x: 3 of 4 windows contended: other processes kept 1.2-1.6 of 2 CPU cores"
    )
    assert throttled == "t.py::test_x: 1 of 4 windows: gpu:0: clocks held down"
