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

from pytest_tpw.config.options import MARKER_HELP, add_options
from pytest_tpw.hooks import hookspecs

if TYPE_CHECKING:  # the stash keys below name these in strings: imported for mypy only
    from pytest_tpw.config.settings import MarkerArgs, Settings, TestSettings  # noqa: F401
    from pytest_tpw.hooks.outcomes import Deferrals  # noqa: F401
    from pytest_tpw.hooks.xdist import HeldWorkerReports
    from pytest_tpw.measure.meter import Meter, TokensPerJoule  # noqa: F401
    from pytest_tpw.present.progress import TerminalStream
    from pytest_tpw.run.session import TpwSession
    from pytest_tpw.serving.servers import ServedModel

SETTINGS_KEY = pytest.StashKey["Settings"]()
SESSION_KEY = pytest.StashKey["TpwSession"]()
DEFERRALS_KEY = pytest.StashKey["Deferrals"]()
MARKER_KEY = pytest.StashKey["MarkerArgs"]()
TEST_KEY = pytest.StashKey["TestSettings"]()
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
    from pytest_tpw.host.pinning import PinningError, pin_this_worker

    try:
        pin_this_worker(os.environ, int(per_worker))
    except (PinningError, ValueError) as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if not _measuring(config):
        return  # a plain run parses nothing more: the off mode stays cheap
    from pytest_tpw.config.settings import from_config

    settings = config.stash[SETTINGS_KEY] = from_config(config)
    if settings.gpus_per_worker and not _is_xdist_worker(config):
        from pytest_tpw.hooks.xdist import check_gpus_per_worker

        check_gpus_per_worker(config, settings.gpus_per_worker)


_MEASURING_FLAGS = ("tpw_update", "tpw_record", "tpw_update_missing", "tpw_gpus_per_worker")


def _measuring(config: pytest.Config) -> bool:
    """``--tpw``, a flag or ini key that records baselines (which implies it), or GPU pinning
    for xdist workers (checked on the controller before any worker starts)."""
    if config.getoption("tpw") or config.getini("tpw"):
        return True
    return any(
        config.getoption(name) or _asks(str(config.getini(name))) for name in _MEASURING_FLAGS
    )


def _asks(ini: str) -> bool:
    """An ini value that asks for something; a bad one counts, so that parsing names it."""
    from pytest_tpw.config.options import parse_bool

    try:
        return parse_bool(ini)
    except ValueError:
        return True


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _reruns(item: pytest.Item) -> bool:
    """True when pytest-rerunfailures may rerun this test (``--reruns N`` or ``flaky``)."""
    if not item.config.pluginmanager.hasplugin("rerunfailures"):
        return False
    return (
        bool(getattr(item.config.option, "reruns", 0))
        or item.get_closest_marker("flaky") is not None
    )


