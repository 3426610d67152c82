"""The window runner on a fake sensor and a fake clock: phase, sync, lock, reads, validation."""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import threading
import types
from pathlib import Path

import pytest

from pytest_tpw.errors import MeasurementError, SensorError
from pytest_tpw.host.locks import DeviceLocks
from pytest_tpw.measure.samples import SHORT_WINDOW, WAITED, Measurement
from pytest_tpw.measure.window import MAX_INVALID_WINDOWS, Closed, WindowRunner, cuda_sync
from pytest_tpw.sensors.base import WindowEnergy
from pytest_tpw.testing import FakeClock, FakeSensor, make_meter

WHERE = "t.py::test_w (window 0)"

needs_flock = pytest.mark.skipif(
    importlib.util.find_spec("fcntl") is None, reason="flock needs fcntl (POSIX)"
)


def runner_on(sensor: FakeSensor, clock: FakeClock, **options: object) -> WindowRunner:
    """A runner whose clock and sleep are the fake clock's, with no sync and no phase."""
    settings: dict[str, object] = {
        "clock": clock,
        "sleep": clock.advance,
        "sync": lambda devices: None,
        **options,
    }
    return WindowRunner(sensor, **settings)  # type: ignore[arg-type]


def one_window(
    runner: WindowRunner, clock: FakeClock, seconds: float = 1.0, tokens: int = 10, **kw: bool
) -> Closed:
    window = runner.open("t.py::test_w")
    clock.advance(seconds)
    return runner.close(window, tokens, 1, WHERE, **kw)


# -- the random phase before the first read ------------------------------------------------


def test_random_delay_comes_before_the_first_read() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock)
    slept: list[tuple[float, int]] = []

    def sleep(seconds: float) -> None:
        slept.append((seconds, sensor.begins))  # begins == 0: before the first read
        clock.advance(seconds)

    runner = runner_on(sensor, clock, max_delay_s=2.0, rng=random.Random(7), sleep=sleep)
    window = runner.open()
    expected = random.Random(7).uniform(0.0, 2.0)
    assert slept == [(expected, 0)]
    assert 0.0 <= expected <= 2.0
    # the first read happened after the delay: the sensor's token is the clock then
    assert window.token == pytest.approx(expected)
    assert window.started == pytest.approx(expected)
    clock.advance(1.0)
    closed = runner.close(window, 10, 1, WHERE)
    assert closed.sample is not None
    assert closed.sample.seconds == pytest.approx(1.0)  # the delay is outside the window
    assert closed.sample.joules == pytest.approx(100.0)  # 100 W x 1 s


def test_each_window_draws_its_own_delay() -> None:
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    runner = runner_on(FakeSensor(clock), clock, max_delay_s=0.5, rng=random.Random(1), sleep=sleep)
    for _ in range(3):
        one_window(runner, clock)
    rng = random.Random(1)
    assert slept == [rng.uniform(0.0, 0.5) for _ in range(3)]
    assert len(set(slept)) == 3


def test_no_delay_no_sleep() -> None:
    clock = FakeClock()
    slept: list[float] = []
    runner = runner_on(FakeSensor(clock), clock, max_delay_s=0.0, sleep=slept.append)
    assert one_window(runner, clock).sample is not None
    assert slept == []


# -- CUDA sync before both reads ------------------------------------------------------------


def test_sync_comes_before_both_reads_on_the_measured_devices() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock, domains=("gpu:0", "gpu:1"))
    synced: list[tuple[int, int, tuple[int, ...] | None]] = []
    runner = runner_on(
        sensor, clock, devices=(1,), sync=lambda d: synced.append((sensor.begins, sensor.ends, d))
    )
    window = runner.open()
    assert synced == [(0, 0, (1,))]  # before begin()
    clock.advance(1.0)
    runner.close(window, 10, 1, WHERE)
    assert synced == [(0, 0, (1,)), (1, 0, (1,))]  # before end()


def test_cuda_sync_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    cuda_sync((0,))
    assert "torch" not in sys.modules


class _Cuda:
    def __init__(self, initialized: bool) -> None:
        self.initialized = initialized
        self.synced: list[int] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return 3

    def synchronize(self, index: int) -> None:
        self.synced.append(index)


@pytest.mark.parametrize(
    ("initialized", "devices", "expected"),
    [
        (False, None, []),  # CUDA never used: nothing queued, nothing to wait for
        (True, None, [0, 1, 2]),  # every visible device
        (True, (2, 0), [2, 0]),  # only the measured ones
    ],
)
def test_cuda_sync_waits_on_the_measured_devices(
    monkeypatch: pytest.MonkeyPatch,
    initialized: bool,
    devices: tuple[int, ...] | None,
    expected: list[int],
) -> None:
    cuda = _Cuda(initialized)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    cuda_sync(devices)
    assert cuda.synced == expected


