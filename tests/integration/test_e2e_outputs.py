"""What a measured run leaves for dashboards and people: exports, the report, progress."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inner_code import BUSY_WORK

SUITE = (
    BUSY_WORK
    + """
import pytest

@pytest.mark.parametrize("i", range(3))
def test_gen(tpw, i):
    tpw(work, tokens=per_us)
"""
)

FAST = ("--tpw-rounds", "3", "-p", "no:cacheprovider")


def test_exports_and_report_from_flags(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_out=SUITE)
    result = tpwtester.runpytest(
        "--tpw",
        *FAST,
        "--tpw-export=bencher=out/bmf.json",
        "--tpw-export",
        "github-action-benchmark=out/gab.json",
        "--tpw-report=out/report.md",
    )
    result.assert_outcomes(passed=3)
    keys = {f"test_out.py::test_gen[{i}]" for i in range(3)}
    bmf = json.loads((tpwtester.path / "out" / "bmf.json").read_text(encoding="utf-8"))
    assert set(bmf) == keys
    for measures in bmf.values():
        tpj = measures["tokens-per-joule"]
        assert tpj["lower_value"] <= tpj["value"] <= tpj["upper_value"]
    gab = json.loads((tpwtester.path / "out" / "gab.json").read_text(encoding="utf-8"))
    assert {entry["name"] for entry in gab} == keys
    assert all(e["unit"] == "tokens/J" and e["range"].startswith("±") for e in gab)
    report = (tpwtester.path / "out" / "report.md").read_text(encoding="utf-8")
    assert report.startswith("## tokens per joule (pytest-tpw)")
    assert all(key in report for key in keys)


def test_a_bad_export_flag_is_a_usage_error_naming_it(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_out=SUITE)
    result = tpwtester.runpytest("--tpw", "--tpw-export=grafana=x.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tpw-export*grafana=x.json*bencher, github-action-benchmark*"])


def test_an_unwritable_output_fails_alone_and_the_report_still_prints(
    tpwtester: pytest.Pytester,
) -> None:
    tpwtester.makepyfile(test_out=SUITE)
    (tpwtester.path / "blocked").mkdir()  # a folder where the file should go
    result = tpwtester.runpytest("--tpw", *FAST, "--tpw-json=blocked", "--tpw-report=report.md")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # a lost output is not a pass
    result.stdout.fnmatch_lines(
        [
            "*tokens per joule*",
            "*--tpw-json NOT written to *blocked: cannot write*directory is in the way*",
        ]
    )
    assert (tpwtester.path / "report.md").exists()  # the other outputs are written


def test_progress_in_a_log_is_one_line_per_measurement(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_out=SUITE)
    result = tpwtester.runpytest_subprocess("--tpw", *FAST)
    result.assert_outcomes(passed=3)
    lines = [line for line in result.outlines if line.startswith("tpw [")]
    assert [line.split("]", 1)[0] for line in lines] == ["tpw [1", "tpw [2", "tpw [3"]
    assert all("tokens/J, n=3" in line for line in lines)
    assert "\r" not in result.stdout.str()  # nothing rewritten in a log


def test_progress_in_a_terminal_is_a_live_line(tmp_path: Path) -> None:
    (tmp_path / "test_out.py").write_text(SUITE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ntpw_sensor = sim\ntpw_max_delay = 0\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--tpw", *FAST],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode("utf-8", errors="replace")
    assert "\r\x1b[K" in screen  # the live line is rewritten in place ...
    # drawn whatever the timing: the start and the end of each measurement (rounds between
    # them are throttled to 10 updates a second)
    assert "test_out.py::test_gen[0]: warming up" in screen
    assert "test_out.py::test_gen[2]:" in screen and "tokens/J, n=3" in screen
    assert "tpw [1]" not in screen  # ... not logged line by line
    assert "3 passed" in screen
