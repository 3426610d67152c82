"""pytest-xdist end to end: workers measure, the controller merges, reports and writes.

One suite of six measured tests (sim sensor) is run serially (``-n 0``), with xdist
disabled (``-p no:xdist``) and with two workers (``-n 2``), each in a folder of its own:
the baselines and the ``--tpw-json`` document hold the same content, written once, by the
controller. Then GPU pinning with ``--tpw-gpus-per-worker``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIM_INI
from tests.inner_code import BUSY_WORK

pytestmark = [
    pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning"),
    pytest.mark.usefixtures("_not_a_worker"),
]

# ~2 ms of busy work per call, one token per microsecond it really took: CPU contention
# between two workers on a small machine cannot pass for a change in tokens per joule.
SUITE = (
    BUSY_WORK
    + """
@pytest.mark.parametrize("i", range(5))
def test_call(tpw, i):
    tpw(work, tokens=per_us)

def test_loop(tpw):
    for w in tpw.rounds():
        with w:
            for _ in range(6):
                w.add_tokens(per_us(work()))
"""
)

KEYS = {*(f"test_suite.py::test_call[{i}]" for i in range(5)), "test_suite.py::test_loop"}

# On a worker, after the plugin's own sessionfinish (and before xdist sends the worker's
# output to the controller): what the worker left on disk and what it sends.
PROBE = """
import json
import os
from pathlib import Path

import pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    config = session.config
    probe = os.environ.get("TPW_PROBE_DIR")
    if probe is None or not hasattr(config, "workerinput"):
        return
    payload = config.workeroutput.get("pytest_tpw", {})
    Path(probe, config.workerinput["workerid"] + ".json").write_text(json.dumps({
        "measurements": [m["nodeid"] for m in payload.get("measurements", [])],
        "json_written": Path("out.json").exists(),
        "baselines_written": Path(".tpw").exists(),
    }))
"""

UPDATE = ("--tpw", "--tpw-update", "--tpw-rounds", "3", "--tpw-json", "out.json")
HEADING = re.compile(r"^=+ tokens per joule =+$")


@pytest.fixture
def _not_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """When this suite itself runs under xdist, the inner runs must not think so."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


def project(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "pytest.ini").write_text(SIM_INI, encoding="utf-8")
    (folder / "conftest.py").write_text(PROBE, encoding="utf-8")
    (folder / "test_suite.py").write_text(SUITE, encoding="utf-8")
    return folder


def headings(result: pytest.RunResult) -> int:
    return sum(1 for line in result.outlines if HEADING.match(line))


def structure(folder: Path) -> dict[str, Any]:
    """What must not depend on how the suite was run: files, keys, sessions, samples."""
    tpw_files = sorted(p.name for p in (folder / ".tpw").iterdir())
    stored = json.loads((folder / ".tpw" / "sim-x1.json").read_text(encoding="utf-8"))
    doc = json.loads((folder / "out.json").read_text(encoding="utf-8"))
    return {
        "tpw_files": tpw_files,
        "json_files": sorted(p.name for p in folder.glob("*.json")),
        "hardware_key": stored["hardware_key"],
        "hardware": stored["hardware"],
        "baseline": {
            key: [
                (
                    len(s["samples"]),
                    s["sensor"],
                    s["provenance"],
                    all(t > 0 and j > 0 for t, j, _ in s["samples"]),
                )
                for s in entry["sessions"]
            ]
            for key, entry in stored["measurements"].items()
        },
        "json": {
            key: (len(entry["samples"]), entry["sensor"])
            for key, entry in doc["measurements"].items()
        },
    }


