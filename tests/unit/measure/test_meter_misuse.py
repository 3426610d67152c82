"""Every misuse of the ``tpw`` fixture is refused, measured (``Meter``) and plain (``OffMeter``).

A pull request run without ``--tpw`` must catch the same mistakes as a measured run, so each
test runs in both modes unless it says why not. Nothing here can hang: work that could wait
for itself runs in a thread joined with a timeout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pytest_tpw.errors import MeasurementError
from pytest_tpw.host.locks import DeviceLocks
from pytest_tpw.measure.meter import Meter, OffMeter, TokensPerJoule
from pytest_tpw.testing import FakeClock, FakeSensor, make_meter

NODE = "test_x.py::test_y"
#: Longest a refusal may take before the test calls it a hang (it is immediate).
HANG_S = 30.0


class Tpw(NamedTuple):
    meter: TokensPerJoule
    clock: FakeClock

    def work(self) -> str:
        """One call of work: one fake second."""
        self.clock.advance(1.0)
        return "done"


@pytest.fixture(params=["measured", "plain"])
def tpw(request: pytest.FixtureRequest) -> Tpw:
    clock = FakeClock()
    if request.param == "measured":
        return Tpw(make_meter(FakeSensor(clock), clock=clock, rounds=2, nodeid=NODE), clock)
    return Tpw(OffMeter(NODE), clock)


@pytest.fixture
def measured() -> Tpw:
    clock = FakeClock()
    return Tpw(make_meter(FakeSensor(clock), clock=clock, rounds=2, nodeid=NODE), clock)


def run_bounded(fn: Callable[[], Any]) -> BaseException | None:
    """Run ``fn`` in a thread; the exception it raised (None if it returned). Fails on a hang."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # handed back to the test
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=HANG_S)
    assert not thread.is_alive(), f"still running after {HANG_S} s: it hangs"
    return caught[0] if caught else None


# -- the loop form's window ------------------------------------------------------------------


def test_a_window_entered_twice_is_refused(tpw: Tpw) -> None:
    with pytest.raises(
        MeasurementError, match=re.escape(f"{NODE} (window 0): this window was already entered")
    ):
        for w in tpw.meter.rounds():
            with w:
                tpw.work()
                w.add_tokens(1)
            with w:
                pass


@pytest.mark.parametrize("how", ["add_tokens", "set"])
def test_tokens_before_the_with_block_are_refused(tpw: Tpw, how: str) -> None:
    with pytest.raises(MeasurementError) as info:
        for w in tpw.meter.rounds():
            if how == "add_tokens":
                w.add_tokens(5)
            else:
                w.tokens = 5
    text = str(info.value)
    assert text.startswith(f"{NODE} (window 0): ")
    assert "before `with w:`" in text and "inside the block that does the work" in text


@pytest.mark.parametrize("how", ["add_tokens", "set"])
def test_tokens_after_the_with_block_are_refused(tpw: Tpw, how: str) -> None:
    with pytest.raises(MeasurementError) as info:
        for w in tpw.meter.rounds():
            with w:
                tpw.work()
                w.add_tokens(1)
            if how == "add_tokens":
                w.add_tokens(5)
            else:
                w.tokens = 5
    text = str(info.value)
    assert text.startswith(f"{NODE} (window 0): ")
    assert "after its `with w:` block ended" in text and "fall outside the window" in text


def test_tokens_inside_the_block_are_counted(tpw: Tpw) -> None:
    # the counterpart of the refusals above: inside the block both ways work
    seen: list[int] = []
    for w in tpw.meter.rounds():
        with w:
            tpw.work()
            w.tokens = 3
            w.add_tokens(4)
            seen.append(w.tokens)
    assert seen and set(seen) == {7}
    tpw.meter.check_finished()


