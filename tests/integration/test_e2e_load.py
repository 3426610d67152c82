"""``tpw.load`` through the plugin, against a real HTTP server on the loopback: the results
file's load and latency, baselines that remember the load, a run at another load refused as
incomparable, latency limits, failed requests counted, pytest-xdist, the plain run, compare."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_tpw.cli import main as cli
from tests.fakes.openai_stream import Behaviour, serving

pytest.importorskip("openai")

LOAD = """
import os
import pytest

URL = os.environ["FAKE_URL"]
C = int(os.environ.get("LOAD_C", "2"))


@pytest.mark.tpw(**eval(os.environ.get("MARKER", "{}")))
def test_served(tpw):
    out = tpw.load(URL, concurrency=C, duration_s=0.2, max_tokens=4)
    assert out.requests > 0
    assert (out.result is None) == (not tpw.enabled)
    assert out.latency["e2e_s"]["p50"] is not None
"""

PLAIN = """
def test_plain(tpw):
    tpw(lambda: 1, tokens=1)
"""

FAST = ("--tpw-rounds", "2", "-o", "tpw_warmup=0", "-p", "no:cacheprovider")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Behaviour]:
    with serving() as (url, behaviour):
        monkeypatch.setenv("FAKE_URL", url)
        yield behaviour


def results(tester: pytest.Pytester, name: str = "out.json") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((tester.path / name).read_text(encoding="utf-8"))
    return doc


def stored_load(tester: pytest.Pytester) -> list[Any]:
    doc = json.loads((tester.path / ".tpw" / "sim-x1.json").read_text(encoding="utf-8"))
    sessions = doc["measurements"]["test_load.py::test_served"]["sessions"]
    return [s.get("load") for s in sessions]


def test_the_results_file_holds_the_load_and_its_latencies(
    tpwtester: pytest.Pytester, fake: Behaviour
) -> None:
    tpwtester.makepyfile(test_load=LOAD, test_plain=PLAIN)
    result = tpwtester.runpytest(
        "--tpw", *FAST, "--tpw-json", "out.json", "--tpw-report", "r.md",
        "--tpw-export", "bencher=b.json",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "under load (steady part of each window; latencies of its requests):",
            "test_load.py::test_served: concurrency 2, 4 output tokens, chat; achieved * in "
            "flight, * requests/s over * s of steady windows; 0 of * requests failed; * tokens/J "
            "with ramp and drain",
            "  TTFT * / * / * · TPOT * / * / * · E2E * / * / * (p50 / p90 / p99)",
        ]
    )
    entry = results(tpwtester)["measurements"]["test_load.py::test_served"]
    load = entry["load"]
    assert load["concurrency"] == 2 and load["max_tokens"] == 4 and load["endpoint"] == "chat"
    assert load["model"] == "fake-model" and load["windows"] == 2
    assert load["requests"] == fake.received and load["errors"] == 0
    assert load["steady_s"] > 0 and 0 < load["achieved_concurrency"] <= 2
    assert load["gross_tokens_per_joule"] > 0
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        block = entry["latency"][name]
        assert set(block) == {"p50", "p90", "p99", "n"}
        assert 0 < block["p50"] <= block["p90"] <= block["p99"]
    assert "load" not in results(tpwtester)["measurements"]["test_plain.py::test_plain"]
    assert "### Under load (1)" in (tpwtester.path / "r.md").read_text(encoding="utf-8")
    bmf = json.loads((tpwtester.path / "b.json").read_text(encoding="utf-8"))
    measures = bmf["test_load.py::test_served"]
    assert measures["tpot-p90"]["value"] == entry["latency"]["tpot_s"]["p90"]
    assert measures["failed-requests"]["value"] == 0


def test_a_run_at_another_load_is_not_judged(
    tpwtester: pytest.Pytester, fake: Behaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_load=LOAD)
    tpwtester.runpytest("--tpw", *FAST, "--tpw-record").assert_outcomes(passed=1)
    shape = stored_load(tpwtester)
    assert shape[0]["concurrency"] == 2 and shape[0]["max_tokens"] == 4

    monkeypatch.setenv("LOAD_C", "3")
    result = tpwtester.runpytest("--tpw", *FAST, "--tpw-json", "out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_load.py::test_served: INCOMPARABLE: measured under another load than its "
            "baseline (concurrency 2 -> 3), so it is not judged; accept this load with pytest "
            "--tpw --tpw-update 'test_load.py::test_served', or measure at the stored load",
        ]
    )
    entry = results(tpwtester)["measurements"]["test_load.py::test_served"]
    assert entry["verdict"] == "INCOMPARABLE"
    assert "ratio" not in entry["comparison"]  # no comparison was made

    strict = tpwtester.runpytest("--tpw", *FAST, "--tpw-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*INCOMPARABLE: measured under another load*"])

    # --tpw-record would mix two loads in one history: it records nothing for the test
    record = tpwtester.runpytest("--tpw", *FAST, "--tpw-record")
    record.stdout.fnmatch_lines(["*not recorded (its history is of another load)*"])
    assert stored_load(tpwtester) == [shape[0]]

    # --tpw-update accepts the new load
    tpwtester.runpytest("--tpw", *FAST, "--tpw-update").assert_outcomes(passed=1)
    assert [s["concurrency"] for s in stored_load(tpwtester)] == [3]
    # compared again (whatever it finds on a busy machine), no longer refused
    tpwtester.runpytest("--tpw", *FAST, "--tpw-json", "out.json")
    entry = results(tpwtester)["measurements"]["test_load.py::test_served"]
    assert entry["verdict"] != "INCOMPARABLE" and "ratio" in entry["comparison"]


def test_compare_refuses_two_runs_at_different_loads(
    tpwtester: pytest.Pytester, fake: Behaviour, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    tpwtester.makepyfile(test_load=LOAD)
    tpwtester.runpytest("--tpw", *FAST, "--tpw-json", "a.json").assert_outcomes(passed=1)
    monkeypatch.setenv("LOAD_C", "3")
    tpwtester.runpytest("--tpw", *FAST, "--tpw-json", "b.json").assert_outcomes(passed=1)
    capsys.readouterr()
    a, b = tpwtester.path / "a.json", tpwtester.path / "b.json"
    assert cli.main(["compare", str(a), str(b)]) == 2  # an incomparable pair: an error
    captured = capsys.readouterr()
    assert (
        "test_load.py::test_served: INCOMPARABLE: A and B ran under different loads "
        "(concurrency 2 -> 3)" in captured.out
    )
    assert "1 measurement(s) of A and B ran under different loads" in captured.err
    assert cli.main(["compare", str(a), str(a)]) == 0
    assert "INCOMPARABLE" not in capsys.readouterr().out


def test_a_latency_limit_fails_the_test_and_names_it(
    tpwtester: pytest.Pytester, fake: Behaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_load=LOAD)
    monkeypatch.setenv("MARKER", "{'max_latency': {'tpot_p90': 1e-9, 'e2e_p99': 60}}")
    result = tpwtester.runpytest("--tpw", *FAST)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_load.py::test_served: time per output token (TPOT) p90 * s is above the "
            "limit 1e-09 s set by @pytest.mark.tpw(max_latency={'tpot_p90': 1e-09}) "
            "(tokens/J *)*"
        ]
    )
    assert "e2e_p99" not in result.stdout.str()  # the limit that held is not blamed

    monkeypatch.setenv("MARKER", "{'max_latency': {'tpot_p90': 60}}")
    tpwtester.runpytest("--tpw", *FAST).assert_outcomes(passed=1)


def test_latency_limits_are_checked_at_collection(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(
        test_marker="""
        import pytest

        @pytest.mark.tpw(max_latency={'tpot_p95': 0.1})
        def test_unknown(tpw):
            pass

        @pytest.mark.tpw(max_latency=0.1)
        def test_not_a_dict(tpw):
            pass
        """
    )
    result = tpwtester.runpytest("--tpw", *FAST)
    result.stderr.fnmatch_lines(
        [
            "*test_unknown*max_latency*'tpot_p95' is not a latency; use one of ttft_p50, "
            "ttft_p90, ttft_p99, tpot_p50, *",
            "*test_not_a_dict*max_latency=0.1*expected a dict of limits in seconds*",
        ]
    )
    tpwtester.makepyfile(
        test_marker="""
        import pytest

        @pytest.mark.tpw(max_latency={'ttft_p90': 1})
        def test_not_a_load(tpw):
            tpw(lambda: 1, tokens=1)
        """
    )
    result = tpwtester.runpytest("--tpw", *FAST)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_not_a_load: @pytest.mark.tpw(max_latency=...) limits the latencies of a "
            "load, and this measurement is not one*",
        ]
    )


def test_failed_requests_are_counted_not_dropped(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(Behaviour(fail_every=10)) as (url, behaviour):
        monkeypatch.setenv("FAKE_URL", url)
        tpwtester.makepyfile(test_load=LOAD)
        result = tpwtester.runpytest("--tpw", *FAST, "--tpw-json", "out.json")
    result.assert_outcomes(passed=1)
    load = results(tpwtester)["measurements"]["test_load.py::test_served"]["load"]
    assert behaviour.failed >= 1
    assert (load["requests"], load["errors"]) == (behaviour.received, behaviour.failed)
    assert load["error_kinds"] == {"HTTP 500 (InternalServerError)": behaviour.failed}
    result.stdout.fnmatch_lines(
        [
            f"*test_load.py::test_served: {behaviour.failed} of {behaviour.received} requests "
            "failed under concurrency 2 (* x HTTP 500 (InternalServerError); the first: *"
            "injected failure*). Failed requests add no tokens and no latency*"
        ]
    )


def test_a_plain_run_drives_the_load_once_unmeasured(
    tpwtester: pytest.Pytester, fake: Behaviour
) -> None:
    tpwtester.makepyfile(test_load=LOAD)
    result = tpwtester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert fake.received > 0
    assert "tokens per joule" not in result.stdout.str()


def test_load_figures_travel_from_xdist_workers(
    tpwtester: pytest.Pytester, fake: Behaviour
) -> None:
    pytest.importorskip("xdist")
    tpwtester.makepyfile(test_load=LOAD)
    tpwtester.makepyfile(test_load2=LOAD)
    result = tpwtester.runpytest_subprocess("--tpw", *FAST, "-n", "2", "--tpw-json", "out.json")
    result.assert_outcomes(passed=2)
    doc = results(tpwtester)["measurements"]
    for key in ("test_load.py::test_served", "test_load2.py::test_served"):
        assert doc[key]["load"]["requests"] > 0 and doc[key]["latency"]["tpot_s"]["n"] > 0
    assert (
        doc["test_load.py::test_served"]["load"]["requests"]
        + doc["test_load2.py::test_served"]["load"]["requests"]
        == fake.received
    )


def test_bad_arguments_are_refused_before_anything_is_sent(
    tpwtester: pytest.Pytester, fake: Behaviour
) -> None:
    tpwtester.makepyfile(
        test_bad="""
        import os
        import pytest
        from pytest_tpw.load.shape import LoadError

        @pytest.mark.parametrize("kw, text", [
            (dict(concurrency=2, rate=1.0), "exactly one of concurrency="),
            (dict(concurrency=2, duration_s=-1), "duration_s must be a positive number"),
            (dict(concurrency=2, requests=0), "requests must be an integer >= 1"),
            (dict(concurrency=2, duration_s=5, timeout_s=2), "must exceed duration_s=5"),
        ])
        def test_bad(tpw, kw, text):
            with pytest.raises(LoadError, match=text):
                tpw.load(os.environ["FAKE_URL"], **kw)

        def test_not_a_server(tpw):
            with pytest.raises(LoadError, match="must be a URL"):
                tpw.load(42, concurrency=1)
        """
    )
    tpwtester.runpytest("--tpw", *FAST).assert_outcomes(passed=5)
    tpwtester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=5)
    assert fake.received == 0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic only, whatever proxy the environment names."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_an_async_test_can_drive_a_load(tpwtester: pytest.Pytester, fake: Behaviour) -> None:
    pytest.importorskip("anyio")
    tpwtester.makepyfile(
        test_async="""
        import os
        import pytest

        @pytest.mark.anyio
        async def test_served(tpw):
            out = tpw.load(os.environ["FAKE_URL"], rate=50.0, duration_s=0.2, max_tokens=4)
            assert out.requests > 0 and out.errors == 0

        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        """
    )
    tpwtester.runpytest("--tpw", *FAST).assert_outcomes(passed=1)
