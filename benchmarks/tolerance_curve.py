"""How often a test fails for each true drop: what ``--tpw-tolerance`` means in practice.

A test is ``REGRESSED`` (it fails) when its interval shows a drop surely beyond the noise
floor (upper end below -1 %) that may reach the tolerance (lower end at or below -5 %).
So a drop of the tolerance fails about half the time or more, larger drops nearly always,
and a sure drop smaller than the tolerance sometimes. This script measures that curve on the
engine of ``benchmarks/stats_power.py`` (the judge's vectorised path, Benjamini-Hochberg
included): suite runs of 300 tests, 10 of them changed by the true drop, the rest unchanged,
per scenario.

Run from the repository root::

    python benchmarks/tolerance_curve.py --suites 40 --seed 1   # ~1-2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats_power import Noise, draw, engine, table

from pytest_tpw.judging.model import SuiteParams

DROPS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.10, 0.15)
CHANGED = 10
SCENARIOS = (
    Noise("3 stored sessions", history=3),
    Noise("1 stored session", history=1),
    Noise("10 stored sessions", history=10),
    Noise("3 stored, session shift SD 1 %", history=3, sigma_b=0.01),
)
# VERDICT_CODES order: REGRESSED, MINOR_REGRESSION, UNCHANGED, IMPROVED, INCONCLUSIVE
MINOR, UNCHANGED, INCONCLUSIVE = 1, 2, 4


def curve(
    nz: Noise, n_suites: int, seed: np.random.SeedSequence, p: SuiteParams
) -> dict[float, dict[str, float]]:
    """Per true drop: the share of changed tests REGRESSED (after BH), MINOR_REGRESSION,
    UNCHANGED and INCONCLUSIVE (REGRESSED that BH turned back counts as INCONCLUSIVE)."""
    out: dict[float, dict[str, float]] = {}
    changed = np.linspace(0, nz.n_tests - 1, CHANGED).astype(int)
    for drop, sd in zip(DROPS, seed.spawn(len(DROPS)), strict=True):
        eff = np.zeros((n_suites, nz.n_tests))
        eff[:, changed] = math.log1p(-drop)
        b, c, _, _ = draw(np.random.default_rng(sd), nz, n_suites, eff)
        res = engine(b, c, nz, p)
        code = res.code[:, changed]
        fail = res.fail[:, changed]
        out[drop] = {
            "fail": float(fail.mean()),
            "minor": float((code == MINOR).mean()),
            "unchanged": float((code == UNCHANGED).mean()),
            "inconclusive": float(((code == INCONCLUSIVE) | ((code == 0) & ~fail)).mean()),
        }
    return out


#: Window schedules to compare: fixed rounds (one look) and the adaptive default.
SCHEDULES = ((5,), (10,), (5, 10, 15, 20), (20,))
TRADE_DROPS = (0.03, 0.05, 0.08)


def schedules(n_suites: int, seed: np.random.SeedSequence, p: SuiteParams) -> list[tuple[str, ...]]:
    """What windows buy: per schedule, the share of changed tests that fail at each drop of
    :data:`TRADE_DROPS`, false REGRESSED per run of the unchanged tests, mean windows."""
    nz = SCENARIOS[0]
    rows: list[tuple[str, ...]] = [
        (
            "windows per test",
            *(f"fails at -{d:.0%}" for d in TRADE_DROPS),
            "false REGRESSED / run",
            "mean windows",
        )
    ]
    changed = np.linspace(0, nz.n_tests - 1, CHANGED * len(TRADE_DROPS)).astype(int)
    eff = np.zeros((n_suites, nz.n_tests))
    for i, j in enumerate(changed):
        eff[:, j] = math.log1p(-TRADE_DROPS[i % len(TRADE_DROPS)])
    b, c, _, _ = draw(np.random.default_rng(seed), nz, n_suites, eff)
    for looks in SCHEDULES:
        params = replace(p, verdict=replace(p.verdict, looks=looks))
        res = engine(b, c, nz, params)
        unchanged = eff[0] == 0.0
        shares = [
            f"{res.fail[:, np.isclose(eff[0], math.log1p(-d))].mean():.1%}" for d in TRADE_DROPS
        ]
        name = f"fixed {looks[0]}" if len(looks) == 1 else "adaptive " + "/".join(map(str, looks))
        rows.append(
            (
                name,
                *shares,
                f"{res.fail[:, unchanged].sum(axis=1).mean():.3f}",
                f"{res.rounds.mean():.2f}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--suites", type=int, default=40, help="simulated suite runs per cell")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.suites < 1:
        ap.error("need --suites >= 1")
    cmd = shlex.join(
        ["python", "benchmarks/tolerance_curve.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"$ {cmd}")
    p = SuiteParams()
    t0 = time.perf_counter()
    curves = {}
    for nz, sd in zip(
        SCENARIOS, np.random.SeedSequence(args.seed).spawn(len(SCENARIOS)), strict=True
    ):
        curves[nz.name] = curve(nz, args.suites, sd, p)
        print(f"  [{time.perf_counter() - t0:.0f} s] {nz.name}", file=sys.stderr, flush=True)
    print(
        f"\nShare of changed tests that FAIL (REGRESSED after Benjamini-Hochberg), tolerance "
        f"{p.verdict.tolerance:.0%}, noise floor {p.verdict.noise_floor:.0%}:"
    )
    rows: list[tuple[str, ...]] = [("true drop", *curves)]
    for drop in DROPS:
        rows.append((f"{drop:.1%}", *(f"{c[drop]['fail']:.1%}" for c in curves.values())))
    print(table(rows))
    main_name = SCENARIOS[0].name
    print(f"\nEvery verdict of the changed tests, {main_name}:")
    rows = [("true drop", "REGRESSED", "MINOR_REGRESSION", "UNCHANGED", "INCONCLUSIVE")]
    for drop in DROPS:
        c = curves[main_name][drop]
        rows.append(
            (
                f"{drop:.1%}",
                *(f"{c[k]:.1%}" for k in ("fail", "minor", "unchanged", "inconclusive")),
            )
        )
    print(table(rows))
    print(f"\nWhat windows buy ({main_name}; {CHANGED} tests at each drop in each run):")
    print(table(schedules(args.suites, np.random.SeedSequence([args.seed, 7]), p)))
    print(
        f"\n{args.suites} suite runs of {SCENARIOS[0].n_tests} tests per cell, {CHANGED} of "
        f"them changed ({args.suites * CHANGED} judgements a cell); per-test CV 1-3 %, 3 % of "
        f"windows throttled, session shift SD 0.5 % unless said; seed {args.seed}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
