"""Judging measurements: rounds against a baseline, verdicts, budgets, failure messages.

Pure Python over :mod:`pytest_tpw.stats` and :mod:`pytest_tpw.baseline`; no pytest. The
plugin asks, per measurement, for a :class:`Judgement` and turns it into a test outcome.

The order of decisions (STATS.md): rounds run until a look says the measurement is clearly
fine, or until the last look; the verdict of the last look is per-test; a ``REGRESSED``
is final only after Benjamini-Hochberg over every comparison of the session
(:meth:`Judge.apply_fdr`), which the plugin runs when the session has all p-values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import stats
from .baseline import BaselineFile, StoredSession, pooled, stack_changes
from .samples import Measurement, Result
from .settings import Settings, TestSettings
from .verdict import Verdict

#: Software-stack entries worth naming in a regression message, in this order.
STACK_KEYS = ("driver", "cuda_driver", "cuda_runtime", "torch", "transformers", "vllm",
              "triton", "flash-attn", "jax", "numpy", "kernel", "os", "cpu_governor", "python",
              "pytest-tpw")


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
    #: REGRESSED on its own; final only after FDR over the session.
    pending_fdr: bool = False
    canary: bool = False
    #: candidate / baseline after the canary shift, when compared.
    ratio: float | None = None
    #: A REGRESSED decided per test, without suite-wide FDR (pytest-xdist worker).
    without_fdr: bool = False

    @property
    def fails(self) -> bool:
        return bool(self.failures)

    def to_dict(self) -> dict[str, Any]:
        """What the controller needs to report a worker's judgement (no Comparison)."""
        return {"key": self.key, "nodeid": self.nodeid, "verdict": self.verdict.value,
                "tolerance": self.tolerance, "baseline_level": self.baseline_level,
                "failures": list(self.failures), "notes": list(self.notes),
                "warnings": list(self.warnings), "canary": self.canary, "ratio": self.ratio,
                "without_fdr": self.without_fdr}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Judgement:
        return cls(key=data["key"], nodeid=data["nodeid"], verdict=Verdict(data["verdict"]),
                   tolerance=float(data["tolerance"]), baseline_level=data["baseline_level"],
                   failures=list(data["failures"]), notes=list(data["notes"]),
                   warnings=list(data["warnings"]), canary=bool(data["canary"]),
                   ratio=data["ratio"], without_fdr=bool(data.get("without_fdr")))


