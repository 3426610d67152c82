"""Output files: atomic, deterministic writes and appends, failing with one typed error.

``atomic_write_text``/``atomic_write_chunks`` write a temp file in the target's folder, then
``os.replace`` it over the target, so readers see the old file or the new, never half. A
symlink is written through to its target (the link stays a link). Every failure (read-only
folder, full disk, no permission, a directory where the file should be) is an
:class:`OutputWriteError` naming the path and the cause, and leaves no temp file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_tpw.errors import TpwError

#: How the temp file of a write to ``NAME`` is named: ``.NAME.<8 random chars>.tmp``.
TEMP_SUFFIX = ".tmp"


class OutputWriteError(TpwError, OSError):
    """An output file cannot be written; the message names the path, the cause and the fix.

    Also an ``OSError`` (``errno`` and ``filename`` set), so code that caught the raw error
    keeps working.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free some space, or write the file elsewhere"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space, or write the file elsewhere"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.EACCES: (
        "permission denied",
        "make the folder writable for this user, or choose another path",
    ),
    errno.EPERM: (
        "operation not permitted",
        "make the folder writable for this user, or choose another path",
    ),
    errno.EISDIR: (
        "a directory is in the way",
        "remove that directory or choose another file name",
    ),
    errno.ENOTDIR: (
        "a file is in the way of a folder on the path",
        "remove that file or choose another path",
    ),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


def write_error(path: Path | str, exc: OSError, what: str = "write") -> OutputWriteError:
    """The :class:`OutputWriteError` for ``exc`` raised while writing ``path``."""
    cause, fix = _CAUSES.get(
        exc.errno or 0,
        (exc.strerror or str(exc) or type(exc).__name__, "check the path and its folder"),
    )
    detail = f" [{errno.errorcode.get(exc.errno or 0, exc.errno)}]" if exc.errno else ""
    err = OutputWriteError(f"cannot {what} {path}: {cause}{detail}; {fix}")
    err.filename = str(path)
    err.errno = exc.errno
    return err


def dump_json(data: Any) -> str:
    """Stable, reviewable JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _mode_for(path: Path) -> int:
    """The existing file's mode, else 0666 less the process umask (what open() would give)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def resolved(path: Path) -> Path:
    """Where a write to ``path`` lands: a symlink (chain) is followed to its target."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def make_folder(folder: Path) -> None:
    """``mkdir -p``; a file in the way is ``NotADirectoryError`` (mkdir says "exists")."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None


def temp_prefix(path: Path) -> str:
    """The prefix of the temp files a write to ``path`` creates (for stale-file cleanup)."""
    return f".{path.name}."


def atomic_write_chunks(path: Path, chunks: Iterable[bytes | memoryview | str]) -> None:
    """Write the concatenated ``chunks`` to ``path`` atomically (str chunks as UTF-8).

    Raises :class:`OutputWriteError` when the file cannot be written; the old file (if any)
    is untouched and the temp file removed. Non-``OSError`` exceptions (an interrupt, an
    error from the chunk iterator) also remove the temp file and propagate as they are.
    """
    target = resolved(Path(path))
    tmp: str | None = None
    try:
        make_folder(target.parent)
        fd, tmp = tempfile.mkstemp(
            prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent
        )
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode an ordinary write would have
        os.chmod(tmp, _mode_for(target))
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        if isinstance(exc, OutputWriteError):
            raise
        raise write_error(target, exc) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new, never half.

    Raises :class:`OutputWriteError` naming the path and the cause; no temp file is left.
    """
    atomic_write_chunks(path, [text])


def append_text(path: Path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path``, creating it: for ``$GITHUB_STEP_SUMMARY``.

    Raises :class:`OutputWriteError` naming the path and the cause.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise write_error(path, exc, "append to") from exc
