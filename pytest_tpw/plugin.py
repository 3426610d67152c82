"""The hook layer: options, the marker, the ``tpw`` fixture and the report hooks.

No arithmetic, no file formats, no NVML here: each hook delegates to the module that owns
the work (settings, session, judge, outcomes, report, files).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_tpw import hookspecs
from pytest_tpw.errors import MarkerError, SensorUnavailable, TpwError
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
    from pytest_tpw.outcomes import Deferrals  # noqa: F401 - named in a string below
    from pytest_tpw.session import TpwSession

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey["TpwSession"]()
DEFERRALS_KEY = pytest.StashKey["Deferrals"]()
MARKER_KEY = pytest.StashKey[MarkerArgs]()
METER_KEY = pytest.StashKey["Meter"]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """On an xdist worker, pin its GPUs before any conftest can initialise CUDA."""
    per_worker = getattr(early_config.known_args_namespace, "tpw_gpus_per_worker", None) \
        or early_config.getini("tpw_gpus_per_worker")
    if not per_worker or "PYTEST_XDIST_WORKER" not in os.environ:
        return
    from pytest_tpw.pinning import PinningError, pin_this_worker

    try:
        pin_this_worker(os.environ, int(per_worker))
    except (PinningError, ValueError) as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = config.stash[SETTINGS_KEY] = from_config(config)
    if settings.gpus_per_worker and not _is_xdist_worker(config):
        from pytest_tpw.xdist import check_gpus_per_worker

        check_gpus_per_worker(config, settings.gpus_per_worker)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _session(config: pytest.Config) -> TpwSession | None:
    return config.stash.get(SESSION_KEY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Open the sensor and read the baselines before any test runs: bad input fails at once."""
    config = session.config
    settings = config.stash[SETTINGS_KEY]
    if not settings.enabled:
        return
    from pytest_tpw.outcomes import Deferrals
    from pytest_tpw.session import TpwSession

    extra: dict[str, object] = {}
    for found in config.hook.pytest_tpw_sensor_factories():
        extra.update(found)
    tpw_session = TpwSession(settings, config.rootpath, extra)  # type: ignore[arg-type]
    try:
        tpw_session.open_sensor()
        tpw_session.load_baselines()
    except SensorUnavailable as exc:
        tpw_session.close()
        raise pytest.UsageError(f"pytest-tpw: sensor {settings.sensor!r}: {exc}") from None
    except TpwError as exc:
        tpw_session.close()
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None
    config.stash[SESSION_KEY] = tpw_session
    config.stash[DEFERRALS_KEY] = Deferrals()
    config.pluginmanager.register(MeasuringHooks(), "tpw-measuring")


def pytest_report_header(config: pytest.Config) -> list[str]:
    tpw_session = _session(config)
    if tpw_session is None or tpw_session.sensor is None:
        return []
    sensor = tpw_session.sensor
    lines = [f"tpw: sensor {sensor.name}, joules {sensor.provenance} ({sensor.method})"]
    lines += [f"tpw: passed over {name}: {why}" for name, why in tpw_session.skipped.items()]
    judge = tpw_session.judge
    if judge is not None:
        where = tpw_session.baseline_path
        found = f"{len(judge.baseline.measurements)} measurement(s)" if judge.baseline \
            else "none yet"
        lines.append(f"tpw: baselines {where} ({found})")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``@pytest.mark.tpw``; run canaries first when comparing."""
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
    tpw_session = _session(config)
    if tpw_session is not None and tpw_session.judge is not None and \
            tpw_session.judge.comparing:
        # canaries estimate the suite-wide shift that the other tests' ratios are corrected
        # by, so they must be measured first; the sort is stable for everything else
        def canary_first(item: pytest.Item) -> int:
            marker = item.stash.get(MARKER_KEY, None)
            return 0 if marker is not None and marker.canary else 1

        items.sort(key=canary_first)


def _meter(request: pytest.FixtureRequest) -> Meter:
    from pytest_tpw.meter import Meter, MeterConfig, fixed_rounds

    item = request.node
    marker = item.stash.get(MARKER_KEY, None)
    tpw_session = _session(request.config)
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
    tokens_per_joule, joules_per_token, watts, tokens_per_second, n, ci, verdict, samples
    (``tpw.results`` every measurement of the test by name). With a baseline, the verdict
    decides the outcome: REGRESSED fails the test. Without ``--tpw`` the work runs once,
    nothing is measured and ``tpw.result`` is None.
    """
    meter = _meter(request)
    request.node.stash[METER_KEY] = meter
    yield meter
    tpw_session = _session(request.config)
    if tpw_session is None:
        return
    from pytest_tpw import report
    from pytest_tpw.outcomes import JUDGEMENTS_KEY
    from pytest_tpw.warning_types import TpwMeasurementWarning

    tpw_session.note_rank(meter)
    judgements = request.node.stash.get(JUDGEMENTS_KEY, {})
    path, line, _ = request.node.location
    for m in meter.measurements:
        if not m.complete:
            continue  # the test failed inside it: nothing worth recording
        result = tpw_session.record(m)
        if result is not None:
            for key, value in report.junit_properties(result, m.name, tpw_session.sensor_info()):
                request.node.user_properties.append((key, value))
        j = judgements.get(m.key)
        for text in [*m.warnings, *(j.warnings if j is not None else [])]:
            # attributed to the test, not to this file, in the warnings summary
            warnings.warn_explicit(TpwMeasurementWarning(text), None, path, (line or 0) + 1)


