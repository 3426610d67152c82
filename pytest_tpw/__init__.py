"""pytest-tpw: tokens per joule as a tested property of ML code.

The names users write, loaded on first use so that importing the plugin stays cheap:

- ``TokensPerJoule``: the type of the ``tpw`` fixture (``def test_x(tpw: TokensPerJoule)``);
  ``Window`` the loop form's window; ``Result`` the type of ``tpw.result``; ``Verdict`` the
  verdict a result carries.
- ``PytestTpwWarning``, ``TpwMeasurementWarning`` and ``TpwImplausibleWarning``: the warnings
  the plugin emits, to filter (``-W ignore::pytest_tpw.TpwMeasurementWarning``).
- ``TpwError`` (and the other exceptions of :mod:`pytest_tpw.errors`).
- ``ServerProcess`` and ``ServerStartError``: a served model's process, outside the
  ``tpw_server`` fixture.

The public modules are :mod:`pytest_tpw.count` (token counters), :mod:`pytest_tpw.testing`
(fakes for sensor authors), :mod:`pytest_tpw.sensors` (the sensor interface) and
:mod:`pytest_tpw.prefill_decode`.

PYTEST_DONT_REWRITE: the plugin asserts nothing for its users, and an editable install is
imported past pytest's assertion-rewriting hook, which then warns in nested (pytester) runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "PytestTpwWarning",
    "Result",
    "ServerProcess",
    "ServerStartError",
    "TokensPerJoule",
    "TpwError",
    "TpwImplausibleWarning",
    "TpwMeasurementWarning",
    "Verdict",
    "Window",
    "__version__",
]

if TYPE_CHECKING:
    from pytest_tpw.errors import TpwError
    from pytest_tpw.hooks.warning_types import (
        PytestTpwWarning,
        TpwImplausibleWarning,
        TpwMeasurementWarning,
    )
    from pytest_tpw.measure.meter import TokensPerJoule, Window
    from pytest_tpw.measure.samples import Result
    from pytest_tpw.serving.process import ServerProcess, ServerStartError
    from pytest_tpw.verdict import Verdict

_LAZY = {
    "TokensPerJoule": "pytest_tpw.measure.meter",
    "Window": "pytest_tpw.measure.meter",
    "Result": "pytest_tpw.measure.samples",
    "Verdict": "pytest_tpw.verdict",
    "TpwError": "pytest_tpw.errors",
    "PytestTpwWarning": "pytest_tpw.hooks.warning_types",
    "TpwMeasurementWarning": "pytest_tpw.hooks.warning_types",
    "TpwImplausibleWarning": "pytest_tpw.hooks.warning_types",
    "ServerProcess": "pytest_tpw.serving.process",
    "ServerStartError": "pytest_tpw.serving.process",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_tpw' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
