"""The ``cpu-estimate`` sensor: CPU time x a per-core power figure, of this process or a tree.

Always available and always labelled *estimated*: with no energy counter there is no
physical signal, only a model, which is why comparisons made on it say so.

By default it counts this process's CPU time (``time.process_time``: every thread, no child
processes). :meth:`CpuEstimateSensor.follow_process_tree` makes it count a process tree
instead (a model server and the workers it forks), read from ``/proc`` at each window edge.
Either way every window also records how busy the host was and warns when other processes
competed for the CPU (see :mod:`pytest_tpw.procstat`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_tpw.errors import SensorError, SensorUnavailable
from pytest_tpw.host import fingerprint, procstat
from pytest_tpw.sensors.base import (
    Capabilities,
    FollowedWork,
    Provenance,
    Sensor,
    SensorHealth,
    SensorOptions,
    WindowEnergy,
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


@dataclass(frozen=True)
class _Token:
    #: ``time.process_time()`` at the start, when following this process; else None.
    process_time: float | None
    cpu: procstat.CpuSnapshot


class CpuEstimateSensor(Sensor):
    name = "cpu-estimate"
    provenance: Provenance = "estimated"

    #: Shortest window over a followed tree: /proc counts CPU time in clock ticks (10 ms),
    #: up to two ticks off per process and edge, which 1 s keeps to a few percent.
    tree_min_window_s: float = 1.0

    def __init__(self, options: SensorOptions) -> None:
        super().__init__(options)
        #: Where /proc is; tests point it at a fake tree.
        self.proc_root: Path = procstat.DEFAULT_PROC_ROOT
        self._root_pid: int | None = None
        self._last_other_cores: float | None = None
        self._torch_warned = False
        #: Windows whose CPU time advanced, and those without any (health).
        self._advanced = 0
        self._still = 0

    # -- what is measured ----------------------------------------------------------------

    def follow_process_tree(self, root_pid: int) -> None:
        """Count the CPU time of ``root_pid`` and its descendants (re-read at every window
        edge, so forked workers count) instead of this process's."""
        if procstat.read_pid_stat(root_pid, self.proc_root) is None:
            raise SensorUnavailable(
                f"cpu-estimate cannot follow pid {root_pid}: {self.proc_root}/{root_pid}/stat "
                "is not readable (the process has exited, or this is not Linux)"
            )
        self._root_pid = root_pid
        self._set_method()

    def follow_self(self) -> None:
        """Count this process's CPU time again (the default)."""
        self._root_pid = None
        self._set_method()

    @property
    def followed_pid(self) -> int | None:
        """The root of the followed process tree, or None for this process."""
        return self._root_pid

    def _set_method(self) -> None:
        what = "process" if self._root_pid is None else f"process tree of pid {self._root_pid}"
        self.method = (
            f"{what} CPU time x {self.options.cpu_watts_per_core:g} W per busy core "
            "(no energy counter)"
        )

    def _watch(self) -> procstat.ProcessWatch:
        # for contention, "own" is the measured tree: this process and its children, or the
        # followed tree
        root = os.getpid() if self._root_pid is None else self._root_pid
        return procstat.ProcessWatch([root], self.proc_root)

    # -- sensor --------------------------------------------------------------------------

    def open(self) -> None:
        self._set_method()

    def domains(self) -> Sequence[str]:
        return ("cpu:process",)

    def min_window_s(self) -> float:
        if self._root_pid is not None:
            return self.tree_min_window_s
        # CPU time is accounted at scheduler-tick granularity on some kernels (up to 10 ms);
        # 100 ms keeps that below 10 % of one window and far below after trimming.
        return 0.1

    def begin(self) -> object:
        snapshot = self._watch().snapshot()
        # read last, so that reading /proc is not counted in the window
        return _Token(time.process_time(), snapshot)

    def end(self, token: object) -> WindowEnergy:
        if not isinstance(token, _Token):
            raise TypeError(f"end() needs the token begin() returned, got {token!r}")
        own_seconds = time.process_time() - (token.process_time or 0.0)
        watch = self._watch()
        usage = watch.usage(token.cpu, watch.snapshot())
        if self._root_pid is None:
            cpu_seconds = own_seconds
        else:
            cpu_seconds = self._tree_seconds(token, usage)
            if usage is not None:
                # the test process drives the followed server as its client: its CPU time
                # is part of the measured work, not a competitor (nor in the tree's joules)
                usage = dataclasses.replace(usage, own_cpu_s=usage.own_cpu_s + own_seconds)
        window = WindowEnergy(
            {"cpu:process": cpu_seconds * self.options.cpu_watts_per_core},
            state={"cpu_seconds": cpu_seconds},
        )
        if usage is not None:
            self._last_other_cores = usage.other_busy_cores
        if cpu_seconds > 0:
            self._advanced += 1
        else:
            self._still += 1
        procstat.mark_contention(usage, window.state, window.warnings)
        root = self._root_pid
        if root is not None and not self._alive(root):
            window.warnings.append(
                f"the followed process (pid {root}) exited during the window: "
                "the CPU time its tree used after the window began is partly missing"
            )
        return window

    def _alive(self, pid: int) -> bool:
        return procstat.read_pid_stat(pid, self.proc_root) is not None

    def _tree_seconds(self, token: _Token, usage: procstat.CpuUsage | None) -> float:
        if usage is not None:
            return usage.own_cpu_s
        if not token.cpu.procs:
            raise SensorError(
                f"cpu-estimate follows pid {self._root_pid}, which was gone when the window "
                "began: restart the server or call follow_self()"
            )
        # no host time (no /proc/stat): the tree's own counters still tell its CPU time
        end = self._watch().snapshot()
        return sum(
            max(0.0, end.procs[key].cpu_s - before.cpu_s)
            for key, before in token.cpu.procs.items()
            if key in end.procs
        )

    def capabilities(self) -> Capabilities:
        return Capabilities((), "process", False)

    def follow(self, work: FollowedWork | None) -> None:
        if work is None:
            self.follow_self()
        else:
            self.follow_process_tree(work.root_pid)

    def advice(self) -> str | None:
        """Once per sensor: a warning when ``torch.get_num_threads()`` (torch already
        imported) exceeds the cores other processes leave free, as seen in the last window
        (or none busy before any window). Later calls return None."""
        if self._torch_warned:
            return None
        text = procstat.torch_threads_warning(self._last_other_cores or 0.0)
        if text is not None:
            self._torch_warned = True
        return text

    def health(self) -> SensorHealth:
        """Whether CPU time advanced in the windows; no counter, update period or dropped
        read to report: the joules are an estimate from CPU time."""
        notes = [f"{self._still} window(s) counted no CPU time"] if self._still else []
        advances = None if not (self._advanced or self._still) else self._advanced > 0
        return SensorHealth(advances, None, 0, tuple(notes))

    def describe(self) -> dict[str, object]:
        return {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": fingerprint.usable_cpus(),
            "watts_per_core": self.options.cpu_watts_per_core,
            "follows": "self" if self._root_pid is None else f"pid {self._root_pid} and children",
        }

    def hardware(self) -> tuple[str, ...]:
        # keyed apart from rapl on the same CPU: estimated and measured joules never share
        # a baseline; the usable CPUs keep runners of different sizes apart
        return (f"{fingerprint.cpu_hardware(cpu_model())} cpu-estimate",)

    def legacy_hardware(self) -> tuple[str, ...]:
        return (f"{cpu_model()} cpu-estimate",)
