"""What can go wrong around a user's server: its port held by another, a second Ctrl-C while
stopping, workers that leave the process group, the test process killed outright, a server
that dies during the test. Real processes on the loopback, every wait bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_tpw.host import sockets
from pytest_tpw.serving.process import ServerProcess, ServerStartError, exit_text, free_port
from tests.unit.serving.test_server import BOUND_S, SLOW_READY, gone, wait_for

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="needs Linux /proc (sockets and environments)"
)

#: Any GET answers 200: a server that is not ours, already on the port.
FOREIGN = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
"""

#: Tries to listen on its port after a moment; exits 1 when it is taken (EADDRINUSE).
LATE_BINDER = r"""
import socket, sys, time
time.sleep(0.3)
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as exc:
    print("bind failed:", exc, flush=True)
    sys.exit(1)
s.listen()
time.sleep(300)
"""

#: Starts a worker that leaves the process group (setsid); says "up" once it has left.
ESCAPING = r"""
import subprocess, sys, time
LEAVES = "import os, time; os.setsid(); print('left', flush=True); time.sleep(300)"
worker = subprocess.Popen([sys.executable, "-c", LEAVES], stdout=subprocess.PIPE)
worker.stdout.readline()
print("up", flush=True)
time.sleep(300)
"""


def has_escaped(log: Path) -> bool:
    """The ESCAPING server's worker has left its process group (the server logged "up")."""
    return log.exists() and "up" in log.read_text().split()


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Another process's HTTP server on a free port of the loopback."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FOREIGN, str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
    yield port, proc
    proc.kill()
    proc.wait(timeout=BOUND_S)
    proc.stdout.close()


def test_the_sockets_of_a_port_and_who_holds_them(
    foreign: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = foreign
    inodes = sockets.listening_inodes(port)
    assert inodes
    assert sockets.holders(inodes) == [proc.pid]
    assert sockets.holders(inodes, [os.getpid()]) == []
    assert "-c" in sockets.command_line(proc.pid)
    assert sockets.listening_inodes(free_port()) == set()


def test_a_port_another_server_holds_is_refused_at_start(
    tmp_path: Path, foreign: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, proc = foreign
    server = ServerProcess(
        [sys.executable, "-c", SLOW_READY, "{port}"], port=port, log_path=tmp_path / "log"
    )
    with pytest.raises(ServerStartError, match=rf"port {port} is already in use by pid {proc.pid}"):
        server.start()
    assert server.returncode is None and not (tmp_path / "log").exists()  # never started


def test_an_answer_from_another_process_is_not_readiness(
    tmp_path: Path, foreign: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """The other server answers 200 at once; ours cannot bind and exits: the start fails
    with our exit status and who holds the port, instead of measuring the other one."""
    port, proc = foreign
    server = ServerProcess(
        [sys.executable, "-c", LATE_BINDER, "{port}"], port=port, log_path=tmp_path / "log"
    )
    server.port_given = False  # as if the port had been free when it was chosen
    with pytest.raises(ServerStartError) as info:
        server.start()
    text = str(info.value)
    assert "exited with status 1 before it answered" in text
    assert f"Port {port} is held by pid {proc.pid}" in text
    assert "bind failed" in text  # its log's tail


def test_a_second_interrupt_while_stopping_still_kills_everything(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    server = ServerProcess([sys.executable, "-c", stubborn], log_path=tmp_path / "log")
    server.probe = lambda url, timeout: (True, "HTTP 200")
    server.start()
    pid = server.pid
    popen = server._popen
    assert popen is not None
    waits = popen.wait

    def interrupted(timeout: float | None = None) -> int:
        popen.wait = waits  # type: ignore[method-assign]
        raise KeyboardInterrupt  # the user's second Ctrl-C, during the grace period

    popen.wait = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        server.stop(timeout_s=30)
    assert wait_for(lambda: gone(pid))


def test_workers_that_leave_the_process_group_are_stopped_too(tmp_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", ESCAPING], log_path=tmp_path / "log")
    server.probe = lambda url, timeout: (True, "HTTP 200")
    server.start()
    assert wait_for(lambda: has_escaped(tmp_path / "log"))
    assert len(server.own_pids()) == 2
    pids = server.own_pids()
    escaped = [p for p in pids if p != server.pid]
    assert os.getpgid(escaped[0]) != os.getpgid(server.pid)  # it left the group
    server.stop(timeout_s=1)
    assert all(wait_for(lambda p=p: gone(p)) for p in pids)


def test_the_watchdog_stops_the_server_when_the_test_process_is_killed(tmp_path: Path) -> None:
    """pytest killed with SIGKILL runs no teardown: the server's watchdog sees its pipe
    close and kills the server's group and its marked workers."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        from pytest_tpw.serving.process import ServerProcess
        log = Path({str(tmp_path / "log")!r})
        server = ServerProcess([sys.executable, "-c", {ESCAPING!r}], log_path=log)
        server.probe = lambda url, timeout: (True, "HTTP 200")
        server.start()
        while "up" not in (log.read_text().split() if log.exists() else []):
            time.sleep(0.05)
        print(" ".join(map(str, server.own_pids())), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=BOUND_S
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2
    assert all(wait_for(lambda p=p: gone(p)) for p in pids)


@pytest.mark.parametrize(
    ("code", "text"), [(0, "status 0"), (3, "status 3"), (-9, "signal SIGKILL (-9)")]
)
def test_exit_statuses_read_as_words(code: int, text: str) -> None:
    assert exit_text(code) == text
