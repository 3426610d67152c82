"""Settings resolved once: the session's from flags and ini keys, each test's with its marker.

Importable without pytest (the judge, the session and the CLI use its types); only
``from_config``, called by the plugin when something is measured, touches pytest. The table
of options, their parsers and defaults lives in :mod:`pytest_tpw.options`.

Precedence: marker > flag > ini > default. Every parse error names where the bad value came
from (``--tpw-tolerance``, ini ``tpw_tolerance``, or the test and marker argument) and what
is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tpw.config.options import BUDGETS as BUDGETS
from pytest_tpw.config.options import BY_FIELD as BY_FIELD
from pytest_tpw.config.options import MARKER_FIELDS as MARKER_FIELDS
from pytest_tpw.config.options import MARKER_HELP as MARKER_HELP
from pytest_tpw.config.options import MARKER_ORDER as MARKER_ORDER
from pytest_tpw.config.options import OPTIONS as OPTIONS
from pytest_tpw.config.options import Option as Option
from pytest_tpw.config.options import _parse_ini_bool
from pytest_tpw.config.options import add_options as add_options
from pytest_tpw.config.options import parse_bool as parse_bool
from pytest_tpw.config.options import parse_confidence as parse_confidence
from pytest_tpw.config.options import parse_devices as parse_devices
from pytest_tpw.config.options import parse_exports as parse_exports
from pytest_tpw.config.options import parse_fraction as parse_fraction
from pytest_tpw.config.options import parse_positive_fraction as parse_positive_fraction
from pytest_tpw.errors import MarkerError, SettingError

if TYPE_CHECKING:  # pytest only where the plugin calls in, so judge/session/cli stay pure
    import pytest


def _default(field: str) -> Any:
    """A setting's default, parsed from the table: each default is written once, there."""
    opt = BY_FIELD[field]
    return None if opt.default is None else opt.parse(opt.default)


@dataclass(frozen=True)
class Settings:
    """Session settings, frozen once built from flags, ini keys and the table's defaults."""

    enabled: bool = False
    update: bool = False
    record: bool = False
    update_missing: bool = False
    baseline_dir: Path = _default("baseline_dir")
    strict: bool = False
    fail_stack: bool = False
    tolerance: float = _default("tolerance")
    noise_floor: float = _default("noise_floor")
    confidence: float = _default("confidence")
    fdr: float = _default("fdr")
    rounds: int | None = None
    warmup: int = _default("warmup")
    min_window: float | None = None
    sensor: str = _default("sensor")
    devices: tuple[int, ...] | None = None
    json: Path | None = None
    export: tuple[tuple[str, Path], ...] = ()
    report: Path | None = None
    history: int = _default("history")
    lock_timeout: float | None = None
    gpus_per_worker: int | None = None
    sim_watts: float = _default("sim_watts")
    sim_noise: float = _default("sim_noise")
    cpu_watts_per_core: float = _default("cpu_watts_per_core")
    max_delay: float = _default("max_delay")
    idle_power: bool = _default("idle_power")

    @property
    def writes_baselines(self) -> bool:
        """True when this session writes baselines (update, record or update-missing)."""
        return self.update or self.record or self.update_missing

    def for_test(self, marker: MarkerArgs | None) -> TestSettings:
        """A test's effective settings: its marker over the session's (marker > flag > ini >
        default). Computed once per test and handed to its meter and to the judge."""
        m = marker or MarkerArgs()

        def pick(name: str) -> Any:
            value = getattr(m, name)
            return getattr(self, name) if value is None else value

        return TestSettings(
            tolerance=pick("tolerance"),
            noise_floor=self.noise_floor,
            confidence=self.confidence,
            rounds=pick("rounds"),
            warmup=pick("warmup"),
            devices=pick("devices"),
            min_window=self.min_window,
            max_delay=self.max_delay,
            strict=self.strict,
            writes_baselines=self.writes_baselines,
            canary=m.canary,
            budgets=m.budgets(),
        )