def test_a_window_not_used_as_with_is_refused(tpw: Tpw) -> None:
    with pytest.raises(
        MeasurementError,
        match=re.escape(
            f"{NODE} (window 0): each window of tpw.rounds() must be used as `with w:`"
        ),
    ):
        for _ in tpw.meter.rounds():
            tpw.work()


def test_a_window_without_tokens_is_refused(tpw: Tpw) -> None:
    with pytest.raises(
        MeasurementError, match=re.escape(f"{NODE} (window 0): the window produced 0 tokens")
    ):
        for w in tpw.meter.rounds():
            with w:
                tpw.work()


# -- leaving tpw.rounds() early ---------------------------------------------------------------


def test_break_out_of_rounds_is_an_error_at_check_finished(tpw: Tpw) -> None:
    for w in tpw.meter.rounds(name="decode"):
        with w:
            tpw.work()
            w.add_tokens(1)
        break
    with pytest.raises(MeasurementError) as info:
        tpw.meter.check_finished()
    text = str(info.value)
    assert text.startswith(f"{NODE}::decode: ")  # names the measurement
    assert "left before its end" in text and "`break`" in text


def test_a_window_that_raised_is_not_a_loop_left_early(tpw: Tpw) -> None:
    with pytest.raises(ValueError, match="model failed"):
        for w in tpw.meter.rounds(name="decode"):
            with w:
                raise ValueError("model failed")
    tpw.meter.check_finished()  # the work's own error is the one to report
    if isinstance(tpw.meter, Meter):
        (m,) = tpw.meter.measurements
        assert not m.finished and m.samples == []


def test_a_loop_run_out_is_finished(tpw: Tpw) -> None:
    for w in tpw.meter.rounds():
        with w:
            tpw.work()
            w.add_tokens(2)
    tpw.meter.check_finished()


# -- one window at a time ------------------------------------------------------------------


def test_a_call_inside_an_open_loop_window_is_refused_naming_both(measured: Tpw) -> None:
    meter = measured.meter

    def nested() -> None:
        for w in meter.rounds(name="outer"):
            with w:
                measured.work()
                w.add_tokens(1)
                meter(measured.work, tokens=1, name="inner")

    exc = run_bounded(nested)
    assert isinstance(exc, MeasurementError), exc
    text = str(exc)
    assert text.startswith(f"{NODE}::inner: started while a window of {NODE}::outer is open")
    assert "one window at a time" in text
    meter.check_finished()  # the outer loop failed: its error is the one reported


def test_a_loop_inside_an_open_loop_window_is_refused(measured: Tpw) -> None:
    meter = measured.meter

    def nested() -> None:
        for w in meter.rounds(name="outer"):
            with w:
                for v in meter.rounds(name="inner"):
                    with v:
                        v.add_tokens(1)

    exc = run_bounded(nested)
    assert isinstance(exc, MeasurementError), exc
    assert f"{NODE}::inner" in str(exc) and f"{NODE}::outer" in str(exc)


@pytest.mark.skipif(importlib.util.find_spec("fcntl") is None, reason="flock needs fcntl (POSIX)")
def test_nesting_with_a_device_lock_is_refused_at_once_not_a_hang(tmp_path: Path) -> None:
    # with the device lock, a nested window would wait for its own lock: refused before that
    clock = FakeClock()
    meter = make_meter(
        FakeSensor(clock), clock=clock, rounds=2, nodeid=NODE, locks=DeviceLocks(["dev"], tmp_path)
    )

    def nested() -> None:
        for w in meter.rounds(name="outer"):
            with w:
                meter(lambda: clock.advance(1.0), tokens=1, name="inner")

    exc = run_bounded(nested)
    assert isinstance(exc, MeasurementError) and f"{NODE}::outer" in str(exc), exc
    # the outer window was abandoned: its lock is free again for the next window
    again = make_meter(
        FakeSensor(clock), clock=clock, rounds=2, nodeid=NODE, locks=DeviceLocks(["dev"], tmp_path)
    )
    assert run_bounded(lambda: again(lambda: clock.advance(1.0), tokens=1)) is None


