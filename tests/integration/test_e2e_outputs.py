"""What a measured run leaves for dashboards and people: exports, the report, progress."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
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


def in_a_terminal(folder: Path, *args: str, columns: int = 100) -> tuple[bytes, list[str]]:
    """pytest run in a real pseudo-terminal of ``columns`` columns: the bytes it wrote, and
    the screen they leave, as a VT100 terminal shows it (pyte)."""
    pyte = pytest.importorskip("pyte", reason="pip install pyte (in the dev extra)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    env["COLUMNS"] = str(columns)
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=folder,
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
    raw = b"".join(chunks)
    screen = pyte.Screen(columns, 500)
    pyte.ByteStream(screen).feed(raw)
    return raw, [line.rstrip() for line in screen.display if line.strip()]


@pytest.mark.parametrize("verbose", [False, True], ids=["dots", "-v"])
def test_progress_in_a_terminal_keeps_pytests_own_progress_intact(
    tmp_path: Path, verbose: bool
) -> None:
    """The live text is drawn after pytest's progress and erased before pytest writes: the
    dots stay on one line with their [100%], test names under -v stay one a line."""
    (tmp_path / "test_out.py").write_text(SUITE, encoding="utf-8")
    (tmp_path / "test_plain.py").write_text("def test_p():\n    pass\n", encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ntpw_sensor = sim\ntpw_max_delay = 0\n", encoding="utf-8"
    )
    args = ["--tpw", *FAST, "-p", "no:xdist", *(["-v"] if verbose else [])]
    raw, screen = in_a_terminal(tmp_path, *args)
    collected = next(i for i, line in enumerate(screen) if line.startswith("collected "))
    assert screen[collected + 1].startswith("tpw: cost: 3 measured test(s)")
    first = next(i for i, line in enumerate(screen) if line.startswith("test_"))
    summary = next(i for i, line in enumerate(screen) if "tokens per joule" in line)
    progress = screen[first:summary]
    # the live text was drawn, whatever the timing: each measurement's start and end
    assert b"test_out.py::test_gen[0]: warming up" in raw
    assert b"tokens/J, n=3" in raw
    assert b"tpw [1]" not in raw  # not logged line by line
    if verbose:
        pattern = r"test_(out|plain)\.py::test_\w+(\[\d\])? PASSED +\[ *\d+%\]"
        assert len(progress) == 4, progress
    else:
        pattern = r"test_(out|plain)\.py \.+ +\[ *\d+%\]"
        assert len(progress) == 2, progress  # one line per file: the name, dots, percent
    assert all(re.fullmatch(pattern, line) for line in progress), progress
    assert any("4 passed" in line for line in screen)
