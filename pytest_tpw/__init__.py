"""pytest-tpw: tokens per joule as a tested property of ML code.

``TokensPerJoule`` is the type of the ``tpw`` fixture (for annotations:
``def test_x(tpw: TokensPerJoule)``), ``Result`` that of ``tpw.result``, ``Window`` the
loop form's window. They load on first use so that importing the plugin stays cheap.

PYTEST_DONT_REWRITE: the plugin asserts nothing for its users, and an editable install is
imported past pytest's assertion-rewriting hook, which then warns in nested (pytester) runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Result", "TokensPerJoule", "Window", "__version__"]

if TYPE_CHECKING:
    from pytest_tpw.meter import Meter as TokensPerJoule
    from pytest_tpw.meter import Result, Window


def __getattr__(name: str) -> Any:
    if name in ("TokensPerJoule", "Result", "Window"):
        from pytest_tpw import meter

        return {"TokensPerJoule": meter.Meter, "Result": meter.Result,
                "Window": meter.Window}[name]
    raise AttributeError(f"module 'pytest_tpw' has no attribute {name!r}")
