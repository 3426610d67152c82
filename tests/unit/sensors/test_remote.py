"""The remote sensors' shared parts: the exposition format, which GPU a series is (both label
spellings, MIG instances), selection by label, interpolation of raw samples with resets, and
the error bound's refusal."""

from __future__ import annotations

import pytest

from pytest_tpw.errors import SensorUnavailable
from pytest_tpw.sensors import remote
from pytest_tpw.sensors.prometheus import counter_at
from tests.fakes.dcgm_exporter import Exporter, FakeGpu

M = remote.ENERGY_METRIC


def test_the_exposition_format_is_read_with_its_escapes_and_comments() -> None:
    text = (
        f"# HELP {M} energy\n# TYPE {M} counter\n"
        f'{M}{{gpu="0",UUID="GPU-a",modelName="NVIDIA \\"H100\\"",Hostname="n1"}} 1.5e+06\n'
        f'{M}{{gpu="1",UUID="GPU-b"}} 200 1700000000000\n'  # a timestamp is allowed
        f'{M}_other{{UUID="GPU-c"}} 5\n'  # another metric sharing the prefix
        f'DCGM_FI_DEV_POWER_USAGE{{UUID="GPU-a"}} 300\n'
        f'{M}{{UUID="GPU-d"}} NaN\n'
        f"{M} 7\n"  # no labels
    )
    samples = remote.parse_exposition(text)
    assert samples == [
        ({"gpu": "0", "UUID": "GPU-a", "modelName": 'NVIDIA "H100"', "Hostname": "n1"}, 1.5e6),
        ({"gpu": "1", "UUID": "GPU-b"}, 200.0),
        ({}, 7.0),
    ]


def test_each_gpu_once_under_either_label_spelling() -> None:
    old = Exporter([FakeGpu("GPU-a", 100.0), FakeGpu("GPU-b", 50.0, 1, mig=4)], hostname="n1")
    new = Exporter(
        [FakeGpu("GPU-c", 10.0, pod="vllm-0")], hostname="n2", host_label="hostname",
        uuid_label="uuid",
    )  # fmt: skip
    bare = Exporter([FakeGpu("GPU-d", 10.0)], host_label=None)
    samples = [
        *remote.parse_exposition(old.exposition()),
        *remote.parse_exposition(new.exposition()),
        *remote.parse_exposition(bare.exposition()),
    ]
    assert len(samples) == 1 + 4 + 1 + 1  # the MIG GPU has four series
    gpus = remote.per_gpu(samples, "10.0.0.9:9400", {})
    assert sorted((g.host, g.uuid) for g in gpus) == [
        ("10.0.0.9:9400", "GPU-d"),  # no host label: the exporter's address
        ("n1", "GPU-a"),
        ("n1", "GPU-b"),
        ("n2", "GPU-c"),
    ]
    assert {g.model for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    pick = remote.parse_select(["hostname=n1,n2", "uuid=GPU-a,GPU-c"])
    assert sorted(g.uuid for g in remote.per_gpu(samples, "x", pick)) == ["GPU-a", "GPU-c"]
    by_pod = remote.per_gpu(samples, "x", remote.parse_select(["pod=vllm-0"]))
    assert [g.uuid for g in by_pod] == ["GPU-c"]


def test_a_bad_selection_is_refused_naming_it() -> None:
    with pytest.raises(SensorUnavailable, match=r"--tpw-sensor-select 'hostname': write"):
        remote.parse_select(["hostname"])


def test_raw_samples_are_interpolated_and_resets_corrected() -> None:
    series = [(0.0, 100.0), (1.0, 200.0), (2.0, 300.0)]
    assert counter_at(series, 0.5) == 150.0
    assert counter_at(series, 2.0) == 300.0
    assert counter_at(series, -0.1) is None and counter_at(series, 2.1) is None
    reset = [(0.0, 1000.0), (1.0, 1100.0), (2.0, 50.0), (3.0, 150.0)]  # restarted near 2 s
    end, start = counter_at(reset, 3.0), counter_at(reset, 0.0)
    assert end is not None and start is not None
    assert end - start == pytest.approx(1100 + 150 - 1000)


def test_an_interval_too_coarse_for_the_tolerance_is_refused_with_the_fix() -> None:
    remote.check_interval(0.1, 0.01, 0.05, "fix")
    with pytest.raises(SensorUnavailable, match=r"refreshed every 30 s.*off by up to 50%.*-c 100"):
        remote.check_interval(30.0, 0.0, 0.05, "run it with -c 100")
    assert remote.min_window(0.1, 0.0) == 1.0
    assert remote.min_window(0.5, 0.01) == pytest.approx(5.2)