@dataclass(frozen=True)
class TestSettings:
    """One test's effective settings (``Settings.for_test``): what its meter and judge use."""

    __test__ = False  # not a test class, whatever pytest's name rules say

    tolerance: float
    noise_floor: float
    confidence: float
    rounds: int | None
    warmup: int
    devices: tuple[int, ...] | None
    min_window: float | None
    max_delay: float
    strict: bool
    writes_baselines: bool
    canary: bool = False
    budgets: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def fixed_rounds(self) -> int:
        """Recorded windows when no comparison steers them: 20 when writing baselines, else 5."""
        if self.rounds is not None:
            return self.rounds
        return 20 if self.writes_baselines else 5


def _raw_value(config: pytest.Config, opt: Option) -> tuple[str | None, str]:
    """The raw text of one option and where it came from (flag, ini or default)."""
    if opt.flag is not None:
        given = config.getoption("tpw_" + opt.field)
        if isinstance(given, list):
            given = ",".join(given)
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
        if not opt.ini_key:
            continue
        raw, where = _raw_value(config, opt)
        if raw is None:
            continue
        try:
            if opt.switch:
                values[opt.field] = raw == "True" or _parse_ini_bool(raw, where)
            else:
                values[opt.field] = opt.parse(raw)
        except (ValueError, SettingError) as exc:
            raise pytest.UsageError(f"pytest-tpw: {where} = {raw!r}: {exc}") from None
    settings = Settings(**values)
    modes = [
        flag
        for flag, on in (
            ("--tpw-update", settings.update),
            ("--tpw-record", settings.record),
            ("--tpw-update-missing", settings.update_missing),
        )
        if on
    ]
    if len(modes) > 1:
        raise pytest.UsageError(f"pytest-tpw: {' and '.join(modes)} exclude each other; choose one")
    if settings.noise_floor >= settings.tolerance:
        raise pytest.UsageError(
            f"pytest-tpw: the noise floor ({settings.noise_floor:.1%}) must be below the "
            f"tolerance ({settings.tolerance:.1%}); see --tpw-noise-floor and --tpw-tolerance"
        )
    if settings.writes_baselines and not settings.enabled:
        settings = dataclasses.replace(settings, enabled=True)
    return settings


# -- the marker ------------------------------------------------------------------------------


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
        return {
            "tolerance": self.tolerance,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "devices": self.devices,
        }

    def budgets(self) -> dict[str, float]:
        found = {n: getattr(self, n) for n in BUDGETS}
        return {n: v for n, v in found.items() if v is not None}


def parse_marker(nodeid: str, args: Sequence[object], kwargs: Mapping[str, object]) -> MarkerArgs:
    """Validate one test's marker; a :class:`MarkerError` names the test and the argument."""
    allowed = ", ".join(MARKER_ORDER)
    if args:
        raise MarkerError(
            f"{nodeid}: @pytest.mark.tpw takes keyword arguments only, got "
            f"positional {args!r}; allowed: {allowed}"
        )
    parsed: dict[str, object] = {}
    for key, value in kwargs.items():
        opt = BY_FIELD.get(key)
        if opt is None or opt.marker is None:
            raise MarkerError(
                f"{nodeid}: @pytest.mark.tpw got unknown argument {key!r}; allowed: {allowed}"
            )
        try:
            parsed[key] = opt.marker(value)
        except (TypeError, ValueError):
            raise MarkerError(
                f"{nodeid}: @pytest.mark.tpw({key}={value!r}): expected {opt.expected}"
            ) from None
    return MarkerArgs(**parsed)  # type: ignore[arg-type]


_MARKER_ARG_ORDER = tuple(f.name for f in dataclasses.fields(MarkerArgs))
assert _MARKER_ARG_ORDER == MARKER_ORDER, "MarkerArgs and the options table disagree"
