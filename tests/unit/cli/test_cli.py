"""The ``pytest-tpw`` command on hand-made result and baseline files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_tpw.cli import main as cli
from pytest_tpw.store import baseline


def result_file(
    path: Path,
    levels: dict[str, float],
    *,
    n: int = 20,
    noise: float = 0.01,
    seed: int = 0,
    hardware: str = "sim-x1",
    provenance: str = "measured",
    software: dict[str, str] | None = None,
    sensor: str | None = None,
    run_wide: list[dict[str, object]] | None = None,
) -> Path:
    """A --tpw-json document whose measurements have tokens/J around the given levels."""
    rng = random.Random(seed)
    measurements = {}
    for key, level in levels.items():
        samples = []
        for _ in range(n):
            joules = 10.0
            tokens = round(level * joules * (1 + rng.gauss(0, noise)) * 1000)
            samples.append({"tokens": tokens, "joules": joules * 1000, "seconds": 1.0})
        measurements[key] = {"samples": samples}
    doc: dict[str, object] = {
        "schema": 1,
        "measurements": measurements,
        "environment": {
            "hardware_key": hardware,
            "software": software or {},
            "sensor": {"name": sensor, "provenance": provenance},
        },
    }
    if run_wide is not None:
        doc["run_wide"] = run_wide
    path.write_text(json.dumps(doc))
    return path


def suite(
    path: Path,
    tests: int,
    *,
    scale: float = 1.0,
    changed: dict[int, float] | None = None,
    seed: int = 0,
    software: dict[str, str] | None = None,
    date: str = "2026-12-01T00:00:00+00:00",
) -> Path:
    """A results file of ``tests`` tests around 10..40 tokens/J, all moved by ``scale`` and
    test i by ``changed[i]`` more, with 0.5 % window noise."""
    levels = {
        f"t.py::test_{i:02d}": (10.0 + i) * scale * (changed or {}).get(i, 1.0)
        for i in range(tests)
    }
    out = result_file(path, levels, noise=0.005, seed=seed, software=software, sensor="nvml")
    doc = json.loads(out.read_text())
    doc["environment"]["date"] = date
    out.write_text(json.dumps(doc))
    return out


def verdicts(out: str) -> dict[str, str]:
    """measurement -> verdict, from compare's table."""
    found = {}
    for line in out.splitlines():
        if line.startswith("t"):
            cells = line.split()
            found[cells[0]] = cells[-1]
    return found


