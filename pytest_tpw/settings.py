"""Settings built once from flags and ini keys, and ``@pytest.mark.tpw`` arguments validated.

Importable without pytest (the judge, the session and the CLI use its types and parsers);
only ``add_options`` and ``from_config``, called by the plugin, touch pytest.

Precedence: marker > flag > ini > default. Every parse error names where the bad value came
from (``--tpw-tolerance``, ini ``tpw_tolerance``, or the test and marker argument) and what
is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MarkerError, SettingError

if TYPE_CHECKING:  # pytest only where the plugin calls in, so judge/session/cli stay pure
    import pytest

# -- value parsers: each takes the raw text and returns the value or raises ValueError --------


def parse_fraction(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05. A bare number of 1 or more is refused (write ``5%``)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a percentage such as '5%' or a fraction such as "
                         "0.05") from None
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


def parse_str(text: str) -> str:
    return text.strip()


def parse_path(text: str) -> Path:
    return Path(text.strip())


# -- the options table: one row per setting, used for addoption, addini and parsing -----------


@dataclass(frozen=True)
class Option:
    """One ``--tpw-*`` flag (``flag=None`` for ini-only keys) with its ini twin."""

    field: str
    flag: str | None
    default: str | None
    help: str
    parse: Callable[[str], Any]
    metavar: str | None = None

    @property
    def ini(self) -> str:
        return "tpw_" + self.field


OPTIONS: tuple[Option, ...] = (
    Option("update", "--tpw-update", None,
           "append this session's samples to the baselines; regressions do not fail", str),
    Option("update_missing", "--tpw-update-missing", None,
           "write baselines only for measurements that have none", str),
    Option("baseline_dir", "--tpw-baseline-dir", ".tpw",
           "where baseline files live: DIR/<hardware-key>.json (default: .tpw)",
           parse_path, "DIR"),
    Option("strict", "--tpw-strict", None,
           "CI mode: no baseline, inconclusive or hardware mismatch fail the test", str),
    Option("tolerance", "--tpw-tolerance", "5%",
           "largest tolerated drop in tokens per joule (default: 5%)", parse_positive_fraction,
           "P"),
    Option("noise_floor", "--tpw-noise-floor", "1%",
           "smallest change worth reporting (default: 1%)", parse_fraction, "P"),
    Option("confidence", "--tpw-confidence", "0.90",
           "two-sided confidence of reported intervals (default: 0.90)", parse_confidence, "C"),
    Option("fdr", "--tpw-fdr", "0.05",
           "false-discovery rate across the suite's regressions (default: 0.05)",
           parse_positive_fraction, "Q"),
    Option("rounds", "--tpw-rounds", None,
           "fixed number of recorded windows (default: adaptive 5-20 against a baseline, "
           "5 without one, 20 when updating)",
           _parse_int(2), "N"),
    Option("warmup", "--tpw-warmup", "1",
           "windows run and discarded first (default: 1)", _parse_int(0), "N"),
    Option("min_window", "--tpw-min-window", None,
           "shortest window in seconds (default: the sensor's own)", parse_positive_float, "S"),
    Option("sensor", "--tpw-sensor", "auto",
           "where joules come from: auto, nvml, rapl, cpu-estimate, sim or a plugin's sensor",
           parse_str, "NAME"),
    Option("devices", "--tpw-devices", None,
           "GPUs to measure, as this process indexes them (default: all visible)",
           parse_devices, "LIST"),
    Option("json", "--tpw-json", None,
           "write every sample, verdict and the environment as JSON to PATH", parse_path, "PATH"),
    Option("gpus_per_worker", "--tpw-gpus-per-worker", None,
           "pytest-xdist: give each worker its own N GPUs through CUDA_VISIBLE_DEVICES",
           _parse_int(1), "N"),
    Option("history", "--tpw-history", "10",
           "sessions kept per measurement in a baseline (default: 10)", _parse_int(1), "N"),
    # ini-only tuning of the built-in sensors and the protocol
    Option("sim_watts", None, "300", "sim sensor: constant power in watts", parse_positive_float),
    Option("sim_noise", None, "0.01", "sim sensor: relative noise of each window's joules",
           parse_nonnegative_float),
    Option("cpu_watts_per_core", None, "10",
           "cpu-estimate sensor: watts drawn per busy core", parse_positive_float),
    Option("max_delay", None, "0.1",
           "largest random delay in seconds before each window (0 disables)",
           parse_nonnegative_float),
)

BOOL_FIELDS = frozenset({"update", "update_missing", "strict"})


@dataclass(frozen=True)
class Settings:
    """Session settings, frozen once built. Marker overrides give a per-test copy."""

    enabled: bool = False
    update: bool = False
    update_missing: bool = False
    baseline_dir: Path = Path(".tpw")
    strict: bool = False
    tolerance: float = 0.05
    noise_floor: float = 0.01
    confidence: float = 0.90
    fdr: float = 0.05
    rounds: int | None = None
    warmup: int = 1
    min_window: float | None = None
    sensor: str = "auto"
    devices: tuple[int, ...] | None = None
    json: Path | None = None
    history: int = 10
    gpus_per_worker: int | None = None
    sim_watts: float = 300.0
    sim_noise: float = 0.01
    cpu_watts_per_core: float = 10.0
    max_delay: float = 0.1

    def rounds_for_session(self) -> int:
        """Recorded windows when no adaptive policy applies: 20 when updating, else 5."""
        if self.rounds is not None:
            return self.rounds
        return 20 if (self.update or self.update_missing) else 5

    def with_marker(self, marker: MarkerArgs) -> Settings:
        changes = {k: v for k, v in marker.overrides().items() if v is not None}
        return dataclasses.replace(self, **changes)


def _parse_ini_bool(text: str, where: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("", "0", "false", "no", "off"):
        return False
    raise SettingError(f"{where} = {text!r}: expected true or false")


def add_options(parser: pytest.Parser) -> None:
    """Register the ``tpw`` option group and every ini twin."""
    group = parser.getgroup("tpw", "tokens per joule (pytest-tpw)")
    group.addoption("--tpw", action="store_true", default=False, dest="tpw",
                    help="measure tokens per joule in tests that use the tpw fixture")
    for opt in OPTIONS:
        if opt.flag is not None:
            if opt.field in BOOL_FIELDS:
                group.addoption(opt.flag, action="store_true", default=None,
                                dest="tpw_" + opt.field, help=opt.help)
            else:
                # argparse %-formats help texts: "5%" must be written "5%%" there
                group.addoption(opt.flag, action="store", default=None, metavar=opt.metavar,
                                dest="tpw_" + opt.field, help=opt.help.replace("%", "%%"))
        parser.addini(opt.ini, opt.help + (f" (ini twin of {opt.flag})" if opt.flag else ""),
                      default="")
    parser.addini("tpw", "measure tokens per joule, as --tpw does", type="bool", default=False)


def _raw_value(config: pytest.Config, opt: Option) -> tuple[str | None, str]:
    """The raw text of one option and where it came from (flag, ini or default)."""
    if opt.flag is not None:
        given = config.getoption("tpw_" + opt.field)
        if given is not None:
            return str(given), opt.flag
    ini = config.getini(opt.ini)
    if isinstance(ini, str) and ini.strip():
        return ini, f"ini {opt.ini}"
    return opt.default, "default"


def from_config(config: pytest.Config) -> Settings:
    """Build the session's settings; a bad value is a ``pytest.UsageError`` naming its source."""
    import pytest
    values: dict[str, Any] = {
        "enabled": bool(config.getoption("tpw")) or bool(config.getini("tpw")),
    }
    for opt in OPTIONS:
        raw, where = _raw_value(config, opt)
        if raw is None:
            continue
        try:
            if opt.field in BOOL_FIELDS:
                values[opt.field] = raw == "True" or _parse_ini_bool(raw, where)
            else:
                values[opt.field] = opt.parse(raw)
        except (ValueError, SettingError) as exc:
            raise pytest.UsageError(f"pytest-tpw: {where} = {raw!r}: {exc}") from None
    settings = Settings(**values)
    if settings.update and settings.update_missing:
        raise pytest.UsageError("pytest-tpw: --tpw-update and --tpw-update-missing exclude "
                                "each other; choose one")
    if settings.noise_floor >= settings.tolerance:
        raise pytest.UsageError(
            f"pytest-tpw: the noise floor ({settings.noise_floor:.1%}) must be below the "
            f"tolerance ({settings.tolerance:.1%}); see --tpw-noise-floor and --tpw-tolerance")
    if (settings.update or settings.update_missing) and not settings.enabled:
        settings = dataclasses.replace(settings, enabled=True)
    return settings


