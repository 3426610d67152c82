"""Settings parsers, marker validation and marker overrides (pytest-free core)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.config.options import (
    FIELD,
    FLAG,
    OPTIONS,
    PARSER,
    SCOPE,
    TRAITS,
    dest,
    ini_name,
    marker_help,
)
from pytest_tpw.config.settings import (
    MARKER_FIELDS,
    PARSERS,
    MarkerArgs,
    Settings,
    TestSettings,
    build,
    default,
    parse_confidence,
    parse_devices,
    parse_fraction,
    parse_marker,
)
from pytest_tpw.errors import MarkerError, SettingError

NODE = "tests/test_model.py::test_generate[batch-8]"
ALLOWED = (
    "tolerance",
    "rounds",
    "warmup",
    "devices",
    "min_tokens_per_joule",
    "max_joules_per_token",
    "max_watts",
    "min_tokens_per_second",
    "max_latency",
    "gpus",
    "hosts",
    "canary",
)

# -- parse_fraction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5%", 0.05),  # 5 / 100
        ("0.05", 0.05),
        (" 5% ", 0.05),  # surrounding blanks are stripped
        ("0%", 0.0),
        ("0", 0.0),
        ("99.5%", 0.995),  # 99.5 / 100
        ("0.999", 0.999),
        ("12.5%", 0.125),
    ],
)
def test_parse_fraction_accepts(text: str, expected: float) -> None:
    assert parse_fraction(text) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_parse_fraction_bare_integer_is_ambiguous_and_suggests_percent() -> None:
    with pytest.raises(ValueError, match=r"ambiguous") as info:
        parse_fraction("5")
    assert "'5%'" in str(info.value)


@pytest.mark.parametrize("text", ["1", "1.0", "50"])
def test_parse_fraction_refuses_bare_numbers_of_one_or_more(text: str) -> None:
    with pytest.raises(ValueError, match=r"ambiguous"):
        parse_fraction(text)


@pytest.mark.parametrize("text", ["150%", "100%", "-1%", "-0.5", "nan", "nan%", "-inf"])
def test_parse_fraction_refuses_out_of_range(text: str) -> None:
    with pytest.raises(ValueError, match=r"between 0% and 100%"):
        parse_fraction(text)


@pytest.mark.parametrize("text", ["abc", "", "%", "5%%", "inf"])
def test_parse_fraction_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fraction(text)


def test_parse_fraction_garbage_message_says_what_is_allowed() -> None:
    with pytest.raises(ValueError) as info:
        parse_fraction("abc")
    assert "%" in str(info.value)


# -- parse_confidence -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.90", 0.90), ("90%", 0.90), ("0.5", 0.5), ("50%", 0.5), ("0.999", 0.999), ("99.9%", 0.999)],
)
def test_parse_confidence_accepts(text: str, expected: float) -> None:
    assert parse_confidence(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text", ["0.49", "49.9%", "0", "0%"])
def test_parse_confidence_refuses_below_half(text: str) -> None:
    with pytest.raises(ValueError, match=r"at least 0\.5"):
        parse_confidence(text)


@pytest.mark.parametrize("text", ["1", "100%", "95", "abc", "nan"])
def test_parse_confidence_refuses_one_and_above_or_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_confidence(text)


# -- parse_devices --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,1", (0, 1)),
        ("0", (0,)),
        (" 3 , 1 ", (3, 1)),
        ("all", None),
        ("ALL", None),
        (" all ", None),
    ],
)
def test_parse_devices_accepts(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_devices(text) == expected


@pytest.mark.parametrize("text", ["", " ", "x", "-1", "0,-1", "0,x", "1.5", ","])
def test_parse_devices_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"'all' or comma-separated GPU indices"):
        parse_devices(text)


# -- parse_marker: accepted values ----------------------------------------------------------


def test_parse_marker_empty_gives_defaults() -> None:
    assert parse_marker(NODE, (), {}) == MarkerArgs()


@pytest.mark.parametrize(
    "name",
    ["min_tokens_per_joule", "max_joules_per_token", "max_watts", "min_tokens_per_second"],
)
@pytest.mark.parametrize(("value", "expected"), [(40, 40.0), (0.05, 0.05), (1e-9, 1e-9)])
def test_parse_marker_number_accepted(name: str, value: float, expected: float) -> None:
    parsed = getattr(parse_marker(NODE, (), {name: value}), name)
    assert parsed == expected
    assert type(parsed) is float  # an int budget becomes a float


@pytest.mark.parametrize(
    ("value", "expected"), [("3%", 0.03), (0.03, 0.03), ("0.03", 0.03), ("0.5%", 0.005)]
)
def test_parse_marker_tolerance_accepted(value: object, expected: float) -> None:
    assert parse_marker(NODE, (), {"tolerance": value}).tolerance == pytest.approx(expected)


@pytest.mark.parametrize("value", [2, 3, 50])
def test_parse_marker_rounds_accepted(value: int) -> None:
    assert parse_marker(NODE, (), {"rounds": value}).rounds == value


@pytest.mark.parametrize("value", [0, 1, 7])
def test_parse_marker_warmup_accepted(value: int) -> None:
    assert parse_marker(NODE, (), {"warmup": value}).warmup == value


@pytest.mark.parametrize(("value", "expected"), [([0], (0,)), ([0, 1], (0, 1)), ((2,), (2,))])
def test_parse_marker_devices_accepted(value: object, expected: tuple[int, ...]) -> None:
    assert parse_marker(NODE, (), {"devices": value}).devices == expected


@pytest.mark.parametrize("value", [True, False])
def test_parse_marker_canary_accepted(value: bool) -> None:
    assert parse_marker(NODE, (), {"canary": value}).canary is value


def test_parse_marker_all_arguments_together() -> None:
    args = parse_marker(
        NODE,
        (),
        {
            "min_tokens_per_joule": 40,
            "max_joules_per_token": 0.05,
            "max_watts": 650,
            "min_tokens_per_second": 900,
            "tolerance": "3%",
            "rounds": 10,
            "warmup": 2,
            "devices": [0],
            "canary": True,
        },
    )
    assert args == MarkerArgs(  # "3%" = 3 / 100
        tolerance=0.03,
        rounds=10,
        warmup=2,
        devices=(0,),
        min_tokens_per_joule=40.0,
        max_joules_per_token=0.05,
        max_watts=650.0,
        min_tokens_per_second=900.0,
        canary=True,
    )


# -- parse_marker: refused values -----------------------------------------------------------

REFUSED = [
    # numbers: bool is not a number; strings, None, nan, inf, zero and negatives refused
    *[
        (name, v)
        for name in (
            "min_tokens_per_joule",
            "max_joules_per_token",
            "max_watts",
            "min_tokens_per_second",
        )
        for v in (True, False, "40", None, math.nan, math.inf, -math.inf, 0, -1, 0.0, [40])
    ],
    # tolerance: "3" is ambiguous, 3 is not a fraction, bools and out-of-range refused
    ("tolerance", "3"),
    ("tolerance", 3),
    ("tolerance", 1),
    ("tolerance", 1.0),
    ("tolerance", True),
    ("tolerance", "150%"),
    ("tolerance", "-1%"),
    ("tolerance", -0.01),
    ("tolerance", math.nan),
    ("tolerance", "abc"),
    ("tolerance", None),
    # rounds >= 2, an int, never a bool
    ("rounds", 1),
    ("rounds", 0),
    ("rounds", -3),
    ("rounds", True),
    ("rounds", 2.0),
    ("rounds", "5"),
    ("rounds", None),
    # warmup >= 0, an int, never a bool
    ("warmup", -1),
    ("warmup", True),
    ("warmup", False),
    ("warmup", 1.0),
    ("warmup", "1"),
    # devices: a list of non-negative ints, not a bare int or str
    ("devices", 0),
    ("devices", "0"),
    ("devices", "0,1"),
    ("devices", b"0"),
    ("devices", []),
    ("devices", [-1]),
    ("devices", [0, -1]),
    ("devices", [True]),
    ("devices", [0.0]),
    ("devices", ["0"]),
    ("devices", None),
    # canary: a bool only
    ("canary", 1),
    ("canary", 0),
    ("canary", "yes"),
    ("canary", None),
]


@pytest.mark.parametrize(("name", "value"), REFUSED)
def test_parse_marker_refuses_bad_value(name: str, value: object) -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker(NODE, (), {name: value})
    text = str(info.value)
    assert NODE in text
    assert f"{name}=" in text  # names the argument, as written in the marker
    assert "expected" in text  # and says what it expected


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("max_watts", True, "a positive number"),
        ("max_watts", 0, "'0' must be a positive finite number"),
        ("rounds", 1, "an integer >= 2"),
        ("rounds", True, "an integer >= 2"),
        ("warmup", -1, "an integer >= 0"),
        ("devices", 0, "list of GPU indices such as [0]"),
        ("devices", "0", "list of GPU indices such as [0]"),
        ("devices", [], "non-empty list"),
        ("canary", 1, "True or False"),
        ("tolerance", 3, "'3%'"),
        ("tolerance", "3", "'3%'"),
    ],
)
def test_parse_marker_message_says_what_is_allowed(name: str, value: object, allowed: str) -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker(NODE, (), {name: value})
    assert allowed in str(info.value)


def test_parse_marker_garbage_tolerance_says_what_is_allowed() -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker(NODE, (), {"tolerance": "abc"})
    assert "%" in str(info.value).split("expected", 1)[1]


def test_marker_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_marker(NODE, (), {"rounds": 1})


def test_parse_marker_unknown_argument_lists_allowed() -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker(NODE, (), {"min_tokens_per_jule": 40})
    text = str(info.value)
    assert NODE in text
    assert "'min_tokens_per_jule'" in text
    assert "unknown argument" in text
    for name in ALLOWED:
        assert name in text


def test_parse_marker_positional_argument_refused_and_lists_allowed() -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker(NODE, (40,), {})
    text = str(info.value)
    assert NODE in text
    assert "keyword arguments only" in text
    assert "(40,)" in text  # the offending positional value
    for name in ALLOWED:
        assert name in text


def test_parse_marker_positional_refused_even_with_valid_keywords() -> None:
    with pytest.raises(MarkerError, match=r"positional"):
        parse_marker(NODE, ("3%",), {"rounds": 3})


# -- MarkerArgs ------------------------------------------------------------------------------


def test_budgets_only_lists_given_budgets() -> None:
    assert MarkerArgs().budgets() == {}
    args = MarkerArgs(min_tokens_per_joule=40.0, max_watts=650.0, tolerance=0.03, rounds=3)
    assert args.budgets() == {"min_tokens_per_joule": 40.0, "max_watts": 650.0}
    every = MarkerArgs(
        min_tokens_per_joule=1.0,
        max_joules_per_token=2.0,
        max_watts=3.0,
        min_tokens_per_second=4.0,
    )
    assert every.budgets() == {
        "min_tokens_per_joule": 1.0,
        "max_joules_per_token": 2.0,
        "max_watts": 3.0,
        "min_tokens_per_second": 4.0,
    }


def test_marker_tolerance_must_lie_above_the_noise_floor() -> None:
    args = parse_marker(NODE, (), {"tolerance": "1%"})
    with pytest.raises(MarkerError) as info:
        args.check(NODE, 0.01)
    text = str(info.value)
    assert NODE in text and "tolerance=0.01" in text
    assert "noise floor (1.0%, --tpw-noise-floor)" in text
    args.check(NODE, 0.005)  # above a lower floor: fine
    MarkerArgs().check(NODE, 0.5)  # no tolerance of its own: nothing to check


@pytest.mark.parametrize(
    ("name", "value"),
    [("tolerance", "3"), ("rounds", 1), ("warmup", -1), ("max_watts", -2.0)],
)
def test_a_marker_argument_follows_its_flags_rule(name: str, value: object) -> None:
    """The marker's message carries the flag parser's own reason for the same value."""
    row = next(r for r in OPTIONS if r[FIELD] == name)
    with pytest.raises(ValueError) as flag:
        PARSERS[row[PARSER]](str(value))
    with pytest.raises(MarkerError) as marker:
        parse_marker(NODE, (), {name: value})
    assert str(flag.value) in str(marker.value)


# -- Settings.for_test -----------------------------------------

BASE = Settings(
    enabled=True,
    tolerance=0.05,
    rounds=None,
    warmup=1,
    devices=None,
    baseline_dir=Path("b"),
    sensor="sim",
)

#: What ``for_test`` copies from the session, field by field, with no marker.
SESSION_COPY: dict[str, Any] = {
    "tolerance": 0.05,
    "noise_floor": BASE.noise_floor,
    "confidence": BASE.confidence,
    "rounds": None,
    "warmup": 1,
    "devices": None,
    "min_window": None,
    "max_delay": BASE.max_delay,
    "strict": False,
    "writes_baselines": False,
    "canary": False,
    "budgets": {},
}


def test_for_test_without_marker_copies_the_session() -> None:
    expected = TestSettings(**SESSION_COPY)
    assert BASE.for_test(None) == expected
    assert BASE.for_test(MarkerArgs()) == expected


def test_for_test_budgets_and_canary_come_from_the_marker_only() -> None:
    # budgets and canary are per test: they change no session-level field
    got = BASE.for_test(MarkerArgs(min_tokens_per_joule=1.0, canary=True))
    assert got == TestSettings(
        **{**SESSION_COPY, "canary": True, "budgets": {"min_tokens_per_joule": 1.0}}
    )


@pytest.mark.parametrize(
    ("marker", "changes"),
    [
        (MarkerArgs(tolerance=0.03), {"tolerance": 0.03}),
        (MarkerArgs(rounds=7), {"rounds": 7}),
        (MarkerArgs(warmup=3), {"warmup": 3}),
        (MarkerArgs(devices=(0, 2)), {"devices": (0, 2)}),
        (
            MarkerArgs(tolerance=0.02, rounds=2, warmup=0, devices=(1,)),
            {"tolerance": 0.02, "rounds": 2, "warmup": 0, "devices": (1,)},
        ),
    ],
)
def test_for_test_overrides_only_what_the_marker_sets(
    marker: MarkerArgs, changes: dict[str, Any]
) -> None:
    got = BASE.for_test(marker)
    assert got == TestSettings(**{**SESSION_COPY, **changes})
    assert BASE.tolerance == 0.05 and BASE.rounds is None  # the session copy is untouched


def test_for_test_warmup_zero_is_an_override_not_missing() -> None:
    # warmup=0 is falsy but set: it must replace the session's 1
    assert BASE.for_test(MarkerArgs(warmup=0)).warmup == 0


def test_for_test_carries_session_only_settings() -> None:
    s = Settings(
        strict=True,
        baseline_mode="extend",
        min_window=0.5,
        max_delay=0.0,
        confidence=0.95,
        noise_floor=0.02,
    )
    got = s.for_test(MarkerArgs(tolerance=0.03))
    assert (got.strict, got.writes_baselines, got.min_window, got.max_delay) == (
        True,
        True,
        0.5,
        0.0,
    )
    assert (got.confidence, got.noise_floor, got.tolerance) == (0.95, 0.02, 0.03)


@pytest.mark.parametrize(
    ("settings", "writes"),
    [
        (Settings(), False),
        (Settings(enabled=True, strict=True), False),
        (Settings(baseline_mode="replace"), True),
        (Settings(baseline_mode="extend"), True),
        (Settings(baseline_mode="missing"), True),
    ],
)
def test_writes_baselines(settings: Settings, writes: bool) -> None:
    assert settings.writes_baselines is writes


def test_test_settings_is_not_collected_as_a_test_class() -> None:
    assert TestSettings.__test__ is False


# -- the options table ------------------------------------------------------------------------


def test_flags_follow_the_naming_rule_and_ini_twins_their_flag() -> None:
    for row in OPTIONS:
        flag = row[FLAG]
        if flag is None:
            assert ini_name(row) == ("tpw_" + row[FIELD] if row[SCOPE] == "ini" else None)
            continue
        assert ini_name(row) == dest(flag) == flag[2:].replace("-", "_")
        if not row[PARSER].startswith("mode="):
            assert flag == "--tpw-" + row[FIELD].replace("_", "-"), row[FIELD]
    flags = [r[FLAG] for r in OPTIONS if r[FLAG]]
    assert len(flags) == len(set(flags))


def test_settings_fields_are_the_tables_settings_with_their_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    table = {r[FIELD] for r in OPTIONS if r[SCOPE] != "marker"}
    assert set(fields) == table | {"enabled"}
    for field in table - {"export"}:
        assert fields[field].default == default(field), field
    assert default("tolerance") == 0.05 and default("history") == 10  # "5%", "10"
    assert default("strict") is False and default("baseline_mode") is None


def test_the_three_ways_of_writing_baselines_are_one_setting() -> None:
    modes = {r[FLAG]: r[PARSER] for r in OPTIONS if r[FIELD] == "baseline_mode"}
    assert modes == {
        "--tpw-update": "mode=replace",
        "--tpw-record": "mode=extend",
        "--tpw-update-missing": "mode=missing",
    }
    assert all("measures" in r[TRAITS] for r in OPTIONS if r[FIELD] == "baseline_mode")


def _lookup(given: dict[str, str]) -> Any:
    def raw(row: tuple[Any, ...]) -> tuple[str | None, str]:
        name = ini_name(row)
        if row[FLAG] in given:
            return given[row[FLAG]], row[FLAG]
        if name is not None and name in given:
            return given[name], f"ini {name}"
        return None, "default"

    return raw


def test_build_takes_each_value_from_its_row() -> None:
    s = build(
        _lookup({"--tpw-tolerance": "3%", "tpw_sim_watts": "250", "--tpw-record": "true"}), False
    )
    assert (s.tolerance, s.sim_watts, s.baseline_mode) == (0.03, 250.0, "extend")
    assert s.enabled  # writing baselines measures
    assert build(_lookup({}), False) == Settings()


def test_build_refuses_two_baseline_modes_naming_both() -> None:
    with pytest.raises(SettingError, match=r"--tpw-update and ini tpw_record exclude each other"):
        build(_lookup({"--tpw-update": "true", "tpw_record": "yes"}), True)


def test_build_names_where_a_bad_value_came_from() -> None:
    with pytest.raises(SettingError, match=r"^ini tpw_history = 'many': 'many' is not an integer"):
        build(_lookup({"tpw_history": "many"}), True)
    with pytest.raises(SettingError, match=r"noise floor \(5\.0%\) must be below the tolerance"):
        build(_lookup({"--tpw-noise-floor": "5%"}), True)


def test_marker_fields_are_the_table_rows_with_a_marker_in_its_order() -> None:
    assert MARKER_FIELDS == ALLOWED
    assert tuple(f.name for f in dataclasses.fields(MarkerArgs)) == ALLOWED
    assert MarkerArgs().canary is default("canary") is False


def test_marker_help_lists_every_marker_argument_of_the_table() -> None:
    help_text = marker_help()
    for name in MARKER_FIELDS:
        value = "False" if name == "canary" else "None"
        assert f"{name}={value}" in help_text, name
    inside = help_text[len("tpw(") : help_text.index(")")]
    assert [part.split("=")[0] for part in inside.split(", ")] == list(MARKER_FIELDS)
    assert help_text.startswith("tpw(") and "pytest-tpw" in help_text


def test_max_latency_takes_a_dict_of_limits_and_reaches_the_test() -> None:
    args = parse_marker("t.py::test_x", (), {"max_latency": {"tpot_p90": 0.05, "ttft_p99": 1}})
    assert args.max_latency == (("tpot_p90", 0.05), ("ttft_p99", 1.0))
    test = Settings().for_test(args)
    assert dict(test.latency_limits) == {"tpot_p90": 0.05, "ttft_p99": 1.0}
    assert Settings().for_test(None).latency_limits == {}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"tpot_p95": 0.1}, "'tpot_p95' is not a latency; use one of ttft_p50"),
        ({"tpot_p90": -1}, "a positive finite number"),
        ({"tpot_p90": "fast"}, "expected a dict of limits in seconds"),
        ({"tpot_p90": True}, "expected a dict of limits in seconds"),
        ({}, "expected a dict of limits in seconds"),
        (0.05, "expected a dict of limits in seconds"),
    ],
)
def test_max_latency_refuses_what_it_cannot_check(value: object, text: str) -> None:
    with pytest.raises(MarkerError, match=re.escape(text)) as info:
        parse_marker("t.py::test_x", (), {"max_latency": value})
    assert "t.py::test_x: @pytest.mark.tpw(max_latency=" in str(info.value)
