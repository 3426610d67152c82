"""The plausibility guard: each bound, its slack, and only the bounds that exist."""

from __future__ import annotations

import pytest

from pytest_tpw.run import plausible
from pytest_tpw.run.plausible import (
    DATA_CENTRE_GPU,
    IDLE_SLACK,
    MAX_SLACK,
    Bounds,
    bounds_for,
    check,
    device_class,
    max_watts,
)

H100 = "NVIDIA H100 80GB HBM3"
GPU = Bounds("measured", idle_watts=70.0, max_watts=700.0, device_class=DATA_CENTRE_GPU)


def test_a_result_within_every_bound_is_plausible() -> None:
    assert check("t::a", 450.0, 8.3, GPU) == []
    # at the edges of the slack: still plausible
    assert check("t::a", 70.0 * (1 - IDLE_SLACK) + 0.01, 1.0, GPU) == []
    assert check("t::a", 700.0 * (1 + MAX_SLACK) - 0.01, 1.0, GPU) == []
    assert check("t::a", 450.0, DATA_CENTRE_GPU.ceiling, GPU) == []


def test_below_idle_names_the_test_the_figure_the_bound_and_the_causes() -> None:
    (text,) = check("t.py::test_a", 40.0, 1.0, GPU)
    assert text.startswith("t.py::test_a: implausible: average power 40 W is below")
    assert "idle power 70 W (less 25% slack: 52.5 W)" in text
    assert "not the ones that did the work" in text and "missing" in text
    assert "a warning, not an error" in text


def test_a_double_count_is_above_the_devices_maximum() -> None:
    (text,) = check("t.py::test_a", 4 * 650.0, 2.0, GPU)
    assert "average power 2600 W is above the measured devices' maximum power 700 W" in text
    assert "(plus 25% slack: 875 W)" in text
    assert "double count (MIG instances" in text


def test_padded_tokens_are_beyond_the_device_class_ceiling() -> None:
    (text,) = check("t.py::test_a", 450.0, 50 * 8.3, GPU)
    assert "415 tokens/J is beyond the 200 tokens/J ceiling of a data-centre GPU" in text
    assert "10x the best published figure, 20 tokens/J" in text
    assert "padding" in text and "TpwImplausibleWarning" in text


def test_several_bounds_broken_give_one_sentence_each() -> None:
    assert len(check("t::a", 5000.0, 1000.0, GPU)) == 2


@pytest.mark.parametrize("provenance", ["estimated", "simulated"])
def test_estimated_and_simulated_joules_are_never_checked(provenance: str) -> None:
    bounds = Bounds(provenance, idle_watts=300.0, max_watts=10.0, device_class=DATA_CENTRE_GPU)
    assert check("t::a", 1.0, 1e6, bounds) == []


def test_only_the_bounds_that_exist_are_checked() -> None:
    # a CPU sensor (rapl): an idle reading, no maximum, no device class: a small model's
    # 1000 tokens/J at 5 W over idle is not flagged
    rapl = Bounds("measured", idle_watts=20.0)
    assert check("t::a", 25.0, 1000.0, rapl) == []
    assert check("t::a", 10.0, 1.0, rapl) != []  # below its idle: flagged
    assert check("t::a", 1e6, 1e6, Bounds("measured")) == []


def test_device_classes_are_recognised_by_model_words() -> None:
    assert device_class([H100, H100]) is DATA_CENTRE_GPU
    assert device_class(["NVIDIA A100-SXM4-80GB", "AMD Instinct MI300X"]) is DATA_CENTRE_GPU
    assert device_class(["NVIDIA L40S"]) is DATA_CENTRE_GPU
    assert device_class(["HL-325L", "HL-225"]) is DATA_CENTRE_GPU  # Intel Gaudi 3 and 2
    assert device_class(["Intel(R) Data Center GPU Max 1550"]) is DATA_CENTRE_GPU
    assert device_class(["HL-3250"]) is None  # not a Gaudi module name
    assert device_class(["NVIDIA RTX A4000"]) is None  # "a4000" is not an A40
    assert device_class([H100, "AMD EPYC 16c"]) is None  # every device must be in the class
    assert device_class(["sim"]) is None
    assert device_class([]) is None


def test_the_maximum_needs_every_device() -> None:
    assert max_watts({"devices": [{"max_power_w": 700.0}, {"max_power_w": 700}]}) == 1400.0
    assert max_watts({"devices": [{"max_power_w": 700.0}, {"name": "x"}]}) is None
    assert max_watts({"devices": []}) is None
    assert max_watts({}) is None


def test_ranks_that_sum_their_windows_scale_the_power_bounds() -> None:
    scaled = GPU.scaled(8)
    assert (scaled.idle_watts, scaled.max_watts) == (560.0, 5600.0)
    assert check("t::a", 8 * 650.0, 2.0, scaled) == []
    assert GPU.scaled(1) is GPU


def test_bounds_for_a_session() -> None:
    found = bounds_for("measured", 70.0, {"devices": [{"max_power_w": 700.0}]}, [H100])
    assert found == GPU


def test_every_reference_has_a_source_and_the_ceiling_is_far_beyond_them() -> None:
    for cls in plausible.DEVICE_CLASSES:
        assert cls.references
        assert all(r.source and r.tokens_per_joule > 0 for r in cls.references)
        assert cls.ceiling >= 10 * max(r.tokens_per_joule for r in cls.references)
