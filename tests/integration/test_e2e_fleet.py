"""Remote GPUs through the plugin: ``--tpw-sensor dcgm-exporter --tpw-sensor-url ...`` over
replayed exporters on the loopback (two hosts, a MIG GPU, both label spellings); what a
deployment spans (marker ``gpus``, ``hosts``); a served model the plugin did not start,
measured under load with the exporters' counters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from pytest_tpw.cli import main as cli
from tests.fakes.dcgm_exporter import Exporter, FakeGpu, exporting
from tests.fakes.openai_stream import serving

WORK = """
import os, time
import pytest

@pytest.mark.tpw(**eval(os.environ.get("MARKER", "{}")))
def test_served(tpw):
    tpw(time.sleep, 0.05, tokens=100)
"""


@pytest.fixture
def exporters() -> Iterator[list[str]]:
    fakes = [
        Exporter([FakeGpu("GPU-a", 300.0), FakeGpu("GPU-b", 150.0, 1, mig=3)], hostname="node1"),
        Exporter(
            [FakeGpu("GPU-c", 200.0)], hostname="node2", host_label="hostname", uuid_label="uuid"
        ),
    ]
    with ExitStack() as stack:
        yield [stack.enter_context(exporting(f)) for f in fakes]


def args(urls: list[str]) -> list[str]:
    out = ["--tpw", "--tpw-sensor", "dcgm-exporter", "--tpw-rounds", "2", "-p", "no:cacheprovider"]
    for url in urls:
        out += ["--tpw-sensor-url", url]
    return [*out, "-o", "tpw_warmup=0", "-o", "tpw_sensor_interval=0.1", "-o", "tpw_max_delay=0"]


def test_the_gpus_of_two_hosts_are_measured_once_each(
    pytester: pytest.Pytester, exporters: list[str]
) -> None:
    pytester.makepyfile(test_work=WORK)
    result = pytester.runpytest(*args(exporters), "--tpw-json", "out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*sensor: dcgm-exporter (dcgm-exporter DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION of 3 "
         "GPU(s) on node1, node2; collect interval 100 ms (told)*joules MEASURED*"]
    )  # fmt: skip
    doc: dict[str, Any] = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    env = doc["environment"]
    assert env["hardware_key"] == "nvidia-h100-80gb-hbm3-x3"
    assert env["sensor"]["edge_error_s"] > 0.1  # the interval and two round trips
    entry = doc["measurements"]["test_work.py::test_served"]
    watts = entry["summary"]["watts"]
    assert watts == pytest.approx(650.0, rel=0.15)  # 300 + 150 (once) + 200
    for sample in entry["samples"]:
        assert set(sample["domains"]) == {
            "gpu:node1/GPU-a", "gpu:node1/GPU-b", "gpu:node2/GPU-c",
        }  # fmt: skip
        assert 0 < sample["state"]["bound"] < 0.5


@pytest.mark.parametrize(
    ("marker", "text"),
    [
        (
            "{'gpus': 4}",
            "the window measured 3 GPU(s) of the 4 it spans (gpus=4). It measured: "
            "node1/GPU-a, node1/GPU-b, node2/GPU-c",
        ),
        ("{'hosts': ['node1', 'node3']}", "no GPU of node3 (hosts=['node1', 'node3'])"),
    ],
)
def test_a_window_that_measured_less_than_the_deployment_fails(
    pytester: pytest.Pytester,
    exporters: list[str],
    monkeypatch: pytest.MonkeyPatch,
    marker: str,
    text: str,
) -> None:
    monkeypatch.setenv("MARKER", marker)
    pytester.makepyfile(test_work=WORK)
    result = pytester.runpytest(*args(exporters))
    result.assert_outcomes(failed=1)
    assert text in result.stdout.str()
    monkeypatch.setenv("MARKER", "{'gpus': 3, 'hosts': ['node1', 'node2']}")
    pytester.runpytest(*args(exporters)).assert_outcomes(passed=1)


def test_a_deployment_the_plugin_did_not_start_is_measured_under_load(
    pytester: pytest.Pytester, exporters: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openai")
    pytester.makepyfile(
        test_fleet="""
        import os
        import pytest

        @pytest.mark.tpw(gpus=3)
        def test_fleet_under_load(tpw):
            out = tpw.load(os.environ["SERVED_URL"], concurrency=4, duration_s=1.2, max_tokens=8)
            assert out.errors == 0
        """
    )
    with serving() as (url, _):
        monkeypatch.setenv("SERVED_URL", url)
        result = pytester.runpytest(*args(exporters), "--tpw-json", "out.json")
    result.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    entry = doc["measurements"]["test_fleet.py::test_fleet_under_load"]
    assert entry["summary"]["watts"] == pytest.approx(650.0, rel=0.15)
    assert entry["load"]["concurrency"] == 4 and entry["latency"]["tpot_s"]["n"] > 0


def test_a_missing_url_or_an_unreachable_exporter_stops_the_run_saying_why(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_work=WORK)
    result = pytester.runpytest("--tpw", "--tpw-sensor", "dcgm-exporter", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*dcgm-exporter needs the exporters' URLs: --tpw-sensor-url*"])
    result = pytester.runpytest(*args(["http://127.0.0.1:9/metrics"]))
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        ["*cannot read dcgm-exporter metrics at http://127.0.0.1:9/metrics*port 9400*"]
    )


EDGY = """
from pytest_tpw.sensors.sim import SimSensor


