"""CPU time from Linux ``/proc``: process trees, their CPU seconds, host busy time, contention.

Everything reads below a ``proc_root`` (default ``/proc``) so that tests can lay out a fake
tree in a temporary folder. Nothing here needs psutil, and nothing raises on a host without
``/proc`` (macOS, Windows): readers return ``None`` or empty results and the callers skip what
they cannot measure.

Files read (see ``man 5 proc``):

- ``/proc/<pid>/stat``: field 4 ``ppid``, fields 14-17 ``utime stime cutime cstime`` (clock
  ticks; ``cutime``/``cstime`` hold the CPU time of children this process has waited for),
  field 22 ``starttime`` (ticks after boot; with the pid it identifies one process even if
  the pid is later reused);
- ``/proc/stat``: the ``cpu`` line (host-wide ticks: ``user nice system idle iowait irq softirq
  steal guest guest_nice``) and one ``cpuN`` line per online CPU.

**Contention.** A CPU window (``cpu-estimate`` or ``rapl``) compares the host's busy CPU time
with the CPU time of the measured process tree over the same window. What the tree did not use
was used by *other* processes. :func:`contention_warning` flags a window when other processes
kept, on average, at least :data:`OTHER_CORES_THRESHOLD` cores busy **and** that was more than
:data:`OTHER_SHARE_THRESHOLD` of the host's busy time: the first condition ignores the
background noise of an idle host (daemons, the terminal), the second ignores one stray core on
a large machine where the measured code keeps dozens busy.

``/proc`` counts CPU time in clock ticks (10 ms), each counter truncated on its own, so the
figures of a short window are coarse. :attr:`CpuUsage.resolution_cores` estimates that error
(``sqrt(CPUs + 2 x processes)`` ticks over the window, about 2.4 standard deviations of the
summed truncation errors); the warning needs the thresholds to be passed by more than it, and
windows whose resolution is worse than :data:`MAX_RESOLUTION_CORES` get no figures at all.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

DEFAULT_PROC_ROOT = Path("/proc")

#: Other processes busier than this many cores on average (and see the share) flag a window.
OTHER_CORES_THRESHOLD = 0.5
#: ...when their CPU time is also more than this fraction of the host's busy CPU time.
OTHER_SHARE_THRESHOLD = 0.10
#: Windows whose figures are coarser than this many cores (too short) record nothing.
MAX_RESOLUTION_CORES = 1.0

# Columns of the ``cpu`` line of /proc/stat. guest and guest_nice are already counted in user
# and nice, so they are left out of the busy sum.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal
_IDLE_COLUMNS = (3, 4)  # idle iowait


def clock_ticks() -> int:
    """Clock ticks per second (``SC_CLK_TCK``, 100 on nearly every Linux)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100
    return ticks if ticks > 0 else 100


@dataclass(frozen=True)
class PidStat:
    """What one ``/proc/<pid>/stat`` says, times in seconds."""

    pid: int
    ppid: int
    #: utime + stime: the CPU time of the process itself, all its threads included.
    cpu_s: float
    #: cutime + cstime: CPU time of its children that exited and were waited for.
    children_cpu_s: float
    #: Start time in ticks after boot: (pid, start_ticks) names one process for good.
    start_ticks: int


def parse_pid_stat(text: str, ticks: int) -> PidStat:
    """Parse the text of ``/proc/<pid>/stat``; ValueError if it is not one.

    The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
    so the fields are counted from the *last* closing parenthesis.
    """
    head, sep, tail = text.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0].strip())
    rest = tail.split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    if len(rest) < 20:
        raise ValueError(f"/proc/{pid}/stat has {len(rest) + 2} fields, expected at least 22")
    utime, stime, cutime, cstime = (int(rest[i]) for i in (11, 12, 13, 14))
    return PidStat(
        pid=pid,
        ppid=int(rest[1]),
        cpu_s=(utime + stime) / ticks,
        children_cpu_s=(cutime + cstime) / ticks,
        start_ticks=int(rest[19]),
    )


