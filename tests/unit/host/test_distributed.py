"""torch.distributed: windows aligned over ranks, tokens and joules summed (gloo, CPU)."""

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

from pytest_tpw.host import distributed

# torch is only ever imported in subprocesses: this suite's own process stays without it
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- without a process group --------------------------------------------------------------


def test_current_is_none_without_torch_and_never_imports_it() -> None:
    code = (
        "import sys\n"
        "from pytest_tpw.host import distributed\n"
        "assert distributed.current() is None\n"
        "assert 'torch' not in sys.modules, 'current() imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_current_is_none_when_torch_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "torch.distributed", raising=False)
    assert distributed.current() is None


@needs_torch
def test_current_is_none_without_a_group_of_several_ranks(tmp_path: Path) -> None:
    """torch loaded but no group initialised, then a group of one rank: nothing to align.

    In a subprocess, so that this suite's process never loads torch for the other tests.
    """
    code = (
        "import datetime, sys\n"
        "import torch, torch.distributed as dist\n"
        "from pytest_tpw.host import distributed\n"
        "assert not dist.is_initialized()\n"
        "assert distributed.current() is None\n"
        "store = dist.FileStore(sys.argv[1], 1)\n"
        "dist.init_process_group('gloo', store=store, rank=0, world_size=1,\n"
        "                        timeout=datetime.timedelta(seconds=60))\n"
        "try:\n"
        "    assert dist.is_initialized()\n"
        "    assert distributed.current() is None\n"
        "finally:\n"
        "    dist.destroy_process_group()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("value", "rank"), [("0", 0), ("1", 1), ("12", 12), ("", None), ("x", None), ("-1", None)]
)
def test_env_rank(monkeypatch: pytest.MonkeyPatch, value: str, rank: int | None) -> None:
    monkeypatch.setenv("RANK", value)
    assert distributed.env_rank() == rank


def test_env_rank_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.env_rank() is None


# -- two ranks under gloo -----------------------------------------------------------------

# Each rank: a FakeSensor on a FakeClock drawing a rank-specific power (rank r's windows last
# r+1 seconds: 2 J on rank 0, 5 J on rank 1), the loop form with (r+1)*10 tokens per window.
# A second measurement has rank 1 return one invalid window: both ranks must discard it.
RANK_SCRIPT = r"""
import datetime, json, os, sys
import torch.distributed as dist
from pytest_tpw.host import distributed
from pytest_tpw.testing import FakeClock, FakeSensor, make_meter

rank = int(os.environ["RANK"])
SECONDS = float(rank + 1)
JOULES = {0: 2.0, 1: 5.0}

def measure(invalid=()):
    clock = FakeClock()
    sensor = FakeSensor(clock, watts=JOULES[rank] / SECONDS, domains=("s:0",),
                        invalid=invalid)
    meter = make_meter(sensor, clock=clock, rounds=3, warmup=1,
                       nodeid="test_x.py::test_ranks")
    for w in meter.rounds():
        with w:
            clock.advance(SECONDS)
            w.add_tokens((rank + 1) * 10)
    meter.check_finished()
    (m,) = meter.measurements
    return {"rank": meter.rank, "complete": m.complete, "warnings": m.warnings,
            "sensor_windows": sensor.ends,
            "samples": [s.to_dict() for s in m.samples]}

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
try:
    group = distributed.current()
    out = {"group": None if group is None else [group.rank, group.world_size],
           "plain": measure(),
           "invalid": measure(invalid=[False, False, rank == 1])}
finally:
    dist.destroy_process_group()
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def run_ranks(tmp_path: Path, script: str, world: int = 2) -> list[dict[str, Any]]:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch")
    path = tmp_path / "rank.py"
    path.write_text(script, encoding="utf-8")
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(path), str(tmp_path / f"rank{rank}.json")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for rank, (proc, output) in enumerate(zip(procs, outputs, strict=False)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{output}"
    return [
        json.loads((tmp_path / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(world)
    ]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_ranks(tmp_path_factory.mktemp("gloo"), RANK_SCRIPT)


def test_gloo_group_is_seen_by_current(two_ranks: list[dict[str, Any]]) -> None:
    assert [r["group"] for r in two_ranks] == [[0, 2], [1, 2]]


def test_two_ranks_sum_tokens_and_joules_and_take_the_longest_seconds(
    two_ranks: list[dict[str, Any]],
) -> None:
    for rank, out in enumerate(two_ranks):
        plain = out["plain"]
        assert plain["rank"] == rank
        assert plain["complete"]
        assert plain["sensor_windows"] == 4  # one warm-up, three recorded
        samples = plain["samples"]
        assert len(samples) == 3
        for s in samples:
            assert s["tokens"] == 10 + 20
            assert s["joules"] == pytest.approx(2.0 + 5.0)
            assert s["seconds"] == pytest.approx(2.0)  # rank 1's windows are the longer
            assert s["tokens_per_joule"] == pytest.approx(30 / 7.0)
            # each rank keeps its own domains, named by rank
            assert list(s["domains"]) == [f"rank{rank}:s:0"]
            assert s["domains"][f"rank{rank}:s:0"] == pytest.approx({0: 2.0, 1: 5.0}[rank])


def test_both_ranks_hold_the_same_samples(two_ranks: list[dict[str, Any]]) -> None:
    def figures(out: dict[str, Any], which: str) -> list[tuple[int, float, float]]:
        return [(s["tokens"], s["joules"], s["seconds"]) for s in out[which]["samples"]]

    rank0, rank1 = two_ranks
    assert figures(rank0, "plain") == figures(rank1, "plain")
    assert figures(rank0, "invalid") == figures(rank1, "invalid")


def test_a_window_invalid_on_one_rank_is_discarded_on_every_rank(
    two_ranks: list[dict[str, Any]],
) -> None:
    rank0, rank1 = (out["invalid"] for out in two_ranks)
    for out in (rank0, rank1):
        assert out["complete"]
        assert len(out["samples"]) == 3
        assert out["sensor_windows"] == 5  # the discarded window was run again, on both
        assert all(s["tokens"] == 30 for s in out["samples"])
    assert any("counter went backwards" in w for w in rank1["warnings"]), rank1["warnings"]
    warnings0 = rank0["warnings"]
    assert any("another rank's window was invalid" in w for w in warnings0), warnings0


@pytest.mark.parametrize(
    ("host_wide", "local_rank", "expected"),
    [
        (True, "0", 12.5),  # the host's first rank reports the host's counters
        (True, "1", 0.0),  # the others would count the same package energy again
        (True, None, 12.5),  # no launcher: a single process
        (False, "1", 12.5),  # its own GPU (NVML) or its own CPU time: always its own
    ],
)
def test_host_wide_joules_are_counted_once_per_host(
    host_wide: bool, local_rank: str | None, expected: float
) -> None:
    from pytest_tpw.host.distributed import counted_joules

    env = {} if local_rank is None else {"LOCAL_RANK": local_rank}
    assert counted_joules(12.5, host_wide, env) == expected
