"""Turning judgements into test outcomes, including the ones that wait for the whole session.

A ``REGRESSED`` verdict must fail the test that regressed, but it is final only after
Benjamini-Hochberg over every comparison of the session (STATS.md step 6). So a test whose
verdict could still change is run as usual but its reports are *held*: nothing about it is
logged (terminal, JUnit XML, exit status) until the run loop has finished every test. Then
FDR is applied, the held call report is failed or left passed, and the held reports are
logged in order. A test is therefore never shown passed and flipped later: it is shown once,
at the end, with its final outcome. Tests that cannot be affected (no baseline, clearly
fine, budgets, test failures) are logged at once, as usual.

This module may import pytest; the decisions themselves live in :mod:`pytest_tpw.judge`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
from _pytest.runner import runtestprotocol

from pytest_tpw.judge import Judgement

JUDGEMENTS_KEY = pytest.StashKey[dict[str, Judgement]]()


@dataclass
class Held:
    item: pytest.Item
    reports: Sequence[pytest.TestReport]


class Deferrals:
    """The session's held tests, released once every test has run."""

    def __init__(self) -> None:
        self.held: list[Held] = []

    def run(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Run one test; log it now, or hold it when a judgement waits for FDR."""
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        judgements = item.stash.get(JUDGEMENTS_KEY, {})
        if any(j.pending_fdr for j in judgements.values()):
            self.held.append(Held(item, reports))
        else:
            log(item, reports)

    def release(self) -> None:
        """Log every held test with its final outcome (after the judge applied FDR)."""
        held, self.held = self.held, []
        for h in held:
            judgements = h.item.stash.get(JUDGEMENTS_KEY, {})
            for report in h.reports:
                if report.when == "call":
                    fail_report(report, judgements.values())
                if report.when == "teardown":
                    refresh_verdicts(report, judgements.values())
            log(h.item, h.reports)


def log(item: pytest.Item, reports: Sequence[pytest.TestReport]) -> None:
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def fail_report(report: pytest.TestReport, judgements: Iterable[Judgement]) -> None:
    """Fail a passed call report with the judgements' failure messages, if any."""
    failures = [f for j in judgements for f in j.failures]
    if not failures or not report.passed:
        return
    report.outcome = "failed"
    # the first line is what `-ra` and the short test summary show
    report.longrepr = "pytest-tpw: " + "\n\npytest-tpw: ".join(failures)


def refresh_verdicts(report: pytest.TestReport, judgements: Iterable[Judgement]) -> None:
    """Make the ``tpw*.verdict`` JUnit properties say the final verdict."""
    final = {j.key: j.verdict for j in judgements}
    props = list(report.user_properties)
    measurement = None
    for i, (name, value) in enumerate(props):
        if name.endswith(".measurement"):
            measurement = value
        elif name.endswith(".verdict") and measurement in final:
            props[i] = (name, final[measurement])
    report.user_properties = props
