"""The hook layer: options, the marker, the ``tpw`` fixture, and the hooks that dispatch.

No arithmetic, no file formats, no NVML here: each hook hands its work to the owner —
``settings`` (options, the marker), ``session`` (sensor, baselines, judge, outputs),
``outcomes`` (held reports, failures, JUnit properties), ``pinning``/``xdist`` (workers).
Everything past the settings loads only when something is measured.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import hookspecs
from .settings import MARKER_HELP, MarkerArgs, Settings, TestSettings, add_options, from_config

if TYPE_CHECKING:
    from .meter import Meter, TokensPerJoule
    from .outcomes import Deferrals
    from .serving import ServedModel
    from .session import TpwSession

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey["TpwSession"]()
DEFERRALS_KEY = pytest.StashKey["Deferrals"]()
MARKER_KEY = pytest.StashKey[MarkerArgs]()
TEST_KEY = pytest.StashKey[TestSettings]()
METER_KEY = pytest.StashKey["Meter"]()
CALL_FAILED_KEY = pytest.StashKey[bool]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """On an xdist worker, pin its GPUs before any conftest can initialise CUDA."""
    per_worker = getattr(early_config.known_args_namespace, "tpw_gpus_per_worker", None) or (
        early_config.getini("tpw_gpus_per_worker")
    )
    if not per_worker or "PYTEST_XDIST_WORKER" not in os.environ:
        return
    from .pinning import PinningError, pin_this_worker

    try:
        pin_this_worker(os.environ, int(per_worker))
    except (PinningError, ValueError) as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = config.stash[SETTINGS_KEY] = from_config(config)
    if settings.gpus_per_worker and not _is_xdist_worker(config):
        from .xdist import check_gpus_per_worker

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
    from .errors import SensorUnavailable, TpwError
    from .outcomes import Deferrals
    from .serving import ServedModel
    from .session import TpwSession

    extra: dict[str, object] = {}
    for found in config.hook.pytest_tpw_sensor_factories():
        extra.update(found)
    try:
        tpw_session = TpwSession.start(
            settings,
            config.rootpath,
            extra,  # type: ignore[arg-type]
            worker=_is_xdist_worker(config),
            invocation_dir=config.invocation_params.dir,
        )
    except SensorUnavailable as exc:
        raise pytest.UsageError(f"pytest-tpw: sensor {settings.sensor!r}: {exc}") from None
    except TpwError as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None
    config.stash[SESSION_KEY] = tpw_session
    config.stash[DEFERRALS_KEY] = Deferrals(tpw_session.sensor_info())
    hooks = MeasuringHooks(tpw_session)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None and tpw_session.role.reports():
        from .progress import Progress

        hooks.line = _TerminalLine(terminal)
        tpw_session.progress = Progress(hooks.line, tty=bool(terminal.isatty))  # type: ignore[arg-type]  # a TextIO's write and flush are all it uses
    config.pluginmanager.register(hooks, "tpw-measuring")


class _TerminalLine:
    """The progress line's stream: pytest's terminal, on a line of its own.

    Before its first write it moves to a fresh line (pytest's half-written line of dots
    stays as it is); once cleared it hands the line back, and pytest starts its next result
    on a new line with the file's name again.
    """

    def __init__(self, terminal: pytest.TerminalReporter) -> None:
        self.terminal = terminal
        self.active = False

    def write(self, text: str) -> int:
        if not self.active:
            self.terminal.ensure_newline()
            self.active = True
        self.terminal.write(text, flush=True)
        if text.endswith("\n"):
            self.hand_back()
        return len(text)

    def flush(self) -> None:
        pass

    def hand_back(self) -> None:
        self.active = False
        self.terminal.currentfspath = None  # pytest reprints the file name on a fresh line


def pytest_report_header(config: pytest.Config) -> list[str]:
    tpw_session = _session(config)
    return [] if tpw_session is None else tpw_session.header_lines()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``@pytest.mark.tpw``; run canaries first when comparing."""
    from .errors import MarkerError
    from .settings import parse_marker

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
    if tpw_session is not None and tpw_session.judge.comparing:
        # canaries estimate the suite-wide shift that the other tests' ratios are corrected
        # by, so they must be measured first; the sort is stable for everything else
        def canary_first(item: pytest.Item) -> int:
            marker = item.stash.get(MARKER_KEY, None)
            return 0 if marker is not None and marker.canary else 1

        items.sort(key=canary_first)


@pytest.fixture
def tpw(request: pytest.FixtureRequest) -> Generator[TokensPerJoule, None, None]:
    """Measure tokens per joule of the work given to it (with ``pytest --tpw``).

    Call form: ``out = tpw(fn, *args, tokens=int_or_callable, name=None, **kwargs)`` runs
    ``fn`` in warm-up and measured windows (repeating short calls so that each window lasts
    the sensor's minimum) and returns the last result. Loop form:
    ``for w in tpw.rounds(): with w: ...; w.add_tokens(n)``. Coroutines:
    ``await tpw.acall(fn, ..., tokens=...)``. ``tpw.result`` holds the last measurement's
    tokens_per_joule, joules_per_token, watts, tokens_per_second, n, ci, verdict, samples
    (``tpw.results`` every measurement of the test by name). With a baseline, the verdict
    decides the outcome: REGRESSED fails the test. Without ``--tpw`` the work runs once,
    nothing is measured and ``tpw.result`` is None, but misuse (bad ``tokens=``, a window
    not entered, two unnamed measurements) is refused just the same.
    """
    item = request.node
    tpw_session = _session(request.config)
    failed_before = request.session.testsfailed
    if tpw_session is None:
        from .meter import OffMeter

        off = OffMeter(item.nodeid)
        yield off
        if request.session.testsfailed == failed_before:
            off.check_finished()
        return
    test = item.stash[TEST_KEY] = tpw_session.settings.for_test(item.stash.get(MARKER_KEY, None))
    meter = tpw_session.meter_for(item.nodeid, test)
    item.stash[METER_KEY] = meter
    yield meter
    from .outcomes import JUDGEMENTS_KEY, RESULTS_KEY
    from .warning_types import TpwMeasurementWarning

    kept = tpw_session.record(meter)
    item.stash[RESULTS_KEY] = [(m.name, result) for m, result in kept]
    judgements = item.stash.get(JUDGEMENTS_KEY, {})
    path, line, _ = item.location
    for m in meter.measurements:
        if not m.complete:
            continue  # the test failed inside it: nothing worth recording
        j = judgements.get(m.key)
        for text in [*m.warnings, *(j.warnings if j is not None else [])]:
            # attributed to the test, not to this file, in the warnings summary
            warnings.warn_explicit(TpwMeasurementWarning(text), None, path, (line or 0) + 1)
    if not item.stash.get(CALL_FAILED_KEY, False):
        meter.check_finished()


