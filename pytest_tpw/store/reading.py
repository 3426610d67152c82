"""Reading a file we did not write ourselves, safely: the one reader of every file.

Baselines, results files and whatever ``pytest-tpw compare``, ``report``, ``export``,
``plot`` and ``show`` are given pass through :func:`read_bytes`: it never opens a FIFO,
device, socket or folder (a FIFO would block, ``/dev/zero`` would never end), never reads
more than a size limit, and re-checks the file it opened (it may have been swapped since
the ``stat``). :func:`decode` refuses anything but UTF-8. Each refusal is an error of the
caller's type whose message names the file, what is wrong and what to do.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pytest_tpw.errors import TpwError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class Kind:
    """What a file is to its reader: its name in messages, the error to raise, and the fix
    for a file that is special, too large or not UTF-8."""

    def __init__(
        self, what: str, error: type[TpwError], not_regular_fix: str, damaged_fix: str
    ) -> None:
        self.what, self.error = what, error
        self.not_regular_fix, self.damaged_fix = not_regular_fix, damaged_fix


def _not_regular(path: Path, mode: int, kind: Kind) -> TpwError:
    name = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return kind.error(
        f"{path}: the {kind.what} is {name}, not a regular file; it was not opened. "
        f"{kind.not_regular_fix}"
    )


def _too_big(path: Path, size: int, max_bytes: int, kind: Kind) -> TpwError:
    return kind.error(
        f"{path}: the {kind.what} is {size} bytes, more than the limit of {max_bytes}; it was "
        f"not read: a {kind.what} this size is damaged or not one of ours. {kind.damaged_fix}"
    )


def read_bytes(path: Path, max_bytes: int, kind: Kind) -> bytes | None:
    """The file's bytes; None when missing. Never opens a special file, never reads more
    than ``max_bytes``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise kind.error(f"{path}: cannot read the {kind.what}: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode, kind)
    if st.st_size > max_bytes:
        raise _too_big(path, st.st_size, max_bytes, kind)
    fd = _open(path, kind)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)  # it may have been swapped since the stat
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode, kind)
        chunks = []
        total = 0
        want = min(st.st_size, max_bytes) + 1  # one read, one buffer: no copy to join
        while True:
            chunk = os.read(fd, min(max_bytes + 1 - total, want))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _too_big(path, total, max_bytes, kind)
        return b"".join(chunks)
    except OSError as exc:
        raise kind.error(f"{path}: cannot read the {kind.what}: {exc}") from None
    finally:
        os.close(fd)


def _open(path: Path, kind: Kind) -> int | None:
    """A read-only descriptor of ``path`` that never blocks on a FIFO; None when missing."""
    try:
        return os.open(
            path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise kind.error(f"{path}: cannot read the {kind.what}: {exc}") from None


def head(path: Path, n_bytes: int, kind: Kind) -> bytes | None:
    """The first ``n_bytes`` of a regular file (to tell what it is without reading it all);
    None when missing. The same refusals as :func:`read_bytes`, but for size."""
    fd = _open(path, kind)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode, kind)
        return os.read(fd, n_bytes)
    except OSError as exc:
        raise kind.error(f"{path}: cannot read the {kind.what}: {exc}") from None
    finally:
        os.close(fd)


def check_utf8(path: Path, data: bytes, kind: Kind) -> None:
    """Refuse bytes that are not UTF-8, naming the first bad byte's line and offset."""
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise kind.error(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, offset "
            f"{exc.start}); a {kind.what} is UTF-8 JSON. {kind.damaged_fix}"
        ) from None
