"""The plugin's exceptions and warnings, in one place so users can catch and filter them."""

from __future__ import annotations


class TpwError(Exception):
    """Base class of every error pytest-tpw raises."""


class SensorUnavailable(TpwError):
    """A sensor cannot work on this machine; the message says why and how to fix it."""


class SensorError(TpwError):
    """A sensor failed in the middle of a measurement (NVML error, counter reset, ...)."""


class MeasurementError(TpwError):
    """A window cannot give a valid sample: zero tokens, zero or negative joules, bad tokens."""


class MarkerError(TpwError, ValueError):
    """A ``@pytest.mark.tpw(...)`` argument is unknown or ill-typed; names test and argument."""


class SettingError(TpwError, ValueError):
    """A flag or ini value cannot be parsed; the message names where it came from."""