def test_a_shared_shift_is_one_run_wide_finding_not_many_regressions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every test 6 % less efficient (a busier board): one run-wide finding, no test fails."""
    a = suite(tmp_path / "a.json", 24, seed=1)
    b = suite(tmp_path / "b.json", 24, scale=0.94, seed=2, date="2026-12-02T00:00:00+00:00")
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 0
    out = capsys.readouterr().out
    assert set(verdicts(out).values()) <= {"UNCHANGED", "INCONCLUSIVE"}, out
    assert "run-wide: -6." in out and "ENVIRONMENT_ANOMALY" in out
    # a one-session side: the spreads are priors, and the output says so
    assert "A has one session of each test" in out and "priors, not measured" in out


def test_a_shared_shift_with_a_stack_change_fails_only_with_fail_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = suite(tmp_path / "a.json", 24, seed=1, software={"torch": "2.12.0"})
    b = suite(tmp_path / "b.json", 24, scale=0.94, seed=2, software={"torch": "2.13.0"})
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 0
    out = capsys.readouterr().out
    assert "STACK_REGRESSION; stack changed: torch 2.12.0 -> 2.13.0" in out
    assert cli.main(["compare", str(a), str(b), "--fail", "--fail-stack"]) == 1


def test_one_real_change_on_top_of_a_shared_shift_is_the_only_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = suite(tmp_path / "a.json", 24, seed=1)
    b = suite(tmp_path / "b.json", 24, scale=0.94, changed={5: 0.85}, seed=2)
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 1
    found = verdicts(capsys.readouterr().out)
    assert found.pop("t.py::test_05") == "REGRESSED"
    assert "REGRESSED" not in found.values()


def test_compare_flags_a_regression_and_fails_with_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0, "t::y": 20.0}, seed=1)
    b = result_file(tmp_path / "b.json", {"t::x": 40.0, "t::y": 20.0}, seed=2)
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 1
    out = capsys.readouterr().out
    x_line = next(line for line in out.splitlines() if line.startswith("t::x"))
    y_line = next(line for line in out.splitlines() if line.startswith("t::y"))
    assert "REGRESSED" in x_line and "-20." in x_line  # 40/50 = 0.80
    assert "REGRESSED" not in y_line
    assert "verdicts: 1 REGRESSED" in out


def test_compare_without_fail_exits_0_even_on_a_regression(tmp_path: Path) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, seed=1)
    b = result_file(tmp_path / "b.json", {"t::x": 40.0}, seed=2)
    assert cli.main(["compare", str(a), str(b)]) == 0


def test_compare_identical_files_is_never_a_regression(tmp_path: Path) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0, "t::y": 3.0}, noise=0.05)
    assert cli.main(["compare", str(a), str(a), "--fail"]) == 0


def test_compare_tolerance_option_changes_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A steady suite of three stored sessions; one test 4 % down: within a 5 % tolerance it
    is a minor regression, beyond a 2 % one it fails."""
    path = suite_baseline(tmp_path, tests=12, sessions=3)
    b = suite(tmp_path / "b.json", 12, changed={3: 0.96}, seed=9, date="2026-12-05T00:00:00+00:00")
    assert cli.main(["compare", str(path), str(b), "--fail"]) == 0
    assert verdicts(capsys.readouterr().out)["t.py::test_03"] == "MINOR_REGRESSION"
    assert cli.main(["compare", str(path), str(b), "--fail", "--tolerance", "2%"]) == 1
    assert verdicts(capsys.readouterr().out)["t.py::test_03"] == "REGRESSED"


def suite_baseline(directory: Path, tests: int, sessions: int) -> Path:
    """A baseline file of ``tests`` tests (the levels of :func:`suite`) with ``sessions``
    stored sessions, 0.5 % window noise, small session shifts."""
    stored = baseline.BaselineFile("sim-x1", {"sensor": "nvml", "provenance": "measured"})
    for s in range(sessions):
        rng = random.Random(100 + s)
        shift = 1 + rng.gauss(0, 0.003)
        for i in range(tests):
            level = (10.0 + i) * shift
            samples = [
                (round(level * 10_000 * (1 + rng.gauss(0, 0.005))), 10_000.0, 1.0)
                for _ in range(20)
            ]
            session = baseline.StoredSession(
                date=f"2026-11-0{s + 1}T00:00:00+00:00",
                commit=None,
                software={},
                sensor="nvml",
                provenance="measured",
                samples=samples,
            )
            stored.merge({f"t.py::test_{i:02d}": session}, history=10, mode="extend")
    path = baseline.path_for(directory, "sim-x1")
    baseline.write(path, stored)
    return path


def test_compare_reports_stack_differences_and_unmatched_measurements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0, "t::gone": 2.0}, software={"driver": "550"})
    b = result_file(tmp_path / "b.json", {"t::x": 50.0, "t::new": 1.0}, software={"driver": "560"})
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "driver 550 -> 560" in out
    assert "1 measurement(s) only in A, not compared: t::gone" in out
    assert "1 measurement(s) only in B, not compared: t::new" in out


@pytest.mark.parametrize(
    "differs,expected",
    [
        ({"hardware": "other-x1"}, "hardware key sim-x1 in A, other-x1 in B"),
        ({"provenance": "estimated"}, "joules measured in A, estimated in B"),
        ({"sensor": "cpu_estimate"}, "sensor nvml in A, cpu_estimate in B"),
    ],
)
def test_compare_refuses_different_hardware_sensor_or_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], differs: dict[str, str], expected: str
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, sensor="nvml", seed=1)
    b = result_file(
        tmp_path / "b.json",
        {"t::x": 40.0},
        seed=2,
        hardware=differs.get("hardware", "sim-x1"),
        provenance=differs.get("provenance", "measured"),
        sensor=differs.get("sensor", "nvml"),
    )
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 2
    captured = capsys.readouterr()
    assert "REGRESSED" not in captured.out and "t::x" not in captured.out  # no verdicts
    assert str(a) in captured.err and str(b) in captured.err
    assert "not comparable" in captured.err and expected in captured.err