def test_serial_two_workers_and_no_xdist_agree_and_a_shared_shift_fails_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("TPW_PROBE_DIR", str(probe))
    results = {}
    for name, args, in_subprocess in [
        ("serial", ("-n", "0"), False),
        ("no-xdist", ("-p", "no:xdist"), False),
        ("workers", ("-n", "2"), True),
    ]:
        monkeypatch.chdir(project(pytester.path, name))
        run = pytester.runpytest_subprocess if in_subprocess else pytester.runpytest
        results[name] = result = run(*UPDATE, *args)
        result.assert_outcomes(passed=6)
        assert result.ret == pytest.ExitCode.OK
        # the report is printed once, by the process that ran the session
        assert headings(result) == 1, result.outlines
        result.stdout.fnmatch_lines(["6 measurement(s) written to *sim-x1.json"])

    shapes = {name: structure(pytester.path / name) for name in results}
    serial = shapes["serial"]
    assert serial["tpw_files"] == ["sim-x1.json"]
    assert serial["json_files"] == ["out.json"]
    assert set(serial["baseline"]) == KEYS
    assert set(serial["json"]) == KEYS
    assert all(
        sessions == [(3, "sim", "simulated", True)] for sessions in serial["baseline"].values()
    )
    assert shapes["no-xdist"] == serial
    assert shapes["workers"] == serial

    # the -n 2 run really ran on two workers, which measured, sent it all, and wrote nothing
    assert "2 workers [6 items]" in results["workers"].stdout.str()
    sent = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in probe.iterdir()}
    assert set(sent) == {"gw0", "gw1"}
    assert sorted(n for s in sent.values() for n in s["measurements"]) == sorted(KEYS)
    assert not any(s["json_written"] or s["baselines_written"] for s in sent.values())

    # then, under -n 2 against that baseline: 340 W instead of 300 W for the same work is
    # -12 % tokens per joule on every test at once. The controller decides the workers'
    # comparisons with the whole run: one run-wide finding, no test fails for it
    folder = pytester.path / "workers"
    before = (folder / ".tpw" / "sim-x1.json").read_bytes()
    result = pytester.runpytest_subprocess(
        "--tpw",
        "-n",
        "2",
        "--tpw-rounds",
        "5",
        "-o",
        "tpw_sim_watts=340",
        "--tpw-json",
        "shifted.json",
    )
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.OK
    assert headings(result) == 1
    lines = [line for line in result.outlines if line.startswith("run-wide: ")]
    assert len(lines) == 1 and " ENVIRONMENT_ANOMALY" in lines[0], lines
    assert "decided per test" not in result.stdout.str()
    # progress in a CI log: a line per measurement as its worker finishes it, held ones said
    shown = [line for line in result.outlines if line.startswith("tpw [")]
    assert len(shown) == 6, result.outlines
    assert all("tokens/J, n=5, held for the run's verdict" in line for line in shown), shown
    doc = json.loads((folder / "shifted.json").read_text(encoding="utf-8"))
    assert "REGRESSED" not in {entry["verdict"] for entry in doc["measurements"].values()}
    (finding,) = doc["run_wide"]
    assert finding["verdict"] == "ENVIRONMENT_ANOMALY" and finding["n_tests"] == 6
    assert finding["ratio"] == pytest.approx(300 / 340, abs=0.03)
    assert (folder / ".tpw" / "sim-x1.json").read_bytes() == before  # a compare never writes


# -- GPU pinning ----------------------------------------------------------------------------

# Each worker records, when it is configured (after the plugin pinned it), what it sees.
PIN_PROBE = """
import json
import os
from pathlib import Path

def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    probe = os.environ.get("TPW_PROBE_DIR")
    if worker is not None and probe is not None:
        Path(probe, worker + ".json").write_text(json.dumps(
            {"worker": worker, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}))
"""

PIN_TESTS = """
def test_a():
    pass

def test_b():
    pass
"""


@pytest.fixture
def pin_probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pytester.makeini(SIM_INI)
    pytester.makeconftest(PIN_PROBE)
    pytester.makepyfile(test_pin=PIN_TESTS)
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("TPW_PROBE_DIR", str(probe))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    return probe


def seen(probe: Path) -> dict[str, str | None]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))["cuda"] for p in probe.iterdir()}


def test_each_worker_sees_its_own_gpu(pytester: pytest.Pytester, pin_probe: Path) -> None:
    result = pytester.runpytest_subprocess("-n", "2", "--tpw-gpus-per-worker", "1")
    result.assert_outcomes(passed=2)
    assert seen(pin_probe) == {"gw0": "0", "gw1": "1"}


