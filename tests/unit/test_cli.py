"""The ``pytest-tpw`` command on hand-made result and baseline files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_tpw import baseline, cli


def result_file(path: Path, levels: dict[str, float], *, n: int = 20, noise: float = 0.01,
                seed: int = 0, hardware: str = "sim-x1", provenance: str = "measured",
                software: dict[str, str] | None = None) -> Path:
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
    doc = {"schema": 1, "measurements": measurements,
           "environment": {"hardware_key": hardware, "software": software or {},
                           "sensor": {"provenance": provenance}}}
    path.write_text(json.dumps(doc))
    return path


def test_compare_flags_a_regression_and_fails_with_fail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, noise=0.002, seed=1)
    b = result_file(tmp_path / "b.json", {"t::x": 48.0}, noise=0.002, seed=2)  # -4 %
    assert cli.main(["compare", str(a), str(b), "--fail"]) == 0  # within 5 %
    assert "MINOR_REGRESSION" in capsys.readouterr().out
    assert cli.main(["compare", str(a), str(b), "--fail", "--tolerance", "2%"]) == 1


def test_compare_reports_hardware_and_stack_differences(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = result_file(tmp_path / "a.json", {"t::x": 50.0}, software={"driver": "550"})
    b = result_file(tmp_path / "b.json", {"t::x": 50.0, "t::new": 1.0}, hardware="other-x1",
                    software={"driver": "560"})
    cli.main(["compare", str(a), str(b)])
    out = capsys.readouterr().out
    assert "different hardware" in out
    assert "driver 550 -> 560" in out
    assert "t::new" in out and "not compared" in out


@pytest.mark.parametrize("content", ["{ not json", '{"a": 1}', "[]"])
def test_compare_bad_input_exits_2_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    good = result_file(tmp_path / "a.json", {"t::x": 50.0})
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert cli.main(["compare", str(good), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_compare_missing_file_and_bad_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = result_file(tmp_path / "a.json", {"t::x": 50.0})
    assert cli.main(["compare", str(good), str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    assert cli.main(["compare", str(good), str(good), "--tolerance", "5"]) == 2
    assert "5%" in capsys.readouterr().err


def _baseline(directory: Path, key: str, sessions: int) -> Path:
    stored = baseline.BaselineFile(key, {"sensor": "nvml", "provenance": "measured"})
    for i in range(sessions):
        session = baseline.StoredSession(
            date=f"2026-11-0{i + 1}T00:00:00+00:00", commit=f"{i}abcdef0123456789",
            software={}, sensor="nvml", provenance="measured",
            samples=[(100, 2.0, 1.0), (100, 2.1, 1.0), (100, 1.9, 1.0)])
        stored.merge({"t.py::test_a": session}, history=10, only_missing=False)
    path = baseline.path_for(directory, key)
    baseline.write(path, stored)
    return path


def test_show_lists_hardware_measurements_sessions_and_level(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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


def test_show_refuses_a_corrupt_file_and_a_missing_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", str(tmp_path / "none")]) == 2
    assert "no baseline folder" in capsys.readouterr().err
    (tmp_path / "x-x1.json").write_text("{ nope")
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "x-x1.json" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = _baseline(tmp_path, "k-x1", 2)
    assert cli.main(["plot", str(path), "-o", str(tmp_path / "p.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_plot_series_reads_baselines_and_results(tmp_path: Path) -> None:
    path = _baseline(tmp_path, "k-x1", 2)
    results = result_file(tmp_path / "r.json", {"t.py::test_a": 40.0}, n=5)
    series = cli._series([path, results])
    labels = [label for label, _ in series["t.py::test_a"]]
    assert labels == ["0abcdef012", "1abcdef012", "r"]
    assert len(series["t.py::test_a"][2][1]) == 5
