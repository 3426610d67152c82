"""One lock per physical device, held only while a window is open.

Two processes (xdist workers, two CI jobs on one host) must never measure one GPU at once:
a board's energy counter counts everything on the board. Locks are ``flock`` locks on
files named after the device (its UUID), in a folder shared by the host's processes. The
kernel drops a ``flock`` when its process dies, so a killed test run never leaves a lock
that blocks forever. Where ``fcntl`` does not exist (Windows), windows are not locked.

Within one process a second request for a device already locked *by the same thread* (a
window opened inside another, two async windows interleaved on one event loop) can never be
granted: it would wait for itself. It fails at once with :class:`LockError` naming both
owners. Another thread of the same process waits like another process would.

While a lock is held its file says who holds it (``pid``, command line, owner: one a line).
A wait longer than ``notice_after_s`` is reported once through ``on_wait`` with the holder's
pid and command; a wait longer than ``timeout_s`` raises :class:`LockError` naming the
holder and the flag that raises the limit (``--tpw-lock-timeout``). Waiting polls a
non-blocking ``flock`` with short sleeps, so the clock and the sleep are injectable.

Shared hosts: one folder per host for all users, not one per user, so that two users can
never measure one GPU at once either. The default folder ``<tmp>/pytest-tpw-locks`` is
created with mode 1777 (world-writable and sticky, like ``/tmp``: everyone may create lock
files, nobody may delete another's), and lock files with mode 0666 whatever the umask (set
with ``fchmod`` by their creator), so any user can lock a file another user created. Lock
files are opened without ``O_CREAT`` when they exist (``fs.protected_regular`` forbids
``O_CREAT`` on another user's file in a sticky folder) and never through a symlink. A lock
file this user cannot open (left 0644 by an older version, or another tool) is a
:class:`LockError` naming the file, its owner and the fix; so is a folder it cannot write.
The cost of sharing: a user can hold a device's lock and so stall another user's measured
tests; the wait notice and the timeout name that process. Pointing ``PYTEST_TPW_LOCK_DIR``
at a private folder trades that for no exclusion between users.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_tpw.errors import TpwError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Folder of the lock files; one per host (tests point it elsewhere).
LOCK_DIR_ENV = "PYTEST_TPW_LOCK_DIR"
#: The flag that sets the longest wait for a device lock (the plugin defines it).
TIMEOUT_FLAG = "--tpw-lock-timeout"
#: Mode of the shared lock folder (sticky, world-writable) and of lock files.
DIR_MODE = 0o1777
FILE_MODE = 0o666
#: The most of a lock file read back to name its holder.
_INFO_BYTES = 4096


class LockError(TpwError):
    """A device lock cannot be taken: held by this very thread, timed out, or not openable.

    The message names the device, the holder (pid, command, owner) and what to do.
    """


def default_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir(), "pytest-tpw-locks"))


def _file_name(device_id: str) -> str:
    """A safe file name, unique per id: an id that had to be rewritten gets a digest, which
    keeps 'a/b' and 'a b' apart; ordinary ids (GPU UUIDs) stay as they are."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_id)
    if safe == device_id:
        return safe + ".lock"
    return f"{safe}-{hashlib.sha1(device_id.encode('utf-8')).hexdigest()[:10]}.lock"


def _command_line() -> str:
    try:
        raw = Path("/proc/self/cmdline").read_bytes()
        args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    except OSError:
        args = [sys.executable, *sys.argv]
    text = shlex.join(args)
    return text if len(text) <= 300 else text[:297] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


def holder_info(owner: str) -> bytes:
    """What a lock file says while held: pid, command line, owner, one a line."""
    return f"{os.getpid()}\n{_one_line(_command_line())}\n{_one_line(owner)}\n".encode()


def describe_holder(raw: bytes) -> str:
    """``pid 4242 (pytest -n 4) measuring 'test_x'`` from a lock file's contents."""
    lines = raw.decode("utf-8", "replace").splitlines()
    pid = lines[0].strip() if lines else ""
    if not pid.isdigit():
        return "another process (it did not write its name: an older pytest-tpw or another tool)"
    command = lines[1].strip() if len(lines) > 1 else ""
    owner = lines[2].strip() if len(lines) > 2 else ""
    who = "this process, another thread," if int(pid) == os.getpid() else f"pid {pid}"
    text = f"{who} ({command or 'command unknown'})"
    return text + (f" measuring {owner!r}" if owner else "")


#: Lock files held in this process: path -> (owner, thread id). Guarded by _REGISTRY_LOCK.
_HELD: dict[str, tuple[str, int]] = {}
_REGISTRY_LOCK = threading.Lock()