class Judge:
    """Baselines and settings of one session, and every judgement it made."""

    def __init__(self, settings: Settings, baseline: BaselineFile | None,
                 hardware_key: str, other_hardware: Sequence[str] = (),
                 software: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.baseline = baseline
        self.hardware_key = hardware_key
        self.other_hardware = list(other_hardware)
        self.software = dict(software or {})
        self.judgements: dict[str, Judgement] = {}
        self.canary_log_ratios: list[float] = []
        self.canary_ses: list[float] = []

    # -- inputs ----------------------------------------------------------------------------

    def params(self, tolerance: float | None = None) -> stats.Params:
        s = self.settings
        return stats.Params(tolerance=tolerance if tolerance is not None else s.tolerance,
                            noise_floor=s.noise_floor, confidence=s.confidence, fdr_q=s.fdr)

    def sessions(self, key: str) -> list[StoredSession]:
        return self.baseline.sessions(key) if self.baseline is not None else []

    def shift(self) -> tuple[float, float]:
        """The canaries' suite-wide shift (log units) and its standard error so far."""
        if not self.canary_log_ratios:
            return 0.0, 0.0
        k = len(self.canary_ses)
        se = math.sqrt(sum(x * x for x in self.canary_ses)) / k if k else 0.0
        return stats.canary_shift(self.canary_log_ratios), se

    @property
    def comparing(self) -> bool:
        """True when measurements are compared against stored baselines this session."""
        return self.baseline is not None and bool(self.baseline.measurements)

    # -- rounds ----------------------------------------------------------------------------

    def policy(self, test: TestSettings) -> BaselinePolicy:
        """The round policy of one test (fixed rounds, or looks against its baseline)."""
        return BaselinePolicy(self, test)

    # -- verdicts --------------------------------------------------------------------------

    def judge(self, m: Measurement, result: Result, test: TestSettings,
              comparison: stats.Comparison | None) -> Judgement:
        """Verdict, budgets and messages of one finished measurement."""
        j = Judgement(m.key, m.nodeid, Verdict.NO_BASELINE, test.tolerance, comparison,
                      canary=test.canary)
        sessions = self.sessions(m.key)
        if sessions:
            j.baseline_level = stats.summarize(pooled(sessions), test.confidence).estimate
        if comparison is not None and comparison.verdict is not Verdict.NO_BASELINE:
            j.verdict = comparison.verdict
            j.ratio = comparison.ratio if math.isfinite(comparison.ratio) else None
            self._classify(j, comparison)
        else:
            self._no_baseline(j)
        self._budgets(j, result, test)
        self.judgements[m.key] = j
        return j

    def _no_baseline(self, j: Judgement) -> None:
        s = self.settings
        if self.other_hardware and self.baseline is None:
            # said once in the terminal summary, and a failure under --tpw-strict
            others = ", ".join(self.other_hardware)
            if s.strict:
                j.failures.append(f"{j.key}: hardware mismatch under --tpw-strict: this "
                                  f"machine is {self.hardware_key}, the baselines are for "
                                  f"{others}. Record one here with --tpw-update")
        elif s.strict and not s.writes_baselines:
            j.failures.append(f"{j.key}: no baseline under --tpw-strict; record one with "
                              f"pytest --tpw --tpw-update-missing {_quote(j.nodeid)}")

    def _classify(self, j: Judgement, c: stats.Comparison) -> None:
        s = self.settings
        updating = s.writes_baselines
        j.warnings.extend(f"{j.key}: {w}" for w in c.warnings)
        if j.canary:
            # a canary's drift is the environment's, not a regression of its code: it is
            # divided out of the other ratios and reported, and never fails its own test
            self.canary_log_ratios.append(math.log(c.ratio))
            self.canary_ses.append(c.se_log if math.isfinite(c.se_log) else 0.0)
            if stats.environment_shifted(math.log(c.ratio), self.params(j.tolerance)):
                j.notes.append(f"{j.key}: canary drift {_pct(c.ratio)} ({c.verdict.value}): "
                               "the environment shifted since the baseline")
            return
        if c.verdict is Verdict.REGRESSED and not updating:
            if c.p_regression > s.fdr:
                # BH can never keep a p-value above q, whatever the rest of the session
                j.verdict = Verdict.INCONCLUSIVE
                j.notes.append(f"REGRESSED on its own but p = {c.p_regression:.3g} > "
                               f"--tpw-fdr {s.fdr:g}: cannot survive suite-wide FDR control")
            else:
                j.pending_fdr = True
        elif c.verdict is Verdict.MINOR_REGRESSION:
            j.notes.append(f"{j.key}: minor regression ({_pct(c.ratio)}), within the "
                           f"tolerance ({j.tolerance:.0%})")
        elif c.verdict is Verdict.IMPROVED:
            j.notes.append(f"{j.key}: improved ({_pct(c.ratio)}); accept the new level with "
                           f"pytest --tpw --tpw-update {_quote(j.nodeid)}")
        if j.verdict is Verdict.INCONCLUSIVE and s.strict and not updating:
            j.failures.append(self._inconclusive_text(j, c))

    def _inconclusive_text(self, j: Judgement, c: stats.Comparison) -> str:
        why = f" ({c.why})" if c.why else ""
        return (f"{j.key}: INCONCLUSIVE after the last round under --tpw-strict: ratio "
                f"{_ratio_text(c)}{why}. The spread is too wide to tell a change of "
                "the tolerance from noise: lengthen the windows or raise --tpw-rounds")

    def _budgets(self, j: Judgement, r: Result, test: TestSettings) -> None:
        ci = f" (interval {r.ci[0]:.4g}..{r.ci[1]:.4g})" if r.ci else ""
        checks = [
            ("min_tokens_per_joule", r.tokens_per_joule, "tokens/J", False),
            ("max_joules_per_token", r.joules_per_token, "J/token", True),
            ("max_watts", r.watts, "W", True),
            ("min_tokens_per_second", r.tokens_per_second, "tokens/s", False),
        ]
        budgets = test.budgets
        for name, value, unit, is_max in checks:
            limit = budgets.get(name)
            if limit is None or (value <= limit if is_max else value >= limit):
                continue
            side = "above the maximum" if is_max else "below the minimum"
            shown = ci if name == "min_tokens_per_joule" else ""  # an interval of tokens/J
            j.failures.append(f"{j.key}: {value:.4g} {unit}{shown} is {side} {limit:g} "
                              f"{unit} set by @pytest.mark.tpw({name}={limit:g})")

    def settle_without_fdr(self, j: Judgement) -> None:
        """Decide a pending REGRESSED at once, at the per-test level (no suite-wide FDR).

        For processes that cannot wait for the session's other p-values: pytest-xdist
        workers, whose reports the controller logs as they arrive.
        """
        if not j.pending_fdr or j.comparison is None:
            return
        j.pending_fdr = False
        j.without_fdr = True
        j.failures.append(self.regression_text(j, j.comparison))

    # -- the session -----------------------------------------------------------------------

    def apply_fdr(self) -> dict[str, Judgement]:
        """Benjamini-Hochberg over the session's comparisons; returns judgements that changed."""
        keys = [k for k, j in self.judgements.items()
                if j.comparison is not None and not j.comparison.provisional
                and j.comparison.verdict is not Verdict.NO_BASELINE]
        if not keys:
            return {}
        adjusted = stats.apply_fdr([self.judgements[k].comparison  # type: ignore[misc]
                                    for k in keys], self.settings.fdr)
        changed = {}
        for key, c in zip(keys, adjusted, strict=True):
            j = self.judgements[key]
            j.comparison = c
            if not j.pending_fdr:
                continue
            j.pending_fdr = False
            if c.verdict is Verdict.REGRESSED:
                j.failures.append(self.regression_text(j, c))
            else:
                j.verdict = c.verdict
                j.notes.append(f"{key}: {c.why}")
                if self.settings.strict:
                    j.failures.append(self._inconclusive_text(j, c))
            changed[key] = j
        return changed

    def regression_text(self, j: Judgement, c: stats.Comparison) -> str:
        s = self.settings
        sessions = self.sessions(j.key)
        now = j.baseline_level * c.ratio if j.baseline_level else float("nan")
        lines = [
            f"{j.key}: tokens per joule REGRESSED: {now:.4g} now vs {j.baseline_level:.4g} "
            f"in the baseline, ratio {_ratio_text(c)} at {s.confidence:.0%} confidence; "
            f"tolerance {j.tolerance:.0%}, noise floor {s.noise_floor:.0%}",
            f"  samples: {c.n_candidate} now, {c.n_baseline} in {c.n_sessions} baseline "
            f"session(s); p = {c.p_regression:.3g}"
            + (f", BH-adjusted {c.p_adjusted:.3g} at q = {s.fdr:g}"
               if c.p_adjusted is not None else ""),
        ]
        if c.shift:
            lines.append(f"  canary shift {_pct(math.exp(c.shift))} divided out")
        if sessions:
            changes = stack_changes(sessions[-1].software, self.software, STACK_KEYS)
            lines.append("  stack changes since the baseline: "
                         + ("; ".join(changes) if changes else "none"))
        lines.append("  if the new level is intended, accept it: pytest --tpw --tpw-update "
                     + _quote(j.nodeid))
        return "\n".join(lines)


class BaselinePolicy:
    """How many windows one test records, and the comparison its last look made.

    Fixed rounds (``--tpw-rounds``, marker ``rounds``) or updating: that many windows, then
    one comparison at level alpha. Otherwise, with a baseline: looks at 5, 10, 15, 20
    windows, stopping early only on UNCHANGED or IMPROVED at alpha/K. With no baseline: the
    first look's count, then NO_BASELINE. Implements the meter's ``RoundPolicy``.
    """

    def __init__(self, judge: Judge, test: TestSettings) -> None:
        self.judge = judge
        self.test = test
        self.fixed = test.rounds
        self.params = judge.params(test.tolerance)
        self.comparisons: dict[str, stats.Comparison] = {}

    def more(self, m: Measurement) -> bool:
        n = len(m.samples)
        sessions = [x.values() for x in self.judge.sessions(m.key)]
        target = self._target(bool(sessions))
        if target is not None:
            if n < target:
                return True
            self._final(m, sessions)
            return False
        looks = self.params.looks
        if n not in looks and n < looks[-1]:
            return True
        shift, shift_se = self._shift()
        stop, c = stats.sequential_decision(sessions, m.values(), self.params,
                                            looks.index(n), len(looks),
                                            shift=shift, shift_se=shift_se)
        if stop:
            self.comparisons[m.key] = c
        return not stop

    def verdict(self, key: str) -> Verdict:
        c = self.comparisons.get(key)
        return Verdict.NO_BASELINE if c is None else c.verdict

    def _target(self, has_baseline: bool) -> int | None:
        if self.fixed is not None:
            return self.fixed
        if self.test.writes_baselines:
            return self.params.looks[-1]
        return None if has_baseline else self.params.looks[0]

    def _shift(self) -> tuple[float, float]:
        if self.test.canary:
            return 0.0, 0.0
        return self.judge.shift()

    def _final(self, m: Measurement, sessions: Sequence[Sequence[float]]) -> None:
        if not sessions:
            return
        shift, shift_se = self._shift()
        c = stats.compare(sessions, m.values(), self.params, shift=shift, shift_se=shift_se)
        self.comparisons[m.key] = c


def _pct(ratio: float) -> str:
    return f"{ratio - 1:+.1%}"


def _ratio_text(c: stats.Comparison) -> str:
    if c.ci_low is None or c.ci_high is None:
        return f"{c.ratio:.3f} ({_pct(c.ratio)}, no interval)"
    return f"{c.ratio:.3f} ({_pct(c.ratio)}), interval {c.ci_low:.3f}..{c.ci_high:.3f}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
