"""Hardware key, software stack and git commit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_tpw.host import fingerprint
from pytest_tpw.host.fingerprint import git_commit, hardware_key, slug, software_stack


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("  Intel(R) Xeon(R) Gold 6338 ", "intel-r-xeon-r-gold-6338"),
        ("sim 300W", "sim-300w"),
        ("a__b--c", "a-b-c"),  # runs of separators collapse to one dash
        ("!!!", "unknown"),
        ("", "unknown"),
    ],
)
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected


def test_hardware_key_counts_models() -> None:
    assert hardware_key(["NVIDIA H100 80GB HBM3"]) == "nvidia-h100-80gb-hbm3-x1"
    assert hardware_key(["NVIDIA A100"] * 4) == "nvidia-a100-x4"


def test_hardware_key_sorts_and_joins_distinct_models() -> None:
    # two "b gpu" and one "a gpu": sorted, each with its count, joined by '+'
    assert hardware_key(["b gpu", "a gpu", "b gpu"]) == "a-gpu-x1+b-gpu-x2"
    # the order the devices come in does not change the key
    assert hardware_key(["a gpu", "b gpu", "b gpu"]) == hardware_key(["b gpu", "b gpu", "a gpu"])


def test_hardware_key_accepts_any_iterable() -> None:
    assert hardware_key(iter(("x", "x"))) == "x-x2"


def test_hardware_key_none() -> None:
    assert hardware_key([]) == "unknown-x0"


def test_software_stack_keys() -> None:
    stack = software_stack({"driver_version": "550.54", "cuda_driver_version": "12.4"})
    for key in (
        "python",
        "implementation",
        "kernel",
        "os",
        "machine",
        "cuda_runtime",
        "driver",
        "cuda_driver",
        "numpy",
        "pytest",
        "torch",
    ):
        assert key in stack
    assert stack["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert stack["driver"] == "550.54"
    assert stack["cuda_driver"] == "12.4"
    assert isinstance(stack["kernel"], str) and stack["kernel"]
    assert isinstance(stack["os"], str) and stack["os"]
    json.dumps(stack)  # serialisable
    assert software_stack()["driver"] is None


def test_software_stack_never_imports_torch() -> None:
    code = (
        "import json, sys\n"
        "from pytest_tpw.host import fingerprint\n"
        "before = 'torch' in sys.modules\n"
        "stack = fingerprint.software_stack()\n"
        "print(json.dumps([before, 'torch' in sys.modules, stack['cuda_runtime']]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False, None]


def test_cuda_runtime_read_only_from_an_imported_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    class Version:
        cuda = "12.1"

    class FakeTorch:
        version = Version

    monkeypatch.setitem(sys.modules, "torch", FakeTorch)
    assert software_stack()["cuda_runtime"] == "12.1"
    monkeypatch.delitem(sys.modules, "torch")
    assert fingerprint._cuda_runtime() is None


def _isolate_git(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Keep git from finding a repository above ``root`` or using this checkout's env."""
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(root.parent))


def test_git_commit_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_git(monkeypatch, tmp_path)
    assert git_commit(tmp_path) is None


def test_git_commit_when_git_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH -> OSError -> None
    assert git_commit(tmp_path) is None


def test_git_commit_on_a_missing_directory(tmp_path: Path) -> None:
    assert git_commit(tmp_path / "nowhere") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_in_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_git(monkeypatch, tmp_path)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    assert git_commit(tmp_path) is None  # a repository without commits has no HEAD
    (tmp_path / "f.txt").write_text("x", encoding="utf-8")
    git("add", "f.txt")
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "one")
    commit = git_commit(tmp_path)
    assert commit is not None
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit == git("rev-parse", "HEAD")
    # a sub-folder of the repository knows the same commit
    (tmp_path / "sub").mkdir()
    assert git_commit(tmp_path / "sub") == commit


# -- CPUs in the key ------------------------------------------------------------------------


def _cgroup(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A fake /proc/self (``0::own``) and cgroup v2 tree with ``cpu.max`` files by folder."""
    proc = tmp_path / "proc-self"
    proc.mkdir()
    (proc / "cgroup").write_text(f"0::{own}\n", encoding="utf-8")
    root = tmp_path / "cgroup"
    root.mkdir()
    for folder, text in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text + "\n", encoding="utf-8")
    return proc, root


def test_usable_cpus_narrows_the_machine_to_affinity_and_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), False)
    none = tmp_path / "no-proc"
    assert fingerprint.usable_cpus(none, tmp_path / "no-cgroup") == 16  # the cpuset
    # docker --cpus 3.5 on a parent cgroup, no quota on the process's own: 4 CPUs
    proc, root = _cgroup(tmp_path, "/pod/ctr", {"pod": "350000 100000", "pod/ctr": "max 100000"})
    assert fingerprint.usable_cpus(proc, root) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), False)
    assert fingerprint.usable_cpus(proc, root) == 2  # the smallest of the three


def test_usable_cpus_is_the_machine_without_affinity_or_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    proc, root = _cgroup(tmp_path, "/", {".": "max 100000"})
    assert fingerprint.usable_cpus(proc, root) == 8


def test_cpu_keys_tell_runners_of_different_sizes_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "usable_cpus", lambda: 4)
    small = hardware_key([f"{fingerprint.cpu_hardware('AMD EPYC')} cpu-estimate"])
    monkeypatch.setattr(fingerprint, "usable_cpus", lambda: 64)
    large = hardware_key([f"{fingerprint.cpu_hardware('AMD EPYC')} cpu-estimate"])
    assert (small, large) == ("amd-epyc-4c-cpu-estimate-x1", "amd-epyc-64c-cpu-estimate-x1")
    assert fingerprint.cpu_hardware("Intel Xeon", 16) == "Intel Xeon 16c"


def test_gpu_keys_count_the_boards() -> None:
    assert hardware_key(["NVIDIA H100 80GB HBM3"] * 2) == "nvidia-h100-80gb-hbm3-x2"
    assert hardware_key(["NVIDIA H100 80GB HBM3"] * 8) == "nvidia-h100-80gb-hbm3-x8"


# -- devices' settings in the stack -----------------------------------------------------------


def test_the_devices_power_limit_and_clocks_policy_are_in_the_stack() -> None:
    one = {"name": "H100", "power_limit_w": 700.0, "clocks_policy": "default application clocks"}
    stack = software_stack({"devices": [one, dict(one)]})
    assert stack["power_limit_w"] == "700"  # two devices that agree: said once
    assert stack["clocks_policy"] == "default application clocks"
    capped = {**one, "power_limit_w": 500.0}
    assert software_stack({"devices": [one, capped]})["power_limit_w"] == "700, 500"
    unknown = {"name": "H100", "power_limit_w": None}
    assert software_stack({"devices": [one, unknown]})["power_limit_w"] == "700, ?"
    # a sensor whose devices say neither (or without devices) adds no entry
    assert "power_limit_w" not in software_stack({"devices": [{"name": "x"}]})
    assert "clocks_policy" not in software_stack({})
    assert set(fingerprint.device_settings({"devices": [one]})) == {
        "power_limit_w",
        "clocks_policy",
    }


def test_the_store_compares_the_same_device_settings() -> None:
    from pytest_tpw.store import baseline

    assert baseline.DEVICE_SETTINGS == fingerprint.DEVICE_SETTINGS