class MeasuringHooks:
    """The per-test hooks, registered only with ``--tpw``: without it, no test pays for them."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, object, object]:
        """After the test body: judge its measurements; a failing verdict fails the test."""
        report = yield
        if call.when != "call":
            return report
        tpw_session = _session(item.config)
        meter = item.stash.get(METER_KEY, None)
        if tpw_session is None or meter is None or tpw_session.judge is None:
            return report
        from pytest_tpw.outcomes import JUDGEMENTS_KEY, fail_report

        marker = item.stash.get(MARKER_KEY, None)
        judgements = tpw_session.judge_meter(meter, marker)
        if _is_xdist_worker(item.config):
            # the controller logs a worker's reports as they arrive: nothing can be held
            for j in judgements:
                tpw_session.judge.settle_without_fdr(j)
        item.stash[JUDGEMENTS_KEY] = {j.key: j for j in judgements}
        assert isinstance(report, pytest.TestReport)
        fail_report(report, judgements)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> bool | None:
        """Hold the reports of tests whose verdict waits for the session's FDR control."""
        deferrals = item.config.stash.get(DEFERRALS_KEY, None)
        tpw_session = _session(item.config)
        if deferrals is None or tpw_session is None or tpw_session.judge is None or \
                not tpw_session.judge.comparing or _is_xdist_worker(item.config) or \
                "tpw" not in getattr(item, "fixturenames", ()):
            return None
        deferrals.run(item, nextitem)
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Once every test has run: apply FDR and log the held tests with their final outcome."""
        try:
            return (yield)
        finally:
            deferrals = session.config.stash.get(DEFERRALS_KEY, None)
            tpw_session = _session(session.config)
            if deferrals is not None and tpw_session is not None and tpw_session.judge:
                tpw_session.judge.apply_fdr()
                deferrals.release()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    tpw_session = _session(config)
    if tpw_session is None or tpw_session.sensor is None or _is_xdist_worker(config) or \
            tpw_session.quiet:
        return
    from pytest_tpw import report

    terminalreporter.write_sep("=", "tokens per joule")
    lines = report.terminal_lines(tpw_session.rows(), [m for m, _ in
                                  tpw_session.measurements.values()],
                                  tpw_session.sensor_info(), tpw_session.settings.confidence,
                                  tpw_session.summary_notes())
    for line in lines:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write baselines, ``--tpw-json`` and the GitHub step summary (the controller only)."""
    config = session.config
    tpw_session = _session(config)
    if tpw_session is None or tpw_session.sensor is None or tpw_session.quiet:
        return
    if _is_xdist_worker(config):
        from pytest_tpw.xdist import PAYLOAD_KEY

        config.workeroutput[PAYLOAD_KEY] = tpw_session.worker_payload()  # type: ignore[attr-defined]
        return
    from pytest_tpw import files, report

    settings = tpw_session.settings
    if settings.update or settings.update_missing:
        _write_baselines(tpw_session, session)
    config.hook.pytest_tpw_environment(environment=tpw_session.extra_environment)
    if settings.json is not None:
        path = config.invocation_params.dir / settings.json  # absolute paths stay as they are
        files.atomic_write_text(path, files.dump_json(tpw_session.json_document()))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and tpw_session.measurements:
        with Path(summary).open("a", encoding="utf-8") as f:
            f.write(report.markdown(tpw_session.rows(), tpw_session.sensor_info(),
                                    settings.confidence))


def _write_baselines(tpw_session: TpwSession, session: pytest.Session) -> None:
    from pytest_tpw.errors import TpwError

    try:
        path, written = tpw_session.flush_baselines()
    except TpwError as exc:
        tpw_session.notes.append(f"baselines NOT written: {exc}")
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # nothing recorded: not a pass
        return
    interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
    what = f"{len(written)} measurement(s) written to {path}"
    if interrupted:
        what += " (interrupted: only the measurements that finished; the rest untouched)"
    tpw_session.notes.append(what)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist, on the controller: take a finished worker's measurements."""
    tpw_session = _session(node.config)  # type: ignore[attr-defined]
    if tpw_session is not None:
        from pytest_tpw.xdist import merge_worker_output

        merge_worker_output(tpw_session, node)


def pytest_unconfigure(config: pytest.Config) -> None:
    tpw_session = _session(config)
    if tpw_session is not None:
        tpw_session.close()