def test_compare_uses_every_stored_session_of_a_baseline_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _baseline(tmp_path, "sim-x1", 3, level_by_session=[50.0, 50.5, 49.5])
    b = result_file(
        tmp_path / "b.json",
        {"t.py::test_a": 40.0},
        hardware="sim-x1",
        provenance="measured",
        sensor="nvml",
        seed=2,
    )
    assert cli.main(["compare", str(path), str(b), "--fail"]) == 1
    out = capsys.readouterr().out
    assert f"{path} is a baseline file: every stored session of each test is used" in out
    line = next(line for line in out.splitlines() if line.startswith("t.py::test_a"))
    assert "-20." in line and "REGRESSED" in line and "60 in 3" in line  # 3 sessions of 20
    assert cli.main(["compare", str(path), str(path), "--fail"]) == 0  # its latest vs all


def test_compare_leaves_out_the_candidates_own_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that recorded itself (--tpw-record) is judged against the sessions before it."""
    path = _baseline(tmp_path, "sim-x1", 3, level_by_session=[50.0, 50.5, 40.0])
    b = result_file(tmp_path / "b.json", {"t.py::test_a": 40.0}, sensor="nvml", seed=2)
    doc = json.loads(b.read_text())
    doc["environment"]["date"] = "2026-11-03T00:00:00+00:00"  # the third stored session
    b.write_text(json.dumps(doc))
    assert cli.main(["compare", str(path), str(b)]) == 0
    out = capsys.readouterr().out
    assert "A holds B's own session of 1 measurement(s)" in out
    assert "40 in 2" in out  # two sessions left


def test_compare_judges_with_the_settings_the_run_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, seed=1)
    b = result_file(tmp_path / "b.json", {"t::x": 49.0}, seed=2)
    doc = json.loads(b.read_text())
    doc["settings"] = {"tolerance": 0.03, "noise_floor": 0.02, "confidence": 0.8, "fdr": 0.1}
    b.write_text(json.dumps(doc))
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "tolerance 3.0%, noise floor 2.0%, confidence 80%" in out and "q = 0.1" in out
    assert cli.main(["compare", str(a), str(b), "--tolerance", "4%"]) == 0
    assert "tolerance 4.0%, noise floor 2.0%" in capsys.readouterr().out
    doc["settings"]["noise_floor"] = 0.05  # above the tolerance: the run could not have used it
    b.write_text(json.dumps(doc))
    assert cli.main(["compare", str(a), str(b)]) == 2
    assert "noise floor (5.0%) must be below the tolerance" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["{ not json", '{"a": 1}', "[]"])
def test_compare_bad_input_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    good = result_file(tmp_path / "a.json", {"t::x": 50.0})
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert cli.main(["compare", str(good), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_compare_missing_file_and_bad_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = result_file(tmp_path / "a.json", {"t::x": 50.0})
    assert cli.main(["compare", str(good), str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    assert cli.main(["compare", str(good), str(good), "--tolerance", "5"]) == 2
    assert "5%" in capsys.readouterr().err


def _baseline(
    directory: Path, key: str, sessions: int, level_by_session: list[float] | None = None
) -> Path:
    stored = baseline.BaselineFile(key, {"sensor": "nvml", "provenance": "measured"})
    for i in range(sessions):
        level = level_by_session[i] if level_by_session else 50.0
        rng = random.Random(i)
        samples = (
            [(100 * 1000, 100 * 1000 / (level * (1 + rng.gauss(0, 0.01))), 1.0) for _ in range(20)]
            if level_by_session
            else [(100, 2.0, 1.0), (100, 2.1, 1.0), (100, 1.9, 1.0)]
        )
        session = baseline.StoredSession(
            date=f"2026-11-0{i + 1}T00:00:00+00:00",
            commit=f"{i}abcdef0123456789",
            software={},
            sensor="nvml",
            provenance="measured",
            samples=samples,
        )
        stored.merge({"t.py::test_a": session}, history=10, mode="extend")
    path = baseline.path_for(directory, key)
    baseline.write(path, stored)
    return path


def test_show_lists_hardware_measurements_sessions_and_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _baseline(tmp_path, "nvidia-h100-80gb-hbm3-x1", 3)
    assert cli.main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nvidia-h100-80gb-hbm3-x1" in out
    assert "sensor nvml (joules measured)" in out
    line = next(line for line in out.splitlines() if "t.py::test_a" in line)
    cells = line.split()
    assert cells[1] == "3"  # sessions
    assert cells[3] == "2abcdef012"  # latest commit, shortened
    assert float(cells[4]) == pytest.approx(50.0, rel=0.01)  # 100 tokens / ~2 J
    assert cells[6:] == ["0", "-"]  # nothing superseded yet
    # which flag does what, where the sessions are listed
    assert "accept a new level (the old one moves to superseded/): pytest --tpw --tpw-update" in out
    assert (
        "add a session (learn how sessions differ):              pytest --tpw --tpw-record" in out
    )


def test_show_says_what_an_accept_superseded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _baseline(tmp_path, "nvidia-h100-80gb-hbm3-x1", 3)
    stored = baseline.load(path, "nvidia-h100-80gb-hbm3-x1")
    assert stored is not None
    last = stored.sessions("t.py::test_a")[-1]
    new = replace(last, samples=[(100, 1.0, 1.0)] * 5, date="2026-12-01T00:00:00+00:00")
    baseline.flush(path, stored.hardware_key, stored.hardware, {"t.py::test_a": new}, 10, "replace")
    assert cli.main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cells = next(line for line in out.splitlines() if "t.py::test_a" in line).split()
    assert cells[1] == "1" and float(cells[4]) == pytest.approx(100.0)  # the accepted level
    assert cells[6] == "3"  # the three sessions it replaced
    assert float(cells[7]) == pytest.approx(50.0, rel=0.01)  # the level before the accept


def test_show_refuses_a_corrupt_file_and_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["show", str(tmp_path / "none")]) == 2
    assert "no baseline folder" in capsys.readouterr().err
    (tmp_path / "x-x1.json").write_text("{ nope")
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "x-x1.json" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = _baseline(tmp_path, "k-x1", 2)
    assert cli.main(["plot", "history", str(path), "-o", str(tmp_path / "p.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_plot_overview_needs_a_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _baseline(tmp_path, "k-x1", 2)
    assert cli.main(["plot", "overview", str(path), "-o", str(tmp_path / "p.png")]) == 2
    assert "k-x1.json: a baseline file, not a results file" in capsys.readouterr().err


def test_old_plot_form_draws_the_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path = _baseline(tmp_path, "k-x1", 2)
    out = tmp_path / "h.png"
    assert cli.main(["plot", str(path), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot history FILES" in capsys.readouterr().err


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "folder"])
def test_compare_refuses_special_files_at_once_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], special: str
) -> None:
    """A FIFO would block a reader and /dev/zero never ends: refused before any read."""
    good = result_file(tmp_path / "a.json", {"t::x": 50.0})
    if special == "fifo":
        path = tmp_path / "pipe.json"
        os.mkfifo(path)
    elif special == "folder":
        path = tmp_path / "results"
        path.mkdir()
    else:
        path = Path(special)
    for args in ([str(good), str(path)], [str(path), str(good)]):
        assert cli.main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert str(path) in err
        assert ("not a regular file" in err) or ("a folder" in err)


def test_compare_reads_only_the_stored_tests_the_run_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline of 40 tests, a run of 6 that names them (prior_keys): compare parses those
    6 entries alone (a 10,000-test file is not read for a 300-test run), and lists the rest
    by count with a few names, not all."""
    from pytest_tpw.store import layout

    path = suite_baseline(tmp_path, 40, 3)
    run = suite(tmp_path / "b.json", 6)
    doc = json.loads(run.read_text())
    compared = sorted(doc["measurements"])
    doc["prior_keys"] = {"sim-x1": compared}
    run.write_text(json.dumps(doc))
    read: list[str] = []
    original = layout.Measurements.__getitem__

    def spy(self: layout.Measurements, key: str) -> list[baseline.StoredSession]:
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(layout.Measurements, "__getitem__", spy)
    assert cli.main(["compare", str(path), str(run)]) == 0
    assert read and set(read) <= set(compared)
    out = capsys.readouterr().out
    assert set(verdicts(out)) == set(compared)
    (only_a,) = [line for line in out.splitlines() if "only in A" in line]
    assert only_a.startswith("34 measurement(s) only in A, not compared: t.py::test_06, ")
    assert only_a.endswith(" and 24 more")


