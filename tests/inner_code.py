"""Source snippets shared by the pytester tests' inner test files (not collected: no test_).

``BUSY_WORK`` defines ``work()`` (about 2 ms of busy waiting, returning how long it really
took) and ``per_us(seconds)`` (one token per microsecond of that). Counting tokens by the
time a call really took means that CPU contention on a loaded machine makes more tokens,
not fewer tokens per joule: with the sim sensor (joules = watts x wall time), only
``tpw_sim_watts`` then moves tokens per joule, which is how the tests inject a change.
"""

BUSY_WORK = """
import os
import time

import pytest


def work():
    start = time.perf_counter()
    while time.perf_counter() - start < 0.002:
        pass
    return time.perf_counter() - start


def per_us(seconds):
    return max(1, round(seconds * 1e6))
"""
