"""Isolation for the end-to-end tests: inner runs must not touch the CI's step summary."""

from __future__ import annotations

import contextlib

import pytest

# In-process ``runpytest`` removes the modules an inner run imported once it ends; numpy and
# scipy refuse a second import in one process ("cannot load module more than once per
# process"). Importing the statistics module here keeps them loaded across inner runs.
import pytest_tpw.stats  # noqa: F401

# pytest_tpw.stats loads scipy.stats on first use: load it here, with the rest
with contextlib.suppress(ImportError):
    import scipy.stats  # noqa: F401

# The same snapshot makes hypothesis's pytest plugin re-import (and assertion-rewrite)
# hypothesis in every inner run's terminal summary, about a second each; keep it loaded.
with contextlib.suppress(ImportError):
    import hypothesis  # noqa: F401


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """An inner ``--tpw`` run appends to ``$GITHUB_STEP_SUMMARY``: keep the real one clean."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
