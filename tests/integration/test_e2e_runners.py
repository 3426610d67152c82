"""Runners told apart, and what a run says about its own measurement, end to end.

- CPU keys count the CPUs a runner has (``cpu-estimate`` with the count monkeypatched): a
  4-CPU and a 64-CPU runner keep separate baselines; a baseline file under the key's older
  form (no CPU count) is compared with, then carried over by the first record, or read
  after a plain ``git mv``.
- A measured "board" (the sim sensor saying it is a measured H100, conftest below): its power
  limit recorded in the stack, a change of it shown as a stack change; a double-counted or
  padded result warned about (TpwImplausibleWarning) before it is stored, and stored anyway;
  the sensor's health in the terminal, the JSON and the Markdown report, with and without
  pytest-xdist.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.cli import main as cli
from pytest_tpw.host import fingerprint
from pytest_tpw.sensors.cpu_estimate import cpu_model
from tests.inner_code import BUSY_WORK

pytestmark = [
    pytest.mark.filterwarnings("always::pytest_tpw.TpwMeasurementWarning"),
    pytest.mark.filterwarnings("always::pytest_tpw.TpwImplausibleWarning"),
]

# one token per millisecond of busy work that really ran (tests/inner_code.py): contention
# cannot pass for a change; PAD multiplies the count (a padded batch)
SUITE = (
    BUSY_WORK
    + """

def per_ms(seconds):
    return max(1, round(seconds * 1e3 * float(os.environ.get("PAD", "1"))))

def test_a(tpw):
    tpw(work, tokens=per_ms)

def test_b(tpw):
    tpw(work, tokens=per_ms)
