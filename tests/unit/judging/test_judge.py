"""Judge and BaselinePolicy without pytest: rounds, the run-wide finding, final verdicts after
Benjamini-Hochberg, strict mode, budgets, canaries, workers' judgements decided by the
controller, the per-test fallback for reruns.

Measurements are hand-made :class:`~pytest_tpw.meter.Measurement` objects fed to the round
policy the way the meter does (``while policy.more(m): record a window``); baselines are
:class:`~pytest_tpw.baseline.BaselineFile` objects built in memory. Every series is seeded, so
each test sees the same numbers on every run.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shlex
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from pytest_tpw import stats
from pytest_tpw.config.settings import MarkerArgs, Settings, TestSettings
from pytest_tpw.judging.judge import BaselinePolicy, Judge, Judgement
from pytest_tpw.measure.samples import Measurement, Sample
from pytest_tpw.store.baseline import BaselineFile, StoredSession
from pytest_tpw.verdict import Verdict

KEY = "sim-x1"
NODE = "t.py::test_gen"
LEVEL = 6.5  # tokens per joule of the baselines
TOKENS = 24
SECONDS = 0.012

BASE_SOFTWARE = {"driver": "550.54", "torch": "2.3.0", "python": "3.11.7"}


def series(level: float, n: int, seed: int, noise: float = 0.01) -> list[float]:
    rng = random.Random(seed)
    return [level * math.exp(rng.gauss(0.0, noise)) for _ in range(n)]


def sample(value: float) -> Sample:
    joules = TOKENS / value
    return Sample(TOKENS, joules, SECONDS, 6, {"sim:0": joules})


def measurement(
    values: Iterable[float] = (), nodeid: str = NODE, name: str | None = None
) -> Measurement:
    m = Measurement(nodeid, name, "sim", "simulated")
    m.samples.extend(sample(v) for v in values)
    m.complete = True
    return m


def stored(
    values: Sequence[float],
    software: dict[str, str] | None = None,
    date: str = "2025-01-01T00:00:00+00:00",
) -> StoredSession:
    return StoredSession(
        date=date,
        commit="abc",
        software=dict(software or BASE_SOFTWARE),
        sensor="sim",
        provenance="simulated",
        samples=[(TOKENS, TOKENS / v, SECONDS) for v in values],
    )


def baseline_for(
    *nodeids: str, level: float = LEVEL, noise: float = 0.01, software: dict[str, str] | None = None
) -> BaselineFile:
    return BaselineFile(
        KEY,
        {"models": ["sim"]},
        {
            nodeid: [stored(series(level, 20, seed=100 + i, noise=noise), software)]
            for i, nodeid in enumerate(nodeids)
        },
    )


class Run:
    """What the meter does with a policy: ask before each window, record until it says stop."""

    def __init__(self, policy: BaselinePolicy, values: Iterator[float], nodeid: str = NODE) -> None:
        self.m = Measurement(nodeid, None, "sim", "simulated")
        self.asked_at: list[tuple[int, bool]] = []
        while True:
            more = policy.more(self.m)
            self.asked_at.append((len(self.m.samples), more))
            if not more:
                break
            assert len(self.m.samples) < 100, "the policy never stopped"
            self.m.samples.append(sample(next(values)))
        self.m.complete = True
        self.comparison = policy.comparisons.get(self.m.key)
        self.verdict = policy.verdict(self.m.key)

    @property
    def n(self) -> int:
        return len(self.m.samples)


def endless(level: float, seed: int, noise: float = 0.01) -> Iterator[float]:
    return iter(series(level, 100, seed, noise))


def for_test(judge: Judge, marker: MarkerArgs | None = None) -> TestSettings:
    """The test's effective settings, as the plugin computes them once per test."""
    return judge.settings.for_test(marker)


def judge_run(
    judge: Judge,
    level: float,
    seed: int,
    marker: MarkerArgs | None = None,
    nodeid: str = NODE,
    noise: float = 0.01,
) -> tuple[Run, Judgement]:
    test = for_test(judge, marker)
    run = Run(judge.policy(test), endless(level, seed, noise), nodeid)
    result = run.m.summarize(test.confidence, run.verdict)
    j = judge.judge(run.m, result, test, run.comparison)
    return run, j


def comparison(
    verdict: stats.Verdict, p: float, ratio: float = 0.9, **changes: object
) -> stats.Comparison:
    """A finished comparison with the given verdict and one-sided p-value."""
    c = stats.Comparison(
        verdict=verdict,
        ratio=ratio,
        ci_low=ratio * 0.97,
        ci_high=ratio * 1.02,
        p_regression=p,
        n_baseline=20,
        n_candidate=20,
        n_sessions=1,
        sigma_b=0.0,
        sigma_b_source="none",
        df=30.0,
        se_log=0.01,
        alpha=0.05,
        alpha_equiv=0.05,
    )
    return dataclasses.replace(c, **changes)  # type: ignore[arg-type]


def judge_with(
    judge: Judge, c: stats.Comparison | None, nodeid: str = NODE, marker: MarkerArgs | None = None
) -> Judgement:
    m = measurement(series(LEVEL, 5, seed=1), nodeid)
    test = for_test(judge, marker)
    verdict = Verdict.NO_BASELINE if c is None else c.verdict
    return judge.judge(m, m.summarize(test.confidence, verdict), test, c)


ON = Settings(enabled=True)


ON = Settings(enabled=True)


def sessions_of(
    level: float,
    shifts: Sequence[float],
    seed: int,
    noise: float = 0.01,
    software: dict[str, str] | None = None,
) -> list[StoredSession]:
    """Stored sessions of one test, session i at ``level * shifts[i]`` (one run each)."""
    return [
        stored(
            series(level * f, 20, seed=seed + 7 * i, noise=noise),
            software,
            date=f"2025-01-{i + 1:02d}T00:00:00+00:00",
        )
        for i, f in enumerate(shifts)
    ]


def suite_baseline(
    nodeids: Sequence[str], runs: Sequence[float] = (1.0, 1.004, 0.996), noise: float = 0.01
) -> BaselineFile:
    """Several tests recorded in the same stored runs (a run's shift is shared by all)."""
    return BaselineFile(
        KEY,
        {"models": ["sim"]},
        {
            nodeid: sessions_of(LEVEL, runs, seed=200 + 31 * i, noise=noise)
            for i, nodeid in enumerate(nodeids)
        },
    )


# -- round targets --------------------------------------------------------------------------


