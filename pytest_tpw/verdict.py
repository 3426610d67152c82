"""The verdict: what one measurement's comparison with its baseline says, as one type.

The statistics produce it, the judge decides the test's outcome from it, and the report,
the JSON document, JUnit properties and ``tpw.result`` show it. It is a ``str`` enum, so a
verdict compares equal to its name (``result.verdict == "REGRESSED"``) and serialises as it.
Light on purpose: no numpy, so the fixture and the report can use it cheaply.
"""

from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """Per-measurement verdicts (higher tokens per joule is better)."""

    REGRESSED = "REGRESSED"
    MINOR_REGRESSION = "MINOR_REGRESSION"
    UNCHANGED = "UNCHANGED"
    IMPROVED = "IMPROVED"
    INCONCLUSIVE = "INCONCLUSIVE"
    NO_BASELINE = "NO_BASELINE"
    #: Measured under another load than its baseline (``tpw.load``): not judged.
    INCOMPARABLE = "INCOMPARABLE"

    def __str__(self) -> str:
        return self.value
