"""What the vendor counter sensors share (``pytest_tpw.sensors.counters``), on its own."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.counters import (
    U64,
    CounterDevice,
    CounterSensor,
    Probe,
    counter_delta,
    judge_probe,
    probe_counters,
    select_visible,
    uuid_matches,
    visible_entries,
    wanted_indices,
)
from pytest_tpw.testing import FakeClock
from tests.fakes.energy_trace import Board

UUIDS = [
    "a1ff74a1-0000-1000-80c1-3d0e5f7a9b01",
    "a1ff74a1-0000-1000-80c2-4e1f608bac12",
    "c3ff74a1-0000-1000-80c3-5f2071c9bd23",
]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEST_VISIBLE", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


# -- visible devices -------------------------------------------------------------------------


def test_visible_entries_tell_unset_from_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert visible_entries("TEST_VISIBLE") is None
    monkeypatch.setenv("TEST_VISIBLE", "")
    assert visible_entries("TEST_VISIBLE") == []
    monkeypatch.setenv("TEST_VISIBLE", " 1, GPU-ab ,,2")
    assert visible_entries("TEST_VISIBLE") == ["1", "GPU-ab", "2"]


def test_select_visible_takes_indices_and_uuids_in_order_once() -> None:
    chosen = select_visible(
        ["2", "GPU-a1ff74a1-0000-1000-80c1", "2"], UUIDS, "TEST_VISIBLE", uuid_matches
    )
    assert chosen == [UUIDS[2], UUIDS[0]]


def test_select_visible_refuses_an_unknown_or_ambiguous_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_VISIBLE", "0,a1ff74a1")
    with pytest.raises(SensorUnavailable) as excinfo:
        select_visible(["0", "a1ff74a1"], UUIDS, "TEST_VISIBLE", uuid_matches)  # two match
    assert "TEST_VISIBLE='0,a1ff74a1' names 'a1ff74a1'" in str(excinfo.value)
    assert "indices 0..2" in str(excinfo.value)
    with pytest.raises(SensorUnavailable, match=r"names '3'"):
        select_visible(["3"], UUIDS, "TEST_VISIBLE", uuid_matches)


def test_select_visible_can_match_numbers_as_ids() -> None:
    modules = [{"id": 4}, {"id": 7}]
    chosen = select_visible(
        ["7"],
        modules,
        "TEST_VISIBLE",
        lambda entry, module: entry == str(module["id"]),
        numbers_are_indices=False,
        known="module ids 4, 7",
    )
    assert chosen == [{"id": 7}]
    with pytest.raises(SensorUnavailable, match=r"module ids 4, 7"):
        select_visible(
            ["1"], modules, "TEST_VISIBLE", numbers_are_indices=False, known="module ids 4, 7"
        )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("GPU-C3FF74A1", True),
        ("c3ff74a1-0000", True),
        ("c3ff74a10000", True),
        ("c3ff74", False),  # too short to name a device
        ("d3ff74a1", False),
    ],
)
def test_uuid_matches_ignores_case_hyphens_and_the_gpu_prefix(entry: str, expected: bool) -> None:
    assert uuid_matches(entry, UUIDS[2]) is expected


def test_wanted_indices_refuse_with_the_variables_in_effect() -> None:
    with pytest.raises(SensorUnavailable, match=r"no device is visible to this process \(X=''\)"):
        wanted_indices(None, 0, "X=''")
    with pytest.raises(SensorUnavailable, match=r"device index 2 .* sees 2 device\(s\)"):
        wanted_indices((0, 2), 2, "X unset")
    assert wanted_indices((1, 1, 0), 2, "X unset") == [1, 0]
    assert wanted_indices(None, 3, "X unset") == [0, 1, 2]


def test_wanted_indices_follow_the_torchrun_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert wanted_indices(None, 4, "X unset") == [2]
    assert wanted_indices((0,), 4, "X unset") == [0]  # --tpw-devices wins


# -- counter arithmetic ---------------------------------------------------------------------


def test_counter_delta_forward_wrap_and_reset() -> None:
    assert counter_delta(100, 250, U64, 1e9).counts == 150
    wrapped = counter_delta(U64 - 10, 5, U64, 1e9)
    assert (wrapped.counts, wrapped.wrapped) == (15, True)
    reset = counter_delta(10**9, 10, U64, 1e6)  # a wrap would be ~2**64 counts: impossible
    assert reset.counts is None and reset.reason is not None and "backwards" in reset.reason
    never_wraps = counter_delta(20, 10, None, 1e9)
    assert never_wraps.counts is None


# -- the start-up check -------------------------------------------------------------------------


def test_probe_measures_each_counters_update_period_on_a_fake_clock() -> None:
    clock = FakeClock(0.0)
    fast, slow = Board(300.0, update_period_s=0.01), Board(100.0, update_period_s=0.05)
    probes = probe_counters(
        {
            "fast": lambda: (fast.counts(clock(), 1e-6), 1e-6),
            "slow": lambda: (slow.counts(clock(), 1e-6), 1e-6),
        },
        clock,
        clock.sleep,
        duration_s=0.5,
        step_s=0.001,
    )
    assert probes["fast"].period_s == pytest.approx(0.01, abs=1e-6)
    assert probes["slow"].period_s == pytest.approx(0.05, abs=1e-6)
    assert probes["fast"].seconds == pytest.approx(0.5, abs=0.002)
    assert probes["fast"].joules == pytest.approx(300.0 * 0.5, rel=0.03)
    assert clock() == pytest.approx(0.5, abs=0.002)  # the wait is bounded


def test_judge_probe_keeps_only_a_counter_that_agrees_with_power() -> None:
    probe = Probe(0, 150_000_000, 0.5, power_w=300.0, joules_per_count=1e-6)  # 150 J
    assert judge_probe(probe, 0.1, 10.0).use_counter
    assert judge_probe(probe, 0.1, 10.0).ratio == pytest.approx(1.0)
    far = Probe(0, 150_000_000, 0.5, power_w=10.0, joules_per_count=1e-6)  # 30x
    verdict = judge_probe(far, 0.1, 10.0)
    assert not verdict.use_counter and "outside 0.1..10x" in verdict.reason
    unchecked = Probe(0, 1, 0.5, power_w=None, joules_per_count=1e-6)
    assert judge_probe(unchecked, 0.1, 10.0).use_counter
    still = Probe(5, 5, 0.5, power_w=300.0)
    assert not judge_probe(still, 0.1, 10.0).use_counter


# -- the sensor base, through a minimal vendor ---------------------------------------------------


class _Vendor(CounterSensor):
    name = "vendor"
    vendor = "Vendor"
    counter_method = "vendor counter"

    def __init__(self, boards: list[Board], clock: FakeClock) -> None:
        super().__init__(SensorOptions())
        self.boards, self.clock, self.sleep = boards, clock, clock.sleep
        self.wait = lambda event, seconds: event.wait(10.0)
        self.stopped = 0

    def _start(self) -> list[CounterDevice]:
        return [self._device(i, board) for i, board in enumerate(self.boards)]

    def _device(self, index: int, board: Board) -> CounterDevice:
        def counter() -> tuple[int, float]:
            return board.counts(self.clock(), 1e-3), 1e-3

        def power() -> float | None:
            return board.power_at(self.clock())

        return CounterDevice(
            index=index,
            name="Vendor X1",
            uuid=f"uuid-{index}",
            where=f"vendor device {index}",
            read_counter=counter,
            read_power_w=power,
        )

    def _stop(self) -> None:
        self.stopped += 1

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (OSError,)


def _window(sensor: CounterSensor, clock: FakeClock, seconds: float) -> Any:
    token = sensor.begin()
    clock.advance(seconds)
    return sensor.end(token)


def test_windows_do_not_nest_and_tokens_are_checked() -> None:
    clock = FakeClock(0.0)
    sensor = _Vendor([Board(100.0)], clock)
    sensor.open()
    token = sensor.begin()
    with pytest.raises(SensorError, match="still open"):
        sensor.begin()
    with pytest.raises(SensorError, match="token"):
        sensor.end(object())
    sensor.end(token)
    sensor.close()
    sensor.close()
    assert sensor.stopped == 1


def test_mixed_counter_and_power_devices_share_one_window() -> None:
    clock = FakeClock(0.0)
    sensor = _Vendor([Board(100.0), Board(200.0, stuck=True)], clock)
    sensor.open()
    assert "vendor counter" in sensor.method and "integrated power" in sensor.method
    energy = _window(sensor, clock, 2.0)
    assert energy.joules["gpu:0"] == pytest.approx(200.0, abs=0.2)
    assert energy.joules["gpu:1"] == pytest.approx(400.0, rel=1e-12)
    assert sensor.health().counter_advances is False
    assert sensor.edge_error_s() == pytest.approx(0.1)  # the power reading's refresh
    sensor.close()


def test_close_abandons_an_open_power_window() -> None:
    clock = FakeClock(0.0)
    sensor = _Vendor([Board(200.0, stuck=True)], clock)
    sensor.open()
    sensor.begin()
    before = {t.name for t in threading.enumerate()}
    assert "tpw-vendor" in before
    sensor.close()
    assert "tpw-vendor" not in {t.name for t in threading.enumerate()}


def test_a_wrap_the_power_cannot_explain_is_a_reset() -> None:
    clock = FakeClock(0.0)
    # 10**9 J below the wrap when the driver reloads: lower at the end, yet no wrap
    board = Board(100.0, start_counts=U64 - 10**12, reset_at_s=2.0)
    sensor = _Vendor([board], clock)
    sensor.open()
    clock.advance(1.0)
    energy = _window(sensor, clock, 2.0)
    assert energy.invalid is not None and "gpu:0 (Vendor X1, vendor device 0)" in energy.invalid
    assert sensor.health().dropped_reads == 1
    sensor.close()


def test_building_the_vendor_sensors_imports_no_vendor_package() -> None:
    code = (
        "import sys\n"
        "from pytest_tpw.sensors.base import SensorOptions\n"
        "from pytest_tpw.sensors.amdsmi import AmdSmiSensor\n"
        "from pytest_tpw.sensors.gaudi import GaudiSensor\n"
        "from pytest_tpw.sensors.intel_gpu import IntelGpuSensor\n"
        "sensors = [s(SensorOptions()) for s in (AmdSmiSensor, GaudiSensor, IntelGpuSensor)]\n"
        "print(sorted({'amdsmi', 'pyhlml', 'pyzes'} & set(sys.modules)))\n"
        "print([s.name for s in sensors], [bool(s.method) for s in sensors])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == [
        "[]",
        "['amdsmi', 'gaudi', 'intel-gpu'] [True, True, True]",
    ]
