"""pytest-xdist: workers measure and send plain data; the controller merges and reports.

A worker records its measurements and judgements as usual and streams each test's results
to the controller with that test's teardown report (a property the controller takes off
again), so a worker killed mid-run loses only the measurement it was taking; at the end of
its session its :class:`~pytest_tpw.session.Worker` role also puts them all into
``workeroutput``. The controller merges both (by measurement, so twice is once), then prints the one
report and alone writes the baselines and ``--tpw-json``. Test outcomes (regressions,
budgets) are decided on the worker that ran the test and reach the controller in the test
reports, as any failure does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .pinning import PinningError, check_capacity, visible_devices
from .session import Worker

if TYPE_CHECKING:
    from .session import TpwSession


#: The teardown report property that carries one test's results from a worker.
PAYLOAD_PROPERTY = "pytest_tpw.payload"


def take_streamed(tpw_session: TpwSession, report: pytest.TestReport) -> None:
    """On the controller: merge the results a worker streamed with a test's teardown report,
    and take them off the report (they are not JUnit properties)."""
    kept = []
    for name, value in report.user_properties:
        if name == PAYLOAD_PROPERTY and isinstance(value, dict):
            tpw_session.merge(value)
        else:
            kept.append((name, value))
    report.user_properties = kept


def merge_worker_output(tpw_session: TpwSession, node: Any) -> None:
    """Merge the payload a worker left in ``workeroutput`` as its node goes down."""
    payload = getattr(node, "workeroutput", {}).get(Worker.PAYLOAD_KEY)
    if payload:
        tpw_session.merge(payload)


def check_gpus_per_worker(config: pytest.Config, per_worker: int) -> None:
    """On the controller: refuse more workers than GPU groups before any worker starts."""
    import os

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
