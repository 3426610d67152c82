"""Verdicts for a whole suite run: each test's look relative to the run-wide shift, the final
comparisons after Benjamini-Hochberg, and the run-wide verdict.

How the judge (:mod:`pytest_tpw.judging.judge`) calls the engine::

    prior = suite_prior({key: stored_runs, ...}, params)          # once per session
    changes = []
    for test in session order:
        shift = look_shift(changes, prior, params)               # the tests finished so far
        for j, k in enumerate(params.verdict.looks):             # after k windows
            stop, cmp = look(test_with_k_windows, prior, shift, params, j, n_looks)
            if stop: break                                       # cmp is provisional
        changes.append(change_of(test_with_its_windows, prior, params))
    decision = judge_suite(done, prior, params)                  # final, after BH

Tests of different hardware keys are separate suites (one prior and one decision per key).

* :func:`look` one interim or final decision for one test: stops as soon as the interval lies
  inside one verdict region (REGRESSED, MINOR_REGRESSION, UNCHANGED or IMPROVED) or when it
  is too noisy to be decided by the last look (:func:`~.kernels.hopeless`), every look at
  Pocock's level on both sides (:func:`pytest_tpw.stats.look_level`); its comparison is
  provisional, the final one comes from :func:`judge_suite`.
* :func:`judge_suite` the final run shift with its verdict against stored run shifts, and each
  test's final :class:`~pytest_tpw.stats.Comparison` relative to it after Benjamini-Hochberg
  (p-values Bonferroni-corrected for the looks). A canary never fails: its REGRESSED is
  reported as INCONCLUSIVE with the reason, and it stays out of the FDR family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from pytest_tpw import stats
from pytest_tpw.judging.kernels import ArrayDecision, candidate_stats, decide_arrays, hopeless
from pytest_tpw.judging.model import (
    TEST_NOISE_SOURCE,
    TEST_SPREAD_SOURCE,
    ChangeArrays,
    RunShift,
    RunVerdict,
    ShiftMethod,
    SuiteDecision,
    SuiteParams,
    SuitePrior,
    TestChange,
    TestInput,
    loading_of,
)
from pytest_tpw.judging.prior import (
    check_resolution,
    logs_of,
    per_test_sigma_b2,
    stored_level,
    tail_levels,
    unprofile,
)
from pytest_tpw.judging.shift import (
    change_of,
    local_shift,
    session_spread,
    shift_from_changes,
    shift_variance,
)
from pytest_tpw.stats import (
    VERDICT_CODES,
    Comparison,
    Verdict,
    bh_adjusted,
    look_level,
    tukey_outliers,
)


def _tolerance(test: TestInput, p: SuiteParams) -> float:
    """The test's own tolerance, or the suite's."""
    return p.verdict.tolerance if test.tolerance is None else float(test.tolerance)


def _compare_one(
    test: TestInput,
    prior: SuitePrior,
    shift: RunShift,
    p: SuiteParams,
    alpha: float,
    alpha_equiv: float,
) -> tuple[Comparison, ArrayDecision | None]:
    """One test's comparison relative to the run shift, and its decision arrays (None when
    no interval exists)."""
    check_resolution(test)
    tol = _tolerance(test, p)
    if not 0.0 < tol < 1.0 or tol <= p.verdict.noise_floor:
        raise ValueError(f"{test.key}: tolerance must be in (noise_floor, 1), got {tol}")
    b = stored_level(test, prior, p)
    c = unprofile(logs_of(test.candidate, f"{test.key} (this run)"), prior.profile)
    sb2, sb_df, src = session_spread(prior, shift, p)
    sb2_a, sb_df_a = per_test_sigma_b2(
        sb2,
        prior,
        np.asarray([b.spread]),
        np.asarray([b.within]),
        np.asarray([float(b.spread_sessions or b.n_sessions)]),
        sb_df,
        p,
    )
    eps = tail_levels(prior, p)[1]  # BH's smallest threshold
    own_q = math.sqrt(float(sb2_a[0])) * float(stats.t_ppf(1.0 - eps, max(float(sb_df_a[0]), 1.0)))
    if own_q > 1.01 * math.sqrt(sb2) * float(stats.t_ppf(1.0 - eps, max(sb_df, 1.0))):
        src = TEST_NOISE_SOURCE if prior.sigma_b_log_sd > 0.0 else TEST_SPREAD_SOURCE
    sb2, sb_df = float(sb2_a[0]), float(sb_df_a[0])
    proto = Comparison(
        verdict=Verdict.INCONCLUSIVE,
        ratio=math.nan,
        ci_low=None,
        ci_high=None,
        p_regression=1.0,
        n_baseline=b.n_windows,
        n_candidate=int(c.size),
        n_sessions=b.n_sessions,
        sigma_b=math.sqrt(sb2),
        sigma_b_source=src,
        df=math.nan,
        se_log=math.nan,
        alpha=alpha,
        alpha_equiv=alpha_equiv,
        shift=loading_of(prior, test.key)[0] * shift.shift,
        outliers=tukey_outliers(c),
        outliers_baseline=tukey_outliers(b.logs),
    )
    if b.n_windows == 0:
        none = replace(proto, verdict=Verdict.NO_BASELINE, why="no stored runs to compare with")
        return none, None
    if b.n_sessions == 0 or c.size < 2:
        return replace(
            proto,
            why=f"no interval: {c.size} window(s) this run, {b.n_sessions} usable stored "
            "run(s) (an interval needs at least 2 windows per side); verdict INCONCLUSIVE",
        ), None
    floor = b.sw2 * shift.noise_scale  # a busy runner's windows are noisier for every test
    m, d, h, df_c, _ = candidate_stats(
        c, prior.rho, test.resolution, p.verdict.trim, p.rho_cap, floor, b.sw2_df
    )
    if h < 2:
        return replace(proto, why="no interval: fewer than 2 windows left after trimming"), None
    lam, lam_var = loading_of(prior, test.key)
    shift_var = lam * lam * shift_variance(shift, prior) + shift.shift**2 * lam_var
    dec = decide_arrays(
        np.asarray([float(m)]),
        np.asarray([float(d)]),
        np.asarray([float(df_c)]),
        np.asarray([b.mu]),
        np.asarray([b.var_b]),
        np.asarray([b.df_b]),
        np.asarray([b.n_sessions]),
        sb2,
        sb_df,
        lam * shift.shift,
        shift_var,
        tol,
        replace(p.verdict, tolerance=tol),
        alpha,
        alpha_equiv,
    )
    verdict = VERDICT_CODES[int(dec.code[0])]
    est = float(dec.est[0])
    why = None
    if shift.method is ShiftMethod.NONE:
        why = (
            "no run-wide shift estimate (too few tests and no canary): the spread of run "
            "shifts is counted as noise in this interval"
        )
    return replace(
        proto,
        verdict=verdict,
        ratio=math.exp(est),
        ci_low=math.exp(float(dec.low[0])),
        ci_high=math.exp(float(dec.high[0])),
        p_regression=float(dec.p[0]),
        df=float(dec.df[0]),
        se_log=float(dec.se[0]),
        why=why,
    ), dec


def _look_alpha(p: SuiteParams, n_looks: int) -> float:
    """Level of each side at every look: Pocock's for the configured looks (equally spaced
    ones when the caller counts a different number of looks)."""
    looks = p.verdict.looks
    if len(looks) != n_looks:
        looks = tuple(range(1, n_looks + 1))
    return look_level(p.verdict.alpha, looks)


def look(
    test: TestInput,
    prior: SuitePrior,
    shift: RunShift,
    params: SuiteParams | None,
    look_index: int,
    n_looks: int,
    *,
    family_size: int | None = None,
) -> tuple[bool, Comparison]:
    """Decide after this many windows, at look ``look_index`` (0-based) of ``n_looks``.

    Both sides at Pocock's level for the looks (:func:`pytest_tpw.stats.look_level`: crossing
    a side at any look has chance ``alpha``). Stops when the verdict is REGRESSED,
    MINOR_REGRESSION, UNCHANGED or IMPROVED (the interval lies inside one verdict's region),
    or at the last look; a canary runs every look (it measures the run shift). An interim
    REGRESSED stops only when ``K * p <= fdr_q / family_size`` (it then survives
    Benjamini-Hochberg whatever the other tests say; ``family_size`` defaults to the number of
    tests with stored runs in the prior), both against ``shift`` and against the lowest
    stored run shift below it: a run may be entering that state just as this test starts,
    and the final verdict, against the shift of the tests around it, has only the windows
    taken so far. Without a run shift estimate yet (method ``none``: the
    first tests of a run, or a small suite without canaries) it never stops on a drop before
    the last look. The comparison
    is ``provisional`` (``stopped_early`` when it stopped before the last look): the reported
    one comes from :func:`judge_suite`.
    """
    if n_looks < 1 or not 0 <= look_index < n_looks:
        raise ValueError(f"look_index must be in [0, {n_looks}), got {look_index}")
    p = params if params is not None else SuiteParams()
    a = _look_alpha(p, n_looks)
    cmp, dec = _compare_one(test, prior, shift, p, a, a)
    last = look_index == n_looks - 1
    decided = cmp.verdict in (
        Verdict.REGRESSED,
        Verdict.MINOR_REGRESSION,
        Verdict.UNCHANGED,
        Verdict.IMPROVED,
        Verdict.NO_BASELINE,
    )
    if shift.method is ShiftMethod.NONE and cmp.verdict in (
        Verdict.REGRESSED,
        Verdict.MINOR_REGRESSION,
    ):
        decided = False  # the run shift is not known yet: a shared drop may explain it
    elif cmp.verdict is Verdict.REGRESSED and not last:
        # stop on REGRESSED only when it survives BH whatever the rest of the suite says
        m = family_size if family_size is not None else max(prior.n_tests, 1)
        bound = p.verdict.fdr_q / max(m, 1)
        decided = cmp.p_regression * n_looks <= bound
        low = min(prior.run_shifts.values(), default=shift.shift)
        if decided and low < shift.shift:
            # and were the run to move to its lowest stored state (a clock state it may be
            # entering just now, unseen by the tests before): the final verdict, against the
            # shift around it, has only these windows
            alt, _ = _compare_one(test, prior, replace(shift, shift=low), p, a, a)
            decided = alt.p_regression * n_looks <= bound
    elif (
        cmp.verdict is Verdict.INCONCLUSIVE
        and not last
        and dec is not None
        and shift.method is not ShiftMethod.NONE
        and p.verdict.looks[-1] > cmp.n_candidate
    ):
        n_last = p.verdict.looks[-1]
        tol = _tolerance(test, p)
        if bool(hopeless(dec, cmp.n_candidate, n_last, a, tol, p.min_gain)[0]):
            decided = True
            because = (
                "its estimate shows no drop"
                if float(dec.est[0]) > 0.0
                else f"{n_last} windows would narrow it by less than {p.min_gain:.0%} "
                "(its noise is its stored sessions', not its windows')"
            )
            cmp = replace(
                cmp,
                why=f"too noisy to decide within {n_last} windows: even then its interval "
                f"would reach below -{tol:.0%}, and {because}, so it stopped at "
                f"{cmp.n_candidate}; give it a quieter runner or more stored runs",
            )
    stop = last or (decided and not test.canary)
    return stop, replace(cmp, provisional=True, stopped_early=stop and not last)


def judge_suite(
    tests: Sequence[TestInput], prior: SuitePrior, params: SuiteParams | None = None
) -> SuiteDecision:
    """Final run shift and verdict, and every test's comparison relative to it, after BH.

    Every comparison uses the looks' level on both sides (K looks, as :func:`look`); its
    one-sided p-value enters Benjamini-Hochberg (non-canaries only) multiplied by K (Bonferroni
    over looks). A REGRESSED whose adjusted p exceeds ``fdr_q`` becomes INCONCLUSIVE; a canary's
    REGRESSED also becomes INCONCLUSIVE (the run shift, not the canary, is the finding).
    """
    p = params if params is not None else SuiteParams()
    keys = [t.key for t in tests]
    if len(set(keys)) != len(keys):
        raise ValueError("judge_suite: test keys must be unique")
    changes = [change_of(t, prior, p) for t in tests]
    shift = shift_from_changes(changes, prior, p)
    k_looks = len(p.verdict.looks)
    a = _look_alpha(p, k_looks)
    shifts, moved = _local_shifts(changes, shift, prior, p)
    comps = [_compare_one(t, prior, shifts[i], p, a, a)[0] for i, t in enumerate(tests)]
    fam = [
        i
        for i, (t, c) in enumerate(zip(tests, comps, strict=True))
        if not t.canary and c.verdict is not Verdict.NO_BASELINE
    ]
    adj = bh_adjusted([min(1.0, comps[i].p_regression * k_looks) for i in fam])
    q = p.verdict.fdr_q
    for i, pa in zip(fam, adj, strict=True):
        c = comps[i]
        if c.verdict is Verdict.REGRESSED and pa > q:
            comps[i] = replace(
                c,
                verdict=Verdict.INCONCLUSIVE,
                p_adjusted=pa,
                why=f"REGRESSED on its own (p = {c.p_regression:.3g}) but not after "
                f"Benjamini-Hochberg over {len(fam)} comparisons (adjusted p = {pa:.3g} > "
                f"q = {q:g})",
            )
        else:
            comps[i] = replace(c, p_adjusted=pa)
    for i, t in enumerate(tests):
        if t.canary and comps[i].verdict is Verdict.REGRESSED:
            comps[i] = replace(
                comps[i],
                verdict=Verdict.INCONCLUSIVE,
                why="canary: its drift measures the run, it never fails on its own",
            )
    verdict, ratio, ci, z, why = run_verdict(shift, prior, p, any(t.baseline for t in tests))
    notes = run_notes(shift, prior, p, moved) if math.isfinite(ratio) else ()
    why = "; ".join((why, *notes))
    comparisons = dict(zip(keys, comps, strict=True))
    return SuiteDecision(shift, verdict, ratio, ci, z, comparisons, why, notes)


def _local_shifts(
    changes: Sequence[TestChange | None], shift: RunShift, prior: SuitePrior, p: SuiteParams
) -> tuple[list[RunShift], tuple[float, float] | None]:
    """Per test: the run shift to judge it against (its local one when :func:`local_shift`
    applies, which needs a run whose tests disagree), and the range of local shifts (ratio
    - 1) or None."""
    shifts = [shift] * len(changes)
    idx = [i for i, c in enumerate(changes) if c is not None]
    a = ChangeArrays.of([c for c in changes if c is not None])
    got = local_shift(
        a.delta, a.var_wo, a.n_sessions, a.df, shift, prior, p, a.loading, a.loading_var
    )
    if got is None:
        return shifts, None
    loc, se, judged = got
    for j, i in enumerate(idx):
        shifts[i] = replace(judged, shift=float(loc[j]), se=float(se[j]))
    return shifts, (math.expm1(float(loc.min())), math.expm1(float(loc.max())))


def run_verdict(
    shift: RunShift, prior: SuitePrior, params: SuiteParams, has_baseline: bool = True
) -> tuple[RunVerdict, float, tuple[float, float] | None, float, str]:
    """The run shift against the spread of stored run shifts (and the noise floor).

    ``z = shift / sqrt(run_sd^2 (1 + 1/S) + se^2)`` (S stored runs); BEYOND_LOWER when
    ``z < -t_{df}(1 - run_alpha)`` and the shift is below ``log(1 - noise_floor)``, BEYOND_UPPER
    symmetrically; ``df`` is the run spread's. Returns (verdict, ratio, interval at
    ``1 - 2 run_alpha`` of the shift, z, sentence).
    """
    if not has_baseline or prior.n_tests == 0:
        return RunVerdict.NO_BASELINE, math.nan, None, math.nan, "no stored runs"
    if shift.method is ShiftMethod.NONE:
        return (
            RunVerdict.TOO_FEW_TESTS,
            math.nan,
            None,
            math.nan,
            f"{shift.n_tests} compared test(s) (< {params.min_tests_robust}) and no canary: "
            "no run-wide shift estimate; declare canaries (canary=True) in small suites",
        )
    s = max(prior.n_sessions, 1)
    scale = math.sqrt(prior.run_sd**2 * (1.0 + 1.0 / s) + shift.se**2)
    z = shift.shift / scale
    tq = float(stats.t_ppf(1.0 - params.run_alpha, prior.run_sd_df))
    nf = params.verdict.noise_floor
    ci = (
        math.exp(shift.shift - 1.96 * shift.se),
        math.exp(shift.shift + 1.96 * shift.se),
    )
    ratio = math.exp(shift.shift)
    src = f"{shift.method} estimate from {shift.n_tests} test(s)"
    if shift.method is ShiftMethod.CANARIES:
        plural = "y" if shift.n_canaries == 1 else "ies"
        src = f"canary estimate from {shift.n_canaries} canar{plural}"
    if z < -tq and shift.shift < math.log(1.0 - nf):
        v = RunVerdict.BEYOND_LOWER
    elif z > tq and shift.shift > math.log(1.0 + nf):
        v = RunVerdict.BEYOND_UPPER
    else:
        v = RunVerdict.WITHIN_SPREAD
    why = (
        f"run-wide shift {100 * (ratio - 1):+.2f} % ({src}), stored runs spread "
        f"{100 * prior.run_sd:.2f} % over {prior.n_sessions} run(s): {v.value}"
    )
    return v, ratio, ci, z, why


def run_notes(
    shift: RunShift,
    prior: SuitePrior,
    params: SuiteParams,
    moved: tuple[float, float] | None = None,
) -> tuple[str, ...]:
    """What the run-wide line should add about this run's noise, one sentence each: a busy
    runner (windows noisier than the stored ones), tests that differ in session noise, tests
    that feel the run shift unequally (their loadings), a shift that changed during the run
    (``moved``: the range of local shifts, ratio - 1)."""
    notes = []
    if shift.noise_scale >= 1.5:
        notes.append(
            f"this run's windows vary {math.sqrt(shift.noise_scale):.1f}x as much as the "
            "stored runs' (a busy runner?): every interval is widened to match"
        )
    if prior.sigma_b_log_sd > 0.0:
        z80 = 1.2816 * prior.sigma_b_log_sd  # the middle 80 % of tests
        lo, hi = (100 * math.exp(0.5 * (prior.sigma_b_log_mean + d)) for d in (-z80, z80))
        notes.append(
            f"the tests differ in how far their level moves between sessions (SD {lo:.2g}-"
            f"{hi:.2g} % for the middle 80 %): each is judged with its own spread, never "
            "narrower than the suite's"
        )
    if prior.loadings:
        values = sorted(lam for lam, _ in prior.loadings.values())
        lo, hi = (values[round(f * (len(values) - 1))] for f in (0.1, 0.9))
        notes.append(
            f"the tests feel the stored runs' shifts unequally (loadings {lo:.2g}-{hi:.2g} for "
            "the middle 80 %, 1 = the run-wide shift): each is judged against its own share "
            "of this run's shift"
        )
    if moved is not None:
        notes.append(
            f"the shift changed during the run (from {100 * moved[0]:+.1f} % to "
            f"{100 * moved[1]:+.1f} %): each test is judged against its {params.local_width} "
            "neighbours in run order"
        )
    return tuple(notes)
