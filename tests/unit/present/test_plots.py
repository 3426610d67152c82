"""Figures: the overview forest plot and the history, written as real PNG and SVG files."""

from __future__ import annotations

import json
import random
import struct
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.cli import main as cli
from pytest_tpw.present import plots
from pytest_tpw.store import baseline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_svg(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")


def results_doc(n: int, seed: int = 0) -> dict[str, Any]:
    """A synthetic results document with n compared measurements."""
    rng = random.Random(seed)
    verdicts = ["REGRESSED", "MINOR_REGRESSION", "UNCHANGED", "IMPROVED", "INCONCLUSIVE"]
    measurements = {}
    for i in range(n):
        ratio = rng.uniform(0.85, 1.15)
        measurements[f"tests/test_models.py::test_decode[model-{i:03d}]"] = {
            "verdict": verdicts[i % 5],
            "summary": {"tokens_per_joule": 100 * ratio, "n": 20},
            "comparison": {
                "verdict": verdicts[i % 5],
                "ratio": ratio,
                "ci": [ratio - 0.02, ratio + 0.02],
                "tolerance": 0.05,
            },
        }
    return {
        "schema": 1,
        "settings": {"tolerance": 0.05, "noise_floor": 0.01},
        "environment": {
            "hardware_key": "sim-x1",
            "sensor": {"name": "sim", "provenance": "simulated"},
        },
        "measurements": measurements,
        "run_wide": [{"hardware_key": "sim-x1", "ratio": 0.99, "verdict": "FINE"}],
    }


@pytest.fixture(autouse=True)
def _matplotlib() -> None:
    pytest.importorskip("matplotlib")


def test_overview_png_and_svg(tmp_path: Path) -> None:
    doc = results_doc(12)
    png = plots.overview(doc, tmp_path / "o.png")
    assert png_size(png)[1] > 100
    assert_svg(plots.overview(doc, tmp_path / "o.svg"))
    assert [c.ratio for c in plots.compared(doc)] == sorted(c.ratio for c in plots.compared(doc))


def test_overview_of_300_measurements_grows_one_row_each(tmp_path: Path) -> None:
    small = png_size(plots.overview(results_doc(20), tmp_path / "small.png"))
    big = png_size(plots.overview(results_doc(300), tmp_path / "big.png"))
    # one row per measurement: the figure grows with the count, labels stay apart
    assert big[1] > 3 * small[1]
    assert big[1] / 300 >= 10  # at least ~10 pixels a row


def test_overview_refuses_other_suffixes_and_uncompared_files(tmp_path: Path) -> None:
    with pytest.raises(plots.PlotError, match=r"\.png or \.svg"):
        plots.overview(results_doc(3), tmp_path / "o.pdf")
    doc = results_doc(3)
    for entry in doc["measurements"].values():
        del entry["comparison"]
    with pytest.raises(plots.PlotError, match="--tpw-update"):
        plots.overview(doc, tmp_path / "o.png")


def test_without_matplotlib_the_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plots.PlotError, match="pip install matplotlib"):
        plots.overview(results_doc(3), tmp_path / "o.png")


# -- history ---------------------------------------------------------------------------------


def baseline_file(
    directory: Path,
    key: str,
    sensor: str,
    provenance: str,
    level: float,
    measurements: list[str],
    sessions: int = 3,
) -> Path:
    stored = baseline.BaselineFile(key, {"sensor": sensor, "provenance": provenance})
    for i in range(sessions):
        tokens = 100
        joules = tokens / (level * (1 + 0.01 * i))
        session = baseline.StoredSession(
            date=f"2026-11-0{i + 1}T10:00:00+00:00",
            commit=f"{i}abcdef0123",
            software={},
            sensor=sensor,
            provenance=provenance,
            samples=[
                (tokens, joules, 1.0),
                (tokens, joules * 1.01, 1.0),
                (tokens, joules * 0.99, 1.0),
            ],
        )
        stored.merge(dict.fromkeys(measurements, session), history=10, mode="extend")
    path = baseline.path_for(directory, key)
    baseline.write(path, stored)
    return path


