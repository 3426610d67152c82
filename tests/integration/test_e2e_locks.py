"""Device locks end to end: two pytest runs on one host never measure one device at once.

Also: another process on a measured GPU, as a sensor reports it, reaches the user as a
warning naming the device, and the sample keeps it in ``--tpw-json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.host.locks import LOCK_DIR_ENV
from pytest_tpw.measure.samples import WAITED
from tests.conftest import SIM_INI

# A sensor with the sim sensor's joules that logs each window (pid, begin, end) on the
# host-wide monotonic clock, and locks one device id shared by both runs. Each run waits at
# session start until the other has started too, so that their windows compete.
LOGGING_SENSOR = """
import os
import time
from pathlib import Path

from pytest_tpw.sensors import Sensor, WindowEnergy

LOG = Path(os.environ["TPW_WINDOW_LOG"])

class Logged(Sensor):
    name = "logged"
    provenance = "simulated"
    method = "300 W x wall time, windows logged"

    def open(self):
        pass

    def domains(self):
        return ("logged:0",)

    def min_window_s(self):
        return 0.01

    def lock_ids(self):
        return ("shared-device",)

    def begin(self):
        return time.monotonic()

    def end(self, token):
        ended = time.monotonic()
        with open(LOG / f"{os.getpid()}.log", "a") as f:
            f.write(f"{token!r} {ended!r}\\n")
        return WindowEnergy({"logged:0": 300.0 * (ended - token)})

def pytest_tpw_sensor_factories():
    return {"logged": Logged}

