"""A served model measured from its client: the example OpenAI-compatible server, driven by
the official ``openai`` client, plain and streamed.

``tpw_server`` starts the server command (``{port}`` becomes a free port), waits until it
answers, and aims the session's sensor at it: on a GPU machine NVML measures the GPUs the
server uses, without one ``cpu-estimate`` counts the server's process tree. Tokens come from
the responses' ``usage`` (``openai_tokens``), never from counting chunks.

Needs ``pip install fastapi uvicorn openai`` (the ``examples`` extra has them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from pytest_tpw.count import openai_tokens

SERVER = [sys.executable, str(Path(__file__).with_name("openai_server.py")), "--port", "{port}"]
MESSAGES = [{"role": "user", "content": "Say something about joules."}]


@pytest.fixture
def model(tpw_server: Any) -> Any:
    return tpw_server(SERVER, startup_timeout_s=180)


def test_served_completions(tpw: Any, model: Any) -> None:
    client = model.client()
    out = tpw(
        client.completions.create,
        model="tiny-llm",
        prompt="tokens per joule",
        max_tokens=16,
        tokens=openai_tokens,
    )
    assert out.usage.completion_tokens == 16


def test_served_chat_streamed(tpw: Any, model: Any) -> None:
    client = model.client()

    def chat() -> list[Any]:
        stream = client.chat.completions.create(
            model="tiny-llm",
            messages=MESSAGES,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        return list(stream)  # consume it inside the window: the work happens while reading

    chunks = tpw(chat, tokens=openai_tokens)
    assert chunks[-1].usage.completion_tokens == 16
    assert not chunks[-1].choices  # the usage chunk
