"""One lock per physical device, held only while a window is open.

Two processes (xdist workers, two CI jobs on one host) must never measure one GPU at once:
a board's energy counter counts everything on the board. Locks are ``flock`` locks on
files named after the device (its UUID), in a folder shared by the host's processes. The
kernel drops a ``flock`` when its process dies, so a killed test run never leaves a lock
that blocks forever. Where ``fcntl`` does not exist (Windows), windows are not locked.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Folder of the lock files; one per host (tests point it elsewhere).
LOCK_DIR_ENV = "PYTEST_TPW_LOCK_DIR"


def default_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir(), "pytest-tpw-locks"))


def _file_name(device_id: str) -> str:
    """A safe file name, unique per id: an id that had to be rewritten gets a digest, which
    keeps 'a/b' and 'a b' apart; ordinary ids (GPU UUIDs) stay as they are."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_id)
    if safe == device_id:
        return safe + ".lock"
    return f"{safe}-{hashlib.sha1(device_id.encode('utf-8')).hexdigest()[:10]}.lock"


class DeviceLocks:
    """The locks of the devices one sensor measures, taken together, in a fixed order."""

    def __init__(self, device_ids: Sequence[str], directory: Path | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.device_ids = sorted(set(device_ids))  # one order for all: no deadlock
        self.directory = directory or default_dir()
        self._clock = clock
        self._files: list[int] = []

    @property
    def available(self) -> bool:
        return fcntl is not None and bool(self.device_ids)

    def acquire(self) -> tuple[float, list[str]]:
        """Take every lock; returns the seconds spent waiting and the devices waited for."""
        if not self.available:
            return 0.0, []
        self.directory.mkdir(parents=True, exist_ok=True)
        start = self._clock()
        waited_for = []
        for device in self.device_ids:
            fd = os.open(self.directory / _file_name(device), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited_for.append(device)
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._files.append(fd)
        return (self._clock() - start if waited_for else 0.0), waited_for

    def release(self) -> None:
        """Drop every lock held (safe to call when none is)."""
        files, self._files = self._files, []
        for fd in files:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