# -- the marker ------------------------------------------------------------------------------

MARKER_HELP = (
    "tpw(min_tokens_per_joule=None, max_joules_per_token=None, max_watts=None, "
    "min_tokens_per_second=None, tolerance=None, rounds=None, warmup=None, devices=None, "
    "canary=False): tokens-per-joule budgets and per-test controls for pytest-tpw"
)


@dataclass(frozen=True)
class MarkerArgs:
    """The validated arguments of one test's ``@pytest.mark.tpw(...)``."""

    min_tokens_per_joule: float | None = None
    max_joules_per_token: float | None = None
    max_watts: float | None = None
    min_tokens_per_second: float | None = None
    tolerance: float | None = None
    rounds: int | None = None
    warmup: int | None = None
    devices: tuple[int, ...] | None = None
    canary: bool = False

    def overrides(self) -> dict[str, Any]:
        """The session settings this marker replaces for its test."""
        return {"tolerance": self.tolerance, "rounds": self.rounds,
                "warmup": self.warmup, "devices": self.devices}

    def budgets(self) -> dict[str, float]:
        names = ("min_tokens_per_joule", "max_joules_per_token", "max_watts",
                 "min_tokens_per_second")
        found = {n: getattr(self, n) for n in names}
        return {n: v for n, v in found.items() if v is not None}


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


