"""Start, watch and stop a user's OpenAI-compatible model server, to measure it from its client.

:class:`ServerProcess` runs the server's command in its own process group with its output in a
log file, waits until an HTTP ``GET`` of its readiness path answers 200, and tells the meter
what to measure: the server's process tree (:meth:`ServerProcess.process_tree_pids`, for a CPU
sensor) and the GPUs that tree uses (:meth:`ServerProcess.gpu_uuids`, from NVML). NVML has no
per-process energy, so the GPUs must be the server's alone:
:meth:`ServerProcess.other_gpu_processes` lists anyone else on them.

The only network target is the server on the loopback interface (``127.0.0.1``, ``localhost``
or ``::1``), and every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from uuid import uuid4

from pytest_tpw.errors import TpwError
from pytest_tpw.host import procstat, sockets
from pytest_tpw.serving import watchdog

__all__ = ["LOOPBACK_HOSTS", "ServerProcess", "ServerStartError", "free_port"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

#: Bytes read from the end of the log for :meth:`ServerProcess.log_tail`.
_TAIL_BYTES = 64 * 1024


class ServerStartError(TpwError):
    """The server did not start: bad command, it exited, or it never answered in time.

    The message names the command and ends with the tail of its log.
    """


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it; a race with another process
    taking it before the server binds is possible but rare)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host.strip("[]"), 0))
        port: int = sock.getsockname()[1]
    return port


def exit_text(code: int) -> str:
    """``status 1``, or ``signal SIGKILL (-9)`` for a process killed by a signal."""
    if code >= 0:
        return f"status {code}"
    try:
        return f"signal {signal.Signals(-code).name} ({code})"
    except ValueError:
        return f"signal {-code} ({code})"


def _check_loopback(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise ValueError(f"server url {url!r} must look like http://127.0.0.1:PORT")
    host = parts.hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"server url {url!r}: pytest-tpw only talks to a server on this machine "
            f"(host one of {', '.join(LOOPBACK_HOSTS[:3])}), not {host!r}"
        )
    return parts


def _probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """GET ``url`` once, bypassing any proxy: (answered 200, what happened)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"no answer ({reason})"
    return status == 200, f"HTTP {status}"


