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
from typing import TYPE_CHECKING

import pytest

from pytest_tpw.hooks.warning_types import TpwMeasurementWarning

if TYPE_CHECKING:
    from pytest_tpw.measure.meter import TokensPerJoule
    from pytest_tpw.sensors.base import Sensor
    from pytest_tpw.serving.servers import ServedModel


def warn(item: pytest.Item, texts: Sequence[str]) -> None:
    """Warnings attributed to the test, not to this file, in the warnings summary."""
    path, line, _ = item.location
    for text in texts:
        warnings.warn_explicit(TpwMeasurementWarning(text), None, path, (line or 0) + 1)


def off_meter(request: pytest.FixtureRequest) -> Generator[TokensPerJoule, None, None]:
    """``tpw`` without ``--tpw``: the work runs once; misuse is refused as when measuring."""
    from pytest_tpw.measure.meter import OffMeter

    failed_before = request.session.testsfailed
    off = OffMeter(request.node.nodeid)
    yield off
    if request.session.testsfailed == failed_before:
        off.check_finished()


def served_models(
    request: pytest.FixtureRequest, tmp_path: Path, sensor: Sensor | None
) -> Generator[Callable[..., ServedModel], None, None]:
    """``tpw_server``: servers for one test, followed by ``sensor`` (None: unmeasured),
    stopped at its end whatever happened, their log tails in its report."""
    from pytest_tpw.serving.servers import Servers

    servers = Servers(sensor, tmp_path)
    try:
        yield servers.start
    finally:
        servers.stop()
        for what, tail in servers.log_tails():
            request.node.add_report_section("teardown", what, tail)
        warn(request.node, servers.warnings)
