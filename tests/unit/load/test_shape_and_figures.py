"""The load's shape (what makes two loads comparable) and the figures of its windows, from
records built by hand: tokens of the steady part, latencies, errors, percentiles, limits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pytest_tpw.load.driver import LoadRun, RequestRecord
from pytest_tpw.load.figures import (
    LoadFigures,
    WindowFigures,
    latency_json,
    limit_breaches,
    percentile,
    steady_share,
)
from pytest_tpw.load.shape import PROMPTS, LoadError, LoadShape, prompt_digest, shape_changes


def shape(**kw: Any) -> LoadShape:
    args: dict[str, Any] = dict(
        concurrency=4, rate=None, prompts=None, max_tokens=16, endpoint="chat", seed=0
    )
    args.update(kw)
    return LoadShape.make(**args)


# -- the shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"concurrency": None}, "exactly one of concurrency="),
        ({"rate": 2.0}, "exactly one of concurrency="),
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"concurrency": True}, "concurrency must be an integer >= 1"),
        ({"concurrency": None, "rate": -1.0}, "rate must be a positive number"),
        ({"concurrency": None, "rate": math.inf}, "rate must be a positive number"),
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"endpoint": "embeddings"}, "endpoint must be 'chat'"),
        ({"prompts": "one prompt"}, "prompts must be a list of strings, not one string"),
        ({"prompts": []}, "prompts must be a non-empty list"),
        ({"prompts": ["ok", ""]}, "non-empty strings"),
    ],
)
def test_a_shape_refuses_bad_arguments_naming_them(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(LoadError, match=message):
        shape(**kw)


def test_a_shape_records_its_load_and_prompts_by_digest() -> None:
    closed = shape().to_json()
    assert closed == {
        "concurrency": 4,
        "prompts": prompt_digest(PROMPTS),
        "n_prompts": len(PROMPTS),
        "max_tokens": 16,
        "endpoint": "chat",
    }
    opened = shape(concurrency=None, rate=2, seed=7).to_json()
    assert opened["rate"] == 2.0 and opened["seed"] == 7 and "concurrency" not in opened
    assert prompt_digest(["a", "b"]) != prompt_digest(["b", "a"])  # order is the schedule


def test_shape_changes_name_what_differs_and_ignore_the_seed() -> None:
    base = shape().to_json()
    assert shape_changes(base, shape().to_json()) == []
    assert shape_changes(base, shape(concurrency=8).to_json()) == ["concurrency 4 -> 8"]
    assert shape_changes(base, shape(max_tokens=32, prompts=["x"]).to_json()) == [
        f"prompts {prompt_digest(PROMPTS)} -> {prompt_digest(['x'])}",
        f"n_prompts {len(PROMPTS)} -> 1",
        "max_tokens 16 -> 32",
    ]
    rate = shape(concurrency=None, rate=2, seed=1).to_json()
    assert shape_changes(rate, shape(concurrency=None, rate=2, seed=2).to_json()) == []
    assert shape_changes(base, rate) == ["concurrency 4 -> none", "rate none -> 2.0"]
    assert shape_changes(None, base) == ["the baseline was not measured under a load"]
    assert shape_changes(base, None) == ["the baseline was measured under a load, this run is not"]
    assert shape_changes(None, None) == []


# -- the figures of one window -----------------------------------------------------------------


def rec(
    index: int,
    sent: float,
    chunks: list[float],
    ended: float,
    tokens: int | None,
    error: str | None = None,
    kind: str | None = None,
) -> RequestRecord:
    return RequestRecord(index, sent, chunks, ended, tokens, error, kind)


def run_of(records: list[RequestRecord], start: float = 10.0, end: float = 20.0) -> LoadRun:
    return LoadRun(shape(), "m", 0.0, start, end, 30.0, records)


def test_tokens_of_a_request_on_an_edge_follow_its_chunks() -> None:
    r = rec(0, 8.0, [9.0, 9.5, 10.5, 11.0], 11.0, 8)  # 2 of 4 chunks inside [10, 20]
    assert steady_share(r, 10.0, 20.0) == 0.5
    no_text = rec(1, 12.0, [], 13.0, 0)  # placed by its end
    assert steady_share(no_text, 10.0, 20.0) == 1.0
    assert steady_share(no_text, 14.0, 20.0) == 0.0


def test_window_figures_count_the_steady_part_and_every_failure() -> None:
    records = [
        rec(0, 8.0, [9.0, 9.5, 10.5, 11.0], 11.0, 8),  # ramp: half its tokens inside
        rec(1, 11.0, [11.2, 11.4], 12.0, 10),  # inside, sent inside: latencies
        rec(2, 19.0, [19.5, 20.5], 21.0, 4),  # drain: half inside, sent inside
        rec(3, 12.0, [], 12.5, None, "HTTPError: 500 boom", "HTTP 500 (X)"),
        rec(4, 13.0, [], 13.1, None, "HTTPError: 500 bang", "HTTP 500 (X)"),
        rec(5, 14.0, [14.1], 14.2, None, "no usage", "no usage in the stream"),
    ]
    f = WindowFigures.of(run_of(records))
    assert f.steady_s == 10.0
    assert f.tokens == pytest.approx(4 + 10 + 2)  # usage, split by chunk times
    assert (f.requests, f.errors) == (6, 3)
    assert f.error_kinds == {"HTTP 500 (X)": 2, "no usage in the stream": 1}
    assert f.error_examples["HTTP 500 (X)"] == "HTTPError: 500 boom"  # the first
    assert f.gross_tokens == 8 + 10 + 4
    assert f.completed == 5  # ended inside [10, 20]: 0, 1, 3, 4, 5
    # request-seconds in flight inside [10, 20]: 1 + 1 + 1 + 0.5 + 0.1 + 0.2
    assert f.concurrency == pytest.approx(3.8 / 10)
    # latencies: requests sent inside the steady part that succeeded (1 and 2)
    assert f.ttft_s == pytest.approx([0.2, 0.5])
    assert f.e2e_s == pytest.approx([1.0, 2.0])
    assert f.tpot_s == pytest.approx([0.2 / 9, 1.0 / 3])


def test_percentiles_are_numpys_linear_ones() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100):
        values = list(rng.exponential(size=n))
        for q in (50, 90, 99):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))
    block = latency_json({"ttft_s": [0.1, 0.2, 0.3]})
    assert block["ttft_s"] == {"p50": 0.2, "p90": 0.28, "p99": 0.298, "n": 3}
    assert block["tpot_s"] == {"p50": None, "p90": None, "p99": None, "n": 0}


def test_a_limit_is_broken_above_it_and_without_data() -> None:
    latency = latency_json({"tpot_s": [0.01, 0.02, 0.05], "ttft_s": []})
    broken = list(limit_breaches(latency, {"tpot_p90": 0.03, "tpot_p50": 0.03, "ttft_p99": 1}))
    assert broken == [("tpot_p90", latency["tpot_s"]["p90"], 0.03), ("ttft_p99", None, 1)]


def test_load_figures_pool_windows_and_travel_as_plain_data() -> None:
    figures = LoadFigures(shape().to_json(), "m")
    one = WindowFigures.of(run_of([rec(0, 11.0, [11.2, 11.4], 12.0, 10)]))
    two = WindowFigures.of(
        run_of([rec(0, 11.0, [11.5], 12.0, 4), rec(1, 12.0, [], 12.5, None, "e", "k")])
    )
    figures.add(one, 50.0)
    figures.add(two, 30.0)
    out = figures.load_json()
    assert (out["requests"], out["errors"], out["windows"]) == (3, 1, 2)
    assert out["error_kinds"] == {"k": 1} and out["first_error"] == "e"
    assert out["gross_tokens_per_joule"] == pytest.approx(14 / 80)
    assert out["steady_s"] == 20.0 and out["concurrency"] == 4
    assert figures.latency()["e2e_s"]["n"] == 2
    again = LoadFigures.from_dict(figures.to_dict())
    assert again.load_json() == out and again.latency() == figures.latency()
    # a window whose whole-load joules could not be read: no gross figure rather than a wrong one
    figures.add(one, None)
    assert figures.load_json()["gross_tokens_per_joule"] is None