class Edgy(SimSensor):
    name = "edgy"

    def edge_error_s(self):
        return float(__import__("os").environ.get("EDGE_S", "0"))


def pytest_tpw_sensor_factories():
    return {"edgy": Edgy}
"""

DROP = """
import time

def test_a(tpw):
    tpw(time.sleep, 0.02, tokens=100)
"""


def test_a_drop_within_the_instrument_bound_is_not_a_regression(
    tpwtester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same 12 % drop (sim watts 300 -> 340): REGRESSED with an exact sensor, and
    INCONCLUSIVE, saying why, with one whose edges are uncertain by more than that."""
    tpwtester.makeconftest(EDGY)
    tpwtester.makepyfile(test_drop=DROP)
    common = ("--tpw", "--tpw-sensor", "edgy", "-o", "tpw_sim_noise=0.002", "--tpw-rounds", "6")
    tpwtester.runpytest(*common, "--tpw-record").assert_outcomes(passed=1)
    tpwtester.runpytest(*common, "--tpw-record").assert_outcomes(passed=1)
    # sessions are dated to the second, and compare leaves out a stored session dated as
    # the run it judges (that run's own): the compared runs start a second later
    time.sleep(1.1)
    exact = tpwtester.runpytest(*common, "-o", "tpw_sim_watts=340", "--tpw-json", "a.json")
    exact.assert_outcomes(failed=1)
    monkeypatch.setenv("EDGE_S", "0.2")  # windows of about 20 ms: a bound far above 12 %
    edgy = tpwtester.runpytest(*common, "-o", "tpw_sim_watts=340", "--tpw-json", "b.json")
    edgy.assert_outcomes(passed=1)
    edgy.stdout.fnmatch_lines(
        ["instrument bound: the sensor's window edges are uncertain by 0.2 s, so a ratio may "
         "be off by *% to *% (compared tests); a drop within it is never REGRESSED*",
         "*test_drop.py::test_a: INCONCLUSIVE: the drop (1*%) is within the sensor's "
         "instrument bound (±*%: its readings at a window's edges are uncertain by 0.2 s)*"]
    )  # fmt: skip
    stored = tpwtester.path / ".tpw" / "sim-x1.json"
    for name, verdict, bounded in (
        ("a.json", "REGRESSED", False),
        ("b.json", "INCONCLUSIVE", True),
    ):
        doc = json.loads((tpwtester.path / name).read_text(encoding="utf-8"))
        entry = doc["measurements"]["test_drop.py::test_a"]
        assert entry["verdict"] == verdict
        assert (entry["comparison"]["instrument_bound"] is not None) == bounded
        # compare judges the file again with the same bound: the verdict the run printed
        capsys.readouterr()
        cli.main(["compare", str(stored), str(tpwtester.path / name)])
        row = [line for line in capsys.readouterr().out.splitlines() if "test_drop.py" in line]
        assert row and row[0].split()[-1] == verdict, row


def test_under_xdist_a_held_verdicts_warning_reaches_the_summary(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller decides held verdicts at the end of the run: their warnings (here the
    instrument bound's) still reach pytest's warnings summary."""
    pytest.importorskip("xdist")
    tpwtester.makeconftest(EDGY)
    tpwtester.makepyfile(test_drop=DROP)
    common = ("--tpw", "--tpw-sensor", "edgy", "-o", "tpw_sim_noise=0.002", "--tpw-rounds", "6")
    tpwtester.runpytest(*common, "--tpw-record").assert_outcomes(passed=1)
    tpwtester.runpytest(*common, "--tpw-record").assert_outcomes(passed=1)
    monkeypatch.setenv("EDGE_S", "0.2")
    result = tpwtester.runpytest_subprocess(*common, "-o", "tpw_sim_watts=340", "-n", "2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_drop.py::test_a: INCONCLUSIVE: the drop (1*%) is within*"])


SERVED = """
import os, sys, time

SERVE = '''
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

def test_served(tpw, tpw_server):
    tpw_server([sys.executable, "-c", SERVE, "{port}"], gpus=int(os.environ["GPUS"]))
    tpw(time.sleep, 0.05, tokens=100)
"""


@pytest.mark.parametrize(("gpus", "passed"), [(3, True), (4, False)])
def test_tpw_server_states_what_its_deployment_spans(
    pytester: pytest.Pytester,
    exporters: list[str],
    monkeypatch: pytest.MonkeyPatch,
    gpus: int,
    passed: bool,
) -> None:
    monkeypatch.setenv("GPUS", str(gpus))
    pytester.makepyfile(test_served=SERVED)
    result = pytester.runpytest(*args(exporters))
    result.assert_outcomes(passed=int(passed), failed=int(not passed))
    if not passed:
        assert "the window measured 3 GPU(s) of the 4 it spans (gpus=4)" in result.stdout.str()