"""
)

CPU = ("--tpw-sensor", "cpu-estimate", "--tpw-rounds", "3", "--tpw-tolerance", "90%")


def cpu_key(cpus: int | None) -> str:
    count = "" if cpus is None else f" {cpus}c"
    return fingerprint.hardware_key([f"{cpu_model()}{count} cpu-estimate"])


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- hardware keys ----------------------------------------------------------------------------


def test_runners_of_different_sizes_keep_separate_baselines(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_work=SUITE)
    monkeypatch.setattr(fingerprint, "usable_cpus", lambda: 4)
    tpwtester.runpytest(*CPU, "--tpw-record").assert_outcomes(passed=2)
    small, large = cpu_key(4), cpu_key(64)
    assert small != large and "-4c-cpu-estimate-x1" in small
    assert sorted(p.name for p in (tpwtester.path / ".tpw").glob("*.json")) == [f"{small}.json"]
    monkeypatch.setattr(fingerprint, "usable_cpus", lambda: 64)
    result = tpwtester.runpytest("--tpw", *CPU, "--tpw-json", "big.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [f"no baseline for {large}; baselines exist for {small} (not compared)"]
    )
    doc = load(tpwtester.path / "big.json")
    assert doc["environment"]["hardware_key"] == large
    assert {e["verdict"] for e in doc["measurements"].values()} == {"NO_BASELINE"}


def legacy_file(pytester: pytest.Pytester, cpus: int) -> Path:
    """What pytest-tpw wrote before keys counted CPUs: the file renamed after the old key,
    with the old key and model name inside."""
    new, old = cpu_key(cpus), cpu_key(None)
    path = pytester.path / ".tpw" / f"{new}.json"
    doc = load(path)
    doc["hardware_key"] = old
    doc["hardware"]["models"] = [f"{cpu_model()} cpu-estimate"]
    legacy = path.with_name(f"{old}.json")
    legacy.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    path.unlink()
    return legacy


def test_a_legacy_baseline_is_compared_with_then_carried_over_by_a_record(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_work=SUITE)
    monkeypatch.setattr(fingerprint, "usable_cpus", lambda: 16)
    tpwtester.runpytest(*CPU, "--tpw-record").assert_outcomes(passed=2)
    legacy = legacy_file(tpwtester, 16)
    before = legacy.read_bytes()
    new = f".tpw/{cpu_key(16)}.json"
    old = f".tpw/{cpu_key(None)}.json"

    # compared with, saying where the baselines came from and exactly what to do
    result = tpwtester.runpytest("--tpw", *CPU, "--tpw-json", "out.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"tpw: baselines *{new} (none yet): comparing with *{old} (2 measurement(s)), "
            f"this hardware's baselines under its previous key {cpu_key(None)} (keys now "
            "count the CPUs a runner has)",
            f"baselines compared with {old}, named after this hardware's previous key "
            f"{cpu_key(None)} (keys now count the CPUs a runner has); its new key is "
            f"{cpu_key(16)}. Keep them under it: git mv {old} {new} (cp instead while "
            "runners of other sizes still use the old file), or record once here "
            f"(--tpw-record; --tpw-update-missing changes no baseline) to write {new} "
            "starting from them",
        ]
    )
    doc = load(tpwtester.path / "out.json")
    assert all(e["verdict"] != "NO_BASELINE" for e in doc["measurements"].values())
    assert not (tpwtester.path / new).exists()  # a compare writes nothing

    # the first record under the new key starts from the legacy file: nothing is lost
    result = tpwtester.runpytest(*CPU, "--tpw-record", "-k", "test_a")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [f"1 measurement(s) written to *{new}, starting from the baselines of *{old}*git rm*"]
    )
    stored = load(tpwtester.path / new)
    assert stored["hardware_key"] == cpu_key(16)
    sessions = {k: len(v["sessions"]) for k, v in stored["measurements"].items()}
    assert sessions == {"test_work.py::test_a": 2, "test_work.py::test_b": 1}
    assert legacy.read_bytes() == before  # left for runners of other sizes
    # from now on the new file is the baseline, and nothing more is said about the old one
    result = tpwtester.runpytest("--tpw", *CPU)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"tpw: baselines *{new} (2 measurement(s))"])
    result.stdout.no_fnmatch_line("*previous key*")


def test_a_legacy_file_renamed_by_hand_is_read_as_the_new_key(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_work=SUITE)
    monkeypatch.setattr(fingerprint, "usable_cpus", lambda: 8)
    tpwtester.runpytest(*CPU, "--tpw-record").assert_outcomes(passed=2)
    legacy = legacy_file(tpwtester, 8)
    new = legacy.with_name(f"{cpu_key(8)}.json")
    legacy.rename(new)  # git mv OLD.json NEW.json: the old key is still inside
    result = tpwtester.runpytest("--tpw", *CPU, "--tpw-json", "out.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"tpw: baselines *{new.name} (2 measurement(s))"])
    result.stdout.no_fnmatch_line("*previous key*")
    doc = load(tpwtester.path / "out.json")
    assert all(e["verdict"] != "NO_BASELINE" for e in doc["measurements"].values())
    tpwtester.runpytest(*CPU, "--tpw-record").assert_outcomes(passed=2)
    assert load(new)["hardware_key"] == cpu_key(8)  # the next write puts the new key in


# -- a measured board: the stack, the plausibility guard, health ------------------------------

BOARD = """
import os

from pytest_tpw.sensors.base import Capabilities, SensorHealth
from pytest_tpw.sensors.sim import SimSensor

H100 = "NVIDIA H100 80GB HBM3"


class Board(SimSensor):
    '''The sim sensor's joules (tpw_sim_watts x wall time), said to be a measured H100
    with a 700 W maximum; its power limit from LIMIT_W. Its health counts the windows
    it ended as dropped reads, so that a run's total is known whoever ended them.'''

    name = "board"
    provenance = "measured"

    def open(self):
        super().open()
        self.ended = 0

    def end(self, token):
        self.ended += 1
        return super().end(token)

    def hardware(self):
        return (H100,)

    def capabilities(self):
        return Capabilities(self.lock_ids(), "device", True)

    def describe(self):
        device = {
            "name": H100,
            "power_limit_w": float(os.environ.get("LIMIT_W", "700")),
            "max_power_w": 700.0,
            "clocks_policy": "default application clocks",
        }
        return {"driver_version": "550.54.15", "devices": [device]}

    def health(self):
        return SensorHealth(True, 0.1, self.ended, ("from the board",))


