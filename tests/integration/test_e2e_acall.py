"""``tpw.acall``: the call form for coroutine functions, driven by ``asyncio.run``."""

from __future__ import annotations

import pytest

ASYNC_TEST = """
import asyncio

calls = []

async def complete(prompt, suffix=""):
    calls.append(prompt)
    await asyncio.sleep(0)
    return prompt + suffix

def test_acall(tpw, request):
    out = asyncio.run(tpw.acall(complete, "abc", suffix="de", tokens=len))
    assert out == "abcde"
    if request.config.getoption("tpw"):
        assert len(calls) >= 1 + 3
        assert tpw.result is not None
        assert tpw.result.n == 3
        assert tpw.result.tokens_per_joule > 0
    else:
        assert calls == ["abc"]
        assert tpw.result is None

def test_acall_int_tokens(tpw):
    out = asyncio.run(tpw.acall(complete, "x", tokens=7, name="fixed"))
    assert out == "x"
"""


def test_acall_measures_with_tpw(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_async=ASYNC_TEST)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*tokens per joule*",
            "test_async.py::test_acall *NO_BASELINE*",
            "test_async.py::test_acall_int_tokens::fixed *NO_BASELINE*",
        ]
    )


def test_acall_runs_once_without_tpw(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_async=ASYNC_TEST)
    result = tpwtester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*tokens per joule*")


def test_acall_exception_propagates(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_async_raise="""
        import asyncio

        async def fail():
            raise LookupError("async work failed")

        def test_raises(tpw):
            asyncio.run(tpw.acall(fail, tokens=1))
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LookupError: async work failed*"])
    result.stdout.no_fnmatch_line("test_async_raise.py::test_raises *")
