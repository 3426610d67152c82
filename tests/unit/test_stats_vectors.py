"""The verdict engine reproduces every worked case of the test vectors to 1e-9.

``tests/data/stats_vectors.json`` holds worked cases computed independently of the project's
code (with numpy and scipy) for the per-test building blocks in ``pytest_tpw/stats.py``
(docs/verdicts.md): tokens/J samples in; the expected ratio, interval, p-value and verdict out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.stats import Params, Verdict, bh_adjusted, compare, fdr_adjust, sequential_decision

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
    got = compare(
        [case["baseline"]],
        case["candidate"],
        _params(case),
        alpha=p["alpha"],
        alpha_equiv=p["alpha_equiv"],
        sigma_b=p["sigma_b"],
    )
    exp = case["expected"]
    assert got.verdict is Verdict(exp["verdict"])
    assert got.verdict == exp["verdict"]
    assert got.ratio == pytest.approx(exp["ratio"], abs=TOL, rel=0)
    assert got.ci_low == pytest.approx(exp["ci_low"], abs=TOL, rel=0)
    assert got.ci_high == pytest.approx(exp["ci_high"], abs=TOL, rel=0)
    assert got.p_regression == pytest.approx(exp["p_regression"], abs=TOL, rel=0)
    assert got.why is None
    assert got.n_baseline == len(case["baseline"])
    assert got.n_candidate == len(case["candidate"])
    assert got.sigma_b == p["sigma_b"]
    assert got.sigma_b_source == "given"


def test_confidence_default_gives_alpha_005() -> None:
    """Params().confidence = 0.90 two-sided is alpha = 0.05 per side, the vectors' fixed-n case."""
    case = next(c for c in CASES if c["name"] == "clear regression -10%")
    got = compare([case["baseline"]], case["candidate"], sigma_b=0.0)
    assert got.ci_high == pytest.approx(case["expected"]["ci_high"], abs=TOL, rel=0)
    assert got.ci_low == pytest.approx(case["expected"]["ci_low"], abs=TOL, rel=0)


def test_interim_look_through_sequential_decision() -> None:
    """The K = 4 interim case is what sequential_decision computes at the first of 4 looks."""
    case = next(c for c in CASES if c["params"]["alpha_equiv"] != c["params"]["alpha"])
    k = round(case["params"]["alpha"] / case["params"]["alpha_equiv"])
    stop, got = sequential_decision(
        [case["baseline"]], case["candidate"], _params(case), 0, k, sigma_b=0.0
    )
    exp = case["expected"]
    assert stop is (exp["verdict"] in ("UNCHANGED", "IMPROVED"))
    assert got.verdict == exp["verdict"]
    assert got.ci_low == pytest.approx(exp["ci_low"], abs=TOL, rel=0)
    assert got.ci_high == pytest.approx(exp["ci_high"], abs=TOL, rel=0)
    assert got.p_regression == pytest.approx(exp["p_regression"], abs=TOL, rel=0)


def test_benjamini_hochberg() -> None:
    bh = VECTORS["benjamini_hochberg"]
    adj = bh_adjusted(bh["p_values"])
    assert adj == pytest.approx(bh["adjusted"], abs=TOL, rel=0)
    assert fdr_adjust(bh["p_values"], bh["q"]) == [a <= bh["q"] for a in bh["adjusted"]]