def results_file(
    path: Path,
    key: str,
    sensor: str,
    provenance: str,
    level: float,
    measurements: list[str],
    date: str | None = None,
) -> Path:
    env: dict[str, Any] = {
        "hardware_key": key,
        "commit": "feedface99",
        "sensor": {"name": sensor, "provenance": provenance},
    }
    if date:
        env["date"] = date
    doc = {
        "schema": 1,
        "environment": env,
        "measurements": {
            m: {
                "sensor": sensor,
                "provenance": provenance,
                "samples": [
                    {"tokens": 100, "joules": 100 / (level * f), "seconds": 1.0}
                    for f in (0.99, 1.0, 1.01)
                ],
            }
            for m in measurements
        },
    }
    path.write_text(json.dumps(doc))
    return path


def test_history_never_joins_sensors_provenances_or_hardware(tmp_path: Path) -> None:
    (tmp_path / "tpw").mkdir()
    baseline_file(tmp_path / "tpw", "sim-x1", "sim", "simulated", 460.0, ["t::a"])
    baseline_file(tmp_path / "tpw", "cpu-x1", "cpu_estimate", "estimated", 5.0, ["t::a"])
    results = results_file(
        tmp_path / "r.json",
        "sim-x1",
        "sim",
        "simulated",
        470.0,
        ["t::a"],
        date="2026-11-05T10:00:00Z",
    )
    series = plots.load_series([tmp_path / "tpw", results])
    assert set(series) == {
        plots.Group("t::a", "sim", "simulated", "sim-x1"),
        plots.Group("t::a", "cpu_estimate", "estimated", "cpu-x1"),
    }
    for group, points in series.items():
        levels = [p.level for p in points]
        # every line stays on one scale: 460ish or 5ish, never both
        assert max(levels) / min(levels) < 1.1, group
    sim = series[plots.Group("t::a", "sim", "simulated", "sim-x1")]
    assert [p.date.day for p in sim] == [1, 2, 3, 5]  # real dates, in order
    assert [p.label for p in sim] == ["0abcdef", "1abcdef", "2abcdef", "feedfac"]
    assert [p.kind for p in sim] == [plots.STORED] * 3 + [plots.RESULTS]
    png = plots.history(series, tmp_path / "h.png")
    assert png_size(png)[1] > 2 * 200  # two panels
    assert_svg(plots.history(series, tmp_path / "h.svg"))


def test_history_keeps_a_session_read_twice_once(tmp_path: Path) -> None:
    path = baseline_file(tmp_path, "sim-x1", "sim", "simulated", 100.0, ["t::a"], sessions=1)
    stored = baseline.load(path, "sim-x1")
    assert stored is not None
    (session,) = stored.measurements["t::a"]
    doc = {
        "schema": 1,
        "environment": {
            "hardware_key": "sim-x1",
            "sensor": {"name": "sim", "provenance": "simulated"},
        },
        "measurements": {
            "t::a": {
                "samples": [{"tokens": t, "joules": j, "seconds": s} for t, j, s in session.samples]
            }
        },
    }
    (tmp_path / "r.json").write_text(json.dumps(doc))
    series = plots.load_series([path, tmp_path / "r.json"])
    (points,) = series.values()
    assert len(points) == 1 and points[0].kind == plots.STORED