def _session(config: pytest.Config) -> TpwSession | None:
    return config.stash.get(SESSION_KEY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Open the sensor and read the baselines before any test runs: bad input fails at once."""
    config = session.config
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.enabled:
        return
    from pytest_tpw.errors import SensorUnavailable, TpwError
    from pytest_tpw.hooks.outcomes import Deferrals
    from pytest_tpw.run.session import TpwSession

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
    _sigterm_as_interrupt(config)
    hooks = MeasuringHooks(tpw_session)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None and tpw_session.role.reports():
        from pytest_tpw.present.progress import Progress, TerminalStream

        capture = config.pluginmanager.get_plugin("capturemanager")
        hooks.line = TerminalStream(terminal, capture)
        tpw_session.progress = Progress(hooks.line, tty=bool(terminal.isatty))
    dsession = config.pluginmanager.get_plugin("dsession")
    if dsession is not None and not _is_xdist_worker(config):
        from pytest_tpw.hooks.xdist import HeldWorkerReports

        # the controller decides the workers' comparisons with the whole run
        hooks.held = HeldWorkerReports(dsession, tpw_session)
    config.pluginmanager.register(hooks, "tpw-measuring")


def _sigterm_as_interrupt(config: pytest.Config) -> None:
    """CI cancels a job with SIGTERM: treat it as Ctrl-C, so that the measurements that
    finished are kept (baselines, JSON) exactly as after an interrupt. Left alone when
    another handler is installed, or off the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    config.add_cleanup(restore)


def pytest_report_header(config: pytest.Config) -> list[str]:
    tpw_session = _session(config)
    return [] if tpw_session is None else tpw_session.header_lines()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``@pytest.mark.tpw``; run canaries first when comparing."""
    problems = []
    marked_parents: dict[int, bool] = {}
    for item in items:
        # own markers first, each parent once: a plain run pays almost nothing per test
        if not _carries_tpw(item, marked_parents):
            continue
        marker = item.get_closest_marker("tpw")
        if marker is None:
            continue
        from pytest_tpw.config.settings import parse_marker
        from pytest_tpw.errors import MarkerError

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


def _carries_tpw(item: pytest.Item, parents: dict[int, bool]) -> bool:
    """True when the item or one of its parents (class, module, package) has a tpw marker."""
    if any(m.name == "tpw" for m in item.own_markers):
        return True
    parent = item.parent
    if parent is None:
        return False
    found = parents.get(id(parent))
    if found is None:
        found = parents[id(parent)] = any(
            m.name == "tpw" for node in parent.listchain() for m in node.own_markers
        )
    return found


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
        from pytest_tpw.measure.meter import OffMeter

        off = OffMeter(item.nodeid)
        yield off
        if request.session.testsfailed == failed_before:
            off.check_finished()
        return
    test = item.stash[TEST_KEY] = tpw_session.settings.for_test(item.stash.get(MARKER_KEY, None))
    meter = tpw_session.meter_for(item.nodeid, test)
    item.stash[METER_KEY] = meter
    yield meter
    from pytest_tpw.hooks.outcomes import JUDGEMENTS_KEY, RESULTS_KEY
    from pytest_tpw.hooks.warning_types import TpwMeasurementWarning

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
    from pytest_tpw.hooks.warning_types import TpwMeasurementWarning
    from pytest_tpw.serving.servers import Servers

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
        self.line: TerminalStream | None = None
        #: On pytest-xdist's controller: the workers' tests whose verdicts wait for the run.
        self.held: HeldWorkerReports | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take a worker's streamed results; erase the live progress line before pytest
        prints a result."""
        if (
            report.when == "teardown"
            and report.user_properties
            and not self.session.role.sends_results
        ):
            from pytest_tpw.hooks.xdist import take_streamed

            take_streamed(self.session, report)
        progress = self.session.progress
        if progress is not None and self.line is not None and progress.shown:
            progress.clear()
            self.line.hand_back()

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: object, sched: object) -> None:
        """pytest-xdist, on the controller: a worker died while running ``crashitem``."""
        if self.held is not None:
            self.held.flush(crashitem)  # what came of it is logged before the crash
        self.session.notes.append(
            f"a pytest-xdist worker died while running {crashitem}: its measurement in "
            "flight is lost; every measurement that finished before is kept"
        )

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
        from pytest_tpw.hooks import outcomes

        if call.when == "teardown":
            if not outcomes.pending(item):
                outcomes.attach_properties(item, report, self.session.sensor_info())
            if _is_xdist_worker(item.config):
                # streamed to the controller with the report: the controller decides a
                # pending verdict, and a worker killed later loses only the measurement it
                # was taking then
                from pytest_tpw.hooks.xdist import PAYLOAD_PROPERTY

                report.user_properties.append((PAYLOAD_PROPERTY, self.session.payload(item.nodeid)))
        if call.when != "call":
            return report
        item.stash[CALL_FAILED_KEY] = report.failed
        judgements = self.session.judge_meter(meter, item.stash[TEST_KEY])
        if _reruns(item):
            # pytest-rerunfailures runs and logs its own protocol: nothing can be held, each
            # test is decided alone
            for j in judgements:
                self.session.judge.settle_alone(j)
        item.stash[outcomes.JUDGEMENTS_KEY] = {j.key: j for j in judgements}
        outcomes.fail_report(report, judgements)
        if report.failed:
            self.session.failed_tests.add(item.nodeid)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        """Hold the reports of compared tests: their verdicts wait for the whole run."""
        if (
            not self.session.judge.comparing
            or _is_xdist_worker(item.config)
            or "tpw" not in getattr(item, "fixturenames", ())
            or _reruns(item)
        ):
            return None
        item.config.stash[DEFERRALS_KEY].run(item, nextitem)
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Once every test has run: the run-wide finding and the final verdicts (run-wide
        shift, Benjamini-Hochberg); then the held tests are logged with their outcome."""
        try:
            return (yield)
        finally:
            self.session.finish_run()
            session.config.stash[DEFERRALS_KEY].release()
            if self.held is not None:
                self.held.release()


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
    run_wide = tpw_session.judge.run_wide
    failed_run = run_wide is not None and run_wide.fails and tpw_session.role.reports()
    if (not written or failed_run) and session.exitstatus == pytest.ExitCode.OK:
        # nothing recorded, or a stack regression the run was asked to fail on: not a pass
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist, on the controller: take a finished worker's measurements."""
    tpw_session = _session(node.config)  # type: ignore[attr-defined]
    if tpw_session is not None:
        from pytest_tpw.hooks.xdist import merge_worker_output

        merge_worker_output(tpw_session, node)


def pytest_unconfigure(config: pytest.Config) -> None:
    tpw_session = _session(config)
    if tpw_session is not None:
        tpw_session.close()
