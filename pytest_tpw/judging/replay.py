"""A run judged again, offline, by the judge and the engine a run uses.

``pytest-tpw compare`` calls :func:`replay` with stored sessions (a baseline file, or a
results file taken as one session of each test) and a run's measurements. Each measurement
goes through the same steps as in the plugin, in the order the run took them: its policy's
look at the windows it recorded, relative to the run-wide shift of the tests before it; then
:meth:`Judge.finish` gives the run-wide shift of the tests both sides share, each test's
final verdict with the pooled session spread, and Benjamini-Hochberg. Given the baseline file
a run read, the settings it ran with and its results file, the verdicts are the ones the run
printed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_tpw.config.settings import MarkerArgs, Settings
from pytest_tpw.judging.judge import Judge, suspects
from pytest_tpw.measure.samples import Measurement
from pytest_tpw.store.baseline import BaselineFile


@dataclass(frozen=True)
class Candidate:
    """One measurement of the run and its test's own settings, as a results file records
    them (None: the session's)."""

    measurement: Measurement
    tolerance: float | None = None
    rounds: int | None = None
    canary: bool = False


def replay(
    stored: BaselineFile | None,
    hardware_key: str,
    candidates: Sequence[Candidate],
    settings: Settings,
    software: Mapping[str, Any],
    focus: Sequence[str] | None = None,
    edge_error_s: float = 0.0,
) -> Judge:
    """Judge ``candidates`` (in run order) against ``stored`` as a run would; returns the
    finished judge (its ``judgements`` and ``run_wide``). ``focus``: the stored
    measurements the run compared and learned its prior from (None: all of ``stored``);
    ``edge_error_s``: the run's sensor's edge error (its instrument bound)."""
    judge = Judge(settings, stored, hardware_key, software=software, edge_error_s=edge_error_s)
    if focus is not None:
        judge.focus(focus)
    taken = []
    for c in candidates:
        m = c.measurement
        marker = MarkerArgs(tolerance=c.tolerance, rounds=c.rounds, canary=c.canary)
        test = settings.for_test(marker)
        policy = judge.policy(test)
        if judge.prior is not None and judge.has_stored(m.key) and judge.incomparable(m) is None:
            policy.look(m)  # the last look the run took, at the windows it recorded
        result = m.summarize(settings.confidence, policy.verdict(m.key))
        judge.judge(m, result, test, policy.comparisons.get(m.key))
        taken.append(m)
    judge.finish(suspects(taken))
    return judge


def prior_note(judge: Judge, side: str = "A") -> str | None:
    """What the verdicts assume rather than measure, when the stored side has too few
    sessions to measure how tests move between sessions and runs; None when it has them."""
    prior = judge.prior
    if prior is None:
        return None
    spread = (
        f"how far a test's level moves between sessions (SD {prior.sigma_b:.2%}) and whole "
        f"runs move (SD {prior.run_sd:.2%})"
    )
    if prior.sigma_b_source == "prior":
        return (
            f"{side} has one session of each test: {spread} are the engine's priors, not "
            f"measured. Record more sessions with pytest --tpw --tpw-record to measure them"
        )
    if prior.sigma_b_source.endswith("prior"):
        return (
            f"{side} has few sessions: {spread} are measured from them and shrunk toward the "
            "engine's priors"
        )
    return None
