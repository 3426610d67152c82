"""Nothing lost, nothing hangs: CI cancellation, stray ranks, reruns, killed xdist workers."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.inner_code import BUSY_WORK

FAST = ("-o", "tpw_sim_noise=0.01", "--tpw-rounds", "3", "-p", "no:cacheprovider")

CANCELLED = (
    BUSY_WORK
    + """
import os, signal

def test_a_finished(tpw):
    tpw(work, tokens=per_us)

def test_b_cancelled(tpw):
    os.kill(os.getpid(), signal.SIGTERM)  # CI cancels the job here

def test_c_never_reached(tpw):
    tpw(work, tokens=per_us)
"""
)


def baseline(pytester: pytest.Pytester) -> dict[str, object]:
    doc = json.loads((pytester.path / ".tpw" / "sim-x1.json").read_text(encoding="utf-8"))
    measurements: dict[str, object] = doc["measurements"]
    return measurements


def test_sigterm_keeps_the_finished_measurements_as_ctrl_c_does(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makepyfile(test_cancel=CANCELLED)
    result = tpwtester.runpytest_subprocess("--tpw-update", "--tpw-json", "out.json", *FAST)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 measurement(s) written to *sim-x1.json (interrupted*"])
    assert list(baseline(tpwtester)) == ["test_cancel.py::test_a_finished"]
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    assert list(doc["measurements"]) == ["test_cancel.py::test_a_finished"]
    assert not [p for p in (tpwtester.path / ".tpw").iterdir() if p.name.endswith(".tmp")]


def test_a_stray_rank_variable_does_not_silence_the_run(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_rank=BUSY_WORK + "\ndef test_x(tpw):\n    tpw(work, tokens=per_us)\n")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = tpwtester.runpytest_subprocess("--tpw-update", "--tpw-json", "out.json", *FAST)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*tokens per joule*",
            "*RANK=1 is set but no torch.distributed process group is initialised*",
            "*1 measurement(s) written to*",
        ]
    )
    assert (tpwtester.path / "out.json").exists()
    assert list(baseline(tpwtester)) == ["test_rank.py::test_x"]


FLAKY = (
    BUSY_WORK
    + """
import os

def test_flaky(tpw):
    tpw(work, tokens=per_us)
    marks = [name for name in os.listdir(".") if name.startswith("ran.")]
    open(f"ran.{len(marks)}", "w").close()
    assert marks, "fails the first time only"

def test_steady(tpw):
    tpw(work, tokens=per_us)
"""
)


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_rerunfailures") is None, reason="needs pytest-rerunfailures"
)
def test_reruns_work_with_a_baseline_and_a_rerun_is_a_new_measurement(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makepyfile(test_flaky=FLAKY)
    (tpwtester.path / "ran.0").write_text("", encoding="utf-8")  # passes while recording
    tpwtester.runpytest("--tpw-update", *FAST).assert_outcomes(passed=2)
    for mark in tpwtester.path.glob("ran.*"):
        mark.unlink()
    result = tpwtester.runpytest("--tpw", "--reruns", "2", "--tpw-json", "out.json", *FAST)
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("rerun"), outcomes.get("failed")) == (2, 1, None)
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    flaky = doc["measurements"]["test_flaky.py::test_flaky"]
    assert len(flaky["samples"]) == 3  # the rerun's own windows, not both runs' together
    assert flaky["verdict"] in ("UNCHANGED", "IMPROVED", "MINOR_REGRESSION", "INCONCLUSIVE")


KILLED = (
    BUSY_WORK
    + """
import os, signal
import pytest

@pytest.mark.parametrize("i", range(4))
def test_measured(tpw, i):
    tpw(work, tokens=per_us)

def test_z_killed():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies: kill -9
"""
)


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_a_killed_xdist_worker_loses_only_what_it_was_measuring(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makepyfile(test_killed=KILLED)
    result = tpwtester.runpytest_subprocess(
        "-n", "1", "--max-worker-restart", "0", "--tpw", "--tpw-json", "out.json", *FAST
    )
    result.assert_outcomes(passed=4, failed=1)
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    assert sorted(doc["measurements"]) == [f"test_killed.py::test_measured[{i}]" for i in range(4)]
    result.stdout.fnmatch_lines(["*worker died while running test_killed.py::test_z_killed*"])

    # with a baseline the controller holds the compared tests for the run's decision: the
    # worker's death neither loses them nor hangs the run; they are logged at the end
    tpwtester.runpytest("--tpw-update", "-k", "measured", *FAST).assert_outcomes(passed=4)
    result = tpwtester.runpytest_subprocess(
        "-n", "1", "--max-worker-restart", "0", "--tpw", "--tpw-json", "held.json", *FAST
    )
    result.assert_outcomes(passed=4, failed=1)
    doc = json.loads((tpwtester.path / "held.json").read_text(encoding="utf-8"))
    found = {key: m["verdict"] for key, m in doc["measurements"].items()}
    assert sorted(found) == [f"test_killed.py::test_measured[{i}]" for i in range(4)]
    assert "NO_BASELINE" not in found.values() and "REGRESSED" not in found.values(), found
    result.stdout.fnmatch_lines(["*worker died while running test_killed.py::test_z_killed*"])


THREADS_CONFTEST = """
import sys, types
# a PyTorch that would start 64 threads on this small machine
sys.modules["torch"] = types.SimpleNamespace(get_num_threads=lambda: 64)
"""


def test_pytorch_threads_beyond_the_free_cores_are_pointed_out_once(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makeconftest(THREADS_CONFTEST)
    tpwtester.makepyfile(
        test_threads=BUSY_WORK
        + """
def test_a(tpw):
    tpw(work, tokens=per_us)

def test_b(tpw):
    tpw(work, tokens=per_us)
"""
    )
    result = tpwtester.runpytest(
        "--tpw",
        "--tpw-sensor=cpu-estimate",
        *FAST,
        "-W",
        "always::pytest_tpw.TpwMeasurementWarning",
    )
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert text.count("torch.set_num_threads") == 1, text
    assert "64" in text.split("torch.set_num_threads")[0].rsplit("TpwMeasurementWarning", 1)[-1]
