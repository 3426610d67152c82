"""Who listens on a TCP port, and which processes carry a marker, from Linux's ``/proc``.

A server started for a test must be the one that answers on its port: another process
already listening there would answer the readiness poll and be measured in its place.
:func:`listening_inodes` reads the listening sockets of a port from ``/proc/net/tcp`` and
``tcp6``; :func:`holders` names the processes whose file descriptors hold them. Processes
a server starts inherit its environment, so :func:`marked` finds them by a marker variable
even after they leave its process group (``setsid``). Every function answers None (or
nothing) where ``/proc`` is missing (macOS): callers then fall back to what the OS offers.
Plain Python, no pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pytest_tpw.host.procstat import DEFAULT_PROC_ROOT

#: ``st`` of a listening socket in ``/proc/net/tcp``.
_LISTEN = "0A"


def listening_inodes(port: int, proc_root: Path = DEFAULT_PROC_ROOT) -> set[int] | None:
    """The socket inodes listening on TCP ``port`` (IPv4 and IPv6, any address); None when
    ``/proc/net/tcp`` cannot be read."""
    found: set[int] = set()
    read_any = False
    for name in ("tcp", "tcp6"):
        try:
            text = (proc_root / "net" / name).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        read_any = True
        for line in text.splitlines()[1:]:
            cells = line.split()
            if len(cells) < 10 or cells[3] != _LISTEN:
                continue
            _, _, hex_port = cells[1].rpartition(":")
            try:
                if int(hex_port, 16) == port:
                    found.add(int(cells[9]))
            except ValueError:
                continue
    return found if read_any else None


def _socket_inodes(pid: int, proc_root: Path) -> set[int]:
    """The socket inodes process ``pid`` holds open (empty when it cannot be read)."""
    out: set[int] = set()
    fd_dir = proc_root / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            try:
                out.add(int(target[8:-1]))
            except ValueError:
                continue
    return out


def holders(
    inodes: set[int], pids: Iterable[int] | None = None, proc_root: Path = DEFAULT_PROC_ROOT
) -> list[int]:
    """The processes among ``pids`` (None: every process this user can see) that hold one of
    the sockets ``inodes``, sorted."""
    if not inodes:
        return []
    if pids is None:
        try:
            pids = [int(n) for n in os.listdir(proc_root) if n.isdigit()]
        except OSError:
            return []
    return sorted(pid for pid in pids if _socket_inodes(pid, proc_root) & inodes)


def command_line(pid: int, proc_root: Path = DEFAULT_PROC_ROOT, limit: int = 120) -> str:
    """A process's command line, for messages ("?" when it cannot be read)."""
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip() or "?"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def marked(variable: str, value: str, proc_root: Path = DEFAULT_PROC_ROOT) -> list[int] | None:
    """The processes whose environment has ``variable=value`` (this user's; None without
    ``/proc``), sorted."""
    try:
        names = [n for n in os.listdir(proc_root) if n.isdigit()]
    except OSError:
        return None
    wanted = f"{variable}={value}".encode()
    out = []
    for name in names:
        try:
            environ = (proc_root / name / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            out.append(int(name))
    return sorted(out)
