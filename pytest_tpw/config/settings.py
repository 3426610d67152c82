"""Settings resolved once: the session's from flags and ini keys, each test's with its marker.

The rows of :mod:`pytest_tpw.config.options` name their parsers; this module owns them, and
uses the same parser for a flag, its ini twin and its marker argument, so that a value is
accepted or refused by one rule wherever it is written. Precedence: marker > flag > ini >
default. Every error names where the bad value came from (``--tpw-tolerance``, ini
``tpw_tolerance``, or the test and its marker argument) and what is allowed. No pytest: the
plugin hands raw values in (:func:`build`) and takes frozen settings out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_tpw.config.options import (
    BASELINE_MODES,
    DEFAULT,
    EXPORT_FORMATS,
    FALSE_WORDS,
    FIELD,
    FLAG,
    MARKER,
    OPTIONS,
    PARSER,
    SCOPE,
    TRAITS,
    TRUE_WORDS,
    ini_name,
)
from pytest_tpw.errors import MarkerError, SettingError

#: How a session writes baselines: ``replace`` (``--tpw-update``: a measurement's history
#: becomes this session), ``extend`` (``--tpw-record``: this session is added, the last
#: ``--tpw-history`` kept), ``missing`` (``--tpw-update-missing``: only measurements that have
#: none), or None: it writes none.
BaselineMode = Literal["replace", "extend", "missing"]

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
        raise ValueError(f"{text.strip()!r} must be above 0%")
    return value


def parse_confidence(text: str) -> float:
    value = parse_fraction(text)
    if not 0.5 <= value < 1.0:
        raise ValueError(f"{text!r} must be at least 0.5 and below 1 (e.g. 0.90 or 90%)")
    return value


def _parse_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text.strip()!r} is not an integer >= {minimum}") from None
        if value < minimum:
            raise ValueError(f"{text.strip()!r} must be an integer >= {minimum}")
        return value

    return parse


def _parse_float(positive: bool) -> Callable[[str], float]:
    """A finite number above 0 (``positive``) or at least 0."""

    def parse(text: str) -> float:
        raw = text.strip()
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if math.isinf(value) or not (value > 0 if positive else value >= 0):
            rule = "a positive finite number" if positive else "a finite number >= 0"
            raise ValueError(f"{raw!r} must be {rule}")
        return value

    return parse


parse_positive_float = _parse_float(positive=True)
parse_nonnegative_float = _parse_float(positive=False)


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
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r}: expected true or false")


def parse_str(text: str) -> str:
    return text.strip()


def parse_path(text: str) -> Path:
    return Path(text.strip())


def parse_exports(text: str) -> tuple[tuple[str, Path], ...]:
    """``"bencher=out/bmf.json,github-action-benchmark=gab.json"`` -> ((format, path), ...)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        fmt, sep, path = part.partition("=")
        if not sep or not path.strip() or fmt.strip() not in EXPORT_FORMATS:
            choices = ", ".join(EXPORT_FORMATS)
            raise ValueError(f"{part!r} must be FORMAT=PATH with FORMAT one of {choices}")
        out.append((fmt.strip(), Path(path.strip())))
    if not out:
        raise ValueError(f"{text!r} names no export; write FORMAT=PATH")
    return tuple(out)


#: The latencies a load measurement gives, and their percentiles (``max_latency`` keys).
LATENCY_METRICS = ("ttft", "tpot", "e2e")
LATENCY_PERCENTILES = ("p50", "p90", "p99")


def parse_latency(text: str) -> tuple[tuple[str, float], ...]:
    """``"tpot_p90=0.05,ttft_p99=1"`` -> (("tpot_p90", 0.05), ("ttft_p99", 1.0))."""
    names = [f"{m}_{p}" for m in LATENCY_METRICS for p in LATENCY_PERCENTILES]
    out = []
    for part in (p.strip() for p in text.split(",")):
        name, sep, raw = part.partition("=")
        if not sep or name.strip() not in names:
            raise ValueError(f"{name.strip()!r} is not a latency; use one of {', '.join(names)}")
        out.append((name.strip(), parse_positive_float(raw)))
    if not out:
        raise ValueError("no limit given")
    return tuple(out)


