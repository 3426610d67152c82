"""Turning judgements into test outcomes, including the ones that wait for the whole session.

A ``REGRESSED`` verdict must fail the test that regressed, but a compared test's verdict is
final only once the whole run is in: it is relative to the run-wide shift of every test, and
Benjamini-Hochberg runs over every comparison. So a compared test is run as usual but its
reports are *held*: nothing about it is logged (terminal, JUnit XML, exit status) until the
run loop has finished every test. Then the judge finishes the run, the held call report is
failed or left passed, and the held reports are logged in order. A test is therefore never
shown passed and flipped later: it is shown once, at the end, with its final outcome. Tests
without a comparison (no baseline) are logged at once, as usual.

The JUnit properties of a test's measurements (``tpw.<field>``) are attached to its
teardown report when that report is logged, so they always carry the final verdict.

This module may import pytest; the decisions themselves live in :mod:`pytest_tpw.judge`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_tpw.judging.judge import Judgement
from pytest_tpw.measure.samples import Result
from pytest_tpw.present.report import SensorInfo, junit_properties

JUDGEMENTS_KEY = pytest.StashKey[dict[str, Judgement]]()
#: A test's finished measurements: (name, summary), attached as JUnit properties.
RESULTS_KEY = pytest.StashKey[list[tuple[str | None, Result]]]()


@dataclass
class Held:
    item: pytest.Item
    reports: Sequence[pytest.TestReport]


class Deferrals:
    """The session's held tests, released once every test has run."""

    def __init__(self, sensor: SensorInfo) -> None:
        self.sensor = sensor
        self.held: list[Held] = []

    def run(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Run one test; log it now, or hold it when a judgement waits for the whole run."""
        # pytest's own protocol without logging; reached through the plugin manager (its
        # "runner" plugin) rather than by importing pytest's private module
        runner: Any = item.config.pluginmanager.get_plugin("runner")
        reports: list[pytest.TestReport] = runner.runtestprotocol(
            item, nextitem=nextitem, log=False
        )
        if pending(item):
            self.held.append(Held(item, reports))
            return
        log(item, reports)

    def release(self) -> None:
        """Log every held test with its final outcome (after the judge finished the run),
        and the warnings its final verdicts carry (why an interval is too wide...)."""
        held, self.held = self.held, []
        for h in held:
            judgements = h.item.stash.get(JUDGEMENTS_KEY, {})
            for report in h.reports:
                if report.when == "call":
                    fail_report(report, judgements.values())
                if report.when == "teardown":
                    attach_properties(h.item, report, self.sensor)
            log(h.item, h.reports)
            path, line, _ = h.item.location
            texts = [w for j in judgements.values() for w in j.warnings]
            record_warnings(h.item.ihook, h.item.nodeid, path, (line or 0) + 1, texts)


def record_warnings(hook: Any, nodeid: str, path: str, line: int, texts: Sequence[str]) -> None:
    """Warnings of a test whose verdicts were decided after it ran: handed to pytest's
    warnings summary as if the test had raised them, attributed to the test."""
    from pytest_tpw.hooks.warning_types import TpwMeasurementWarning

    for text in texts:
        message = warnings.WarningMessage(
            TpwMeasurementWarning(text), TpwMeasurementWarning, path, line
        )
        hook.pytest_warning_recorded.call_historic(  # a historic hook in pytest
            kwargs={
                "warning_message": message,
                "when": "runtest",
                "nodeid": nodeid,
                "location": None,
            }
        )


def pending(item: pytest.Item) -> bool:
    """True while one of the test's verdicts waits for the whole run (run-wide shift, FDR)."""
    return any(j.pending for j in item.stash.get(JUDGEMENTS_KEY, {}).values())


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


def attach_properties(item: pytest.Item, report: pytest.TestReport, sensor: SensorInfo) -> None:
    """Add the test's measurements, with their final verdicts, to its teardown report."""
    judgements = item.stash.get(JUDGEMENTS_KEY, {}).values()
    results: list[tuple[str | None, Result]] = item.stash.get(RESULTS_KEY, [])
    add_properties(report, results, judgements, sensor)


def add_properties(
    report: pytest.TestReport,
    results: Iterable[tuple[str | None, Result]],
    judgements: Iterable[Judgement],
    sensor: SensorInfo,
) -> None:
    """Add measurements, with their judgements' final verdicts, to a teardown report."""
    by_key = {j.key: j for j in judgements}
    for name, result in results:
        j = by_key.get(result.name)
        verdict = j.verdict if j is not None else result.verdict
        report.user_properties.extend(junit_properties(result, name, sensor, verdict))
