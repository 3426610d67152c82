"""The fixtures' bodies that a plain run uses, light on purpose: no statistics, no numpy.

Without ``--tpw`` the ``tpw`` fixture hands out an :class:`~pytest_tpw.measure.meter.OffMeter`
and ``tpw_server`` starts servers no sensor follows; both live here so that a plain run that
uses them imports nothing that measures. The measured side is
:mod:`pytest_tpw.hooks.measuring`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_tpw.hooks.warning_types import TpwMeasurementWarning

if TYPE_CHECKING:
    from pytest_tpw.measure.meter import TokensPerJoule
    from pytest_tpw.sensors.base import Sensor
    from pytest_tpw.serving.servers import ServedModel, Servers


def warn(
    item: pytest.Item,
    texts: Sequence[str],
    category: type[pytest.PytestWarning] = TpwMeasurementWarning,
) -> None:
    """Warnings attributed to the test, not to this file, in the warnings summary."""
    path, line, _ = item.location
    for text in texts:
        warnings.warn_explicit(category(text), None, path, (line or 0) + 1)


def off_meter(request: pytest.FixtureRequest) -> Generator[TokensPerJoule, None, None]:
    """``tpw`` without ``--tpw``: the work runs once; misuse is refused as when measuring."""
    from pytest_tpw.measure.meter import OffMeter

    failed_before = request.session.testsfailed
    off = OffMeter(request.node.nodeid)
    yield off
    if request.session.testsfailed == failed_before:
        off.check_finished()


#: The servers a test started (``tpw_server``), for :class:`ServerDeaths`.
SERVERS_KEY: pytest.StashKey[Servers] = pytest.StashKey()


class ServerDeaths:
    """Registered with the first ``tpw_server`` of a session: a server that died during the
    test fails it, with its exit status and log tail (a test that already failed, on
    "Connection refused" say, gets them as a section of its report)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        servers = item.stash.get(SERVERS_KEY, None)
        if call.when != "call" or servers is None:
            return report
        deaths = servers.deaths()
        if not deaths:
            return report
        servers.deaths_reported = True
        text = "\n\n".join(f"pytest-tpw: {d}" for d in deaths)
        add_section = getattr(report.longrepr, "addsection", None)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        elif callable(add_section):  # a failure's traceback: the death after it
            add_section("tpw server died", text)
        else:
            report.sections.append(("tpw server died", text))
        return report


def served_models(
    request: pytest.FixtureRequest, tmp_path: Path, sensor: Sensor | None
) -> Generator[Callable[..., ServedModel], None, None]:
    """``tpw_server``: servers for one test, followed by ``sensor`` (None: unmeasured),
    stopped at its end whatever happened, their log tails in its report; a server that dies
    during the test fails it (:class:`ServerDeaths`)."""
    from pytest_tpw.serving.servers import Servers

    manager = request.config.pluginmanager
    if not manager.has_plugin("tpw-server-deaths"):
        manager.register(ServerDeaths(), "tpw-server-deaths")
    servers = Servers(sensor, tmp_path)
    request.node.stash[SERVERS_KEY] = servers

    def start(
        *args: Any, gpus: int | None = None, hosts: Sequence[str] | None = None, **kwargs: Any
    ) -> ServedModel:
        if gpus is not None or hosts is not None:
            spans_of(request.node, gpus, hosts)
        return servers.start(*args, **kwargs)

    try:
        yield start
    finally:
        # a death the call's report did not show (it came after the test body): an error
        late = [] if servers.deaths_reported else servers.deaths()
        servers.stop()
        for what, tail in servers.log_tails():
            request.node.add_report_section("teardown", what, tail)
        warn(request.node, servers.warnings)
    if late:
        pytest.fail("\n\n".join(f"pytest-tpw: {d}" for d in late), pytrace=False)


def spans_of(item: pytest.Item, gpus: int | None, hosts: Sequence[str] | None) -> None:
    """``tpw_server(..., gpus=N, hosts=[...])``: what the served deployment spans, checked in
    every window of the test as the marker's ``gpus``/``hosts`` are (nothing to check when
    the run does not measure)."""
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise TypeError(f"tpw_server(gpus=...) must be an integer >= 1, got {gpus!r}")
    if hosts is not None and (
        isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and h for h in hosts)
    ):
        raise TypeError(f"tpw_server(hosts=...) must be a list of host names, got {hosts!r}")
    from pytest_tpw.hooks.measuring import METER_KEY

    meter = item.stash.get(METER_KEY, None)
    if meter is None:
        return
    from pytest_tpw.measure.window import Spans

    before = meter.runner.spans or Spans()
    meter.runner.spans = Spans(
        gpus if gpus is not None else before.gpus,
        tuple(hosts) if hosts is not None else before.hosts,
    )
