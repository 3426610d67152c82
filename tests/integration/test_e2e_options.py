"""Flags and ini keys: ``--help``, parsing errors that name their source, precedence."""

from __future__ import annotations

import re

import pytest

#: The documented flags (README.md, Options), pinned: each must exist, with its ini twin.
SPEC_FLAGS = (
    "--tpw",
    "--tpw-update",
    "--tpw-update-missing",
    "--tpw-baseline-dir",
    "--tpw-strict",
    "--tpw-tolerance",
    "--tpw-noise-floor",
    "--tpw-confidence",
    "--tpw-fdr",
    "--tpw-rounds",
    "--tpw-warmup",
    "--tpw-min-window",
    "--tpw-sensor",
    "--tpw-devices",
    "--tpw-json",
    "--tpw-history",
)


def test_help_lists_every_flag_and_ini_twin(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    for flag in SPEC_FLAGS:
        assert re.search(rf"^\s+{re.escape(flag)}(?=[=\s,])", out, re.M), flag
        ini = flag[2:].replace("-", "_")
        assert re.search(rf"^\s+{ini} \(", out, re.M), ini
    assert "%%" not in out  # escaping for argparse must not leak into the ini help


def test_every_flag_is_accepted(pytester: pytest.Pytester) -> None:
    """Each flag of the table parses with a valid value (no 'unrecognized arguments')."""
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest(
        "--tpw",
        "--tpw-update-missing",
        "--tpw-baseline-dir",
        "bl",
        "--tpw-strict",
        "--tpw-tolerance",
        "3%",
        "--tpw-noise-floor",
        "0.5%",
        "--tpw-confidence",
        "0.95",
        "--tpw-fdr",
        "0.1",
        "--tpw-rounds",
        "3",
        "--tpw-warmup",
        "0",
        "--tpw-min-window",
        "0.02",
        "--tpw-sensor",
        "sim",
        "--tpw-devices",
        "0,1",
        "--tpw-json",
        "o.json",
        "--tpw-history",
        "4",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*tokens per joule*"])
    assert pytester.runpytest("--tpw-update", "--tpw-sensor", "sim").ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("args", "source", "why"),
    [
        (("--tpw-tolerance", "5"), "--tpw-tolerance", "*ambiguous*5%*"),
        (("--tpw-rounds", "1"), "--tpw-rounds", "*>= 2*"),
        (("--tpw-devices", "x"), "--tpw-devices", "*comma-separated GPU indices*"),
        (("--tpw-warmup", "-1"), "--tpw-warmup", "*>= 0*"),
        (("--tpw-min-window", "0"), "--tpw-min-window", "*positive*"),
    ],
)
def test_bad_flag_values_name_the_flag(
    tpwtester: pytest.Pytester, args: tuple[str, ...], source: str, why: str
) -> None:
    tpwtester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = tpwtester.runpytest("--tpw", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pytest-tpw: {source} = *{why}"])
    result.stdout.no_fnmatch_line("*passed*")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tpw_confidence = 2", "*pytest-tpw: ini tpw_confidence = '2'*"),
        ("tpw_strict = maybe", "*pytest-tpw: ini tpw_strict = 'maybe'*expected true or false*"),
    ],
)
def test_bad_ini_value_names_the_ini_key(
    pytester: pytest.Pytester, line: str, expected: str
) -> None:
    pytester.makeini(f"[pytest]\ntpw_sensor = sim\n{line}\n")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("--tpw")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


RESULT_N = """
def test_n(tpw):
    tpw(lambda: None, tokens=1)
    print("recorded n =", tpw.result.n)
"""


@pytest.mark.parametrize(
    ("flags", "expected"), [((), 3), (("--tpw-rounds", "4"), 4)], ids=["ini", "flag-over-ini"]
)
def test_flag_beats_ini(pytester: pytest.Pytester, flags: tuple[str, ...], expected: int) -> None:
    pytester.makeini("[pytest]\ntpw_sensor = sim\ntpw_max_delay = 0\ntpw_rounds = 3\n")
    pytester.makepyfile(test_prec=RESULT_N)
    result = pytester.runpytest("--tpw", "-s", *flags)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*recorded n = {expected}*"])


def test_tpw_true_in_ini_enables_measuring(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntpw = true\ntpw_sensor = sim\ntpw_max_delay = 0\ntpw_rounds = 2\n")
    pytester.makepyfile(test_ini=RESULT_N)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*recorded n = 2*", "*= tokens per joule =*", "test_ini.py::test_n *"]
    )


def test_update_and_update_missing_exclude_each_other(tpwtester: pytest.Pytester) -> None:
    tpwtester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = tpwtester.runpytest("--tpw-update", "--tpw-update-missing")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tpw-update and --tpw-update-missing*"])
