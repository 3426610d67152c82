"""The Markdown report: order of sections, numbers, escaping, and the size limit."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.cli import main as cli
from pytest_tpw.present import mdreport


def verdict_for(ratio: float) -> str:
    if ratio < 0.9:
        return "REGRESSED"
    if ratio < 0.95:
        return "MINOR_REGRESSION"
    return "IMPROVED" if ratio > 1.05 else "UNCHANGED"


def results_doc(n: int = 300, seed: int = 0, provenance: str = "measured") -> dict[str, Any]:
    """A synthetic --tpw-json document: n measurements compared with a baseline."""
    rng = random.Random(seed)
    measurements: dict[str, Any] = {}
    for i in range(n):
        base = rng.uniform(5, 500)
        ratio = rng.uniform(0.8, 1.2)
        level = base * ratio
        measurements[f"tests/test_m.py::test_{i:03d}"] = {
            "nodeid": f"tests/test_m.py::test_{i:03d}",
            "verdict": verdict_for(ratio),
            "samples": [],
            "summary": {
                "tokens_per_joule": level,
                "joules_per_token": 1 / level,
                "watts": 300.0,
                "tokens_per_second": level * 300,
                "n": 20,
                "ci": [level * 0.98, level * 1.02],
            },
            "comparison": {
                "verdict": verdict_for(ratio),
                "baseline_tokens_per_joule": base,
                "tolerance": 0.05,
                "ratio": ratio,
                "ci": [ratio * 0.98, ratio * 1.02],
                "p_regression": 0.0001,
                "p_adjusted": 0.0004,
            },
        }
    return {
        "schema": 1,
        "settings": {"confidence": 0.9},
        "measurements": measurements,
        "environment": {
            "hardware_key": "nvidia-h100-80gb-hbm3-x1",
            "commit": "abc1234",
            "sensor": {
                "name": "nvml",
                "provenance": provenance,
                "method": "NVML total energy counter",
            },
            "software": {"torch": "2.13.0", "driver": "560.28", "vllm": None},
        },
    }


def one(key: str, verdict: str, ratio: float, base: float = 100.0) -> dict[str, Any]:
    doc = results_doc(0)
    level = base * ratio
    doc["measurements"][key] = {
        "verdict": verdict,
        "summary": {"tokens_per_joule": level, "n": 12, "ci": [level * 0.99, level * 1.01]},
        "comparison": {
            "verdict": verdict,
            "baseline_tokens_per_joule": base,
            "ratio": ratio,
            "ci": [ratio - 0.01, ratio + 0.01],
            "p_adjusted": 0.0123,
        },
    }
    return doc


RUN_WIDE = {
    "hardware_key": "nvidia-h100-80gb-hbm3-x1",
    "ratio": 0.969,
    "ci": [0.962, 0.976],
    "verdict": "STACK_REGRESSION",
    "n_tests": 40,
    "stack_changes": ["torch 2.12.0 -> 2.13.0"],
    "suspects": ["torch"],
    "text": "run-wide: -3.1 % [-3.8, -2.4]; stack changed: torch 2.12.0 -> 2.13.0",
    "notes": ["the tests differ in how far their level moves between sessions"],
}


def test_sections_come_in_order_with_their_numbers() -> None:
    doc = results_doc(60)
    doc["run_wide"] = [RUN_WIDE]
    text = mdreport.render(doc)
    heads = [
        text.index(h)
        for h in (
            mdreport.HEADING,
            "### Run-wide",
            "### Regressions",
            "### Improvements",
            "<details>",
            "### Stack",
            "**Sensor:**",
        )
    ]
    assert heads == sorted(heads)
    assert "STACK_REGRESSION" in text and "torch 2.12.0 -> 2.13.0" in text
    assert "0.969 [0.962, 0.976]" in text and "over 40 tests" in text
    assert "  - the tests differ in how far their level moves between sessions" in text
    n_reg = sum(
        m["verdict"] in ("REGRESSED", "MINOR_REGRESSION") for m in doc["measurements"].values()
    )
    assert f"### Regressions ({n_reg})" in text
    assert "<summary>All other measurements" in text and "</details>" in text
    assert "not shown" not in text


def test_a_regression_row_shows_now_baseline_ratio_interval_and_p() -> None:
    text = mdreport.render(one("t.py::test_x", "REGRESSED", 0.8))
    row = next(line for line in text.splitlines() if "test_x" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "`t.py::test_x`",
        "80",
        "100",
        "-20.0%",
        "0.800 [0.790, 0.810]",
        "0.012",
        "REGRESSED",
    ]


def test_regressions_sorted_worst_first_and_improvements_best_first() -> None:
    text = mdreport.render(results_doc(80))
    reg = text[text.index("### Regressions") : text.index("### Improvements")]
    ratios = [float(m) for m in re.findall(r"\| (\d\.\d{3}) \[", reg)]
    assert ratios and ratios == sorted(ratios)
    imp = text[text.index("### Improvements") : text.index("<details>")]
    ratios = [float(m) for m in re.findall(r"\| (\d\.\d{3}) \[", imp)]
    assert ratios and ratios == sorted(ratios, reverse=True)


@pytest.mark.parametrize("limit", [2_000, 5_000, 20_000])
def test_the_report_fits_the_limit_and_says_what_it_left_out(limit: int) -> None:
    doc = results_doc(300)
    text = mdreport.render(doc, limit)
    assert len(text.encode("utf-8")) < limit
    shown = sum(1 for line in text.splitlines() if line.startswith("| `tests/"))
    match = re.search(r"… (\d+) more measurement\(s\) not shown; see the JSON", text)
    assert match is not None
    assert shown + int(match.group(1)) == 300
    assert text.rstrip().endswith(
        "**Sensor:** `nvml` (NVML total energy counter); joules measured."
    )


def test_collapsed_rows_go_before_regressions() -> None:
    doc = results_doc(300)
    n_reg = sum(
        m["verdict"] in ("REGRESSED", "MINOR_REGRESSION") for m in doc["measurements"].values()
    )
    full = mdreport.render(doc, mdreport.STEP_SUMMARY_LIMIT)
    assert "not shown" not in full
    reg_size = len(full[: full.index("### Improvements")].encode())
    text = mdreport.render(doc, reg_size + 1500)
    reg = text[text.index("### Regressions") :]
    assert sum(1 for line in reg.split("###")[1].splitlines() if line.startswith("| `")) == n_reg
    others = text[text.index("<details>") : text.index("</details>")]
    assert "| `tests/" not in others  # the collapsed table went first


def test_names_with_pipes_and_backticks_stay_in_their_cell() -> None:
    text = mdreport.render(one("t.py::test_x[a|b`c]", "REGRESSED", 0.8))
    row = next(line for line in text.splitlines() if "test_x" in line)
    assert "``" in row and "a\\|b`c" in row
    cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
    assert len(cells) == 7
    assert mdreport.code("a`b") == "`` a`b ``"
    assert mdreport.code("plain") == "`plain`"


@pytest.mark.parametrize(
    "provenance,said", [("estimated", "ESTIMATED"), ("simulated", "SIMULATED")]
)
def test_estimated_and_simulated_joules_are_said_plainly(provenance: str, said: str) -> None:
    text = mdreport.render(results_doc(3, provenance=provenance))
    assert f"joules {said}" in text and "[!WARNING]" in text


def test_stack_lists_known_software_and_no_run_wide_without_it() -> None:
    text = mdreport.render(results_doc(3))
    assert "Run-wide" not in text
    assert "torch `2.13.0`" in text and "driver `560.28`" in text and "vllm" not in text
    assert "commit `abc1234`" in text


def test_empty_document_and_too_small_limit() -> None:
    assert "No measurements" in mdreport.render(results_doc(0))
    with pytest.raises(ValueError, match="too small"):
        mdreport.render(results_doc(1), 100)


def test_cli_report_writes_markdown_under_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results_doc(300)))
    assert cli.main(["report", str(path), "--limit", "3000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(mdreport.HEADING) and len(out.encode()) < 3000
    target = tmp_path / "summary.md"
    assert cli.main(["report", str(path), "-o", str(target)]) == 0
    assert target.read_text().startswith(mdreport.HEADING)
    with pytest.raises(SystemExit):
        cli.main(["report", str(path), "--limit", "10"])


def test_headline_counts_regressions_drops_and_improvements() -> None:
    doc = results_doc(0)
    for i, (verdict, ratio) in enumerate(
        [
            ("REGRESSED", 0.8),
            ("MINOR_REGRESSION", 0.97),
            ("MINOR_REGRESSION", 0.96),
            ("IMPROVED", 1.2),
            ("UNCHANGED", 1.0),
        ]
    ):
        doc["measurements"].update(one(f"t::{i}", verdict, ratio)["measurements"])
    text = mdreport.render(doc)
    assert (
        "**1 regressed**, 2 dropped within the tolerance, **1 improved**, of 5 measurement(s)."
    ) in text
    assert "### Regressions (3)" in text and "### Improvements (1)" in text
    assert "All other measurements (1)" in text


def test_text_from_a_results_file_cannot_become_markup() -> None:
    """A results file is data: its run-wide text, notes, verdicts and sensor method come out
    as plain text (no image, link, heading, HTML or @mention), and a string where a list of
    stack changes belongs is not spelt out letter by letter."""
    doc: dict[str, Any] = {
        "schema": 1,
        "measurements": {
            "t::a": one("t::a", "REGRESSED", 0.8)["measurements"]["t::a"],
            "t::b": one("t::b", "<img src=x onerror=alert(1)>", 1.0)["measurements"]["t::b"],
        },
        "environment": {
            "sensor": {"name": "nvml", "provenance": "measured", "method": "![m](http://e/x)"}
        },
        "run_wide": [
            {
                "hardware_key": "k",
                "verdict": "**BOLD** <b>",
                "text": "![img](http://evil/x.png) @octocat\n# heading <script>x</script>",
                "notes": ["[click](http://evil) @team"],
                "stack_changes": "driver",
                "suspects": 5,
            }
        ],
    }
    text = mdreport.render(doc)
    outside_code = re.sub(r"`[^`]*`", "", text)  # a code span shows its text as it is
    for markup in ("![", "](http", "<img", "<script", "<b>", "@octocat", "@team", "\n# "):
        assert markup not in outside_code, markup
    assert "`**BOLD** <b>`" in text  # an unknown verdict: shown as code, inert
    assert "`<img src=x onerror=alert(1)>`" in text
    assert "stack changes" not in text and "Changed since the baseline" not in text
    assert "&#64;octocat" in text  # the words are kept, the mention is not


HEALTH = {
    "counter_advances": True,
    "update_period_s": 0.1,
    "idle_watts": 70.04,
    "dropped_reads": 1,
    "invalid_windows": 2,
    "notes": ["1 window(s) discarded: the energy counter went backwards"],
}


def test_the_sensor_health_follows_the_sensor_line() -> None:
    doc = results_doc(2)
    doc["environment"]["sensor"]["health"] = dict(HEALTH)
    text = mdreport.render(doc)
    line = (
        "**Sensor health:** counter advancing yes, update period 100 ms, idle 70.04 W, "
        "dropped reads 1, invalid windows 2."
    )
    assert line in text
    assert text.index("**Sensor:**") < text.index(line)
    assert "- " + mdreport.plain(HEALTH["notes"][0]) in text  # type: ignore[index]
    doc["environment"]["sensor"]["health"] = {**HEALTH, "counter_advances": False}
    assert "counter advancing **NO**" in mdreport.render(doc)


def test_a_simulated_sensor_health_is_shown_only_when_a_window_was_lost() -> None:
    doc = results_doc(2, provenance="simulated")
    quiet = {**HEALTH, "dropped_reads": 0, "invalid_windows": 0, "notes": []}
    doc["environment"]["sensor"]["health"] = quiet
    assert "Sensor health" not in mdreport.render(doc)
    doc["environment"]["sensor"]["health"] = {**quiet, "invalid_windows": 1}
    assert "invalid windows 1" in mdreport.render(doc)


def test_implausible_results_are_listed_in_a_warning() -> None:
    doc = results_doc(2)
    key = next(iter(doc["measurements"]))
    doc["measurements"][key]["implausible"] = [f"{key}: implausible: average power 2800 W"]
    text = mdreport.render(doc)
    assert "> **Implausible results**" in text
    assert "> - " + mdreport.plain(f"{key}: implausible: average power 2800 W") in text
    assert "Implausible" not in mdreport.render(results_doc(2))
