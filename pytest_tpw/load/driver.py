"""The load driver: streamed requests on the official ``openai`` client, each with its own
timestamps, at a stated concurrency or rate, bounded in time.

One call of :func:`drive` is one load window: a ramp (unmeasured), a steady part between
two edges the caller reads energy at, and a drain (unmeasured). The steady part starts once
the load has settled (closed loop: every stream has finished its first request, so the
first burst is over; open loop: the first request has finished) and ends after its
duration or its request count, whichever comes first; then no new request is sent and
those in flight finish. Everything is bounded by ``timeout_s``: a request still running then
is cancelled and counted as failed.

Why not an existing generator (vLLM's ``benchmark_serving``, guidellm, aiperf): each brings
a large install (vLLM itself; transformers and a CLI stack; a multi-process service) for
what is, here, a few dozen concurrent streams whose chunk arrival times we need in this
process, between two energy reads. The ``openai`` client is already what users test their
servers with.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_tpw.load.plan import LoadPlan
from pytest_tpw.load.shape import LoadError, LoadShape

#: Longest error text kept per request.
MAX_ERROR_TEXT = 300
#: The least time the requests in flight get to finish after the steady part, in seconds.
DRAIN_MIN_S = 5.0

NO_USAGE = (
    "the stream carried no usage, so its tokens are unknown: the server must answer "
    "stream_options={'include_usage': true} with a last chunk holding usage (vLLM, SGLang, "
    "llama.cpp's server and TGI do)"
)


@dataclass
class RequestRecord:
    """One request, as the client saw it (times from the driver's clock, in seconds)."""

    index: int
    sent: float
    #: Arrival times of the chunks that carried generated text.
    chunks: list[float] = field(default_factory=list)
    ended: float | None = None
    #: ``usage.completion_tokens`` of the response.
    tokens: int | None = None
    error: str | None = None
    #: What the failure is counted as (``HTTP 500 (InternalServerError)``, ``no usage``...).
    kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.tokens is not None and self.ended is not None


@dataclass
class LoadRun:
    """One load window: its requests and the edges of its steady part."""

    shape: LoadShape
    model: str
    started: float
    steady_start: float
    steady_end: float
    ended: float
    records: list[RequestRecord]
    #: Why the steady part ended early, if it did (the time bound).
    cut_short: str | None = None


class Edges(Protocol):
    """Where the steady part's energy is read: each returns the instant it read at."""

    def open(self) -> float: ...

    def close(self) -> float: ...


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


def _error_kind(exc: BaseException) -> str:
    """What failed requests are counted by: the HTTP status when there was one, else the
    kind of error (a refused connection, a timeout...)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status} ({type(exc).__name__})"
    return type(exc).__name__


def arrival_gaps(rate: float, seed: int) -> Iterator[float]:
    """Seconds between arrivals of a Poisson process of ``rate`` per second: the same
    sequence for the same seed, whatever the machine."""
    rng = random.Random(seed)
    while True:
        yield rng.expovariate(rate)


class _Driver:
    def __init__(
        self, client: Any, plan: LoadPlan, model: str, edges: Edges, clock: Callable[[], float]
    ) -> None:
        self.client = client
        self.shape = plan.shape
        self.model = model
        self.duration_s = plan.duration_s
        self.requests = plan.requests
        self.timeout_s = plan.timeout_s
        self.extra_body = dict(plan.extra_body) if plan.extra_body else None
        self.edges = edges
        self.clock = clock
        self.records: list[RequestRecord] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.settled = asyncio.Event()
        self.progress = asyncio.Event()
        self.first_done = 0
        self.steady_start: float | None = None
        self.completed_in_steady = 0

    # -- one request ----------------------------------------------------------------------

    async def request(self) -> RequestRecord:
        index = len(self.records)
        prompt = self.shape.prompts[index % len(self.shape.prompts)]
        record = RequestRecord(index, self.clock())
        self.records.append(record)
        chat = self.shape.endpoint == "chat"
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.shape.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.extra_body:
            common["extra_body"] = self.extra_body
        try:
            if chat:
                messages = [{"role": "user", "content": prompt}]
                stream = await self.client.chat.completions.create(messages=messages, **common)
            else:
                stream = await self.client.completions.create(prompt=prompt, **common)
            async for chunk in stream:
                now = self.clock()
                usage = getattr(chunk, "usage", None)
                if usage is not None and getattr(usage, "completion_tokens", None) is not None:
                    record.tokens = int(usage.completion_tokens)
                for choice in getattr(chunk, "choices", None) or ():
                    text = choice.delta.content if chat else choice.text
                    if text:
                        record.chunks.append(now)
                        break
            record.ended = self.clock()
            if record.tokens is None:
                record.error, record.kind = NO_USAGE, "no usage in the stream"
        except asyncio.CancelledError:
            record.ended = self.clock()
            record.error = (
                f"still running when the load window's time bound ({self.timeout_s:g} s) ended it"
            )
            record.kind = "cancelled at the time bound"
            raise
        except Exception as exc:  # every failure is counted, never dropped
            record.ended = self.clock()
            record.error, record.kind = _error_text(exc), _error_kind(exc)
        finally:
            start = self.steady_start
            if start is not None and record.ended is not None and record.ended >= start:
                self.completed_in_steady += 1
            self.progress.set()
        return record

    # -- the two kinds of load ------------------------------------------------------------

    async def stream(self) -> None:
        """One of the closed loop's streams: the next request when the last one ended."""
        first = True
        while not self.stopping:
            await self.request()
            if first:
                first = False
                self.first_done += 1
                if self.first_done >= (self.shape.concurrency or 1):
                    self.settled.set()

    async def arrivals(self) -> None:
        """The open loop: Poisson arrivals at the shape's rate, from its seed."""
        gaps = arrival_gaps(self.shape.rate or 1.0, self.shape.seed)
        next_at = self.clock()
        while not self.stopping:
            self.spawn(self.one_arrival())
            next_at += next(gaps)
            delay = next_at - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)

    async def one_arrival(self) -> None:
        record = await self.request()
        if record.ok:  # one request went through: the open loop is under way
            self.settled.set()

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the window -----------------------------------------------------------------------

    async def run(self) -> LoadRun:
        started = self.clock()
        deadline = started + self.timeout_s
        if self.shape.concurrency is not None:
            for _ in range(self.shape.concurrency):
                self.spawn(self.stream())
        else:
            self.spawn(self.arrivals())
        try:
            try:
                await asyncio.wait_for(self.settled.wait(), max(deadline - self.clock(), 0.0))
            except asyncio.TimeoutError:
                raise LoadError(self.never_settled()) from None
            if not any(r.ok for r in self.records):
                raise LoadError(self.all_failed())
            steady_start = await asyncio.to_thread(self.edges.open)
            self.steady_start = steady_start
            cut_short = await self.steady(steady_start, deadline)
            steady_end = await asyncio.to_thread(self.edges.close)
        finally:
            self.stopping = True
        await self.drain(deadline)
        return LoadRun(
            self.shape,
            self.model,
            started,
            steady_start,
            steady_end,
            self.clock(),
            list(self.records),
            cut_short,
        )

    async def steady(self, start: float, deadline: float) -> str | None:
        """Wait until the steady part has lasted its duration or seen its request count
        complete; returns why it ended early when the time bound cut it."""
        end = deadline if self.duration_s is None else min(start + self.duration_s, deadline)
        while True:
            if self.requests is not None and self.completed_in_steady >= self.requests:
                return None
            left = end - self.clock()
            if left <= 0:
                if self.duration_s is not None and start + self.duration_s <= deadline:
                    return None
                asked = (
                    f"{self.duration_s:g} s"
                    if self.duration_s is not None
                    else f"{self.requests} requests"
                )
                return (
                    f"the steady part was cut short by the load window's time bound "
                    f"(timeout_s={self.timeout_s:g}) after {self.clock() - start:.3g} s and "
                    f"{self.completed_in_steady} finished requests, of {asked} asked"
                )
            self.progress.clear()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.progress.wait(), left)

    async def drain(self, deadline: float) -> None:
        """Let the requests in flight finish (unmeasured); cancel what the bound leaves."""
        pending = set(self.tasks)
        if not pending:
            return
        # a drain always gets a few seconds, even when the steady part used the bound
        left = max(deadline - self.clock(), DRAIN_MIN_S)
        _, still = await asyncio.wait(pending, timeout=left)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)

    def never_settled(self) -> str:
        done = sum(1 for r in self.records if r.ended is not None)
        what = (
            f"all {self.shape.concurrency} streams to finish their first request"
            if self.shape.concurrency is not None
            else "a first request to succeed"
        )
        head = (
            f"tpw.load: the load never reached a steady state: waited {self.timeout_s:g} s "
            f"(timeout_s) for {what}; {len(self.records)} request(s) sent, {done} finished"
        )
        errors = [r.error for r in self.records if r.error]
        if errors:
            head += f", {len(errors)} failed (the first: {errors[0]})"
        return head + ". Is the server answering? Raise timeout_s for a slow one"

    def all_failed(self) -> str:
        errors = [r.error for r in self.records if r.error]
        first = errors[0] if errors else "no response"
        return (
            f"tpw.load: every request of the ramp failed ({len(errors)} of "
            f"{len(self.records)}); the first: {first}"
        )


