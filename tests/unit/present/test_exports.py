"""Dashboard exports, checked the way their consumers parse them."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.cli import main as cli
from pytest_tpw.present import exports


def results_doc(n: int = 300, seed: int = 0) -> dict[str, Any]:
    """A synthetic --tpw-json document: n compared measurements with summaries."""
    rng = random.Random(seed)
    measurements: dict[str, Any] = {}
    for i in range(n):
        level = rng.uniform(5, 500)
        half = level * rng.uniform(0.005, 0.05)
        measurements[f"tests/test_m.py::test_{i:03d}"] = {
            "nodeid": f"tests/test_m.py::test_{i:03d}",
            "name": None,
            "sensor": "nvml",
            "provenance": "measured",
            "verdict": "UNCHANGED",
            "warnings": [],
            "samples": [{"tokens": 1000, "joules": 1000 / level, "seconds": 1.0}],
            "summary": {
                "tokens_per_joule": level,
                "joules_per_token": 1 / level,
                "watts": rng.uniform(100, 700),
                "tokens_per_second": level * 300,
                "n": 20,
                "ci": [level - half, level + half],
            },
        }
    return {
        "schema": 1,
        "measurements": measurements,
        "environment": {
            "hardware_key": "nvidia-h100-80gb-hbm3-x1",
            "sensor": {"name": "nvml", "provenance": "measured"},
            "software": {"torch": "2.13.0"},
        },
    }


def _strict_loads(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def test_bencher_output_is_valid_bmf_with_reciprocal_bounds() -> None:
    doc = results_doc(50)
    bmf = _strict_loads(exports.render(doc, "bencher"))
    # BMF: an object of benchmarks, each an object of measures, each {value[, lower, upper]}
    assert isinstance(bmf, dict) and set(bmf) == set(doc["measurements"])
    for name, measures in bmf.items():
        assert isinstance(measures, dict)
        assert set(measures) == {"tokens-per-joule", "joules-per-token", "watts"}
        for metric in measures.values():
            assert set(metric) <= {"value", "lower_value", "upper_value"}
            assert all(_number(v) for v in metric.values())
            if "lower_value" in metric:
                assert metric["lower_value"] <= metric["value"] <= metric["upper_value"]
        summary = doc["measurements"][name]["summary"]
        tpj, jpt = measures["tokens-per-joule"], measures["joules-per-token"]
        assert tpj["value"] == summary["tokens_per_joule"]
        assert [tpj["lower_value"], tpj["upper_value"]] == summary["ci"]
        assert jpt["lower_value"] == pytest.approx(1 / summary["ci"][1])
        assert jpt["upper_value"] == pytest.approx(1 / summary["ci"][0])
        assert set(measures["watts"]) == {"value"}


def test_bencher_leaves_out_bounds_without_an_interval_and_empty_measurements() -> None:
    doc = results_doc(3)
    keys = sorted(doc["measurements"])
    doc["measurements"][keys[0]]["summary"]["ci"] = None
    del doc["measurements"][keys[1]]["summary"]  # no samples: no summary
    doc["measurements"][keys[2]]["summary"]["tokens_per_joule"] = float("nan")
    bmf = _strict_loads(exports.render(doc, "bencher"))
    assert list(bmf) == [keys[0]]
    assert set(bmf[keys[0]]["tokens-per-joule"]) == {"value"}


def test_github_action_benchmark_entries_have_the_documented_shape() -> None:
    doc = results_doc(20)
    first = sorted(doc["measurements"])[0]
    doc["measurements"][first]["verdict"] = "REGRESSED"
    entries = _strict_loads(exports.render(doc, "github-action-benchmark"))
    assert isinstance(entries, list) and len(entries) == 20
    for e in entries:
        assert {"name", "unit", "value"} <= set(e) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(e["name"], str) and e["unit"] == "tokens/J" and _number(e["value"])
        assert isinstance(e["range"], str) and e["range"].startswith("±")
        lo, hi = doc["measurements"][e["name"]]["summary"]["ci"]
        assert float(e["range"].lstrip("± ")) == pytest.approx((hi - lo) / 2, rel=1e-3)
        assert isinstance(e["extra"], str)
        assert "n: 20" in e["extra"] and "nvml" in e["extra"] and "measured" in e["extra"]
        assert "nvidia-h100-80gb-hbm3-x1" in e["extra"]
    by_name = {e["name"]: e for e in entries}
    assert "verdict: REGRESSED" in by_name[first]["extra"]


def test_github_action_benchmark_without_interval_has_no_range() -> None:
    doc = results_doc(1)
    (entry,) = doc["measurements"].values()
    entry["summary"]["ci"] = None
    (item,) = _strict_loads(exports.render(doc, "github-action-benchmark"))
    assert "range" not in item and item["value"] == entry["summary"]["tokens_per_joule"]


def test_unknown_format_and_bad_document_are_clear_errors() -> None:
    with pytest.raises(exports.ExportError, match="bencher, github-action-benchmark"):
        exports.render(results_doc(1), "csv")
    with pytest.raises(exports.ExportError, match="measurements"):
        exports.render({"schema": 1}, "bencher")


def test_testbed_is_the_hardware_key() -> None:
    assert exports.bencher_testbed(results_doc(1)) == "nvidia-h100-80gb-hbm3-x1"
    assert exports.bencher_testbed({"measurements": {}}) == "unknown"


def test_cli_export_to_stdout_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results_doc(5)))
    assert cli.main(["export", "--format", "bencher", str(path)]) == 0
    assert len(_strict_loads(capsys.readouterr().out)) == 5
    out = tmp_path / "gab.json"
    assert (
        cli.main(["export", "--format", "github-action-benchmark", str(path), "-o", str(out)]) == 0
    )
    assert len(_strict_loads(out.read_text())) == 5
    assert cli.main(["export", "--testbed", str(path)]) == 0
    assert capsys.readouterr().out == "nvidia-h100-80gb-hbm3-x1\n"


def test_cli_export_refuses_a_baseline_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k-x1.json"
    path.write_text(
        json.dumps(
            {
                "format": "pytest-tpw baseline",
                "schema": 1,
                "hardware_key": "k-x1",
                "measurements": {},
            }
        )
    )
    assert cli.main(["export", "--format", "bencher", str(path)]) == 2
    err = capsys.readouterr().err
    assert "k-x1.json" in err and "baseline file" in err


def test_a_load_measurement_exports_its_latencies_and_failures() -> None:
    doc = results_doc(2)
    key = "tests/test_m.py::test_000"
    doc["measurements"][key]["load"] = {
        "concurrency": 8, "max_tokens": 32, "endpoint": "chat", "requests": 40, "errors": 3,
    }  # fmt: skip
    doc["measurements"][key]["latency"] = {
        "ttft_s": {"p50": 0.05, "p90": 0.08, "p99": 0.1, "n": 37},
        "tpot_s": {"p50": 0.002, "p90": None, "p99": None, "n": 0},
    }
    bmf = _strict_loads(exports.render(doc, "bencher"))
    loaded = bmf[key]
    assert loaded["ttft-p90"] == {"value": 0.08} and loaded["tpot-p50"] == {"value": 0.002}
    assert "tpot-p90" not in loaded  # no value, no measure
    assert loaded["failed-requests"] == {"value": 3}
    assert not any(m.startswith(("ttft", "failed")) for m in bmf["tests/test_m.py::test_001"])
    gab = _strict_loads(exports.render(doc, "github-action-benchmark"))
    (entry,) = [e for e in gab if e["name"] == key]
    assert entry["unit"] == "tokens/J"  # latencies stay out of the bigger-is-better values
    assert "load: concurrency 8, 32 output tokens, chat, 3 of 40 failed" in entry["extra"]
    assert "TTFT 50 ms / 80 ms / 100 ms" in entry["extra"]