def test_history_shows_superseded_sessions_apart_and_results_by_verdict(tmp_path: Path) -> None:
    folder = tmp_path / ".tpw"
    folder.mkdir()
    path = baseline_file(folder, "sim-x1", "sim", "simulated", 100.0, ["t::a"], sessions=1)
    # an accept: the stored session moves to superseded/, a new one is the baseline
    stored = baseline.load(path, "sim-x1")
    assert stored is not None
    (old,) = stored.measurements["t::a"]
    new = replace(old, date="2026-11-20T00:00:00+00:00", samples=[(100, 0.8, 1.0)] * 3)
    baseline.flush(path, "sim-x1", {}, {"t::a": new}, 10, "replace")
    results = results_file(
        tmp_path / "r.json",
        "sim-x1",
        "sim",
        "simulated",
        90.0,
        ["t::a"],
        date="2026-11-25T00:00:00Z",
    )
    doc = json.loads(results.read_text())
    doc["measurements"]["t::a"]["verdict"] = "REGRESSED"
    results.write_text(json.dumps(doc))
    series = plots.load_series([folder, results])
    (points,) = series.values()
    assert [(p.kind, p.verdict) for p in points] == [
        (plots.SUPERSEDED, None),
        (plots.STORED, None),
        (plots.RESULTS, "REGRESSED"),
    ]
    assert points[0].level == pytest.approx(100.0, rel=0.02)
    assert points[1].level == pytest.approx(125.0, rel=0.02)
    assert png_size(plots.history(series, tmp_path / "h.png"))[0] > 0
    # the file of superseded sessions named alone is still told apart
    alone = plots.load_series([baseline.superseded_path(path)])
    assert [p.kind for p in next(iter(alone.values()))] == [plots.SUPERSEDED]


def test_history_of_one_session_spans_days_not_years(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = baseline_file(tmp_path, "sim-x1", "sim", "simulated", 100.0, ["t::a"], sessions=1)
    series = plots.load_series([path])
    kept: list[Any] = []
    save = plots._save

    def keep(fig: Any, out: Path) -> Path:
        kept.append(fig)
        return save(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    plots.history(series, tmp_path / "one.svg")
    (fig,) = kept
    low, high = fig.axes[0].get_xlim()
    assert 0.5 < high - low < 3.0  # matplotlib dates are days


def test_history_labels_at_most_ten_sessions_a_panel(tmp_path: Path) -> None:
    assert plots._labelled(5) == {0, 1, 2, 3, 4}
    many = plots._labelled(50)
    assert len(many) <= plots.MAX_LABELS and 49 in many


def test_history_needs_match_beyond_twelve_panels(tmp_path: Path) -> None:
    names = [f"tests/test_{kind}.py::test_{i}" for kind in ("decode", "prefill") for i in range(10)]
    path = baseline_file(tmp_path, "sim-x1", "sim", "simulated", 100.0, names, sessions=2)
    series = plots.load_series([path])
    with pytest.raises(plots.PlotError, match="--match"):
        plots.history(series, tmp_path / "h.png")
    assert len(plots.select(series, "*decode*")) == 10
    assert len(plots.select(series, "test_decode.py::test_1")) == 1
    with pytest.raises(plots.PlotError, match="no measurement matches"):
        plots.select(series, "nothing")
    plots.history(series, tmp_path / "h.png", match="prefill")
    assert png_size(tmp_path / "h.png")[1] > 0


def test_matches_is_a_glob_or_a_substring() -> None:
    assert plots.matches("t.py::test_a[1]", "test_a")
    assert plots.matches("t.py::test_a[1]", "t.py::*")
    assert not plots.matches("t.py::test_a[1]", "test_b")
    assert not plots.matches("t.py::test_a[1]", "test_a*")  # a glob matches the whole key


def test_history_reads_only_our_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(plots.PlotError, match=r"x\.json: neither"):
        plots.load_series([tmp_path / "x.json"])
    with pytest.raises(plots.PlotError, match="no such file"):
        plots.load_series([tmp_path / "missing.json"])


# -- the command -----------------------------------------------------------------------------


def test_cli_plot_overview_and_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps(results_doc(30)))
    assert cli.main(["plot", "overview", str(results), "-o", str(tmp_path / "o.svg")]) == 0
    assert_svg(tmp_path / "o.svg")
    path = baseline_file(tmp_path, "sim-x1", "sim", "simulated", 100.0, ["t::a"])
    assert cli.main(["plot", "history", str(path), "-o", str(tmp_path / "h.png")]) == 0
    assert png_size(tmp_path / "h.png")[0] > 0
    assert cli.main(["plot", "history", str(path), "-o", str(tmp_path / "h.jpg")]) == 2
    assert ".png or .svg" in capsys.readouterr().err
