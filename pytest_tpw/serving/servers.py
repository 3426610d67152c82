"""A served model measured from its client: what the ``tpw_server`` fixture starts and aims.

:class:`Servers` starts the user's server commands
(:class:`~pytest_tpw.serving.process.ServerProcess`) for one test and asks the session's
sensor to follow them while they run; what that means depends on what the sensor declares
(:meth:`~pytest_tpw.sensors.Sensor.capabilities`):

- ``device`` attribution (``nvml``): the GPUs the server's process tree uses must be among the
  measured ones (a board's counter counts everything on it, so the devices must be the
  server's alone); the server's processes are the measured work, anyone else on those GPUs
  is named in a warning.
- ``process`` attribution (``cpu-estimate``): CPU time of the server's process tree instead of
  the test process's (the client's own CPU time is then left out: the server does the work).
- ``host`` attribution (``rapl``): the counters are host-wide already; contention marking
  follows the server's tree.
- ``none`` (``sim``): nothing to aim.

At the end (pass or fail) every server is stopped, the sensor follows the test process
again, and the tail of each server's log is kept for the test's report. No pytest import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_tpw.errors import TpwError
from pytest_tpw.sensors.base import Sensor
from pytest_tpw.serving.process import ServerProcess


class ServedModel:
    """One running server, as the test sees it."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return self.process.base_url

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client for this server (``pip install openai``)."""
        return self.process.openai_client(**kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client for this server, for ``tpw.acall``."""
        return self.process.openai_client(asynchronous=True, **kwargs)


class Servers:
    """The servers one test started, and the sensor they are measured with (None: unmeasured)."""

    def __init__(self, sensor: Sensor | None, log_dir: Path) -> None:
        self.sensor = sensor
        self.log_dir = log_dir
        self.started: list[ServerProcess] = []
        #: Said once per test as a warning (other processes on the server's GPUs...).
        self.warnings: list[str] = []
        #: The test's report already says that a server died.
        self.deaths_reported = False

    def start(
        self,
        command: Sequence[str] | str,
        *,
        ready_path: str = "/v1/models",
        port: int | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 120.0,
    ) -> ServedModel:
        log_path = self.log_dir / f"server-{len(self.started)}.log"
        process = ServerProcess(
            command,
            url=url,
            ready_path=ready_path,
            port=port,
            env=env,
            cwd=cwd,
            startup_timeout_s=startup_timeout_s,
            log_path=log_path,
        )
        self.started.append(process)
        process.start()
        if self.sensor is not None:
            self._aim(process)
        return ServedModel(process)

    def _aim(self, process: ServerProcess) -> None:
        sensor = self.sensor
        assert sensor is not None
        sensor.follow(_Followed(process.pid, self))
        caps = sensor.capabilities()
        if caps.attribution != "device":
            return
        users = sensor.device_users()
        tree = set(process.process_tree_pids())
        used = sorted(d for d, pids in users.items() if pids & tree)
        missing = [d for d in used if d not in caps.devices]
        if missing:
            self.stop()
            raise TpwError(
                f"the server uses GPU(s) {', '.join(missing)}, which this session does not "
                f"measure (measured: {', '.join(sorted(caps.devices)) or 'none'}); widen "
                "--tpw-devices or CUDA_VISIBLE_DEVICES so that the server's GPUs are measured"
            )
        own = {os.getpid(), *tree}
        for device in used:
            others = sorted(users[device] - own)
            if others:
                self.warnings.append(
                    f"other processes use the server's GPU {device} (pids "
                    f"{', '.join(map(str, others))}); a device's counter counts the whole "
                    "board's energy, so their work is counted too: give the server its GPUs "
                    "alone"
                )

    def pids(self) -> set[int]:
        """Every running server's process tree now."""
        pids: set[int] = set()
        for process in self.started:
            if process.returncode is None:
                pids.update(process.process_tree_pids())
        return pids

    def deaths(self, n_lines: int = 30) -> list[str]:
        """What to say of each server that ended on its own (not stopped): its command, its
        exit status and the tail of its log. Empty while every server runs."""
        from pytest_tpw.serving.process import exit_text

        return [
            f"the server {p.describe()} exited with {exit_text(p.returncode or 0)} during the "
            f"test, so the test's requests could not be answered. Last lines of "
            f"{p.log_path}:\n{p.log_tail(n_lines)}"
            for p in self.started
            if p.died
        ]

    def log_tails(self, n_lines: int = 40) -> list[tuple[str, str]]:
        """``(what, tail)`` per server, for the test's report."""
        return [
            (f"tpw server {i}: {' '.join(p.argv)}", p.log_tail(n_lines))
            for i, p in enumerate(self.started)
        ]

    def stop(self) -> None:
        """Stop every server and aim the sensor back at this process."""
        for process in self.started:
            process.stop()
        if self.sensor is not None:
            self.sensor.follow(None)


class _Followed:
    """What the sensor follows: the server just started (its root) and every running
    server's processes (a test may start several)."""

    def __init__(self, root_pid: int, servers: Servers) -> None:
        self._root_pid = root_pid
        self._servers = servers

    @property
    def root_pid(self) -> int:
        return self._root_pid

    def pids(self) -> set[int]:
        return self._servers.pids()
