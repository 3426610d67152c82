"""Typed warnings, so users can filter them (``-W ignore::pytest_tpw.TpwMeasurementWarning``)."""

from __future__ import annotations

import pytest


class PytestTpwWarning(pytest.PytestWarning):
    """Base class of every warning pytest-tpw emits."""


class TpwMeasurementWarning(PytestTpwWarning):
    """A window may not compare well: throttling, another process, too short a window."""


class TpwImplausibleWarning(PytestTpwWarning):
    """A result beyond physical bounds (below idle power, above the devices' maximum, far
    beyond the published tokens per joule of its device class): probably measured wrongly.
    Said before the result is stored; it is stored anyway (docs/sensors.md)."""