# -- the device lock: held only between open and close --------------------------------------


def held_elsewhere(directory: Path, device: str) -> bool:
    """Whether some open file description holds the device's lock now (never blocks)."""
    import fcntl  # POSIX only: the tests that call this are skipped elsewhere

    from pytest_tpw.host.locks import _file_name

    fd = os.open(directory / _file_name(device), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class _LockWatching(FakeSensor):
    """Notes, at each read, whether the device's lock is held."""

    def __init__(self, clock: FakeClock, directory: Path) -> None:
        super().__init__(clock)
        self.directory = directory
        self.seen: list[bool] = []

    def begin(self) -> object:
        self.seen.append(held_elsewhere(self.directory, "dev"))
        return super().begin()

    def end(self, token: object) -> WindowEnergy:
        self.seen.append(held_elsewhere(self.directory, "dev"))
        return super().end(token)


@needs_flock
def test_the_lock_is_held_inside_windows_only(tmp_path: Path) -> None:
    clock = FakeClock()
    sensor = _LockWatching(clock, tmp_path)
    runner = runner_on(sensor, clock, locks=DeviceLocks(["dev"], tmp_path))
    for _ in range(2):
        assert not held_elsewhere(tmp_path, "dev")  # between windows: free
        window = runner.open("t.py::test_w")
        assert held_elsewhere(tmp_path, "dev")
        clock.advance(1.0)
        closed = runner.close(window, 10, 1, WHERE)
        assert not held_elsewhere(tmp_path, "dev")
        assert closed.sample is not None
        assert not any(w.startswith(WAITED) for w in closed.sample.warnings)  # no wait
    assert sensor.seen == [True, True, True, True]  # at every begin() and end()


@needs_flock
def test_abandoning_a_window_releases_the_lock_and_ends_the_read(tmp_path: Path) -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock)
    runner = runner_on(sensor, clock, locks=DeviceLocks(["dev"], tmp_path))
    window = runner.open("t.py::test_w")
    assert held_elsewhere(tmp_path, "dev")
    runner.abandon(window)  # the work raised inside the window
    assert not held_elsewhere(tmp_path, "dev")
    assert (sensor.begins, sensor.ends) == (1, 1)  # closed on the sensor, nothing kept


class _FailingEnd(FakeSensor):
    def end(self, token: object) -> WindowEnergy:
        super().end(token)
        raise SensorError("NVML: GPU is lost")


