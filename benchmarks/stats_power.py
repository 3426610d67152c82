"""Suite-level power and false alarms of the pytest-tpw verdict engine vs pytest-benchmark's rule.

Simulates suite runs of measured tests under an *assumed* noise mix (STATS.md, last section)
and reports, side by side in one table, the procedure of STATS.md (Yuen-log interval with
noise floor and tolerance, between-session variance, looks 5/10/15/20 stopping early only
when fine, Benjamini-Hochberg across the suite) and pytest-benchmark's
``--benchmark-compare-fail=mean:5%`` at 10 rounds.

Run from the repository root::

    python benchmarks/stats_power.py --suites 500 --seed 1

Noise model, per test (all on log tokens/J; every suite run draws fresh tests and baselines):

* per-test CV uniform in [1 %, 3 %] (Gaussian log noise with that SD), same for both sides;
* each window (round) throttled with probability 3 %, by a factor uniform in -10 %...-30 %;
* a between-session shift, Gaussian with SD 0.5 %, drawn per test per session (each baseline
  session and the candidate session get their own);
* baseline: ``--history`` stored sessions (default 3) x ``--baseline-rounds`` rounds (default
  20); the candidate is one new session;
* regression scenarios inject a multiplicative drop into 30 of the 300 tests of a suite run
  (``--regressed``), the other tests unchanged; false alarms are measured on A/A suite runs
  where all 300 tests are unchanged.

The verdict engine's own vectorised building blocks (``pytest_tpw.stats``) do the arithmetic,
and a few tests per run are re-decided through the scalar API (``sequential_decision``,
``apply_fdr``) as a self-check. sigma_b is estimated per test from its baseline sessions, as
``compare`` does. The ``mean:5%`` rule fails a test when the mean tokens/J of the candidate's
first 10 rounds is below 0.95 x the mean of all pooled baseline rounds (the same stored data
the procedure gets).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_tpw import stats as S

N_TESTS = 300
CV_RANGE = (0.01, 0.03)
THROTTLE_P = 0.03
THROTTLE_RANGE = (0.10, 0.30)
SESSION_SD = 0.005
PB_ROUNDS = 10
PB_THRESHOLD = 0.05


@dataclass
class Outcome:
    """Per suite run x test results of one scenario."""

    tpw_fail: np.ndarray  # bool (suites, tests): REGRESSED after BH
    tpw_rounds: np.ndarray  # int (suites, tests): candidate rounds used
    tpw_inconclusive: np.ndarray  # bool: final INCONCLUSIVE (after BH demotion included)
    pb_fail: np.ndarray  # bool: mean:5% rule fails
    effect: np.ndarray  # float (tests,): injected log effect


def draw(
    rng: np.random.Generator,
    n: int,
    sessions: int,
    rounds_b: int,
    rounds_c: int,
    effect: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Log tokens/J: baseline (n, sessions, rounds_b) and candidate (n, rounds_c)."""
    cv = rng.uniform(*CV_RANGE, size=n)

    def side(shape: tuple[int, ...]) -> np.ndarray:
        z = rng.standard_normal(shape) * cv.reshape((n,) + (1,) * (len(shape) - 1))
        thr = rng.random(shape) < THROTTLE_P
        z += np.where(thr, np.log1p(-rng.uniform(*THROTTLE_RANGE, size=shape)), 0.0)
        return z

    b = side((n, sessions, rounds_b)) + rng.normal(0.0, SESSION_SD, (n, sessions, 1))
    c = side((n, rounds_c)) + rng.normal(0.0, SESSION_SD, (n, 1)) + effect.reshape(n, 1)
    return b + math.log(50.0), c + math.log(50.0)