def _owned_by_me(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid()


def ensure_dir(directory: Path) -> None:
    """Create the shared lock folder with mode 1777 (the umask does not apply)."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise LockError(
                f"{directory}: the device lock folder is a file; remove it, or set "
                f"{LOCK_DIR_ENV} to another folder"
            ) from None
        return
    except OSError as exc:
        raise LockError(
            f"{directory}: cannot create the device lock folder "
            f"({exc.strerror or exc}); set {LOCK_DIR_ENV} to a writable "
            "folder"
        ) from None
    with contextlib.suppress(OSError):  # we just created it
        os.chmod(directory, DIR_MODE)  # mkdir's mode is cut by the umask


def open_lock_file(path: Path) -> int:
    """Open (or create, mode 0666) one lock file for read/write, never through a symlink."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:  # another process created it just now
                fd = os.open(path, flags)
    except PermissionError as exc:
        raise LockError(_permission_message(path, exc)) from None
    except OSError as exc:
        if os.path.islink(path):
            raise LockError(
                f"{path}: the device lock file is a symlink; remove it (lock files "
                "are never followed through links)"
            ) from None
        raise LockError(
            f"{path}: cannot open the device lock file ({exc.strerror or exc}); "
            f"set {LOCK_DIR_ENV} to a writable folder"
        ) from None
    try:
        st = os.fstat(fd)
        if _owned_by_me(st) and stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)  # 0666 whatever the umask: other users lock it too
    except OSError:  # pragma: no cover - fstat/fchmod on our own file
        pass
    return fd


def _permission_message(path: Path, exc: OSError) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (
            f"{path.parent}: this user cannot create device lock files there "
            f"({exc.strerror}); its owner (or root) runs `chmod 1777 {path.parent}`, or "
            f"set {LOCK_DIR_ENV} to a folder you can write"
        )
    except OSError:
        st = None
    owner = f"uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}" if st else "unknown owner"
    return (
        f"{path}: the device lock file exists but this user cannot open it for writing "
        f"({owner}). Fix: its owner (or root) runs `chmod 666 {path}`; or set "
        f"{LOCK_DIR_ENV} to another folder (then runs of different users no longer keep "
        "off each other's devices)"
    )


def _read_holder(fd: int) -> str:
    try:
        return describe_holder(os.pread(fd, _INFO_BYTES, 0))
    except OSError:
        return describe_holder(b"")


class _Abandoned(Exception):
    """A wait given up on; ``error`` is what to raise. The waiting thread owns the fd."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Waiter:
    """A thread blocked in ``flock`` on one descriptor until the kernel grants the lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.granted = threading.Event()
        self._decided = threading.Lock()
        self._abandoned = False
        threading.Thread(target=self._take, name="pytest-tpw-lock-wait", daemon=True).start()

    def _take(self) -> None:
        assert fcntl is not None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:  # pragma: no cover - the descriptor is ours and open
            return
        with self._decided:
            if not self._abandoned:
                self.granted.set()
                return
        # nobody wants it any more: let the next waiter have it
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)

    def abandon(self) -> bool:
        """Give up; True when the lock was not granted (the thread then closes the fd)."""
        with self._decided:
            if self.granted.is_set():
                return False
            self._abandoned = True
            return True