def parse_urls(text: str) -> tuple[str, ...]:
    """``"http://a:9400/metrics, http://b:9400/metrics"`` -> the URLs (http or https)."""
    urls = tuple(u for u in re.split(r"[,\s]+", text) if u)
    for url in urls:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"{url!r} is not an http(s) URL")
    if not urls:
        raise ValueError("no URL given")
    return urls


def parse_selects(text: str) -> tuple[str, ...]:
    """``"hostname=a,b,pod=x"`` -> ("hostname=a,b", "pod=x"): a part without ``=`` is one
    more value of the label before it."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            name, _, value = part.partition("=")
            if not name.strip() or not value.strip():
                raise ValueError(f"{part!r} must be LABEL=VALUE")
            out.append(f"{name.strip()}={value.strip()}")
        elif out:
            out[-1] += f",{part}"
        else:
            raise ValueError(f"{part!r} must be LABEL=VALUE")
    return tuple(out)


def parse_hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in text.split(",") if h.strip())
    if not hosts:
        raise ValueError("no host given")
    return hosts


#: The parsers the table names.
PARSERS: Mapping[str, Callable[[str], Any]] = {
    "fraction": parse_fraction,
    "positive_fraction": parse_positive_fraction,
    "confidence": parse_confidence,
    "int>=0": _parse_int(0),
    "int>=1": _parse_int(1),
    "int>=2": _parse_int(2),
    "positive_float": parse_positive_float,
    "nonnegative_float": parse_nonnegative_float,
    "devices": parse_devices,
    "bool": parse_bool,
    "switch": parse_bool,
    "str": parse_str,
    "path": parse_path,
    "exports": parse_exports,
    "latency": parse_latency,
    "urls": parse_urls,
    "selects": parse_selects,
    "hosts": parse_hosts,
}

#: Each field's row, the first for a field several flags feed (``baseline_mode``).
ROWS = {row[FIELD]: row for row in reversed(OPTIONS)}


def default(field: str) -> Any:
    """A setting's default, parsed from the table: each default is written once, there."""
    row = ROWS[field]
    if row[PARSER].startswith("mode="):
        return None
    if row[PARSER] == "switch":
        return False
    raw = row[DEFAULT]
    if raw is None:
        return () if "repeat" in row[TRAITS] else None  # a repeatable flag: none given
    return PARSERS[row[PARSER]](raw)


