"""The report's text and data: number formatting, table, Markdown, JUnit, JSON."""

from __future__ import annotations

import re

import pytest

from pytest_tpw.measure.samples import Measurement, Result, Sample
from pytest_tpw.present.report import (
    MIN_NAME,
    Row,
    SensorInfo,
    junit_properties,
    num,
    sensor_line,
    table_lines,
    terminal_lines,
    totals_line,
)
from pytest_tpw.verdict import Verdict


def result(
    name: str = "t",
    tpj: float = 100.0,
    *,
    ci: tuple[float, float] | None = (90.0, 110.0),
    verdict: Verdict = Verdict.NO_BASELINE,
    n: int = 5,
) -> Result:
    return Result(
        name=name,
        tokens_per_joule=tpj,
        joules_per_token=1.0 / tpj,
        watts=250.0,
        tokens_per_second=25000.0,
        n=n,
        ci=ci,
        verdict=verdict,
        samples=(tpj,) * n,
        provenance="measured",
    )


def sample(tokens: int, joules: float, seconds: float = 1.0) -> Sample:
    return Sample(
        tokens=tokens,
        joules=joules,
        seconds=seconds,
        calls=1,
        domains={"gpu:0": joules},
        state={"temp": 60},
        warnings=[],
    )


SENSOR = SensorInfo("nvml", "measured", "NVML total-energy counter")

# -- num -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0, "0"),
        (0.0, "0"),
        (1e-5, "1.000e-05"),  # below 1e-3: exponent, 4 significant digits
        (0.0123, "0.0123"),  # 4 significant digits without trailing zeros (%g)
        (0.001, "0.001"),  # the smallest magnitude shown plainly
        (12.345, "12.35"),  # 12.345 is stored as 12.3450000000000006 -> rounds up
        (1234.0, "1234"),
        (12345.6, "12346"),  # >= 1e4: no decimals rather than an exponent
        (999999.4, "999999"),
        (1e7, "1.000e+07"),  # >= 1e6: exponent
        (-12.345, "-12.35"),
    ],
)
def test_num(value: float | None, text: str) -> None:
    assert num(value) == text


def test_num_just_below_ten_thousand_has_no_exponent() -> None:
    assert "e" not in num(9999.96)


# -- table_lines ---------------------------------------------------------------------------


def column_starts(line: str) -> list[int]:
    """Start of every cell: a non-blank after two blanks (or at 0)."""
    return [m.start() for m in re.finditer(r"(?:(?<=  )|^)\S", line)]


def test_table_lines_columns_aligned_and_names_not_cut() -> None:
    long_name = "tests/test_models.py::test_generate_with_a_very_long_name[" + "x" * 60 + "]"
    rows = [
        Row("a", result("a", 123.456, ci=(120.0, 130.0)), baseline=118.0),
        Row(long_name, result(long_name, 0.5, ci=None, verdict=Verdict.REGRESSED), baseline=None),
        Row("b", result("b", 45678.9, ci=(40000.0, 50000.0), verdict=Verdict.IMPROVED)),
    ]
    lines = table_lines(rows, 0.9)
    assert len(lines) == 4  # header + 3 rows
    header = lines[0]
    assert header.startswith("measurement")
    assert "90% CI" in header  # the confidence shows in the header
    # the long name appears whole
    assert lines[2].startswith(long_name + "  ")
    # every right-aligned column ends at the same offset in every line:
    # find the header's column ends and check the cell before each is non-blank in all lines
    cells = r"vs baseline \[\d+% CI\]|\S+(?: CI)?"
    widths_end = [m.end() for m in re.finditer(cells, header)][1:-1]
    for line in lines:
        for end in widths_end:
            assert line[end - 1] != " ", (line, end)
            assert line[end : end + 2] == "  ", (line, end)
    # the verdict column starts at the same offset in every line
    verdict_at = header.index("verdict")
    assert lines[1][verdict_at:] == "NO_BASELINE"
    assert lines[2][verdict_at:] == "REGRESSED"
    assert lines[3][verdict_at:] == "IMPROVED"
    # same number of cells everywhere; a missing CI / baseline / change shows "-"
    long_cells = lines[2].split()
    assert long_cells[2] == "-"  # CI
    assert long_cells[-3:-1] == ["-", "-"]  # baseline, change
    assert lines[3].split()[-3:-1] == ["-", "-"]
    for line in lines[1:]:
        assert len(column_starts(line)) == len(column_starts(lines[1]))