@needs_flock
def test_abandon_swallows_the_sensors_error_and_still_releases(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = runner_on(_FailingEnd(clock), clock, locks=DeviceLocks(["dev"], tmp_path))
    window = runner.open()
    runner.abandon(window)  # the work's own exception is the one to report
    assert not held_elsewhere(tmp_path, "dev")


@needs_flock
def test_a_sensor_error_at_close_names_the_window_and_releases(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = runner_on(_FailingEnd(clock), clock, locks=DeviceLocks(["dev"], tmp_path))
    window = runner.open()
    with pytest.raises(SensorError, match=r"t\.py::test_w \(window 0\): NVML: GPU is lost"):
        runner.close(window, 10, 1, WHERE)
    assert not held_elsewhere(tmp_path, "dev")


@needs_flock
def test_a_failing_sync_before_the_window_releases_the_lock(tmp_path: Path) -> None:
    def sync(devices: tuple[int, ...] | None) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    clock = FakeClock()
    sensor = FakeSensor(clock)
    runner = runner_on(sensor, clock, locks=DeviceLocks(["dev"], tmp_path), sync=sync)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        runner.open()
    assert not held_elsewhere(tmp_path, "dev")
    assert sensor.begins == 0  # no read was taken


# the same through the meter, as a test uses it (these replace the meter tests that used to
# live in test_locks.py)


@needs_flock
def test_the_meter_holds_the_lock_inside_windows_only(tmp_path: Path) -> None:
    clock = FakeClock()
    sensor = _LockWatching(clock, tmp_path)
    meter = make_meter(
        sensor, clock=clock, rounds=2, warmup=0, locks=DeviceLocks(["dev"], tmp_path)
    )
    for w in meter.rounds():
        assert not held_elsewhere(tmp_path, "dev")  # between windows: free
        with w:
            assert held_elsewhere(tmp_path, "dev")
            clock.advance(1.0)
            w.add_tokens(1)
    assert sensor.seen == [True, True, True, True]  # at every begin() and end()
    assert not held_elsewhere(tmp_path, "dev")
    (m,) = meter.measurements
    assert len(m.samples) == 2
    assert m.lock_waits() == []
    # the call form too: free again once the call returns
    meter(lambda: clock.advance(1.0), tokens=1, name="call")
    assert not held_elsewhere(tmp_path, "dev")
    assert sensor.seen[4:] == [True] * 4  # two windows (no warm-up), two reads each


@needs_flock
def test_work_raising_inside_a_meter_window_releases_the_lock(tmp_path: Path) -> None:
    clock = FakeClock()
    meter = make_meter(
        FakeSensor(clock), clock=clock, rounds=2, locks=DeviceLocks(["dev"], tmp_path)
    )
    with pytest.raises(RuntimeError, match="work failed"):
        for w in meter.rounds():
            with w:
                raise RuntimeError("work failed")
    assert not held_elsewhere(tmp_path, "dev")

    def failing() -> None:
        raise RuntimeError("call failed")

    with pytest.raises(RuntimeError, match="call failed"):
        meter(failing, tokens=1, name="call")
    assert not held_elsewhere(tmp_path, "dev")


@needs_flock
def test_a_failing_sync_before_a_meter_window_releases_the_lock(tmp_path: Path) -> None:
    def sync(devices: tuple[int, ...] | None) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    clock = FakeClock()
    meter = make_meter(
        FakeSensor(clock), clock=clock, rounds=2, sync=sync, locks=DeviceLocks(["dev"], tmp_path)
    )
    with pytest.raises(RuntimeError, match="illegal memory access"):
        for w in meter.rounds():
            with w:
                w.add_tokens(1)
    assert not held_elsewhere(tmp_path, "dev")


@needs_flock
def test_an_invalid_window_and_a_refused_one_release_the_lock(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = runner_on(
        FakeSensor(clock, invalid=[True]), clock, locks=DeviceLocks(["dev"], tmp_path)
    )
    assert one_window(runner, clock).sample is None
    assert not held_elsewhere(tmp_path, "dev")
    with pytest.raises(MeasurementError):
        one_window(runner, clock, tokens=0)
    assert not held_elsewhere(tmp_path, "dev")


@needs_flock
def test_a_window_that_waited_for_the_lock_says_so(tmp_path: Path) -> None:
    """Another thread holds the device (as another process would); the window waits for it,
    the wait stays outside the window, and the sample carries the WAITED note."""
    holding, go = threading.Event(), threading.Event()

    def holder() -> None:
        other = DeviceLocks(["dev"], tmp_path)
        other.acquire("t.py::test_other")
        holding.set()
        go.wait(timeout=30)
        other.release()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        clock = FakeClock()
        lock_clock = FakeClock()

        def lock_sleep(seconds: float) -> None:
            lock_clock.advance(seconds)  # waiting costs fake time only
            go.set()  # the holder lets go once we are waiting
            threading.Event().wait(0.01)  # let the holder's release reach the kernel

        device_locks = DeviceLocks(["dev"], tmp_path, lock_clock, sleep=lock_sleep)
        runner = runner_on(FakeSensor(clock), clock, locks=device_locks)
        window = runner.open("t.py::test_w")
        clock.advance(1.0)
        closed = runner.close(window, 10, 1, WHERE)
    finally:
        go.set()
        thread.join(timeout=30)
    assert closed.sample is not None
    (note,) = [w for w in closed.sample.warnings if w.startswith(WAITED)]
    assert note.endswith(" s for dev")
    assert closed.sample.seconds == pytest.approx(1.0)  # the wait is not in the window
    m = Measurement("t.py::test_w", None, "fake", "simulated", samples=[closed.sample])
    (waited,) = m.lock_waits()
    assert waited >= 0.05  # at least one poll of the lock (fake time)
    assert waited == pytest.approx(lock_clock.now, abs=1e-6)
    assert "waited for the device lock" not in " ".join(closed.warnings)  # per sample only


# -- invalid windows ------------------------------------------------------------------------


def test_an_invalid_window_is_discarded_with_the_reason() -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, invalid=[True]), clock)
    closed = one_window(runner, clock)
    assert closed.sample is None
    assert closed.discarded == f"{WHERE}: window discarded: counter went backwards"


def test_invalid_windows_in_a_row_are_counted_and_the_third_is_an_error() -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, invalid=[True, True, True]), clock)
    assert MAX_INVALID_WINDOWS == 3
    assert one_window(runner, clock).sample is None
    assert one_window(runner, clock).sample is None
    with pytest.raises(MeasurementError) as info:
        one_window(runner, clock)
    text = str(info.value)
    assert text.startswith(WHERE)
    assert "3 windows in a row were invalid" in text and "counter went backwards" in text


def test_a_valid_window_resets_the_run_of_invalid_ones() -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, invalid=[True, True, False, True, True, False]), clock)
    outcomes = [one_window(runner, clock).sample is not None for _ in range(6)]
    assert outcomes == [False, False, True, False, False, True]  # never three in a row


