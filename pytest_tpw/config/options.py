"""The options table: every ``--tpw-*`` flag, ``tpw_*`` ini key and marker argument, once.

One row per setting (flag, ini twin, default, help, parser, marker check), used to register
the options, to parse them (``settings.py``) and to validate ``@pytest.mark.tpw(...)``. This
module is what every pytest start-up imports, measured or not: no dataclasses, nothing built
that only a measured run needs. Importable without pytest (only ``add_options`` takes a
parser).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tpw.errors import SettingError

if TYPE_CHECKING:
    import pytest

# -- value parsers: each takes the raw text and returns the value or raises ValueError --------


def parse_fraction(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05. A bare number of 1 or more is refused (write ``5%``)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(
            f"{raw!r} is not a percentage such as '5%' or a fraction such as 0.05"
        ) from None
    if not raw.endswith("%") and value >= 1.0:
        raise ValueError(f"{raw!r} is ambiguous: write a percentage such as '{raw}%'")
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise ValueError(f"{raw!r} must lie between 0% and 100%")
    return value


def parse_positive_fraction(text: str) -> float:
    value = parse_fraction(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be above 0%")
    return value


def parse_confidence(text: str) -> float:
    value = parse_fraction(text)
    if not 0.5 <= value < 1.0:
        raise ValueError(f"{text!r} must be at least 0.5 and below 1 (e.g. 0.90 or 90%)")
    return value


def _parse_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if value < minimum:
            raise ValueError(f"{text!r} must be an integer >= {minimum}")
        return value

    return parse


def parse_positive_float(text: str) -> float:
    value = float(text.strip())
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{text!r} must be a positive number")
    return value


def parse_nonnegative_float(text: str) -> float:
    value = float(text.strip())
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{text!r} must be a number >= 0")
    return value


def parse_devices(text: str) -> tuple[int, ...] | None:
    """``"0,1"`` -> (0, 1); ``"all"`` -> None (every visible device)."""
    raw = text.strip()
    if raw.lower() == "all":
        return None
    problem = f"{raw!r} must be 'all' or comma-separated GPU indices, e.g. 0,1"
    try:
        devices = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(problem) from None
    if not devices or any(d < 0 for d in devices):
        raise ValueError(problem)
    return devices


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r}: expected true or false")


def parse_str(text: str) -> str:
    return text.strip()


def parse_path(text: str) -> Path:
    return Path(text.strip())


def parse_exports(text: str) -> tuple[tuple[str, Path], ...]:
    """``"bencher=out/bmf.json,github-action-benchmark=gab.json"`` -> ((format, path), ...)."""
    from pytest_tpw.present.exports import FORMATS

    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        fmt, sep, path = part.partition("=")
        if not sep or not path.strip() or fmt.strip() not in FORMATS:
            choices = ", ".join(FORMATS)
            raise ValueError(f"{part!r} must be FORMAT=PATH with FORMAT one of {choices}")
        out.append((fmt.strip(), Path(path.strip())))
    if not out:
        raise ValueError(f"{text!r} names no export; write FORMAT=PATH")
    return tuple(out)


# -- marker value checks: each takes the Python value and returns it or raises -----------------


def _number(value: object, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a number")
    if math.isnan(value) or math.isinf(value) or (positive and value <= 0):
        raise ValueError("a positive finite number")
    return float(value)


def _int_at_least(minimum: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an integer >= {minimum}")
        if value < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return value

    return check


def _tolerance(value: object) -> float:
    if isinstance(value, str):
        return parse_positive_fraction(value)
    number = _number(value)
    if number >= 1:
        raise ValueError("a fraction below 1 or a percentage string such as '3%'")
    return number


def _devices(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError("a list of GPU indices such as [0] or [0, 1]")
    out = tuple(_int_at_least(0)(v) for v in value)
    if not out:
        raise ValueError("a non-empty list of GPU indices")
    return out


def _canary(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("True or False")
    return value


# -- the table: one row per setting, for flags, ini keys and marker arguments ------------------


class Option:
    """One setting: its ``--tpw-*`` flag, its ``tpw_*`` ini twin, its marker argument.

    ``flag`` None: no flag. ``ini_key`` False: no ini key (marker-only settings: budgets,
    ``canary``). ``marker``: the check of the marker argument of the same name (None: not
    settable per test), ``expected`` what it accepts, for the error message. ``switch``: a
    flag without a value; ``repeat``: the flag may be given several times (values joined
    with commas). A plain class, not a dataclass: building the table is part of every
    pytest start-up, measured or not.
    """

    __slots__ = (
        "default",
        "expected",
        "field",
        "flag",
        "help",
        "ini_key",
        "marker",
        "metavar",
        "parse",
        "repeat",
        "switch",
    )

    def __init__(
        self,
        field: str,
        flag: str | None,
        default: str | None,
        help: str,
        parse: Callable[[str], Any] = str,
        metavar: str | None = None,
        *,
        ini_key: bool = True,
        marker: Callable[[object], object] | None = None,
        expected: str = "",
        switch: bool = False,
        repeat: bool = False,
    ) -> None:
        self.field, self.flag, self.default, self.help = field, flag, default, help
        self.parse, self.metavar, self.ini_key, self.marker = parse, metavar, ini_key, marker
        self.expected, self.switch, self.repeat = expected, switch, repeat

    @property
    def ini(self) -> str:
        return "tpw_" + self.field


def _switch(field: str, flag: str, help: str) -> Option:
    return Option(field, flag, None, help, switch=True)


def _budget(field: str, unit: str, help: str) -> Option:
    return Option(
        field,
        None,
        None,
        help,
        ini_key=False,
        marker=_number,
        expected=f"a positive number ({unit})",
    )


OPTIONS: tuple[Option, ...] = (
    _switch(
        "update",
        "--tpw-update",
        "accept this session's level: each measured test's baseline history is replaced "
        "by this session (tests that failed record nothing); regressions do not fail",
    ),
    _switch(
        "record",
        "--tpw-record",
        "add this session to each measured test's baseline history (the last "
        "--tpw-history are kept), to learn how much sessions differ",
    ),
    _switch(
        "update_missing",
        "--tpw-update-missing",
        "write baselines only for measurements that have none",
    ),
    Option(
        "baseline_dir",
        "--tpw-baseline-dir",
        ".tpw",
        "where baseline files live: DIR/<hardware-key>.json (default: .tpw)",
        parse_path,
        "DIR",
    ),
    _switch(
        "strict",
        "--tpw-strict",
        "CI mode: no baseline, inconclusive or hardware mismatch fail the test, and a "
        "run-wide stack regression fails the run",
    ),
    _switch(
        "fail_stack",
        "--tpw-fail-stack",
        "fail the run when every test moved together beyond the stored runs' spread and "
        "the software stack changed (a stack regression); default: reported, not failed",
    ),
    Option(
        "tolerance",
        "--tpw-tolerance",
        "5%",
        "largest tolerated drop in tokens per joule (default: 5%)",
        parse_positive_fraction,
        "P",
        marker=_tolerance,
        expected="a percentage string such as '3%' or a fraction such as 0.03, above 0",
    ),
    Option(
        "noise_floor",
        "--tpw-noise-floor",
        "1%",
        "smallest change worth reporting (default: 1%)",
        parse_fraction,
        "P",
    ),
    Option(
        "confidence",
        "--tpw-confidence",
        "0.90",
        "two-sided confidence of reported intervals (default: 0.90)",
        parse_confidence,
        "C",
    ),
    Option(
        "fdr",
        "--tpw-fdr",
        "0.05",
        "false-discovery rate across the suite's regressions (default: 0.05)",
        parse_positive_fraction,
        "Q",
    ),
    Option(
        "rounds",
        "--tpw-rounds",
        None,
        "fixed number of recorded windows (default: adaptive 5-20 against a baseline, "
        "5 without one, 20 when updating)",
        _parse_int(2),
        "N",
        marker=_int_at_least(2),
        expected="an integer >= 2",
    ),
    Option(
        "warmup",
        "--tpw-warmup",
        "1",
        "windows run and discarded first (default: 1)",
        _parse_int(0),
        "N",
        marker=_int_at_least(0),
        expected="an integer >= 0",
    ),
    Option(
        "min_window",
        "--tpw-min-window",
        None,
        "shortest window in seconds (default: the sensor's own)",
        parse_positive_float,
        "S",
    ),
    Option(
        "sensor",
        "--tpw-sensor",
        "auto",
        "where joules come from: auto, nvml, rapl, cpu-estimate, sim or a plugin's sensor",
        parse_str,
        "NAME",
    ),
    Option(
        "devices",
        "--tpw-devices",
        None,
        "GPUs to measure, as this process indexes them (default: all visible)",
        parse_devices,
        "LIST",
        marker=_devices,
        expected="a non-empty list of GPU indices such as [0] or [0, 1]",
    ),
    Option(
        "json",
        "--tpw-json",
        None,
        "write every sample, verdict and the environment as JSON to PATH",
        parse_path,
        "PATH",
    ),
    Option(
        "export",
        "--tpw-export",
        None,
        "write an export for dashboards at the end, FORMAT=PATH with FORMAT bencher or "
        "github-action-benchmark (repeat the flag, or separate with commas)",
        parse_exports,
        "FORMAT=PATH",
        repeat=True,
    ),
    Option(
        "report",
        "--tpw-report",
        None,
        "write the Markdown report (fit for a pull-request comment) to PATH",
        parse_path,
        "PATH",
    ),
    Option(
        "gpus_per_worker",
        "--tpw-gpus-per-worker",
        None,
        "pytest-xdist: give each worker its own N GPUs through CUDA_VISIBLE_DEVICES",
        _parse_int(1),
        "N",
    ),
    Option(
        "lock_timeout",
        "--tpw-lock-timeout",
        None,
        "give up a window after waiting this many seconds for another process's device "
        "lock (default: wait; the holder is named after 5 s)",
        parse_positive_float,
        "S",
    ),
    Option(
        "history",
        "--tpw-history",
        "10",
        "sessions kept per measurement in a baseline (default: 10)",
        _parse_int(1),
        "N",
    ),
    # ini-only tuning of the built-in sensors and the protocol
    Option("sim_watts", None, "300", "sim sensor: constant power in watts", parse_positive_float),
    Option(
        "sim_noise",
        None,
        "0.01",
        "sim sensor: relative noise of each window's joules",
        parse_nonnegative_float,
    ),
    Option(
        "cpu_watts_per_core",
        None,
        "10",
        "cpu-estimate sensor: watts drawn per busy core",
        parse_positive_float,
    ),
    Option(
        "idle_power",
        None,
        "true",
        "measured sensors: measure the devices' idle power once at start, as context "
        "(false skips the ~1 s window)",
        parse_bool,
    ),
    Option(
        "max_delay",
        None,
        "0.1",
        "largest random delay in seconds before each window (0 disables)",
        parse_nonnegative_float,
    ),
    # marker-only: absolute budgets and the canary role
    _budget("min_tokens_per_joule", "tokens per joule", "fail below this many tokens per joule"),
    _budget("max_joules_per_token", "joules per token", "fail above this many joules per token"),
    _budget("max_watts", "watts", "fail above this mean power"),
    _budget("min_tokens_per_second", "tokens per second", "fail below this throughput"),
    Option(
        "canary",
        None,
        None,
        "a frozen reference workload whose drift measures the environment's",
        ini_key=False,
        marker=_canary,
        expected="True or False",
    ),
)

BY_FIELD: Mapping[str, Option] = {opt.field: opt for opt in OPTIONS}
BUDGETS: tuple[str, ...] = tuple(o.field for o in OPTIONS if o.expected.startswith("a positive"))
#: Marker arguments in the table's order (the order of :class:`MarkerArgs`' fields).
MARKER_FIELDS: tuple[str, ...] = tuple(o.field for o in OPTIONS if o.marker is not None)


#: The marker's arguments, in the order of ``MarkerArgs``' fields (checked there).
MARKER_ORDER: tuple[str, ...] = (
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

MARKER_HELP = (
    "tpw("
    + ", ".join(f"{f}={'False' if f == 'canary' else 'None'}" for f in MARKER_ORDER)
    + "): tokens-per-joule budgets and per-test controls for pytest-tpw"
)


def _parse_ini_bool(text: str, where: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError:
        raise SettingError(f"{where} = {text!r}: expected true or false") from None


def add_options(parser: pytest.Parser) -> None:
    """Register the ``tpw`` option group and every ini twin."""
    group = parser.getgroup("tpw", "tokens per joule (pytest-tpw)")
    group.addoption(
        "--tpw",
        action="store_true",
        default=False,
        dest="tpw",
        help="measure tokens per joule in tests that use the tpw fixture",
    )
    for opt in OPTIONS:
        if opt.flag is not None:
            if opt.switch:
                group.addoption(
                    opt.flag,
                    action="store_true",
                    default=None,
                    dest="tpw_" + opt.field,
                    help=opt.help,
                )
            else:
                # argparse %-formats help texts: "5%" must be written "5%%" there
                group.addoption(
                    opt.flag,
                    action="append" if opt.repeat else "store",
                    default=None,
                    metavar=opt.metavar,
                    dest="tpw_" + opt.field,
                    help=opt.help.replace("%", "%%"),
                )
        if opt.ini_key:
            twin = f" (ini twin of {opt.flag})" if opt.flag else ""
            parser.addini(opt.ini, opt.help + twin, default="")
    parser.addini("tpw", "measure tokens per joule, as --tpw does", type="bool", default=False)