def test_no_baseline_first_look_then_no_baseline() -> None:
    judge = Judge(ON, None, KEY)
    assert not judge.comparing
    assert judge.shift() is None
    run, j = judge_run(judge, LEVEL, seed=1)
    assert run.n == 5
    assert run.comparison is None
    assert j.verdict is Verdict.NO_BASELINE  # the one Verdict enum, not a string
    assert stats.Verdict is Verdict
    assert run.verdict is Verdict.NO_BASELINE
    assert not j.fails and not j.pending and j.baseline_level is None
    assert judge.finish() == {} and judge.run_wide is None  # nothing compared, no finding


def test_baseline_without_this_measurement_is_no_baseline() -> None:
    judge = Judge(ON, baseline_for("t.py::test_other"), KEY)
    assert judge.comparing
    run, j = judge_run(judge, LEVEL, seed=1)
    assert run.n == 5
    assert j.verdict == "NO_BASELINE" and not j.pending
    assert judge.finish() == {}


@pytest.mark.parametrize(
    "settings",
    [
        Settings(enabled=True, baseline_mode="replace"),
        Settings(enabled=True, baseline_mode="missing"),
    ],
    ids=["update", "update-missing"],
)
@pytest.mark.parametrize("has_baseline", [False, True], ids=["new", "existing"])
def test_twenty_rounds_when_updating(settings: Settings, has_baseline: bool) -> None:
    judge = Judge(settings, baseline_for(NODE) if has_baseline else None, KEY)
    run, j = judge_run(judge, LEVEL * 0.8, seed=2)  # even a clear regression: all 20
    assert run.n == 20
    if has_baseline:
        assert run.comparison is not None and run.comparison.n_candidate == 20
        assert j.pending
        judge.finish()
        assert j.verdict == "REGRESSED"
        assert not j.fails and not j.pending  # regressions do not fail when updating
    else:
        assert j.verdict == "NO_BASELINE"


@pytest.mark.parametrize("has_baseline", [False, True], ids=["new", "existing"])
def test_fixed_rounds_from_settings_and_marker(has_baseline: bool) -> None:
    judge = Judge(
        Settings(enabled=True, rounds=7), baseline_for(NODE) if has_baseline else None, KEY
    )
    run, _ = judge_run(judge, LEVEL, seed=3)
    assert run.n == 7
    run, _ = judge_run(judge, LEVEL, seed=3, marker=MarkerArgs(rounds=3))
    assert run.n == 3
    # fixed rounds also when updating: the marker/flag wins over the 20 of an update
    judge = Judge(Settings(enabled=True, rounds=4, baseline_mode="replace"), None, KEY)
    assert judge_run(judge, LEVEL, seed=3)[0].n == 4
    if has_baseline:
        judge = Judge(Settings(enabled=True, rounds=7), baseline_for(NODE), KEY)
        assert judge.suite_params.verdict.looks == (7,)  # one look, at the fixed count
        run, j = judge_run(judge, LEVEL, seed=3)
        assert run.comparison is not None and run.comparison.n_candidate == 7
        judge.finish()
        assert j.verdict == "UNCHANGED"


@pytest.mark.parametrize(
    ("settings", "marker", "has_baseline", "planned"),
    [
        (ON, None, False, (5, 5)),
        (ON, None, True, (5, 20)),
        (ON, MarkerArgs(rounds=3), True, (3, 3)),
        (Settings(enabled=True, baseline_mode="replace"), None, True, (20, 20)),
        (Settings(enabled=True, baseline_mode="extend"), None, False, (20, 20)),
        (Settings(enabled=True, rounds=7), None, False, (7, 7)),
    ],
    ids=["new", "compared", "marker-rounds", "update", "record-new", "fixed"],
)
@pytest.mark.parametrize("level", [LEVEL, LEVEL * 0.8], ids=["same", "lower"])
def test_the_planned_windows_hold_what_the_policy_records(
    settings: Settings,
    marker: MarkerArgs | None,
    has_baseline: bool,
    planned: tuple[int, int],
    level: float,
) -> None:
    judge = Judge(settings, baseline_for(NODE) if has_baseline else None, KEY)
    policy = judge.policy(for_test(judge, marker))
    assert policy.planned(NODE) == planned
    run = Run(policy, endless(level, seed=5))
    assert planned[0] <= run.n <= planned[1]


def test_a_judge_reads_only_the_stored_sessions_of_the_runs_tests(tmp_path: Path) -> None:
    """focus_on_tests: the run's tests' entries (named measurements included) are parsed and
    make the prior; the rest of the file stays unread bytes; nothing is built before use."""
    from pytest_tpw.store import baseline as store

    nodes = [f"t.py::test_{i}" for i in range(12)]
    stored_file = suite_baseline(nodes)
    stored_file.measurements["t.py::test_0::decode"] = stored_file.measurements["t.py::test_0"]
    path = tmp_path / f"{KEY}.json"
    store.write(path, stored_file)
    loaded = store.load(path, KEY, check=False)
    assert loaded is not None
    judge = Judge(ON, loaded, KEY)
    assert judge.comparing  # known without reading a session
    judge.focus_on_tests(["t.py::test_0", "t.py::test_3", "t.py::test_new"])
    assert judge.focus_keys == ["t.py::test_0", "t.py::test_0::decode", "t.py::test_3"]
    assert judge._prior is None and judge._stored is None  # collect-only stops here
    assert judge.has_stored("t.py::test_3") and not judge.has_stored("t.py::test_5")
    assert judge.prior is not None
    assert set(judge.stored) == {"t.py::test_0", "t.py::test_0::decode", "t.py::test_3"}
    measurements = loaded.measurements
    assert isinstance(measurements, store.Measurements)
    assert measurements.raw("t.py::test_5") is not None  # never parsed
    assert measurements.raw("t.py::test_3") is None  # parsed: it is compared
    with pytest.raises(RuntimeError, match="before any look"):
        judge.focus(["t.py::test_5"])
    # the prior is the one of a baseline that holds the focused tests alone
    focused = {k: stored_file.measurements[k] for k in judge.focus_keys}
    alone = Judge(ON, BaselineFile(KEY, {}, focused), KEY)
    assert alone.prior is not None
    assert judge.prior.sigma_b == pytest.approx(alone.prior.sigma_b)
    assert judge.prior.rho == pytest.approx(alone.prior.rho)


# -- adaptive looks against a baseline ----------------------------------------------------------


