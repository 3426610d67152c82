"""Shared fixtures: ``tpwtester`` runs pytest-in-pytest with the ``sim`` sensor, fast."""

from __future__ import annotations

import pytest

SIM_INI = """
[pytest]
tpw_sensor = sim
tpw_max_delay = 0
tpw_sim_noise = 0.01
tpw_warmup = 1
"""


@pytest.fixture
def tpwtester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A ``pytester`` whose inner runs use the ``sim`` sensor without start delays.

    Tests add their own test files with ``makepyfile`` and run ``runpytest("--tpw")``.
    The sim sensor's own minimum window (10 ms) keeps each measurement well under a second.
    """
    pytester.makeini(SIM_INI)
    return pytester
