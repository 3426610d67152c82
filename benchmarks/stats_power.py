"""False alarms, power and rounds of pytest-tpw's two-level verdict engine on simulated CI runs.

Each simulated suite run has 300 measured tests; the engine is ``pytest_tpw.judging`` (run-wide
shift + per-test change, sigma_b pooled across the suite, autocorrelation and sensor resolution in
the standard error, looks 5/10/15/20 at Pocock's level stopping inside any verdict region or when
too noisy to decide, BH at q = 0.05), driven through its vectorised kernels exactly as the scalar
API does: the prior from the stored runs (``suite_prior`` = ``prior_from_table``), per look the
running shift from the tests already finished (``running_shift`` = ``shift_from_deltas``; tests are
taken in 10 groups of 30, each group seeing the shift of the groups before it, the first group
none), the per-test decision (``look`` = ``decide_arrays``), and at the end ``judge_suite``. The
first suite run of every scenario is re-decided through the scalar API as a self-check.

Run from the repository root::

    python benchmarks/stats_power.py --suites 30 --seed 1   # ~2-4 minutes on 2 cores

Noise (log tokens/J): per-test CV 1-3 % (Gaussian, or t with 3 df scaled to that SD), 3 % of
windows throttled by -10..-30 %, a per-test session shift (SD 0.5 % unless said), a run-wide
shift shared by all tests of a run (per scenario), optional AR(1) rounds with a linear
within-session trend, optional energy quantisation (windows of ~18 J read from a cumulative
counter in 1 J steps, ``resolution = 1/18``). Baselines: 1, 3 or 10 stored runs x 20 windows.

Per scenario: false REGRESSED per run in A/A runs and among the 270 unchanged tests of runs
with 30 regressions (10 each at -5, -8, -10 %), detection, mean rounds (A/A), the run-wide
verdicts (share of A/A runs flagged BEYOND), and for a shared -5 % change of every test the
share of runs flagged BEYOND_LOWER and per-test failures per run. The ORACLE row knows the
true sigma_b, the true run shifts (stored and current) and the true autocorrelation.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_tpw import stats as S
from pytest_tpw.judging.decide import judge_suite, look, run_verdict
from pytest_tpw.judging.kernels import (
    candidate_stats,
    decide_arrays,
    floored_variance,
    hopeless,
    noise_ratio,
    satterthwaite,
)
from pytest_tpw.judging.model import (
    RunShift,
    RunVerdict,
    ShiftMethod,
    StoredRun,
    SuiteParams,
    SuitePrior,
    TestInput,
)
from pytest_tpw.judging.prior import (
    per_test_sigma_b2,
    position_profile,
    prior_from_table,
    slope_spread,
    suite_prior,
    unprofile,
)
from pytest_tpw.judging.shift import (
    local_shift,
    recent_shift,
    running_shift,
    session_spread,
    shift_from_deltas,
    shift_variance,
)

N_TESTS = 300
ROUNDS = 20
GROUPS = 10
LOG50 = math.log(50.0)


@dataclass(frozen=True)
class Noise:
    """One scenario's noise model."""

    name: str
    history: int = 3
    sigma_b: float = 0.005
    run: str = "none"  # none | clock | board | drift
    rho: float = 0.0
    trend: float = 0.0  # total relative drop over the 20 windows of a session
    tails: bool = False
    quantum: float = 0.0  # J per counter step, windows of ~18 J
    canaries: int = 0
    n_tests: int = N_TESTS