def test_two_acalls_under_gather_are_refused_at_once(measured: Tpw) -> None:
    meter = measured.meter

    async def generate() -> str:
        await asyncio.sleep(0)  # yield to the other task while the window is open
        measured.clock.advance(1.0)
        return "out"

    async def both() -> tuple[str, str]:
        return await asyncio.gather(
            meter.acall(generate, tokens=1, name="a"), meter.acall(generate, tokens=1, name="b")
        )

    exc = run_bounded(lambda: asyncio.run(both()))
    assert isinstance(exc, MeasurementError), exc
    assert str(exc).startswith(f"{NODE}::b: started while a window of {NODE}::a is open")


def test_acalls_one_after_the_other_are_fine(tpw: Tpw) -> None:
    async def generate() -> str:
        tpw.clock.advance(1.0)
        return "out"

    async def sequential() -> list[str]:
        return [
            await tpw.meter.acall(generate, tokens=1, name="a"),
            await tpw.meter.acall(generate, tokens=1, name="b"),
        ]

    assert asyncio.run(sequential()) == ["out", "out"]


def test_plain_run_refuses_a_call_inside_a_loop_window() -> None:
    meter = OffMeter(NODE)

    def nested() -> None:
        for w in meter.rounds(name="outer"):
            with w:
                w.add_tokens(1)
                meter(lambda: "x", tokens=1, name="inner")

    exc = run_bounded(nested)
    assert isinstance(exc, MeasurementError), exc


def test_plain_run_refuses_two_acalls_under_gather() -> None:
    meter = OffMeter(NODE)

    async def generate() -> str:
        await asyncio.sleep(0)
        return "out"

    async def both() -> tuple[str, str]:
        return await asyncio.gather(
            meter.acall(generate, tokens=1, name="a"), meter.acall(generate, tokens=1, name="b")
        )

    exc = run_bounded(lambda: asyncio.run(both()))
    assert isinstance(exc, MeasurementError), exc


# -- lazy results from sync work ------------------------------------------------------------


def test_a_generator_returned_by_the_work_is_refused_naming_the_test(tpw: Tpw) -> None:
    def stream() -> Iterator[str]:
        tpw.clock.advance(1.0)
        yield "token"

    with pytest.raises(MeasurementError) as info:
        tpw.meter(stream, tokens=1)
    text = str(info.value)
    assert text.startswith(f"{NODE}: the workload returned a generator")
    assert "nothing was measured" in text


def test_async_work_that_returns_a_generator_is_refused_the_same_way(tpw: Tpw) -> None:
    """One call loop serves tpw(...) and tpw.acall(...): the same checks in both, measured
    or not."""

    async def stream() -> Iterator[str]:
        tpw.clock.advance(1.0)
        return iter(["token"])

    def lazy() -> Iterator[str]:
        yield "token"

    async def returns_a_generator() -> Iterator[str]:
        tpw.clock.advance(1.0)
        return lazy()

    assert asyncio.run(tpw.meter.acall(stream, tokens=1, name="fine")) is not None
    with pytest.raises(MeasurementError) as info:
        asyncio.run(tpw.meter.acall(returns_a_generator, tokens=1, name="lazy"))
    assert str(info.value).startswith(f"{NODE}::lazy: the workload returned a generator")


def test_a_coroutine_returned_by_sync_work_is_refused_naming_the_test(tpw: Tpw) -> None:
    async def complete() -> str:
        return "out"

    def wrapper() -> Any:
        return complete()  # forgot to await: nothing runs

    with pytest.raises(MeasurementError) as info:
        tpw.meter(wrapper, tokens=1, name="chat")
    text = str(info.value)
    assert text.startswith(f"{NODE}::chat: the workload returned a coroutine")
    assert "tpw.acall" in text