def _hostile(kind: str, tmp_path: Path) -> Path:
    """A file no command may read: special, endless, too deep, not UTF-8, or lying."""
    path = tmp_path / f"{kind}.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        return Path("/dev/zero")
    elif kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "latin-1":
        path.write_bytes('{"measurements": {"t::é": {}}}'.encode("latin-1"))
    elif kind == "negative-samples":
        doc = json.loads(result_file(path, {"t.py::test_00": 10.0}).read_text())
        doc["measurements"]["t.py::test_00"]["samples"][0]["joules"] = -1.0
        path.write_text(json.dumps(doc))
    elif kind in ("negative-latency", "lying-load"):
        doc = json.loads(result_file(path, {"t.py::test_00": 10.0}).read_text())
        entry = doc["measurements"]["t.py::test_00"]
        entry["load"] = {"concurrency": 2, "requests": 10, "errors": 0, "steady_s": 1.0}
        entry["latency"] = {"tpot_s": {"p50": 0.01, "p90": 0.02, "p99": 0.03}}
        if kind == "negative-latency":
            entry["latency"]["tpot_s"]["p90"] = -0.02
        else:
            entry["load"]["error_kinds"] = {"HTTP 500": "many"}
        path.write_text(json.dumps(doc))
    return path


COMMANDS = {
    "compare A": lambda bad, good, out: ["compare", str(bad), str(good)],
    "compare B": lambda bad, good, out: ["compare", str(good), str(bad), "--fail"],
    "report": lambda bad, good, out: ["report", str(bad), "-o", str(out / "r.md")],
    "export": lambda bad, good, out: ["export", "--format", "bencher", str(bad)],
    "plot overview": lambda bad, good, out: [
        "plot",
        "overview",
        str(bad),
        "-o",
        str(out / "o.png"),
    ],
    "plot history": lambda bad, good, out: ["plot", "history", str(bad), "-o", str(out / "h.png")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    "kind",
    ["fifo", "dev-zero", "deep", "latin-1", "negative-samples", "negative-latency", "lying-load"],
)
def test_every_command_refuses_a_hostile_file_with_exit_2_naming_it(
    tmp_path: Path, command: str, kind: str
) -> None:
    """One reader for every command: special files, endless files, deep nesting, another
    encoding and impossible values are refused at once with exit 2 (never 1, the exit of a
    regression) and a message naming the file; no traceback. In a fresh process with a
    timeout, so that a regression that blocks fails instead of hanging the suite."""
    if command == "plot overview" or command == "plot history":
        pytest.importorskip("matplotlib")
    bad = _hostile(kind, tmp_path)
    good = suite(tmp_path / "good.json", 1)
    args = COMMANDS[command](bad, good, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_tpw.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert str(bad) in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.glob("*.png")) and not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("where", [".", "superseded"])
def test_show_refuses_a_special_file_in_the_baseline_folder(tmp_path: Path, where: str) -> None:
    folder = tmp_path / ".tpw"
    _baseline(folder, "sim-x1", 2)
    (folder / where).mkdir(exist_ok=True)
    name = "sim-x1.json" if where == "superseded" else "other-x1.json"
    os.mkfifo(folder / where / name)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_tpw.cli", "show", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert done.returncode == 2, done.stderr
    assert name in done.stderr and "not a regular file" in done.stderr