_MARKER_CHECKS: Mapping[str, Callable[[object], object]] = {
    "min_tokens_per_joule": _number,
    "max_joules_per_token": _number,
    "max_watts": _number,
    "min_tokens_per_second": _number,
    "tolerance": _tolerance,
    "rounds": _int_at_least(2),
    "warmup": _int_at_least(0),
    "devices": _devices,
    "canary": _canary,
}


_MARKER_EXPECTED: Mapping[str, str] = {
    "min_tokens_per_joule": "a positive number (tokens per joule)",
    "max_joules_per_token": "a positive number (joules per token)",
    "max_watts": "a positive number (watts)",
    "min_tokens_per_second": "a positive number (tokens per second)",
    "tolerance": "a percentage string such as '3%' or a fraction such as 0.03, above 0",
    "rounds": "an integer >= 2",
    "warmup": "an integer >= 0",
    "devices": "a non-empty list of GPU indices such as [0] or [0, 1]",
    "canary": "True or False",
}


def parse_marker(nodeid: str, args: Sequence[object], kwargs: Mapping[str, object]) -> MarkerArgs:
    """Validate one test's marker; a :class:`MarkerError` names the test and the argument."""
    allowed = ", ".join(_MARKER_CHECKS)
    if args:
        raise MarkerError(f"{nodeid}: @pytest.mark.tpw takes keyword arguments only, got "
                          f"positional {args!r}; allowed: {allowed}")
    parsed: dict[str, object] = {}
    for key, value in kwargs.items():
        check = _MARKER_CHECKS.get(key)
        if check is None:
            raise MarkerError(f"{nodeid}: @pytest.mark.tpw got unknown argument {key!r}; "
                              f"allowed: {allowed}")
        try:
            parsed[key] = check(value)
        except (TypeError, ValueError):
            raise MarkerError(f"{nodeid}: @pytest.mark.tpw({key}={value!r}): expected "
                              f"{_MARKER_EXPECTED[key]}") from None
    return MarkerArgs(**parsed)  # type: ignore[arg-type]
