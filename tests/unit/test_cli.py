"""The ``pytest-tpw`` command on hand-made result and baseline files."""

from __future__ import annotations

import json
import random
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


def test_compare_flags_a_regression_and_fails_with_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0, "t::y": 20.0}, seed=1)
    b = result_file(tmp_path / "b.json", {"t::x": 45.0, "t::y": 20.0}, seed=2)
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 1
    out = capsys.readouterr().out
    x_line = next(line for line in out.splitlines() if line.startswith("t::x"))
    y_line = next(line for line in out.splitlines() if line.startswith("t::y"))
    assert "REGRESSED" in x_line and "-10." in x_line  # 45/50 = 0.90
    assert "UNCHANGED" in y_line
    assert "1 regressed" in out


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
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, noise=0.002, seed=1)
    b = result_file(tmp_path / "b.json", {"t::x": 48.0}, noise=0.002, seed=2)  # -4 %
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 0  # within 5 %
    assert "MINOR_REGRESSION" in capsys.readouterr().out
    assert cli.main(["compare", str(a), str(b), "--fail", "--tolerance", "2%"]) == 1


def test_compare_reports_stack_differences_and_unmatched_measurements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, software={"driver": "550"})
    b = result_file(tmp_path / "b.json", {"t::x": 50.0, "t::new": 1.0}, software={"driver": "560"})
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "driver 550 -> 560" in out
    assert "t::new" in out and "not compared" in out


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


def test_compare_reads_baseline_files_using_the_latest_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _baseline(tmp_path, "sim-x1", 3, level_by_session=[80.0, 80.0, 50.0])
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
    assert f"{path} is a baseline file: using the latest session" in out
    line = next(line for line in out.splitlines() if line.startswith("t.py::test_a"))
    assert "-20." in line and "REGRESSED" in line  # 40 / 50: the latest session, not 80
    assert cli.main(["compare", str(path), str(path), "--fail"]) == 0


def test_compare_prints_the_candidates_run_wide_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, seed=1)
    b = result_file(
        tmp_path / "b.json",
        {"t::x": 48.0},
        seed=2,
        run_wide=[
            {
                "hardware_key": "sim-x1",
                "ratio": 0.969,
                "ci": [0.962, 0.976],
                "verdict": "STACK_REGRESSION",
                "n_tests": 40,
                "stack_changes": [],
                "suspects": [],
                "text": "run-wide: -3.1 % [-3.8, -2.4]; stack changed: torch 2.12.0 -> 2.13.0",
                "notes": ["this run's windows vary 2.0x as much as the stored runs'"],
            }
        ],
    )
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index(
        "B run-wide: -3.1 % [-3.8, -2.4]; stack changed: torch 2.12.0 -> 2.13.0 [STACK_REGRESSION]"
    )
    assert out[at + 1] == "  this run's windows vary 2.0x as much as the stored runs'"


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
    # which flag does what, where the sessions are listed
    assert "accept a new level (replaces a test's sessions): pytest --tpw --tpw-update" in out
    assert "add a session (learn how sessions differ):      pytest --tpw --tpw-record" in out


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
