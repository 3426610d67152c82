"""pytest-xdist: workers measure and send plain data; the controller decides and reports.

A worker records its measurements and judgements as usual and streams each test's results
to the controller with that test's teardown report (a property the controller takes off
again), so a worker killed mid-run loses only the measurement it was taking; at the end of
its session its :class:`~pytest_tpw.session.Worker` role also puts them all into
``workeroutput``. The controller merges both (by measurement, so twice is once), then prints
the one report and alone writes the baselines and ``--tpw-json``.

Budgets are decided on the worker, at once. A comparison is decided on the controller, like
in a run without workers: its verdict is relative to the run-wide shift of every test of
the run, whichever worker measured it, and Benjamini-Hochberg covers them all. So the
controller holds such a test's reports (:class:`HeldWorkerReports`): nothing about it is
logged until every worker has finished; then the judge finishes the run and the held
reports are logged with their final outcome.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from pytest_tpw.hooks.outcomes import add_properties, fail_report, record_warnings
from pytest_tpw.host.pinning import PinningError, check_capacity, visible_devices
from pytest_tpw.run.roles import Worker

if TYPE_CHECKING:
    from pytest_tpw.run.session import TpwSession


def is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process: its session sends its results."""
    return hasattr(config, "workerinput")


def held_worker_reports(config: pytest.Config, tpw_session: TpwSession) -> HeldWorkerReports | None:
    """On the controller of a distributed run: hold the workers' compared tests."""
    dsession = config.pluginmanager.get_plugin("dsession")
    if dsession is None or not tpw_session.role.holds_reports:
        return None
    return HeldWorkerReports(dsession, tpw_session)


def merge_worker_output(tpw_session: TpwSession, node: Any) -> None:
    """Merge the payload a worker left in ``workeroutput`` as its node goes down."""
    payload = getattr(node, "workeroutput", {}).get(Worker.PAYLOAD_KEY)
    if payload:
        tpw_session.merge(payload)


def pin_worker(per_worker: str) -> None:
    """On an xdist worker, before any conftest can initialise CUDA: its own GPUs."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    from pytest_tpw.host.pinning import pin_this_worker

    try:
        pin_this_worker(os.environ, int(per_worker))
    except (PinningError, ValueError) as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None


def check_gpus_per_worker(config: pytest.Config, per_worker: int) -> None:
    """On the controller: refuse more workers than GPU groups before any worker starts."""
    if is_worker(config):
        return
    workers = getattr(config.option, "numprocesses", None)
    if not isinstance(workers, int) or workers <= 0:
        return  # not distributed: every GPU stays visible to the one process
    most = getattr(config.option, "maxprocesses", None)
    if isinstance(most, int) and most > 0:
        workers = min(workers, most)  # xdist starts no more than --maxprocesses
    try:
        check_capacity(visible_devices(os.environ), workers, per_worker)
    except PinningError as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None


#: The controller's calls that log a worker's test, in the order they come.
_LOG_EVENTS = ("worker_logstart", "worker_testreport", "worker_logfinish")

_Event = tuple[str, dict[str, Any]]


class HeldWorkerReports:
    """On the controller: a worker's test is logged once its verdicts are final.

    Wraps the three calls of xdist's ``DSession`` that log a worker's test (its start, each
    report, its finish): the events of one test are gathered until its finish; a test whose
    teardown report brought a pending judgement is held until :meth:`release`, any other is
    logged then and there, in the order it came. Scheduling is untouched: a held test is
    done for xdist, which keeps handing out work.
    """

    def __init__(self, dsession: Any, tpw_session: TpwSession) -> None:
        self.session = tpw_session
        self.hook = dsession.config.hook
        self.original: dict[str, Callable[..., None]] = {}
        for name in _LOG_EVENTS:
            self.original[name] = getattr(dsession, name)
            setattr(dsession, name, partial(self._event, name))
        #: Events of the tests in progress, per (worker, test).
        self.open: dict[tuple[int, str], list[_Event]] = {}
        self.held: list[tuple[str, list[_Event]]] = []

    @property
    def waiting(self) -> int:
        """How many tests are held now."""
        return len(self.held)

    def _event(self, name: str, **kwargs: Any) -> None:
        nodeid = kwargs["rep"].nodeid if name == "worker_testreport" else kwargs["nodeid"]
        where = (id(kwargs.get("node")), nodeid)
        events = self.open.setdefault(where, [])
        events.append((name, kwargs))
        if name == "worker_testreport" and kwargs["rep"].when == "teardown":
            rep = kwargs["rep"]  # its results are merged now: decided with the run
            rep.user_properties = self.session.role.take(rep.user_properties)
        if name != "worker_logfinish":
            return
        del self.open[where]
        pending = self.session.pending(nodeid)
        if pending:
            self.held.append((nodeid, events))
        else:
            self._log(events)
        self._show(nodeid, pending)

    def _show(self, nodeid: str, pending: bool) -> None:
        """The controller's progress: each measurement as its worker finishes it (the
        rounds themselves happen on the worker, out of this terminal's sight)."""
        progress = self.session.progress
        if progress is None:
            return
        for _, result in self.session.results_of(nodeid):
            verdict = f"held for the run's verdict ({self.waiting} so far)" if pending else None
            progress.finish(result.name, result.tokens_per_joule, result.n, verdict)

    def flush(self, nodeid: str) -> None:
        """Log at once what came of a test whose worker died running it."""
        for where in [w for w in self.open if w[1] == nodeid]:
            self._log(self.open.pop(where))

    def release(self) -> None:
        """Log every held test with its final outcome (after the judge finished the run),
        then whatever a dead worker left open."""
        held, self.held = self.held, []
        sensor = self.session.sensor_info()
        for nodeid, events in held:
            judgements = self.session.judgements_of(nodeid)
            for name, kwargs in events:
                report = kwargs.get("rep")
                if name != "worker_testreport" or report is None:
                    continue
                if report.when == "call":
                    fail_report(report, judgements)
                    if report.failed:
                        self.session.failed_tests.add(nodeid)
                elif report.when == "teardown":
                    add_properties(report, self.session.results_of(nodeid), judgements, sensor)
            self._log(events)
            texts = [w for j in judgements for w in j.warnings]
            record_warnings(self.hook, nodeid, nodeid.split("::", 1)[0], 0, texts)
        left, self.open = list(self.open.values()), {}
        for events in left:
            self._log(events)

    def _log(self, events: list[_Event]) -> None:
        for name, kwargs in events:
            self.original[name](**kwargs)