def test_clearly_unchanged_stops_at_the_first_look() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    run, j = judge_run(judge, LEVEL, seed=4)
    assert run.n == 5
    assert run.asked_at[:5] == [(0, True), (1, True), (2, True), (3, True), (4, True)]
    assert run.comparison is not None and run.comparison.stopped_early
    assert run.comparison.provisional  # a look's comparison; the reported one comes at finish
    assert j.verdict == "UNCHANGED"
    assert j.pending and not j.fails  # every compared verdict waits for the run
    assert judge.finish() == {NODE: j}
    assert not j.pending and not j.fails and not j.notes
    assert j.verdict == "UNCHANGED"
    assert j.comparison is not None and not j.comparison.provisional
    assert j.baseline_level == pytest.approx(LEVEL, rel=0.01)


def test_clear_improvement_stops_early_and_suggests_update() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    run, j = judge_run(judge, LEVEL * 1.1, seed=5)
    assert run.n == 5
    judge.finish()
    assert j.verdict == "IMPROVED"
    assert not j.fails
    assert any("improved" in n and f"--tpw-update '{NODE}'" in n for n in j.notes), j.notes


@pytest.mark.parametrize(
    ("mode", "says"),
    [("replace", "this run accepts the new level"), ("extend", "adds its session")],
)
def test_an_improvement_in_a_run_that_writes_baselines_says_what_the_run_does(
    mode: str, says: str
) -> None:
    settings = Settings(enabled=True, baseline_mode=mode)  # type: ignore[arg-type]
    judge = Judge(settings, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    _, j = judge_run(judge, LEVEL * 1.1, seed=5)
    judge.finish()
    assert j.verdict == "IMPROVED"
    (note,) = [n for n in j.notes if "improved" in n]
    assert says in note and "accept the new level with" not in note


def test_regression_runs_to_the_last_look_and_is_declared_only_at_the_end() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    test = for_test(judge)
    policy = judge.policy(test)
    values = endless(LEVEL * 0.9, seed=6)
    m = Measurement(NODE, None, "sim", "simulated")
    for look in (5, 10, 15):
        while len(m.samples) < look:
            assert policy.more(m)
            m.samples.append(sample(next(values)))
        # no run-wide shift known yet (the first test of the run): a drop never stops early
        assert policy.more(m), f"stopped at look {look} on a regression"
        c = policy.comparisons[NODE]
        assert c.provisional and not c.stopped_early and c.n_candidate == look
    while policy.more(m):
        m.samples.append(sample(next(values)))
    assert len(m.samples) == 20
    c = policy.comparisons[NODE]
    assert c.verdict is stats.Verdict.REGRESSED
    assert c.provisional and not c.stopped_early
    assert c.ratio == pytest.approx(0.9, rel=0.02)
    assert policy.verdict(NODE) is Verdict.REGRESSED
    m.complete = True
    before = m.to_dict()
    j = judge.judge(m, m.summarize(0.9, policy.verdict(NODE)), test, c)
    assert j.verdict is Verdict.REGRESSED
    assert m.to_dict() == before  # the judge writes nothing onto the measurement
    assert j.pending and not j.fails  # final only once the run is judged
    assert c.p_regression < 1e-6
    assert set(judge.finish()) == {NODE}
    assert j.verdict is Verdict.REGRESSED and len(j.failures) == 1 and not j.pending


def test_finish_keeps_a_lone_strong_regression() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    _, j = judge_run(judge, LEVEL * 0.9, seed=6)
    assert j.pending
    changed = judge.finish()
    assert set(changed) == {NODE}
    assert not j.pending
    assert j.verdict == "REGRESSED"
    assert j.comparison is not None and j.comparison.p_adjusted is not None
    assert len(j.failures) == 1 and "REGRESSED" in j.failures[0]
    # one compared test: no run-wide estimate, and the finding says to declare canaries
    assert judge.run_wide is not None and judge.run_wide.finding == "TOO_FEW_TESTS"
    assert "canar" in judge.run_wide.text and not judge.run_wide.fails


def test_regression_that_cannot_survive_fdr_is_inconclusive_with_a_note() -> None:
    # -10 % is REGRESSED on its own with p ~ 1e-7 (one look of 20 windows against one
    # stored session); at q = 1e-12 Benjamini-Hochberg cannot keep it
    judge = Judge(
        Settings(enabled=True, fdr=1e-12), baseline_for(NODE), KEY, software=BASE_SOFTWARE
    )
    _, j = judge_run(judge, LEVEL * 0.9, seed=6)
    judge.finish()
    assert j.verdict == "INCONCLUSIVE"
    assert not j.pending and not j.fails
    c = j.comparison
    assert c is not None and c.p_adjusted is not None and c.p_adjusted > 1e-12
    assert any(
        "REGRESSED on its own" in n
        and "Benjamini-Hochberg over 1 comparisons" in n
        and "q = 1e-12" in n
        for n in j.notes
    ), j.notes
    # the warning names the demotion, not a noisy interval (it is not one)
    assert any(
        "INCONCLUSIVE" in w and "Benjamini-Hochberg" in w and "too wide" not in w
        for w in j.warnings
    ), j.warnings


STRONG = "t.py::test_strong"
MARGINAL = "t.py::test_marginal"
SAME = [f"t.py::test_same_{i}" for i in range(18)]


def bh_session(n_unchanged: int, fdr: float = 0.05) -> Judge:
    """A strong (-20 %) and a marginal (-5 %, 6 % noise) change among unchanged tests, 3 stored
    runs. Fixed 20 rounds (one look, so K = 1); every series is seeded, so the marginal
    change's one-sided p is the same on every run of this file (0.019: REGRESSED on its own,
    and above 2 q / 20 = 0.005, so BH over 20 comparisons demotes it).
    """
    nodes = [STRONG, MARGINAL, *SAME[:n_unchanged]]
    judge = Judge(
        Settings(enabled=True, rounds=20, fdr=fdr),
        suite_baseline(nodes),
        KEY,
        software=BASE_SOFTWARE,
    )
    for i, nodeid in enumerate(SAME[:n_unchanged]):
        judge_run(judge, LEVEL, seed=40 + i, nodeid=nodeid)
    judge_run(judge, LEVEL * 0.8, seed=30, nodeid=STRONG)
    judge_run(judge, LEVEL * 0.95, seed=31, nodeid=MARGINAL, noise=0.06)
    return judge


def test_finish_demotes_a_marginal_regression_among_many_unchanged() -> None:
    judge = bh_session(18)
    assert all(j.pending for j in judge.judgements.values())
    changed = judge.finish()
    assert set(changed) == {STRONG, MARGINAL, *SAME}
    strong, marginal = judge.judgements[STRONG], judge.judgements[MARGINAL]
    assert strong.verdict == "REGRESSED"
    assert len(strong.failures) == 1
    assert strong.comparison is not None and strong.comparison.p_adjusted is not None
    c = marginal.comparison
    assert marginal.verdict == "INCONCLUSIVE"
    assert not marginal.fails and not marginal.pending
    assert c is not None and c.p_adjusted is not None
    assert 0.05 * 2 / 20 < c.p_regression < 0.05 < c.p_adjusted
    assert any(
        "REGRESSED on its own" in n and "Benjamini-Hochberg over 20 comparisons" in n
        for n in marginal.notes
    ), marginal.notes
    for key in SAME:
        j = judge.judgements[key]
        assert j.verdict == "UNCHANGED" and not j.fails
    assert judge.run_wide is not None and judge.run_wide.finding == "FINE"
    assert judge.run_wide.n_tests == 20 and judge.run_wide.method == "robust"


def test_a_lone_drop_in_a_larger_suite_needs_more_to_be_caught() -> None:
    """detectable_drop folds in Benjamini-Hochberg across the run's compared tests: the same
    test's interval, compared among 20 tests rather than 4, can catch only a larger drop;
    and it is the kernel's figure at q / (looks x m)."""
    from pytest_tpw.judging.kernels import detectable_drop

    drops = {}
    for n in (2, 18):
        judge = bh_session(n)
        judge.finish()
        j = judge.judgements[SAME[0]]
        c = j.comparison
        assert c is not None and j.detectable_drop is not None
        m = n + 2  # STRONG, MARGINAL and the unchanged ones; K = 1 (fixed rounds)
        expected = detectable_drop(
            c.se_log, c.df, min(c.alpha, 0.05 / m), c.alpha_equiv, 0.05, 0.01
        )
        assert j.detectable_drop == pytest.approx(expected)
        drops[n] = j.detectable_drop
    assert drops[18] > drops[2]


def test_the_same_marginal_regression_survives_a_looser_q() -> None:
    judge = bh_session(18, fdr=0.5)
    judge.finish()
    marginal = judge.judgements[MARGINAL]
    assert marginal.verdict == "REGRESSED"
    assert len(marginal.failures) == 1
    assert marginal.comparison is not None and marginal.comparison.p_adjusted is not None
    assert marginal.comparison.p_adjusted < 0.5
    assert "BH-adjusted" in marginal.failures[0] and "q = 0.5" in marginal.failures[0]


def test_a_demotion_under_strict_says_benjamini_hochberg_not_too_wide() -> None:
    """A BH demotion is not a wide interval: the marginal change's interval (about
    0.94..0.98) excludes "unchanged"; it lost to the number of comparisons. Under
    --tpw-strict its failure (or warning) must say so, not that "the interval is too wide ...
    this run's windows are noisy. Pin PyTorch's threads", which sends the user after noise
    that is not there."""
    nodes = [STRONG, MARGINAL, *SAME]
    judge = Judge(
        Settings(enabled=True, rounds=20, strict=True),
        suite_baseline(nodes),
        KEY,
        software=BASE_SOFTWARE,
    )
    for i, nodeid in enumerate(SAME):
        judge_run(judge, LEVEL, seed=40 + i, nodeid=nodeid)
    judge_run(judge, LEVEL * 0.8, seed=30, nodeid=STRONG)
    judge_run(judge, LEVEL * 0.95, seed=31, nodeid=MARGINAL, noise=0.06)
    judge.finish()
    marginal = judge.judgements[MARGINAL]
    assert marginal.verdict == "INCONCLUSIVE"
    c = marginal.comparison
    assert c is not None and c.ci_high is not None and c.ci_high < 0.99  # not a wide interval
    said = [*marginal.failures, *marginal.warnings]
    assert said, "a demotion under --tpw-strict must be reported"
    for text in said:
        assert "Benjamini-Hochberg" in text, text
        assert "too wide" not in text and "windows are noisy" not in text, text


def test_finish_returns_only_what_was_pending() -> None:
    judge = bh_session(4)
    assert set(judge.finish()) == {STRONG, MARGINAL, *SAME[:4]}
    assert not any(j.pending for j in judge.judgements.values())
    assert judge.finish() == {}  # nothing pending any more


# -- strict mode ----------------------------------------------------------------------------


def test_strict_no_baseline_fails() -> None:
    j = judge_with(Judge(Settings(enabled=True, strict=True), None, KEY), None)
    assert j.verdict == "NO_BASELINE"
    assert len(j.failures) == 1
    assert "no baseline under --tpw-strict" in j.failures[0]
    assert f"--tpw-update-missing '{NODE}'" in j.failures[0]


def noisy_run(settings: Settings) -> Judgement:
    """This run's windows are noisy (15 %), the stored ones steady: INCONCLUSIVE, and this
    run is the wide side."""
    judge = Judge(settings, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    _, j = judge_run(judge, LEVEL, seed=9, noise=0.15)
    judge.finish()
    return j


def disagreeing_history(settings: Settings) -> Judgement:
    """The stored sessions disagree (-8 %, 0, +8 %: 5 tests recorded together, each with its
    own session shifts), this run is steady: INCONCLUSIVE, and the history is the wide side."""
    nodes = [NODE, *SAME[:4]]
    measurements = {
        nodeid: sessions_of(LEVEL, shifts, seed=300 + 11 * i, noise=0.005)
        for i, (nodeid, shifts) in enumerate(
            zip(
                nodes,
                [
                    (0.92, 1.0, 1.08),
                    (1.08, 0.92, 1.0),
                    (1.0, 1.08, 0.92),
                    (0.92, 1.08, 1.0),
                    (1.08, 1.0, 0.92),
                ],
                strict=True,
            )
        )
    }
    judge = Judge(settings, BaselineFile(KEY, {}, measurements), KEY, software=BASE_SOFTWARE)
    for i, nodeid in enumerate(nodes):
        judge_run(judge, LEVEL, seed=60 + i, nodeid=nodeid, noise=0.005)
    judge.finish()
    return judge.judgements[NODE]


def test_a_run_that_drifts_widens_every_interval_and_says_the_runner_changed() -> None:
    """20 tests with 3 steady stored runs (history df 40 >= 30: the stored sigma_b is
    trusted); this run slows from the first test to the last (0 .. -16 %), so around the
    run-wide shift the first tests look 8 % faster and the last 8 % slower. Nothing fails,
    even under --tpw-strict; the INCONCLUSIVE ones say that this run's tests disagree."""
    nodes = [f"t.py::test_drift_{i}" for i in range(20)]
    judge = Judge(
        Settings(enabled=True, rounds=20, strict=True),
        suite_baseline(nodes, noise=0.005),
        KEY,
        software=BASE_SOFTWARE,
    )
    for i, nodeid in enumerate(nodes):
        judge_run(judge, LEVEL * 0.84 ** (i / 19), seed=500 + i, nodeid=nodeid, noise=0.005)
    judge.finish()
    js = [judge.judgements[n] for n in nodes]
    assert not any(j.fails for j in js)
    assert "REGRESSED" not in {j.verdict for j in js}
    wide = [w for j in js for w in j.warnings if "INCONCLUSIVE after the last round" in w]
    assert wide
    assert all("this run's tests disagree with each other" in w for w in wide), wide


def test_strict_inconclusive_fails_when_this_run_is_the_wide_side() -> None:
    j = noisy_run(Settings(enabled=True, strict=True))
    assert j.verdict == "INCONCLUSIVE"
    assert len(j.failures) == 1
    text = j.failures[0]
    assert text.startswith(f"{NODE}: INCONCLUSIVE after the last round")
    assert "this run's windows are noisy" in text and "set_num_threads" in text


def test_strict_inconclusive_from_a_disagreeing_history_warns_without_failing() -> None:
    j = disagreeing_history(Settings(enabled=True, strict=True))
    assert j.verdict == "INCONCLUSIVE"
    assert not j.fails  # not this run's fault: re-record the baseline instead
    text = next(w for w in j.warnings if "INCONCLUSIVE after the last round" in w)
    assert "the stored sessions disagree" in text and "--tpw-record" in text
    assert f"--tpw-update '{NODE}'" in text


def test_strict_aa_run_fails_no_test_that_stopped_early_as_unchanged() -> None:
    """A/A under --tpw-strict: nine steady tests (1 % noise) against three steady stored runs.

    Seeded so that test_4 stops at its first look (5 windows) as UNCHANGED, with the running
    shift of the four tests before it. The final comparison (the run shift from all nine)
    gives it a wider interval, 0.942..1.076, so it ends INCONCLUSIVE, and --tpw-strict fails
    it ("this run's windows are noisy") although it was not allowed to record more windows.
    A steady A/A run must not fail a test (found in 1 of 6 A/A runs of the sim suite of
    tests/integration/test_e2e_run_wide.py under --tpw-strict).
    """
    nodes = [f"t.py::test_{i}" for i in range(9)]
    judge = Judge(
        Settings(enabled=True, strict=True), suite_baseline(nodes), KEY, software=BASE_SOFTWARE
    )
    runs = {
        nodeid: judge_run(judge, LEVEL, seed=1018 + i, nodeid=nodeid)[0]
        for i, nodeid in enumerate(nodes)
    }
    stopped = runs["t.py::test_4"]
    assert stopped.n == 5 and stopped.verdict is Verdict.UNCHANGED  # the look decided
    judge.finish()
    assert judge.run_wide is not None and judge.run_wide.finding == "FINE"
    failed = {k: j.failures for k, j in judge.judgements.items() if j.fails}
    assert failed == {}


def test_strict_hardware_mismatch_fails_naming_both() -> None:
    judge = Judge(Settings(enabled=True, strict=True), None, KEY, ["other-x1", "nvidia-x2"])
    j = judge_with(judge, None)
    assert j.verdict == "NO_BASELINE"
    assert len(j.failures) == 1
    text = j.failures[0]
    assert "hardware mismatch" in text
    assert "sim-x1" in text and "other-x1, nvidia-x2" in text


@pytest.mark.parametrize(
    "settings",
    [
        Settings(enabled=True),
        Settings(enabled=True, baseline_mode="replace"),
        Settings(enabled=True, strict=True, baseline_mode="replace"),
    ],
    ids=["plain", "update", "strict-update"],
)
def test_without_strict_none_of_these_fail(settings: Settings) -> None:
    if not settings.strict:
        assert not judge_with(Judge(settings, None, KEY), None).fails
        assert not judge_with(Judge(settings, None, KEY, ["other-x1"]), None).fails
    j = noisy_run(settings)
    assert j.verdict == "INCONCLUSIVE" and not j.fails
    assert any("INCONCLUSIVE after the last round" in w for w in j.warnings), j.warnings


@pytest.mark.parametrize(
    "settings",
    [
        Settings(enabled=True, strict=True, baseline_mode="replace"),
        Settings(enabled=True, strict=True, baseline_mode="missing"),
    ],
    ids=["update", "update-missing"],
)
def test_strict_while_recording_a_baseline_does_not_fail_for_no_baseline(
    settings: Settings,
) -> None:
    assert not judge_with(Judge(settings, None, KEY), None).fails


# -- budgets --------------------------------------------------------------------------------

# every window: 24 tokens, 24 / 6.5 J, 12 ms -> 6.5 tokens/J, 0.1538 J/token, 307.7 W,
# 2000 tokens/s
BUDGETS = [
    ("min_tokens_per_joule", 6.0, 7.0, "tokens/J"),
    ("max_joules_per_token", 0.16, 0.15, "J/token"),
    ("max_watts", 320.0, 300.0, "W"),
    ("min_tokens_per_second", 1900.0, 2100.0, "tokens/s"),
]


def budget_judgement(name: str, limit: float, update: bool = False) -> Judgement:
    judge = Judge(Settings(enabled=True, baseline_mode="replace" if update else None), None, KEY)
    m = measurement([6.5, 6.5 * 1.001, 6.5 * 0.999, 6.5])
    marker = MarkerArgs(**{name: limit})  # type: ignore[arg-type]
    return judge.judge(m, m.summarize(0.9, Verdict.NO_BASELINE), for_test(judge, marker), None)


@pytest.mark.parametrize(("name", "ok", "bad", "unit"), BUDGETS, ids=[b[0] for b in BUDGETS])
def test_budget_passes_on_the_right_side(name: str, ok: float, bad: float, unit: str) -> None:
    assert not budget_judgement(name, ok).fails


@pytest.mark.parametrize("update", [False, True], ids=["compare", "update"])
@pytest.mark.parametrize(("name", "ok", "bad", "unit"), BUDGETS, ids=[b[0] for b in BUDGETS])
def test_budget_fails_on_the_wrong_side(
    name: str, ok: float, bad: float, unit: str, update: bool
) -> None:
    j = budget_judgement(name, bad, update)
    assert len(j.failures) == 1
    text = j.failures[0]
    assert f"@pytest.mark.tpw({name}={bad:g})" in text
    assert unit in text
    assert ("above the maximum" if name.startswith("max") else "below the minimum") in text
    assert j.verdict == "NO_BASELINE"  # a budget is not a verdict


def test_budget_message_shows_the_interval() -> None:
    text = budget_judgement("min_tokens_per_joule", 7.0).failures[0]
    assert "interval 6.4" in text and "..6.5" in text


def test_every_budget_at_once() -> None:
    judge = Judge(ON, None, KEY)
    m = measurement([6.5] * 4)
    marker = MarkerArgs(**{name: bad for name, _, bad, _ in BUDGETS})  # type: ignore[arg-type]
    j = judge.judge(m, m.summarize(0.9, Verdict.NO_BASELINE), for_test(judge, marker), None)
    assert [f.split("@pytest.mark.tpw(")[1].split("=")[0] for f in j.failures] == [
        name for name, *_ in BUDGETS
    ]


# -- the run-wide shift and canaries ----------------------------------------------------------

CANARY = "t.py::test_canary"
SUITE = [f"t.py::test_{i}" for i in range(7)]
CHANGED = SUITE[3]


def run_suite(
    settings: Settings, factor: float, software: dict[str, str], changed: float = 1.0
) -> Judge:
    """Seven tests with 3 stored runs, all at ``factor`` now (``CHANGED`` also at ``changed``)."""
    judge = Judge(settings, suite_baseline(SUITE), KEY, software=software)
    for i, nodeid in enumerate(SUITE):
        level = LEVEL * factor * (changed if nodeid == CHANGED else 1.0)
        judge_run(judge, level, seed=80 + i, nodeid=nodeid)
    judge.finish()
    return judge


def test_a_shared_drop_is_one_environment_anomaly_and_no_failure() -> None:
    judge = run_suite(ON, 0.91, BASE_SOFTWARE)
    rw = judge.run_wide
    assert rw is not None
    assert rw.finding == "ENVIRONMENT_ANOMALY" and not rw.fails
    assert rw.ratio == pytest.approx(0.91, abs=0.01)
    assert rw.ci is not None and rw.ratio is not None and rw.ci[0] < rw.ratio < rw.ci[1]
    assert rw.n_tests == 7 and rw.method == "robust" and rw.stack_changes == ()
    assert "ENVIRONMENT_ANOMALY" in rw.text and "rerun" in rw.text
    assert rw.to_json()["verdict"] == "ENVIRONMENT_ANOMALY"
    assert rw.to_json()["text"] == rw.text
    for j in judge.judgements.values():
        assert not j.fails, j.failures
        assert j.verdict == "UNCHANGED"
        assert j.comparison is not None
        assert math.exp(j.comparison.shift) == pytest.approx(0.91, abs=0.01)  # divided out


def test_suspects_are_named_only_for_an_environment_anomaly() -> None:
    judge = Judge(ON, suite_baseline(SUITE), KEY, software=BASE_SOFTWARE)
    for i, nodeid in enumerate(SUITE):
        judge_run(judge, LEVEL * 0.91, seed=80 + i, nodeid=nodeid)
    judge.finish(["thermal throttling (12 window(s))"])
    assert judge.run_wide is not None and judge.run_wide.finding == "ENVIRONMENT_ANOMALY"
    assert judge.run_wide.suspects == ("thermal throttling (12 window(s))",)
    assert "suspects: thermal throttling (12 window(s))" in judge.run_wide.text
    judge = Judge(ON, suite_baseline(SUITE), KEY, software=BASE_SOFTWARE)
    for i, nodeid in enumerate(SUITE):
        judge_run(judge, LEVEL, seed=80 + i, nodeid=nodeid)
    judge.finish(["thermal throttling (12 window(s))"])
    assert judge.run_wide is not None and judge.run_wide.finding == "FINE"
    assert judge.run_wide.suspects == ()


def test_a_busy_runner_is_a_note_under_the_run_wide_line() -> None:
    judge = Judge(ON, suite_baseline(SUITE, noise=0.01), KEY, software=BASE_SOFTWARE)
    for i, nodeid in enumerate(SUITE):  # every test's windows four times as noisy as stored
        judge_run(judge, LEVEL, seed=90 + i, nodeid=nodeid, noise=0.04)
    judge.finish()
    rw = judge.run_wide
    assert rw is not None and rw.finding == "FINE"
    assert len(rw.notes) == 1 and "a busy runner?" in rw.notes[0]
    assert rw.to_json()["notes"] == list(rw.notes)
    assert rw.notes[0] in rw.why
    quiet = run_suite(ON, 1.0, BASE_SOFTWARE)
    assert quiet.run_wide is not None and quiet.run_wide.notes == ()
    assert quiet.run_wide.to_json()["notes"] == []


NEW_TORCH = {**BASE_SOFTWARE, "torch": "2.4.0"}


@pytest.mark.parametrize(
    ("settings", "fails"),
    [
        (ON, False),
        (Settings(enabled=True, fail_stack=True), True),
        (Settings(enabled=True, strict=True), True),
        (Settings(enabled=True, fail_stack=True, baseline_mode="extend"), False),
    ],
    ids=["default", "fail-stack", "strict", "fail-stack-recording"],
)
def test_a_shared_drop_with_a_stack_change_is_a_stack_regression(
    settings: Settings, fails: bool
) -> None:
    judge = run_suite(settings, 0.91, NEW_TORCH)
    rw = judge.run_wide
    assert rw is not None
    assert rw.finding == "STACK_REGRESSION"
    assert rw.stack_changes == ("torch 2.3.0 -> 2.4.0",)
    assert "stack changed: torch 2.3.0 -> 2.4.0" in rw.text
    assert rw.fails is fails and rw.to_json()["fails"] is fails
    assert not any(j.fails for j in judge.judgements.values())  # the run fails, no test


def test_a_shared_rise_with_a_stack_change_is_a_stack_improvement() -> None:
    judge = run_suite(Settings(enabled=True, strict=True), 1.1, NEW_TORCH)
    assert judge.run_wide is not None
    assert judge.run_wide.finding == "STACK_IMPROVEMENT" and not judge.run_wide.fails
    assert not any(j.fails for j in judge.judgements.values())


def test_one_changed_test_among_unchanged_fails_alone_and_the_run_is_fine() -> None:
    judge = run_suite(ON, 1.0, BASE_SOFTWARE, changed=0.85)
    assert judge.run_wide is not None and judge.run_wide.finding == "FINE"
    assert judge.run_wide.ratio == pytest.approx(1.0, abs=0.01)  # not pulled by the change
    failed = {k for k, j in judge.judgements.items() if j.fails}
    assert failed == {CHANGED}
    assert judge.judgements[CHANGED].verdict == "REGRESSED"


def test_the_same_change_on_top_of_a_shared_drop_still_fails_alone() -> None:
    judge = run_suite(ON, 0.91, BASE_SOFTWARE, changed=0.85)
    assert judge.run_wide is not None and judge.run_wide.finding == "ENVIRONMENT_ANOMALY"
    assert {k for k, j in judge.judgements.items() if j.fails} == {CHANGED}
    j = judge.judgements[CHANGED]
    assert j.ratio is not None and j.ratio == pytest.approx(0.85, abs=0.02)
    assert "run-wide shift -9" in j.failures[0]  # divided out, and said so


def test_canaries_give_the_run_shift_in_a_small_suite() -> None:
    judge = Judge(ON, baseline_for(CANARY, NODE, noise=0.005), KEY, software=BASE_SOFTWARE)
    canary = MarkerArgs(canary=True)
    run_c, j_c = judge_run(judge, LEVEL * 0.95, seed=7, marker=canary, nodeid=CANARY, noise=0.005)
    assert j_c.canary
    assert run_c.n == 20  # a canary runs every look: it measures the run
    shift = judge.shift()
    assert shift is not None and str(shift.method) == "canaries"
    assert math.exp(shift.shift) == pytest.approx(0.95, abs=0.01)
    assert shift.se > 0
    run_t, j_t = judge_run(judge, LEVEL * 0.95, seed=8, noise=0.005)
    assert run_t.comparison is not None
    assert run_t.comparison.shift == pytest.approx(shift.shift)
    assert run_t.comparison.ratio == pytest.approx(1.0, abs=0.015)
    judge.finish()
    assert j_t.verdict == "UNCHANGED"
    assert not j_t.fails and not j_t.pending and not j_c.fails
    rw = judge.run_wide
    assert rw is not None and rw.method == "canaries"
    assert rw.finding == "ENVIRONMENT_ANOMALY"  # the stack is the stored one
    assert not any("canary" in n and "relative to the run" in n for n in j_c.notes), j_c.notes


def test_same_drop_without_a_canary_is_too_few_tests_and_a_regression() -> None:
    judge = Judge(ON, baseline_for(CANARY, NODE, noise=0.005), KEY, software=BASE_SOFTWARE)
    run_t, j_t = judge_run(judge, LEVEL * 0.95, seed=8, noise=0.005)
    shift = judge.shift()
    assert shift is not None and str(shift.method) == "none" and shift.shift == 0.0
    assert run_t.n == 20  # no shift known: a drop never stops early
    assert run_t.comparison is not None and run_t.comparison.shift == 0.0
    judge.finish()
    assert j_t.verdict in ("REGRESSED", "MINOR_REGRESSION")
    assert judge.run_wide is not None and judge.run_wide.finding == "TOO_FEW_TESTS"


def test_a_canary_never_fails_on_its_own() -> None:
    nodes = [CANARY, *SUITE]
    judge = Judge(ON, suite_baseline(nodes), KEY, software=BASE_SOFTWARE)
    judge_run(judge, LEVEL * 0.8, seed=90, marker=MarkerArgs(canary=True), nodeid=CANARY)
    for i, nodeid in enumerate(SUITE):
        judge_run(judge, LEVEL, seed=80 + i, nodeid=nodeid)
    judge.finish()
    c = judge.judgements[CANARY]
    assert c.canary and not c.fails
    assert c.verdict == "INCONCLUSIVE"  # a canary's REGRESSED is reported, never failed
    assert any("canary -2" in n and "never fail on their own" in n for n in c.notes), c.notes
    assert judge.run_wide is not None and judge.run_wide.finding == "FINE"
    assert not any(j.fails for j in judge.judgements.values())


# -- pytest-xdist: workers judge provisionally, the controller decides with the run ---------


def test_the_controller_decides_workers_judgements_with_the_whole_run() -> None:
    """Two workers each measure part of a suite that dropped 9 % together, one test 15 %
    more; their pending judgements travel as plain data and the controller's judge finishes
    the run over all of them: one run-wide finding, one failure."""
    workers = [Judge(ON, suite_baseline(SUITE), KEY, software=BASE_SOFTWARE) for _ in range(2)]
    controller = Judge(ON, suite_baseline(SUITE), KEY, software=BASE_SOFTWARE)
    sent = []
    for i, nodeid in enumerate(SUITE):
        worker = workers[i % 2]
        level = LEVEL * 0.91 * (0.85 if nodeid == CHANGED else 1.0)
        run, j = judge_run(worker, level, seed=80 + i, nodeid=nodeid)
        assert j.pending and not j.fails  # nothing decided on the worker
        sent.append((run.m.to_dict(), j.to_dict()))
    for m_data, j_data in [*sent, *sent]:  # streamed, then again at the end: twice is once
        controller.adopt(Measurement.from_dict(m_data), Judgement.from_dict(j_data))
    assert set(controller.inputs) == set(SUITE)
    changed = controller.finish()
    assert set(changed) == set(SUITE)
    rw = controller.run_wide
    assert rw is not None and rw.finding == "ENVIRONMENT_ANOMALY" and rw.n_tests == len(SUITE)
    assert {k for k, j in controller.judgements.items() if j.fails} == {CHANGED}
    assert not any(j.without_suite for j in controller.judgements.values())
    # the same as one process measuring the whole suite
    alone = run_suite(ON, 0.91, BASE_SOFTWARE, changed=0.85)
    assert {k: j.verdict for k, j in alone.judgements.items()} == {
        k: j.verdict for k, j in controller.judgements.items()
    }
    # a late copy after the run is finished changes nothing
    m_data, j_data = sent[0]
    controller.adopt(Measurement.from_dict(m_data), Judgement.from_dict(j_data))
    assert not controller.judgements[SUITE[0]].pending


def test_a_comparison_survives_the_trip_as_plain_data() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    _, j = judge_run(judge, LEVEL * 0.8, seed=6)
    back = Judgement.from_dict(j.to_dict())
    assert j.comparison is not None and back.comparison is not None
    assert back.pending and back.comparison == j.comparison
    assert back.comparison.verdict is j.comparison.verdict  # an enum again, not its name


def test_a_worker_judgement_without_a_baseline_here_is_decided_alone() -> None:
    worker = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    run, j = judge_run(worker, LEVEL * 0.8, seed=6)
    controller = Judge(ON, None, KEY)
    back = Judgement.from_dict(j.to_dict())
    controller.adopt(Measurement.from_dict(run.m.to_dict()), back)
    assert not back.pending and back.without_suite and back.verdict == "REGRESSED"


# -- the per-test fallback (pytest-rerunfailures) --------------------------------------------


def test_settle_alone_decides_at_once_and_finish_leaves_it() -> None:
    judge = Judge(ON, baseline_for(NODE, "t.py::test_other"), KEY, software=BASE_SOFTWARE)
    _, j = judge_run(judge, LEVEL * 0.8, seed=6)
    assert j.pending
    judge.settle_alone(j)
    assert not j.pending and j.without_suite
    assert j.verdict == "REGRESSED" and len(j.failures) == 1
    assert j.comparison is not None and not j.comparison.provisional
    assert Judgement.from_dict(j.to_dict()).without_suite  # reaches the controller
    judge.settle_alone(j)  # idempotent
    assert len(j.failures) == 1
    _, other = judge_run(judge, LEVEL, seed=7, nodeid="t.py::test_other")
    changed = judge.finish()
    assert set(changed) == {"t.py::test_other"}  # the settled one is not decided twice
    assert len(j.failures) == 1 and j.without_suite
    assert not other.fails and not other.without_suite


# -- the regression message -----------------------------------------------------------------


def regressed(nodeid: str = NODE, software: dict[str, str] | None = None) -> Judgement:
    judge = Judge(
        ON, baseline_for(nodeid), KEY, software=software or {**BASE_SOFTWARE, "driver": "560.28"}
    )
    _, j = judge_run(judge, LEVEL * 0.9, seed=6, nodeid=nodeid)
    judge.finish()
    assert j.verdict == "REGRESSED"
    return j


def test_regression_text_has_the_numbers_and_the_fix() -> None:
    j = regressed()
    assert len(j.failures) == 1
    text = j.failures[0]
    c = j.comparison
    assert c is not None and c.ci_low is not None and c.ci_high is not None
    assert j.baseline_level is not None
    assert text.startswith(f"{NODE}: tokens per joule REGRESSED")
    assert f"{j.baseline_level * c.ratio:.4g} now vs {j.baseline_level:.4g} in the baseline" in text
    assert f"ratio {c.ratio:.3f} (-" in text
    assert f"interval {c.ci_low:.3f}..{c.ci_high:.3f}" in text
    # a one-test run has no run-wide shift: the message does not claim one
    assert c.shift == 0.0 and "run-wide shift" not in text
    assert "tolerance 5%" in text and "noise floor 1%" in text
    assert "20 now, 20 in 1 baseline session(s)" in text
    assert "BH-adjusted" in text
    assert "stack changes since the baseline: driver 550.54 -> 560.28" in text
    assert "torch" not in text  # unchanged layers are not listed
    last = text.splitlines()[-1]
    assert last.endswith(f"pytest --tpw --tpw-update '{NODE}'")


def test_regression_text_without_stack_changes_says_none() -> None:
    text = regressed(software=dict(BASE_SOFTWARE)).failures[0]
    assert "stack changes since the baseline: none" in text


def test_accept_command_quotes_the_node_id() -> None:
    nodeid = "t.py::test_gen[it's 1]"
    text = regressed(nodeid).failures[0]
    command = text.splitlines()[-1].split("accept it: ", 1)[1]
    assert shlex.split(command) == ["pytest", "--tpw", "--tpw-update", nodeid]


def test_regression_text_mentions_the_run_wide_shift() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    j = judge_with(
        judge, comparison(stats.Verdict.REGRESSED, p=1e-9, ratio=0.8, shift=math.log(0.97))
    )
    c = j.comparison
    assert c is not None
    text = judge.regression_text(j, c)
    assert "run-wide shift -3.0% divided out" in text
    assert "confidence, relative to the run-wide shift; tolerance" in text


def test_a_test_stopped_as_too_noisy_keeps_its_reason_in_the_final_verdict() -> None:
    from pytest_tpw.judging.judge import _keep_early_decision

    why = "too noisy to decide within 20 windows: ..."
    look = comparison(Verdict.INCONCLUSIVE, 0.4, 1.02, stopped_early=True, why=why)
    final = comparison(Verdict.INCONCLUSIVE, 0.4, 1.02)
    assert _keep_early_decision(look, final).why == why
    own = comparison(Verdict.INCONCLUSIVE, 0.4, 1.02, why="its own reason")
    assert _keep_early_decision(look, own).why == "its own reason"
    not_early = dataclasses.replace(look, stopped_early=False)
    assert _keep_early_decision(not_early, final).why is None


def test_a_compared_measurement_says_the_smallest_drop_it_can_catch() -> None:
    """detectable_drop: the drop found REGRESSED 4 times in 5 with this interval's width,
    checked against the kernel's formula; a wide interval is flagged too noisy and says
    which part of the noise to lower."""
    from pytest_tpw.judging.kernels import detectable_drop

    for se, noisy in ((0.004, False), (0.08, True)):
        judge = Judge(ON, baseline_for(NODE), KEY)
        c = comparison(Verdict.INCONCLUSIVE, 0.9, 1.1, se_log=se, df=30.0)
        if noisy:
            c = dataclasses.replace(c, ci_low=0.8, ci_high=1.25)
        j = judge_with(judge, c)
        judge.settle_alone(j)  # classified from this comparison, as at the end of a run
        expected = detectable_drop(se, 30.0, c.alpha, c.alpha_equiv, 0.05, 0.01)
        assert j.detectable_drop is not None
        assert j.detectable_drop == pytest.approx(expected)
        assert (j.detectable_drop > 0.05) is noisy and j.too_noisy is noisy
        assert (j.limited_by is not None) is noisy
    # the formula: a narrow interval catches a drop near the tolerance, a wide one far more
    narrow = detectable_drop(0.004, 30.0, 0.02, 0.02, 0.05, 0.01)
    wide = detectable_drop(0.05, 30.0, 0.02, 0.02, 0.05, 0.01)
    assert 0.0 < narrow < 0.05 < 0.12 < wide < 0.3
    assert math.isnan(detectable_drop(math.nan, 30.0, 0.02, 0.02, 0.05, 0.01))
