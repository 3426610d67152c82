"""The example OpenAI-compatible server, started by ``ServerProcess`` and driven by ``openai``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from pytest_tpw.serving.process import ServerProcess, ServerStartError  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_server.py"
STARTUP_S = 120.0  # importing torch on a loaded shared host can be slow
MESSAGES = [{"role": "user", "content": "Count the joules."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, str(EXAMPLE), "--port", "{port}", "--model-name", "tiny"]
    with ServerProcess(command, startup_timeout_s=STARTUP_S, log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    return server.openai_client(timeout=60.0)


def test_models(client: Any) -> None:
    assert [model.id for model in client.models.list()] == ["tiny"]


def test_completion_usage_counts_the_generated_tokens(client: Any) -> None:
    prompt = "héllo"  # 6 UTF-8 bytes: the example's tokenizer gives one token per byte
    out = client.completions.create(model="tiny", prompt=prompt, max_tokens=7)
    ids = out.model_extra["tpw_token_ids"]
    assert len(ids) == 7
    assert out.usage is not None
    assert out.usage.completion_tokens == len(ids) == len(out.choices[0].text.split())
    assert out.usage.prompt_tokens == len(prompt.encode("utf-8"))
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.choices[0].finish_reason == "length"
    again = client.completions.create(model="tiny", prompt=prompt, max_tokens=7)
    assert again.model_extra["tpw_token_ids"] == ids  # greedy: the same tokens every time


def test_streamed_completion_with_usage(client: Any) -> None:
    plain = client.completions.create(model="tiny", prompt="abc", max_tokens=5)
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt="abc",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [chunk.choices[0].text for chunk in chunks if chunk.choices]
    assert "".join(texts) == plain.choices[0].text
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == len(texts) == 5
    assert last.usage.prompt_tokens == 3
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_chat_plain_and_streamed_agree(client: Any) -> None:
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6)
    assert plain.usage is not None and plain.usage.completion_tokens == 6
    assert len(plain.model_extra["tpw_token_ids"]) == 6
    content = plain.choices[0].message.content
    assert content is not None and len(content.split()) == 6
    stream = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == content
    assert [c.model_extra["tpw_token_id"] for c in token_chunks] == plain.model_extra[
        "tpw_token_ids"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(token_chunks) == 6
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_stream_without_usage_option_has_no_usage_chunk(client: Any) -> None:
    chunks = list(
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, stream=True)
    )
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_bad_request_is_an_error(client: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", max_tokens=10_000)


def test_server_tree_and_stop(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLE), "--port", "{port}"]
    server = ServerProcess(command, startup_timeout_s=STARTUP_S, log_path=tmp_path / "s.log")
    with server:
        pid = server.pid
        assert pid in server.process_tree_pids()
        uuids = server.gpu_uuids()
        if torch.cuda.is_available():  # the example serves on cuda:0 where there is one
            assert len(uuids) == 1 and uuids[0].startswith("GPU-")
        else:
            assert uuids == []
    assert server.returncode is not None
    assert server.process_tree_pids() == []
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()  # reaped by stop(): not even a zombie
    assert "Application shutdown complete" in server.log_tail(20)


def test_start_failure_shows_the_log_tail(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLE), "--port", "not-a-number"]
    server = ServerProcess(command, port=1, startup_timeout_s=STARTUP_S, log_path=tmp_path / "l")
    with pytest.raises(ServerStartError, match="exited with status 2") as info:
        server.start()
    assert "invalid int value" in str(info.value)  # argparse's message, from the log
