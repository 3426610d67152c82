"""The verdict engine's kernel reproduces every worked case of the test vectors to 1e-9.

``tests/data/stats_vectors.json`` holds worked cases computed independently of the project's
code (with numpy and scipy) for one stored session against a candidate with a known session
spread (docs/verdicts.md): tokens/J samples in; the expected ratio, interval, p-value and
verdict out. The engine's kernel (:func:`pytest_tpw.judging.kernels.decide_arrays`) is fed
the trimmed statistics of both sides, as the judge feeds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.stats import Params, Verdict, bh_adjusted
from tests.one_session import kernel

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "stats_vectors.json").read_text("utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]
TOL = 1e-9


def _params(case: dict[str, Any]) -> Params:
    p = case["params"]
    return Params(tolerance=p["tolerance"], noise_floor=p["noise_floor"], trim=p["trim"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    p = case["params"]
    verdict, ratio, low, high, p_reg, _ = kernel(
        case["baseline"],
        case["candidate"],
        p["sigma_b"],
        _params(case),
        alpha=p["alpha"],
        alpha_equiv=p["alpha_equiv"],
    )
    exp = case["expected"]
    assert verdict is Verdict(exp["verdict"])
    assert ratio == pytest.approx(exp["ratio"], abs=TOL, rel=0)
    if p["sigma_b"] == 0:
        assert low == pytest.approx(exp["ci_low"], abs=TOL, rel=0)
        assert high == pytest.approx(exp["ci_high"], abs=TOL, rel=0)
        assert p_reg == pytest.approx(exp["p_regression"], abs=TOL, rel=0)
    else:
        # a known session spread: the vectors keep the windows' Welch df, the engine counts
        # the spread's part in Satterthwaite's df too (as known: infinite df), so its t
        # quantile is smaller and its interval a little narrower, around the same ratio
        assert exp["ci_low"] < low < ratio < high < exp["ci_high"]
        assert high / low == pytest.approx(exp["ci_high"] / exp["ci_low"], rel=0.01)
        assert (p_reg < 0.05) == (exp["p_regression"] < 0.05)


def test_benjamini_hochberg() -> None:
    bh = VECTORS["benjamini_hochberg"]
    adj = bh_adjusted(bh["p_values"])
    assert adj == pytest.approx(bh["adjusted"], abs=TOL, rel=0)
    assert [a <= bh["q"] for a in adj] == [a <= bh["q"] for a in bh["adjusted"]]
