"""One measuring session: sensor, baselines, judge, the meters it hands out, its outputs.

A :class:`TpwSession` is whole when it exists: :meth:`TpwSession.start` opens the sensor
and reads the baselines first, so nothing in it is ever missing. Its :class:`Role` says what
the process does at the end: the :class:`Controller` (a plain session, or pytest-xdist's
controller) merges workers' results, prints the report and writes every output; a
:class:`Worker` sends its results to the controller as plain data. No pytest import: the
plugin hands settings in and takes plain data and text out.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tpw import sensors
from pytest_tpw.config.settings import Settings, TestSettings
from pytest_tpw.errors import TpwError
from pytest_tpw.host import distributed, fingerprint
from pytest_tpw.host.locks import DeviceLocks
from pytest_tpw.judging.judge import Judge, Judgement
from pytest_tpw.measure.meter import Meter
from pytest_tpw.measure.samples import SHORT_WINDOW, WAITED, Measurement, Result
from pytest_tpw.measure.window import WindowRunner
from pytest_tpw.present import report
from pytest_tpw.store import baseline
from pytest_tpw.store.files import append_text, atomic_write_text, dump_json
from pytest_tpw.verdict import Verdict

if TYPE_CHECKING:
    from pytest_tpw.present.progress import Progress

#: A measurement whose mean power is below this multiple of idle power gets a warning.
IDLE_MARGIN = 1.05

#: Where GitHub Actions reads a job summary from.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@dataclasses.dataclass
class HardwareShare:
    """One hardware key's part of a run: its judge (baselines, run-wide shift), what its
    devices are (as its baseline file records them), and the measurements taken on them.

    A session has one, for its own sensor's hardware; pytest-xdist's controller, whose
    workers may run on hosts of other kinds (``--tx ssh=...``), gains one per other key
    that a worker reports, with a baseline file and a run-wide shift of its own.
    """

    judge: Judge
    hardware: dict[str, Any]
    measurements: dict[str, tuple[Measurement, Result]] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.judge.hardware_key


class TpwSession:
    """State of one pytest session with ``--tpw``: sensor, baselines, judge, results."""

    def __init__(
        self,
        settings: Settings,
        rootdir: Path,
        sensor: sensors.Sensor,
        judge: Judge,
        *,
        skipped: Mapping[str, str] | None = None,
        worker: bool = False,
        invocation_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.rootdir = rootdir
        #: Where pytest was started: relative output paths are taken from there.
        self.invocation_dir = invocation_dir or rootdir
        self.sensor = sensor
        self.judge = judge
        self.skipped = dict(skipped or {})
        self.hardware_key = judge.hardware_key
        self.software = judge.software
        self.locks = DeviceLocks(
            sensor.lock_ids(), timeout_s=settings.lock_timeout, on_wait=_say_waiting
        )
        self.started = dt.datetime.now(dt.timezone.utc)
        own = HardwareShare(
            judge,
            {
                "models": list(sensor.hardware()),
                "sensor": sensor.name,
                "provenance": sensor.provenance,
            },
        )
        #: Every hardware key's share of the run, this process's own first.
        self.shares: dict[str, HardwareShare] = {own.key: own}
        #: This process's own hardware's measurements.
        self.measurements = own.measurements
        self.extra_environment: dict[str, Any] = {}
        #: Tests whose call failed (an assertion, a budget, a regression): they record nothing.
        self.failed_tests: set[str] = set()
        #: The devices' power with nothing running, measured once at start (measured sensors).
        self.idle_watts: float | None = None
        #: Where meters report each window (a live line in a terminal), if anywhere.
        self.progress: Progress | None = None
        #: Set when windows were aligned over a torch.distributed process group.
        self.rank: int | None = None
        #: Lines for the end of the terminal section (baselines written...).
        self.notes: list[str] = []
        self.role: Role = Worker(self) if worker else Controller(self)

    @classmethod
    def start(
        cls,
        settings: Settings,
        rootdir: Path,
        extra_sensors: Mapping[str, sensors.SensorFactory] | None = None,
        *,
        worker: bool = False,
        invocation_dir: Path | None = None,
    ) -> TpwSession:
        """Open the sensor and read this hardware's baselines; the session is then whole.

        Raises :class:`SensorUnavailable` or :class:`BaselineError` (the sensor closed again).
        """
        s = settings
        options = sensors.SensorOptions(
            devices=s.devices,
            sim_watts=s.sim_watts,
            sim_noise=s.sim_noise,
            cpu_watts_per_core=s.cpu_watts_per_core,
        )
        selection = sensors.select(s.sensor, options, dict(extra_sensors or {}))
        sensor = selection.sensor
        try:
            key = fingerprint.hardware_key(sensor.hardware())
            directory = rootdir / s.baseline_dir
            stored = baseline.load(baseline.path_for(directory, key), key)
            others = [] if stored is not None else baseline.other_hardware(directory, key)
            software = fingerprint.software_stack(sensor.describe())
            judge = Judge(s, stored, key, others, software)
        except BaseException:
            sensor.close()
            raise
        session = cls(
            s,
            rootdir,
            sensor,
            judge,
            skipped=selection.skipped,
            worker=worker,
            invocation_dir=invocation_dir,
        )
        if sensor.provenance == "measured" and s.idle_power:
            session.idle_watts = session.measure_idle()
        return session

    def measure_idle(self, seconds: float | None = None) -> float | None:
        """The measured devices' power while this process does nothing, in watts.

        One window of ``max(1 s, the sensor's minimum)`` with the device locks held (so no
        other pytest-tpw window runs meanwhile) and this process asleep. It is context for
        the report, never part of a verdict: tokens per joule stays on gross energy.
        """
        length = seconds if seconds is not None else max(1.0, self.sensor.min_window_s())
        self.locks.acquire("idle power")
        try:
            started = time.perf_counter()
            token = self.sensor.begin()
            time.sleep(length)
            energy = self.sensor.end(token)
            elapsed = time.perf_counter() - started
        except TpwError as exc:
            self.notes.append(f"idle power not measured: {exc}")
            return None
        finally:
            self.locks.release()
        if energy.invalid is not None or not energy.total > 0 or elapsed <= 0:
            return None
        return energy.total / elapsed

    def close(self) -> None:
        self.sensor.close()

    @property
    def baseline_path(self) -> Path:
        return self._baseline_path(self.hardware_key)

    def _baseline_path(self, key: str) -> Path:
        return baseline.path_for(self.rootdir / self.settings.baseline_dir, key)

    def sensor_info(self) -> report.SensorInfo:
        return report.SensorInfo(self.sensor.name, self.sensor.provenance, self.sensor.method)

    def header_lines(self) -> list[str]:
        """What the run header says about the sensor and the baselines."""
        sensor = self.sensor
        lines = [f"tpw: sensor {sensor.name}, joules {sensor.provenance} ({sensor.method})"]
        lines += [f"tpw: passed over {name}: {why}" for name, why in self.skipped.items()]
        stored = self.judge.baseline
        found = f"{len(stored.measurements)} measurement(s)" if stored else "none yet"
        lines.append(f"tpw: baselines {self.baseline_path} ({found})")
        if self.idle_watts is not None:
            lines.append(
                f"tpw: idle power {self.idle_watts:.4g} W (one window with nothing "
                "running, at start; context only, verdicts use gross energy)"
            )
        return lines

    # -- one test --------------------------------------------------------------------------

    def meter_for(self, nodeid: str, test: TestSettings, **runner_options: Any) -> Meter:
        """A meter for one test with its effective settings."""
        runner = WindowRunner(
            self.sensor,
            devices=test.devices,
            min_window_s=test.min_window,
            max_delay_s=test.max_delay,
            locks=self.locks,
            **runner_options,
        )
        policy = self.judge.policy(test)
        return Meter(
            nodeid,
            runner,
            policy,
            warmup=test.warmup,
            confidence=test.confidence,
            progress=self.progress,
            max_rounds=test.rounds or self.judge.params().looks[-1],
        )

    def judge_meter(self, meter: Meter, test: TestSettings) -> list[Judgement]:
        """Verdicts and budgets of a test's finished measurements."""
        comparisons = getattr(meter.policy, "comparisons", {})
        return [
            self.judge.judge(m, meter.summary(m), test, comparisons.get(m.key))
            for m in meter.measurements
            if m.finished
        ]

    def record(self, meter: Meter) -> list[tuple[Measurement, Result]]:
        """Keep a test's finished measurements; returns them with their summaries."""
        if meter.rank is not None:
            self.rank = meter.rank
        kept = [(m, meter.summary(m)) for m in meter.measurements if m.finished]
        threads = getattr(self.sensor, "torch_threads_warning", None)
        hint = threads() if kept and callable(threads) else None
        if isinstance(hint, str):  # once per session: PyTorch's threads exceed the free cores
            kept[0][0].warnings.append(hint)
        for m, result in kept:
            self.measurements[m.key] = (m, result)
            idle = self.idle_watts
            if idle is not None and result.watts < IDLE_MARGIN * idle:
                m.warnings.append(
                    f"{m.key}: its average power ({result.watts:.4g} W) is within "
                    f"{IDLE_MARGIN - 1:.0%} of the idle power ({idle:.4g} W): the work is too "
                    "small to tell from an idle device; give each window more work (a larger "
                    "batch, longer generation)"
                )
        return kept

    # -- the end ---------------------------------------------------------------------------

    @property
    def quiet(self) -> bool:
        """True on a torch.distributed rank other than 0: it neither reports nor writes.

        Only an initialised process group makes a rank (a ``RANK`` variable alone does not:
        a process that is not part of a group reports and writes like any other).
        """
        rank = self.rank
        if rank is None:
            ranks = distributed.current()
            rank = ranks.rank if ranks is not None else None
        return rank is not None and rank != 0

    def _stray_rank_note(self) -> list[str]:
        env = distributed.env_rank()
        if env is None or self.rank is not None or distributed.current() is not None:
            return []
        return [
            f"RANK={env} is set but no torch.distributed process group is initialised: "
            "this process measured alone and reports and writes as a single process; "
            "initialise the process group (e.g. in a session fixture) before the "
            "measured tests to sum windows over ranks"
        ]

    def summary_notes(self) -> list[str]:
        """Verdict counts, the canary shift, hardware notes, lock waits, files written."""
        lines: list[str] = []
        judge = self.judge
        several = len(self.shares) > 1
        for share in self.shares.values():
            run_wide = share.judge.run_wide
            if run_wide is None:
                continue
            text = run_wide.text
            lines.append(
                text.replace("run-wide:", f"run-wide ({share.key}):", 1) if several else text
            )
            lines += [f"  {note}" for note in run_wide.notes]
            if run_wide.fails:
                lines.append(
                    "the run FAILS on the run-wide stack regression (--tpw-strict or "
                    "--tpw-fail-stack); no test failed for it"
                )
        every = [j for share in self.shares.values() for j in share.judge.judgements.values()]
        if every:
            counts: dict[str, int] = {}
            for j in every:
                counts[j.verdict.value] = counts.get(j.verdict.value, 0) + 1
            s = self.settings
            lines.append(
                "verdicts: "
                + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
                + f" (tolerance {s.tolerance:.0%}, noise floor {s.noise_floor:.0%}, "
                f"FDR q = {s.fdr:g})"
            )
            lines += [note for j in every for note in j.notes]
            settled = sum(1 for j in every if j.without_suite)
            if settled:
                lines.append(
                    f"{settled} comparison(s) decided per test, without the run-wide shift "
                    "of the whole suite nor Benjamini-Hochberg across it: pytest-rerunfailures "
                    "runs (and logs) those tests itself, so their verdicts cannot wait for "
                    "the rest of the run"
                )
        if judge.other_hardware and judge.baseline is None and self.measurements:
            lines.append(
                f"no baseline for {self.hardware_key}; baselines exist for "
                f"{', '.join(judge.other_hardware)} (not compared)"
            )
        waits = [(key, m.lock_waits()) for key, (m, _) in self._every_measurement()]
        waits = [(key, w) for key, w in waits if w]
        if waits:
            windows = sum(len(w) for _, w in waits)
            total = sum(sum(w) for _, w in waits)
            lines.append(
                f"{windows} window(s) of {len(waits)} measurement(s) waited for a device lock "
                f"({total:.2f} s in all): another process was measuring the same device; the "
                "waits were outside the windows"
            )
        return [*lines, *self._stray_rank_note(), *self.notes]

    def _every_measurement(self) -> list[tuple[str, tuple[Measurement, Result]]]:
        """Every share's measurements, by the key they have in outputs: a measurement taken
        on another hardware key than this process's is ``<key>@<hardware key>``."""
        own = self.hardware_key
        return [
            (key if share.key == own else f"{key}@{share.key}", entry)
            for share in self.shares.values()
            for key, entry in share.measurements.items()
        ]

    def suspects(self, share: HardwareShare | None = None) -> list[str]:
        """What the recorded device state says about this run, for an environment anomaly:
        the warnings its windows carried (throttling, clocks, heat, busy CPUs), most
        frequent first."""
        counts: dict[str, int] = {}
        for m, _ in (share or self.shares[self.hardware_key]).measurements.values():
            for sample in m.samples:
                for text in sample.warnings:
                    if not text.startswith(WAITED) and text != SHORT_WINDOW:
                        kind = text.split(":", 1)[0] if ":" in text else text
                        counts[kind[:120]] = counts.get(kind[:120], 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        return [f"{text} ({n} window(s))" for text, n in ranked]

    def finish_run(self) -> None:
        """Once every test ran: the run-wide finding and the final verdicts (on the process
        that decides them: not on a pytest-xdist worker, whose controller decides)."""
        if not self.role.sends_results:
            for share in self.shares.values():
                share.judge.finish(self.suspects(share))

    def pending(self, nodeid: str) -> bool:
        """True while a verdict of the test waits for the whole run."""
        return any(j.pending for j in self.judgements_of(nodeid))

    def judgements_of(self, nodeid: str) -> list[Judgement]:
        return [
            j
            for share in self.shares.values()
            for j in share.judge.judgements.values()
            if j.nodeid == nodeid
        ]

    def results_of(self, nodeid: str) -> list[tuple[str | None, Result]]:
        """The test's finished measurements: (name, summary), as JUnit properties need."""
        return [
            (m.name, r)
            for share in self.shares.values()
            for m, r in share.measurements.values()
            if m.nodeid == nodeid
        ]

    def rows(self) -> list[report.Row]:
        rows = []
        for share in self.shares.values():
            judgements = share.judge.judgements
            label = "" if share.key == self.hardware_key else f"@{share.key}"
            for key, (m, result) in share.measurements.items():
                j = judgements.get(key)
                rows.append(
                    report.Row(
                        key + label,
                        result,
                        j.baseline_level if j else None,
                        len(m.warnings),
                        j.verdict if j else None,
                        j.ratio if j else None,
                    )
                )
        return rows

    def terminal_lines(self) -> list[str]:
        return report.terminal_lines(
            self.rows(),
            [m for _, (m, _) in self._every_measurement()],
            self.sensor_info(),
            self.settings.confidence,
            self.summary_notes(),
        )

    def environment(self) -> dict[str, Any]:
        described = dict(self.sensor.describe())
        env: dict[str, Any] = {
            "hardware_key": self.hardware_key,
            "sensor": {
                "name": self.sensor.name,
                "provenance": self.sensor.provenance,
                "method": self.sensor.method,
                "domains": list(self.sensor.domains()),
                "min_window_s": self.sensor.min_window_s(),
                "skipped": dict(self.skipped),
                "details": described,
                "idle_watts": self.idle_watts,
            },
            "software": self.software,
            "commit": fingerprint.git_commit(self.rootdir),
            "date": self.started.replace(microsecond=0).isoformat(),
        }
        env.update(self.extra_environment)
        return env

    def json_document(self) -> dict[str, Any]:
        settings = {k: _plain(v) for k, v in dataclasses.asdict(self.settings).items()}
        doc = report.json_document(
            self.measurements, self.judge.judgements, self.environment(), settings
        )
        for share in self.shares.values():
            if share.key == self.hardware_key:
                continue
            for key, (m, r) in share.measurements.items():
                entry = report.measurement_json(m, r, share.judge.judgements.get(key))
                doc["measurements"][f"{key}@{share.key}"] = {**entry, "hardware_key": share.key}
        findings = [s.judge.run_wide.to_json() for s in self.shares.values() if s.judge.run_wide]
        if findings:
            doc["run_wide"] = findings
        if len(self.shares) > 1:
            doc["environment"]["hardware_keys"] = list(self.shares)
        if self.idle_watts is not None:
            for key, (m, _) in self.measurements.items():
                net = m.joules - self.idle_watts * m.seconds
                summary = doc["measurements"][key].get("summary")
                if summary is not None:
                    # a diagnostic: what the work cost above idle (None when it did not show)
                    summary["net_tokens_per_joule"] = m.tokens / net if net > 0 else None
        return doc

    # -- xdist: workers send plain data, the controller merges ------------------------------

    def payload(self, nodeid: str | None = None) -> dict[str, Any]:
        """This process's finished measurements and judgements (``nodeid``'s only, when
        given), as plain data."""
        measurements = [
            m for m, _ in self.measurements.values() if nodeid is None or m.nodeid == nodeid
        ]
        judgements = [
            j for j in self.judge.judgements.values() if nodeid is None or j.nodeid == nodeid
        ]
        return {
            "hardware": {
                **self.shares[self.hardware_key].hardware,
                "key": self.hardware_key,
                "software": self.software,
            },
            "measurements": [m.to_dict() for m in measurements],
            "judgements": [j.to_dict() for j in judgements],
            "failed": sorted(n for n in self.failed_tests if nodeid is None or n == nodeid),
        }

    def merge(self, payload: Mapping[str, Any]) -> None:
        """Take a worker's results as if this process had measured them; its pending
        judgements are decided here, with the whole run (twice is once)."""
        share = self._share_for(payload.get("hardware") or {})
        judgements = [Judgement.from_dict(d) for d in payload.get("judgements", [])]
        verdicts = {j.key: j.verdict for j in judgements}
        merged: dict[str, Measurement] = {}
        for data in payload.get("measurements", []):
            m = Measurement.from_dict(data)
            if m.finished:
                verdict = verdicts.get(m.key, Verdict.NO_BASELINE)
                result = m.summarize(self.settings.confidence, verdict)
                share.measurements[m.key] = (m, result)
                merged[m.key] = m
        for j in judgements:
            found = merged.get(j.key)
            if found is not None:
                share.judge.adopt(found, j)
            else:
                share.judge.judgements.setdefault(j.key, j)
        self.failed_tests.update(payload.get("failed", []))

    def _share_for(self, hardware: Mapping[str, Any]) -> HardwareShare:
        """The share of the hardware key a worker measured on; a new key's baselines are
        read when it first appears (a file that cannot be read is said, and compares
        nothing)."""
        key = str(hardware.get("key") or self.hardware_key)
        share = self.shares.get(key)
        if share is not None:
            return share
        path = baseline.path_for(self.rootdir / self.settings.baseline_dir, key)
        try:
            stored = baseline.load(path, key)
        except TpwError as exc:
            self.notes.append(f"baselines of {key} not read, its tests not compared: {exc}")
            stored = None
        software = dict(hardware.get("software") or {})
        described = {k: hardware[k] for k in ("models", "sensor", "provenance") if k in hardware}
        share = self.shares[key] = HardwareShare(
            Judge(self.settings, stored, key, software=software), described
        )
        return share

    # -- outputs: each fails alone, with its path and cause, and the report still prints ----

    def write_outputs(self, interrupted: bool, environment_hook: Callable[[], None]) -> bool:
        """Write baselines, ``--tpw-json``, exports, the Markdown report and the step
        summary; each write fails alone, with a note. False if any write failed."""
        from pytest_tpw.present import exports, mdreport

        s = self.settings
        ok = True
        environment_hook()
        if s.writes_baselines:
            for share in self.shares.values():
                if share.measurements or share.key == self.hardware_key:
                    path = self._baseline_path(share.key)
                    ok &= self._output(
                        "baselines", path, partial(self._write_baselines, share, interrupted)
                    )
        doc = self.json_document()
        texts: list[tuple[str, Path, str]] = []
        if s.json is not None:
            texts.append(("--tpw-json", s.json, dump_json(doc)))
        texts += [(f"--tpw-export {fmt}", to, exports.render(doc, fmt)) for fmt, to in s.export]
        if s.report is not None:
            texts.append(("--tpw-report", s.report, mdreport.render(doc)))
        for what, target, text in texts:
            path = self.invocation_dir / target  # absolute paths stay as they are
            ok &= self._output(what, path, partial(atomic_write_text, path, text))
        summary = os.environ.get(STEP_SUMMARY_ENV)
        if summary and doc["measurements"]:
            text = mdreport.render(doc, mdreport.STEP_SUMMARY_LIMIT)
            ok &= self._output(
                STEP_SUMMARY_ENV, Path(summary), partial(append_text, Path(summary), text)
            )
        return ok

    def _output(self, what: str, path: Path, write: Callable[[], None]) -> bool:
        try:
            write()
        except (OSError, TpwError) as exc:
            self.notes.append(f"{what} NOT written to {path}: {exc}")
            return False
        return True

    def _write_baselines(self, share: HardwareShare, interrupted: bool) -> None:
        """One hardware key's samples into its baseline file; only complete measurements.

        Merged into the file as it is on disk now: an interrupted session adds what it
        finished and removes nothing.
        """
        date = self.started.replace(microsecond=0).isoformat()
        commit = fingerprint.git_commit(self.rootdir)
        software = {**share.judge.software, **self.extra_environment}
        updates = {
            key: baseline.StoredSession(
                date=date,
                commit=commit,
                software=software,
                sensor=m.sensor,
                provenance=m.provenance,
                samples=[(s.tokens, s.joules, s.seconds) for s in m.samples],
            )
            for key, (m, _) in share.measurements.items()
            if m.finished and m.nodeid not in self.failed_tests
        }
        s = self.settings
        mode: baseline.Mode = "replace" if s.update else "extend" if s.record else "missing"
        path = self._baseline_path(share.key)
        written = baseline.flush(path, share.key, share.hardware, updates, s.history, mode)
        what = f"{len(written)} measurement(s) written to {path}"
        if interrupted:
            what += " (interrupted: only the measurements that finished; the rest untouched)"
        self.notes.append(what)


def _plain(value: Any) -> Any:
    """A setting as JSON can hold it (paths as text, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _say_waiting(text: str) -> None:
    """A long wait for a device lock is said at once, past pytest's output capture."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"\npytest-tpw: {text}\n")
        stream.flush()


class Role(abc.ABC):
    """What this process does with its results at the end of the session."""

    #: True for a process whose results travel to another one (a pytest-xdist worker).
    sends_results = False

    def __init__(self, session: TpwSession) -> None:
        self.session = session

    @abc.abstractmethod
    def reports(self) -> bool:
        """True when this process prints the ``tokens per joule`` section."""

    @abc.abstractmethod
    def finish(
        self,
        interrupted: bool,
        sink: MutableMapping[str, Any],
        environment_hook: Callable[[], None],
    ) -> bool:
        """Send or write the results; False when an output could not be written."""


class Controller(Role):
    """A plain session or pytest-xdist's controller: reports and writes every output."""

    def reports(self) -> bool:
        return not self.session.quiet

    def finish(
        self,
        interrupted: bool,
        sink: MutableMapping[str, Any],
        environment_hook: Callable[[], None],
    ) -> bool:
        if self.session.quiet:
            return True
        return self.session.write_outputs(interrupted, environment_hook)


class Worker(Role):
    """A pytest-xdist worker: its results travel to the controller, which reports them."""

    #: The key of this plugin's payload in xdist's ``workeroutput``.
    PAYLOAD_KEY = "pytest_tpw"
    sends_results = True

    def reports(self) -> bool:
        return False

    def finish(
        self,
        interrupted: bool,
        sink: MutableMapping[str, Any],
        environment_hook: Callable[[], None],
    ) -> bool:
        sink[self.PAYLOAD_KEY] = self.session.payload()
        return True