async def _first_model(client: Any, base_url: str) -> str:
    try:
        page = await client.models.list()
    except Exception as exc:
        raise LoadError(
            f"tpw.load: asking {base_url}/models which model it serves failed "
            f"({_error_text(exc)}); is the server up? model= skips this question"
        ) from None
    data = getattr(page, "data", None) or []
    if not data:
        raise LoadError(
            "tpw.load: the server lists no model at /v1/models; pass model= with the name it serves"
        )
    return str(data[0].id)


async def _drive(plan: LoadPlan, edges: Edges, clock: Callable[[], float]) -> LoadRun:
    try:
        import openai
    except ImportError:
        raise LoadError(
            "tpw.load drives the server with the official OpenAI client: pip install openai"
        ) from None
    client = openai.AsyncOpenAI(
        base_url=plan.base_url, api_key=plan.api_key, timeout=plan.timeout_s, max_retries=0
    )
    async with client:
        name = plan.model if plan.model is not None else await _first_model(client, plan.base_url)
        return await _Driver(client, plan, name, edges, clock).run()


def drive(
    plan: LoadPlan, *, edges: Edges, clock: Callable[[], float] = time.perf_counter
) -> LoadRun:
    """Run one load window of ``plan``, reading its steady part's edges with ``edges``.

    Runs an event loop of its own in a thread, so a test that already runs one (an async
    test) can call it. Ctrl-C stops the load and is raised here.
    """
    outcome: dict[str, Any] = {}
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> LoadRun:
        holder["loop"] = asyncio.get_running_loop()
        holder["task"] = asyncio.current_task()
        ready.set()
        return await _drive(plan, edges, clock)

    def target() -> None:
        try:
            outcome["run"] = asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="pytest-tpw-load", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except BaseException:
        ready.wait(5.0)
        loop, task = holder.get("loop"), holder.get("task")
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10.0)
        raise
    if "error" in outcome:
        raise outcome["error"]
    run: LoadRun = outcome["run"]
    return run


__all__ = ["DRAIN_MIN_S", "Edges", "LoadRun", "RequestRecord", "arrival_gaps", "drive"]