def pytest_tpw_sensor_factories():
    return {"board": Board}
"""

ON_BOARD = ("--tpw-sensor", "board", "-o", "tpw_sim_noise=0.002", "--tpw-rounds", "6")
H100_KEY = "nvidia-h100-80gb-hbm3-x1"


def test_a_power_limit_change_shows_as_a_stack_change(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tpwtester.makeconftest(BOARD)
    tpwtester.makepyfile(test_work=SUITE)
    monkeypatch.setenv("LIMIT_W", "700")
    for _ in range(2):
        tpwtester.runpytest(*ON_BOARD, "--tpw-record", "-k", "test_a").assert_outcomes(
            passed=1, deselected=1
        )
    stored = tpwtester.path / ".tpw" / f"{H100_KEY}.json"
    sessions = load(stored)["measurements"]["test_work.py::test_a"]["sessions"]
    assert {s["software"]["power_limit_w"] for s in sessions} == {"700"}
    assert {s["software"]["clocks_policy"] for s in sessions} == {"default application clocks"}
    # compare leaves out a stored session dated as the run it judges (to the second)
    time.sleep(1.1)
    # the board capped to 500 W, and the same work now costs a third more energy
    monkeypatch.setenv("LIMIT_W", "500")
    result = tpwtester.runpytest(
        "--tpw", *ON_BOARD, "-k", "test_a", "-o", "tpw_sim_watts=400", "--tpw-json", "b.json"
    )
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*test_work.py::test_a: tokens per joule REGRESSED*",
         "*stack changes since the baseline: power_limit_w 700 -> 500*"]
    )  # fmt: skip
    doc = load(tpwtester.path / "b.json")
    assert doc["environment"]["software"]["power_limit_w"] == "500"
    capsys.readouterr()
    cli.main(["compare", str(stored), str(tpwtester.path / "b.json")])
    out = capsys.readouterr().out
    assert "stack changes A -> B: power_limit_w 700 -> 500" in out


def warned(result: pytest.RunResult, text: str) -> list[str]:
    """The warnings summary's lines of the TpwImplausibleWarning that contain ``text``."""
    out = result.stdout.str()
    summary = out[out.index("warnings summary") :]
    return [
        line for line in summary.splitlines() if "TpwImplausibleWarning" in line and text in line
    ]


@pytest.mark.parametrize(
    ("setup", "figure", "bound"),
    [
        # four boards summed as one: 2800 W on a 700 W board
        # (the simulated board's 1 % noise puts it anywhere near 2800 W: 2799 is as good)
        ({"tpw_sim_watts": "2800"}, "average power 2[78][0-9][0-9] W", "maximum power 700 W"),
        # padded tokens: 50x the count of a plausible ~10 tokens/J
        ({"tpw_sim_watts": "100", "PAD": "50"}, "* tokens/J", "200 tokens/J ceiling"),
    ],
)
def test_an_implausible_result_is_warned_about_before_it_is_stored_and_stored(
    tpwtester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    setup: dict[str, str],
    figure: str,
    bound: str,
) -> None:
    tpwtester.makepyfile(test_work=SUITE)
    args = []
    for name, value in setup.items():
        if name.startswith("tpw_"):
            args += ["-o", f"{name}={value}"]
        else:
            monkeypatch.setenv(name, value)
    # a probe beside the plugin: when the warning is raised, no baseline exists yet
    tpwtester.makepyfile(
        conftest_probe="""
        import os, pytest

        def pytest_warning_recorded(warning_message):
            if "TpwImplausibleWarning" in repr(warning_message.category):
                with open("probe.txt", "a") as f:
                    f.write(str(os.path.exists(".tpw")) + "\\n")
        """
    )
    tpwtester.makeconftest(BOARD + "\npytest_plugins = ['conftest_probe']\n")
    result = tpwtester.runpytest(*ON_BOARD, *args, "--tpw-record", "--tpw-json", "out.json")
    result.assert_outcomes(passed=2, warnings=None)
    for test in ("test_a", "test_b"):
        assert warned(result, f"test_work.py::{test}: implausible: "), result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "implausible: 2 measurement(s) beyond physical bounds (TpwImplausibleWarning; "
            "bounds and sources in docs/sensors.md):",
            f"  test_work.py::test_a: implausible: {figure}*{bound}*likely causes:*",
        ]
    )
    # said before any file was written, and the file written all the same
    assert (tpwtester.path / "probe.txt").read_text(encoding="utf-8").split() == ["False"] * 2
    stored = load(tpwtester.path / ".tpw" / f"{H100_KEY}.json")
    assert set(stored["measurements"]) == {"test_work.py::test_a", "test_work.py::test_b"}
    doc = load(tpwtester.path / "out.json")
    (text,) = doc["measurements"]["test_work.py::test_a"]["implausible"]
    assert bound in text


