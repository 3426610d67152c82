"""The hook layer: options, the marker, the ``tpw`` fixture and the report hooks.

No arithmetic, no file formats, no NVML here: each hook delegates to the module that owns
the work (settings, session, meter, report, files).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_tpw import hookspecs
from pytest_tpw.errors import MarkerError, SensorUnavailable
from pytest_tpw.settings import (
    MARKER_HELP,
    MarkerArgs,
    Settings,
    add_options,
    from_config,
    parse_marker,
)

# The measuring modules load only when something is measured: a session without --tpw
# (or a test without the fixture) pays for none of them.
if TYPE_CHECKING:
    from pytest_tpw.meter import Meter
    from pytest_tpw.session import TpwSession  # noqa: F401 - named in a string below

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey["TpwSession"]()
MARKER_KEY = pytest.StashKey[MarkerArgs]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[SETTINGS_KEY] = from_config(config)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Open the sensor before any test runs, so a bad ``--tpw-sensor`` fails at once."""
    config = session.config
    settings = config.stash[SETTINGS_KEY]
    if not settings.enabled:
        return
    from pytest_tpw.session import TpwSession

    extra: dict[str, object] = {}
    for found in config.hook.pytest_tpw_sensor_factories():
        extra.update(found)
    tpw_session = TpwSession(settings, config.rootpath, extra)  # type: ignore[arg-type]
    try:
        tpw_session.open_sensor()
    except SensorUnavailable as exc:
        raise pytest.UsageError(f"pytest-tpw: sensor {settings.sensor!r}: {exc}") from None
    config.stash[SESSION_KEY] = tpw_session


def pytest_report_header(config: pytest.Config) -> list[str]:
    tpw_session = config.stash.get(SESSION_KEY, None)
    if tpw_session is None or tpw_session.sensor is None:
        return []
    sensor = tpw_session.sensor
    lines = [f"tpw: sensor {sensor.name}, joules {sensor.provenance} ({sensor.method})"]
    lines += [f"tpw: passed over {name}: {why}" for name, why in tpw_session.skipped.items()]
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``@pytest.mark.tpw``; all bad markers are reported together."""
    problems = []
    for item in items:
        marker = item.get_closest_marker("tpw")
        if marker is None:
            continue
        try:
            item.stash[MARKER_KEY] = parse_marker(item.nodeid, marker.args, marker.kwargs)
        except MarkerError as exc:
            problems.append(str(exc))
    if problems:
        raise pytest.UsageError("pytest-tpw: invalid marker(s):\n  " + "\n  ".join(problems))


def _meter(request: pytest.FixtureRequest) -> Meter:
    from pytest_tpw.meter import Meter, MeterConfig, fixed_rounds

    item = request.node
    marker = item.stash.get(MARKER_KEY, None)
    tpw_session = request.config.stash.get(SESSION_KEY, None)
    if tpw_session is not None:
        return tpw_session.meter_for(item.nodeid, marker)
    settings = request.config.stash[SETTINGS_KEY]
    off = MeterConfig(enabled=False, warmup=0, min_window_s=None, max_delay_s=0.0,
                      confidence=settings.confidence, devices=None)
    return Meter(item.nodeid, off, None, fixed_rounds(0))


@pytest.fixture
def tpw(request: pytest.FixtureRequest) -> Generator[Meter, None, None]:
    """Measure tokens per joule of the work given to it (with ``pytest --tpw``).

    Call form: ``out = tpw(fn, *args, tokens=int_or_callable, name=None, **kwargs)`` runs
    ``fn`` in warm-up and measured windows (repeating short calls so that each window lasts
    the sensor's minimum) and returns the last result. Loop form:
    ``for w in tpw.rounds(): with w: ...; w.add_tokens(n)``. Coroutines:
    ``await tpw.acall(fn, ..., tokens=...)``. ``tpw.result`` holds the last measurement's
    tokens_per_joule, joules_per_token, watts, tokens_per_second, n, ci, verdict, samples.
    Without ``--tpw`` the work runs once, nothing is measured and ``tpw.result`` is None.
    """
    meter = _meter(request)
    yield meter
    tpw_session = request.config.stash.get(SESSION_KEY, None)
    if tpw_session is None:
        return
    from pytest_tpw import report
    from pytest_tpw.warning_types import TpwMeasurementWarning

    for m in meter.measurements:
        if not m.complete:
            continue  # the test failed inside it: nothing worth recording
        result = tpw_session.record(m)
        if result is not None:
            for key, value in report.junit_properties(result, m.name, tpw_session.sensor_info()):
                request.node.user_properties.append((key, value))
        path, line, _ = request.node.location
        for text in m.warnings:
            # attributed to the test, not to this file, in the warnings summary
            warnings.warn_explicit(TpwMeasurementWarning(text), None, path, (line or 0) + 1)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    tpw_session = config.stash.get(SESSION_KEY, None)
    if tpw_session is None or tpw_session.sensor is None or _is_xdist_worker(config):
        return
    from pytest_tpw import report

    terminalreporter.write_sep("=", "tokens per joule")
    lines = report.terminal_lines(tpw_session.rows(), [m for m, _ in
                                  tpw_session.measurements.values()],
                                  tpw_session.sensor_info(), tpw_session.settings.confidence)
    for line in lines:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write ``--tpw-json`` and the GitHub step summary (the controller only)."""
    config = session.config
    tpw_session = config.stash.get(SESSION_KEY, None)
    if tpw_session is None or tpw_session.sensor is None or _is_xdist_worker(config):
        return
    from pytest_tpw import files, report

    settings = tpw_session.settings
    if settings.json is not None:
        path = config.invocation_params.dir / settings.json  # absolute paths stay as they are
        files.atomic_write_text(path, files.dump_json(tpw_session.json_document()))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and tpw_session.measurements:
        with Path(summary).open("a", encoding="utf-8") as f:
            f.write(report.markdown(tpw_session.rows(), tpw_session.sensor_info(),
                                    settings.confidence))


def pytest_unconfigure(config: pytest.Config) -> None:
    tpw_session = config.stash.get(SESSION_KEY, None)
    if tpw_session is not None:
        tpw_session.close()