def test_more_workers_than_gpus_is_a_usage_error(
    pytester: pytest.Pytester, pin_probe: Path
) -> None:
    result = pytester.runpytest_subprocess("-n", "3", "--tpw-gpus-per-worker", "1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "pytest-tpw:" in err
    assert "3 workers" in err and "2 are visible" in err
    assert "-n 2" in err
    assert not list(pin_probe.iterdir())  # refused before any worker started


def test_without_workers_every_gpu_stays_visible(
    pytester: pytest.Pytester, pin_probe: Path
) -> None:
    pytester.makeconftest(
        PIN_PROBE
        + """
def pytest_sessionstart(session):
    Path(os.environ["TPW_PROBE_DIR"], "main.json").write_text(json.dumps(
        {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}))
"""
    )
    result = pytester.runpytest_subprocess("-n", "0", "--tpw-gpus-per-worker", "1")
    result.assert_outcomes(passed=2)
    assert seen(pin_probe) == {"main": "0,1"}


def test_maxprocesses_caps_the_workers_counted(pytester: pytest.Pytester, pin_probe: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-n", "3", "--maxprocesses", "2", "--tpw-gpus-per-worker", "1"
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert seen(pin_probe) == {"gw0": "0", "gw1": "1"}


# -- workers on hosts of two kinds ----------------------------------------------------------

# A sensor whose hardware is named by the worker's environment: two popen gateways stand in
# for two kinds of hosts (``--tx ssh=...``); TPW_BOARD_WATTS lowers one board's efficiency.
BOARDS_CONFTEST = """
import dataclasses
import os

from pytest_tpw.sensors.sim import SimSensor


class BoardSensor(SimSensor):
    name = "board"

    def __init__(self, options):
        watts = float(os.environ.get("TPW_BOARD_WATTS", "300"))
        super().__init__(dataclasses.replace(options, sim_watts=watts))

    def hardware(self):
        return (os.environ.get("TPW_BOARD", "board-a"),)


def pytest_tpw_sensor_factories():
    return {"board": BoardSensor}
"""

BOARD_A = "popen//env:TPW_BOARD=board-a"
BOARD_B = "popen//env:TPW_BOARD=board-b"


def test_two_kinds_of_workers_get_a_baseline_file_and_a_run_wide_shift_each(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project(pytester.path, "boards")
    (folder / "conftest.py").write_text(BOARDS_CONFTEST, encoding="utf-8")
    monkeypatch.chdir(folder)
    each = ("--dist", "each", "--tx", BOARD_A, "--tx", BOARD_B, "-o", "tpw_sensor=board")

    # recorded on both kinds at once: every test on each, one file per hardware key
    result = pytester.runpytest_subprocess("--tpw-update", "--tpw-rounds", "5", *each)
    result.assert_outcomes(passed=12)
    assert sorted(p.name for p in (folder / ".tpw").iterdir()) == [
        "board-a-x1.json",
        "board-b-x1.json",
    ]
    for board in ("board-a", "board-b"):
        stored = json.loads((folder / ".tpw" / f"{board}-x1.json").read_text(encoding="utf-8"))
        assert stored["hardware_key"] == f"{board}-x1"
        assert stored["hardware"]["models"] == [board]
        assert set(stored["measurements"]) == KEYS
        result.stdout.fnmatch_lines([f"6 measurement(s) written to *{board}-x1.json"])

    # board b draws 10 % more power for the same work: its run-wide shift alone moves, and
    # no test fails on either kind
    result = pytester.runpytest_subprocess(
        "--tpw",
        "--tpw-json",
        "out.json",
        "--dist",
        "each",
        "--tx",
        BOARD_A,
        "--tx",
        BOARD_B + "//env:TPW_BOARD_WATTS=330",
        "-o",
        "tpw_sensor=board",
    )
    result.assert_outcomes(passed=12)
    assert result.ret == pytest.ExitCode.OK
    lines = [line for line in result.outlines if line.startswith("run-wide (")]
    assert len(lines) == 2, result.outlines
    assert lines[0].startswith("run-wide (board-a-x1): ") and lines[0].endswith(" FINE")
    assert lines[1].startswith("run-wide (board-b-x1): ") and "ENVIRONMENT_ANOMALY" in lines[1]
    doc = json.loads((folder / "out.json").read_text(encoding="utf-8"))
    findings = {f["hardware_key"]: f for f in doc["run_wide"]}
    assert set(findings) == {"board-a-x1", "board-b-x1"}
    assert findings["board-a-x1"]["n_tests"] == findings["board-b-x1"]["n_tests"] == 6
    assert findings["board-b-x1"]["ratio"] == pytest.approx(300 / 330, abs=0.03)
    assert set(doc["measurements"]) == KEYS | {f"{key}@board-b-x1" for key in KEYS}
    verdicts = {m["verdict"] for m in doc["measurements"].values()}
    assert "REGRESSED" not in verdicts and "NO_BASELINE" not in verdicts, verdicts
    assert doc["measurements"]["test_suite.py::test_loop@board-b-x1"]["hardware_key"] == (
        "board-b-x1"
    )
    assert doc["environment"]["hardware_keys"] == ["board-a-x1", "board-b-x1"]
