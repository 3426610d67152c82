"""Device locks: flock files per device, held while a window is open, released by death."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from pytest_tpw.errors import TpwError
from pytest_tpw.host import locks
from pytest_tpw.host.locks import LOCK_DIR_ENV, DeviceLocks, LockError, default_dir

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fcntl") is None, reason="flock needs fcntl (POSIX)"
)

# A second process that takes one device's lock, says so on stdout, holds it for HOLD
# seconds (or until killed) and exits.
HOLDER = """
import sys, time
from pathlib import Path
from pytest_tpw.host.locks import DeviceLocks

locks = DeviceLocks([sys.argv[2]], Path(sys.argv[1]))
waited, devices = locks.acquire(sys.argv[4] if len(sys.argv) > 4 else "")
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
locks.release()
"""

HOLD = 0.3


def start_holder(
    directory: Path, device: str, hold: float, owner: str = ""
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), device, str(hold), owner],
        stdout=subprocess.PIPE,
        text=True,
    )
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


def test_default_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "here"))
    assert default_dir() == tmp_path / "here"
    assert DeviceLocks(["x"]).directory == tmp_path / "here"
    monkeypatch.delenv(LOCK_DIR_ENV)
    assert default_dir().name == "pytest-tpw-locks"
    assert default_dir().parent == Path(tempfile.gettempdir())  # one folder for all users


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = DeviceLocks(["GPU-c", "GPU-a", "GPU-b", "GPU-a"], tmp_path)
    assert held.device_ids == ["GPU-a", "GPU-b", "GPU-c"]
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: object, *args: object, **kwargs: object) -> int:
        opened.append(Path(str(path)).name)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    assert held.acquire() == (0.0, [])
    monkeypatch.undo()
    # each file tried first without O_CREAT, then created: in order, one file after another
    assert list(dict.fromkeys(opened)) == ["GPU-a.lock", "GPU-b.lock", "GPU-c.lock"]
    held.release()


def test_the_same_order_whatever_order_the_sensor_gives() -> None:
    a = DeviceLocks(["z", "m", "a"])
    b = DeviceLocks(["a", "z", "m"])
    assert a.device_ids == b.device_ids == ["a", "m", "z"]


@pytest.mark.parametrize(
    "device",
    [
        "GPU-1b2c/../../etc/passwd",
        "../up",
        "a b:c*d?",
        "MIG-GPU-1/2/3",
        "gpu\\0",
        "ü-device",
        "..",
        "with\nnewline",
    ],
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
    assert (
        locks._file_name("GPU-1b2c3d4e-0000-1111-2222-333344445555")
        == "GPU-1b2c3d4e-0000-1111-2222-333344445555.lock"
    )
    assert locks._file_name("sim-device") == "sim-device.lock"


def test_ids_sharing_a_file_name_do_not_deadlock(tmp_path: Path) -> None:
    # Nobody else uses this folder: any wait would be for a lock this very process holds,
    # so it would never end. A sleep means a wait: fail instead.
    def no_sleep(seconds: float) -> None:
        pytest.fail("acquire() would wait for a lock its own process holds")

    held = DeviceLocks(["a/b", "a b"], tmp_path, sleep=no_sleep)
    try:
        assert held.acquire() == (0.0, [])
        assert len(lock_files(tmp_path)) == 2
    finally:
        held.release()


# -- the same thread asking twice: an error at once, never a wait for itself ------------------


def test_a_nested_acquire_raises_at_once_naming_both_owners(tmp_path: Path) -> None:
    held = DeviceLocks(["GPU-0"], tmp_path, sleep=lambda s: pytest.fail("waited for itself"))
    held.acquire("t.py::test_outer")
    try:
        with pytest.raises(LockError) as info:
            held.acquire("t.py::test_inner")
        msg = str(info.value)
        assert "'t.py::test_outer'" in msg and "'t.py::test_inner'" in msg
        assert "cannot nest or overlap" in msg and "Close the first window" in msg
        assert isinstance(info.value, TpwError)
        assert held.holds()  # the first window keeps its lock
    finally:
        held.release()
    assert not held.holds()
    assert held.acquire("t.py::test_next") == (0.0, [])  # usable again
    held.release()


def test_two_lock_objects_in_one_thread_raise_instead_of_deadlocking(tmp_path: Path) -> None:
    first = DeviceLocks(["GPU-0", "GPU-1"], tmp_path)
    second = DeviceLocks(
        ["GPU-1", "GPU-2"], tmp_path, sleep=lambda s: pytest.fail("waited for itself")
    )
    first.acquire("outer")
    try:
        with pytest.raises(
            LockError,
            match=r"device 'GPU-1' already locked by this thread "
            r"for 'outer', and 'inner' asked",
        ):
            second.acquire("inner")
        assert not second.holds()
    finally:
        first.release()
    # GPU-1 and GPU-2 are free now: nothing of the failed call stayed held
    assert second.acquire("inner") == (0.0, [])
    second.release()


def test_two_async_windows_on_one_event_loop_raise_instead_of_hanging(tmp_path: Path) -> None:
    import asyncio

    held = DeviceLocks(["GPU-0"], tmp_path)
    errors: list[BaseException] = []

    async def window(owner: str, started: asyncio.Event, other: asyncio.Event) -> None:
        try:
            held.acquire(owner)
        except LockError as exc:
            errors.append(exc)
            started.set()
            return
        started.set()
        await other.wait()  # the window stays open while the other task runs
        held.release()

    async def main() -> None:
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.gather(window("gen_a", a, b), window("gen_b", b, a))

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "two async windows hung on the device lock"
    assert len(errors) == 1
    assert "'gen_a'" in str(errors[0]) and "'gen_b'" in str(errors[0])


# -- waiting for another process: its name, a notice, a timeout (fake clock, fake sleep) -----


class FakeTime:
    """A clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_lock_file_names_its_holder_while_held(tmp_path: Path) -> None:
    held = DeviceLocks(["GPU-0"], tmp_path)
    held.acquire("t.py::test_gen[7b]")
    try:
        pid, command, owner = (tmp_path / "GPU-0.lock").read_text().splitlines()
        assert pid == str(os.getpid())
        assert command
        assert owner == "t.py::test_gen[7b]"
    finally:
        held.release()
    assert (tmp_path / "GPU-0.lock").read_bytes() == b""  # free: no name