def pytest_sessionstart(session):
    ready = Path(os.environ["TPW_READY_DIR"])
    (ready / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
"""

WINDOWS = """
import time

import pytest

@pytest.mark.parametrize("i", range(3))
def test_windows(tpw, i):
    for w in tpw.rounds():
        with w:
            time.sleep(0.02)
            w.add_tokens(20)
"""

WAIT_LINE = re.compile(r"(\d+) window\(s\) of (\d+) measurement\(s\) waited for a device lock")


def start_run(folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    folder.mkdir()
    (folder / "pytest.ini").write_text(SIM_INI, encoding="utf-8")
    (folder / "conftest.py").write_text(LOGGING_SENSOR, encoding="utf-8")
    (folder / "test_windows.py").write_text(WINDOWS, encoding="utf-8")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--tpw",
            "--tpw-sensor",
            "logged",
            "--tpw-rounds",
            "5",
            "--tpw-json",
            "out.json",
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def intervals(log: Path) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for path in log.iterdir():
        pairs = [
            tuple(float(x) for x in line.split())
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        out[path.stem] = [(b, e) for b, e in pairs]
    return out


def test_two_runs_at_once_take_turns_on_the_device(tmp_path: Path) -> None:
    log, ready = tmp_path / "log", tmp_path / "ready"
    log.mkdir()
    ready.mkdir()
    env = {
        **os.environ,
        LOCK_DIR_ENV: str(tmp_path / "locks"),
        "TPW_WINDOW_LOG": str(log),
        "TPW_READY_DIR": str(ready),
    }
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    procs = {name: start_run(tmp_path / name, env) for name in ("a", "b")}
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=120)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name]
        assert "3 passed" in outputs[name], outputs[name]

    # the windows of the two runs never overlap in time
    windows = intervals(log)
    assert len(windows) == 2
    assert all(len(w) == 3 * (1 + 5) for w in windows.values())  # warm-up + rounds
    (pid_a, a), (pid_b, b) = windows.items()
    for begin, end in a + b:
        assert begin <= end
    overlaps = [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]
    assert not overlaps, f"windows of pids {pid_a} and {pid_b} overlap: {overlaps[:3]}"

    # someone waited, said so in the summary, and marked exactly those samples in the JSON
    waits: dict[str, int] = {}
    for name, output in outputs.items():
        doc: dict[str, Any] = json.loads((tmp_path / name / "out.json").read_text(encoding="utf-8"))
        noted = [
            w
            for m in doc["measurements"].values()
            for s in m["samples"]
            for w in s["warnings"]
            if w.startswith(WAITED)
        ]
        found = WAIT_LINE.search(output)
        waits[name] = int(found[1]) if found else 0
        assert len(noted) == waits[name], (output, noted)
        for note in noted:
            seconds, device = re.fullmatch(
                re.escape(WAITED) + r"([\d.]+) s for (.+)", note
            ).groups()  # type: ignore[union-attr]
            assert float(seconds) > 0
            assert device == "shared-device"
        # a wait is noted on the sample, never warned about: it happened outside the window
        assert "TpwMeasurementWarning" not in output
    assert sum(waits.values()) > 0, outputs


def test_a_window_waits_only_for_its_own_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester
) -> None:
    """A lock held on another device id does not make this run wait."""
    from pytest_tpw.host.locks import DeviceLocks

    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    other = DeviceLocks(["some-other-device"], tmp_path / "locks")
    other.acquire()
    try:
        pytester.makeini(SIM_INI)
        pytester.makepyfile(test_one=WINDOWS)
        result = pytester.runpytest("--tpw", "--tpw-rounds", "2", "--tpw-json", "out.json")
    finally:
        other.release()
    result.assert_outcomes(passed=3)
    result.stdout.no_fnmatch_line("*waited for a device lock*")
    doc = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    assert not [
        w
        for m in doc["measurements"].values()
        for s in m["samples"]
        for w in s["warnings"]
        if w.startswith(WAITED)
    ]


# -- another process on a measured GPU ------------------------------------------------------

OTHER_PROCESS = (
    "gpu:0 (NVIDIA Fake 80GB, GPU-f00d): another process (pid 4242) was using "
    "the GPU; its energy is counted in this window"
)

CONTAMINATED_SENSOR = f"""
import time

from pytest_tpw.sensors import Sensor, WindowEnergy

class Shared(Sensor):
    name = "shared-gpu"
    provenance = "measured"
    method = "fake GPU with a neighbour"

    def open(self):
        pass

    def domains(self):
        return ("gpu:0",)

    def min_window_s(self):
        return 0.01

    def begin(self):
        return time.perf_counter()

    def end(self, token):
        seconds = time.perf_counter() - token
        return WindowEnergy({{"gpu:0": 300.0 * seconds}},
                            state={{"gpu:0": {{"other_pids": [4242]}}}},
                            warnings=[{OTHER_PROCESS!r}])

def pytest_tpw_sensor_factories():
    return {{"shared-gpu": Shared}}
"""


@pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning")
def test_another_process_on_the_gpu_is_warned_and_kept_with_the_sample(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makeconftest(CONTAMINATED_SENSOR)
    tpwtester.makepyfile(
        test_one="""
        import time

        def test_gen(tpw):
            for w in tpw.rounds():
                with w:
                    time.sleep(0.011)
                    w.add_tokens(5)
        """
    )
    result = tpwtester.runpytest(
        "--tpw", "--tpw-sensor", "shared-gpu", "--tpw-rounds", "3", "--tpw-json", "out.json"
    )
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "*TpwMeasurementWarning: test_one.py::test_gen: 3 of 3 windows: gpu:0 (NVIDIA Fake "
            "80GB, GPU-f00d): another process (pid 4242) was using the GPU*",
        ]
    )
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    entry = doc["measurements"]["test_one.py::test_gen"]
    assert len(entry["samples"]) == 3
    assert all(s["warnings"] == [OTHER_PROCESS] for s in entry["samples"])
    assert all(s["state"] == {"gpu:0": {"other_pids": [4242]}} for s in entry["samples"])
    # once per measurement, with how many windows had it, not once per window
    assert entry["warnings"] == [f"test_one.py::test_gen: 3 of 3 windows: {OTHER_PROCESS}"]
