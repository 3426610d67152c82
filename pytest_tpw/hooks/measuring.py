"""A measured run's hooks and the measuring side of the fixtures, loaded only with ``--tpw``.

:func:`start` opens the session (sensor, baselines, judge) and registers
:class:`MeasuringHooks`, so that a plain run pays for none of them. Each hook hands its work
to its owner: the session and its role (:mod:`pytest_tpw.run`), held reports
(:mod:`pytest_tpw.hooks.outcomes`), pytest-xdist (:mod:`pytest_tpw.hooks.xdist`), the
terminal section (:mod:`pytest_tpw.present.summary`).
"""

from __future__ import annotations

import sys
from collections.abc import Generator

import pytest

from pytest_tpw.config.settings import MarkerArgs, Settings, TestSettings
from pytest_tpw.hooks import outcomes, xdist
from pytest_tpw.hooks.fixtures import warn
from pytest_tpw.hooks.plugin import MARKER_KEY
from pytest_tpw.measure.meter import Meter, TokensPerJoule
from pytest_tpw.run.session import TpwSession

DEFERRALS_KEY = pytest.StashKey[outcomes.Deferrals]()
TEST_KEY = pytest.StashKey[TestSettings]()
METER_KEY = pytest.StashKey[Meter]()
CALL_FAILED_KEY = pytest.StashKey[bool]()


def start(config: pytest.Config, settings: Settings) -> TpwSession:
    """Open the sensor and read the baselines (bad input is a ``pytest.UsageError`` at
    once), then register the measured run's hooks."""
    from pytest_tpw.errors import SensorUnavailable, TpwError

    extra: dict[str, object] = {}
    for found in config.hook.pytest_tpw_sensor_factories():
        extra.update(found)
    try:
        tpw_session = TpwSession.start(
            settings,
            config.rootpath,
            extra,  # type: ignore[arg-type]
            worker=xdist.is_worker(config),
            invocation_dir=config.invocation_params.dir,
        )
    except SensorUnavailable as exc:
        raise pytest.UsageError(f"pytest-tpw: sensor {settings.sensor!r}: {exc}") from None
    except TpwError as exc:
        raise pytest.UsageError(f"pytest-tpw: {exc}") from None
    config.stash[DEFERRALS_KEY] = outcomes.Deferrals(tpw_session.sensor_info())
    _sigterm_as_interrupt(config)
    hooks = MeasuringHooks(tpw_session)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None and tpw_session.role.reports():
        from pytest_tpw.present.progress import Progress, TerminalStream

        capture = config.pluginmanager.get_plugin("capturemanager")
        # the stream pytest's terminal writes to: output capture is off at session start
        stream = TerminalStream(terminal, config.get_terminal_writer(), sys.stdout, capture)
        tpw_session.progress = Progress(stream, tty=bool(terminal.isatty))
    hooks.held = xdist.held_worker_reports(config, tpw_session)
    config.pluginmanager.register(hooks, "tpw-measuring")
    return tpw_session


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


def tpw_meter(
    request: pytest.FixtureRequest, tpw_session: TpwSession
) -> Generator[TokensPerJoule, None, None]:
    """The ``tpw`` fixture's measured body: a meter on the session's sensor."""
    item = request.node
    test = item.stash[TEST_KEY] = tpw_session.settings.for_test(item.stash.get(MARKER_KEY, None))
    meter = tpw_session.meter_for(item.nodeid, test)
    item.stash[METER_KEY] = meter
    yield meter
    kept = tpw_session.record(meter)
    item.stash[outcomes.RESULTS_KEY] = [(m.name, result) for m, result in kept]
    judgements = item.stash.get(outcomes.JUDGEMENTS_KEY, {})
    for m in meter.measurements:
        if m.complete:  # a test that failed inside a measurement records nothing of it
            j = judgements.get(m.key)
            # a pending verdict's warnings come with its final outcome, at the end of the run
            warn(item, [*m.warnings, *(j.warnings if j is not None and not j.pending else [])])
    implausible = [t for m, _ in kept for t in tpw_session.implausible.get(m.key, [])]
    if implausible:  # said now, before the session's end writes any baseline
        from pytest_tpw.hooks.warning_types import TpwImplausibleWarning

        warn(item, implausible, TpwImplausibleWarning)
    if not item.stash.get(CALL_FAILED_KEY, False):
        meter.check_finished()


def _skipped(item: pytest.Item) -> bool:
    """A test marked to be skipped: ``skip``, or ``skipif`` with a true condition (a
    condition given as a string is evaluated only when the test runs: counted)."""
    if item.get_closest_marker("skip") is not None:
        return True
    return any(
        isinstance(cond, bool) and cond
        for mark in item.iter_markers("skipif")
        for cond in (*mark.args, mark.kwargs.get("condition"))
    )