def test_a_long_wait_names_the_holder_and_a_timeout_gives_up(tmp_path: Path) -> None:
    proc = start_holder(tmp_path, "GPU-9", 600.0, owner="t.py::test_hog")
    try:
        fake = FakeTime()
        notices: list[str] = []
        held = DeviceLocks(
            ["GPU-9"],
            tmp_path,
            clock=fake.clock,
            sleep=fake.sleep,
            timeout_s=30.0,
            notice_after_s=5.0,
            on_wait=notices.append,
            poll_s=0.5,
        )
        with pytest.raises(LockError) as info:
            held.acquire("t.py::test_mine")
        msg = str(info.value)
        assert f"pid {proc.pid}" in msg and "t.py::test_hog" in msg
        assert " -c " in msg  # the holder's command line
        assert "--tpw-lock-timeout" in msg and "'t.py::test_mine'" in msg
        assert "gave up waiting 30.0 s" in msg
        assert fake.now == pytest.approx(130.0)  # gave up at the limit, by the fake clock
        assert len(notices) == 1  # said once, after notice_after_s
        assert f"pid {proc.pid}" in notices[0] and "t.py::test_hog" in notices[0]
        assert notices[0].startswith("waiting 5 s for the lock of device 'GPU-9'")
        assert not held.holds()
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_an_acquire_override_of_the_timeout(tmp_path: Path) -> None:
    proc = start_holder(tmp_path, "GPU-9", 600.0)
    try:
        fake = FakeTime()
        held = DeviceLocks(
            ["GPU-9"], tmp_path, clock=fake.clock, sleep=fake.sleep, timeout_s=None, poll_s=1.0
        )
        with pytest.raises(LockError, match=r"gave up waiting 3.0 s"):
            held.acquire("x", timeout_s=3.0)
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_a_timeout_releases_the_locks_already_taken(tmp_path: Path) -> None:
    proc = start_holder(tmp_path, "GPU-b", 600.0)
    try:
        fake = FakeTime()
        held = DeviceLocks(
            ["GPU-a", "GPU-b"],
            tmp_path,
            clock=fake.clock,
            sleep=fake.sleep,
            timeout_s=1.0,
            poll_s=0.25,
        )
        with pytest.raises(LockError):
            held.acquire()
        other = DeviceLocks(["GPU-a"], tmp_path, sleep=lambda s: pytest.fail("GPU-a held"))
        assert other.acquire() == (0.0, [])  # GPU-a was given back
        other.release()
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_a_wait_that_ends_reports_the_fake_seconds(tmp_path: Path) -> None:
    first = DeviceLocks(["GPU-0"], tmp_path)
    first.acquire("a")
    fake = FakeTime()

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 4:
            first.release()  # the holder (another thread here) is done

    second = DeviceLocks(["GPU-0"], tmp_path, clock=fake.clock, sleep=sleep, poll_s=0.5)
    result: list[tuple[float, list[str]]] = []
    # first's lock belongs to the main thread: wait for it from another one
    thread = threading.Thread(target=lambda: result.append(second.acquire()), daemon=True)
    thread.start()
    thread.join(60)
    # at least the four polls of 0.5 fake seconds before the release (the kernel then hands
    # the lock to the waiting thread, which the watcher sees at its next poll)
    ((waited, devices),) = result
    assert devices == ["GPU-0"]
    assert waited == pytest.approx(0.5 * len(fake.sleeps))
    assert len(fake.sleeps) >= 4
    assert set(fake.sleeps) == {0.5}


