"""pytest-tpw: tokens per joule as a tested property of ML code.

``TokensPerJoule`` is the type of the ``tpw`` fixture (for annotations:
``def test_x(tpw: TokensPerJoule)``), ``Result`` that of ``tpw.result``, ``Window`` the
loop form's window, ``Verdict`` the verdict a result carries. They load on first use so that
importing the plugin stays cheap.

PYTEST_DONT_REWRITE: the plugin asserts nothing for its users, and an editable install is
imported past pytest's assertion-rewriting hook, which then warns in nested (pytester) runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Result", "TokensPerJoule", "Verdict", "Window", "__version__"]

if TYPE_CHECKING:
    from pytest_tpw.meter import TokensPerJoule, Window
    from pytest_tpw.samples import Result
    from pytest_tpw.verdict import Verdict

_LAZY = {
    "TokensPerJoule": "pytest_tpw.meter",
    "Window": "pytest_tpw.meter",
    "Result": "pytest_tpw.samples",
    "Verdict": "pytest_tpw.verdict",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_tpw' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
