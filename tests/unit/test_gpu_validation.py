"""``benchmarks/gpu_validation.py`` on the CPU: its pure parts, and its dry run end to end.

The script runs once on a lent GPU machine; everything it can do without a GPU is checked
here, so that the one real run works the first time: the traces it records replay through the
stand-in ``pynvml``, its arithmetic and tables, its section bookkeeping, the worker protocol,
and the whole ``--cpu-dry-run``.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from pytest_tpw.sensors.base import SensorOptions
from pytest_tpw.sensors.nvml import NvmlSensor
from tests.fakes.fake_pynvml import FakeClock, FakeNvml, load_trace

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_validation.py"
PACKAGE = BENCHMARKS / "gpuval"  # the script's parts, imported from beside it
PARTS = ("gpuval", "gpuval.counter", "gpuval.inner", "gpuval.summary")
SUITE = ROOT / "benchmarks" / "gpu_validation_suite" / "gpu_suite_decode.py"
README_COLUMNS = [
    "t_s",
    "energy_mj",
    "power_instant_mw",
    "temperature_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "clocks_event_reasons",
]
README_DEVICE_KEYS = {
    "nvml_index",
    "name",
    "uuid",
    "pci_bus_id",
    "vbios",
    "architecture",
    "power_limit_mw",
    "enforced_power_limit_mw",
    "persistence_mode",
    "mig_mode",
    "ecc_mode",
    "pcie",
    "energy_counter",
    "power_instant_field",
    "columns",
    "rows",
}
VERDICTS = {"REGRESSED", "MINOR_REGRESSION", "UNCHANGED", "IMPROVED", "INCONCLUSIVE", "NO_BASELINE"}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gv() -> Iterator[Any]:
    """The script, ``benchmarks/overhead.py`` and the modules of the script's package
    ``gpuval`` as one namespace: ``gv.NAME``."""
    sys.path.insert(0, str(BENCHMARKS))  # as when the script runs: its folder is sys.path[0]
    try:
        script = _load("gpu_validation", SCRIPT)
        parts = [importlib.import_module(name) for name in PARTS]
        overhead = importlib.import_module("overhead")
        names: dict[str, Any] = {}
        for module in [*parts, overhead, script]:
            names.update((k, v) for k, v in vars(module).items() if not k.startswith("__"))
        yield SimpleNamespace(**names)
    finally:
        sys.modules.pop("gpu_validation", None)
        sys.modules.pop("overhead", None)
        for name in [n for n in sys.modules if n == "gpuval" or n.startswith("gpuval.")]:
            del sys.modules[name]
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def ctx(gv: Any, tmp_path: Path) -> Any:
    args = gv.parse_args(
        [
            "--cpu-dry-run",
            "--out",
            str(tmp_path / "out"),
            "--work",
            str(tmp_path / "work"),
            "--budget-s",
            "100",
        ]
    )
    return gv.make_ctx(args)


def _replay(trace: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[FakeNvml, NvmlSensor]:
    fake = FakeNvml(trace, FakeClock())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sensor = NvmlSensor(SensorOptions(devices=(0,)))
    sensor.clock, sensor.sleep, sensor.wait = fake.clock.now, fake.clock.sleep, fake.clock.wait
    sensor.open()
    return fake, sensor


# -- traces ----------------------------------------------------------------------------------


def _recorded(gv: Any) -> tuple[dict[str, Any], Any, float]:
    """Section 1's poll of the synthetic H100, written as a trace (rows at counter changes)."""
    plan = gv.DRY_PLAN
    with gv.open_rig(plan) as rig:
        system, device = gv.read_identity(rig)
        log, load_start, _ = gv.record_poll(rig, plan, None)
        latency = gv.measure_latencies(rig, plan)
    trace = gv.make_trace(
        system, device, gv.trace_latencies(latency), gv.counter_rows(log.rows), "test", "test"
    )
    return json.loads(gv.trace_text(trace)), log, load_start