class DeviceLocks:
    """The locks of the devices one sensor measures, taken together, in a fixed order.

    ``timeout_s``: the longest wait for a lock another process holds (None: no limit).
    ``on_wait``: called once with a text naming the holder when a wait passes
    ``notice_after_s``. ``clock`` and ``sleep`` are injectable for tests; ``poll_s`` is
    the sleep between two tries.
    """

    def __init__(
        self,
        device_ids: Sequence[str],
        directory: Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
        *,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float | None = None,
        notice_after_s: float = 5.0,
        on_wait: Callable[[str], None] | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self.device_ids = sorted(set(device_ids))  # one order for all: no deadlock
        self.directory = directory or default_dir()
        self._clock = clock
        self._sleep = sleep
        self.timeout_s = timeout_s
        self.notice_after_s = notice_after_s
        self.on_wait = on_wait
        self.poll_s = poll_s
        # per thread: the descriptors held and the owner they were taken for
        self._held: dict[int, tuple[str, list[tuple[str, int]]]] = {}
        self._state = threading.Lock()  # guards _held

    @property
    def available(self) -> bool:
        return fcntl is not None and bool(self.device_ids)

    def holds(self) -> bool:
        """Whether the calling thread holds this object's locks now."""
        return threading.get_ident() in self._held

    def acquire(self, owner: str = "", timeout_s: float | None = None) -> tuple[float, list[str]]:
        """Take every lock; returns the seconds spent waiting and the devices waited for.

        ``owner`` names what the window measures (the measurement key), for messages.
        ``timeout_s`` overrides the instance's limit for this call. Raises
        :class:`LockError` at once when this thread already holds one of the locks, and
        when the wait passes the limit (nothing stays held then).
        """
        if not self.available:
            return 0.0, []
        me = threading.get_ident()
        if me in self._held:
            raise LockError(self._nested_message(self._held[me][0], owner))
        limit = self.timeout_s if timeout_s is None else timeout_s
        ensure_dir(self.directory)
        # one name per file whatever path led to the folder, for the in-process registry
        directory = Path(os.path.realpath(self.directory))
        start = self._clock()
        waited_for: list[str] = []
        taken: list[tuple[str, int]] = []
        try:
            for device in self.device_ids:
                path = directory / _file_name(device)
                with _REGISTRY_LOCK:
                    mine = _HELD.get(str(path))
                if mine is not None and mine[1] == me:
                    raise LockError(self._nested_message(mine[0], owner, device))
                fd = open_lock_file(path)
                try:
                    if self._wait_for(fd, device, owner, start, limit):
                        waited_for.append(device)
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, holder_info(owner), 0)
                except _Abandoned as gone:
                    raise gone.error from None  # the waiting thread owns and closes fd now
                except BaseException:
                    os.close(fd)
                    raise
                taken.append((str(path), fd))
                with _REGISTRY_LOCK:
                    _HELD[str(path)] = (owner, me)
        except BaseException:
            self._drop(taken)
            raise
        with self._state:
            self._held[me] = (owner, taken)
        return (self._clock() - start if waited_for else 0.0), waited_for

    def _wait_for(
        self, fd: int, device: str, owner: str, start: float, limit: float | None
    ) -> bool:
        """Take ``fd``'s flock; True when it had to wait.

        A busy lock is waited for by a helper thread blocked in ``flock``, so the kernel
        hands the lock over the moment its holder lets go (a poller that sleeps between
        tries would lose every race to a holder that takes the lock again at once, and
        starve); this thread meanwhile watches the time, says who holds the lock, and gives
        up at the limit. A waiter given up on releases the lock as soon as it gets it.
        """
        assert fcntl is not None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            pass
        waiter = _Waiter(fd)
        noticed = False
        try:
            while not waiter.granted.is_set():
                elapsed = self._clock() - start
                if limit is not None and elapsed >= limit:
                    raise LockError(
                        f"gave up waiting {elapsed:.1f} s for the lock of device {device!r}"
                        f"{f' (to measure {owner!r})' if owner else ''}: held by "
                        f"{_read_holder(fd)}. Stop that process, or raise the limit with "
                        f"{TIMEOUT_FLAG}=SECONDS (lock folder: {self.directory})"
                    )
                if not noticed and elapsed >= self.notice_after_s:
                    noticed = True
                    if self.on_wait is not None:
                        self.on_wait(
                            f"waiting {elapsed:.0f} s for the lock of device {device!r}: "
                            f"held by {_read_holder(fd)}"
                        )
                self._sleep(self.poll_s)
        except BaseException as exc:
            if waiter.abandon():
                raise _Abandoned(exc) from None
            raise  # granted meanwhile: the caller closes fd, which drops the lock
        return True

    def _nested_message(self, held_for: str, owner: str, device: str | None = None) -> str:
        what = f"device {device!r}" if device else f"devices {', '.join(self.device_ids)}"
        return (
            f"{what} already locked by this thread for {held_for or 'an open window'!r}, "
            f"and {owner or 'another window'!r} asked for it again: measurement windows "
            "cannot nest or overlap in one thread (a window opened inside another, or two "
            "async windows at once would wait for themselves forever). Close the first "
            "window before opening the next"
        )

    @staticmethod
    def _drop(taken: list[tuple[str, int]]) -> None:
        for path, fd in reversed(taken):
            with _REGISTRY_LOCK:
                _HELD.pop(path, None)
            try:
                os.ftruncate(fd, 0)  # nobody holds it: say no name
                assert fcntl is not None
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:  # pragma: no cover - our own descriptor
                pass
            finally:
                os.close(fd)

    def release(self) -> None:
        """Drop the locks this thread holds (safe to call when none is).

        From a thread that holds none, while exactly one other thread does (a window opened
        in one thread and closed in another), that thread's locks are dropped.
        """
        with self._state:
            held = self._held.pop(threading.get_ident(), None)
            if held is None and len(self._held) == 1:
                held = self._held.pop(next(iter(self._held)))
        if held is not None:
            self._drop(held[1])
