"""Deciding verdicts: the statistics, the two-level suite model, the judge of a run."""