def tpw_procedure(
    b: np.ndarray,
    c: np.ndarray,
    p: S.Params,
    n_suites: int,
    between_factor: float | None = None,
    pool_sigma_b: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """STATS.md steps 2-4 and 6, vectorised. Returns (fail, rounds, inconclusive, p_regression).

    ``between_factor`` multiplies sigma_b^2 in the variance: ``1 + 1/S`` for S baseline
    sessions, as ``pytest_tpw.stats.compare`` does (None); the what-if block also tries
    STATS.md's literal ``2``. ``pool_sigma_b`` (one sigma_b per suite run, the RMS of the
    per-test estimates) exists only for the what-if block.
    """
    n, sessions, rounds_b = b.shape
    if between_factor is None:
        between_factor = 1.0 + 1.0 / sessions
    m_b, d_b, h_b = S.trimmed_stats(b.reshape(n, sessions * rounds_b), p.trim)
    # sigma_b: method of moments over session trimmed means (S.estimate_sigma_b, vectorised)
    ms, ds, hs = S.trimmed_stats(b, p.trim)
    if sessions >= p.sigma_b_min_sessions and hs >= 2:
        sb2 = np.maximum(np.var(ms, axis=1, ddof=1) - np.mean(ds, axis=1), 0.0)
    else:
        sb2 = np.zeros(n)
    if pool_sigma_b:
        sb2 = np.repeat(sb2.reshape(n_suites, -1).mean(axis=1), n // n_suites)
    looks = p.looks
    k_looks = len(looks)
    alpha = p.alpha
    alpha_eq = alpha / k_looks
    active = np.ones(n, dtype=bool)
    code = np.full(n, S.VERDICT_CODES.index(S.Verdict.INCONCLUSIVE), dtype=np.int8)
    pval = np.ones(n)
    rounds = np.zeros(n, dtype=np.int64)
    stop_codes = (
        S.VERDICT_CODES.index(S.Verdict.UNCHANGED),
        S.VERDICT_CODES.index(S.Verdict.IMPROVED),
    )
    for j, k in enumerate(looks):
        m_c, d_c, h_c = S.trimmed_stats(c[:, :k], p.trim)
        est = m_c - m_b
        se = np.sqrt(d_b + d_c + between_factor * sb2)
        df = S.welch_df(d_b, d_c, h_b, h_c)
        lo, hi, pr = S.log_interval(est, se, df, alpha, alpha_eq, p.noise_floor)
        cd = S.classify_bounds(lo, hi, p.tolerance, p.noise_floor)
        last = j == k_looks - 1
        stop = active & (np.isin(cd, stop_codes) | last)
        code[stop] = cd[stop]
        rounds[stop] = k
        if last:
            pval[stop] = pr[stop]  # stopped-early tests keep p = 1 (enter BH with p = 1)
        active &= ~stop
    reg = code == S.VERDICT_CODES.index(S.Verdict.REGRESSED)
    adj = st.false_discovery_control(pval.reshape(n_suites, -1), axis=1, method="bh").ravel()
    fail = reg & (adj <= p.fdr_q)
    inconclusive = (code == S.VERDICT_CODES.index(S.Verdict.INCONCLUSIVE)) | (reg & ~fail)
    return fail, rounds, inconclusive, pval


def pb_rule(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """pytest-benchmark mean:5%: candidate mean of 10 rounds < 0.95 x pooled baseline mean."""
    n = b.shape[0]
    mean_b = np.exp(b.reshape(n, -1)).mean(axis=1)
    mean_c = np.exp(c[:, :PB_ROUNDS]).mean(axis=1)
    return np.asarray(mean_c < (1.0 - PB_THRESHOLD) * mean_b)


def self_check(
    b: np.ndarray, c: np.ndarray, p: S.Params, fail: np.ndarray, rounds: np.ndarray, n_suites: int
) -> None:
    """Re-decide the first suite run through the scalar API and compare."""
    per = b.shape[0] // n_suites
    decided: list[S.Comparison] = []
    used: list[int] = []
    for i in range(per):
        sessions = [list(np.exp(s)) for s in b[i]]
        cand = np.exp(c[i])
        for j, k in enumerate(p.looks):
            stop, cmp = S.sequential_decision(sessions, list(cand[:k]), p, j, len(p.looks))
            if stop:
                decided.append(cmp)
                used.append(k)
                break
    after = S.apply_fdr(decided, p.fdr_q)
    scalar_fail = np.array([x.verdict is S.Verdict.REGRESSED for x in after])
    if not (np.array_equal(scalar_fail, fail[:per]) and np.array_equal(used, rounds[:per])):
        raise SystemExit("self-check failed: vectorised engine disagrees with pytest_tpw.stats")


def run_scenario(
    rng: np.random.Generator,
    n_suites: int,
    effect: np.ndarray,
    p: S.Params,
    sessions: int,
    rounds_b: int,
    chunk: int,
    check: bool,
    between_factor: float | None = None,
    pool_sigma_b: bool = False,
) -> Outcome:
    rounds_c = max(max(p.looks), PB_ROUNDS)
    fails, rnds, incs, pbs = [], [], [], []
    done = 0
    while done < n_suites:
        m = min(chunk, n_suites - done)
        eff = np.tile(effect, m)
        b, c = draw(rng, m * effect.size, sessions, rounds_b, rounds_c, eff)
        f, r, inc, _ = tpw_procedure(b, c, p, m, between_factor, pool_sigma_b)
        if check and done == 0:
            self_check(b, c, p, f, r, m)
        fails.append(f.reshape(m, -1))
        rnds.append(r.reshape(m, -1))
        incs.append(inc.reshape(m, -1))
        pbs.append(pb_rule(b, c).reshape(m, -1))
        done += m
    return Outcome(
        np.concatenate(fails),
        np.concatenate(rnds),
        np.concatenate(incs),
        np.concatenate(pbs),
        effect,
    )


def pct(x: float) -> str:
    return f"{100.0 * x:.1f} %"


def false_alarms(fail: np.ndarray) -> tuple[float, float]:
    """Mean false alarms per suite run and share of suite runs with at least one."""
    per_run = fail.sum(axis=1)
    return float(per_run.mean()), float((per_run > 0).mean())


def detection(o: Outcome, hit: np.ndarray) -> float:
    return float(hit[:, o.effect < 0].mean())


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--suites", type=int, default=200, help="simulated suite runs per scenario")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--history", type=int, default=3, help="baseline sessions stored")
    ap.add_argument("--baseline-rounds", type=int, default=20, help="rounds per baseline session")
    ap.add_argument("--regressed", type=int, default=30, help="tests regressed per suite run")
    ap.add_argument("--chunk", type=int, default=25, help="suite runs simulated at once")
    ap.add_argument("--no-what-if", action="store_true", help="skip the what-if block")
    args = ap.parse_args(argv)
    if args.suites < 1 or not 0 < args.regressed <= N_TESTS or args.history < 1:
        ap.error("need --suites >= 1, 0 < --regressed <= 300, --history >= 1")

    cmd = shlex.join(
        ["python", "benchmarks/stats_power.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"$ {cmd}")
    p = S.Params()
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(args.seed).spawn(3)
    effects = {0.0: np.zeros(N_TESTS)}
    for drop in (-0.05, -0.08):
        effects[drop] = np.zeros(N_TESTS)
        effects[drop][: args.regressed] = math.log1p(drop)

    def scenario(
        i: int,
        drop: float,
        history: int,
        check: bool = False,
        between_factor: float | None = None,
        pool: bool = False,
    ) -> Outcome:
        return run_scenario(
            np.random.default_rng(seeds[i]),
            args.suites,
            effects[drop],
            p,
            history,
            args.baseline_rounds,
            args.chunk,
            check,
            between_factor,
            pool,
        )

    aa = scenario(0, 0.0, args.history, check=True)
    d5 = scenario(1, -0.05, args.history)
    d8 = scenario(2, -0.08, args.history)
    elapsed = time.perf_counter() - t0

    tpw_fa, tpw_any = false_alarms(aa.tpw_fail)
    pb_fa, pb_any = false_alarms(aa.pb_fail)
    det5, det8 = detection(d5, d5.tpw_fail), detection(d8, d8.tpw_fail)
    rounds = float(aa.tpw_rounds.mean())
    checks = [
        ("false alarms per suite run (A/A)", tpw_fa <= 0.1),
        ("detection at -5 %", det5 >= 0.85),
        ("detection at -8 %", det8 >= 0.99),
        ("mean candidate rounds (A/A)", rounds <= 10),
    ]
    met = dict(checks)

    def ok(name: str) -> str:
        return "yes" if met[name] else "NO"

    rows: list[tuple[str, ...]] = [
        ("metric", "tpw: seq. 5/10/15/20 + BH", "mean:5% @ 10 rounds", "target", "tpw met"),
        (
            "false alarms per suite run (A/A)",
            f"{tpw_fa:.3f}",
            f"{pb_fa:.3f}",
            "<= 0.1",
            ok("false alarms per suite run (A/A)"),
        ),
        ("suite runs with any false alarm (A/A)", pct(tpw_any), pct(pb_any), "", ""),
        (
            "detection at -5 %",
            pct(det5),
            pct(detection(d5, d5.pb_fail)),
            ">= 85 %",
            ok("detection at -5 %"),
        ),
        (
            "detection at -8 %",
            pct(det8),
            pct(detection(d8, d8.pb_fail)),
            ">= 99 %",
            ok("detection at -8 %"),
        ),
        (
            "mean candidate rounds (A/A)",
            f"{rounds:.2f}",
            f"{PB_ROUNDS:.2f}",
            "<= 10",
            ok("mean candidate rounds (A/A)"),
        ),
        (
            "mean candidate rounds (-5 % runs)",
            f"{d5.tpw_rounds.mean():.2f}",
            f"{PB_ROUNDS:.2f}",
            "",
            "",
        ),
        (
            "false alarms per -5 % suite run",
            f"{false_alarms(d5.tpw_fail[:, d5.effect == 0])[0]:.3f}",
            f"{false_alarms(d5.pb_fail[:, d5.effect == 0])[0]:.3f}",
            "",
            "",
        ),
        (
            "unchanged tests INCONCLUSIVE (A/A)",
            pct(float(aa.tpw_inconclusive.mean())),
            "n/a",
            "",
            "",
        ),
    ]
    print(
        f"{args.suites} suite runs x {N_TESTS} tests per scenario: A/A (all unchanged), "
        f"{args.regressed} tests at -5 %, {args.regressed} tests at -8 %; baseline "
        f"{args.history} session(s) x {args.baseline_rounds} rounds; seed {args.seed}; "
        f"{elapsed:.1f} s"
    )
    print(
        "NOTE: the noise model (per-test CV 1-3 %, 3 % of windows throttled by -10...-30 %, "
        "0.5 % between-session shift) is ASSUMED, not measured on GPUs."
    )
    print(table(rows))
    mc = math.sqrt(0.85 * 0.15 / (args.suites * args.regressed))
    print(
        f"Monte Carlo SE of a detection rate near 85 %: about +/- {100 * mc:.1f} points "
        "(more with per-run correlation). tpw decisions of one suite run were re-checked "
        "through pytest_tpw.stats.sequential_decision + apply_fdr."
    )
    missed = [name for name, good in checks if not good]
    if missed:
        print("TARGETS MISSED by the procedure as specified: " + "; ".join(missed))
    if args.no_what_if:
        return 0

    print()
    print("What-if (NOT the procedure above; each line changes one thing, same seeds):")
    variants: list[tuple[str, int, float | None, bool]] = [
        (f"history {h} session(s) (default {args.history})", h, None, False)
        for h in (1, 5, 8, 10)
        if h != args.history
    ]
    hs = args.history
    variants += [
        (f"history {hs}, 2 sigma_b^2 (STATS.md literal) instead of (1 + 1/{hs})", hs, 2.0,
         False),
        (f"history {hs}, one sigma_b per suite run (RMS over its tests)", hs, None, True),
    ]
    what: list[tuple[str, ...]] = [
        (
            "change",
            "false alarms/run (A/A)",
            "(in -5 % runs)",
            "detection -5 %",
            "detection -8 %",
            "rounds (A/A)",
        )
    ]
    for label, h, f, pool in variants:
        v_aa = scenario(0, 0.0, h, between_factor=f, pool=pool)
        v5 = scenario(1, -0.05, h, between_factor=f, pool=pool)
        v8 = scenario(2, -0.08, h, between_factor=f, pool=pool)
        what.append(
            (
                label,
                f"{false_alarms(v_aa.tpw_fail)[0]:.3f}",
                f"{false_alarms(v5.tpw_fail[:, v5.effect == 0])[0]:.3f}",
                pct(detection(v5, v5.tpw_fail)),
                pct(detection(v8, v8.tpw_fail)),
                f"{v_aa.tpw_rounds.mean():.2f}",
            )
        )
    print(table(what))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