def test_a_coroutine_function_in_the_call_form_is_refused(tpw: Tpw) -> None:
    async def complete() -> str:
        return "out"

    with pytest.raises(TypeError, match=re.escape(f"{NODE}: ") + ".*coroutine function.*acall"):
        _ = tpw.meter(complete, tokens=1)


# -- tokens= --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["3", None, 1.5, True], ids=["str", "None", "float", "bool"])
def test_tokens_callable_returning_a_non_integer_is_refused(tpw: Tpw, bad: object) -> None:
    with pytest.raises(MeasurementError) as info:
        tpw.meter(tpw.work, tokens=lambda result: bad)
    text = str(info.value)
    assert text.startswith(f"{NODE}: tokens(result): tokens must be an integer count")
    assert repr(bad) in text


def test_tokens_callable_returning_zero_is_refused(tpw: Tpw) -> None:
    with pytest.raises(MeasurementError) as info:
        tpw.meter(tpw.work, tokens=lambda result: 0)
    text = str(info.value)
    assert text.startswith(NODE) and "0 tokens" in text


@pytest.mark.parametrize("bad", ["3", None, 1.5, True], ids=["str", "None", "float", "bool"])
def test_tokens_non_integer_is_refused_before_any_work(tpw: Tpw, bad: object) -> None:
    with pytest.raises(MeasurementError, match=re.escape(f"{NODE}: tokens must be an integer")):
        tpw.meter(tpw.work, tokens=bad)  # type: ignore[arg-type]
    assert tpw.clock.now == 0.0  # refused before the work ran


@pytest.mark.parametrize("bad", [0, -3])
def test_tokens_int_not_positive_is_refused_before_any_work(tpw: Tpw, bad: int) -> None:
    with pytest.raises(
        MeasurementError, match=re.escape(f"{NODE}: tokens must be positive, got {bad}")
    ):
        tpw.meter(tpw.work, tokens=bad)
    assert tpw.clock.now == 0.0


def test_add_tokens_non_integer_is_refused(tpw: Tpw) -> None:
    with pytest.raises(
        MeasurementError, match=re.escape(f"{NODE} (window 0): tokens must be an integer count")
    ):
        for w in tpw.meter.rounds():
            with w:
                tpw.work()
                w.add_tokens("3")


def test_good_tokens_work_in_both_modes(tpw: Tpw) -> None:
    assert tpw.meter(tpw.work, tokens=4) == "done"
    assert tpw.meter(tpw.work, tokens=lambda r: len(r), name="counted") == "done"
    tpw.meter.check_finished()


# -- names ----------------------------------------------------------------------------------


def test_two_unnamed_call_measurements_are_refused(tpw: Tpw) -> None:
    tpw.meter(tpw.work, tokens=1)
    with pytest.raises(
        MeasurementError, match=re.escape(f"{NODE}: the unnamed measurement was already taken")
    ):
        tpw.meter(tpw.work, tokens=1)


def test_an_unnamed_loop_after_an_unnamed_call_is_refused(tpw: Tpw) -> None:
    tpw.meter(tpw.work, tokens=1)
    with pytest.raises(MeasurementError, match="unnamed measurement was already taken"):
        for w in tpw.meter.rounds():
            with w:
                w.add_tokens(1)


def test_a_name_used_twice_is_refused(tpw: Tpw) -> None:
    tpw.meter(tpw.work, tokens=1, name="prefill")
    with pytest.raises(
        MeasurementError, match=re.escape("measurement 'prefill' was already taken")
    ):
        tpw.meter(tpw.work, tokens=1, name="prefill")
    tpw.meter(tpw.work, tokens=1, name="decode")  # another name is fine


@pytest.mark.parametrize("bad", ["", 3])
def test_a_bad_name_is_refused(tpw: Tpw, bad: object) -> None:
    with pytest.raises(TypeError, match=re.escape(f"{NODE}: name= must be a non-empty string")):
        tpw.meter(tpw.work, tokens=1, name=bad)  # type: ignore[arg-type]