def run_shifts(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Run-wide log shifts of stored (..., S) and current (..., 1) runs, concatenated."""
    if kind == "clock":
        return np.where(rng.random(shape) < 0.2, math.log(0.97), 0.0)
    if kind == "board":
        return rng.normal(0.0, 0.01, shape)
    if kind == "drift":
        out = np.zeros(shape)
        out[..., -1] = math.log(0.98)
        return out
    return np.zeros(shape)


def windows(
    rng: np.random.Generator, nz: Noise, cv: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Within-session log noise (..., n): Gaussian or t3, AR(1), trend, throttling."""
    n = shape[-1]
    e = rng.standard_t(3, size=shape) / math.sqrt(3.0) if nz.tails else rng.standard_normal(shape)
    if nz.rho > 0.0:
        out = np.empty(shape)
        out[..., 0] = e[..., 0]
        a = math.sqrt(1.0 - nz.rho**2)
        for i in range(1, n):
            out[..., i] = nz.rho * out[..., i - 1] + a * e[..., i]
        e = out
    z = e * cv
    if nz.trend:
        z = z + np.linspace(0.0, math.log1p(-nz.trend), n)
    thr = rng.random(shape) < 0.03
    return z + np.where(thr, np.log1p(-rng.uniform(0.10, 0.30, size=shape)), 0.0)


def quantise(y: np.ndarray, rng: np.random.Generator, quantum: float) -> np.ndarray:
    """Log tokens/J as read through a cumulative energy counter with ``quantum`` J steps."""
    if quantum <= 0.0:
        return y
    energy = 18.0 * np.exp(-(y - LOG50))
    cum = np.cumsum(energy, axis=-1) + rng.uniform(0.0, quantum, size=(*y.shape[:-1], 1))
    read = np.floor(cum / quantum) * quantum
    start = np.floor((cum[..., :1] - energy[..., :1]) / quantum) * quantum
    e = np.diff(np.concatenate([start, read], axis=-1), axis=-1)
    e = np.maximum(e, quantum)  # a zero reading is refused by the meter; the step is the floor
    return np.asarray(LOG50 - np.log(e / 18.0), dtype=float)


def draw(
    rng: np.random.Generator,
    nz: Noise,
    n_suites: int,
    effect: np.ndarray,
    cv: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Baseline (N, T, S, 20), candidate (N, T, 20), run shifts (N, S+1), per-test CV (N, T).

    ``cv``: per-test CV (N, T); drawn uniform in 1-3 % when None.
    """
    t, s = nz.n_tests, nz.history
    if cv is None:
        cv = rng.uniform(0.01, 0.03, size=(n_suites, t))
    r = run_shifts(rng, nz.run, (n_suites, s + 1))
    b = windows(rng, nz, cv[..., None, None], (n_suites, t, s, ROUNDS))
    b += rng.normal(0.0, nz.sigma_b, (n_suites, t, s, 1)) + r[:, None, :s, None]
    c = windows(rng, nz, cv[..., None], (n_suites, t, ROUNDS))
    c += rng.normal(0.0, nz.sigma_b, (n_suites, t, 1)) + r[:, None, s : s + 1] + effect[..., None]
    b = quantise(b + LOG50, rng, nz.quantum)
    c = quantise(c + LOG50, rng, nz.quantum)
    return b, c, r, cv


@dataclass
class Result:
    fail: np.ndarray  # (N, T) REGRESSED after BH
    rounds: np.ndarray  # (N, T)
    run: list[RunVerdict]
    inconclusive: np.ndarray  # (N, T)
    code: np.ndarray  # (N, T) the final decision's index in VERDICT_CODES, before BH


def engine(
    b: np.ndarray,
    c: np.ndarray,
    nz: Noise,
    p: SuiteParams,
    oracle: tuple[np.ndarray, float, float] | None = None,
    given_loadings: np.ndarray | None = None,
) -> Result:
    """The decision path of the judge, vectorised over suite runs and tests.

    ``oracle`` = (true run shifts, true sigma_b, true rho): replaces the estimated run
    shifts, sigma_b and rho. The shifts are (N, S+1), one per run, or (N, T, S+1), each test's
    own (a run state that tests feel unequally, a shift that changes during the run).
    ``given_loadings`` (N, T): each test's true loading on the run shift, known exactly
    instead of learned (everything else estimated): what learning the loadings costs.
    """
    n_suites, t, s, nb = b.shape
    vp = p.verdict
    looks = vp.looks
    k_looks = len(looks)
    a = S.look_level(vp.alpha, looks)
    res = nz.quantum / 18.0
    canary = np.zeros(t, dtype=bool)
    canary[: nz.canaries] = True
    priors: list[SuitePrior] = []
    lam = np.ones((n_suites, t))  # each test's loading on the run shift, and its variance
    lam_v = np.zeros((n_suites, t))
    mu = np.empty((n_suites, t))
    var_b = np.empty((n_suites, t))
    df_b = np.empty((n_suites, t))
    sw2_b = np.empty((n_suites, t))
    sw2_df = np.empty((n_suites, t))
    spread = np.full((n_suites, t), np.nan)  # variance of each test's stored session levels
    spread_n = np.full((n_suites, t), float(s))  # and the session count of its df
    b = b.copy()
    c = c.copy()
    for i in range(n_suites):
        if oracle is None:
            prof = position_profile(b[i].reshape(-1, nb), p.min_profile_series)
        else:  # the true within-session trend, centred
            prof = np.linspace(0.0, math.log1p(-nz.trend), nb)
            prof = prof - prof.mean()
        b[i] = unprofile(b[i], prof)
        c[i] = unprofile(c[i], prof)
    for i in range(n_suites):
        if oracle is None:
            rho, _ = S.lag1_from_parts(*S.lag1_parts(b[i].reshape(-1, nb)))
            rho = min(max(rho, 0.0), p.rho_cap)
        else:
            rho = oracle[2]
        m_ts, d_ts, h, df_ts, own = candidate_stats(b[i], rho, res, vp.trim, p.rho_cap)
        prior, r_s = prior_from_table(m_ts, d_ts, p, rho)
        if given_loadings is not None:
            known = {str(j): (float(given_loadings[i, j]), 0.0) for j in range(t)}
            prior = replace(prior, loadings=known, loading_sd=0.0)
        if prior.loadings:
            got = [prior.loadings[str(j)] for j in range(t)]
            lam[i] = [g[0] for g in got]
            lam_v[i] = [g[1] for g in got]
        r_ts = lam[i][:, None] * r_s[None, :]
        if oracle is not None:
            r_ts = true_shifts(oracle[0], i, t)[0]
            prior = replace(prior, sigma_b=oracle[1], sigma_b_df=1e6, sigma_b_source="oracle")
        priors.append(prior)
        mu[i] = np.mean(m_ts - r_ts, axis=1)
        var_b[i] = np.sum(d_ts, axis=1) / s**2
        den_b = np.sum(d_ts**2 / df_ts, axis=1) / s**4
        df_b[i] = np.where(den_b > 0, var_b[i] ** 2 / np.where(den_b > 0, den_b, 1), np.inf)
        sw2_b[i] = np.mean(own, axis=1)
        sw2_df[i] = s * (h - 1.0)
        if s >= 2:
            spread[i] = np.var(m_ts - r_ts, axis=1, ddof=1)
        if s >= 3 and prior.loadings and oracle is None:  # about each test's own line
            spread[i], spread_n[i] = slope_spread(m_ts, r_s)
    # candidate statistics at every look
    mc, dc, dfc, own_c, noise_c, kept = {}, {}, {}, {}, {}, {}
    for k in looks:
        m_k = np.empty((n_suites, t))
        d_k = np.empty((n_suites, t))
        f_k = np.empty((n_suites, t))
        o_k = np.empty((n_suites, t))
        z_k = np.empty((n_suites, t))
        for i in range(n_suites):
            m_k[i], d_k[i], kept[k], f_k[i], o_k[i] = candidate_stats(
                c[i, :, :k], priors[i].rho, res, vp.trim, p.rho_cap, sw2_b[i], sw2_df[i]
            )
            z_k[i] = noise_ratio(o_k[i], sw2_b[i], kept[k], sw2_df[i], priors[i].rho, p.rho_cap)
        mc[k], dc[k], dfc[k], own_c[k], noise_c[k] = m_k, d_k, f_k, o_k, z_k

    def refloor(i: int, idx: np.ndarray, k: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """The candidate's squared SE and df at look k with the stored floor times ``scale``."""
        if scale <= 1.0:
            return dc[k][i, idx], dfc[k][i, idx]
        fl = sw2_b[i, idx] * scale
        return floored_variance(
            own_c[k][i, idx], k, kept[k], priors[i].rho, p.rho_cap, fl, sw2_df[i, idx]
        )

    # df of each change without the session-shift part (for the run's own sigma_b)
    dfw = {k: satterthwaite([(dc[k], dfc[k]), (var_b, df_b)]) for k in looks}
    look_arr = np.asarray(looks)
    mc_a, dc_a, dfc_a, dfw_a, nz_a = (
        np.stack([x[k] for k in looks]) for x in (mc, dc, dfc, dfw, noise_c)
    )

    def pick(arr: np.ndarray, i: int, idx: np.ndarray, kk: np.ndarray) -> np.ndarray:
        return np.asarray(arr[np.searchsorted(look_arr, kk), i, idx])

    n_sess = np.full(t, float(s))
    stop_at = np.full((n_suites, t), looks[-1])
    gsize = math.ceil(t / GROUPS)
    for i in range(n_suites):
        prior = priors[i]
        strong_p = vp.fdr_q / max(prior.n_tests, 1)  # an interim REGRESSED that survives any BH
        # the lowest stored run shift, which it must also survive (decide.look); none: inf
        low = min(prior.run_shifts.values(), default=math.inf)
        for g in range(GROUPS):
            sl = slice(g * gsize, min((g + 1) * gsize, t))
            if sl.start >= t:
                break
            if oracle is not None:
                true = true_shifts(oracle[0], i, t)[1]
                shift = RunShift(float(true.mean()), 0.0, sl.start, 0, ShiftMethod.ROBUST)
                shift_var = 0.0
            else:
                done = np.arange(sl.start)
                kk = stop_at[i, done]
                delta = pick(mc_a, i, done, kk) - mu[i, done]
                vwo = pick(dc_a, i, done, kk) + var_b[i, done]
                dfd = pick(dfw_a, i, done, kk)
                nzd = pick(nz_a, i, done, kk)
                xl, xv = loadings(prior, lam[i, done], lam_v[i, done])
                shift = shift_from_deltas(
                    delta, vwo, n_sess[done], canary[done], prior, p, dfd, nzd, xl, xv
                )
                shift = recent_shift(shift, delta, vwo, n_sess[done], dfd, prior, p, xl, xv)
                shift_var = shift_variance(shift, prior)
            sb2, sb_df, _ = session_spread(prior, shift, p)
            if oracle is None:  # tests whose stored sessions disagree
                sb2, sb_df = per_test_sigma_b2(
                    sb2, prior, spread[i, sl], var_b[i, sl] * s, spread_n[i, sl], sb_df, p
                )
            active = np.ones(sl.stop - sl.start, dtype=bool)
            idx_g = np.arange(sl.start, sl.stop)
            for j, k in enumerate(looks):
                d_g, f_g = refloor(i, idx_g, k, shift.noise_scale)
                # this look's decision for the group at a given (per-test) shift
                at_shift = partial(
                    decide_arrays,
                    mc[k][i, sl],
                    d_g,
                    f_g,
                    mu[i, sl],
                    var_b[i, sl],
                    df_b[i, sl],
                    n_sess[sl],
                    sb2,
                    sb_df,
                )
                dec = at_shift(
                    lam[i, sl] * shift.shift if oracle is None else true[sl],
                    lam[i, sl] ** 2 * shift_var + shift.shift**2 * lam_v[i, sl],
                    vp.tolerance,
                    vp,
                    a,
                    a,
                )
                ok = dec.code != 4
                if shift.method is ShiftMethod.NONE:
                    ok &= (dec.code != 0) & (dec.code != 1)
                if j < k_looks - 1:
                    strong = dec.p * k_looks <= strong_p
                    if oracle is None and low < shift.shift:  # were the run in that state
                        alt = at_shift(
                            lam[i, sl] * low,
                            lam[i, sl] ** 2 * shift_var + low**2 * lam_v[i, sl],
                            vp.tolerance,
                            vp,
                            a,
                            a,
                        )
                        strong &= alt.p * k_looks <= strong_p
                    ok &= (dec.code != 0) | strong
                    if shift.method is not ShiftMethod.NONE:  # too noisy to decide
                        ok |= (dec.code == 4) & hopeless(
                            dec, k, looks[-1], a, vp.tolerance, p.min_gain
                        )
                st_now = active & ok & ~canary[sl]
                stop_at[i, sl][st_now] = k
                active &= ~st_now
    # final judgement
    fail = np.zeros((n_suites, t), dtype=bool)
    inconc = np.zeros((n_suites, t), dtype=bool)
    codes = np.zeros((n_suites, t), dtype=np.int8)
    run_v: list[RunVerdict] = []
    idx_t = np.arange(t)
    for i in range(n_suites):
        prior = priors[i]
        kk = stop_at[i]
        m_f, d_f, f_f, w_f = (pick(x, i, idx_t, kk) for x in (mc_a, dc_a, dfc_a, dfw_a))
        if oracle is not None:
            true = true_shifts(oracle[0], i, t)[1]
            shift = RunShift(float(true.mean()), 0.0, t, 0, ShiftMethod.ROBUST)
            shift_var = 0.0
            local = None
        else:
            z_f = pick(nz_a, i, idx_t, kk)
            xl, xv = loadings(prior, lam[i], lam_v[i])
            shift = shift_from_deltas(
                m_f - mu[i], d_f + var_b[i], n_sess, canary, prior, p, w_f, z_f, xl, xv
            )
            shift_var = shift_variance(shift, prior)
            # each test's own run shift in a run whose shift changed (_local_shifts)
            local = local_shift(m_f - mu[i], d_f + var_b[i], n_sess, w_f, shift, prior, p, xl, xv)
            if shift.noise_scale > 1.0:  # a noisier run: every candidate's floor is raised
                d_f, f_f = d_f.copy(), f_f.copy()
                for k in looks:
                    at = np.flatnonzero(kk == k)
                    d_f[at], f_f[at] = refloor(i, at, k, shift.noise_scale)
        judged, loc_shift, loc_var = shift, shift.shift if oracle is None else true, shift_var
        if local is not None:
            judged, loc_shift, loc_var = local[2], local[0], local[1] ** 2
        if oracle is None:  # each test feels the shift by its loading
            loc_var = lam[i] ** 2 * loc_var + np.square(loc_shift) * lam_v[i]
            loc_shift = lam[i] * loc_shift
        sb2, sb_df, _ = session_spread(prior, judged, p)
        if oracle is None:
            sb2, sb_df = per_test_sigma_b2(
                sb2, prior, spread[i], var_b[i] * s, spread_n[i], sb_df, p
            )
        dec = decide_arrays(
            m_f,
            d_f,
            f_f,
            mu[i],
            var_b[i],
            df_b[i],
            n_sess,
            sb2,
            sb_df,
            loc_shift,
            loc_var,
            vp.tolerance,
            vp,
            a,
            a,
        )
        fam = ~canary
        adj = np.ones(t)
        adj[fam] = st.false_discovery_control(np.minimum(1.0, dec.p[fam] * k_looks), method="bh")
        reg = (dec.code == 0) & fam
        fail[i] = reg & (adj <= vp.fdr_q)
        inconc[i] = (dec.code == 4) | (reg & ~fail[i]) | ((dec.code == 0) & canary)
        codes[i] = dec.code
        run_v.append(run_verdict(shift, prior, p)[0])
    return Result(fail, stop_at, run_v, inconc, codes)


def loadings(
    prior: SuitePrior, lam: np.ndarray, lam_v: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The loadings to pass the shift estimators: None when the prior learned none."""
    return (lam, lam_v) if prior.loadings else (None, None)


def true_shifts(r: np.ndarray, i: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Suite run ``i``'s true shifts: of each stored session (T, S), centred per test, and of
    this run (T,) relative to their mean."""
    ri = np.asarray(r[i], dtype=float)
    if ri.ndim == 1:
        ri = np.broadcast_to(ri[None, :], (t, ri.size))
    stored = ri[:, :-1]
    centre = stored.mean(axis=1, keepdims=True)
    return stored - centre, ri[:, -1] - centre[:, 0]


def self_check(b: np.ndarray, c: np.ndarray, nz: Noise, p: SuiteParams, got: Result) -> None:
    """Re-decide suite run 0 through the scalar API (group-wise running shift) and compare."""
    t, s = b.shape[1], b.shape[2]
    res = nz.quantum / 18.0
    tests_all = []
    for j in range(t):
        runs = [StoredRun(f"s{q}", list(np.exp(b[0, j, q]))) for q in range(s)]
        tests_all.append((f"t{j}", runs, np.exp(c[0, j])))
    prior = suite_prior({k: r for k, r, _ in tests_all}, p, {k: res for k, _, _ in tests_all})
    gsize = math.ceil(t / GROUPS)
    done: list[TestInput] = []
    looks = p.verdict.looks
    rounds = []
    for g in range(GROUPS):
        grp = tests_all[g * gsize : (g + 1) * gsize]
        if not grp:
            break
        shift = running_shift(done, prior, p)
        new = []
        for j, (key, runs, cand) in enumerate(grp):
            canary = g * gsize + j < nz.canaries
            for li, k in enumerate(looks):
                ti = TestInput(key, runs, list(cand[:k]), canary=canary, resolution=res)
                stop, _ = look(ti, prior, shift, p, li, len(looks))
                if stop:
                    break
            rounds.append(k)
            new.append(ti)
        done.extend(new)
    dec = judge_suite(done, prior, p)
    fails = np.array([c.verdict is S.Verdict.REGRESSED for c in dec.comparisons.values()])
    if not (np.array_equal(np.array(rounds), got.rounds[0]) and np.array_equal(fails, got.fail[0])):
        bad = np.flatnonzero(np.array(rounds) != got.rounds[0])
        raise SystemExit(
            f"self-check failed for {nz.name}: scalar API disagrees with the vectorised path "
            f"(rounds differ at {bad[:5]}, fails {fails.sum()} vs {got.fail[0].sum()})"
        )
    if dec.run_verdict is not got.run[0]:
        raise SystemExit(f"self-check failed for {nz.name}: run verdict differs")


def effects(n_suites: int, t: int, kind: str) -> np.ndarray:
    e = np.zeros((n_suites, t))
    if kind == "reg":
        # tests 3.. of each group of 30 at -5/-8/-10 % (spread over the run's groups)
        idx = np.arange(t)
        sel = idx[(idx % (t // 10 if t >= 30 else 1)) == 5][:30] if t >= 30 else idx[-1:]
        for n, j in enumerate(sel):
            e[:, j] = math.log((0.95, 0.92, 0.90)[n % 3])
    elif kind == "shared":
        e[:] = math.log(0.95)
    return e


def simulate(
    nz: Noise, n_suites: int, seed: np.random.SeedSequence, p: SuiteParams, check: bool
) -> dict[str, float]:
    out: dict[str, float] = {}
    rngs = [np.random.default_rng(x) for x in seed.spawn(3)]
    for kind, rng in zip(("aa", "reg", "shared"), rngs, strict=True):
        eff = effects(n_suites, nz.n_tests, kind)
        if kind == "reg" and nz.n_tests >= 30:
            eff = np.zeros((n_suites, nz.n_tests))
            sel = np.arange(nz.n_tests)[5::10][:30]
            for n, j in enumerate(sel):
                eff[:, j] = math.log((0.95, 0.92, 0.90)[n % 3])
        b, c, r, _ = draw(rng, nz, n_suites, eff if kind != "shared" else eff * 0.0)
        if kind == "shared":  # a stack change: every test -5 %, i.e. a run-wide shift
            c = c + math.log(0.95)
            r = r.copy()
            r[:, -1] += math.log(0.95)
        for who in ("tpw", "oracle"):
            orc = None
            if who == "oracle":
                orc = (r, nz.sigma_b, nz.rho)
            res = engine(b, c, nz, p, orc)
            if check and who == "tpw" and kind == "aa":
                self_check(b, c, nz, p, res)
            beyond_low = np.mean([v is RunVerdict.BEYOND_LOWER for v in res.run])
            beyond = np.mean(
                [v in (RunVerdict.BEYOND_LOWER, RunVerdict.BEYOND_UPPER) for v in res.run]
            )
            if kind == "aa":
                out[f"{who}.fa_aa"] = float(res.fail.sum(axis=1).mean())
                out[f"{who}.rounds"] = float(res.rounds.mean())
                out[f"{who}.run_flag"] = float(beyond)
                out[f"{who}.inc"] = float(res.inconclusive.mean())
            elif kind == "reg":
                null = eff[0] == 0.0
                out[f"{who}.fa_reg"] = float(res.fail[:, null].sum(axis=1).mean())
                for drop in (0.95, 0.92, 0.90):
                    col = np.isclose(eff[0], math.log(drop))
                    out[f"{who}.det{drop}"] = float(res.fail[:, col].mean())
            else:
                out[f"{who}.shared_low"] = float(beyond_low)
                out[f"{who}.shared_fail"] = float(res.fail.sum(axis=1).mean())
    return out


SCENARIOS: tuple[Noise, ...] = (
    Noise("independent, 3 stored", history=3),
    Noise("independent, 1 stored", history=1),
    Noise("independent, 10 stored", history=10),
    Noise("clock -3 % in 1 run of 5, 3 stored", run="clock"),
    Noise("clock -3 % in 1 run of 5, 10 stored", run="clock", history=10),
    Noise("board offset SD 1 %, 3 stored", run="board"),
    Noise("fleet drift -2 %, 3 stored", run="drift"),
    Noise("per-test shift SD 1 %, 1 stored", sigma_b=0.01, history=1),
    Noise("per-test shift SD 1 %, 3 stored", sigma_b=0.01, history=3),
    Noise("AR(1) 0.6 + 1.5 % trend, 1 stored", rho=0.6, trend=0.015, history=1),
    Noise("AR(1) 0.6 + 1.5 % trend, 3 stored", rho=0.6, trend=0.015, history=3),
    Noise("t(3) tails, 3 stored", tails=True),
    Noise("quantised 18 J / 1 J steps, 3 stored", quantum=1.0),
    Noise("3 canaries, clock, 3 stored", run="clock", canaries=3),
)


def small_suites(
    n_suites: int, seed: np.random.SeedSequence, p: SuiteParams
) -> list[tuple[str, ...]]:
    """Suite sizes for a run shift estimated from all tests (clock noise, 3 stored runs, no
    canaries): a shared -5 % change plus one test changed by a further -10 %. Per size:
    failures of the unchanged tests per run, detection of the changed one, BEYOND_LOWER."""
    rows: list[tuple[str, ...]] = [
        ("tests", "false REGRESSED / run", "one test -10 % detected", "BEYOND_LOWER")
    ]
    pp = replace(p, min_tests_robust=3)
    for n, sd in zip((3, 4, 5, 6, 8, 10, 15, 20), seed.spawn(8), strict=True):
        nz = Noise("small", n_tests=n, run="clock")
        runs = n_suites * 3
        eff = np.zeros((runs, n))
        eff[:, 0] = math.log(0.90)
        b, c, _, _ = draw(np.random.default_rng(sd), nz, runs, eff)
        c = c + math.log(0.95)
        res = engine(b, c, nz, pp)
        rows.append(
            (
                str(n),
                f"{res.fail[:, 1:].sum(axis=1).mean():.3f}",
                f"{res.fail[:, 0].mean():.1%}",
                f"{np.mean([v is RunVerdict.BEYOND_LOWER for v in res.run]):.1%}",
            )
        )
    return rows


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--suites", type=int, default=100, help="simulated suite runs per scenario")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="run only scenarios whose name contains this")
    ap.add_argument("--no-check", action="store_true", help="skip the scalar-API self-check")
    ap.add_argument("--no-small", action="store_true", help="skip the small-suite sweep")
    args = ap.parse_args(argv)
    if args.suites < 1:
        ap.error("need --suites >= 1")
    cmd = shlex.join(
        ["python", "benchmarks/stats_power.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"$ {cmd}")
    p = SuiteParams()
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(args.seed).spawn(len(SCENARIOS) + 1)
    rows: list[tuple[str, ...]] = [
        (
            "scenario",
            "engine",
            "false REG/run A/A",
            "false REG/run (30 reg)",
            "det -5 %",
            "det -8 %",
            "det -10 %",
            "mean rounds",
            "A/A runs flagged",
            "shared -5 %: BEYOND_LOWER",
            "shared -5 %: fails/run",
        )
    ]
    for nz, sd in zip(SCENARIOS, seeds, strict=False):
        if args.only and args.only not in nz.name:
            continue
        o = simulate(nz, args.suites, sd, p, not args.no_check)
        for who in ("tpw", "oracle"):
            rows.append(
                (
                    nz.name if who == "tpw" else "",
                    "pytest-tpw" if who == "tpw" else "ORACLE",
                    f"{o[who + '.fa_aa']:.3f}",
                    f"{o[who + '.fa_reg']:.3f}",
                    f"{o[who + '.det0.95']:.1%}",
                    f"{o[who + '.det0.92']:.1%}",
                    f"{o[who + '.det0.9']:.1%}",
                    f"{o[who + '.rounds']:.2f}",
                    f"{o[who + '.run_flag']:.1%}",
                    f"{o[who + '.shared_low']:.1%}",
                    f"{o[who + '.shared_fail']:.3f}",
                )
            )
        print(f"  [{time.perf_counter() - t0:.0f} s] {nz.name}", file=sys.stderr, flush=True)
    print(table(rows))
    if not args.no_small and not args.only:
        print()
        print("Suite size for an all-test run shift (clock noise, 3 stored runs, no canaries):")
        rows = small_suites(max(args.suites // 2, 10), seeds[-1], p)
        print(table(rows))
        ok = [
            int(r[0])
            for r in rows[1:]
            if float(r[1]) <= 0.05 and float(r[2][:-1]) >= 95.0 and float(r[3][:-1]) >= 90.0
        ]
        print(
            f"smallest size meeting <= 0.05 false REGRESSED, >= 95 % detection and >= 90 % "
            f"BEYOND_LOWER: {min(ok) if ok else 'none'}; min_tests_robust in use: "
            f"{p.min_tests_robust}"
        )
    print(
        f"\n{args.suites} suite runs per scenario and row, seed {args.seed}, "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
