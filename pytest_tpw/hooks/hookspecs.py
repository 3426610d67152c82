"""pytest-tpw's own hooks, for plugins that add sensors or environment metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pytest_tpw.sensors import SensorFactory

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_tpw_sensor_factories() -> Mapping[str, SensorFactory]:  # type: ignore[empty-body]
    """Return sensors this plugin provides, as ``{name: factory}``.

    A factory takes :class:`pytest_tpw.sensors.SensorOptions` and returns a
    :class:`pytest_tpw.sensors.Sensor`; users select it with ``--tpw-sensor NAME``.
    Packages can do the same without a conftest through the ``pytest_tpw.sensors``
    entry-point group.
    """


@hookspec
def pytest_tpw_environment(environment: dict[str, Any]) -> None:
    """Add or amend metadata of the run (written to ``--tpw-json`` and baselines)."""