def test_table_lines_values() -> None:
    row = Row("m", result("m", 104.0, ci=(100.0, 108.0), n=5), baseline=100.0)
    cells = table_lines([row], 0.95)[1].split()
    # name, tokens/J, CI "[100," "108]", J/token 1/104 = 0.009615..., W, tokens/s, n,
    # baseline, change 104/100 - 1 = +4.0 %, verdict
    assert cells == [
        "m",
        "104",
        "[100,",
        "108]",
        "0.009615",
        "250",
        "25000",
        "5",
        "100",
        "+4.0%",
        "NO_BASELINE",
    ]
    assert "95% CI" in table_lines([row], 0.95)[0]


@pytest.mark.parametrize(
    ("tpj", "baseline", "change"),
    [
        (104.0, 100.0, "+4.0%"),  # 104 / 100 - 1 = 0.04
        (96.5, 100.0, "-3.5%"),  # 96.5 / 100 - 1 = -0.035
        (100.0, 100.0, "+0.0%"),
        (50.0, 40.0, "+25.0%"),  # 50 / 40 - 1 = 0.25
    ],
)
def test_change_column_sign(tpj: float, baseline: float, change: str) -> None:
    row = Row("m", result("m", tpj), baseline=baseline)
    assert table_lines([row], 0.9)[1].split()[-2] == change


def test_row_change_is_none_without_baseline() -> None:
    assert Row("m", result()).change is None
    assert Row("m", result("m", 110.0), baseline=100.0).change == pytest.approx(0.1)


def test_table_marks_rows_with_warnings() -> None:
    rows = [Row("m", result(), warnings=2), Row("n", result())]
    lines = table_lines(rows, 0.9)
    assert lines[1].endswith("NO_BASELINE (!)")
    assert lines[2].endswith("NO_BASELINE")


def test_row_verdict_overrides_the_results_and_ratio_the_change() -> None:
    # the judge's final verdict (after FDR) and its ratio (canary shift divided out) win
    row = Row(
        "m",
        result("m", 110.0, verdict=Verdict.REGRESSED),
        baseline=100.0,
        verdict=Verdict.INCONCLUSIVE,
        ratio=1.02,
    )
    assert row.final_verdict is Verdict.INCONCLUSIVE
    assert row.change == pytest.approx(0.02)
    line = table_lines([row], 0.9)[1]
    assert line.endswith("INCONCLUSIVE") and "+2.0%" in line
    unjudged = Row("m", result("m", verdict=Verdict.REGRESSED))
    assert unjudged.final_verdict is Verdict.REGRESSED


# -- sensor_line / totals_line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("provenance", "label", "absent"),
    [
        ("measured", "MEASURED", ("ESTIMATED", "SIMULATED")),
        ("estimated", "ESTIMATED", ("MEASURED", "SIMULATED")),
        ("simulated", "SIMULATED", ("MEASURED", "ESTIMATED")),
    ],
)
def test_sensor_line_says_provenance(provenance: str, label: str, absent: tuple[str, ...]) -> None:
    line = sensor_line(SensorInfo("s", provenance, "how it works"))
    assert f"joules {label}" in line
    assert line.startswith("sensor: s (how it works)")
    for other in absent:
        assert other not in line


def test_totals_line_arithmetic() -> None:
    m1 = Measurement("t1", None, "nvml", "measured", samples=[sample(100, 4.0), sample(50, 1.0)])
    m2 = Measurement("t2", "x", "nvml", "measured", samples=[sample(30, 5.0)])
    empty = Measurement("t3", None, "nvml", "measured")
    # tokens 100 + 50 + 30 = 180, joules 4 + 1 + 5 = 10, 180 / 10 = 18 tokens/J,
    # the measurement without samples is left out of the count
    assert totals_line([m1, m2, empty]) == (
        "total: 180 tokens, 10 J, 18 tokens/J overall, 2 measurement(s)"
    )


def test_totals_line_nothing_measured() -> None:
    assert totals_line([]) == "total: 0 tokens, 0 J, - tokens/J overall, 0 measurement(s)"


def test_terminal_lines() -> None:
    m = Measurement("t1", None, "nvml", "measured", samples=[sample(100, 4.0)])
    lines = terminal_lines(
        [Row("t1", result("t1"), warnings=1)], [m], SENSOR, 0.9, notes=["a note"]
    )
    # table, legend (what the level is; what (!) means), blank, totals, sensor, notes
    assert lines[2].startswith("tokens/J: the level, the 20%-trimmed geometric mean")
    assert lines[3].startswith("(!)")
    assert lines[4] == ""
    assert lines[5].startswith("total: 100 tokens, 4 J, 25 tokens/J overall")
    assert lines[6] == sensor_line(SENSOR)
    assert lines[-1] == "a note"
    assert not any(line.startswith("vs baseline:") for line in lines)  # nothing compared
    empty = terminal_lines([], [], SENSOR, 0.9)
    assert empty == [
        "no measurements: no test finished a measurement with the tpw fixture",
        sensor_line(SENSOR),
    ]


