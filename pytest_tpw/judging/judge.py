"""Judging measurements: rounds, verdicts relative to the run-wide shift, budgets, messages.

Pure Python over the two-level statistics (:mod:`pytest_tpw.judging.decide` and its parts) and
:mod:`pytest_tpw.store.baseline`; no pytest. The order of decisions:

1. At session start, :class:`Judge` builds the suite's prior from the stored baselines
   (between-session spread pooled across tests, spread of run-wide shifts).
2. Per test, a :class:`BaselinePolicy` decides how many windows to record: looks at 5, 10,
   15, 20 windows, stopping as soon as the interval lies inside one verdict region, judged
   relative to the run-wide shift estimated from the tests finished so far.
3. :meth:`Judge.judge` returns the test's :class:`Judgement`: budgets are decided at once; a
   comparison waits (``pending``) for the whole run, because every test's verdict is relative
   to the run-wide shift of all of them.
4. :meth:`Judge.finish` (once every test ran): the final run-wide shift and its verdict
   (:class:`RunWide`: within the stored runs' spread, a stack change, or an environment
   anomaly -- never a per-test failure), then each test's final verdict after
   Benjamini-Hochberg. The plugin logs the held tests then.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_tpw import stats
from pytest_tpw.config.settings import Settings, TestSettings
from pytest_tpw.judging.decide import judge_suite, look
from pytest_tpw.judging.kernels import detectable_drop
from pytest_tpw.judging.model import (
    RUN_SPREAD_SOURCE,
    RunShift,
    RunVerdict,
    StoredRun,
    SuiteDecision,
    SuiteParams,
    SuitePrior,
    TestChange,
    TestInput,
)
from pytest_tpw.judging.prior import suite_prior
from pytest_tpw.judging.shift import change_of, look_shift
from pytest_tpw.load.figures import LATENCIES, limit_breaches
from pytest_tpw.load.shape import shape_changes
from pytest_tpw.measure.samples import SHORT_WINDOW, WAITED, Measurement, Result
from pytest_tpw.store.baseline import BaselineFile, StoredSession, pooled, stack_changes
from pytest_tpw.store.layout import session_count
from pytest_tpw.verdict import Verdict

#: Software-stack entries worth naming in a regression message, in this order.
STACK_KEYS = (
    "driver",
    "cuda_driver",
    "cuda_runtime",
    "torch",
    "transformers",
    "vllm",
    "triton",
    "flash-attn",
    "jax",
    "numpy",
    "kernel",
    "os",
    "cpu_governor",
    "python",
    "pytest-tpw",
)


@dataclass
class Judgement:
    """What one measurement's figures mean for its test."""

    key: str
    nodeid: str
    verdict: Verdict
    tolerance: float
    comparison: stats.Comparison | None = None
    baseline_level: float | None = None
    failures: list[str] = field(default_factory=list)
    #: Lines for the terminal summary (improved, minor regression, FDR demotions).
    notes: list[str] = field(default_factory=list)
    #: What makes the comparison doubtful; emitted as pytest warnings on the test.
    warnings: list[str] = field(default_factory=list)
    #: The verdict waits for the whole run (run-wide shift, Benjamini-Hochberg).
    pending: bool = False
    canary: bool = False
    #: candidate / baseline relative to the run-wide shift, when compared.
    ratio: float | None = None
    #: Decided per test, without the run-wide shift of the whole suite (pytest-xdist worker).
    without_suite: bool = False
    #: The test's fixed number of recorded windows (marker or ``--tpw-rounds``), if any.
    rounds: int | None = None
    #: The smallest drop this comparison would find REGRESSED 4 times in 5 (a fraction).
    detectable_drop: float | None = None
    #: Its interval is far wider than the tolerance: it cannot tell a drop from noise.
    too_noisy: bool = False
    #: When it cannot catch a drop of its tolerance: which part of the noise is why
    #: (:meth:`Judge.widened_by`; :data:`LOWER_IT` says what lowers it).
    limited_by: str | None = None
    #: How far the ratio may be off from the sensor's edges alone (:meth:`Judge.
    #: instrument_bound`); a drop within it is never REGRESSED.
    instrument_bound: float | None = None

    @property
    def fails(self) -> bool:
        return bool(self.failures)

    def to_dict(self) -> dict[str, Any]:
        """What the controller needs to report or decide a worker's judgement."""
        return {
            "key": self.key,
            "nodeid": self.nodeid,
            "verdict": self.verdict.value,
            "tolerance": self.tolerance,
            "baseline_level": self.baseline_level,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "canary": self.canary,
            "ratio": self.ratio,
            "without_suite": self.without_suite,
            "rounds": self.rounds,
            "detectable_drop": self.detectable_drop,
            "too_noisy": self.too_noisy,
            "limited_by": self.limited_by,
            "instrument_bound": self.instrument_bound,
            "pending": self.pending,
            "comparison": _comparison_dict(self.comparison),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Judgement:
        return cls(
            key=data["key"],
            nodeid=data["nodeid"],
            verdict=Verdict(data["verdict"]),
            tolerance=float(data["tolerance"]),
            baseline_level=data["baseline_level"],
            failures=list(data["failures"]),
            notes=list(data["notes"]),
            warnings=list(data["warnings"]),
            canary=bool(data["canary"]),
            ratio=data["ratio"],
            without_suite=bool(data.get("without_suite")),
            rounds=data.get("rounds"),
            detectable_drop=data.get("detectable_drop"),
            too_noisy=bool(data.get("too_noisy")),
            limited_by=data.get("limited_by"),
            instrument_bound=data.get("instrument_bound"),
            pending=bool(data.get("pending")),
            comparison=_comparison_from(data.get("comparison")),
        )


@dataclass(frozen=True)
class RunWide:
    """The run-wide shift of one hardware key and what it means: one finding for the run.

    ``finding``: FINE (within the spread of stored runs), STACK_REGRESSION or
    STACK_IMPROVEMENT (beyond it, with the software stack changed since the baseline),
    ENVIRONMENT_ANOMALY (beyond it, stack unchanged: the board, clocks, heat; rerun),
    TOO_FEW_TESTS (no estimate: declare canaries), NO_BASELINE.
    """

    hardware_key: str
    finding: str
    ratio: float | None
    ci: tuple[float, float] | None
    n_tests: int
    method: str
    stack_changes: tuple[str, ...] = ()
    suspects: tuple[str, ...] = ()
    why: str = ""
    fails: bool = False
    notes: tuple[str, ...] = ()  # about this run's noise: a busy runner, tests that differ...

    @property
    def text(self) -> str:
        """One line, e.g. ``run-wide: -3.1 % [-3.8, -2.4]; stack changed: torch a -> b``."""
        if self.ratio is None or not math.isfinite(self.ratio):
            return f"run-wide: {self.finding}: {self.why}"
        head = f"run-wide: {_pct(self.ratio)}"
        if self.ci is not None:
            head += f" [{_pct(self.ci[0])}, {_pct(self.ci[1])}]"
        head += f" {self.finding}"
        if self.finding.startswith("STACK"):
            head += "; stack changed: " + "; ".join(self.stack_changes)
        elif self.finding == "ENVIRONMENT_ANOMALY":
            head += (
                "; stack unchanged: rerun on a quiet, cool runner (a shift that a rerun "
                "repeats is real: code that every measured test shares, or this runner)"
            )
            if self.suspects:
                head += "; suspects: " + "; ".join(self.suspects)
        return head

    def to_json(self) -> dict[str, Any]:
        return {
            "hardware_key": self.hardware_key,
            "verdict": self.finding,
            "ratio": self.ratio if self.ratio is not None and math.isfinite(self.ratio) else None,
            "ci": list(self.ci) if self.ci else None,
            "n_tests": self.n_tests,
            "method": self.method,
            "stack_changes": list(self.stack_changes),
            "suspects": list(self.suspects),
            "why": self.why,
            "notes": list(self.notes),
            "fails": self.fails,
            "text": self.text,
        }


def owners(key: str) -> list[str]:
    """The node ids a measurement key may belong to: the key itself (a test's unnamed
    measurement) and each prefix before a ``::`` (a named one, ``nodeid::name``; node ids
    and names may hold ``::`` themselves)."""
    out = [key]
    at = key.find("::")
    while at > 0:
        out.append(key[:at])
        at = key.find("::", at + 2)
    return out


class Judge:
    """Baselines and settings of one session, the suite's prior, and every judgement."""

    def __init__(
        self,
        settings: Settings,
        baseline: BaselineFile | None,
        hardware_key: str,
        other_hardware: Sequence[str] = (),
        software: Mapping[str, Any] | None = None,
        *,
        edge_error_s: float = 0.0,
    ) -> None:
        self.settings = settings
        #: The sensor's edge error (:meth:`pytest_tpw.sensors.base.Sensor.edge_error_s`).
        self.edge_error_s = edge_error_s
        self.baseline = baseline
        self.hardware_key = hardware_key
        self.other_hardware = list(other_hardware)
        self.software = dict(software or {})
        self.judgements: dict[str, Judgement] = {}
        looks = (settings.rounds,) if settings.rounds is not None else stats.DEFAULT_LOOKS
        self.suite_params = SuiteParams(verdict=self.params(looks=looks))
        #: The stored measurements this run may compare (:meth:`focus`); None: all of them.
        self.focus_keys: list[str] | None = None
        self._all_keys: list[str] | None = None
        self._focus_set: set[str] = set()
        self._stored: dict[str, list[StoredRun]] | None = None
        self._prior: SuitePrior | None = None
        #: This run's compared measurements, as the statistics see them.
        self.inputs: dict[str, TestInput] = {}
        #: Each finished measurement's contribution to the run-wide shift (a rerun replaces it).
        self._changes: dict[str, TestChange | None] = {}
        self.run_wide: RunWide | None = None
        self._finished = False
        #: Benjamini-Hochberg's family at the end of the run: the compared, non-canary tests.
        self._family = 1
        #: Per measurement: how its load differs from its baseline's (None: comparable).
        self._load_changes: dict[str, str | None] = {}

    # -- inputs ----------------------------------------------------------------------------

    def params(
        self, tolerance: float | None = None, looks: tuple[int, ...] = stats.DEFAULT_LOOKS
    ) -> stats.Params:
        s = self.settings
        return stats.Params(
            tolerance=tolerance if tolerance is not None else s.tolerance,
            noise_floor=s.noise_floor,
            confidence=s.confidence,
            fdr_q=s.fdr,
            looks=looks,
        )

    def sessions(self, key: str) -> list[StoredSession]:
        return self.baseline.sessions(key) if self.baseline is not None else []

    def load_change(self, key: str) -> str | None:
        """How measurement ``key``'s load differed from its baseline's, once judged."""
        return self._load_changes.get(key)

    def incomparable(self, m: Measurement) -> str | None:
        """How the load ``m`` ran under differs from its baseline's (``tpw.load``: the
        concurrency or rate, prompts, output length, endpoint), in words; None when they
        agree or there is no baseline. Such a measurement is not judged."""
        if m.key not in self._load_changes:
            stored = self.sessions(m.key) if self.has_stored(m.key) else []
            now = None if m.load is None else m.load.shape
            changes = shape_changes(stored[-1].load, now) if stored else []
            self._load_changes[m.key] = "; ".join(changes) if changes else None
        return self._load_changes[m.key]

    # -- what is compared: the stored sessions of this run's tests ---------------------------

    def focus(self, keys: Iterable[str]) -> None:
        """Compare only these stored measurements, and learn the suite's prior from them
        alone: the run's own tests (a 300-test run against a 10,000-test baseline reads
        300 entries). Call before the first look; keys without stored sessions are left out.
        """
        if self._prior is not None:
            raise RuntimeError("focus() after the prior was built: call it before any look")
        stored = self.baseline.measurements if self.baseline is not None else {}
        self.focus_keys = sorted({k for k in keys if session_count(stored, k) > 0})
        self._focus_set = set(self.focus_keys)
        self._stored = None

    def focus_on_tests(self, nodeids: Iterable[str]) -> None:
        """:meth:`focus` on the stored measurements of these tests (a test's unnamed
        measurement is keyed by its node id, a named one by ``nodeid::name``)."""
        wanted = set(nodeids)
        keys = [
            key
            for key in (self.baseline.measurements if self.baseline is not None else ())
            if any(test in wanted for test in owners(key))
        ]
        self.focus(keys)

    def _keys(self) -> list[str]:
        if self.focus_keys is not None:
            return self.focus_keys
        if self._all_keys is None:
            stored = self.baseline.measurements if self.baseline is not None else {}
            self._all_keys = [k for k in stored if session_count(stored, k) > 0]
        return self._all_keys

    @property
    def stored(self) -> dict[str, list[StoredRun]]:
        """The compared measurements' stored runs (parsed on first use, only these)."""
        if self._stored is None:
            self._stored = {
                key: [StoredRun(s.date, s.values()) for s in self.sessions(key)]
                for key in self._keys()
            }
        return self._stored

    def has_stored(self, key: str) -> bool:
        """Whether ``key`` is compared this run (without parsing its sessions)."""
        if self._stored is not None:
            return key in self._stored
        if self.focus_keys is not None:
            return key in self._focus_set
        stored = self.baseline.measurements if self.baseline is not None else {}
        return session_count(stored, key) > 0

    @property
    def prior(self) -> SuitePrior | None:
        """The suite's prior from the compared measurements' stored runs (built on first
        use: a collect-only run never builds it); None when nothing is compared."""
        if self._prior is None and self.stored:
            self._prior = suite_prior(self.stored, self.suite_params)
        return self._prior

    @property
    def comparing(self) -> bool:
        """True when measurements are compared against stored baselines this session
        (answered without reading the stored sessions)."""
        if self._stored is not None:
            return bool(self._stored)
        return bool(self._keys())

    def shift(self) -> RunShift | None:
        """The shift the next test's looks are judged against, from the tests finished so far
        (:func:`pytest_tpw.judging.shift.look_shift`; None without baselines)."""
        if self.prior is None:
            return None
        return look_shift(list(self._changes.values()), self.prior, self.suite_params)

    def test_input(self, m: Measurement, test: TestSettings) -> TestInput:
        return TestInput(
            m.key,
            self.stored.get(m.key, []),
            m.values(),
            tolerance=test.tolerance,
            canary=test.canary,
        )

    def adopt(self, m: Measurement, j: Judgement) -> None:
        """Take a judgement made in another process (a pytest-xdist worker) as this judge's.

        A pending one joins this run's inputs, so that the run-wide shift and
        Benjamini-Hochberg cover it; once the run is finished, a late one is ignored.
        """
        known = self.judgements.get(j.key)
        if self._finished and known is not None:
            return
        self.judgements[j.key] = j
        if j.pending and self.prior is not None and m.key in self.stored:
            test = TestInput(
                m.key, self.stored[m.key], m.values(), tolerance=j.tolerance, canary=j.canary
            )
            self.inputs[m.key] = test
            self._changes[m.key] = change_of(test, self.prior, self.suite_params)
        elif j.pending:  # nothing here to decide it with: its own last look decides
            self.settle_alone(j)

    # -- rounds ----------------------------------------------------------------------------

    def policy(self, test: TestSettings) -> BaselinePolicy:
        """The round policy of one test (fixed rounds, or looks against its baseline)."""
        return BaselinePolicy(self, test)

    # -- verdicts --------------------------------------------------------------------------

    def judge(
        self,
        m: Measurement,
        result: Result,
        test: TestSettings,
        comparison: stats.Comparison | None,
    ) -> Judgement:
        """Budgets at once; a comparison waits for the run (``pending``) unless updating."""
        j = Judgement(
            m.key,
            m.nodeid,
            Verdict.NO_BASELINE,
            test.tolerance,
            comparison,
            canary=test.canary,
            rounds=test.rounds,
        )
        changed = self.incomparable(m)
        sessions = self.sessions(m.key) if changed is None else []
        if sessions:
            j.baseline_level = stats.summarize(pooled(sessions), test.confidence).estimate
            j.instrument_bound = self.instrument_bound(
                [s.seconds for s in m.samples], [sec for x in sessions for _, _, sec in x.samples]
            )
        if changed is not None:
            self._incomparable(j, changed)
        elif comparison is not None and comparison.verdict is not Verdict.NO_BASELINE:
            j.verdict = comparison.verdict
            j.ratio = comparison.ratio if math.isfinite(comparison.ratio) else None
            self.inputs[m.key] = self.test_input(m, test)
            assert self.prior is not None
            self._changes[m.key] = change_of(self.inputs[m.key], self.prior, self.suite_params)
            j.pending = True
        else:
            self._no_baseline(j)
        self._budgets(j, result, test)
        self.judgements[m.key] = j
        return j

    def instrument_bound(
        self, candidate: Sequence[float], baseline: Sequence[float]
    ) -> float | None:
        """How far the ratio of two levels may be off from the sensor's edges alone: each
        window of ``T`` seconds is off by at most ``edge / T``, independently (the random
        phase), so a level of ``n`` windows by ``edge x mean(1/T) / sqrt(n)``; the ratio by
        the sum of both sides'. None when the sensor states no edge error."""
        if self.edge_error_s <= 0:
            return None

        def side(seconds: Sequence[float]) -> float:
            valid = [t for t in seconds if t > 0]
            if not valid:
                return 0.0
            return (
                self.edge_error_s * statistics.fmean(1 / t for t in valid) / math.sqrt(len(valid))
            )

        return side(candidate) + side(baseline)

    def _incomparable(self, j: Judgement, changed: str) -> None:
        """Measured under another load than its baseline: not judged, and said so."""
        s = self.settings
        j.verdict = Verdict.INCOMPARABLE
        head = (
            f"{j.key}: INCOMPARABLE: measured under another load than its baseline "
            f"({changed}), so it is not judged"
        )
        if s.baseline_mode == "replace":
            j.notes.append(f"{head}; this run's sessions replace the baseline (--tpw-update)")
            return
        fix = f"accept this load with pytest --tpw --tpw-update {_quote(j.nodeid)}"
        if s.baseline_mode == "extend":
            text = f"{head} and not recorded (its history is of another load); {fix}"
        else:
            text = f"{head}; {fix}, or measure at the stored load"
        if s.strict and not s.writes_baselines:
            j.failures.append(text)
        else:
            j.warnings.append(text)

    def _no_baseline(self, j: Judgement) -> None:
        s = self.settings
        if self.other_hardware and self.baseline is None:
            # said once in the terminal summary, and a failure under --tpw-strict
            others = ", ".join(self.other_hardware)
            if s.strict:
                j.failures.append(
                    f"{j.key}: hardware mismatch under --tpw-strict: this "
                    f"machine is {self.hardware_key}, the baselines are for "
                    f"{others}. Record one here with --tpw-update"
                )
        elif s.strict and not s.writes_baselines:
            j.failures.append(
                f"{j.key}: no baseline under --tpw-strict; record one with "
                f"pytest --tpw --tpw-update-missing {_quote(j.nodeid)}"
            )

    def _classify(self, j: Judgement, c: stats.Comparison) -> None:
        """Notes and failures of a final comparison."""
        s = self.settings
        updating = s.writes_baselines
        j.comparison, j.verdict = c, c.verdict
        j.ratio = c.ratio if math.isfinite(c.ratio) else None
        # a lone drop must also survive Benjamini-Hochberg across the run's compared tests
        # (p x looks <= q / m); a test decided alone does not enter it
        alpha = c.alpha
        if not j.without_suite:
            looks = len(self.suite_params.verdict.looks)
            alpha = min(alpha, s.fdr / (looks * max(self._family, 1)))
        drop = detectable_drop(c.se_log, c.df, alpha, c.alpha_equiv, j.tolerance, s.noise_floor)
        j.detectable_drop = drop if math.isfinite(drop) else None
        j.too_noisy = _too_noisy(c, j.tolerance)
        if j.detectable_drop is not None and j.detectable_drop > j.tolerance:
            j.limited_by = self.widened_by(j, c)
        if j.canary:
            if c.verdict is not Verdict.UNCHANGED:
                j.notes.append(
                    f"{j.key}: canary {_pct(c.ratio)} relative to the run "
                    f"({c.verdict.value}); canaries never fail on their own"
                )
            return
        bound = j.instrument_bound
        if c.verdict is Verdict.REGRESSED and bound is not None and 1 - c.ratio <= bound:
            # beyond the statistics, not beyond what the sensor's edges can do by themselves
            why = (
                f"the drop ({1 - c.ratio:.1%}) is within the sensor's instrument bound "
                f"(±{bound:.1%}: its readings at a window's edges are uncertain by "
                f"{self.edge_error_s:.3g} s); longer windows (--tpw-min-window) or a "
                "finer counter lower it"
            )
            j.comparison = replace(c, verdict=Verdict.INCONCLUSIVE, why=why)
            j.verdict = Verdict.INCONCLUSIVE
            j.warnings.append(f"{j.key}: INCONCLUSIVE: {why}")
            return
        if c.verdict is Verdict.REGRESSED and not updating:
            j.failures.append(self.regression_text(j, c))
        elif c.verdict is Verdict.MINOR_REGRESSION:
            j.notes.append(
                f"{j.key}: minor regression ({_pct(c.ratio)}), within the "
                f"tolerance ({j.tolerance:.0%})"
            )
        elif c.verdict is Verdict.IMPROVED:
            if s.baseline_mode == "replace":
                then = "this run accepts the new level (--tpw-update; unless the test fails)"
            elif s.baseline_mode == "extend":
                then = "this run adds its session to the stored ones (--tpw-record)"
            else:
                then = f"accept the new level with pytest --tpw --tpw-update {_quote(j.nodeid)}"
            j.notes.append(f"{j.key}: improved ({_pct(c.ratio)}); {then}")
        elif c.verdict is Verdict.INCONCLUSIVE:
            if c.why:
                j.notes.append(f"{j.key}: {c.why}")
            if c.p_adjusted is not None and c.why and "Benjamini-Hochberg" in c.why:
                # demoted: its interval excludes "unchanged", the suite's many comparisons
                # do not let one p-value that size stand
                text = (
                    f"{j.key}: INCONCLUSIVE: {c.why}; ratio {_ratio_text(c)}. It may be a "
                    "real but small regression: rerun it, or give it more rounds "
                    "(@pytest.mark.tpw(rounds=...))"
                )
                from_history = False
            else:
                text, from_history = self._inconclusive_text(j, c)
            if s.strict and not updating and not from_history:
                j.failures.append(text)
            else:
                j.warnings.append(text)

    def widened_by(self, j: Judgement, c: stats.Comparison) -> str:
        """Which part of the variance makes this interval wide (see :data:`LOWER_IT`):
        ``runs`` (no run-wide estimate in a small suite: the spread of whole runs is in it),
        ``run`` (this run's tests disagree more than the stored runs did), ``prior`` (one
        stored session: the session spread is assumed), ``sessions`` (the stored sessions
        disagree) or ``windows`` (this run's windows are noisy)."""
        sessions = max(c.n_sessions, 1)
        between = (1.0 + 1.0 / sessions) * c.sigma_b**2
        total = c.se_log**2 if math.isfinite(c.se_log) else math.inf
        # this run's own part: the variance of its windows' mean, from the windows themselves
        windows = self.inputs.get(j.key)
        within = _mean_log_variance(windows.candidate) if windows is not None else total
        if within >= 0.5 * total:
            return "windows"
        run = self.run_wide
        if run is not None and run.finding == "TOO_FEW_TESTS":
            return "runs"
        if between <= 0:
            return "windows"
        if c.sigma_b_source == RUN_SPREAD_SOURCE:
            return "run"
        return "prior" if c.n_sessions <= 1 else "sessions"

    def _inconclusive_text(self, j: Judgement, c: stats.Comparison) -> tuple[str, bool]:
        """Why the interval is too wide, which side makes it so, advice that can work.

        Returns the text and whether something other than this run's windows makes it wide
        (stored sessions that disagree, or no run-wide estimate in a small suite);
        --tpw-strict fails only when this run's windows do.
        """
        part = self.widened_by(j, c)
        head = f"{j.key}: INCONCLUSIVE after the last round: ratio {_ratio_text(c)}; "
        if j.too_noisy:
            head += f"too noisy to judge, its interval is wider than {TOO_NOISY:g} tolerances; "
        run = self.run_wide
        if part == "runs" and run is not None:
            return (
                head + f"with {run.n_tests} compared test(s) and no canary, no run-wide shift "
                "can be estimated, so the spread of whole runs is in this interval, which more "
                "windows cannot narrow. Declare a canary (@pytest.mark.tpw(canary=True) on a "
                "frozen reference workload) or compare more tests in one run",
                True,
            )
        spread = f"stored sessions differ by {c.sigma_b:.1%} (SD, {c.n_sessions} session(s))"
        if part == "run":
            side = (
                f"this run's tests disagree with each other far more than the stored runs' "
                f"did (SD {c.sigma_b:.1%} around the run-wide shift), so every interval of "
                "this run is widened: the runner changed during the run (clocks, heat, other "
                "load). Rerun on a quiet runner"
            )
        elif part in ("sessions", "prior"):
            side = (
                f"the stored sessions disagree ({spread}); this run's windows are "
                f"steady. Re-record the baseline on a quiet runner (pytest --tpw "
                f"--tpw-update {_quote(j.nodeid)}), then add sessions with --tpw-record"
            )
        else:
            side = (
                f"this run's windows are noisy ({spread}). Pin PyTorch's threads "
                "(torch.set_num_threads / OMP_NUM_THREADS) below the free cores, use a "
                "quiet runner, or give each window more work"
            )
        return (
            head + f"the interval is too wide to tell a {j.tolerance:.0%} change from noise: "
            f"{side}",
            part != "windows",
        )

    def _budgets(self, j: Judgement, r: Result, test: TestSettings) -> None:
        ci = f" (interval {r.ci[0]:.4g}..{r.ci[1]:.4g})" if r.ci else ""
        checks = [
            ("min_tokens_per_joule", r.tokens_per_joule, "tokens/J", False),
            ("max_joules_per_token", r.joules_per_token, "J/token", True),
            ("max_watts", r.watts, "W", True),
            ("min_tokens_per_second", r.tokens_per_second, "tokens/s", False),
        ]
        self._latency_budgets(j, r, test)
        for name, value, unit, is_max in checks:
            limit = test.budgets.get(name)
            if limit is None or (value <= limit if is_max else value >= limit):
                continue
            side = "above the maximum" if is_max else "below the minimum"
            shown = ci if name == "min_tokens_per_joule" else ""  # an interval of tokens/J
            j.failures.append(
                f"{j.key}: {value:.4g} {unit}{shown} is {side} {limit:g} "
                f"{unit} set by @pytest.mark.tpw({name}={limit:g})"
            )

    def _latency_budgets(self, j: Judgement, r: Result, test: TestSettings) -> None:
        limits = test.latency_limits
        if not limits:
            return
        if r.latency is None:
            j.failures.append(
                f"{j.key}: @pytest.mark.tpw(max_latency=...) limits the latencies of a load, "
                "and this measurement is not one: measure with tpw.load(...), or move the "
                "limit to the test that does"
            )
            return
        for name, observed, limit in limit_breaches(r.latency, limits):
            metric, _, pct = name.rpartition("_")
            what = f"{LATENCIES[metric + '_s']} ({metric.upper()}) {pct}"
            if observed is None:
                j.failures.append(
                    f"{j.key}: {what} has no value (no request of the steady part gave one), "
                    f"so the limit {limit:g} s set by @pytest.mark.tpw(max_latency="
                    f"{{'{name}': {limit:g}}}) cannot be shown to hold"
                )
                continue
            j.failures.append(
                f"{j.key}: {what} {observed:.4g} s is above the limit {limit:g} s set by "
                f"@pytest.mark.tpw(max_latency={{'{name}': {limit:g}}}) (tokens/J "
                f"{r.tokens_per_joule:.4g})"
            )

    def settle_alone(self, j: Judgement) -> None:
        """Decide a pending judgement at once, from its own last look (no suite decision).

        For tests that cannot wait for the rest of the run (pytest-rerunfailures runs their
        protocol itself) and for a worker's judgement that this judge has no baseline to
        decide with.
        """
        if not j.pending or j.comparison is None:
            return
        j.pending = False
        j.without_suite = True
        self._classify(j, replace(j.comparison, provisional=False))

    # -- the run ---------------------------------------------------------------------------

    def finish(self, suspects: Sequence[str] = ()) -> dict[str, Judgement]:
        """Once every test ran: the run-wide finding and every pending test's final verdict.

        Returns the judgements that were pending.
        """
        if not self.inputs or self._finished or self.prior is None:
            return {}
        self._finished = True
        decision = judge_suite(list(self.inputs.values()), self.prior, self.suite_params)
        self.run_wide = self._run_wide(decision, suspects)
        self._family = sum(
            1
            for key, c in decision.comparisons.items()
            if not self.judgements[key].canary and c.verdict is not Verdict.NO_BASELINE
        )
        changed = {}
        for key, c in decision.comparisons.items():
            j = self.judgements[key]
            if j.without_suite:
                continue
            if j.pending:
                j.pending = False
                changed[key] = j
            self._classify(j, _keep_early_decision(j.comparison, c))
        return changed

    def _run_wide(self, d: SuiteDecision, suspects: Sequence[str]) -> RunWide:
        method = str(d.shift.method)
        if d.run_verdict is RunVerdict.NO_BASELINE:
            return RunWide(self.hardware_key, "NO_BASELINE", None, None, 0, method, why=d.why)
        if d.run_verdict is RunVerdict.TOO_FEW_TESTS:
            return RunWide(
                self.hardware_key, "TOO_FEW_TESTS", None, None, d.shift.n_tests, method, why=d.why
            )
        changes = tuple(self.stack_changes())
        if d.run_verdict is RunVerdict.WITHIN_SPREAD:
            finding = "FINE"
        elif changes:
            finding = (
                "STACK_REGRESSION"
                if d.run_verdict is RunVerdict.BEYOND_LOWER
                else "STACK_IMPROVEMENT"
            )
        else:
            finding = "ENVIRONMENT_ANOMALY"
        s = self.settings
        fails = (
            finding == "STACK_REGRESSION" and (s.strict or s.fail_stack) and not s.writes_baselines
        )
        return RunWide(
            self.hardware_key,
            finding,
            d.run_ratio,
            d.run_ci,
            d.shift.n_tests,
            method,
            changes,
            tuple(suspects) if finding == "ENVIRONMENT_ANOMALY" else (),
            d.why,
            fails,
            d.notes,
        )

    def stack_changes(self) -> list[str]:
        """What differs between this run's software stack and the latest stored session's
        (of the compared measurements: the rest of the file is not read)."""
        latest: StoredSession | None = None
        for key in self._keys():
            sessions = self.sessions(key)
            if sessions and (latest is None or sessions[-1].date > latest.date):
                latest = sessions[-1]
        if latest is None or not self.software:
            return []  # nothing known to compare with
        return stack_changes(latest.software, self.software, STACK_KEYS)

    def regression_text(self, j: Judgement, c: stats.Comparison) -> str:
        s = self.settings
        sessions = self.sessions(j.key)
        now = j.baseline_level * c.ratio if j.baseline_level else float("nan")
        relative = ", relative to the run-wide shift" if c.shift else ""
        lines = [
            f"{j.key}: tokens per joule REGRESSED: {now:.4g} now vs {j.baseline_level:.4g} "
            f"in the baseline, ratio {_ratio_text(c)} at {s.confidence:.0%} confidence"
            f"{relative}; tolerance {j.tolerance:.0%}, noise floor {s.noise_floor:.0%}",
            f"  samples: {c.n_candidate} now, {c.n_baseline} in {c.n_sessions} baseline "
            f"session(s); p = {c.p_regression:.3g}"
            + (
                f", BH-adjusted {c.p_adjusted:.3g} at q = {s.fdr:g}"
                if c.p_adjusted is not None
                else ""
            ),
        ]
        if c.shift:
            lines.append(
                f"  run-wide shift {_pct(math.exp(c.shift))} divided out (shared by "
                "every test of this run)"
            )
        if sessions:
            changes = stack_changes(sessions[-1].software, self.software, STACK_KEYS)
            lines.append(
                "  stack changes since the baseline: " + ("; ".join(changes) if changes else "none")
            )
        lines.append(
            "  if the new level is intended, accept it: pytest --tpw --tpw-update "
            + _quote(j.nodeid)
        )
        return "\n".join(lines)


@dataclass
class HardwareShare:
    """One hardware key's part of a run: its judge (baselines, run-wide shift), what its
    devices are (as its baseline file records them), and the measurements taken on them.

    A session has one, for its own sensor's hardware; pytest-xdist's controller, whose
    workers may run on hosts of other kinds (``--tx ssh=...``), gains one per other key
    that a worker reports, with a baseline file and a run-wide shift of its own.
    """

    judge: Judge
    hardware: dict[str, Any]
    measurements: dict[str, tuple[Measurement, Result]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.judge.hardware_key


def suspects(measurements: Sequence[Measurement]) -> list[str]:
    """What the recorded device state says about a run, for an environment anomaly: the
    warnings its windows carried (throttling, clocks, heat, busy CPUs), most frequent first."""
    counts: dict[str, int] = {}
    for m in measurements:
        for sample in m.samples:
            for text in sample.warnings:
                if not text.startswith(WAITED) and text != SHORT_WINDOW:
                    kind = text.split(":", 1)[0] if ":" in text else text
                    counts[kind[:120]] = counts.get(kind[:120], 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return [f"{text} ({n} window(s))" for text, n in ranked]


class BaselinePolicy:
    """How many windows one test records, and the comparison its last look made.

    With a baseline: looks at 5, 10, 15, 20 windows (or the fixed count of ``--tpw-rounds`` /
    marker ``rounds``), stopping as soon as the interval lies inside one verdict region,
    relative to the run-wide shift so far. Without one: the first look's count (the last's
    when recording), then NO_BASELINE. Implements the meter's ``RoundPolicy``.
    """

    def __init__(self, judge: Judge, test: TestSettings) -> None:
        self.judge = judge
        self.test = test
        self.comparisons: dict[str, stats.Comparison] = {}
        self._shift: RunShift | None = None

    def _schedule(self) -> tuple[int, ...]:
        """The window counts this test is looked at: its fixed rounds, or the last look
        alone when recording (a baseline wants every window), else every look."""
        looks = self.judge.suite_params.verdict.looks
        if self.test.rounds is not None:
            return (self.test.rounds,)
        return (looks[-1],) if self.test.writes_baselines else looks

    def planned(self, key: str) -> tuple[int, int]:
        """The fewest and the most windows measurement ``key`` will record (warm-up not
        counted): what :meth:`more` will ask for, before any window is taken."""
        schedule = self._schedule()
        if not self.judge.has_stored(key):
            n = schedule[0] if len(schedule) > 1 else schedule[-1]
            return n, n
        return schedule[0], schedule[-1]

    def more(self, m: Measurement) -> bool:
        n = len(m.samples)
        schedule = self._schedule()
        if (
            self.judge.prior is None
            or m.key not in self.judge.stored
            or self.judge.incomparable(m) is not None
        ):
            # nothing to compare with: the first look's windows, or all a recording wants
            return n < (schedule[0] if len(schedule) > 1 else schedule[-1])
        if n < schedule[-1] and n not in schedule:
            return True
        return not self.look(m)

    def look(self, m: Measurement) -> bool:
        """Judge the windows taken so far at the look their count makes: a count that has no
        look of its own, or the only look of a fixed schedule, is the last. True: stop."""
        judge = self.judge
        assert judge.prior is not None
        looks = judge.suite_params.verdict.looks
        schedule = self._schedule()
        n = len(m.samples)
        index = schedule.index(n) if len(schedule) > 1 and n in schedule else len(looks) - 1
        if self._shift is None:
            self._shift = judge.shift()
        assert self._shift is not None  # a judge with a prior always has a shift
        stop, c = look(
            judge.test_input(m, self.test),
            judge.prior,
            self._shift,
            judge.suite_params,
            index,
            len(looks),
            family_size=max(len(judge.stored), 1),
        )
        self.comparisons[m.key] = c
        return stop

    def verdict(self, key: str) -> Verdict:
        c = self.comparisons.get(key)
        return Verdict.NO_BASELINE if c is None else c.verdict


#: What lowers the smallest drop a test can catch, by what widens its interval.
LOWER_IT = {
    "windows": "its windows are noisy: more windows (@pytest.mark.tpw(rounds=40)), more work "
    "per window, a quiet runner, PyTorch's threads below the free cores",
    "sessions": "its stored sessions disagree: re-record on a quiet runner, then add sessions "
    "(pytest --tpw --tpw-record)",
    "prior": "one stored session: the spread between sessions is assumed, not measured; add "
    "sessions (pytest --tpw --tpw-record)",
    "runs": "too few tests for a run-wide estimate: declare a canary "
    "(@pytest.mark.tpw(canary=True)) or compare 5 tests or more in one run",
    "run": "this run's tests disagree more than the stored runs did: rerun on a quiet runner",
}

#: An interval this many times as wide as the tolerance cannot tell a drop from noise.
TOO_NOISY = 4.0


def _too_noisy(c: stats.Comparison, tolerance: float) -> bool:
    """True when the deciding interval spans more than :data:`TOO_NOISY` tolerances."""
    if c.ci_low is None or c.ci_high is None or c.ci_low <= 0.0:
        return False
    return math.log(c.ci_high / c.ci_low) > TOO_NOISY * -math.log(1.0 - tolerance)


def _mean_log_variance(values: Sequence[float]) -> float:
    """Variance of the mean of log(tokens/J) over a run's windows (inf with fewer than 2)."""
    logs = [math.log(v) for v in values if v > 0]
    n = len(logs)
    if n < 2:
        return math.inf
    mean = sum(logs) / n
    return sum((x - mean) ** 2 for x in logs) / (n - 1) / n


def _keep_early_decision(
    look: stats.Comparison | None, final: stats.Comparison
) -> stats.Comparison:
    """A test that stopped early on a decided verdict keeps it when the final comparison,
    widened by the whole run's shift, is merely INCONCLUSIVE: it was not allowed to record
    more windows, so its doubt is the run's, not its own. A final REGRESSED, IMPROVED or
    UNCHANGED always stands. One that stopped as too noisy to decide keeps that reason.
    """
    if (
        look is not None
        and look.stopped_early
        and look.verdict is Verdict.INCONCLUSIVE
        and final.verdict is Verdict.INCONCLUSIVE
        and look.why
        and not final.why
    ):
        return replace(final, why=look.why)  # stopped as too noisy to decide: say so
    if (
        look is None
        or not look.stopped_early
        or final.verdict is not Verdict.INCONCLUSIVE
        or (final.p_adjusted is not None and final.why and "Benjamini" in final.why)
        or look.verdict not in (Verdict.UNCHANGED, Verdict.IMPROVED, Verdict.MINOR_REGRESSION)
    ):
        return final
    return replace(
        final,
        verdict=look.verdict,
        why=f"decided at an earlier look ({look.n_candidate} windows, "
        f"{look.verdict.value}); the final interval, with the whole run's shift, "
        "is wider",
    )


def _comparison_dict(c: stats.Comparison | None) -> dict[str, Any] | None:
    """A comparison as plain data (verdicts by name), for the trip from a worker."""
    if c is None:
        return None
    data = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
    for name, value in data.items():
        if isinstance(value, Verdict):
            data[name] = value.value
        elif isinstance(value, tuple):
            data[name] = list(value)
    return data


def _comparison_from(data: Mapping[str, Any] | None) -> stats.Comparison | None:
    if not data:
        return None
    values = dict(data)
    values["verdict"] = Verdict(values["verdict"])
    known = {f.name for f in dataclasses.fields(stats.Comparison)}
    return stats.Comparison(**{k: v for k, v in values.items() if k in known})


def _pct(ratio: float) -> str:
    return f"{ratio - 1:+.1%}"


def _ratio_text(c: stats.Comparison) -> str:
    if c.ci_low is None or c.ci_high is None:
        return f"{c.ratio:.3f} ({_pct(c.ratio)}, no interval)"
    return f"{c.ratio:.3f} ({_pct(c.ratio)}), interval {c.ci_low:.3f}..{c.ci_high:.3f}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
