"""What a ``--tpw`` run prints and writes: terminal section, JSON, JUnit XML, step summary."""

from __future__ import annotations

import json
import platform
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TWO_TESTS = """
def test_one(tpw):
    tpw(lambda: "a b", tokens=2)

def test_named(tpw):
    tpw(lambda: "a", tokens=1, name="gen")
"""


def test_terminal_section(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "tpw: sensor sim, joules simulated*",
            "*= tokens per joule =*",
            "measurement *tokens/J*90% CI*J/token*W*tokens/s*n*baseline*vs baseline [[]90% CI]*"
            "verdict",
            "test_rep.py::test_one *3*NO_BASELINE",
            "test_rep.py::test_named::gen *3*NO_BASELINE",
            "total: * tokens, * J, * tokens/J overall, 2 measurement(s)",
            "sensor: sim *SIMULATED*",
        ]
    )


def test_json_document(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-json", "res/out.json")
    result.assert_outcomes(passed=2)
    doc = json.loads((tpwtester.path / "res" / "out.json").read_text(encoding="utf-8"))
    assert doc["schema"] == 1
    env = doc["environment"]
    assert isinstance(env["hardware_key"], str) and env["hardware_key"]
    assert env["sensor"]["name"] == "sim"
    assert env["sensor"]["provenance"] == "simulated"
    assert env["software"]["python"] == platform.python_version()
    settings = doc["settings"]
    assert settings["rounds"] == 3
    assert settings["warmup"] == 1
    assert settings["sensor"] == "sim"
    assert settings["json"] == "res/out.json"
    measurements = doc["measurements"]
    assert set(measurements) == {"test_rep.py::test_one", "test_rep.py::test_named::gen"}
    for key, per_call in (("test_rep.py::test_one", 2), ("test_rep.py::test_named::gen", 1)):
        m = measurements[key]
        assert m["sensor"] == "sim"
        assert m["verdict"] == "NO_BASELINE"
        assert len(m["samples"]) == 3
        for s in m["samples"]:
            assert isinstance(s["tokens"], int) and isinstance(s["calls"], int)
            assert s["tokens"] == per_call * s["calls"]
            assert s["joules"] > 0 and s["seconds"] > 0
            assert s["tokens_per_joule"] == pytest.approx(s["tokens"] / s["joules"])
        assert m["summary"]["n"] == 3


def test_json_path_is_relative_to_the_invocation_dir(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    sub = tpwtester.mkdir("sub")
    monkeypatch.chdir(sub)
    result = tpwtester.runpytest(
        "--tpw", "--tpw-rounds", "3", "--tpw-json", "out.json", str(tpwtester.path / "test_rep.py")
    )
    result.assert_outcomes(passed=2)
    assert (sub / "out.json").is_file()
    assert not (tpwtester.path / "out.json").exists()


def test_environment_hook_adds_to_the_json(tpwtester: pytest.Pytester) -> None:
    tpwtester.makeconftest(
        """
        def pytest_tpw_environment(environment):
            environment["cluster"] = "rack-7"
        """
    )
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3", "--tpw-json", "out.json")
    result.assert_outcomes(passed=2)
    doc = json.loads((tpwtester.path / "out.json").read_text(encoding="utf-8"))
    assert doc["environment"]["cluster"] == "rack-7"


def test_junit_xml_properties(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=2)
    root = ET.parse(tpwtester.path / "junit.xml").getroot()
    props: dict[str, dict[str, str]] = {}
    for case in root.iter("testcase"):
        props[case.attrib["name"]] = {
            p.attrib["name"]: p.attrib["value"] for p in case.iter("property")
        }
    assert float(props["test_one"]["tpw.tokens_per_joule"]) > 0
    assert props["test_one"]["tpw.verdict"] == "NO_BASELINE"
    assert float(props["test_named"]["tpw[gen].tokens_per_joule"]) > 0
    assert "tpw.tokens_per_joule" not in props["test_named"]


def test_github_step_summary(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    result = tpwtester.runpytest("--tpw", "--tpw-rounds", "3")
    result.assert_outcomes(passed=2)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")  # appended, not overwritten
    lines = text.splitlines()
    assert any(line.startswith("| measurement | tokens/J") for line in lines)
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) == 2
    # the report's own layout (pytest_tpw.mdreport): a heading, the counts, then every
    # measurement not regressed or improved in a collapsed table, sorted by key
    assert "## tokens per joule (pytest-tpw)" in lines
    assert "**0 regressed**, **0 improved**, of 2 measurement(s)." in lines
    assert "<summary>All other measurements (2)</summary>" in lines
    assert rows[0].startswith("| `test_rep.py::test_named::gen` |")
    assert rows[1].startswith("| `test_rep.py::test_one` |")
    assert all(row.rstrip().endswith("| NO_BASELINE |") for row in rows)
    assert not any(line.startswith("### Run-wide") for line in lines)  # nothing to compare
    assert any("SIMULATED" in line for line in lines)


def test_github_step_summary_untouched_without_tpw(
    tpwtester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    tpwtester.makepyfile(test_rep=TWO_TESTS)
    tpwtester.runpytest().assert_outcomes(passed=2)
    assert summary.read_text(encoding="utf-8") == "earlier step\n"
