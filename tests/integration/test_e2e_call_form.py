"""The call form: ``out = tpw(fn, *args, tokens=..., name=None, **kwargs)`` with ``--tpw``."""

from __future__ import annotations

import json
from typing import Any

import pytest

ROUNDS = ("--tpw", "--tpw-rounds", "3")


def _load(pytester: pytest.Pytester, name: str = "out.json") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((pytester.path / name).read_text(encoding="utf-8"))
    return doc


def test_returns_last_result_after_warmup_and_rounds(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_call="""
        calls = []

        def work(step, scale=1):
            calls.append(step)
            return len(calls) * scale

        def test_call(tpw):
            out = tpw(work, 1, scale=10, tokens=2)
            assert out == len(calls) * 10  # the result of the last call
            assert len(calls) >= 1 + 3     # warm-up + rounds, at least one call each
            assert set(calls) == {1}
            assert tpw.result is not None and tpw.result.n == 3
        """
    )
    result = tpwtester.runpytest(*ROUNDS)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("flags", "min_window"), [((), 0.01), (("--tpw-min-window", "0.05"), 0.05)]
)
def test_short_calls_are_repeated_inside_one_window(
    tpwtester: pytest.Pytester, flags: tuple[str, ...], min_window: float
) -> None:
    tpwtester.makepyfile(
        test_calib="""
        def test_tiny(tpw):
            tpw(lambda: None, tokens=1)
        """
    )
    result = tpwtester.runpytest(*ROUNDS, "--tpw-json", "out.json", *flags)
    result.assert_outcomes(passed=1)
    samples = _load(tpwtester)["measurements"]["test_calib.py::test_tiny"]["samples"]
    assert len(samples) == 3
    for s in samples:
        assert s["calls"] > 1, s
        assert s["seconds"] >= min_window, s
        assert s["tokens"] == s["calls"]


def test_tokens_as_int_and_as_callable(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_tokens="""
        def test_int(tpw):
            tpw(lambda: "out", tokens=7)

        def test_callable(tpw):
            seen = []
            def count(result):
                seen.append(result)
                return len(result)
            tpw(lambda: [0, 0, 0], tokens=count)
            assert seen and all(r == [0, 0, 0] for r in seen)
        """
    )
    result = tpwtester.runpytest(*ROUNDS, "--tpw-json", "out.json")
    result.assert_outcomes(passed=2)
    measurements = _load(tpwtester)["measurements"]
    for nodeid, per_call in (("test_tokens.py::test_int", 7), ("test_tokens.py::test_callable", 3)):
        samples = measurements[nodeid]["samples"]
        assert len(samples) == 3
        for s in samples:
            assert s["tokens"] == s["calls"] * per_call, (nodeid, s)


def test_named_measurements_are_reported_separately(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_named="""
        def test_two(tpw):
            tpw(lambda: 1, tokens=1, name="prefill")
            tpw(lambda: 2, tokens=2, name="decode")
            tpw(lambda: 3, tokens=3)
        """
    )
    result = tpwtester.runpytest(*ROUNDS, "--tpw-json", "out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*tokens per joule*",
            "test_named.py::test_two::prefill *NO_BASELINE*",
            "test_named.py::test_two::decode *NO_BASELINE*",
            "test_named.py::test_two *NO_BASELINE*",
            "total: * 3 measurement(s)",
        ]
    )
    measurements = _load(tpwtester)["measurements"]
    assert set(measurements) == {
        "test_named.py::test_two::prefill",
        "test_named.py::test_two::decode",
        "test_named.py::test_two",
    }
    assert measurements["test_named.py::test_two::decode"]["name"] == "decode"


def test_reusing_a_name_is_an_error(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_reuse="""
        def test_same_name(tpw):
            tpw(lambda: 1, tokens=1, name="gen")
            tpw(lambda: 1, tokens=1, name="gen")

        def test_unnamed_twice(tpw):
            tpw(lambda: 1, tokens=1)
            tpw(lambda: 1, tokens=1)
        """
    )
    result = tpwtester.runpytest(*ROUNDS)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_reuse.py::test_same_name: measurement 'gen' was already taken*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*test_reuse.py::test_unnamed_twice: the unnamed measurement was already taken*",
        ]
    )


BAD_TOKENS = {
    "test_zero": "0",
    "test_negative": "-1",
    "test_bool": "True",
    "test_string": "'3'",
    "test_callable_float": "lambda r: 2.5",
}


def test_bad_tokens_fail_naming_the_test(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_badtok="\n".join(
            f"def {name}(tpw):\n    tpw(lambda: 'out', tokens={spec})\n"
            for name, spec in BAD_TOKENS.items()
        )
    )
    result = tpwtester.runpytest(*ROUNDS)
    result.assert_outcomes(failed=len(BAD_TOKENS))
    result.stdout.fnmatch_lines(["*test_badtok.py::test_zero*tokens must be positive, got 0*"])
    result.stdout.fnmatch_lines(["*test_badtok.py::test_negative*tokens must be positive, got -1*"])
    result.stdout.fnmatch_lines(
        ["*test_badtok.py::test_bool*tokens must be an integer count, got True*"]
    )
    result.stdout.fnmatch_lines(
        ["*test_badtok.py::test_string*tokens must be an integer count*got '3'*"]
    )
    result.stdout.fnmatch_lines(
        ["*test_badtok.py::test_callable_float*tokens must be an integer count*got 2.5*"]
    )
    result.stdout.no_fnmatch_line("test_badtok.py::* *NO_BASELINE*")


def test_zero_tokens_from_the_callable_fail_naming_the_test(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_zerotok="""
        def test_nothing_generated(tpw):
            tpw(lambda: [], tokens=len)
        """
    )
    result = tpwtester.runpytest(*ROUNDS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_zerotok.py::test_nothing_generated*0 tokens*"])


@pytest.mark.parametrize("flags", [ROUNDS, ()], ids=["tpw", "off"])
def test_coroutine_function_asks_for_acall(
    tpwtester: pytest.Pytester, flags: tuple[str, ...]
) -> None:
    tpwtester.makepyfile(
        test_coro="""
        async def complete():
            return "hi"

        def test_wrong_form(tpw):
            tpw(complete, tokens=1)
        """
    )
    result = tpwtester.runpytest(*flags)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*test_coro.py::test_wrong_form*coroutine function*use `await tpw.acall(...)`*"]
    )


def test_exception_from_fn_propagates_and_is_not_reported(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_fail="""
        import time

        calls = []

        def flaky():
            # 20 ms is longer than the sim sensor's 10 ms minimum: one call per window, so
            # the third call falls in the second recorded window, mid-measurement
            time.sleep(0.02)
            calls.append(1)
            if len(calls) == 3:
                raise ValueError("engine crashed on call 3")
            return "ok"

        def test_crashes(tpw):
            tpw(flaky, tokens=1)

        def test_after(tpw):
            assert tpw(lambda: "fine", tokens=1) == "fine"
        """
    )
    result = tpwtester.runpytest(*ROUNDS, "--tpw-json", "out.json")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*ValueError: engine crashed on call 3*"])
    result.stdout.no_fnmatch_line("test_fail.py::test_crashes *")
    result.stdout.fnmatch_lines(["test_fail.py::test_after *NO_BASELINE*"])
    assert set(_load(tpwtester)["measurements"]) == {"test_fail.py::test_after"}
