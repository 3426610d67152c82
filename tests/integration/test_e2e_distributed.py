"""torch.distributed end to end: two pytest processes as two gloo ranks on the CPU.

Each rank runs the same suite with the sim sensor (300 W each); a window's tokens and
joules are summed over the ranks, rank 0 reports and writes, rank 1 stays quiet.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.host.locks import LOCK_DIR_ENV
from tests.conftest import SIM_INI

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="needs torch (gloo backend)"
)

# The process group lives as long as the pytest session. A short collective timeout turns
# a hang into an error.
GLOO_CONFTEST = """
import datetime
import os

import torch.distributed as dist

def pytest_configure(config):
    seconds = float(os.environ.get("TPW_GLOO_TIMEOUT", "60"))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=seconds))

def pytest_unconfigure(config):
    if dist.is_initialized():
        dist.destroy_process_group()
"""

# rank r produces (r + 1) * 10 tokens per window: 30 per window over both ranks
RANK_TEST = """
import os
import time

def test_ranks(tpw):
    rank = int(os.environ["RANK"])
    for w in tpw.rounds():
        with w:
            time.sleep(0.2)
            w.add_tokens((rank + 1) * 10)
    assert tpw.result.n == 3
    assert tpw.result.samples == tuple(s.tokens_per_joule for s in tpw.measurements[0].samples)
    assert all(s.tokens == 30 for s in tpw.measurements[0].samples)
    assert tpw.rank == rank
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    root: Path,
    extra_env: dict[str, str] | None = None,
    separate_locks: bool = True,
    timeout: float = 180,
) -> list[tuple[int, str]]:
    """Run the suite as two ranks, each in its own folder; (exit code, output) per rank."""
    port = free_port()
    procs = []
    for rank in range(2):
        folder = root / f"rank{rank}"
        folder.mkdir()
        (folder / "pytest.ini").write_text(SIM_INI, encoding="utf-8")
        (folder / "conftest.py").write_text(GLOO_CONFTEST, encoding="utf-8")
        (folder / "test_ranks.py").write_text(RANK_TEST, encoding="utf-8")
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        }
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
            env.pop(name, None)
        if separate_locks:
            env[LOCK_DIR_ENV] = str(root / f"locks{rank}")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "no:xdist",
                    "--tpw",
                    "--tpw-update",
                    "--tpw-rounds",
                    "3",
                    "--tpw-json",
                    str(root / f"out-rank{rank}.json"),
                ],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return [(proc.returncode, out) for proc, out in zip(procs, outputs, strict=True)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str]]]:
    root = tmp_path_factory.mktemp("ranks")
    return root, launch(root)


def test_both_ranks_pass(two_ranks: tuple[Path, list[tuple[int, str]]]) -> None:
    _, runs = two_ranks
    for rank, (code, output) in enumerate(runs):
        assert code == 0, f"rank {rank}:\n{output}"
        assert "1 passed" in output


def test_rank_zero_reports_and_rank_one_stays_quiet(
    two_ranks: tuple[Path, list[tuple[int, str]]],
) -> None:
    root, runs = two_ranks
    (_, out0), (_, out1) = runs
    assert out0.count("tokens per joule ==") == 1, out0
    assert "test_ranks.py::test_ranks " in out0
    assert "1 measurement(s) written to" in out0
    assert "tokens per joule" not in out1, out1
    assert "written to" not in out1
    # rank 0 alone wrote the JSON and the baseline
    assert (root / "out-rank0.json").exists()
    assert not (root / "out-rank1.json").exists()
    assert (root / "rank0" / ".tpw" / "sim-x1.json").exists()
    assert not (root / "rank1" / ".tpw").exists()


def test_rank_zero_records_the_sums_over_ranks(
    two_ranks: tuple[Path, list[tuple[int, str]]],
) -> None:
    root, _ = two_ranks
    doc: dict[str, Any] = json.loads((root / "out-rank0.json").read_text(encoding="utf-8"))
    entry = doc["measurements"]["test_ranks.py::test_ranks"]
    samples = entry["samples"]
    assert len(samples) == 3
    for s in samples:
        assert s["tokens"] == 10 + 20
        # two sim sensors of 300 W each, over windows aligned by barriers
        assert s["joules"] / s["seconds"] == pytest.approx(600.0, rel=0.10)
    stored = json.loads((root / "rank0" / ".tpw" / "sim-x1.json").read_text(encoding="utf-8"))
    (session,) = stored["measurements"]["test_ranks.py::test_ranks"]["sessions"]
    assert [t for t, _, _ in session["samples"]] == [30, 30, 30]


def test_two_ranks_sharing_the_host_lock_folder_finish(tmp_path: Path) -> None:
    # the same lock folder for both ranks, as on any host without PYTEST_TPW_LOCK_DIR; a
    # deadlock ends when gloo's collective timeout (5 s here) fails the waiting rank
    runs = launch(
        tmp_path,
        {LOCK_DIR_ENV: str(tmp_path / "locks"), "TPW_GLOO_TIMEOUT": "5"},
        separate_locks=False,
        timeout=120,
    )
    for rank, (code, output) in enumerate(runs):
        assert code == 0, f"rank {rank}:\n{output[-3000:]}"
