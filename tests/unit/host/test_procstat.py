"""``procstat``: process trees, CPU seconds and host contention, read from a fake ``/proc``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from pytest_tpw.host import procstat
from pytest_tpw.host.procstat import CpuUsage, ProcessWatch
from tests.fakes.fake_proc import TICKS, FakeProc


@pytest.fixture(params=[False, True], ids=["scan", "children-files"])
def proc(request: pytest.FixtureRequest, tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc", children_files=request.param)


def make_tree(proc: FakeProc) -> None:
    """10 -> (11, 12 -> 13); 20 is unrelated; 1 is init."""
    proc.process(1, 0)
    proc.process(10, 1)
    proc.process(11, 10)
    proc.process(12, 10)
    proc.process(13, 12)
    proc.process(20, 1)


# -- parsing -------------------------------------------------------------------------------------


def test_parse_pid_stat_counts_fields_after_the_last_parenthesis() -> None:
    # a command name with spaces and parentheses must not shift the fields
    rest = " ".join(["S", "7", *["0"] * 9, "30", "20", "5", "5", *["0"] * 4, "4242", "0"])
    stat = procstat.parse_pid_stat(f"123 (a) b (c)) {rest}", ticks=100)
    assert stat.pid == 123 and stat.ppid == 7
    assert stat.cpu_s == pytest.approx(0.5)  # (30 + 20) ticks / 100
    assert stat.children_cpu_s == pytest.approx(0.1)  # (5 + 5) / 100
    assert stat.start_ticks == 4242


@pytest.mark.parametrize("text", ["", "garbage", "12 (x) S 1 2"])
def test_parse_pid_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        procstat.parse_pid_stat(text, ticks=100)


def test_host_busy_excludes_guest_time_already_counted_in_user(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.host(busy=300, idle=700, cpus=4, guest=100)
    host = procstat.read_host_cpu(fake.root)
    assert host is not None
    assert host.busy_s == pytest.approx(300 / TICKS)  # not 400: guest is inside user
    assert host.idle_s == pytest.approx(700 / TICKS)
    assert host.cpus == 4
    assert procstat.cpu_count(fake.root) == 4


def test_readers_return_nothing_without_proc(tmp_path: Path) -> None:
    missing = tmp_path / "no-proc"
    assert procstat.read_host_cpu(missing) is None
    assert procstat.read_pid_stat(1, missing) is None
    assert procstat.process_tree_pids(1, missing) == []
    assert procstat.cpu_count(missing) == (os.cpu_count() or 1)
    assert procstat.clock_ticks() > 0


# -- trees ---------------------------------------------------------------------------------------


def test_tree_is_the_root_and_all_its_descendants(proc: FakeProc) -> None:
    make_tree(proc)
    assert procstat.process_tree_pids(10, proc.root) == [10, 11, 12, 13]
    assert procstat.process_tree_pids(12, proc.root) == [12, 13]
    assert procstat.process_tree_pids(99, proc.root) == []  # gone: empty, no error


def test_tree_cpu_seconds_per_pid(proc: FakeProc) -> None:
    make_tree(proc)
    proc.set_cpu(11, 3 * TICKS)
    proc.set_cpu(13, TICKS // 2)
    ticks = procstat.clock_ticks()
    seconds = {pid: s.cpu_s for pid, s in procstat.tree_stats(10, proc.root, ticks).items()}
    assert seconds == {10: 0.0, 11: 3.0, 12: 0.0, 13: pytest.approx(0.5, abs=1 / TICKS)}
    own = procstat.read_pid_stat(11, proc.root)
    assert own is not None and own.cpu_s == 3.0


def test_real_proc_tree_contains_a_child_process() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pids = procstat.process_tree_pids(os.getpid())
        assert pids[0] == os.getpid()
        assert child.pid in pids
        assert procstat.read_pid_stat(os.getpid()) is not None
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.pid not in procstat.process_tree_pids(os.getpid())


# -- usage over a window ---------------------------------------------------------------------


def window(proc: FakeProc, roots: list[int], change: object) -> CpuUsage | None:
    watch = ProcessWatch(roots, proc.root)
    start = watch.snapshot()
    assert callable(change)
    change()
    return watch.usage(start, watch.snapshot())


def test_usage_splits_host_time_into_own_and_other(proc: FakeProc) -> None:
    make_tree(proc)
    proc.host(busy=1000, idle=1000, cpus=2)

    def one_second() -> None:
        # 1 s on 2 CPUs = 2 * TICKS total ticks; 1.5 cores busy, the tree used 0.5 of them
        proc.host(busy=1000 + int(1.5 * TICKS), idle=1000 + TICKS // 2, cpus=2)
        proc.set_cpu(11, TICKS // 4)
        proc.set_cpu(13, TICKS // 4)

    usage = window(proc, [10], one_second)
    assert usage is not None
    assert usage.wall_s == pytest.approx(1.0)
    assert usage.own_cpu_s == pytest.approx(0.5, abs=2 / TICKS)
    assert usage.host_busy_cores == pytest.approx(1.5)
    assert usage.other_busy_cores == pytest.approx(1.0, abs=2 / TICKS)
    state = usage.state()
    assert state["host_cpus"] == 2
    assert state["other_busy_cores"] == pytest.approx(1.0, abs=0.03)
    text = procstat.contention_warning(usage)
    assert text is not None and "1.00 of 2 CPU cores" in text and "67%" in text


def usage_of(host: float, own: float, cpus: int = 2) -> CpuUsage:
    return CpuUsage(wall_s=1.0, own_cpu_s=own, host_busy_s=host, cpus=cpus)


@pytest.mark.parametrize(
    ("host", "own", "cpus", "warned"),
    [
        (1.0, 0.6, 2, False),  # others: 0.4 core, below 0.5
        (1.6, 1.0, 2, True),  # others: 0.6 core, 37 % of busy time
        (31.0, 30.0, 64, False),  # others: 1 core but 3 % of a busy 64-core host
        (6.0, 4.0, 64, True),  # others: 2 cores, 33 %
        (0.8, 1.0, 2, False),  # own > host (tick rounding): others clamp to 0
    ],
)
def test_contention_thresholds(host: float, own: float, cpus: int, warned: bool) -> None:
    usage = usage_of(host, own, cpus)
    assert usage.other_busy_cores >= 0
    assert (procstat.contention_warning(usage) is not None) is warned


def test_mark_contention_fills_state_and_warnings() -> None:
    state: dict[str, object] = {"seconds": 1.0}
    warnings: list[str] = []
    procstat.mark_contention(usage_of(2.0, 0.5), state, warnings)
    assert state["seconds"] == 1.0 and state["own_busy_cores"] == 0.5
    assert state["other_busy_cores"] == 1.5 and len(warnings) == 1
    procstat.mark_contention(None, state, warnings)  # nothing known: nothing added
    assert len(warnings) == 1


def test_worker_forked_during_the_window_counts_whole(proc: FakeProc) -> None:
    make_tree(proc)
    proc.host(busy=0, idle=0)

    def fork() -> None:
        proc.host(busy=2 * TICKS, idle=0)
        proc.process(14, 10, cpu=TICKS, start=5000)

    usage = window(proc, [10], fork)
    assert usage is not None
    assert usage.own_cpu_s == pytest.approx(1.0)
    assert usage.appeared == [14]


def test_child_reaped_during_the_window_is_not_counted_twice(proc: FakeProc) -> None:
    make_tree(proc)
    proc.set_cpu(11, 3 * TICKS)  # 3 s before the window
    proc.host(busy=0, idle=0)

    def child_exits() -> None:
        # 11 works 1 more second, exits; its parent 10 waits for it: cutime grows by 4 s
        proc.remove(11)
        proc.set_cpu(10, 0, children_cpu=4 * TICKS)
        proc.host(busy=2 * TICKS, idle=0)

    usage = window(proc, [10], child_exits)
    assert usage is not None
    assert usage.own_cpu_s == pytest.approx(1.0)  # 4 s reaped - 3 s from before the window
    assert usage.vanished == [11]
    assert usage.state()["vanished_pids"] == [11]


def test_child_gone_without_being_reaped_never_makes_negative_time(proc: FakeProc) -> None:
    make_tree(proc)
    proc.set_cpu(11, 3 * TICKS)
    proc.host(busy=0, idle=0)

    def child_vanishes() -> None:
        proc.remove(11)  # reparented and reaped elsewhere: the parent's cutime does not grow
        proc.set_cpu(12, TICKS // 2)
        proc.host(busy=2 * TICKS, idle=0)

    usage = window(proc, [10], child_vanishes)
    assert usage is not None
    assert usage.own_cpu_s == pytest.approx(0.5, abs=1 / TICKS)


def test_reused_pid_is_a_new_process(proc: FakeProc) -> None:
    make_tree(proc)
    proc.set_cpu(11, 5 * TICKS)
    proc.host(busy=0, idle=0)

    def reuse() -> None:
        proc.remove(11)
        proc.process(11, 10, cpu=TICKS // 10, start=9999)  # same pid, another process
        proc.host(busy=TICKS, idle=TICKS)

    usage = window(proc, [10], reuse)
    assert usage is not None
    # not 0.1 - 5 s (clamped to 0): the new process's own 0.1 s
    assert usage.own_cpu_s == pytest.approx(0.1, abs=1 / TICKS)
    assert usage.vanished == [11] and usage.appeared == [11]


def test_no_usage_without_host_time_or_within_one_tick(proc: FakeProc) -> None:
    make_tree(proc)
    assert window(proc, [10], lambda: None) is None  # no /proc/stat at all
    proc.host(busy=10, idle=10)
    assert window(proc, [10], lambda: None) is None  # no tick passed


# -- torch threads -------------------------------------------------------------------------------


def fake_torch(threads: int) -> types.ModuleType:
    module = types.ModuleType("torch")
    module.get_num_threads = lambda: threads  # type: ignore[attr-defined]
    return module


def test_torch_threads_warning_when_threads_exceed_free_cores() -> None:
    text = procstat.torch_threads_warning(1.0, cpus=4, torch_module=fake_torch(8))
    assert text is not None
    assert "8 threads" in text and "3 of 4" in text
    assert "torch.set_num_threads(3)" in text and "OMP_NUM_THREADS=3" in text
    assert procstat.torch_threads_warning(1.0, cpus=4, torch_module=fake_torch(3)) is None
    # never suggests zero threads
    busy = procstat.torch_threads_warning(7.5, cpus=4, torch_module=fake_torch(2))
    assert busy is not None and "set_num_threads(1)" in busy
    # others idling at a few hundredths of a core leave every core free (it once said
    # "only about 1 of 2 CPU cores are free (other processes keep 0.0 busy)")
    assert procstat.torch_threads_warning(0.04, cpus=2, torch_module=fake_torch(2)) is None
    half = procstat.torch_threads_warning(0.6, cpus=2, torch_module=fake_torch(2))
    assert half is not None and "1 of 2" in half


def test_torch_threads_warning_only_looks_at_an_imported_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert procstat.torch_threads_warning(1.0, cpus=1) is None
    assert "torch" not in sys.modules  # not imported by the check
    monkeypatch.setitem(sys.modules, "torch", fake_torch(64))
    assert procstat.torch_threads_warning(0.0, cpus=2) is not None


def test_real_host_usage_is_consistent() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc on this system")
    watch = ProcessWatch([os.getpid()])
    start = watch.snapshot()
    deadline = time.monotonic() + 10.0
    usage = None
    # burn CPU until the host's accounting has seen at least 0.3 s (ticks are coarse)
    while time.monotonic() < deadline and (usage is None or usage.wall_s < 0.3):
        sum(i * i for i in range(20000))
        usage = watch.usage(start, watch.snapshot())
    assert usage is not None
    assert usage.own_cpu_s > 0
    # one Python thread cannot keep more than one core busy (loose: ticks are coarse)
    assert usage.own_busy_cores <= 1.5
    assert 0 <= usage.other_busy_cores <= usage.host_busy_cores <= usage.cpus * 1.2


def test_too_short_window_records_nothing(proc: FakeProc) -> None:
    make_tree(proc)
    proc.host(busy=0, idle=0, cpus=2)
    # one tick on each CPU (10 ms): sqrt(2 CPUs + 2 x 4 processes) ticks of error is > 1 core
    assert window(proc, [10], lambda: proc.host(busy=2, idle=0, cpus=2)) is None
    # a hundred ticks on each: the same error is a few hundredths of a core
    usage = window(proc, [10], lambda: proc.host(busy=200, idle=0, cpus=2))
    assert usage is not None
    assert 0 < usage.resolution_cores < 0.1
    assert usage.state()["cpu_resolution_cores"] == pytest.approx(usage.resolution_cores, abs=1e-4)


def test_warning_needs_more_than_the_resolution() -> None:
    coarse = CpuUsage(wall_s=1.0, own_cpu_s=1.0, host_busy_s=1.7, cpus=2, resolution_cores=0.3)
    assert coarse.other_busy_cores == pytest.approx(0.7)
    assert procstat.contention_warning(coarse) is None  # 0.7 - 0.3 < 0.5
    fine = dataclasses.replace(coarse, resolution_cores=0.1)
    assert procstat.contention_warning(fine) is not None  # 0.7 - 0.1 >= 0.5
