"""Judge and BaselinePolicy without pytest: rounds, verdicts, FDR, strict mode, budgets, canaries.

Measurements are hand-made :class:`~pytest_tpw.meter.Measurement` objects fed to the round
policy the way the meter does (``while policy.more(m): record a window``); baselines are
:class:`~pytest_tpw.baseline.BaselineFile` objects built in memory.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shlex
from collections.abc import Iterable, Iterator, Sequence

import pytest

from pytest_tpw import stats
from pytest_tpw.baseline import BaselineFile, StoredSession
from pytest_tpw.judge import BaselinePolicy, Judge, Judgement
from pytest_tpw.samples import Measurement, Sample
from pytest_tpw.settings import MarkerArgs, Settings, TestSettings
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


def stored(values: Sequence[float], software: dict[str, str] | None = None) -> StoredSession:
    return StoredSession(
        date="2025-01-01T00:00:00+00:00",
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


# -- round targets --------------------------------------------------------------------------


def test_no_baseline_first_look_then_no_baseline() -> None:
    judge = Judge(ON, None, KEY)
    assert not judge.comparing
    run, j = judge_run(judge, LEVEL, seed=1)
    assert run.n == 5
    assert run.comparison is None
    assert j.verdict is Verdict.NO_BASELINE  # the one Verdict enum, not a string
    assert stats.Verdict is Verdict
    assert run.verdict is Verdict.NO_BASELINE
    assert not j.fails and not j.pending_fdr and j.baseline_level is None


def test_baseline_without_this_measurement_is_no_baseline() -> None:
    judge = Judge(ON, baseline_for("t.py::test_other"), KEY)
    assert judge.comparing
    run, j = judge_run(judge, LEVEL, seed=1)
    assert run.n == 5
    assert j.verdict == "NO_BASELINE"


@pytest.mark.parametrize(
    "settings",
    [Settings(enabled=True, update=True), Settings(enabled=True, update_missing=True)],
    ids=["update", "update-missing"],
)
@pytest.mark.parametrize("has_baseline", [False, True], ids=["new", "existing"])
def test_twenty_rounds_when_updating(settings: Settings, has_baseline: bool) -> None:
    judge = Judge(settings, baseline_for(NODE) if has_baseline else None, KEY)
    run, j = judge_run(judge, LEVEL * 0.8, seed=2)  # even a clear regression: all 20
    assert run.n == 20
    if has_baseline:
        assert run.comparison is not None and run.comparison.n_candidate == 20
        assert j.verdict == "REGRESSED"
        assert not j.fails and not j.pending_fdr  # regressions do not fail when updating
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
    judge = Judge(Settings(enabled=True, rounds=4, update=True), None, KEY)
    assert judge_run(judge, LEVEL, seed=3)[0].n == 4
    if has_baseline:
        judge = Judge(Settings(enabled=True, rounds=7), baseline_for(NODE), KEY)
        run, j = judge_run(judge, LEVEL, seed=3)
        assert run.comparison is not None and run.comparison.n_candidate == 7
        assert j.verdict == "UNCHANGED"


# -- adaptive looks against a baseline ----------------------------------------------------------


def test_clearly_unchanged_stops_at_the_first_look() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY)
    run, j = judge_run(judge, LEVEL, seed=4)
    assert run.n == 5
    assert run.asked_at[:5] == [(0, True), (1, True), (2, True), (3, True), (4, True)]
    assert run.comparison is not None and run.comparison.stopped_early
    assert j.verdict == "UNCHANGED"
    assert not j.pending_fdr and not j.fails and not j.notes
    assert j.baseline_level == pytest.approx(LEVEL, rel=0.01)


def test_clear_improvement_stops_early_and_suggests_update() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY)
    run, j = judge_run(judge, LEVEL * 1.1, seed=5)
    assert run.n == 5
    assert j.verdict == "IMPROVED"
    assert not j.fails
    assert any("improved" in n and f"--tpw-update '{NODE}'" in n for n in j.notes), j.notes


def test_regression_runs_to_the_last_look_and_is_declared_only_there() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY)
    test = for_test(judge)
    policy = judge.policy(test)
    values = endless(LEVEL * 0.9, seed=6)
    m = Measurement(NODE, None, "sim", "simulated")
    for look in (5, 10, 15):
        while len(m.samples) < look:
            assert policy.more(m)
            m.samples.append(sample(next(values)))
        assert policy.more(m), f"stopped at look {look} on a regression"
        assert NODE not in policy.comparisons  # an interim look is not a verdict
        assert policy.verdict(NODE) is Verdict.NO_BASELINE
    while policy.more(m):
        m.samples.append(sample(next(values)))
    assert len(m.samples) == 20
    c = policy.comparisons[NODE]
    assert c.verdict is stats.Verdict.REGRESSED
    assert not c.provisional and not c.stopped_early
    assert c.ratio == pytest.approx(0.9, rel=0.02)
    assert policy.verdict(NODE) is Verdict.REGRESSED
    m.complete = True
    before = m.to_dict()
    j = judge.judge(m, m.summarize(0.9, policy.verdict(NODE)), test, c)
    assert j.verdict is Verdict.REGRESSED
    assert m.to_dict() == before  # the judge writes nothing onto the measurement
    assert j.pending_fdr  # final only after FDR over the session
    assert not j.fails
    assert c.p_regression < 1e-6


def test_fdr_keeps_a_lone_strong_regression() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY)
    _, j = judge_run(judge, LEVEL * 0.9, seed=6)
    assert j.pending_fdr
    changed = judge.apply_fdr()
    assert set(changed) == {NODE}
    assert not j.pending_fdr
    assert j.verdict == "REGRESSED"
    assert j.comparison is not None and j.comparison.p_adjusted is not None
    assert len(j.failures) == 1 and "REGRESSED" in j.failures[0]


def test_p_above_fdr_is_inconclusive_with_a_note() -> None:
    judge = Judge(Settings(enabled=True, fdr=0.01), baseline_for(NODE), KEY)
    j = judge_with(judge, comparison(stats.Verdict.REGRESSED, p=0.03))
    assert j.verdict == "INCONCLUSIVE"
    assert not j.pending_fdr and not j.fails
    assert any("p = 0.03" in n and "--tpw-fdr 0.01" in n for n in j.notes), j.notes
    strict = Judge(Settings(enabled=True, fdr=0.01, strict=True), baseline_for(NODE), KEY)
    j = judge_with(strict, comparison(stats.Verdict.REGRESSED, p=0.03))
    assert j.verdict == "INCONCLUSIVE"
    assert len(j.failures) == 1 and "INCONCLUSIVE" in j.failures[0]


def test_regressed_with_p_at_most_fdr_waits_for_fdr() -> None:
    judge = Judge(Settings(enabled=True, fdr=0.05), baseline_for(NODE), KEY)
    j = judge_with(judge, comparison(stats.Verdict.REGRESSED, p=0.03))
    assert j.verdict == "REGRESSED" and j.pending_fdr and not j.fails


STRONG = "t.py::test_strong"
MARGINAL = "t.py::test_marginal"


def fdr_session(n_unchanged: int, strict: bool = False) -> Judge:
    unchanged = [f"t.py::test_same_{i}" for i in range(n_unchanged)]
    judge = Judge(
        Settings(enabled=True, strict=strict), baseline_for(STRONG, MARGINAL, *unchanged), KEY
    )
    judge_with(judge, comparison(stats.Verdict.REGRESSED, p=1e-8, ratio=0.8), STRONG)
    judge_with(judge, comparison(stats.Verdict.REGRESSED, p=0.02, ratio=0.93), MARGINAL)
    for nodeid in unchanged:
        judge_with(
            judge, comparison(stats.Verdict.UNCHANGED, p=0.9, ratio=1.0, stopped_early=True), nodeid
        )
    return judge


def test_apply_fdr_demotes_a_marginal_regression_among_many_unchanged() -> None:
    judge = fdr_session(18)
    assert judge.judgements[MARGINAL].pending_fdr and judge.judgements[STRONG].pending_fdr
    changed = judge.apply_fdr()
    assert set(changed) == {STRONG, MARGINAL}
    strong, marginal = judge.judgements[STRONG], judge.judgements[MARGINAL]
    assert strong.verdict == "REGRESSED"
    assert len(strong.failures) == 1
    assert strong.comparison is not None
    assert strong.comparison.p_adjusted == pytest.approx(1e-8 * 20)
    assert marginal.verdict == "INCONCLUSIVE"
    assert not marginal.fails and not marginal.pending_fdr
    assert marginal.comparison is not None
    assert marginal.comparison.p_adjusted == pytest.approx(0.02 * 20 / 2)
    assert any("Benjamini-Hochberg over 20 comparisons" in n for n in marginal.notes)
    for key, j in judge.judgements.items():
        if key not in (STRONG, MARGINAL):
            assert j.verdict == "UNCHANGED" and not j.fails


def test_apply_fdr_keeps_the_marginal_regression_alone() -> None:
    judge = fdr_session(0)
    judge.apply_fdr()
    marginal = judge.judgements[MARGINAL]
    assert marginal.verdict == "REGRESSED"
    assert len(marginal.failures) == 1
    assert marginal.comparison is not None
    assert marginal.comparison.p_adjusted == pytest.approx(0.02)


def test_apply_fdr_demotion_fails_under_strict() -> None:
    judge = fdr_session(18, strict=True)
    judge.apply_fdr()
    marginal = judge.judgements[MARGINAL]
    assert marginal.verdict == "INCONCLUSIVE"
    assert len(marginal.failures) == 1
    assert "INCONCLUSIVE after the last round under --tpw-strict" in marginal.failures[0]


def test_apply_fdr_without_comparisons_changes_nothing() -> None:
    judge = Judge(ON, None, KEY)
    judge_run(judge, LEVEL, seed=1)
    assert judge.apply_fdr() == {}


# -- strict mode ----------------------------------------------------------------------------


def test_strict_no_baseline_fails() -> None:
    j = judge_with(Judge(Settings(enabled=True, strict=True), None, KEY), None)
    assert j.verdict == "NO_BASELINE"
    assert len(j.failures) == 1
    assert "no baseline under --tpw-strict" in j.failures[0]
    assert f"--tpw-update-missing '{NODE}'" in j.failures[0]


def test_strict_inconclusive_fails() -> None:
    judge = Judge(Settings(enabled=True, strict=True), baseline_for(NODE), KEY)
    j = judge_with(judge, comparison(stats.Verdict.INCONCLUSIVE, p=0.3, ratio=0.97))
    assert j.verdict == "INCONCLUSIVE"
    assert len(j.failures) == 1
    assert "INCONCLUSIVE after the last round under --tpw-strict" in j.failures[0]
    assert "0.970" in j.failures[0]


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
    [Settings(enabled=True), Settings(enabled=True, update=True)],
    ids=["plain", "update"],
)
def test_without_strict_none_of_these_fail(settings: Settings) -> None:
    assert not judge_with(Judge(settings, None, KEY), None).fails
    assert not judge_with(Judge(settings, None, KEY, ["other-x1"]), None).fails
    judge = Judge(settings, baseline_for(NODE), KEY)
    j = judge_with(judge, comparison(stats.Verdict.INCONCLUSIVE, p=0.3, ratio=0.97))
    assert j.verdict == "INCONCLUSIVE" and not j.fails


@pytest.mark.parametrize(
    "settings",
    [
        Settings(enabled=True, strict=True, update=True),
        Settings(enabled=True, strict=True, update_missing=True),
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
    judge = Judge(Settings(enabled=True, update=update), None, KEY)
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


# -- canaries -------------------------------------------------------------------------------

CANARY = "t.py::test_canary"


def test_canary_shift_is_divided_out_of_later_comparisons() -> None:
    judge = Judge(ON, baseline_for(CANARY, NODE, noise=0.005), KEY)
    canary = MarkerArgs(canary=True)
    run_c, j_c = judge_run(judge, LEVEL * 0.95, seed=7, marker=canary, nodeid=CANARY, noise=0.005)
    assert j_c.canary
    assert run_c.comparison is not None and run_c.comparison.shift == 0.0  # not its own
    shift, shift_se = judge.shift()
    assert math.exp(shift) == pytest.approx(0.95, abs=0.01)
    assert shift_se > 0
    run_t, j_t = judge_run(judge, LEVEL * 0.95, seed=8, noise=0.005)
    assert run_t.comparison is not None
    assert run_t.comparison.shift == pytest.approx(shift)
    assert run_t.comparison.ratio == pytest.approx(1.0, abs=0.015)
    assert j_t.verdict == "UNCHANGED"
    assert not j_t.fails and not j_t.pending_fdr


def test_same_drop_without_a_canary_is_a_regression() -> None:
    judge = Judge(ON, baseline_for(CANARY, NODE, noise=0.005), KEY)
    run_t, j_t = judge_run(judge, LEVEL * 0.95, seed=8, noise=0.005)
    assert judge.shift() == (0.0, 0.0)
    assert run_t.n == 20
    assert run_t.comparison is not None and run_t.comparison.shift == 0.0
    assert j_t.verdict in ("REGRESSED", "MINOR_REGRESSION")


def test_several_canaries_use_the_median() -> None:
    nodes = [f"t.py::test_canary_{i}" for i in range(3)]
    judge = Judge(ON, baseline_for(*nodes, noise=0.005), KEY)
    for nodeid, factor, seed in zip(nodes, (0.90, 0.95, 1.02), (11, 12, 13), strict=True):
        judge_run(
            judge,
            LEVEL * factor,
            seed=seed,
            marker=MarkerArgs(canary=True),
            nodeid=nodeid,
            noise=0.005,
        )
    assert len(judge.canary_log_ratios) == 3
    assert math.exp(judge.shift()[0]) == pytest.approx(0.95, abs=0.01)


# -- the regression message -----------------------------------------------------------------


def regressed(nodeid: str = NODE, software: dict[str, str] | None = None) -> Judgement:
    judge = Judge(
        ON, baseline_for(nodeid), KEY, software=software or {**BASE_SOFTWARE, "driver": "560.28"}
    )
    _, j = judge_run(judge, LEVEL * 0.9, seed=6, nodeid=nodeid)
    judge.apply_fdr()
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
    assert "tolerance 5%" in text and "noise floor 1%" in text
    assert "20 now, 20 in 1 baseline session(s)" in text
    assert "BH-adjusted" in text
    assert "stack changes since the baseline: driver 550.54 -> 560.28" in text
    assert "torch" not in text  # unchanged layers are not listed
    last = text.splitlines()[-1]
    assert last.endswith(f"pytest --tpw --tpw-update '{NODE}'")
    assert "canary shift" not in text


def test_regression_text_without_stack_changes_says_none() -> None:
    text = regressed(software=dict(BASE_SOFTWARE)).failures[0]
    assert "stack changes since the baseline: none" in text


def test_accept_command_quotes_the_node_id() -> None:
    nodeid = "t.py::test_gen[it's 1]"
    text = regressed(nodeid).failures[0]
    command = text.splitlines()[-1].split("accept it: ", 1)[1]
    assert shlex.split(command) == ["pytest", "--tpw", "--tpw-update", nodeid]


def test_regression_text_mentions_a_canary_shift() -> None:
    judge = Judge(ON, baseline_for(NODE), KEY, software=BASE_SOFTWARE)
    j = judge_with(
        judge, comparison(stats.Verdict.REGRESSED, p=1e-9, ratio=0.8, shift=math.log(0.97))
    )
    c = j.comparison
    assert c is not None
    text = judge.regression_text(j, c)
    assert "canary shift -3.0% divided out" in text