@pytest.fixture
def tpw_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Generator[Callable[..., ServedModel], None, None]:
    """Start a served model and measure it from its client: ``tpw_server(command, ...)``.

    ``model = tpw_server(["vllm", "serve", "m", "--port", "{port}"])`` runs the command
    (``{port}`` becomes a free port; ``ready_path="/v1/models"``, ``env=``, ``cwd=``,
    ``startup_timeout_s=120``), waits until it answers, and aims the session's sensor at it:
    NVML measures the GPUs its process tree uses (they must be measured and the server's
    alone: NVML has no per-process energy), ``cpu-estimate`` the tree's CPU time. Drive it
    with ``model.client()`` (``openai.OpenAI``) or ``model.async_client()`` inside ``tpw(...)``
    and count tokens from the responses' usage (``pytest_tpw.count.openai_tokens``). Every
    server stops at the end of the test, pass or fail; its log tail goes to the report.
    Without ``--tpw`` the server runs and nothing is measured.
    """
    from .serving import Servers
    from .warning_types import TpwMeasurementWarning

    tpw_session = _session(request.config)
    servers = Servers(tpw_session.sensor if tpw_session else None, tmp_path)
    try:
        yield servers.start
    finally:
        servers.stop()
        for what, tail in servers.log_tails():
            request.node.add_report_section("teardown", what, tail)
        path, line, _ = request.node.location
        for text in servers.warnings:
            warnings.warn_explicit(TpwMeasurementWarning(text), None, path, (line or 0) + 1)


class MeasuringHooks:
    """The per-test hooks, registered only with ``--tpw``: without it, no test pays for them."""

    def __init__(self, tpw_session: TpwSession) -> None:
        self.session = tpw_session
        self.line: _TerminalLine | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Erase the live progress line before pytest prints a result."""
        progress = self.session.progress
        if progress is not None and self.line is not None and progress.shown:
            progress.clear()
            self.line.hand_back()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """After the body: judge its measurements (a failing verdict fails the test); after
        teardown: attach the measurements to the report as JUnit properties."""
        report = yield
        meter = item.stash.get(METER_KEY, None)
        if meter is None:
            return report
        from . import outcomes

        if call.when == "teardown" and not outcomes.pending(item):
            outcomes.attach_properties(item, report, self.session.sensor_info())
        if call.when != "call":
            return report
        item.stash[CALL_FAILED_KEY] = report.failed
        judgements = self.session.judge_meter(meter, item.stash[TEST_KEY])
        if _is_xdist_worker(item.config):
            # the controller logs a worker's reports as they arrive: nothing can be held
            for j in judgements:
                self.session.judge.settle_without_fdr(j)
        item.stash[outcomes.JUDGEMENTS_KEY] = {j.key: j for j in judgements}
        outcomes.fail_report(report, judgements)
        if report.failed:
            self.session.failed_tests.add(item.nodeid)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        """Hold the reports of tests whose verdict waits for the session's FDR control."""
        if (
            not self.session.judge.comparing
            or _is_xdist_worker(item.config)
            or "tpw" not in getattr(item, "fixturenames", ())
        ):
            return None
        item.config.stash[DEFERRALS_KEY].run(item, nextitem)
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Once every test has run: apply FDR and log the held tests with their final outcome."""
        try:
            return (yield)
        finally:
            self.session.judge.apply_fdr()
            session.config.stash[DEFERRALS_KEY].release()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    tpw_session = _session(config)
    if tpw_session is None or not tpw_session.role.reports():
        return
    terminalreporter.write_sep("=", "tokens per joule")
    for line in tpw_session.terminal_lines():
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session's role sends or writes its results; a failed write fails the run."""
    config = session.config
    tpw_session = _session(config)
    if tpw_session is None:
        return
    sink = getattr(config, "workeroutput", {})

    def environment_hook() -> None:
        config.hook.pytest_tpw_environment(environment=tpw_session.extra_environment)

    if tpw_session.progress is not None:
        tpw_session.progress.close()
    interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
    written = tpw_session.role.finish(interrupted, sink, environment_hook)
    if not written and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # nothing recorded: not a pass


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist, on the controller: take a finished worker's measurements."""
    tpw_session = _session(node.config)  # type: ignore[attr-defined]
    if tpw_session is not None:
        from .xdist import merge_worker_output

        merge_worker_output(tpw_session, node)


def pytest_unconfigure(config: pytest.Config) -> None:
    tpw_session = _session(config)
    if tpw_session is not None:
        tpw_session.close()
