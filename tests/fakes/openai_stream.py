"""A small OpenAI-compatible streaming server for load tests: no model, real HTTP.

It serves ``GET /v1/models`` and streamed ``POST /v1/chat/completions`` and
``/v1/completions`` on the loopback, in a thread of the test process. Each response streams
``max_tokens`` text chunks ``token_s`` apart after ``first_s``, then (when asked with
``stream_options.include_usage``) a usage chunk. Knobs for what can go wrong: ``fail_every``
(every N-th request answers HTTP 500), ``fail_after`` (every request after the N-th
does), ``usage=False`` (no usage chunk), ``hang_after`` (requests
after the N-th never finish), ``tokens_per_chunk`` (usage counts more tokens than chunks).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    first_s: float = 0.005
    token_s: float = 0.001
    fail_every: int = 0
    fail_after: int | None = None
    usage: bool = True
    hang_after: int | None = None
    tokens_per_chunk: int = 1
    #: Filled by the server: requests received, and those it failed.
    received: int = 0
    failed: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def _handler(b: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._json(
                    200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                )
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with b.lock:
                b.received += 1
                n = b.received
                b.bodies.append(body)
                fail = (b.fail_every > 0 and n % b.fail_every == 0) or (
                    b.fail_after is not None and n > b.fail_after
                )
                if fail:
                    b.failed += 1
            if fail:
                self._json(500, {"error": {"message": f"injected failure {n}"}})
                return
            if b.hang_after is not None and n > b.hang_after:
                b.stop.wait(60)
                return
            chat = self.path.endswith("/chat/completions")
            chunks = int(body.get("max_tokens") or 16)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            time.sleep(b.first_s)
            for i in range(chunks):
                if i:
                    time.sleep(b.token_s)
                text = f" w{i}"
                choice = (
                    {"index": 0, "delta": {"content": text}, "finish_reason": None}
                    if chat
                    else {"index": 0, "text": text, "finish_reason": None}
                )
                self._event(
                    {
                        "id": "x",
                        "object": "chunk",
                        "created": 0,
                        "model": "fake-model",
                        "choices": [choice],
                    }
                )
            include = (body.get("stream_options") or {}).get("include_usage")
            if include and b.usage:
                tokens = chunks * b.tokens_per_chunk
                usage = {
                    "prompt_tokens": 3,
                    "completion_tokens": tokens,
                    "total_tokens": tokens + 3,
                }
                self._event(
                    {
                        "id": "x",
                        "object": "chunk",
                        "created": 0,
                        "model": "fake-model",
                        "choices": [],
                        "usage": usage,
                    }
                )
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _event(self, payload: object) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # a load's connections arrive together


@contextmanager
def serving(behaviour: Behaviour | None = None) -> Iterator[tuple[str, Behaviour]]:
    """``(base_url, behaviour)`` of a server running until the block ends."""
    b = behaviour or Behaviour()
    server = _Server(("127.0.0.1", 0), _handler(b))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", b
    finally:
        b.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


if __name__ == "__main__":  # a standalone server for benchmarks: prints its URL, serves
    import sys

    with serving(Behaviour(first_s=float(sys.argv[1]), token_s=float(sys.argv[2]))) as (u, _):
        print(u, flush=True)
        threading.Event().wait()
