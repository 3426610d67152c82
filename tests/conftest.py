"""Shared fixtures: ``tpwtester`` runs pytest-in-pytest with the ``sim`` sensor, fast."""

from __future__ import annotations

import pytest

SIM_INI = """
[pytest]
tpw_sensor = sim
tpw_max_delay = 0
tpw_sim_noise = 0.01
tpw_warmup = 1
tpw_idle_power = false
"""


@pytest.fixture(autouse=True)
def _private_lock_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own device-lock folder: tests running at the same time on one
    host (two checkouts, a developer and CI) must not wait on each other's sim device.
    Tests of the locks themselves share a folder on purpose, inside their own tmp_path."""
    monkeypatch.setenv("PYTEST_TPW_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


@pytest.fixture
def tpwtester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A ``pytester`` whose inner runs use the ``sim`` sensor without start delays.

    Tests add their own test files with ``makepyfile`` and run ``runpytest("--tpw")``.
    The sim sensor's own minimum window (10 ms) keeps each measurement well under a second.
    """
    pytester.makeini(SIM_INI)
    return pytester
