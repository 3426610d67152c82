"""The ``rapl`` sensor against fake powercap trees: what is summed, wraps, and failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.sensors import rapl
from pytest_tpw.sensors.base import SensorOptions, WindowEnergy
from pytest_tpw.sensors.rapl import RaplSensor
from tests.fakes.powercap import FakePowercap


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tree(tmp_path: Path) -> FakePowercap:
    return FakePowercap(tmp_path / "powercap")


def opened(tree: FakePowercap) -> tuple[RaplSensor, FakeClock]:
    sensor = RaplSensor(SensorOptions(powercap_root=str(tree.root)))
    sensor.proc_root = tree.root / "no-proc"  # no host CPU figures: no contention warnings
    clock = FakeClock()
    sensor.clock = clock
    sensor.open()
    return sensor, clock


def window(tree: FakePowercap, ends: dict[str, int], seconds: float = 1.0) -> WindowEnergy:
    """Open a sensor, begin, set the counters to ``ends``, advance the clock, end."""
    sensor, clock = opened(tree)
    token = sensor.begin()
    for zone_id, value in ends.items():
        tree.set(zone_id, value)
    clock.now += seconds
    return sensor.end(token)


def test_single_package(tree: FakePowercap) -> None:
    tree.zone("0", "package-0", energy_uj=1_000_000)
    result = window(tree, {"0": 31_000_000})
    assert result.joules == {"cpu:package-0": 30.0}
    assert result.invalid is None
    assert result.warnings == []


def test_two_packages_are_summed(tree: FakePowercap) -> None:
    tree.zone("0", "package-0", energy_uj=0)
    tree.zone("1", "package-1", energy_uj=500)
    result = window(tree, {"0": 20_000_000, "1": 10_000_500})
    assert result.joules == {"cpu:package-0": 20.0, "cpu:package-1": 10.0}
    assert result.total == 30.0


def test_core_and_uncore_are_not_double_counted(tree: FakePowercap) -> None:
    tree.zone("0", "package-0")
    tree.zone("0:0", "core")
    tree.zone("0:1", "uncore")
    sensor, _ = opened(tree)
    assert sensor.domains() == ("cpu:package-0",)
    result = window(tree, {"0": 40_000_000, "0:0": 30_000_000, "0:1": 5_000_000})
    assert result.total == 40.0


def test_psys_ignored_when_packages_exist(tree: FakePowercap) -> None:
    tree.zone("0", "package-0")
    tree.zone("1", "psys")
    result = window(tree, {"0": 25_000_000, "1": 60_000_000})
    assert result.joules == {"cpu:package-0": 25.0}


def test_psys_used_alone_without_packages(tree: FakePowercap) -> None:
    tree.zone("0", "psys", energy_uj=7)
    result = window(tree, {"0": 12_000_007})
    assert result.joules == {"cpu:psys": 12.0}


def test_dram_counted_as_its_own_domain(tree: FakePowercap) -> None:
    tree.zone("0", "package-0")
    tree.zone("0:0", "core")
    tree.zone("0:1", "dram")
    tree.zone("1", "package-1")
    tree.zone("1:0", "dram")
    result = window(tree, {"0": 50_000_000, "0:0": 1, "0:1": 8_000_000, "1": 40_000_000, "1:0": 6})
    assert result.joules == {
        "cpu:package-0": 50.0,
        "cpu:dram-0": 8.0,
        "cpu:package-1": 40.0,
        "cpu:dram-1": 6e-6,
    }


def test_wrap_is_corrected(tree: FakePowercap) -> None:
    # start 900 uJ, range 1000 uJ... scaled: range 100 J, start 95 J, end 3 J -> 3 + 100 - 95 = 8 J
    tree.zone("0", "package-0", energy_uj=95_000_000, max_range_uj=100_000_000)
    result = window(tree, {"0": 3_000_000})
    assert result.joules == {"cpu:package-0": 8.0}
    assert result.invalid is None


def test_reset_is_not_taken_for_a_wrap(tree: FakePowercap) -> None:
    # A reset to ~0 mid-window reads as a "wrap" of 262 kJ - 5 J + 1 J in one second.
    tree.zone("0", "package-0", energy_uj=5_000_000)
    result = window(tree, {"0": 1_000_000})
    assert result.invalid is not None
    assert "reset" in result.invalid
    assert str(tree.counter("0")) in result.invalid


def test_window_longer_than_a_wrap_warns(tree: FakePowercap) -> None:
    # 100 J range at the 1000 W ceiling wraps in 0.1 s; a 1 s window may have lost wraps.
    tree.zone("0", "package-0", max_range_uj=100_000_000)
    result = window(tree, {"0": 50_000_000}, seconds=1.0)
    assert len(result.warnings) == 1
    assert "wrap" in result.warnings[0]
    assert result.state["seconds"] == 1.0


def test_unreadable_counter_names_the_file_and_the_fix(
    tree: FakePowercap, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root here, where chmod 000 does not stop reads, so the reader refuses.
    tree.zone("0", "package-0")
    real = rapl.read_sysfs

    def refuse_counters(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "read_sysfs", refuse_counters)
    with pytest.raises(SensorUnavailable) as info:
        opened(tree)
    message = str(info.value)
    assert str(tree.counter("0")) in message
    assert "CVE-2020-8694" in message
    assert f"sudo chmod o+r {tree.root}/intel-rapl:*/energy_uj" in message
    assert "/etc/tmpfiles.d/" in message


def test_missing_root_is_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "nope"
    sensor = RaplSensor(SensorOptions(powercap_root=str(root)))
    with pytest.raises(SensorUnavailable, match="no RAPL counters") as info:
        sensor.open()
    assert str(root) in str(info.value)


def test_root_without_zones_is_unavailable(tree: FakePowercap) -> None:
    with pytest.raises(SensorUnavailable, match="no intel-rapl:N zones"):
        opened(tree)


def test_garbage_counter_mid_window_names_the_file(tree: FakePowercap) -> None:
    tree.zone("0", "package-0")
    sensor, _ = opened(tree)
    token = sensor.begin()
    tree.write("0", "not a number\n")
    with pytest.raises(SensorError) as info:
        sensor.end(token)
    assert str(tree.counter("0")) in str(info.value)


def test_mmio_duplicate_is_skipped(tree: FakePowercap) -> None:
    tree.zone("0", "package-0")
    mmio = tree.root / "intel-rapl-mmio:0"
    mmio.mkdir()
    (mmio / "name").write_text("package-0\n", encoding="ascii")
    sensor, _ = opened(tree)
    assert sensor.domains() == ("cpu:package-0",)
    skipped = sensor.describe()["skipped"]
    assert isinstance(skipped, list)
    assert str(mmio) in [entry["path"] for entry in skipped]


def test_describe_is_json_and_lists_measured_and_skipped(tree: FakePowercap) -> None:
    tree.zone("0", "package-0")
    tree.zone("0:0", "core")
    tree.zone("0:1", "dram", max_range_uj=65_712_999_613)
    tree.zone("1", "psys")
    sensor, _ = opened(tree)
    described = json.loads(json.dumps(sensor.describe()))
    assert [z["domain"] for z in described["zones"]] == ["cpu:package-0", "cpu:dram-0"]
    assert described["zones"][1]["max_energy_range_uj"] == 65_712_999_613
    assert sorted(s["name"] for s in described["skipped"]) == ["core", "psys"]
    assert sensor.hardware() == (f"{described['cpu']} {described['usable_cpus']}c",)
    assert sensor.legacy_hardware() == (described["cpu"],)
    assert sensor.provenance == "measured"


def test_busy_neighbours_are_marked_in_a_rapl_window(tree: FakePowercap, tmp_path: Path) -> None:
    import os

    from tests.fakes.fake_proc import TICKS, FakeProc

    proc = FakeProc(tmp_path / "proc")
    proc.process(1, 0)
    proc.process(os.getpid(), 1)
    proc.process(700, 1)  # a followed server
    proc.host(busy=0, idle=0, cpus=4)
    tree.zone("0", "package-0")
    sensor, clock = opened(tree)
    sensor.proc_root = proc.root
    sensor.follow_process_tree(700)
    token = sensor.begin()
    tree.set("0", 50_000_000)
    clock.now += 1.0
    proc.set_cpu(700, TICKS)  # the server: 1 core, ours
    proc.set_cpu(1, 2 * TICKS)  # someone else: 2 cores
    proc.host(busy=3 * TICKS, idle=TICKS, cpus=4)
    result = sensor.end(token)
    assert result.joules == {"cpu:package-0": 50.0}
    assert result.state["own_busy_cores"] == pytest.approx(1.0)
    assert result.state["other_busy_cores"] == pytest.approx(2.0)
    assert len(result.warnings) == 1 and "2.00 of 4 CPU cores" in result.warnings[0]
    sensor.follow_self()  # the server's core is now someone else's
    token = sensor.begin()
    proc.set_cpu(700, 2 * TICKS)
    proc.host(busy=4 * TICKS, idle=4 * TICKS, cpus=4)
    assert sensor.end(token).state["other_busy_cores"] == pytest.approx(1.0)


# -- health ---------------------------------------------------------------------------------


def _run(sensor: RaplSensor, clock: FakeClock, tree: FakePowercap, ends: dict[str, int]) -> None:
    token = sensor.begin()
    for zone_id, value in ends.items():
        tree.set(zone_id, value)
    clock.now += 1.0
    sensor.end(token)


def test_health_counts_wraps_resets_and_still_counters(tree: FakePowercap) -> None:
    tree.zone("0", "package-0", energy_uj=1_950_000_000, max_range_uj=2_000_000_000)
    tree.zone("0:0", "dram", energy_uj=1_000_000)
    sensor, clock = opened(tree)
    assert sensor.health().counter_advances is None  # no window yet: not checked
    _run(sensor, clock, tree, {"0": 1_960_000_000})  # the dram counter does not move
    health = sensor.health()
    assert health.counter_advances is False
    assert health.notes == ("counter never moved in 1 window(s): cpu:dram-0",)
    _run(sensor, clock, tree, {"0": 1_999_000_000, "0:0": 2_000_000})
    _run(sensor, clock, tree, {"0": 1_000_000})  # wrapped: 1 J after 1999 J of 2000 J
    _run(sensor, clock, tree, {"0": 2_000_000, "0:0": 1_000})  # dram reset: 262 kJ in 1 s
    health = sensor.health()
    assert health.counter_advances is True
    assert health.update_period_s is None  # about 1 ms, not observed
    assert health.dropped_reads == 1
    assert health.notes == ("1 counter wrap(s) undone (max_energy_range_uj)",)