def test_a_plausible_board_and_a_sim_run_below_its_idle_stay_quiet(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makeconftest(BOARD)
    tpwtester.makepyfile(test_work=SUITE)
    result = tpwtester.runpytest("--tpw", *ON_BOARD, "-o", "tpw_sim_watts=100")
    result.assert_outcomes(passed=2)
    assert "implausible" not in result.stdout.str()
    # sim has no idle window (simulated joules): however low its watts, nothing to break
    result = tpwtester.runpytest("--tpw", "-o", "tpw_sim_watts=0.001", "-o", "tpw_idle_power=true")
    result.assert_outcomes(passed=2)
    assert "implausible" not in result.stdout.str()
    assert "sensor health" not in result.stdout.str()  # sim's health means nothing


HEALTH_LINE = re.compile(
    r"sensor health: counter advancing yes, update period 100 ms, idle (\S+) W, "
    r"dropped reads (\d+), invalid windows 0"
)


@pytest.mark.parametrize("workers", [0, 2])
def test_sensor_health_in_the_terminal_the_json_and_the_report(
    tpwtester: pytest.Pytester, workers: int
) -> None:
    tpwtester.makeconftest(BOARD)
    tpwtester.makepyfile(test_work=SUITE)
    args = ("--tpw", "--tpw-sensor", "board", "--tpw-rounds", "3", "-o", "tpw_warmup=1")
    run = tpwtester.runpytest_subprocess if workers else tpwtester.runpytest
    result = run(
        *args,
        "-o",
        "tpw_idle_power=true",
        "-n",
        str(workers),
        "--tpw-json",
        "out.json",
        "--tpw-report",
        "r.md",
    )
    result.assert_outcomes(passed=2)
    (line,) = [m for m in map(HEALTH_LINE.fullmatch, result.outlines) if m]
    # every window of both tests, whichever process ended it: 2 x (1 warm-up + 3)
    windows = 8
    idle = float(line[1])
    assert idle == pytest.approx(300.0, rel=0.05)  # the idle window: sim's 300 W
    # and each process's idle window at start: the controller's and each worker's
    assert int(line[2]) == windows + (1 + workers)
    result.stdout.fnmatch_lines(["sensor health: *", "  from the board"])
    health = load(tpwtester.path / "out.json")["environment"]["sensor"]["health"]
    assert health["counter_advances"] is True and health["update_period_s"] == 0.1
    assert health["dropped_reads"] == int(line[2]) and health["invalid_windows"] == 0
    assert health["idle_watts"] == pytest.approx(idle, rel=1e-3)
    assert health["notes"] == ["from the board"]
    report = (tpwtester.path / "r.md").read_text(encoding="utf-8")
    said = (
        f"**Sensor health:** counter advancing yes, update period 100 ms, idle {line[1]} W, "
        f"dropped reads {line[2]}, invalid windows 0."
    )
    assert said in report