def read_pid_stat(
    pid: int, proc_root: Path = DEFAULT_PROC_ROOT, ticks: int | None = None
) -> PidStat | None:
    """``/proc/<pid>/stat`` parsed, or None when the process is gone (or unreadable)."""
    try:
        text = (proc_root / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
        return parse_pid_stat(text, ticks or clock_ticks())
    except (OSError, ValueError):
        return None


def all_pid_stats(
    proc_root: Path = DEFAULT_PROC_ROOT, ticks: int | None = None
) -> dict[int, PidStat]:
    """Every process visible under ``proc_root``; processes that vanish while listed are skipped."""
    ticks = ticks or clock_ticks()
    try:
        entries = [entry.name for entry in proc_root.iterdir() if entry.name.isdigit()]
    except OSError:
        return {}
    stats: dict[int, PidStat] = {}
    for name in entries:
        stat = read_pid_stat(int(name), proc_root, ticks)
        if stat is not None:
            stats[stat.pid] = stat
    return stats


def tree_of(root_pid: int, stats: Mapping[int, PidStat]) -> list[int]:
    """``root_pid`` and all its descendants in ``stats`` (root first, then breadth-first)."""
    if root_pid not in stats:
        return []
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        if stat.ppid != stat.pid:
            children.setdefault(stat.ppid, []).append(stat.pid)
    order, seen = [root_pid], {root_pid}
    i = 0
    while i < len(order):
        for child in sorted(children.get(order[i], ())):
            if child not in seen:
                seen.add(child)
                order.append(child)
        i += 1
    return order


def _children_files(pid: int, proc_root: Path) -> list[int] | None:
    """Children of ``pid`` from ``/proc/<pid>/task/<tid>/children`` (kernels built with
    CONFIG_PROC_CHILDREN), or None where those files do not exist."""
    try:
        tasks = list((proc_root / str(pid) / "task").iterdir())
    except OSError:
        return None
    found: list[int] = []
    for task in tasks:
        try:
            text = (task / "children").read_text(encoding="ascii")
        except FileNotFoundError:
            if task.exists():
                return None  # the kernel has no children files: scan instead
            continue  # the thread ended while listed
        except OSError:
            continue
        found += [int(word) for word in text.split() if word.isdigit()]
    return found


def tree_stats(
    root_pid: int, proc_root: Path = DEFAULT_PROC_ROOT, ticks: int | None = None
) -> dict[int, PidStat]:
    """Stats of ``root_pid`` and its descendants (root first), empty if it is gone.

    Walks the ``children`` files when the kernel has them (a few reads), else scans every
    process under ``proc_root``.
    """
    ticks = ticks or clock_ticks()
    root = read_pid_stat(root_pid, proc_root, ticks)
    if root is None:
        return {}
    out = {root_pid: root}
    queue = [root_pid]
    while queue:
        children = _children_files(queue.pop(0), proc_root)
        if children is None:
            stats = all_pid_stats(proc_root, ticks)
            return {pid: stats[pid] for pid in tree_of(root_pid, stats)}
        for child in sorted(children):
            if child in out:
                continue
            stat = read_pid_stat(child, proc_root, ticks)
            if stat is not None:
                out[child] = stat
                queue.append(child)
    return out


def process_tree_pids(root_pid: int, proc_root: Path = DEFAULT_PROC_ROOT) -> list[int]:
    """``root_pid`` and its descendants now (empty if ``root_pid`` is gone)."""
    return list(tree_stats(root_pid, proc_root))


@dataclass(frozen=True)
class HostCpu:
    """Host-wide CPU time since boot (all CPUs summed), from the ``cpu`` line of /proc/stat."""

    busy_s: float
    idle_s: float
    #: Online CPUs (``cpuN`` lines).
    cpus: int

    @property
    def total_s(self) -> float:
        return self.busy_s + self.idle_s


def parse_host_stat(text: str, ticks: int) -> HostCpu:
    """Parse ``/proc/stat``; ValueError when it has no ``cpu`` line."""
    busy = idle = None
    cpus = 0
    for line in text.splitlines():
        name, _, values = line.partition(" ")
        if name == "cpu":
            numbers = [int(v) for v in values.split()]
            numbers += [0] * (8 - len(numbers))
            busy = sum(numbers[i] for i in _BUSY_COLUMNS)
            idle = sum(numbers[i] for i in _IDLE_COLUMNS)
        elif name.startswith("cpu") and name[3:].isdigit():
            cpus += 1
    if busy is None or idle is None:
        raise ValueError("no 'cpu' line in /proc/stat")
    return HostCpu(busy / ticks, idle / ticks, cpus or 1)


def read_host_cpu(proc_root: Path = DEFAULT_PROC_ROOT, ticks: int | None = None) -> HostCpu | None:
    """Host busy and idle CPU seconds since boot, or None without a readable /proc/stat."""
    try:
        text = (proc_root / "stat").read_text(encoding="ascii", errors="replace")
        return parse_host_stat(text, ticks or clock_ticks())
    except (OSError, ValueError):
        return None


def cpu_count(proc_root: Path = DEFAULT_PROC_ROOT) -> int:
    """Online CPUs of the host (``cpuN`` lines of /proc/stat), else ``os.cpu_count()``."""
    host = read_host_cpu(proc_root)
    return host.cpus if host is not None else (os.cpu_count() or 1)


def usable_cpus() -> int:
    """CPUs this process may run on (``nproc``: its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- CPU use of a set of processes over a window ------------------------------------------------


@dataclass(frozen=True)
class CpuSnapshot:
    """One read of the host and of the followed processes, at a window's edge."""

    host: HostCpu | None
    #: (pid, start_ticks) -> stat, for every process of the followed trees.
    procs: dict[tuple[int, int], PidStat]


@dataclass
class CpuUsage:
    """CPU use over one window: the followed processes against the whole host."""

    #: Window length as the host's CPU accounting sees it (total ticks / CPUs), seconds.
    wall_s: float
    #: CPU seconds the followed processes used (threads, forks and reaped children included).
    own_cpu_s: float
    #: CPU seconds the whole host used (every process, kernel included).
    host_busy_s: float
    cpus: int
    #: Pids seen at the start that were gone at the end; their CPU time after the last read
    #: is lost unless a followed process reaped them.
    vanished: list[int] = field(default_factory=list)
    #: Pids that appeared during the window (forked workers).
    appeared: list[int] = field(default_factory=list)
    #: Likely error of the core figures from tick truncation (0 when exact).
    resolution_cores: float = 0.0

    @property
    def host_busy_cores(self) -> float:
        return self.host_busy_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def own_busy_cores(self) -> float:
        return self.own_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def other_busy_cores(self) -> float:
        """Cores kept busy by everything but the followed processes (never negative)."""
        return max(0.0, self.host_busy_cores - self.own_busy_cores)

    @property
    def other_share(self) -> float:
        """Fraction of the host's busy CPU time used by other processes."""
        host = self.host_busy_cores
        return self.other_busy_cores / host if host > 0 else 0.0

    def state(self) -> dict[str, Any]:
        """The figures for ``WindowEnergy.state`` (JSON-serialisable)."""
        out: dict[str, Any] = {
            "host_busy_cores": round(self.host_busy_cores, 4),
            "own_busy_cores": round(self.own_busy_cores, 4),
            "other_busy_cores": round(self.other_busy_cores, 4),
            "host_cpus": self.cpus,
            "cpu_resolution_cores": round(self.resolution_cores, 4),
        }
        if self.vanished:
            out["vanished_pids"] = sorted(self.vanished)
        if self.appeared:
            out["appeared_pids"] = sorted(self.appeared)
        return out


def contention_warning(
    usage: CpuUsage,
    *,
    cores_threshold: float = OTHER_CORES_THRESHOLD,
    share_threshold: float = OTHER_SHARE_THRESHOLD,
) -> str | None:
    """A warning when other processes competed for the CPU in the window, else None."""
    other = usage.other_busy_cores
    # only what is beyond the tick resolution counts: a short window must not cry wolf
    sure = other - usage.resolution_cores
    host = usage.host_busy_cores
    if sure < cores_threshold or host <= 0 or sure / host <= share_threshold:
        return None
    return (
        f"other processes kept {other:.2f} of {usage.cpus} CPU cores busy during this window "
        f"({usage.other_share:.0%} of the host's busy CPU time; the measured processes used "
        f"{usage.own_busy_cores:.2f}): they compete for cores, caches and memory bandwidth, "
        "so this window's time and energy may not compare with others. Measure on a quiet "
        "host (check `top`)"
    )


class ProcessWatch:
    """Reads the CPU time of some process trees and of the host at each edge of a window.

    ``roots`` are the root pids whose trees are followed; each edge re-reads the trees, so
    workers forked during the window count. A process that exits during the window keeps the
    CPU time it had at the start read; what it used afterwards is counted only when a
    followed process reaped it (its ``cutime``/``cstime`` grow by the child's whole total).
    """

    def __init__(self, roots: Iterable[int], proc_root: Path = DEFAULT_PROC_ROOT) -> None:
        self.roots = tuple(roots)
        self.proc_root = Path(proc_root)

    def snapshot(self) -> CpuSnapshot:
        ticks = clock_ticks()
        host = read_host_cpu(self.proc_root, ticks)
        procs: dict[tuple[int, int], PidStat] = {}
        for root in self.roots:
            for stat in tree_stats(root, self.proc_root, ticks).values():
                procs[(stat.pid, stat.start_ticks)] = stat
        return CpuSnapshot(host, procs)

    def usage(self, start: CpuSnapshot, end: CpuSnapshot) -> CpuUsage | None:
        """CPU use between two snapshots; None when the host time cannot be read or the
        window is too short for its figures to mean anything (see ``MAX_RESOLUTION_CORES``)."""
        if start.host is None or end.host is None:
            return None
        cpus = end.host.cpus
        wall_s = (end.host.total_s - start.host.total_s) / cpus
        if wall_s <= 0:
            return None
        appeared = [key for key in end.procs if key not in start.procs]
        vanished = [key for key in start.procs if key not in end.procs]
        own = 0.0
        reaped_delta: dict[int, float] = {}
        for key, before in start.procs.items():
            after = end.procs.get(key)
            if after is not None:
                own += max(0.0, after.cpu_s - before.cpu_s)
                reaped_delta[key[0]] = max(0.0, after.children_cpu_s - before.children_cpu_s)
        own += sum(reaped_delta.values())
        for key in appeared:
            # forked during the window: all its CPU time is the window's, reaped children too
            own += end.procs[key].cpu_s + end.procs[key].children_cpu_s
        # A vanished process reaped by a followed parent moved its whole total (the part used
        # before the window too) into the parent's cutime/cstime: take that part back out, but
        # never more than the parent's growth (a parent ignoring SIGCHLD gains nothing).
        before_vanished: dict[int, float] = {}
        for key in vanished:
            before = start.procs[key]
            before_vanished[before.ppid] = (
                before_vanished.get(before.ppid, 0.0) + before.cpu_s + before.children_cpu_s
            )
        for ppid, amount in before_vanished.items():
            own -= min(amount, reaped_delta.get(ppid, 0.0))
        counters = cpus + 2 * len(set(start.procs) | set(end.procs))
        resolution = math.sqrt(counters) / (clock_ticks() * wall_s)
        if resolution > MAX_RESOLUTION_CORES:
            return None
        return CpuUsage(
            resolution_cores=resolution,
            wall_s=wall_s,
            own_cpu_s=max(0.0, own),
            host_busy_s=max(0.0, end.host.busy_s - start.host.busy_s),
            cpus=cpus,
            vanished=[key[0] for key in vanished],
            appeared=[key[0] for key in appeared],
        )


# -- torch threads -------------------------------------------------------------------------------


def torch_threads_warning(
    other_busy_cores: float,
    *,
    cpus: int | None = None,
    torch_module: ModuleType | None = None,
) -> str | None:
    """A warning when PyTorch would run more threads than there are free cores, else None.

    Only looks at torch when it is already imported (``sys.modules``), never imports it.
    Free cores are ``cpus`` (default: the CPUs this process may use) minus the cores other
    processes keep busy, rounded to the nearest core. Oversubscribed intra-op threads spin and
    wait on each other: on a small, shared CPU machine that makes inference many times
    slower, not just a bit.
    """
    torch = torch_module if torch_module is not None else sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return None
    threads = int(torch.get_num_threads())
    total = cpus if cpus is not None else usable_cpus()
    # a core counts as taken when others keep it at least half busy: the plugin's own reads
    # and a shell's idle noise (a few hundredths of a core) must not take a whole one away
    free = max(1, round(total - max(0.0, other_busy_cores)))
    if threads <= free:
        return None
    return (
        f"PyTorch uses {threads} threads but only about {free} of {total} CPU cores are free "
        f"(other processes keep {other_busy_cores:.1f} busy): oversubscribed threads can make "
        f"CPU inference many times slower. Call torch.set_num_threads({free}) or set "
        f"OMP_NUM_THREADS={free} before starting"
    )


def mark_contention(usage: CpuUsage | None, state: dict[str, Any], warnings: list[str]) -> None:
    """Put a window's CPU figures in its ``state`` and a contention warning in ``warnings``.

    Does nothing when ``usage`` is None (no /proc, or a window shorter than a clock tick).
    """
    if usage is None:
        return
    state.update(usage.state())
    text = contention_warning(usage)
    if text is not None:
        warnings.append(text)