def _reruns(item: pytest.Item) -> bool:
    """True when pytest-rerunfailures may rerun this test (``--reruns N`` or ``flaky``)."""
    if not item.config.pluginmanager.hasplugin("rerunfailures"):
        return False
    return (
        bool(getattr(item.config.option, "reruns", 0))
        or item.get_closest_marker("flaky") is not None
    )


class MeasuringHooks:
    """The hooks of a measured run, registered at its start: a plain run pays for none."""

    def __init__(self, tpw_session: TpwSession) -> None:
        self.session = tpw_session
        #: On pytest-xdist's controller: the workers' tests whose verdicts wait for the run.
        self.held: xdist.HeldWorkerReports | None = None

    def pytest_report_header(self) -> list[str]:
        from pytest_tpw.present.summary import header_lines

        s = self.session
        stored = s.judge.baseline
        count = len(stored.measurements) if stored is not None else None
        legacy = None
        if s.legacy_baselines is not None and s.legacy_key is not None:
            legacy = (s.legacy_key, s.legacy_baselines)
        return header_lines(
            s.sensor_info(), s.skipped, s.baseline_path, count, s.idle_watts, legacy
        )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Canaries first when comparing: they estimate the suite-wide shift the other
        tests' ratios are corrected by (the sort is stable for everything else)."""
        if self.session.judge.comparing:

            def canary_first(item: pytest.Item) -> int:
                marker: MarkerArgs | None = item.stash.get(MARKER_KEY, None)
                return 0 if marker is not None and marker.canary else 1

            items.sort(key=canary_first)

    @pytest.hookimpl(trylast=True)  # after pytest's "collected N items"
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Focus the judge on the collected tests, then say at the start roughly what the
        measured tests will cost: tests x windows x window length (pytest-xdist's
        controller collects nothing and says nothing)."""
        # this run's tests: the judge compares only their stored measurements
        self.session.focus(item.nodeid for item in session.items)
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None or session.config.option.collectonly:
            return
        tests = [
            (item.nodeid, self.session.settings.for_test(item.stash.get(MARKER_KEY, None)))
            for item in session.items
            if "tpw" in getattr(item, "fixturenames", ()) and not _skipped(item)
        ]
        if not tests or not self.session.role.reports():
            return
        from pytest_tpw.run import cost

        found, min_window = cost.plan(tests, self.session.judge, self.session.sensor.min_window_s())
        terminal.write_line(cost.line(found, min_window))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take a worker's streamed results; erase the live progress line before pytest
        prints a result."""
        if report.when == "teardown" and report.user_properties:
            report.user_properties = self.session.role.take(report.user_properties)
        progress = self.session.progress
        if progress is not None and progress.shown:
            progress.clear()

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
        if call.when == "teardown":
            if not outcomes.pending(item):
                outcomes.attach_properties(item, report, self.session.sensor_info())
            report.user_properties.extend(self.session.role.teardown_properties(item.nodeid))
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
            or not self.session.role.holds_reports
            or "tpw" not in getattr(item, "fixturenames", ())
            or _reruns(item)
        ):
            return None
        item.config.stash[DEFERRALS_KEY].run(item, nextitem)
        return True

    # innermost (trylast): the held tests are logged before pytest's terminal writes the
    # last progress figure ([100%]) after the loop, so that they stay on its line
    @pytest.hookimpl(wrapper=True, trylast=True)
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

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> Generator[None, None, None]:
        """The tokens-per-joule section first, before pytest's failures and warnings
        summaries, so that no list of details buries the results."""
        if self.session.role.reports():
            from pytest_tpw.present.summary import terminal_lines

            terminalreporter.write_sep("=", "tokens per joule")
            # a terminal wraps a line wider than itself; a log keeps every name whole
            width = None
            if terminalreporter.isatty:
                width = terminalreporter.config.get_terminal_writer().fullwidth
            for line in terminal_lines(self.session, self.session.closing_notes(), width):
                terminalreporter.write_line(line)
        return (yield)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """The session's role sends or writes its results; a failed write fails the run."""
        config = session.config
        tpw_session = self.session
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
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        """pytest-xdist, on the controller (which collects nothing itself): the run's tests,
        as the first worker collected them (every worker collects the same)."""
        self.session.focus(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        """pytest-xdist, on the controller: take a finished worker's measurements."""
        xdist.merge_worker_output(self.session, node)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.close()
