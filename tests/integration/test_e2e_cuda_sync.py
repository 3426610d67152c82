"""CUDA synchronisation around windows, with a fake ``torch`` (no GPU, no real torch needed)."""

from __future__ import annotations

import sys
import types

import pytest

from pytest_tpw.measure.window import cuda_sync


def fake_torch(initialized: bool, device_count: int = 2) -> tuple[types.ModuleType, list[int]]:
    synced: list[int] = []
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_initialized=lambda: initialized,
        device_count=lambda: device_count,
        synchronize=synced.append,
    )
    return torch, synced


def test_syncs_each_listed_device(monkeypatch: pytest.MonkeyPatch) -> None:
    torch, synced = fake_torch(initialized=True, device_count=4)
    monkeypatch.setitem(sys.modules, "torch", torch)
    cuda_sync((0, 2))
    assert synced == [0, 2]


def test_syncs_every_visible_device_when_none_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    torch, synced = fake_torch(initialized=True, device_count=2)
    monkeypatch.setitem(sys.modules, "torch", torch)
    cuda_sync(None)
    assert synced == [0, 1]


def test_nothing_when_cuda_is_not_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    torch, synced = fake_torch(initialized=False)
    monkeypatch.setitem(sys.modules, "torch", torch)
    cuda_sync((0,))
    cuda_sync(None)
    assert synced == []


def test_nothing_and_no_import_when_torch_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    cuda_sync((0,))
    cuda_sync(None)
    assert "torch" not in sys.modules


def test_nothing_when_torch_has_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    cuda_sync((0,))


#: Inner conftest: a fake torch with initialised CUDA that logs each synchronize(i).
FAKE_TORCH_CONFTEST = """
import sys
import types

import pytest

EVENTS = []


@pytest.fixture(autouse=True)
def fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        device_count=lambda: 2,
        synchronize=lambda i: EVENTS.append(f"sync{i}"),
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    EVENTS.clear()
    return EVENTS
"""


def test_sync_before_and_after_every_window(tpwtester: pytest.Pytester) -> None:
    tpwtester.makeconftest(FAKE_TORCH_CONFTEST)
    tpwtester.makepyfile(
        test_sync="""
        import time

        def test_loop(tpw, fake_torch):
            windows = 0
            for w in tpw.rounds():
                with w:
                    fake_torch.append("work")
                    time.sleep(0.011)
                    w.add_tokens(1)
                windows += 1
            assert windows == 1 + 3
            assert fake_torch == ["sync1", "work", "sync1"] * windows

        def test_call(tpw, fake_torch):
            tpw(lambda: None, tokens=1)
            assert fake_torch == ["sync1"] * 2 * (1 + 3)
        """
    )
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-devices", "1")
    result.assert_outcomes(passed=2)


def test_no_sync_without_tpw(tpwtester: pytest.Pytester) -> None:
    tpwtester.makeconftest(FAKE_TORCH_CONFTEST)
    tpwtester.makepyfile(
        test_nosync="""
        def test_call(tpw, fake_torch):
            tpw(lambda: None, tokens=1)
            for w in tpw.rounds(name="loop"):
                with w:
                    w.add_tokens(1)
            assert fake_torch == []
        """
    )
    tpwtester.runpytest().assert_outcomes(passed=1)
