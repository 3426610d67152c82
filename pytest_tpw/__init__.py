"""pytest-tpw: tokens per joule as a tested property of ML code."""

from __future__ import annotations

__version__ = "0.1.0"
