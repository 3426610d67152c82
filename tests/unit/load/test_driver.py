"""The load driver against a real HTTP server on the loopback (tests/fakes/openai_stream.py):
the official openai client, streamed responses, every wait bounded. Assertions rest on the
requests' own timestamps and the server's counts, never on how fast the machine is."""

from __future__ import annotations

import itertools
import re
import statistics
import time
from typing import Any

import pytest

from pytest_tpw.load import driver
from pytest_tpw.load.driver import LoadRun, arrival_gaps, drive
from pytest_tpw.load.figures import WindowFigures
from pytest_tpw.load.plan import LoadPlan
from pytest_tpw.load.shape import LoadError, LoadShape
from tests.fakes.openai_stream import Behaviour, serving

pytest.importorskip("openai")


class Edges:
    """Records when the steady part opened and closed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def open(self) -> float:
        now = time.perf_counter()
        self.calls.append(("open", now))
        return now

    def close(self) -> float:
        now = time.perf_counter()
        self.calls.append(("close", now))
        return now


def shape(**kw: Any) -> LoadShape:
    args: dict[str, Any] = dict(
        concurrency=4, rate=None, prompts=None, max_tokens=8, endpoint="chat", seed=0
    )
    args.update(kw)
    return LoadShape.make(**args)


def run(url: str, s: LoadShape, **kw: Any) -> tuple[LoadRun, Edges]:
    edges = Edges()
    plan = LoadPlan(
        base_url=url,
        shape=s,
        duration_s=kw.get("duration_s", 0.3),
        requests=kw.get("requests"),
        timeout_s=kw.get("timeout_s", 30.0),
        model=kw.get("model"),
        api_key="pytest-tpw",
        extra_body=None,
    )
    return drive(plan, edges=edges), edges


def max_in_flight(records: list[driver.RequestRecord]) -> int:
    events = sorted(
        [(r.sent, 1) for r in records] + [(r.ended or 0.0, -1) for r in records],
        key=lambda e: (e[0], e[1]),
    )
    return max(itertools.accumulate(delta for _, delta in events))


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_closed_loop_keeps_n_streams_and_measures_after_the_first_burst(endpoint: str) -> None:
    with serving() as (url, b):
        out, edges = run(url, shape(endpoint=endpoint))
    assert [c for c, _ in edges.calls] == ["open", "close"]
    assert out.steady_start == edges.calls[0][1] and out.steady_end == edges.calls[1][1]
    assert out.started <= out.steady_start < out.steady_end <= out.ended
    assert out.model == "fake-model"  # the first of /v1/models
    assert b.received == len(out.records) and all(r.ok for r in out.records)
    assert max_in_flight(out.records) <= 4
    # the ramp is over before the steady part: every stream's first request has ended
    firsts = sorted(out.records, key=lambda r: r.sent)[:4]
    assert all(r.ended is not None and r.ended <= out.steady_start for r in firsts)
    assert {r.tokens for r in out.records} == {8}  # usage, as the server counted it
    body = b.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 8 and body["model"] == "fake-model"
    assert ("messages" in body) == (endpoint == "chat")


def test_tokens_come_from_usage_not_from_chunks() -> None:
    with serving(Behaviour(tokens_per_chunk=3)) as (url, _):
        out, _ = run(url, shape(max_tokens=5))
    assert {r.tokens for r in out.records} == {15}
    assert {len(r.chunks) for r in out.records} == {5}


def test_a_request_count_ends_the_steady_part() -> None:
    with serving() as (url, _):
        out, _ = run(url, shape(concurrency=2), duration_s=None, requests=12)
    figures = WindowFigures.of(out)
    assert figures.completed >= 12
    assert out.cut_short is None


def test_every_failed_request_is_counted() -> None:
    with serving(Behaviour(fail_every=10)) as (url, b):
        out, _ = run(url, shape(), duration_s=0.5)
    figures = WindowFigures.of(out)
    assert b.failed >= 1
    assert figures.errors == b.failed  # not one left out
    assert figures.requests == b.received
    assert figures.error_kinds == {"HTTP 500 (InternalServerError)": b.failed}
    assert "injected failure" in next(iter(figures.error_examples.values()))


def test_a_stream_without_usage_fails_its_request() -> None:
    with (
        serving(Behaviour(usage=False)) as (url, _),
        pytest.raises(LoadError, match="every request of the ramp failed") as info,
    ):
        run(url, shape(concurrency=2))
    assert "stream_options={'include_usage': true}" in str(info.value)


def test_a_server_that_never_answers_is_given_up_at_the_bound() -> None:
    with (
        serving(Behaviour(hang_after=0)) as (url, _),
        pytest.raises(LoadError, match="never reached a steady state") as info,
    ):
        run(url, shape(concurrency=2), duration_s=0.2, timeout_s=2.0)
    # the client's own timeout (also timeout_s) may end the requests as failures just before
    # the bound does, on a loaded machine: either way none of them was answered
    said = re.search(r"(\d+) request\(s\) sent, (\d+) finished(?:, (\d+) failed)?", str(info.value))
    assert said is not None, str(info.value)
    sent, finished, failed = (int(g or 0) for g in said.groups())
    assert sent >= 2
    assert finished == failed


def test_requests_left_at_the_bound_are_cancelled_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(driver, "DRAIN_MIN_S", 0.2)
    # the first 2 requests (the ramp) answer; every later one hangs until cancelled
    with serving(Behaviour(hang_after=2)) as (url, _):
        out, _ = run(url, shape(concurrency=2), duration_s=0.2, timeout_s=3.0)
    cancelled = [r for r in out.records if r.kind == "cancelled at the time bound"]
    assert len(cancelled) == 2
    assert WindowFigures.of(out).errors == 2


def test_an_open_loop_sends_from_its_seeded_arrivals() -> None:
    with serving() as (url, b):
        out, _ = run(url, shape(concurrency=None, rate=50.0, seed=3), duration_s=0.3)
    assert len(out.records) == b.received >= 2
    assert all(r.ok for r in out.records)
    first = min(r.ended or 0.0 for r in out.records)
    assert out.steady_start >= first  # steady once a request has gone through


def test_arrival_gaps_are_seeded_and_average_one_over_the_rate() -> None:
    a = list(itertools.islice(arrival_gaps(4.0, 1), 20000))
    assert a[:50] == list(itertools.islice(arrival_gaps(4.0, 1), 50))
    assert a[:50] != list(itertools.islice(arrival_gaps(4.0, 2), 50))
    assert statistics.fmean(a) == pytest.approx(0.25, rel=0.03)


def test_a_bad_address_is_said_before_any_load() -> None:
    with pytest.raises(LoadError, match="every request of the ramp failed") as info:
        # nothing listens there: the connection is refused at once
        run("http://127.0.0.1:9/v1", shape(concurrency=1), model="m", timeout_s=5.0)
    assert "Connect" in str(info.value)  # openai's APIConnectionError, or httpx's ConnectError


def test_a_server_that_cannot_name_its_model_is_said_so() -> None:
    with pytest.raises(LoadError, match=r"asking http://127\.0\.0\.1:9/v1/models which model"):
        run("http://127.0.0.1:9/v1", shape(concurrency=1), timeout_s=5.0)


def test_an_open_loop_starts_at_its_first_success_and_counts_the_failures() -> None:
    with serving(Behaviour(fail_every=2)) as (url, b):
        out, _ = run(url, shape(concurrency=None, rate=50.0, seed=1), duration_s=0.3)
    assert WindowFigures.of(out).errors == b.failed >= 1
    first_ok = min(r.ended or 0.0 for r in out.records if r.ok)
    assert out.steady_start >= first_ok


def test_an_open_loop_whose_every_request_fails_says_so_at_the_bound() -> None:
    with (
        serving(Behaviour(fail_every=1)) as (url, _),
        pytest.raises(LoadError, match="never reached a steady state") as info,
    ):
        run(url, shape(concurrency=None, rate=20.0), duration_s=0.2, timeout_s=1.0)
    assert "failed (the first: InternalServerError" in str(info.value)