def test_the_table_shows_the_interval_that_decided_and_says_what_it_is() -> None:
    row = Row(
        "t.py::test_gen",
        result("t.py::test_gen", 36.66, ci=(35.0, 38.0)),
        baseline=34.68,
        verdict=Verdict.UNCHANGED,
        ratio=1.057,
        interval=(0.979, 1.142),
    )
    lines = terminal_lines([row], [], SENSOR, 0.9)
    assert "vs baseline [90% CI]" in lines[0]
    # the ratio's interval, not this run's level interval, beside the change
    assert "+5.7% [-2.1%, +14.2%]" in lines[1]
    assert any(line.startswith("vs baseline: this run over the baseline") for line in lines)


def test_the_verdict_column_says_what_the_run_did_with_it() -> None:
    row = Row("m", result(), baseline=100.0, verdict=Verdict.REGRESSED, label="REGRESSED, accepted")
    assert table_lines([row], 0.9)[1].endswith("REGRESSED, accepted")


def test_a_table_fits_the_terminal_by_cutting_the_head_of_long_names() -> None:
    name = "tests/models/test_generation.py::test_generate_tokens[" + "x" * 80 + "]"
    rows = [Row(name, result(name, ci=(1.0, 2.0)), baseline=1.0), Row("b", result("b"))]
    full = table_lines(rows, 0.9)
    assert full[1].startswith(name)
    fitted = table_lines(rows, 0.9, width=120)
    assert all(len(line) <= 120 for line in fitted)
    assert fitted[1].startswith("…") and "x]" in fitted[1]  # the test's own end stays
    # a narrow terminal still keeps MIN_NAME characters of each name
    narrow = table_lines(rows, 0.9, width=40)
    assert narrow[1].index(" ") == MIN_NAME
    # only the name column shrinks: the rest of every line is the same
    assert [line[MIN_NAME + 2 :] for line in narrow] == [line[len(name) + 2 :] for line in full]


def test_notes_are_said_even_without_measurements() -> None:
    # after a marker error or a failed measurement, the notes (files written...) still show
    lines = terminal_lines([], [], SENSOR, 0.9, ["baselines NOT written to x: full disk"])
    assert lines[-1] == "baselines NOT written to x: full disk"


# -- junit_properties ------------------------------------------------------------------------


def test_junit_properties_unnamed() -> None:
    props = dict(junit_properties(result("t", 123.4567891), None, SENSOR, Verdict.NO_BASELINE))
    assert all(k.startswith("tpw.") for k in props)
    assert props["tpw.measurement"] == "t"
    assert props["tpw.tokens_per_joule"] == 123.456789  # rounded to 6 decimals
    assert props["tpw.watts"] == 250.0
    assert props["tpw.n"] == 5
    assert props["tpw.verdict"] == "NO_BASELINE"
    assert props["tpw.sensor"] == "nvml"
    assert props["tpw.joules"] == "measured"
    assert props["tpw.ci"] == "90..110"


def test_junit_properties_named_and_without_ci() -> None:
    props = junit_properties(result("t::prefill", ci=None), "prefill", SENSOR, Verdict.UNCHANGED)
    keys = [k for k, _ in props]
    assert all(k.startswith("tpw[prefill].") for k in keys)
    assert "tpw[prefill].ci" not in keys
    assert "tpw[prefill].tokens_per_joule" in keys
    assert len(keys) == len(set(keys))
    assert dict(props)["tpw[prefill].verdict"] == "UNCHANGED"


def test_junit_properties_show_the_verdict_given_not_the_results() -> None:
    # the final verdict (after suite-wide FDR) may differ from the one the result carried
    props = dict(
        junit_properties(result("t", verdict=Verdict.REGRESSED), None, SENSOR, Verdict.INCONCLUSIVE)
    )
    assert props["tpw.verdict"] == "INCONCLUSIVE"


def test_a_huge_test_id_does_not_widen_every_row_of_a_log() -> None:
    huge = "tests/t.py::test_x[" + "a" * 3000 + "]"
    rows = [Row(huge, result(huge)), Row("t.py::test_short", result("t.py::test_short"))]
    lines = table_lines(rows, 0.9)
    assert all(len(line) < 400 for line in lines)
    assert lines[1].startswith("…") and "a]" in lines[1]
    assert lines[2].startswith("t.py::test_short ")