# -- the session's settings ------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Session settings, frozen once built from flags, ini keys and the table's defaults.

    Its fields are the table's settings (a test checks that they agree); ``enabled`` is
    ``--tpw`` itself, set too by anything that measures (``--tpw-update``...).
    """

    enabled: bool = False
    baseline_mode: BaselineMode | None = default("baseline_mode")
    baseline_dir: Path = default("baseline_dir")
    strict: bool = default("strict")
    fail_stack: bool = default("fail_stack")
    tolerance: float = default("tolerance")
    noise_floor: float = default("noise_floor")
    confidence: float = default("confidence")
    fdr: float = default("fdr")
    rounds: int | None = default("rounds")
    warmup: int = default("warmup")
    min_window: float | None = default("min_window")
    sensor: str = default("sensor")
    devices: tuple[int, ...] | None = default("devices")
    sensor_url: tuple[str, ...] = default("sensor_url")
    sensor_select: tuple[str, ...] = default("sensor_select")
    sensor_interval: float | None = default("sensor_interval")
    json: Path | None = default("json")
    export: tuple[tuple[str, Path], ...] = ()
    report: Path | None = default("report")
    gpus_per_worker: int | None = default("gpus_per_worker")
    lock_timeout: float | None = default("lock_timeout")
    history: int = default("history")
    superseded: int = default("superseded")
    sim_watts: float = default("sim_watts")
    sim_noise: float = default("sim_noise")
    cpu_watts_per_core: float = default("cpu_watts_per_core")
    idle_power: bool = default("idle_power")
    max_delay: float = default("max_delay")

    @property
    def writes_baselines(self) -> bool:
        """True when this session writes baselines (any baseline mode)."""
        return self.baseline_mode is not None

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
            latency_limits=dict(m.max_latency or ()),
            gpus=m.gpus,
            hosts=m.hosts,
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
    #: ``max_latency`` limits in seconds by name (``tpot_p90``...), for load measurements.
    latency_limits: Mapping[str, float] = dataclasses.field(default_factory=dict)
    #: What the deployment spans (marker ``gpus``, ``hosts``): a window that measured less
    #: fails.
    gpus: int | None = None
    hosts: tuple[str, ...] | None = None


#: ``(raw text or None, where it came from)`` for one row: the flag, its ini twin or nothing.
Lookup = Callable[[tuple[Any, ...]], tuple[str | None, str]]


def build(lookup: Lookup, enabled: bool) -> Settings:
    """The session's settings from each row's raw value (:data:`Lookup`; the plugin reads
    flags and ini keys). Raises :class:`SettingError` naming the flag or ini key and what
    is allowed."""
    values: dict[str, Any] = {"enabled": enabled}
    modes: list[tuple[str, str]] = []
    for row in OPTIONS:
        if row[SCOPE] == "marker":
            continue
        raw, where = lookup(row)
        name = row[PARSER]
        if raw is None:
            continue
        try:
            value = PARSERS["switch" if name.startswith("mode=") else name](raw)
        except ValueError as exc:
            raise SettingError(f"{where} = {raw!r}: {exc}") from None
        if name.startswith("mode="):
            if value:
                modes.append((where, name.partition("=")[2]))
            continue
        values[row[FIELD]] = value
    if len(modes) > 1:
        raise SettingError(f"{' and '.join(w for w, _ in modes)} exclude each other; choose one")
    if modes:
        values["baseline_mode"] = modes[0][1]
        values["enabled"] = True  # writing baselines measures
    settings = Settings(**values)
    if settings.noise_floor >= settings.tolerance:
        raise SettingError(
            f"the noise floor ({settings.noise_floor:.1%}) must be below the tolerance "
            f"({settings.tolerance:.1%}); see --tpw-noise-floor and --tpw-tolerance"
        )
    return settings


def flag_names(field: str) -> str:
    """How a user writes a setting: ``--tpw-tolerance`` (or its ini key)."""
    row = ROWS[field]
    return row[FLAG] or f"ini {ini_name(row)}"


# -- the marker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkerArgs:
    """The validated arguments of one test's ``@pytest.mark.tpw(...)``.

    Its fields are the table's marker arguments, in the table's order (a test checks it).
    """

    tolerance: float | None = None
    rounds: int | None = None
    warmup: int | None = None
    devices: tuple[int, ...] | None = None
    min_tokens_per_joule: float | None = None
    max_joules_per_token: float | None = None
    max_watts: float | None = None
    min_tokens_per_second: float | None = None
    max_latency: tuple[tuple[str, float], ...] | None = None
    gpus: int | None = None
    hosts: tuple[str, ...] | None = None
    canary: bool = default("canary")

    def budgets(self) -> dict[str, float]:
        """The absolute budgets this marker sets (the table's marker-only numbers)."""
        found = {r[FIELD]: getattr(self, r[FIELD]) for r in OPTIONS if r[MARKER] == "number"}
        return {n: v for n, v in found.items() if v is not None}

    def check(self, nodeid: str, noise_floor: float) -> None:
        """The rules that relate a marker argument to session settings: a tolerance must
        lie above the noise floor, as ``--tpw-tolerance`` must. Raises :class:`MarkerError`
        naming the test and the argument."""
        if self.tolerance is not None and self.tolerance <= noise_floor:
            raise MarkerError(
                f"{nodeid}: @pytest.mark.tpw(tolerance={self.tolerance:g}): the tolerance "
                f"({self.tolerance:.1%}) must be above the noise floor "
                f"({noise_floor:.1%}, {flag_names('noise_floor')}): a drop smaller "
                "than the floor is never reported, so nothing could fail. Raise the tolerance "
                "or lower the noise floor"
            )


MARKER_FIELDS: tuple[str, ...] = tuple(r[FIELD] for r in OPTIONS if r[MARKER])


#: What a marker argument accepts, by its parser, for the error message.
ACCEPTS = {
    "positive_fraction": "a percentage string such as '3%' or a fraction such as 0.03, above 0",
    "int>=0": "an integer >= 0",
    "int>=2": "an integer >= 2",
    "devices": "a non-empty list of GPU indices such as [0] or [0, 1]",
    "positive_float": "a positive number",
    "bool": "True or False",
    "latency": "a dict of limits in seconds such as {'tpot_p90': 0.05, 'ttft_p99': 1.0}",
    "int>=1": "an integer >= 1",
    "hosts": "a non-empty list of host names such as ['node1', 'node2']",
}


def _marker_text(shape: str, value: object) -> str:
    """A marker value as the text its flag's parser reads; TypeError when its type is not
    one the argument takes (the parser then applies the flag's rules to the text)."""
    if shape == "bool":
        if not isinstance(value, bool):
            raise TypeError
        return str(value)
    if shape == "devices":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        if not ok or not value:
            raise TypeError
        assert isinstance(value, (list, tuple))
        return ",".join(str(v) for v in value)
    if shape == "fraction" and isinstance(value, str):
        return value
    if shape == "hosts":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
        if not ok or not value:
            raise TypeError
        assert isinstance(value, (list, tuple))
        return ",".join(value)
    if shape == "latency":
        if not isinstance(value, Mapping) or not value:
            raise TypeError
        for name, limit in value.items():
            if not isinstance(name, str) or isinstance(limit, bool):
                raise TypeError
            if not isinstance(limit, (int, float)):
                raise TypeError
        return ",".join(f"{name}={limit!r}" for name, limit in value.items())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    if shape == "int" and not isinstance(value, int):
        raise TypeError
    return repr(value)


def parse_marker(nodeid: str, args: Sequence[object], kwargs: Mapping[str, object]) -> MarkerArgs:
    """Validate one test's marker with its flags' parsers; a :class:`MarkerError` names the
    test, the argument and what is allowed."""
    allowed = ", ".join(MARKER_FIELDS)
    if args:
        raise MarkerError(
            f"{nodeid}: @pytest.mark.tpw takes keyword arguments only, got "
            f"positional {args!r}; allowed: {allowed}"
        )
    parsed: dict[str, object] = {}
    for key, value in kwargs.items():
        row = ROWS.get(key)
        if row is None or row[MARKER] is None:
            raise MarkerError(
                f"{nodeid}: @pytest.mark.tpw got unknown argument {key!r}; allowed: {allowed}"
            )
        where = f"{nodeid}: @pytest.mark.tpw({key}={value!r}): expected {ACCEPTS[row[PARSER]]}"
        try:
            parsed[key] = PARSERS[row[PARSER]](_marker_text(row[MARKER], value))
        except TypeError:
            raise MarkerError(where) from None
        except ValueError as exc:
            raise MarkerError(f"{where} ({exc})") from None
    return MarkerArgs(**parsed)  # type: ignore[arg-type]


__all__ = [
    "BASELINE_MODES",
    "MARKER_FIELDS",
    "BaselineMode",
    "MarkerArgs",
    "Settings",
    "TestSettings",
    "build",
    "default",
    "parse_bool",
    "parse_confidence",
    "parse_fraction",
    "parse_marker",
    "parse_positive_fraction",
]
