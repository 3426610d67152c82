"""A server's watchdog: it kills the server when the test process dies without stopping it.

pytest killed with SIGKILL (or an out-of-memory kill, or a pytest-xdist worker killed) runs
no teardown, so the server it started would be left running. :func:`watch` starts a tiny
process in its own session (a Ctrl-C to pytest's terminal does not reach it) that holds the
read end of a pipe whose write end only the test process has. When the test process
ends, however it ends, the pipe is closed and the watchdog wakes: it SIGKILLs the server's
process group and every process that carries the server's marker in its environment
(workers that called ``setsid()`` leave the group but keep the environment), then exits.
:meth:`Watchdog.close` closes the pipe on purpose once the server was stopped, so the
watchdog's sweep then finds nothing left. It imports nothing of pytest-tpw (``python -I -S``:
a few milliseconds to start).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

#: The variable that marks a server's processes: ``PYTEST_TPW_SERVER=<id>``.
MARKER = "PYTEST_TPW_SERVER"

#: The watchdog's program: argv = process group, ``MARKER=value`` to look for.
SCRIPT = r"""
import os, signal, sys
pgid, wanted = int(sys.argv[1]), sys.argv[2].encode()
try:
    while os.read(0, 4096):
        pass
except OSError:
    pass
try:
    os.killpg(pgid, signal.SIGKILL)
except OSError:
    pass
try:
    names = [n for n in os.listdir("/proc") if n.isdigit()]
except OSError:
    names = []
for name in names:
    try:
        with open("/proc/" + name + "/environ", "rb") as f:
            environ = f.read()
    except OSError:
        continue
    if wanted in environ.split(b"\0"):
        try:
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass
"""


class Watchdog:
    """One server's watchdog process and the write end of its pipe."""

    def __init__(self, process: subprocess.Popen[bytes], fd: int) -> None:
        self.process = process
        self._fd: int | None = fd

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the pipe (the watchdog sweeps, finds the stopped server gone, and exits);
        reap it. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)


def watch(pgid: int, marker: str) -> Watchdog | None:
    """Start the watchdog of the server whose process group is ``pgid`` and whose
    processes carry ``PYTEST_TPW_SERVER=marker``; None when it cannot start (the server
    then still stops at the end of its test, as before)."""
    read_fd, write_fd = os.pipe()  # neither end is inherited by the server (PEP 446)
    env = {k: v for k, v in os.environ.items() if k != MARKER}
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SCRIPT, str(pgid), f"{MARKER}={marker}"],
            stdin=read_fd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError:
        os.close(write_fd)
        return None
    finally:
        os.close(read_fd)
    return Watchdog(process, write_fd)
