"""GPU pinning for pytest-xdist workers: which devices exist, and which each worker gets."""

from __future__ import annotations

import pytest

from pytest_tpw.errors import TpwError
from pytest_tpw.host.pinning import (
    PinningError,
    check_capacity,
    pin_this_worker,
    visible_devices,
    worker_devices,
    worker_index,
)


def no_count() -> int:
    raise AssertionError("NVML must not be asked when CUDA_VISIBLE_DEVICES is set")


# -- visible_devices ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0,1,2,3", ["0", "1", "2", "3"]),
        ("3,1", ["3", "1"]),  # kept as written, in the user's order
        (" 0 , 1 ,2 ", ["0", "1", "2"]),
        ("0,,1,", ["0", "1"]),
        (
            "GPU-1b2c3d4e-0000-1111-2222-333344445555,GPU-aa",
            ["GPU-1b2c3d4e-0000-1111-2222-333344445555", "GPU-aa"],
        ),
        ("MIG-5c1b2a3d-aaaa-bbbb-cccc-ddddeeeeffff", ["MIG-5c1b2a3d-aaaa-bbbb-cccc-ddddeeeeffff"]),
        ("", []),  # set but empty: CUDA sees no GPU at all
        (" , ", []),
    ],
)
def test_visible_devices_from_cuda_visible_devices(raw: str, expected: list[str]) -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": raw}, no_count) == expected


def test_visible_devices_without_the_variable_asks_the_count() -> None:
    assert visible_devices({}, lambda: 4) == ["0", "1", "2", "3"]
    assert visible_devices({"OTHER": "x"}, lambda: 0) == []


def test_visible_devices_count_failure_is_a_pinning_error() -> None:
    def broken() -> int:
        raise PinningError("cannot count the GPUs through NVML (no driver)")

    with pytest.raises(PinningError, match="cannot count the GPUs"):
        visible_devices({}, broken)


# -- worker_index -------------------------------------------------------------------------


@pytest.mark.parametrize(("worker", "index"), [("gw0", 0), ("gw3", 3), ("gw12", 12)])
def test_worker_index(worker: str, index: int) -> None:
    assert worker_index(worker) == index


@pytest.mark.parametrize("worker", ["master", "gw", "gwx", "gw-1", "gw1 ", "3", "xgw1", ""])
def test_worker_index_rejects_unexpected_ids(worker: str) -> None:
    with pytest.raises(PinningError, match=r"unexpected xdist worker id .*expected gw<N>"):
        worker_index(worker)


def test_pinning_error_is_a_tpw_error() -> None:
    assert issubclass(PinningError, TpwError)


# -- worker_devices and capacity ----------------------------------------------------------

FOUR = ["0", "1", "2", "3"]


def test_two_per_worker_of_four_gpus() -> None:
    assert worker_devices(FOUR, 0, 2, 2) == ["0", "1"]
    assert worker_devices(FOUR, 1, 2, 2) == ["2", "3"]


def test_one_per_worker_and_leftovers_stay_unused() -> None:
    assert [worker_devices(FOUR, i, 3, 1) for i in range(3)] == [["0"], ["1"], ["2"]]


def test_worker_groups_never_overlap_and_keep_uuids() -> None:
    uuids = [f"GPU-{i}aaa" for i in range(6)]
    groups = [worker_devices(uuids, i, 3, 2) for i in range(3)]
    assert groups == [uuids[0:2], uuids[2:4], uuids[4:6]]
    flat = [d for g in groups for d in g]
    assert len(flat) == len(set(flat)) == 6


def test_too_many_workers_names_the_counts_and_suggests_n() -> None:
    with pytest.raises(PinningError) as excinfo:
        worker_devices(FOUR, 0, 3, 2)
    text = str(excinfo.value)
    assert "--tpw-gpus-per-worker 2" in text
    assert "3 workers" in text
    assert "needs 6 GPUs" in text
    assert "4 are visible" in text
    assert "0,1,2,3" in text
    assert "-n 2" in text  # 4 GPUs // 2 per worker


def test_capacity_with_no_gpus_says_none() -> None:
    with pytest.raises(PinningError, match=r"0 are visible \(none\).*-n 1"):
        check_capacity([], 2, 1)


def test_capacity_exactly_full_is_fine() -> None:
    check_capacity(FOUR, 4, 1)
    check_capacity(FOUR, 2, 2)
    check_capacity(FOUR, 1, 4)


# -- pin_this_worker ----------------------------------------------------------------------


def test_pin_this_worker_sets_cuda_visible_devices() -> None:
    env = {
        "PYTEST_XDIST_WORKER": "gw1",
        "PYTEST_XDIST_WORKER_COUNT": "2",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    }
    assert pin_this_worker(env, 2, no_count) == "2,3"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_pin_this_worker_counts_gpus_when_the_variable_is_unset() -> None:
    env = {"PYTEST_XDIST_WORKER": "gw0", "PYTEST_XDIST_WORKER_COUNT": "2"}
    assert pin_this_worker(env, 1, lambda: 2) == "0"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"


def test_pin_this_worker_keeps_uuids() -> None:
    env = {
        "PYTEST_XDIST_WORKER": "gw1",
        "PYTEST_XDIST_WORKER_COUNT": "2",
        "CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b",
    }
    assert pin_this_worker(env, 1, no_count) == "GPU-b"


def test_pin_this_worker_without_xdist_does_nothing() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert pin_this_worker(env, 1, no_count) is None
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    empty: dict[str, str] = {}
    assert pin_this_worker(empty, 1, no_count) is None
    assert empty == {}


def test_pin_this_worker_with_too_many_workers_raises_and_leaves_env() -> None:
    env = {
        "PYTEST_XDIST_WORKER": "gw2",
        "PYTEST_XDIST_WORKER_COUNT": "3",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }
    with pytest.raises(PinningError, match=r"3 workers.*2 are visible"):
        pin_this_worker(env, 1, no_count)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_pin_this_worker_bad_worker_id() -> None:
    env = {"PYTEST_XDIST_WORKER": "controller", "CUDA_VISIBLE_DEVICES": "0,1"}
    with pytest.raises(PinningError, match="unexpected xdist worker id 'controller'"):
        pin_this_worker(env, 1, no_count)
