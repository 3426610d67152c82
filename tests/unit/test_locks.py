"""Device locks: flock files per device, held while a window is open, released by death."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pytest_tpw import locks
from pytest_tpw.locks import LOCK_DIR_ENV, DeviceLocks, default_dir
from pytest_tpw.meter import Meter, MeterConfig, fixed_rounds
from pytest_tpw.sensors import Sensor, SensorOptions, WindowEnergy

pytestmark = pytest.mark.skipif(locks.fcntl is None, reason="flock needs fcntl (POSIX)")

# A second process that takes one device's lock, says so on stdout, holds it for HOLD
# seconds (or until killed) and exits.
HOLDER = """
import sys, time
from pathlib import Path
from pytest_tpw.locks import DeviceLocks

locks = DeviceLocks([sys.argv[2]], Path(sys.argv[1]))
waited, devices = locks.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
locks.release()
"""

HOLD = 0.3


def start_holder(directory: Path, device: str, hold: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), device, str(hold)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the holder has the lock
    assert line.strip() == "locked", line
    return proc


def acquire_in_thread(held: DeviceLocks, timeout: float = 60.0) -> tuple[float, list[str]]:
    """``held.acquire()``, but a lock that never comes back fails the test, not the suite."""
    out: list[tuple[float, list[str]]] = []
    thread = threading.Thread(target=lambda: out.append(held.acquire()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert out, f"acquire() still blocked after {timeout} s"
    return out[0]


def lock_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_acquire_and_release_without_contention(tmp_path: Path) -> None:
    held = DeviceLocks(["GPU-0"], tmp_path / "locks")
    assert held.available
    assert held.acquire() == (0.0, [])
    assert lock_files(tmp_path / "locks") == ["GPU-0.lock"]
    held.release()
    # released: another holder gets it at once, and so do we again
    other = DeviceLocks(["GPU-0"], tmp_path / "locks")
    assert other.acquire() == (0.0, [])
    other.release()
    assert held.acquire() == (0.0, [])
    held.release()


def test_release_with_nothing_held_is_safe(tmp_path: Path) -> None:
    held = DeviceLocks(["GPU-0"], tmp_path)
    held.release()
    held.release()
    held.acquire()
    held.release()
    held.release()  # twice after one acquire


def test_no_ids_means_nothing_to_lock(tmp_path: Path) -> None:
    held = DeviceLocks([], tmp_path / "never")
    assert not held.available
    assert held.acquire() == (0.0, [])
    held.release()
    assert not (tmp_path / "never").exists()


def test_default_dir_follows_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "here"))
    assert default_dir() == tmp_path / "here"
    assert DeviceLocks(["x"]).directory == tmp_path / "here"
    monkeypatch.delenv(LOCK_DIR_ENV)
    assert default_dir().name == "pytest-tpw-locks"


def test_a_lock_in_one_process_makes_a_second_in_the_same_process_wait(tmp_path: Path) -> None:
    first = DeviceLocks(["dev"], tmp_path)
    second = DeviceLocks(["dev"], tmp_path)
    first.acquire()
    got: list[tuple[float, list[str]]] = []
    thread = threading.Thread(target=lambda: got.append(second.acquire()), daemon=True)
    thread.start()
    thread.join(0.2)
    assert not got  # still waiting while the first holds the lock
    first.release()
    thread.join(60)
    assert got and got[0][1] == ["dev"] and got[0][0] > 0
    second.release()


def test_another_process_holding_the_lock_makes_acquire_wait(tmp_path: Path) -> None:
    proc = start_holder(tmp_path, "GPU-1234", HOLD)
    try:
        held = DeviceLocks(["GPU-1234"], tmp_path)
        waited, devices = acquire_in_thread(held)
        assert devices == ["GPU-1234"]
        assert waited > 0
        held.release()
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_only_the_devices_waited_for_are_reported(tmp_path: Path) -> None:
    proc = start_holder(tmp_path, "GPU-b", HOLD)
    try:
        held = DeviceLocks(["GPU-c", "GPU-b", "GPU-a"], tmp_path)
        waited, devices = acquire_in_thread(held)
        assert devices == ["GPU-b"]
        assert waited > 0
        held.release()
    finally:
        proc.communicate(timeout=60)


def test_a_killed_holder_does_not_block_the_next_acquire(tmp_path: Path) -> None:
    proc = start_holder(tmp_path, "GPU-dead", 600.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # the lock file is still there, but the kernel dropped the flock with the process
    assert (tmp_path / "GPU-dead.lock").exists()
    held = DeviceLocks(["GPU-dead"], tmp_path)
    assert acquire_in_thread(held) == (0.0, [])
    held.release()


def test_several_ids_are_locked_once_each_in_sorted_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = DeviceLocks(["GPU-c", "GPU-a", "GPU-b", "GPU-a"], tmp_path)
    assert held.device_ids == ["GPU-a", "GPU-b", "GPU-c"]
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: object, *args: object, **kwargs: object) -> int:
        opened.append(Path(str(path)).name)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(locks.os, "open", recording_open)
    assert held.acquire() == (0.0, [])
    monkeypatch.undo()
    assert opened == ["GPU-a.lock", "GPU-b.lock", "GPU-c.lock"]
    held.release()


def test_the_same_order_whatever_order_the_sensor_gives() -> None:
    a = DeviceLocks(["z", "m", "a"])
    b = DeviceLocks(["a", "z", "m"])
    assert a.device_ids == b.device_ids == ["a", "m", "z"]


@pytest.mark.parametrize(
    "device",
    ["GPU-1b2c/../../etc/passwd", "../up", "a b:c*d?", "MIG-GPU-1/2/3", "gpu\\0", "ü-device",
     "..", "with\nnewline"],
)
def test_odd_ids_map_to_safe_file_names_inside_the_folder(tmp_path: Path, device: str) -> None:
    directory = tmp_path / "locks"
    held = DeviceLocks([device], directory)
    assert held.acquire() == (0.0, [])
    held.release()
    names = lock_files(directory)
    assert len(names) == 1
    assert re.fullmatch(r"[A-Za-z0-9_.-]+\.lock", names[0]), names
    assert names[0] not in {".lock", "..lock"}
    # nothing was created outside the lock folder
    assert lock_files(tmp_path) == ["locks"]


def test_safe_names_keep_ordinary_ids_readable() -> None:
    assert locks._file_name("GPU-1b2c3d4e-0000-1111-2222-333344445555") == \
        "GPU-1b2c3d4e-0000-1111-2222-333344445555.lock"
    assert locks._file_name("sim-device") == "sim-device.lock"


def test_ids_sharing_a_file_name_do_not_deadlock(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Nobody else uses this folder: any lock that would block is held by this very process,
    # so it would never be released. Fail instead of blocking.
    real_flock = locks.fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if operation == locks.fcntl.LOCK_EX:
            try:
                real_flock(fd, locks.fcntl.LOCK_EX | locks.fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # the descriptor acquire() was about to block on
                pytest.fail("acquire() would wait forever for a lock its own process holds")
            return
        real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    held = DeviceLocks(["a/b", "a b"], tmp_path)
    try:
        held.acquire()
    finally:
        held.release()


# -- the meter holds the locks only while a window is open ----------------------------------


def held_elsewhere(directory: Path, device: str) -> bool:
    """Whether some open file description holds the device's lock now (never blocks)."""
    fd = os.open(directory / locks._file_name(device), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locks.fcntl.flock(fd, locks.fcntl.LOCK_EX | locks.fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        locks.fcntl.flock(fd, locks.fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class _Steady(Sensor):
    name = "steady"
    provenance = "simulated"

    def __init__(self, directory: Path, seen: list[bool]) -> None:
        super().__init__(SensorOptions())
        self.directory, self.seen = directory, seen

    def open(self) -> None:
        pass

    def domains(self) -> Sequence[str]:
        return ("steady:0",)

    def min_window_s(self) -> float:
        return 0.0

    def begin(self) -> object:
        self.seen.append(held_elsewhere(self.directory, "dev"))
        return None

    def end(self, token: object) -> WindowEnergy:
        self.seen.append(held_elsewhere(self.directory, "dev"))
        return WindowEnergy({"steady:0": 1.0})


def make_meter(tmp_path: Path, seen: list[bool],
               sync: Callable[[tuple[int, ...] | None], None] = lambda devices: None) -> Meter:
    config = MeterConfig(enabled=True, warmup=0, min_window_s=None, max_delay_s=0.0,
                         confidence=0.9, devices=None)
    return Meter("test_x.py::test_y", config, _Steady(tmp_path, seen), fixed_rounds(2),
                 sync=sync, locks=DeviceLocks(["dev"], tmp_path))


def test_the_meter_holds_the_lock_inside_windows_only(tmp_path: Path) -> None:
    seen: list[bool] = []
    meter = make_meter(tmp_path, seen)
    for w in meter.rounds():
        assert not held_elsewhere(tmp_path, "dev")  # between windows: free
        with w:
            assert held_elsewhere(tmp_path, "dev")
            w.add_tokens(1)
    assert seen == [True, True, True, True]  # at every begin() and end()
    assert not held_elsewhere(tmp_path, "dev")
    assert len(meter.measurements[0].samples) == 2
    assert meter.measurements[0].lock_waits() == []


def test_work_raising_inside_a_window_releases_the_lock(tmp_path: Path) -> None:
    meter = make_meter(tmp_path, [])
    with pytest.raises(RuntimeError, match="work failed"):
        for w in meter.rounds():
            with w:
                raise RuntimeError("work failed")
    assert not held_elsewhere(tmp_path, "dev")


def test_a_failing_sync_before_the_window_releases_the_lock(tmp_path: Path) -> None:
    def sync(devices: tuple[int, ...] | None) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    meter = make_meter(tmp_path, [], sync=sync)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        for w in meter.rounds():
            with w:
                w.add_tokens(1)
    try:
        assert not held_elsewhere(tmp_path, "dev")
    finally:
        meter._release()  # do not leave a held descriptor behind either way
