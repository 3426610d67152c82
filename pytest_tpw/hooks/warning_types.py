"""Typed warnings, so users can filter them (``-W ignore::pytest_tpw.TpwMeasurementWarning``)."""

from __future__ import annotations

import pytest


class PytestTpwWarning(pytest.PytestWarning):
    """Base class of every warning pytest-tpw emits."""


class TpwMeasurementWarning(PytestTpwWarning):
    """A window may not compare well: throttling, another process, too short a window."""
