"""A fake Linux ``/proc`` in a temporary directory: ``stat`` files of processes and of the host.

Tests build a process tree with :meth:`FakeProc.process`, set the host's CPU ticks with
:meth:`FakeProc.host`, then move the counters between two reads. Times are in clock ticks, as
the kernel writes them (``SC_CLK_TCK``, read by the code under test with ``os.sysconf``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


class FakeProc:
    """``root`` laid out like ``/proc``; ``children_files`` adds ``task/<tid>/children``."""

    def __init__(self, root: Path, *, children_files: bool = False) -> None:
        self.root = root
        self.children_files = children_files
        root.mkdir(parents=True, exist_ok=True)
        self._procs: dict[int, dict[str, int | str]] = {}

    def host(self, busy: int, idle: int, cpus: int = 2, guest: int = 0) -> None:
        """Write /proc/stat: ``busy`` ticks split over user and system, ``idle`` ticks idle.

        ``guest`` ticks are written in the guest column *and* inside user, as the kernel does.
        """
        user, system = busy - busy // 4, busy // 4
        line = f"cpu  {user} 0 {system} {idle} 0 0 0 0 {guest} 0"
        per_cpu = [f"cpu{i} 0 0 0 0 0 0 0 0 0 0" for i in range(cpus)]
        text = "\n".join([line, *per_cpu, "intr 0", "ctxt 0", "btime 0", "processes 1"]) + "\n"
        (self.root / "stat").write_text(text, encoding="ascii")

    def process(
        self,
        pid: int,
        ppid: int,
        cpu: int = 0,
        children_cpu: int = 0,
        start: int = 1000,
        comm: str = "python",
    ) -> None:
        """Create or update a process: ``cpu`` ticks (utime + stime), reaped children's ticks."""
        self._procs[pid] = {
            "ppid": ppid,
            "cpu": cpu,
            "ccpu": children_cpu,
            "start": start,
            "comm": comm,
        }
        self._write(pid)

    def set_cpu(self, pid: int, cpu: int, children_cpu: int | None = None) -> None:
        proc = self._procs[pid]
        proc["cpu"] = cpu
        if children_cpu is not None:
            proc["ccpu"] = children_cpu
        self._write(pid)

    def remove(self, pid: int) -> None:
        del self._procs[pid]
        shutil.rmtree(self.root / str(pid))
        self._write_children()

    def _write(self, pid: int) -> None:
        p = self._procs[pid]
        cpu, ccpu = int(p["cpu"]), int(p["ccpu"])
        utime, stime = cpu - cpu // 3, cpu // 3
        cutime, cstime = ccpu - ccpu // 2, ccpu // 2
        # fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime cutime cstime priority nice num_threads itrealvalue starttime, then more
        fields = [
            "S",
            p["ppid"],
            pid,
            pid,
            0,
            -1,
            0,
            0,
            0,
            0,
            0,
            utime,
            stime,
            cutime,
            cstime,
            20,
            0,
            1,
            0,
            p["start"],
            1000,
            100,
        ]
        text = f"{pid} ({p['comm']}) " + " ".join(str(f) for f in fields) + "\n"
        folder = self.root / str(pid)
        folder.mkdir(exist_ok=True)
        (folder / "stat").write_text(text, encoding="utf-8")
        self._write_children()

    def _write_children(self) -> None:
        if not self.children_files:
            return
        for pid in self._procs:
            kids = sorted(c for c, p in self._procs.items() if p["ppid"] == pid and c != pid)
            task = self.root / str(pid) / "task" / str(pid)
            task.mkdir(parents=True, exist_ok=True)
            (task / "children").write_text("".join(f"{k} " for k in kids), encoding="ascii")