def test_a_recorded_trace_has_the_documented_format(gv: Any) -> None:
    trace, _, _ = _recorded(gv)
    assert trace["format"] == "pytest-tpw-nvml-trace/1"
    assert set(trace["system"]) == {"driver_version", "cuda_driver_version", "nvml_version"}
    assert isinstance(trace["system"]["cuda_driver_version"], int)
    assert trace["call_latency_s"]["default"] == pytest.approx(4e-5)
    assert trace["call_latency_s"]["nvmlDeviceGetComputeRunningProcesses"] == pytest.approx(3e-4)
    (device,) = trace["devices"]
    assert set(device) >= README_DEVICE_KEYS
    assert device["columns"] == README_COLUMNS
    times = [row[0] for row in device["rows"]]
    assert times[0] == 0.0
    assert times == sorted(times)
    assert all(len(row) == len(README_COLUMNS) for row in device["rows"])
    assert device["energy_counter"] is True and device["power_instant_field"] is True


def test_recorded_rows_are_the_boards_counter_updates(gv: Any) -> None:
    """Each row holds a value of the synthetic board, seen within one poll of its update."""
    _, log, _ = _recorded(gv)
    truth = load_trace(gv.SYNTHETIC_TRACE)["devices"][0]["rows"]
    by_energy = {row[1]: row for row in truth}
    rows = gv.counter_rows(log.rows)
    assert len(rows) > 15
    for row in rows[1:]:
        source = by_energy[row[1]]
        assert row[2] == source[2]  # instant power read in the same poll
        assert 0.0 <= row[0] + log.t0 - source[0] < 0.002