# -- windows that cannot give a sample -------------------------------------------------------


def test_zero_tokens_is_an_error_naming_the_window() -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock), clock)
    with pytest.raises(MeasurementError) as info:
        one_window(runner, clock, tokens=0)
    text = str(info.value)
    assert text.startswith(WHERE)
    assert "0 tokens" in text and "w.add_tokens(n)" in text and "tokens=" in text


@pytest.mark.parametrize(
    ("watts", "seconds"), [(0.0, 1.0), (100.0, 0.0)], ids=["no-power", "no-time"]
)
def test_zero_joules_is_an_error_naming_the_window(watts: float, seconds: float) -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, watts=watts), clock)
    with pytest.raises(MeasurementError) as info:
        one_window(runner, clock, seconds=seconds)
    text = str(info.value)
    assert text.startswith(WHERE)
    assert "fake sensor measured 0 J" in text
    assert "--tpw-min-window" in text  # what to do


# -- devices= -------------------------------------------------------------------------------


def test_devices_select_their_gpus_and_keep_other_domains() -> None:
    clock = FakeClock()
    # 300 W split over three domains: 100 J each over one second
    sensor = FakeSensor(clock, watts=300.0, domains=("gpu:0", "gpu:1", "cpu:0"))
    closed = one_window(runner_on(sensor, clock, devices=(1,)), clock)
    assert closed.sample is not None
    assert closed.sample.domains == {"gpu:1": pytest.approx(100.0), "cpu:0": pytest.approx(100.0)}
    assert closed.sample.joules == pytest.approx(200.0)  # gpu:0 is not this test's


def test_without_devices_every_domain_counts() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock, watts=300.0, domains=("gpu:0", "gpu:1", "cpu:0"))
    closed = one_window(runner_on(sensor, clock), clock)
    assert closed.sample is not None
    assert set(closed.sample.domains) == {"gpu:0", "gpu:1", "cpu:0"}
    assert closed.sample.joules == pytest.approx(300.0)


def test_devices_on_a_sensor_without_gpu_domains_keep_everything() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock, domains=("package-0", "dram"))
    closed = one_window(runner_on(sensor, clock, devices=(0,)), clock)
    assert closed.sample is not None
    assert closed.sample.joules == pytest.approx(100.0)


def test_a_device_not_measured_is_an_error_naming_it() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock, domains=("gpu:0", "gpu:1"))
    with pytest.raises(MeasurementError) as info:
        one_window(runner_on(sensor, clock, devices=(1, 3)), clock)
    text = str(info.value)
    assert text.startswith(WHERE)
    assert "gpu:3" in text and "gpu:0, gpu:1" in text and "--tpw-devices" in text


# -- what a sample carries -------------------------------------------------------------------


def test_a_sample_has_the_windows_figures() -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, watts=50.0), clock)
    window = runner.open()
    clock.advance(2.0)
    assert runner.elapsed(window) == pytest.approx(2.0)
    closed = runner.close(window, 40, 4, WHERE)
    s = closed.sample
    assert s is not None
    assert (s.tokens, s.calls) == (40, 4)
    assert s.joules == pytest.approx(100.0) and s.seconds == pytest.approx(2.0)
    assert s.tokens_per_joule == pytest.approx(0.4)
    assert closed.discarded is None


def test_sensor_warnings_go_to_the_sample_and_the_measurement() -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, warnings=["thermal throttling"]), clock)
    closed = one_window(runner, clock)
    assert closed.sample is not None
    assert closed.sample.warnings == ["thermal throttling"]
    assert closed.warnings == ("thermal throttling",)


@pytest.mark.parametrize("loop_form", [True, False])
def test_a_short_loop_window_is_marked(loop_form: bool) -> None:
    clock = FakeClock()
    runner = runner_on(FakeSensor(clock, min_s=1.0), clock)
    closed = one_window(runner, clock, seconds=0.25, loop_form=loop_form)
    assert closed.sample is not None
    # the call form tops its windows up itself; only the loop form can be short
    assert (SHORT_WINDOW in closed.sample.warnings) is loop_form
    assert SHORT_WINDOW not in closed.warnings  # per window, summarised by the meter
    long = one_window(runner, clock, seconds=1.0, loop_form=True)
    assert long.sample is not None and SHORT_WINDOW not in long.sample.warnings


def test_min_window_is_the_setting_else_the_sensors() -> None:
    clock = FakeClock()
    sensor = FakeSensor(clock, min_s=0.2)
    assert runner_on(sensor, clock).min_window_s == 0.2
    assert runner_on(sensor, clock, min_window_s=1.5).min_window_s == 1.5