class ServerProcess:
    """One server process, started in its own process group; a context manager.

    ``command`` is an argument list (or a string split with :func:`shlex.split`, no shell).
    ``{port}`` inside any argument or ``env`` value is replaced by ``port``; with neither
    ``url`` nor ``port`` given, a free port is chosen. ``url`` is the server's root
    (``http://127.0.0.1:8000``; default ``http://127.0.0.1:{port}``), and must be on this
    machine. ``env`` entries are added to the current environment. Output (stdout and stderr)
    goes to ``log_path``. ``start()`` (or entering the ``with`` block) returns once ``GET
    url + ready_path`` answers 200, polling with backoff, and raises
    :class:`ServerStartError` with the log's tail when the process exits first or
    ``startup_timeout_s`` passes.
    """

    #: First and longest pause between two readiness polls (seconds).
    poll_first_s: float = 0.05
    poll_max_s: float = 1.0

    def __init__(
        self,
        command: Sequence[str] | str,
        *,
        url: str | None = None,
        ready_path: str = "/v1/models",
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 120.0,
        log_path: Path,
    ) -> None:
        #: The port was named by the caller (not a free one chosen here): someone may hold it.
        self.port_given = port is not None or url is not None
        if port is None and url is None:
            port = free_port()
        if port is None:
            assert url is not None
            port = _check_loopback(url).port
        self.port = port
        mapping = {"port": "" if port is None else str(port)}
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("the server command is empty")
        self.argv = [arg.replace("{port}", mapping["port"]) for arg in argv]
        self.url = (url or f"http://127.0.0.1:{port}").rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        _check_loopback(self.url)
        self.ready_path = ready_path if ready_path.startswith("/") else "/" + ready_path
        self.env = {k: v.replace("{port}", mapping["port"]) for k, v in (env or {}).items()}
        self.cwd = cwd
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path)
        #: Seams for tests: monotonic clock, sleep, and one readiness probe.
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], None] = time.sleep
        self.probe: Callable[[str, float], tuple[bool, str]] = _probe
        #: Where /proc is (tests point it at a fake tree).
        self.proc_root: Path = procstat.DEFAULT_PROC_ROOT
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stopped = False
        #: Marks every process of this server (``PYTEST_TPW_SERVER=<id>``), also those that
        #: leave its process group.
        self.marker = uuid4().hex
        self._watchdog: watchdog.Watchdog | None = None

    # -- identity ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:PORT/v1``), for ``OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError("the server has not been started: call start() first")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal)."""
        return None if self._popen is None else self._popen.poll()

    def describe(self) -> str:
        return shlex.join(self.argv)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ServerProcess:
        """Start the process and wait until it is ready; returns self."""
        if self._popen is not None:
            raise RuntimeError(f"server {self.describe()} was already started")
        if self.port_given and self.port is not None:
            held = self.port_holders()
            if held:
                raise ServerStartError(
                    f"cannot start server {self.describe()}: port {self.port} is already "
                    f"in use by {held}, which would answer in its place. Stop that process, "
                    "or leave port= out to let pytest-tpw choose a free port"
                )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        env = {**os.environ, **self.env, watchdog.MARKER: self.marker}
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: stop() reaches its workers
            )
        except OSError as exc:
            self._close_log()
            raise ServerStartError(
                f"cannot run server command {self.describe()}: {exc}. Check the program "
                "name and that it is installed in this environment"
            ) from exc
        # if this process dies without stopping the server (SIGKILL), the watchdog does
        self._watchdog = watchdog.watch(self._popen.pid, self.marker)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    # -- who answers on the port ---------------------------------------------------------

    def port_holders(self) -> str:
        """The processes listening on this server's port now, for messages ("" when none,
        or when the OS cannot tell)."""
        if self.port is None:
            return ""
        inodes = sockets.listening_inodes(self.port, self.proc_root)
        if not inodes:
            return ""
        pids = sockets.holders(inodes, None, self.proc_root)
        if not pids:
            return "another process (one this user cannot see)"
        return ", ".join(
            f"pid {pid} ({sockets.command_line(pid, self.proc_root)})" for pid in pids[:3]
        )

    def owns_port(self) -> bool | None:
        """Whether this server's processes hold a socket listening on its port: True; False
        when only other processes do; None when the OS shows no listener (no ``/proc``, or
        another network namespace): then the answer is trusted."""
        if self.port is None:
            return None
        inodes = sockets.listening_inodes(self.port, self.proc_root)
        if not inodes:
            return None
        return bool(sockets.holders(inodes, self.own_pids(), self.proc_root))

    def own_pids(self) -> list[int]:
        """The server's process tree and every process carrying its marker."""
        pids = set(self.process_tree_pids())
        pids.update(sockets.marked(watchdog.MARKER, self.marker, self.proc_root) or [])
        return sorted(pids)

    def _wait_ready(self) -> None:
        url = self.url + self.ready_path
        deadline = self.clock() + self.startup_timeout_s
        pause = self.poll_first_s
        last = "not polled yet"
        while True:
            code = self.returncode
            if code is not None:
                held = self.port_holders()
                where = f" Port {self.port} is held by {held}." if held else ""
                raise ServerStartError(
                    f"server {self.describe()} exited with {exit_text(code)} before it "
                    f"answered GET {url}.{where} Last lines of {self.log_path}:\n"
                    f"{self.log_tail(30)}"
                )
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ServerStartError(
                    f"server {self.describe()} did not answer GET {url} with 200 within "
                    f"{self.startup_timeout_s:g} s (last poll: {last}). Raise the startup "
                    f"timeout if it loads a large model, or check the command, port and "
                    f"ready path. Last lines of {self.log_path}:\n{self.log_tail(30)}"
                )
            ready, last = self.probe(url, max(0.05, min(2.0, remaining)))
            if ready and self.owns_port() is False:
                # an answer from a process that is not this server: not ready, whatever it says
                ready = False
                last = f"HTTP 200 from {self.port_holders() or 'another process'}, not this server"
            if ready:
                return
            self.sleep(max(0.0, min(pause, deadline - self.clock())))
            pause = min(pause * 1.5, self.poll_max_s)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``; returns the exit status.

        Whatever interrupts the wait (a second Ctrl-C, SIGTERM), the group and every process
        carrying the server's marker (workers that left the group) get SIGKILL before
        stop() returns or raises. Idempotent: later calls return the same status and send
        nothing.
        """
        popen = self._popen
        if popen is None or self._stopped:
            self._close_log()
            return None if popen is None else popen.returncode
        self._stopped = True
        try:
            if popen.poll() is None:
                self._signal_group(popen.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=timeout_s)
        finally:
            # workers that outlived the leader keep its process group; those that left it
            # keep its marker: end them all, however the wait above ended
            self._signal_group(popen.pid, signal.SIGKILL)
            self._kill_marked()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5.0)
            if self._watchdog is not None:
                self._watchdog.close()
            self._close_log()
        return popen.returncode

    def _kill_marked(self) -> None:
        for pid in sockets.marked(watchdog.MARKER, self.marker, self.proc_root) or []:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    @property
    def died(self) -> bool:
        """True when the process ended on its own (not stopped by :meth:`stop`)."""
        return not self._stopped and self.returncode is not None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what to measure -----------------------------------------------------------------

    def process_tree_pids(self) -> list[int]:
        """The server's pid and all its descendants now (empty once it has exited)."""
        if self._popen is None or self._popen.poll() is not None:
            return []
        pids = procstat.process_tree_pids(self.pid, self.proc_root)
        if pids or self.proc_root.is_dir():
            return pids
        try:  # no /proc (macOS): psutil, where installed
            import psutil  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            return [self.pid]
        try:
            proc = psutil.Process(self.pid)
            return [self.pid] + [child.pid for child in proc.children(recursive=True)]
        except psutil.Error:
            return []

    def gpu_processes(self) -> dict[str, list[int]]:
        """GPU UUID -> pids running on it (compute and graphics), from NVML; {} without NVML."""
        from pytest_tpw.sensors.nvml import gpu_processes

        return gpu_processes()

    def gpu_uuids(self) -> list[str]:
        """UUIDs of the GPUs any process of the server's tree runs on (NVML order).

        Empty without NVML (no driver, nvidia-ml-py not installed). In a container NVML may
        report host pids, which do not match the container's: then this is empty too.
        """
        tree = set(self.process_tree_pids())
        return [uuid for uuid, pids in self.gpu_processes().items() if tree & set(pids)]

    def other_gpu_processes(self, exclude: Iterable[int] = ()) -> dict[str, list[int]]:
        """On the server's GPUs, the pids that are neither its tree nor in ``exclude``.

        NVML measures a whole board, so the energy of any process here is counted as the
        server's: warn, or measure on GPUs the server has to itself.
        """
        tree = set(self.process_tree_pids())
        skip = tree | set(exclude)
        out: dict[str, list[int]] = {}
        for uuid, pids in self.gpu_processes().items():
            if tree & set(pids):
                others = sorted(set(pids) - skip)
                if others:
                    out[uuid] = others
        return out

    # -- log -----------------------------------------------------------------------------

    def log_tail(self, n_lines: int = 40) -> str:
        """The last ``n_lines`` lines of the server's log ("" when there is none yet)."""
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - _TAIL_BYTES))
                data = f.read()
        except OSError:
            return ""
        lines = data.decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n_lines:]) if n_lines > 0 else ""

    # -- client --------------------------------------------------------------------------

    def openai_client(self, *, asynchronous: bool = False, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client (``AsyncOpenAI`` with ``asynchronous=True``) for this
        server (``pip install openai``).

        ``api_key`` defaults to a placeholder (local servers rarely check it) and
        ``timeout`` to 60 s; other keyword arguments go to the client.
        """
        try:
            import openai
        except ImportError as exc:
            raise ImportError("the OpenAI client is not installed: pip install openai") from exc
        kwargs.setdefault("api_key", "pytest-tpw")
        kwargs.setdefault("timeout", 60.0)
        kwargs.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        return client(base_url=self.base_url, **kwargs)
