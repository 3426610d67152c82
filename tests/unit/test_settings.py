"""Settings parsers, marker validation and marker overrides (pytest-free core)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.config.settings import (
    BY_FIELD,
    MARKER_FIELDS,
    MARKER_HELP,
    OPTIONS,
    MarkerArgs,
    Settings,
    TestSettings,
    parse_confidence,
    parse_devices,
    parse_fraction,
    parse_marker,
)
from pytest_tpw.errors import MarkerError

NODE = "tests/test_model.py::test_generate[batch-8]"
ALLOWED = (
    "min_tokens_per_joule",
    "max_joules_per_token",
    "max_watts",
    "min_tokens_per_second",
    "tolerance",
    "rounds",
    "warmup",
    "devices",
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
    assert args == MarkerArgs(40.0, 0.05, 650.0, 900.0, 0.03, 10, 2, (0,), True)  # "3%" = 3 / 100


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
        ("max_watts", True, "a positive number (watts)"),
        ("max_watts", 0, "a positive number (watts)"),
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
    every = MarkerArgs(1.0, 2.0, 3.0, 4.0)
    assert every.budgets() == {
        "min_tokens_per_joule": 1.0,
        "max_joules_per_token": 2.0,
        "max_watts": 3.0,
        "min_tokens_per_second": 4.0,
    }


def test_overrides_names_the_four_session_settings() -> None:
    assert MarkerArgs().overrides() == {
        "tolerance": None,
        "rounds": None,
        "warmup": None,
        "devices": None,
    }
    args = MarkerArgs(max_watts=1.0, tolerance=0.03, rounds=4, warmup=0, devices=(1,), canary=True)
    assert args.overrides() == {"tolerance": 0.03, "rounds": 4, "warmup": 0, "devices": (1,)}


# -- Settings.for_test and TestSettings.fixed_rounds -----------------------------------------

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
        strict=True, record=True, min_window=0.5, max_delay=0.0, confidence=0.95, noise_floor=0.02
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
    ("settings", "expected"),
    [
        (Settings(), 5),
        (Settings(update=True), 20),
        (Settings(record=True), 20),
        (Settings(update_missing=True), 20),
        (Settings(rounds=7), 7),
        (Settings(rounds=3, update=True), 3),
        (Settings(rounds=2, update_missing=True), 2),
    ],
)
def test_fixed_rounds(settings: Settings, expected: int) -> None:
    assert settings.for_test(None).fixed_rounds() == expected


def test_marker_rounds_wins_over_update() -> None:
    assert Settings(update=True).for_test(MarkerArgs(rounds=4)).fixed_rounds() == 4


@pytest.mark.parametrize(
    ("settings", "writes"),
    [
        (Settings(), False),
        (Settings(enabled=True, strict=True), False),
        (Settings(update=True), True),
        (Settings(record=True), True),
        (Settings(update_missing=True), True),
    ],
)
def test_writes_baselines(settings: Settings, writes: bool) -> None:
    assert settings.writes_baselines is writes


def test_test_settings_is_not_collected_as_a_test_class() -> None:
    assert TestSettings.__test__ is False


# -- the OPTIONS table -----------------------------------------------------------------------


def test_table_fields_are_unique_and_flags_follow_the_naming_rule() -> None:
    fields = [o.field for o in OPTIONS]
    assert len(fields) == len(set(fields))
    for opt in OPTIONS:
        if opt.flag is not None:
            assert opt.flag == "--tpw-" + opt.field.replace("_", "-"), opt.field
        assert opt.ini == "tpw_" + opt.field


def test_every_ini_setting_is_a_settings_field_with_the_table_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for opt in OPTIONS:
        if not opt.ini_key:
            continue
        assert opt.field in fields, f"{opt.field} is in the table but not in Settings"
        if opt.default is not None and not opt.switch:
            assert fields[opt.field].default == opt.parse(opt.default), opt.field


def test_record_and_lock_timeout_are_in_the_table() -> None:
    record = BY_FIELD["record"]
    assert record.flag == "--tpw-record" and record.switch
    assert "add" in record.help  # --tpw-record extends the history
    update = BY_FIELD["update"]
    assert "replaced" in update.help  # --tpw-update replaces the history
    timeout = BY_FIELD["lock_timeout"]
    assert timeout.flag == "--tpw-lock-timeout" and timeout.default is None
    assert timeout.parse("2.5") == 2.5
    with pytest.raises(ValueError):
        timeout.parse("0")
    assert Settings().record is False and Settings().lock_timeout is None


def test_marker_fields_are_the_table_rows_with_a_marker_check() -> None:
    assert set(MARKER_FIELDS) == set(ALLOWED)
    assert {f.name for f in dataclasses.fields(MarkerArgs)} == set(ALLOWED)
    for name in ALLOWED:
        assert BY_FIELD[name].marker is not None and BY_FIELD[name].expected, name


def test_marker_help_lists_every_marker_argument_of_the_table() -> None:
    # MARKER_HELP is generated from the table: each marker argument appears with its default
    for name in MARKER_FIELDS:
        default = "False" if name == "canary" else "None"
        assert f"{name}={default}" in MARKER_HELP, name
    assert MARKER_HELP.startswith("tpw(") and "pytest-tpw" in MARKER_HELP
    inside = MARKER_HELP[len("tpw(") : MARKER_HELP.index(")")]
    assert [part.split("=")[0] for part in inside.split(", ")] == [
        f.name for f in dataclasses.fields(MarkerArgs)
    ]
