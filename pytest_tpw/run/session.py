"""One measuring session: sensor, baselines, judge, the meters it hands out, their results.

A :class:`TpwSession` is whole when it exists: :meth:`TpwSession.start` opens the sensor
and reads the baselines first, so nothing in it is ever missing. It orchestrates and holds
state; what it shows is :mod:`pytest_tpw.present`, what it writes
:mod:`pytest_tpw.run.outputs`, and its :class:`~pytest_tpw.run.roles.Role` says what the
process does at the end (the controller decides, reports and writes; a pytest-xdist worker
sends its results). No pytest import: the plugin hands settings in and takes plain data out.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tpw import sensors
from pytest_tpw.config.settings import Settings, TestSettings
from pytest_tpw.errors import TpwError
from pytest_tpw.host import distributed, fingerprint
from pytest_tpw.host.locks import DeviceLocks
from pytest_tpw.judging.judge import HardwareShare, Judge, Judgement, suspects
from pytest_tpw.measure.meter import Meter
from pytest_tpw.measure.samples import Measurement, Result
from pytest_tpw.measure.window import Spans, WindowRunner
from pytest_tpw.present.report import SensorInfo
from pytest_tpw.run import plausible
from pytest_tpw.run.roles import Controller, Role, Worker
from pytest_tpw.store import baseline
from pytest_tpw.verdict import Verdict

if TYPE_CHECKING:
    from pytest_tpw.present.progress import Progress

#: A measurement whose mean power is below this multiple of idle power gets a warning.
IDLE_MARGIN = 1.05


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
        #: The run's collected tests (:meth:`focus`), None until collection is done.
        self.collected: list[str] | None = None
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
        #: This hardware's key as pytest-tpw named it before (CPU sensors: without the CPU
        #: count), when it differs; and its baseline file when this run compares with it
        #: because none exists under the new key yet (:meth:`start`).
        self.legacy_key: str | None = None
        self.legacy_baselines: Path | None = None
        #: The older key of each hardware key that has one (this process's, and those of
        #: the pytest-xdist workers on other hosts): its file is carried over at a write.
        self.legacy_keys: dict[str, str] = {}
        #: The plausibility bounds of the sensor's devices (:mod:`pytest_tpw.run.plausible`:
        #: their maximum power, their device class), from ``describe()`` at :meth:`create`;
        #: the idle power joins them when a result is checked (:meth:`bounds`).
        self.limits = plausible.Bounds(sensor.provenance)
        #: Sentences on results beyond physical bounds, by measurement key as outputs name
        #: it (``key@hardware`` for another hardware key's): :mod:`pytest_tpw.run.plausible`.
        self.implausible: dict[str, list[str]] = {}
        #: Windows discarded as invalid (counter reset...), this process's own.
        self.invalid_windows = 0
        #: The sensor health each pytest-xdist worker reported, by worker.
        self.worker_health: dict[str, dict[str, Any]] = {}
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
            urls=s.sensor_url,
            select=s.sensor_select,
            interval_s=s.sensor_interval,
            tolerance=s.tolerance,
        )
        selection = sensors.select(s.sensor, options, dict(extra_sensors or {}))
        sensor = selection.sensor
        try:
            key = fingerprint.hardware_key(sensor.hardware())
            legacy_key = legacy_key_of(sensor, key)
            directory = rootdir / s.baseline_dir
            stored, carried = load_baselines(directory, key, legacy_key)
            others = [] if stored is not None else baseline.other_hardware(directory, key)
            described = sensor.describe()
            software = fingerprint.software_stack(described)
            judge = Judge(s, stored, key, others, software, edge_error_s=sensor.edge_error_s())
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
        session.legacy_key, session.legacy_baselines = legacy_key, carried
        if legacy_key is not None:
            session.legacy_keys[key] = legacy_key
        session.limits = plausible.bounds_for(sensor.provenance, None, described, sensor.hardware())
        if sensor.capabilities().idle_power and s.idle_power:
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
        if energy.invalid is not None:
            self.invalid_windows += 1
        if energy.invalid is not None or not energy.total > 0 or elapsed <= 0:
            return None
        return energy.total / elapsed

    def close(self) -> None:
        self.sensor.close()

    @property
    def baseline_path(self) -> Path:
        return self.baseline_path_of(self.hardware_key)

    def baseline_path_of(self, key: str) -> Path:
        return baseline.path_for(self.rootdir / self.settings.baseline_dir, key)

    def focus(self, nodeids: Iterable[str]) -> None:
        """The run's collected tests: each judge compares (and learns the suite's prior
        from) only their stored measurements, not the whole baseline file."""
        if self.collected is not None:
            return  # once: pytest-xdist's workers each report the same collection
        self.collected = list(nodeids)
        for share in self.shares.values():
            share.judge.focus_on_tests(self.collected)

    def sensor_info(self) -> SensorInfo:
        return SensorInfo(self.sensor.name, self.sensor.provenance, self.sensor.method)

    # -- one test --------------------------------------------------------------------------

    def meter_for(self, nodeid: str, test: TestSettings, **runner_options: Any) -> Meter:
        """A meter for one test with its effective settings."""
        runner = WindowRunner(
            self.sensor,
            devices=test.devices,
            min_window_s=test.min_window,
            max_delay_s=test.max_delay,
            locks=self.locks,
            spans=Spans(test.gpus, test.hosts) if test.gpus or test.hosts else None,
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

    def bounds(self, ranks: int = 1) -> plausible.Bounds:
        """What this session's results are checked against (:mod:`.plausible`); ``ranks``:
        how many processes' windows a result sums (torch.distributed ranks)."""
        return replace(self.limits, idle_watts=self.idle_watts).scaled(ranks)

    def record(self, meter: Meter) -> list[tuple[Measurement, Result]]:
        """Keep a test's finished measurements; returns them with their summaries. A
        result beyond physical bounds is said in :attr:`implausible` (before any file is
        written: the hooks warn at once)."""
        self.invalid_windows += meter.runner.invalid_windows
        if meter.rank is not None:
            self.rank = meter.rank
        kept = [(m, meter.summary(m)) for m in meter.measurements if m.finished]
        hint = self.sensor.advice() if kept else None
        if hint is not None:  # once per session (PyTorch's threads exceed the free cores...)
            kept[0][0].warnings.append(hint)
        ranks = distributed.current() if meter.rank is not None else None
        bounds = self.bounds(ranks.world_size if ranks is not None else 1)
        for m, result in kept:
            self.measurements[m.key] = (m, result)
            texts = plausible.check(m.key, result.watts, result.tokens_per_joule, bounds)
            if texts:
                self.implausible[m.key] = texts
                continue  # the near-idle advice would mislead beside them
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

    def closing_notes(self) -> list[str]:
        """What the session itself adds under the table: the sensor's health, results
        beyond physical bounds, a stray ``RANK``, files written, lost workers, outputs not
        written, baselines still under an older hardware key."""
        from pytest_tpw.present.summary import health_lines, implausible_lines

        return [
            *health_lines(self.health(), self.sensor.provenance),
            *implausible_lines(self.implausible),
            *self._stray_rank_note(),
            *self.notes,
            *self._legacy_note(),
        ]

    def _shown(self, path: Path) -> str:
        """A path as a user types it at the repository root."""
        try:
            return str(path.relative_to(self.rootdir))
        except ValueError:
            return str(path)

    def _legacy_note(self) -> list[str]:
        """Baselines read under this hardware's previous key, not yet under its new one."""
        old = self.legacy_baselines
        new = self.baseline_path
        if old is None or new.exists():
            return []  # none used, or carried over by this run (its note says so)
        return [
            f"baselines compared with {self._shown(old)}, named after this hardware's "
            f"previous key {self.legacy_key} (keys now count the CPUs a runner has); its new "
            f"key is {self.hardware_key}. Keep them under it: git mv {self._shown(old)} "
            f"{self._shown(new)} (cp instead while runners of other sizes still use the old "
            "file), or record once here (--tpw-record; --tpw-update-missing changes no "
            f"baseline) to write {self._shown(new)} starting from them"
        ]

    def own_health(self) -> dict[str, Any]:
        """This process's sensor health and the windows it discarded, as plain data."""
        h = self.sensor.health()
        return {
            "counter_advances": h.counter_advances,
            "update_period_s": h.update_period_s,
            "dropped_reads": h.dropped_reads,
            "invalid_windows": self.invalid_windows,
            "notes": list(h.notes),
        }

    def health(self) -> dict[str, Any]:
        """The sensor's health over the run: this process's and every worker's (counter
        advancing everywhere, the longest update period, dropped reads and invalid windows
        summed, every note once) and the idle power measured at start."""
        parts = [self.own_health(), *self.worker_health.values()]
        advances = [
            p["counter_advances"] for p in parts if isinstance(p.get("counter_advances"), bool)
        ]
        periods = [
            float(p["update_period_s"])
            for p in parts
            if isinstance(p.get("update_period_s"), (int, float))
        ]
        notes: list[str] = []
        for p in parts:
            notes += [n for n in p.get("notes") or [] if isinstance(n, str) and n not in notes]
        return {
            "counter_advances": None if not advances else all(advances),
            "update_period_s": max(periods) if periods else None,
            "idle_watts": self.idle_watts,
            "dropped_reads": sum(int(p.get("dropped_reads") or 0) for p in parts),
            "invalid_windows": sum(int(p.get("invalid_windows") or 0) for p in parts),
            "notes": notes,
        }

    def finish_run(self) -> None:
        """Once every test ran: the run-wide finding and the final verdicts (on the process
        that decides them: not on a pytest-xdist worker, whose controller decides)."""
        if self.role.decides:
            for share in self.shares.values():
                share.judge.finish(suspects([m for m, _ in share.measurements.values()]))

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
                "edge_error_s": self.sensor.edge_error_s(),
                "skipped": dict(self.skipped),
                "details": described,
                "idle_watts": self.idle_watts,
                "health": self.health(),
            },
            "software": self.software,
            "commit": fingerprint.git_commit(self.rootdir),
            "date": self.started.replace(microsecond=0).isoformat(),
        }
        env.update(self.extra_environment)
        return env

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
        keys = {m.key for m in measurements}
        return {
            "hardware": {
                **self.shares[self.hardware_key].hardware,
                "key": self.hardware_key,
                "legacy_key": self.legacy_key,
                "software": self.software,
                "edge_error_s": self.sensor.edge_error_s(),
            },
            "measurements": [m.to_dict() for m in measurements],
            "judgements": [j.to_dict() for j in judgements],
            "failed": sorted(n for n in self.failed_tests if nodeid is None or n == nodeid),
            "implausible": {k: v for k, v in self.implausible.items() if k in keys},
            "worker": f"{platform.node()}:{os.getpid()}",
            "health": self.own_health(),
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
        suffix = "" if share.key == self.hardware_key else f"@{share.key}"
        for key, texts in (payload.get("implausible") or {}).items():
            if isinstance(texts, list):
                self.implausible[f"{key}{suffix}"] = [str(t) for t in texts]
        health, worker = payload.get("health"), payload.get("worker")
        if isinstance(health, dict) and isinstance(worker, str):
            self.worker_health[worker] = health  # each payload carries the worker's total

    def _share_for(self, hardware: Mapping[str, Any]) -> HardwareShare:
        """The share of the hardware key a worker measured on; a new key's baselines are
        read when it first appears (a file that cannot be read is said, and compares
        nothing)."""
        key = str(hardware.get("key") or self.hardware_key)
        share = self.shares.get(key)
        if share is not None:
            return share
        legacy = hardware.get("legacy_key")
        legacy = legacy if isinstance(legacy, str) and legacy != key else None
        if legacy is not None:
            self.legacy_keys[key] = legacy
        directory = self.rootdir / self.settings.baseline_dir
        try:
            stored, _ = load_baselines(directory, key, legacy)
        except TpwError as exc:
            self.notes.append(f"baselines of {key} not read, its tests not compared: {exc}")
            stored = None
        software = dict(hardware.get("software") or {})
        described = {k: hardware[k] for k in ("models", "sensor", "provenance") if k in hardware}
        edge = hardware.get("edge_error_s")
        judge = Judge(
            self.settings,
            stored,
            key,
            software=software,
            edge_error_s=float(edge) if isinstance(edge, (int, float)) else 0.0,
        )
        if self.collected is not None:
            judge.focus_on_tests(self.collected)
        share = self.shares[key] = HardwareShare(judge, described)
        return share


def legacy_key_of(sensor: sensors.Sensor, key: str) -> str | None:
    """The hardware key the sensor's hardware had before its names changed, if it did."""
    names = sensor.legacy_hardware()
    if names is None:
        return None
    old = fingerprint.hardware_key(names)
    return old if old != key else None


def load_baselines(
    directory: Path, key: str, legacy_key: str | None
) -> tuple[baseline.BaselineFile | None, Path | None]:
    """The baselines of ``key``: its file (which may still hold ``legacy_key`` inside,
    renamed by hand), else the file named after ``legacy_key``, read as ``key``'s. Returns
    them and that legacy file when it was the one read."""
    legacy = [legacy_key] if legacy_key else []
    stored = baseline.load(baseline.path_for(directory, key), key, legacy=legacy)
    if stored is not None or legacy_key is None:
        return stored, None
    old = baseline.path_for(directory, legacy_key)
    found = baseline.load(old, legacy_key)
    if found is None:
        return None, None
    found.hardware_key = key
    return found, old


def _say_waiting(text: str) -> None:
    """A long wait for a device lock is said at once, past pytest's output capture."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"\npytest-tpw: {text}\n")
        stream.flush()
