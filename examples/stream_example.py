"""Loop form: measure a server streaming requests, counting tokens as they arrive.

``for w in tpw.rounds(): with w: ...`` lets the meter choose how many windows to run; each
``with w:`` block is one window and ``w.add_tokens(n)`` counts what it produced. Warm-up windows
are yielded too (and not recorded). Without ``--tpw`` there is exactly one window.

The loop form does not repeat the work for you, so one window must be long enough for the
energy sensor to resolve: ``tpw.min_window_s`` says how long (about 1 s with NVML, 0.1 s for
RAPL and the CPU estimate), and here a window serves a queue of ``REQUESTS`` single-sequence
requests, again and again, until it lasts that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from tiny_llm import TinyLM

from pytest_tpw import TokensPerJoule

REQUESTS = 16
NEW_TOKENS = 32


def test_stream_requests(
    tpw: TokensPerJoule, model: TinyLM, make_prompts: Callable[..., torch.Tensor]
) -> None:
    queue = [make_prompts(1, seed=i) for i in range(REQUESTS)]

    # A window must last the sensor's minimum (about 1 s with NVML, 0.1 s for the CPU
    # estimate): keep serving the queue, round after round, until it has.
    long_enough = tpw.min_window_s or 0.0  # None without --tpw: one pass is enough
    streamed: list[list[torch.Tensor]] = []
    for w in tpw.rounds():
        with w:
            start = time.perf_counter()
            while True:
                streamed = []
                for request in queue:
                    steps = []
                    for tok in model.stream(request, max_new_tokens=NEW_TOKENS):
                        w.add_tokens(tok.numel())  # one new token per sequence of the request
                        steps.append(tok)
                    streamed.append(steps)
                if time.perf_counter() - start >= long_enough:
                    break

    assert [len(steps) for steps in streamed] == [NEW_TOKENS] * REQUESTS
    # Streaming yields exactly what `generate` returns, one step at a time (two spot checks).
    for request, steps in zip(queue[:2], streamed[:2], strict=True):
        assert torch.equal(torch.stack(steps, dim=1), model.generate(request, NEW_TOKENS))
    if tpw.result is not None:  # measured (`pytest --tpw`)
        assert tpw.result.tokens_per_joule > 0
        assert tpw.result.n >= 1