def test_a_holder_that_wrote_no_name_is_described_as_such(tmp_path: Path) -> None:
    import fcntl

    fd = os.open(tmp_path / "GPU-0.lock", os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an older pytest-tpw: locks, writes nothing
    try:
        fake = FakeTime()
        held = DeviceLocks(["GPU-0"], tmp_path, clock=fake.clock, sleep=fake.sleep, timeout_s=2.0)
        with pytest.raises(LockError, match=r"did not write its name"):
            held.acquire()
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"4242\npytest -n 4\nt.py::test_x\n", "pid 4242 (pytest -n 4) measuring 't.py::test_x'"),
        (b"4242\npytest\n", "pid 4242 (pytest)"),
        (b"4242\n", "pid 4242 (command unknown)"),
        (b"", "did not write its name"),
        (b"\xff\xfe garbage", "did not write its name"),
    ],
)
def test_describe_holder(raw: bytes, expected: str) -> None:
    assert expected in locks.describe_holder(raw)


def test_describe_holder_recognises_this_process() -> None:
    text = locks.describe_holder(f"{os.getpid()}\npython\nk\n".encode())
    assert text.startswith("this process, another thread,")


def test_holder_info_is_three_lines_whatever_the_owner() -> None:
    lines = locks.holder_info("t.py::test[a\nb]").decode().split("\n")
    assert lines[0] == str(os.getpid()) and lines[2] == "t.py::test[a b]" and lines[3] == ""


# -- shared hosts: folder 1777, files 0666, a clear error when a file is not ours ------------


def test_the_folder_is_created_sticky_and_world_writable(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        held = DeviceLocks(["GPU-0"], tmp_path / "shared" / "locks")
        held.acquire()
        held.release()
    finally:
        os.umask(old)
    mode = (tmp_path / "shared" / "locks").stat().st_mode
    assert stat.S_IMODE(mode) == 0o1777
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755  # parents: as usual
    assert stat.S_IMODE((tmp_path / "shared" / "locks" / "GPU-0.lock").stat().st_mode) == 0o666


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir(mode=0o700)
    held = DeviceLocks(["GPU-0"], tmp_path / "mine")
    held.acquire()
    held.release()
    assert stat.S_IMODE((tmp_path / "mine").stat().st_mode) == 0o700


def test_our_own_lock_file_left_0644_is_opened_up(tmp_path: Path) -> None:
    path = tmp_path / "GPU-0.lock"
    path.write_bytes(b"")
    path.chmod(0o644)  # as an older version left it
    held = DeviceLocks(["GPU-0"], tmp_path)
    held.acquire()
    held.release()
    assert stat.S_IMODE(path.stat().st_mode) == 0o666


def test_a_lock_file_we_cannot_open_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "GPU-0.lock"
    path.write_bytes(b"")
    path.chmod(0o644)
    real_open = os.open

    def denied(p: object, flags: int, *args: object) -> int:
        if Path(str(p)) == path:
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)  # as another user would see it
    with pytest.raises(LockError) as info:
        DeviceLocks(["GPU-0"], tmp_path).acquire("t.py::test_x")
    monkeypatch.undo()
    msg = str(info.value)
    assert str(path) in msg
    assert f"uid {os.getuid()}, mode 0644" in msg
    assert f"chmod 666 {path}" in msg and "PYTEST_TPW_LOCK_DIR" in msg


def test_a_folder_we_cannot_write_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(p: object, flags: int, *args: object) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(p))
        raise FileNotFoundError(2, "No such file or directory", str(p))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(LockError) as info:
        DeviceLocks(["GPU-0"], tmp_path).acquire()
    monkeypatch.undo()
    assert f"chmod 1777 {tmp_path}" in str(info.value)
    assert "PYTEST_TPW_LOCK_DIR" in str(info.value)


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "GPU-0.lock").symlink_to(victim)
    with pytest.raises(LockError, match=r"is a symlink"):
        DeviceLocks(["GPU-0"], tmp_path / "locks").acquire()
    assert victim.read_text(encoding="utf-8") == "precious"


def test_a_file_where_the_lock_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "locks").write_text("x", encoding="utf-8")
    with pytest.raises(LockError, match=r"folder is a file"):
        DeviceLocks(["GPU-0"], tmp_path / "locks").acquire()


def test_the_same_folder_by_another_path_is_still_the_same_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locks").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "locks")
    monkeypatch.chdir(tmp_path)
    first = DeviceLocks(["GPU-0"], Path("locks"))
    second = DeviceLocks(
        ["GPU-0"], tmp_path / "alias", sleep=lambda s: pytest.fail("waited for itself")
    )
    first.acquire("a")
    try:
        with pytest.raises(LockError, match=r"already locked by this thread for 'a'"):
            second.acquire("b")
    finally:
        first.release()
