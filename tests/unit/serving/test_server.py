"""``ServerProcess``: readiness, start failures, stopping, and GPU discovery through NVML."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from pytest_tpw.errors import TpwError
from pytest_tpw.sensors.nvml import gpu_processes
from pytest_tpw.serving.process import ServerProcess, ServerStartError, free_port
from tests.fakes.fake_nvml_processes import FakeNvmlWithProcesses
from tests.fakes.fake_pynvml import NVML_ERROR_DRIVER_NOT_LOADED, Faults

#: A stdlib HTTP server that answers 503 to its first two readiness polls, then 200.
SLOW_READY = r"""
import http.server, sys
polls = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global polls
        polls += 1
        ok = self.path == "/v1/models" and polls > 2
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        print("poll", self.path, flush=True)
print("starting on", sys.argv[1], flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

#: Ignores SIGTERM and starts a grandchild in its process group.
STUBBORN = r"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("stubborn up", flush=True)
time.sleep(300)
"""

BOUND_S = 60.0  # generous bound of every real wait: the host is shared


def gone(pid: int) -> bool:
    """The process no longer exists, or is a zombie nobody reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_for(predicate: object, bound_s: float = BOUND_S) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# -- configuration -----------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_port_placeholder_and_urls(tmp_path: Path) -> None:
    server = ServerProcess(
        "serve --port {port} --name 'my model'",
        port=8123,
        env={"PORT": "{port}"},
        log_path=tmp_path / "log",
    )
    assert server.argv == ["serve", "--port", "8123", "--name", "my model"]
    assert server.env == {"PORT": "8123"}
    assert server.base_url == "http://127.0.0.1:8123/v1"
    given = ServerProcess(["x"], url="http://localhost:9000/v1/", log_path=tmp_path / "log")
    assert given.base_url == "http://localhost:9000/v1" and given.port == 9000
    chosen = ServerProcess(["x", "{port}"], log_path=tmp_path / "log")
    assert chosen.port is not None and chosen.argv == ["x", str(chosen.port)]
    with pytest.raises(RuntimeError, match="start"):
        _ = chosen.pid


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://example.com", "ftp://127.0.0.1"])
def test_only_local_servers(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="server url"):
        ServerProcess(["x"], url=url, log_path=tmp_path / "log")


def test_empty_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        ServerProcess([], log_path=tmp_path / "log")


# -- start -----------------------------------------------------------------------------------------


def test_ready_after_polls_then_stopped(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "server.log"
    server = ServerProcess(
        [sys.executable, "-c", SLOW_READY, "{port}"], startup_timeout_s=BOUND_S, log_path=log
    )
    with server:
        assert server.pid in server.process_tree_pids()
        assert server.returncode is None
        assert "starting on" in server.log_tail(50)
        assert server.log_tail(50).count("poll /v1/models") == 3  # 503, 503, then 200
        assert server.log_tail(1).startswith("poll")
        pid = server.pid
    assert server.returncode == -signal.SIGTERM
    assert wait_for(lambda: gone(pid))
    assert server.process_tree_pids() == []
    assert server.stop() == -signal.SIGTERM  # idempotent: same status, nothing sent
    assert server.log_tail(0) == ""


def test_exits_at_once_gives_the_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('loading...'); print('error: no such model', flush=True); sys.exit(3)"
    server = ServerProcess([sys.executable, "-c", code], log_path=tmp_path / "log")
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "exited with status 3" in message
    assert "error: no such model" in message and str(tmp_path / "log") in message
    assert isinstance(info.value, TpwError)


def test_bad_command(tmp_path: Path) -> None:
    server = ServerProcess(["/nonexistent/tpw-server-binary"], log_path=tmp_path / "log")
    with pytest.raises(ServerStartError, match="cannot run server command"):
        server.start()
    assert server.stop() is None  # never started: nothing to stop


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_timeout_names_the_last_poll_and_stops_the_process(tmp_path: Path) -> None:
    fake = FakeTime()
    code = "import time; print('still loading weights', flush=True); time.sleep(300)"
    server = ServerProcess(
        [sys.executable, "-c", code], startup_timeout_s=20.0, log_path=tmp_path / "log"
    )
    server.clock, server.sleep = fake.clock, fake.sleep
    server.probe = lambda url, timeout: (False, "HTTP 503")
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "within 20 s" in message and "HTTP 503" in message and "/v1/models" in message
    assert f"Last lines of {tmp_path / 'log'}" in message
    assert server.returncode is not None  # stopped on failure
    # backoff: pauses grow by 1.5x from poll_first_s, capped at poll_max_s, and stop at 20 s
    assert fake.sleeps[0] == pytest.approx(server.poll_first_s)
    assert fake.sleeps[1] == pytest.approx(server.poll_first_s * 1.5)
    assert max(fake.sleeps) == pytest.approx(server.poll_max_s)
    assert sum(fake.sleeps) == pytest.approx(20.0)


def test_stop_kills_what_ignores_sigterm_and_the_whole_group(tmp_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", STUBBORN], log_path=tmp_path / "log")
    server.probe = lambda url, timeout: (True, "HTTP 200")
    server.start()
    try:
        assert wait_for(lambda: len(server.process_tree_pids()) == 2)
        assert wait_for(lambda: "stubborn up" in server.log_tail(5))
        pids = server.process_tree_pids()
    finally:
        status = server.stop(timeout_s=0.5)
    assert status == -signal.SIGKILL
    assert all(wait_for(lambda p=p: gone(p)) for p in pids)


# -- GPUs --------------------------------------------------------------------------------------


UUID0 = "GPU-3f2a9c1e-7b4d-4e8a-9c61-0d2f5b7a8e13"
UUID1 = "GPU-b81d04c7-52e9-4f3b-a6d0-e4c9317f2b58"


def test_gpu_processes_from_compute_and_graphics_lists() -> None:
    fake = FakeNvmlWithProcesses(compute={0: [100, 7]}, graphics={1: [101]})
    assert gpu_processes(fake) == {UUID0: [7, 100], UUID1: [101]}
    assert fake.init_count == 0  # shut NVML down again


@pytest.fixture
def tree_server(tmp_path: Path) -> ServerProcess:
    """A ServerProcess whose tree is pids 100 and 101 (no process started)."""
    server = ServerProcess(["unused"], port=1, log_path=tmp_path / "log")
    server.process_tree_pids = lambda: [100, 101]  # type: ignore[method-assign]
    return server


def test_gpu_uuids_and_other_processes(
    tree_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvmlWithProcesses(compute={0: [100, 7], 1: [55]}, graphics={0: [8]})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert tree_server.gpu_uuids() == [UUID0]  # GPU 1 holds only a stranger
    assert tree_server.other_gpu_processes() == {UUID0: [7, 8]}
    assert tree_server.other_gpu_processes(exclude=[7]) == {UUID0: [8]}
    assert fake.calls["nvmlDeviceGetGraphicsRunningProcesses"] > 0


def test_worker_on_a_second_gpu(
    tree_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvmlWithProcesses(compute={0: [100], 1: [101]})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert tree_server.gpu_uuids() == [UUID0, UUID1]
    assert tree_server.other_gpu_processes() == {}


def test_no_nvml_means_no_gpus(tree_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert tree_server.gpu_uuids() == []
    assert tree_server.other_gpu_processes() == {}
    broken = FakeNvmlWithProcesses(faults=Faults(init_error=NVML_ERROR_DRIVER_NOT_LOADED))
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert tree_server.gpu_uuids() == []


def test_openai_client_points_at_the_server(tree_server: ServerProcess) -> None:
    pytest.importorskip("openai")
    client = tree_server.openai_client()
    assert str(client.base_url).rstrip("/") == tree_server.base_url


def test_process_tree_before_start_is_empty(tmp_path: Path) -> None:
    server = ServerProcess(["x"], port=1, log_path=tmp_path / "log")
    assert server.process_tree_pids() == [] and server.returncode is None
    assert server.log_tail() == ""  # no log file yet