def test_a_recorded_trace_replays_through_the_nvml_sensor(
    gv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace, _, _ = _recorded(gv)
    rows = trace["devices"][0]["rows"]
    fake, sensor = _replay(trace, monkeypatch)
    try:
        expected = statistics.median(gv.intervals([r[0] for r in rows[1:12]]))
        device = sensor.describe()["devices"][0]
        assert device["update_period"] == "measured"
        assert device["update_period_s"] == pytest.approx(expected, abs=0.002)
        first, last = len(rows) - 12, len(rows) - 2  # after the calibration's poll
        assert rows[first][0] > fake.clock.now()
        fake.clock.advance_to((rows[first][0] + rows[first + 1][0]) / 2)
        token = sensor.begin()
        fake.clock.advance_to((rows[last][0] + rows[last + 1][0]) / 2)
        window = sensor.end(token)
        assert window.joules["gpu:0"] == pytest.approx((rows[last][1] - rows[first][1]) / 1000)
    finally:
        sensor.close()


def test_missing_readings_are_filled_so_the_fake_can_replay_them(gv: Any) -> None:
    rows = [[0.5, 10, 1000.4, None, None, 5, None], [0.6, 20, None, 40, 1980, None, 0]]
    trace = gv.make_trace({}, {"name": "x"}, {"default": 0.0}, rows, "s", "g")
    assert trace["devices"][0]["rows"] == [
        [0.0, 10, 1000, 0, 0, 5, 0],
        [0.1, 20, 1000, 40, 1980, 5, 0],
    ]


def test_a_long_trace_is_cut_around_the_load_start(gv: Any) -> None:
    rows = [[i * 0.001, 1000 + i, 70000 + i, 40, 1980, 2619, 0] for i in range(6000)]
    trace = gv.make_trace({}, {"name": "x"}, {"default": 0.0}, rows, "s", "g")
    assert gv.trace_bytes(trace) > 100_000
    cut, note = gv.fit_trace(trace, 100_000, around_s=3.0)
    kept = cut["devices"][0]["rows"]
    assert gv.trace_bytes(cut) <= 100_000
    assert note is not None and "cut to" in note
    assert kept[0][0] == 0.0
    assert [r[0] for r in kept] == sorted(r[0] for r in kept)
    assert kept[0][1] < 1000 + 3000 < kept[-1][1]  # the load start is inside
    same, none = gv.fit_trace(cut, 100_000, around_s=0.0)
    assert same is cut and none is None


# -- arithmetic ------------------------------------------------------------------------------


def test_the_script_is_the_entry_point_and_three_modules(gv: Any) -> None:
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == [
        "__init__.py",
        "counter.py",
        "inner.py",
        "summary.py",
    ]


def test_arithmetic(gv: Any) -> None:
    assert gv.expected_ratio_from_energy(9.0, 1.0) == pytest.approx(0.9)
    assert gv.flop_ratio(0.10) == pytest.approx(1 / 1.1)
    assert gv.intervals([0.0, 0.1, 0.3]) == pytest.approx([0.1, 0.2])
    rows = [[0.0, 1], [0.1, 1], [0.2, 2], [0.3, 2], [0.5, 3]]
    assert gv.change_times(rows, 1) == [0.2, 0.5]
    assert gv.change_times(rows, 1, 0.3, 1.0) == [0.5]
    q = gv.quantiles([float(i) for i in range(1, 101)])
    assert (q["n"], q["median"], q["p10"], q["p90"], q["p99"]) == (100, 50.5, 11.0, 91.0, 100.0)
    s = gv.spread([9.0, 11.0])
    assert s["mean"] == 10.0 and s["cv"] == pytest.approx(2**0.5 / 10)
    assert gv.quantiles([]) == {"n": 0} and gv.spread([]) == {"n": 0}
    assert gv.slug("NVIDIA H100 80GB HBM3") == "h100_80gb_hbm3"
    assert gv.slug("NVIDIA H200") == "h200"


def test_counter_power_is_watts_between_counter_changes(gv: Any) -> None:
    rows = [[0.0, 0, 1], [0.1, 0, 2], [0.2, 50_000, 3], [0.5, 200_000, 4]]
    assert gv.counter_power(rows, 0.0, 1.0) == pytest.approx(150.0 / 0.3)
    assert gv.counter_power(rows, 0.4, 1.0) is None


def test_window_ratios(gv: Any) -> None:
    field = [(0.0, 50_000.0), (1.0, 50_000.0), (2.0, 50_000.0)]
    result = gv.window_result(2.0, 110.0, field, [])
    assert result["field_j"] == pytest.approx(100.0)
    assert result["ratio_counter_over_field"] == pytest.approx(1.1)
    assert result["counter_w"] == pytest.approx(55.0)
    assert result["usage_j"] is None and result["ratio_counter_over_usage"] is None
    usage = [(0.0, 40_000.0), (2.0, 60_000.0)]
    with_usage = gv.window_result(2.0, 110.0, field, usage)
    assert with_usage["usage_j"] == pytest.approx(100.0)
    assert with_usage["ratio_counter_over_usage"] == pytest.approx(1.1)


def test_a_window_on_the_fake_is_the_counter_delta_between_updates(gv: Any) -> None:
    truth = load_trace(gv.SYNTHETIC_TRACE)["devices"][0]["rows"]
    with gv.open_rig(gv.DRY_PLAN, start_s=0.6) as rig:
        window = gv.measure_window(rig, 1.0, gv.DRY_PLAN)
    assert 1.0 <= window["seconds"] < 1.25
    deltas = {
        (b[1] - a[1]) / 1000.0
        for a in truth
        for b in truth
        if 0.95 < b[0] - a[0] < 1.3 and a[0] >= 0.6
    }
    assert any(abs(window["counter_j"] - d) < 1e-9 for d in deltas)
    assert window["ratio_counter_over_field"] == pytest.approx(1.0, abs=0.03)
    assert window["samples"] >= 1.0 / gv.DRY_PLAN.sample_interval_s


# -- inner results and summary ---------------------------------------------------------------


def _sample(tpj: float, state: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "tokens": 100,
        "joules": 100 / tpj,
        "seconds": 1.0,
        "calls": 10,
        "tokens_per_joule": tpj,
        "state": state or {},
    }


def test_a_measurement_is_read_from_tpw_json(gv: Any, tmp_path: Path) -> None:
    state = {
        "gpu:0": {
            "temperature_c": {"start": 40, "end": 55},
            "sm_clock_mhz": 1980,
            "clocks_event_reasons": ["SwPowerCap"],
            "other_pids": [],
        }
    }
    doc: dict[str, Any] = {
        "measurements": {
            "test_decode_gpu.py::test_decode": {
                "nodeid": "test_decode_gpu.py::test_decode",
                "verdict": "UNCHANGED",
                "comparison": {"verdict": "UNCHANGED", "ratio": 0.99, "ci": [0.98, 1.0]},
                "samples": [_sample(10.0, state), _sample(12.0)],
            }
        }
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    m = gv.read_measurement(path)
    assert m["verdict"] == "UNCHANGED"
    assert m["tpj"]["mean"] == 11.0 and m["tpj"]["n"] == 2
    assert m["gpu_state"] == {
        "temperature_c": [40, 55],
        "sm_clock_mhz": [1980, 1980],
        "clocks_event_reasons": ["SwPowerCap"],
        "other_pids": [],
    }
    assert m["seconds_per_call"] == pytest.approx(0.1)
    other = {"tpj": {"n": 1, "mean": 9.9}}
    assert gv.ratio_of_means(m, other) == pytest.approx(0.9)
    assert gv.ratio_of_means(None, m) is None
    assert gv.read_measurement(tmp_path / "missing.json") is None
    doc["measurements"] = list(doc["measurements"].values())  # a list form reads the same
    path.write_text(json.dumps(doc))
    assert gv.read_measurement(path)["verdict"] == "UNCHANGED"


def _doc() -> dict[str, Any]:
    measurement = {
        "tpj": {"n": 20, "mean": 10.0, "cv": 0.01},
        "watts": 650.0,
        "tokens_per_s": 6500.0,
        "seconds_per_call": 0.09,
        "gpu_state": {
            "temperature_c": [40, 60],
            "sm_clock_mhz": [1755, 1980],
            "clocks_event_reasons": [],
        },
    }
    return {
        "dry": False,
        "date": "2026-01-01",
        "budget_s": 450,
        "elapsed_s": 300.0,
        "card": {
            "name": "NVIDIA H100 80GB HBM3",
            "driver_version": "580.1",
            "cuda_driver_version": 13000,
        },
        "sections": {
            "nvml_facts": {
                "status": "ok",
                "seconds": 20.0,
                "result": {
                    "device": {"power_limit_mw": 700000, "enforced_power_limit_mw": 700000},
                    "poll": {
                        "counter_period_load_s": {
                            "n": 20,
                            "median": 0.1,
                            "p10": 0.099,
                            "p90": 0.101,
                        }
                    },
                    "latency_s": {"energy": {"n": 2000, "median": 2e-5, "p99": 1e-4}},
                },
            },
            "counter_vs_power": {"status": "error", "error": "TimeoutError: x | y"},
            "aa": {
                "status": "ok",
                "result": {
                    "verdict": "UNCHANGED",
                    "session_ratio": 1.004,
                    "plugin_ratio": 1.003,
                    "plugin_ci": [0.99, 1.01],
                    "runs": [
                        {"name": "aa1", "rc": 0, "measurement": measurement},
                        {"name": "aa2", "rc": 0, "measurement": None},
                    ],
                },
            },
            "ab": {
                "status": "ok",
                "result": {
                    "verdict": "REGRESSED",
                    "extra_work": 0.1,
                    "measured_ratio": 0.92,
                    "plugin_ratio": 0.921,
                    "plugin_ci": [0.91, 0.93],
                    "run": {"measurement": measurement},
                    "expected": {
                        "by_energy": 0.93,
                        "by_time": 0.925,
                        "by_flops": 0.911,
                        "flop_fraction": 0.0975,
                    },
                    "compare_cli": {"status": "skipped", "why": "no cli"},
                },
            },
            "overhead": {"status": "skipped", "why": "3 s left of the budget, needs ~20 s"},
        },
    }


def test_the_summary_table_names_each_figure_with_its_unit(gv: Any) -> None:
    text = gv.summary_markdown(_doc())
    lines = text.splitlines()
    assert "card **NVIDIA H100 80GB HBM3**, driver 580.1, CUDA driver 13.0" in text
    assert "| section | figure | value | unit |" in lines
    assert (
        "| nvml_facts | counter update period, load (median [p10, p90], n) | "
        "100 [99, 101], 20 | ms |"
    ) in lines
    assert (
        "| nvml_facts | read latency nvmlDeviceGetTotalEnergyConsumption (median / p99, n) "
        "| 20 / 100, 2000 | us |"
    ) in lines
    assert "| nvml_facts | power limit (enforced) | 700 (700) | W |" in lines
    assert any(
        line.startswith("| counter_vs_power | status | error") and "x \\| y" in line
        for line in lines
    )
    assert any(line.startswith("| overhead | status | skipped") for line in lines)
    assert (
        "| aa | A/A aa1 (rc 0): tokens/J mean (CV, n windows) | 10 (+1.00 %, 20) | tokens/J |"
        in lines
    )
    assert "| aa | A/A plugin ratio [CI] | 1.003 [0.99, 1.01] |  |" in lines
    assert "- A/A verdict UNCHANGED, expected UNCHANGED: PASS" in lines
    assert "- A/B verdict REGRESSED, expected REGRESSED: PASS" in lines
    assert (
        "- A/B ratio 0.921 vs expected 0.93 (energy of the extra work alone): -0.97 % off" in lines
    )
    for line in lines:
        if line.startswith("| ") and "status" not in line:
            assert line.count(" | ") >= 3, line


def test_the_summary_survives_empty_and_broken_results(gv: Any) -> None:
    assert "| section | figure | value | unit |" in gv.summary_markdown({})
    doc = {
        "sections": {
            "aa": {"status": "ok", "result": {"runs": [{"name": "aa1"}]}},
            "ab": {"status": "ok", "result": {"run": None, "expected": None}},
            "nvml_facts": {"status": "ok", "result": {"plugin_sensor": "bad"}},
        }
    }
    text = gv.summary_markdown(doc)
    assert "| aa | A/A verdict (expected UNCHANGED) | None |  |" in text
    assert "| nvml_facts | summary failed |" in text


# -- section bookkeeping ---------------------------------------------------------------------


def test_sections_record_failures_and_skip_what_does_not_fit(gv: Any, ctx: Any) -> None:
    def boom(ctx: Any) -> dict[str, Any]:
        raise ValueError("no GPU here")

    def fine(ctx: Any) -> dict[str, Any]:
        (ctx.work / "made.txt").write_text("x")
        return {"answer": 42}

    def never(ctx: Any) -> dict[str, Any]:
        raise AssertionError("a skipped section must not run")

    ctx.plan = gv.replace(ctx.plan, estimates=(("big", 1000.0), ("boom", 1.0), ("fine", 1.0)))
    done = gv.run_sections(ctx, [("boom", "b", boom), ("fine", "f", fine), ("big", "g", never)])
    assert done["boom"]["status"] == "error"
    assert "ValueError: no GPU here" in done["boom"]["error"]
    assert done["fine"] == {
        "status": "ok",
        "why": None,
        "result": {"answer": 42},
        "seconds": done["fine"]["seconds"],
    }
    assert done["big"]["status"] == "skipped" and "needs ~1000 s" in done["big"]["why"]
    summary = json.loads((ctx.out / "summary.json").read_text())
    assert [s["status"] for s in summary["sections"].values()] == ["error", "ok", "skipped"]
    assert summary["dry"] is True
    with tarfile.open(ctx.out / "artifacts.tar.gz") as tar:
        assert "artifacts/made.txt" in tar.getnames()
    log = (ctx.out / "progress.log").read_text()
    assert re.search(r"\[\s*\d+\.\d s\] b: FAILED ValueError: no GPU here", log)
    assert "g: SKIPPED" in log


def test_an_interrupt_keeps_what_was_measured(gv: Any, ctx: Any) -> None:
    def stop(ctx: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    done = gv.run_sections(
        ctx,
        [
            ("fine", "f", lambda c: {"a": 1}),
            ("stop", "s", stop),
            ("later", "l", lambda c: {"b": 2}),
        ],
    )
    assert [done[n]["status"] for n in ("fine", "stop", "later")] == [
        "ok",
        "interrupted",
        "interrupted",
    ]
    assert json.loads((ctx.out / "summary.json").read_text())["sections"]["fine"]["result"] == {
        "a": 1
    }


def test_the_inner_suite_is_not_collected_by_the_repository(pytestconfig: pytest.Config) -> None:
    patterns = pytestconfig.getini("python_files")
    assert patterns
    assert not any(fnmatch.fnmatch(SUITE.name, pattern) for pattern in patterns)
    assert "benchmarks" not in pytestconfig.getini("testpaths")


# -- with torch: the workload, the worker, the whole dry run ---------------------------------


def test_the_extra_work_adds_the_asked_fraction_of_matrix_weights(gv: Any) -> None:
    pytest.importorskip("torch")
    suite = gv.load_suite()
    assert suite.extra_matrices(1000, 10, 0.0) == 0
    assert suite.extra_matrices(1000, 10, 0.001) == 1
    decode = suite.Decode(suite.SHAPES["dry"], 0.10)
    d = decode.shape.config.d_model
    assert decode.extra_count == round(0.10 * decode.params / d**2)
    assert decode.extra_fraction == pytest.approx(decode.extra_count * d**2 / decode.params)
    calls = []
    decode.model.norm.register_forward_hook(lambda *args: calls.append(1))
    out = decode.generate()
    assert out.shape == (decode.shape.batch, decode.shape.new_tokens)
    assert len(calls) == decode.shape.new_tokens  # the extra work rides on every forward pass
    decode.extra_enabled = False
    assert decode.generate().equal(out)  # it never changes what is generated
    decode.extra_only()
    gpu = suite.SHAPES["gpu"]
    assert gpu.config.d_model // gpu.config.n_heads % 2 == 0 and gpu.device == "cuda"


def test_the_worker_answers_and_reports_errors(gv: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    worker = gv.Worker(gv.DRY_PLAN, tmp_path, 60.0)
    try:
        assert worker.info["device"] == "cpu" and worker.uuid is None
        assert worker.request({"cmd": "load", "kind": "matmul"})["started"] is True
        stopped = worker.request({"cmd": "stop"})
        assert stopped["error"] is None and stopped["calls"] >= 0
        with pytest.raises(RuntimeError, match="unknown worker command 'nope'"):
            worker.request({"cmd": "nope"})
        with pytest.raises(RuntimeError, match="no load is running"):
            worker.request({"cmd": "stop"})
        timed = worker.request({"cmd": "time_generate", "extra": 0.1, "reps": 1})
        assert timed["base_s"] > 0 and timed["extra_s"] > 0
        assert timed["facts"]["extra_matrices"] >= 1
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_the_cpu_dry_run_runs_every_section(
    gv: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--cpu-dry-run",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
            "--budget-s",
            "120",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    sections = summary["sections"]
    assert {n: s["status"] for n, s in sections.items()} == {
        "nvml_facts": "ok",
        "counter_vs_power": "ok",
        "aa": "ok",
        "ab": "ok",
        "overhead": "ok",
        "noise": "ok",
    }
    assert sections["nvml_facts"]["result"]["plugin_sensor"]["min_window_s"] > 0
    assert sections["counter_vs_power"]["result"]["windows"] == gv.DRY_PLAN.windows
    runs = sections["aa"]["result"]["runs"] + [sections["ab"]["result"]["run"]]
    for run in runs:
        assert run["rc"] in (0, 1), run.get("log_tail")
        assert run["measurement"]["tpj"]["n"] >= 5
        assert run["measurement"]["verdict"] in VERDICTS
    assert runs[0]["measurement"]["verdict"] == "NO_BASELINE"
    assert runs[1]["measurement"]["verdict"] != "NO_BASELINE"  # aa1 wrote the baseline
    expected = sections["ab"]["result"]["expected"]
    assert 0 < expected["by_energy"] < 1 and 0 < expected["by_flops"] < 1
    assert sections["overhead"]["result"]["nvml_pair_s"]["n"] > 0
    meter = sections["overhead"]["result"]["meter"]
    assert meter["windows"] == gv.DRY_PLAN.meter_windows and meter["call_form_s"] > 0
    noise = sections["noise"]["result"]
    (key,) = noise["tests"]
    assert key.endswith("::test_decode") and noise["n_tests"] == 1
    decode = noise["tests"][key]
    aa_windows = [run["measurement"]["samples_tpj"] for run in runs[:2]]
    for figures, windows in zip(decode["sessions"], aa_windows, strict=True):
        assert figures["n"] == len(windows)
        assert figures["cv"] == pytest.approx(statistics.stdev(windows) / statistics.fmean(windows))
    assert noise["shared_shift"] == pytest.approx(decode["shift"])  # one test: the same
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    traces = [f for f in files if f.startswith("nvml_dryrun_h100_80gb_hbm3_")]
    assert len(traces) == 2
    for name in traces:
        assert (out / name).stat().st_size < 200_000
        _, sensor = _replay(load_trace(out / name), monkeypatch)
        try:
            assert 0.5 < sensor.min_window_s() < 1.5
        finally:
            sensor.close()
    with tarfile.open(out / "artifacts.tar.gz") as tar:
        names = set(tar.getnames())
    assert {
        "artifacts/aa1.json",
        "artifacts/aa2.json",
        "artifacts/ab.json",
        "artifacts/baseline",
    } <= names
    text = (out / "summary.md").read_text()
    assert "CPU DRY RUN" in text and "## Checks" in text
    assert "- A/A noise: within-session CV " in text
    assert "A/A noise test_decode_gpu.py::test_decode: within-session CV" in done.stdout


# -- A/A noise figures and the overhead benchmark --------------------------------------------


def test_windows_are_read_per_test_in_time_order(gv: Any, tmp_path: Path) -> None:
    doc = {
        "measurements": {
            "t.py::a": {"nodeid": "t.py::a", "samples": [_sample(3.0), _sample(1.0), _sample(2.0)]},
            "t.py::b[x]": {"nodeid": "t.py::b", "name": "x", "samples": [_sample(5.0)]},
        }
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    assert gv.read_windows(path) == {"t.py::a": [3.0, 1.0, 2.0], "t.py::b [x]": [5.0]}
    assert gv.read_windows(tmp_path / "missing.json") == {}


def test_aa_noise_per_test_and_shared(gv: Any) -> None:
    base = [10.0, 11.0] * 6  # alternating windows: strongly negative lag-1
    first = {"a": base, "b": base, "c": base, "only_in_first": base}
    second = {
        "a": [x * 1.10 for x in base],
        "b": [x * 1.02 for x in base],
        "c": [x * 1.04 for x in base],
    }
    noise = gv.aa_noise(first, second)
    assert noise["n_tests"] == 3 and set(noise["tests"]) == {"a", "b", "c"}
    a = noise["tests"]["a"]
    assert a["shift"] == pytest.approx(0.10)
    assert noise["shared_shift"] == pytest.approx(0.04)  # the median test
    assert a["shift_less_shared"] == pytest.approx(1.10 / 1.04 - 1)
    assert noise["tests"]["c"]["shift_less_shared"] == pytest.approx(0.0, abs=1e-12)
    cv = statistics.stdev(base) / statistics.fmean(base)
    assert [s["cv"] for s in a["sessions"]] == pytest.approx([cv, cv])
    assert a["within_cv"] == pytest.approx(cv)
    assert a["lag1"] < -0.5 and a["lag1_pairs"] == 22
    assert a["sigma_b"] > 0  # the 10 % shift is far beyond the within-session noise
    assert noise["tests"]["b"]["sigma_b"] < a["sigma_b"]
    assert gv.aa_noise({"a": base}, {"b": base})["n_tests"] == 0


def test_noise_figures_have_rows_and_a_check_line(gv: Any) -> None:
    noise = gv.aa_noise({"t::x": [10.0, 11.0] * 4}, {"t::x": [10.5, 11.5] * 4})
    doc = {"sections": {"noise": {"status": "ok", "result": noise}}}
    text = gv.summary_markdown(doc)
    assert "| noise | t::x: lag-1 autocorrelation of windows (aa1, aa2; pooled, pairs) |" in text
    cv = statistics.stdev([10.0, 11.0] * 4) / statistics.fmean([10.0, 11.0] * 4)
    assert f"{cv * 100:.2f} %, " in text
    assert "- A/A noise: within-session CV " in text and "(shared over 1 tests)" in text


def test_the_noise_section_needs_two_aa_sessions(gv: Any, ctx: Any) -> None:
    assert gv.section_noise(ctx)["status"] == "skipped"
    ctx.results["aa"] = {"runs": [{"tests": {"t::x": [1.0, 2.0]}}, {"tests": {"t::y": [1.0]}}]}
    assert gv.section_noise(ctx)["status"] == "error"
    ctx.results["aa"]["runs"][1]["tests"] = {"t::x": [1.5, 2.5, 1.5, 2.5]}
    result = gv.section_noise(ctx)
    assert "status" not in result and result["n_tests"] == 1
    assert "A/A noise t::x: within-session CV" in (ctx.out / "progress.log").read_text()


def test_the_overhead_benchmark_times_every_window_of_the_meter(gv: Any) -> None:
    costs = gv.meter_costs(50)
    assert costs["windows"] == 50
    assert all(costs[k] > 0 for k in ("bare_s", "sensor_only_s", "call_form_s", "loop_form_s"))


def test_the_overhead_table_names_its_rows(gv: Any, capsys: pytest.CaptureFixture[str]) -> None:
    gv.per_window(20)
    lines = capsys.readouterr().out.splitlines()
    assert "2. meter bookkeeping per window, sim sensor, 20 windows, no-op work" in lines
    for row in (
        "sim sensor begin()+end() alone",
        "meter, call form (minus bare calls)",
        "meter, loop form (minus bare calls)",
    ):
        (line,) = [x for x in lines if x.startswith(row)]
        float(line[len(row) :])  # a number of microseconds follows the label


def test_no_inner_session_starts_once_the_budget_is_spent(gv: Any, ctx: Any) -> None:
    ctx.budget = gv.Budget(ctx.plan.reserve_s + 0.5)  # less than a second left for a child
    result = gv.section_aa(ctx)
    assert result["status"] == "error" and "not started: the budget is spent" in result["why"]
    assert [run["name"] for run in result["runs"]] == ["aa1"]  # no second session without a first
    assert not (ctx.work / "aa1.log").exists()
    assert "inner session aa1: not started" in (ctx.out / "progress.log").read_text()
