"""One measuring session: the opened sensor, baselines, the meters it hands out, results.

Holds the session's state so that ``plugin.py`` stays a thin hook layer. No pytest import:
settings arrive already parsed, and the results leave as plain data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import baseline, distributed, fingerprint, report, sensors
from .judge import BaselinePolicy, Judge, Judgement
from .locks import DeviceLocks
from .meter import Measurement, Meter, MeterConfig, Result, fixed_rounds
from .settings import MarkerArgs, Settings


class TpwSession:
    """State of one pytest session with ``--tpw``: sensor, baselines, judge, results."""

    def __init__(self, settings: Settings, rootdir: Path,
                 extra_sensors: Mapping[str, sensors.SensorFactory] | None = None) -> None:
        self.settings = settings
        self.rootdir = rootdir
        self.extra_sensors = dict(extra_sensors or {})
        self.sensor: sensors.Sensor | None = None
        self.skipped: dict[str, str] = {}
        self.measurements: dict[str, tuple[Measurement, Result | None]] = {}
        self.extra_environment: dict[str, Any] = {}
        self.judge: Judge | None = None
        self.hardware_key = ""
        self.software: dict[str, Any] = {}
        self.started = dt.datetime.now(dt.timezone.utc)
        self.locks: DeviceLocks | None = None
        #: Set when windows were aligned over a torch.distributed process group.
        self.rank: int | None = None
        #: Lines for the end of the terminal section (baselines written...).
        self.notes: list[str] = []

    # -- sensor and baselines --------------------------------------------------------------

    def open_sensor(self) -> sensors.Sensor:
        """Open the configured sensor (raises :class:`SensorUnavailable` with the reason)."""
        s = self.settings
        options = sensors.SensorOptions(
            devices=s.devices, sim_watts=s.sim_watts, sim_noise=s.sim_noise,
            cpu_watts_per_core=s.cpu_watts_per_core)
        selection = sensors.select(s.sensor, options, self.extra_sensors)
        self.sensor, self.skipped = selection.sensor, selection.skipped
        self.hardware_key = fingerprint.hardware_key(self.sensor.hardware())
        self.locks = DeviceLocks(self.sensor.lock_ids())
        return self.sensor

    @property
    def baseline_dir(self) -> Path:
        return self.rootdir / self.settings.baseline_dir

    @property
    def baseline_path(self) -> Path:
        return baseline.path_for(self.baseline_dir, self.hardware_key)

    def load_baselines(self) -> None:
        """Read this hardware's baseline file (raises :class:`BaselineError` when unusable)."""
        assert self.sensor is not None
        stored = baseline.load(self.baseline_path, self.hardware_key)
        others = [] if stored is not None else baseline.other_hardware(self.baseline_dir,
                                                                        self.hardware_key)
        self.software = fingerprint.software_stack(self.sensor.describe())
        self.judge = Judge(self.settings, stored, self.hardware_key, others, self.software)

    def close(self) -> None:
        if self.sensor is not None:
            self.sensor.close()

    def sensor_info(self) -> report.SensorInfo:
        assert self.sensor is not None
        return report.SensorInfo(self.sensor.name, self.sensor.provenance, self.sensor.method)

    # -- meters and verdicts ---------------------------------------------------------------

    def meter_for(self, nodeid: str, marker: MarkerArgs | None) -> Meter:
        """A meter for one test, with the test's marker overriding the session settings."""
        s = self.settings if marker is None else self.settings.with_marker(marker)
        config = MeterConfig(enabled=s.enabled, warmup=s.warmup, min_window_s=s.min_window,
                             max_delay_s=s.max_delay, confidence=s.confidence,
                             devices=s.devices)
        policy = (self.judge.policy(marker) if self.judge is not None
                  else fixed_rounds(s.rounds_for_session()))
        return Meter(nodeid, config, self.sensor if s.enabled else None, policy,
                     locks=self.locks)

    def judge_meter(self, meter: Meter, marker: MarkerArgs | None) -> list[Judgement]:
        """Verdicts and budgets of a test's finished measurements."""
        assert self.judge is not None
        policy = meter.policy
        comparisons = policy.comparisons if isinstance(policy, BaselinePolicy) else {}
        out = []
        for m in meter.measurements:
            if m.complete and m.samples:
                result = m.result(self.settings.confidence)
                out.append(self.judge.judge(m, result, marker, comparisons.get(m.key)))
        return out

    def record(self, measurement: Measurement) -> Result | None:
        """Keep a finished measurement; returns its summary (None if it has no samples)."""
        result = measurement.result(self.settings.confidence) if measurement.samples else None
        self.measurements[measurement.key] = (measurement, result)
        return result

    # -- xdist: workers send plain data, the controller merges ------------------------------

    def worker_payload(self) -> dict[str, Any]:
        """This worker's finished measurements and judgements, as plain data."""
        judgements = self.judge.judgements if self.judge is not None else {}
        canaries = self.judge.canary_log_ratios if self.judge is not None else []
        return {
            "measurements": [m.to_dict() for m, _ in self.measurements.values()],
            "judgements": [j.to_dict() for j in judgements.values()],
            "canary_log_ratios": list(canaries),
        }

    def merge_payload(self, payload: Mapping[str, Any]) -> None:
        """Take a worker's results as if this process had measured them."""
        for data in payload.get("measurements", []):
            self.record(Measurement.from_dict(data))
        if self.judge is not None:
            for data in payload.get("judgements", []):
                j = Judgement.from_dict(data)
                self.judge.judgements[j.key] = j
            self.judge.canary_log_ratios.extend(payload.get("canary_log_ratios", []))

    def note_rank(self, meter: Meter) -> None:
        if meter.rank is not None:
            self.rank = meter.rank

    @property
    def quiet(self) -> bool:
        """True on a torch.distributed rank other than 0: it neither reports nor writes."""
        rank = self.rank if self.rank is not None else distributed.env_rank()
        return rank is not None and rank != 0

    # -- baselines out ---------------------------------------------------------------------

    def flush_baselines(self) -> tuple[Path, list[str]]:
        """Write this session's samples (``--tpw-update``/``-missing``); returns what was written.

        Only complete measurements are written, merged into the file as it is on disk now:
        an interrupted session adds what it finished and removes nothing.
        """
        assert self.sensor is not None
        date = self.started.replace(microsecond=0).isoformat()
        commit = fingerprint.git_commit(self.rootdir)
        updates = {
            key: baseline.StoredSession(
                date=date, commit=commit, software=self.software, sensor=m.sensor,
                provenance=m.provenance,
                samples=[(s.tokens, s.joules, s.seconds) for s in m.samples])
            for key, (m, _) in self.measurements.items() if m.complete and m.samples
        }
        hardware = {"models": list(self.sensor.hardware()), "sensor": self.sensor.name,
                    "provenance": self.sensor.provenance}
        written = baseline.flush(self.baseline_path, self.hardware_key, hardware, updates,
                                 self.settings.history, self.settings.update_missing)
        return self.baseline_path, written

    # -- output ----------------------------------------------------------------------------

    def summary_notes(self) -> list[str]:
        """Verdict counts, the canary shift, hardware notes, files written."""
        lines: list[str] = []
        judge = self.judge
        if judge is not None and judge.judgements:
            counts: dict[str, int] = {}
            for j in judge.judgements.values():
                counts[j.verdict] = counts.get(j.verdict, 0) + 1
            lines.append("verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
                         + f" (tolerance {self.settings.tolerance:.0%}, noise floor "
                         f"{self.settings.noise_floor:.0%}, FDR q = {self.settings.fdr:g})")
            shift, _ = judge.shift()
            if judge.canary_log_ratios:
                lines.append(f"canary shift: {math.exp(shift) - 1:+.1%} from "
                             f"{len(judge.canary_log_ratios)} canary measurement(s), divided "
                             "out of the other ratios")
            lines += [note for j in judge.judgements.values() for note in j.notes]
            settled = sum(1 for j in judge.judgements.values() if j.without_fdr)
            if settled:
                lines.append(f"{settled} regression(s) decided per test, without "
                             "Benjamini-Hochberg across the suite: pytest-xdist workers report "
                             "each test as it ends (run without -n for suite-wide FDR)")
            if judge.other_hardware and judge.baseline is None:
                lines.append(f"no baseline for {self.hardware_key}; baselines exist for "
                             f"{', '.join(judge.other_hardware)} (not compared)")
        waits = [(key, m.lock_waits()) for key, (m, _) in self.measurements.items()]
        waits = [(key, w) for key, w in waits if w]
        if waits:
            windows = sum(len(w) for _, w in waits)
            total = sum(sum(w) for _, w in waits)
            lines.append(f"{windows} window(s) of {len(waits)} measurement(s) waited for a "
                         f"device lock ({total:.2f} s in all): another process was measuring "
                         "the same device; the waits were outside the windows")
        return [*lines, *self.notes]

    def rows(self) -> list[report.Row]:
        judgements = self.judge.judgements if self.judge is not None else {}
        rows = []
        for key, (m, result) in self.measurements.items():
            if result is None:
                continue
            j = judgements.get(key)
            rows.append(report.Row(key, result, j.baseline_level if j else None,
                                   len(m.warnings), j.verdict if j else None,
                                   j.ratio if j else None))
        return rows

    def environment(self) -> dict[str, Any]:
        assert self.sensor is not None
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
            },
            "software": self.software or fingerprint.software_stack(described),
            "commit": fingerprint.git_commit(self.rootdir),
        }
        env.update(self.extra_environment)
        return env

    def json_document(self) -> dict[str, Any]:
        settings = {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self.settings).items()
        }
        doc = report.json_document(self.measurements, self.environment(), settings)
        judgements = self.judge.judgements if self.judge is not None else {}
        for key, entry in doc["measurements"].items():
            j = judgements.get(key)
            if j is not None:
                entry["verdict"] = j.verdict
                entry["comparison"] = report.comparison_json(j)
        return doc
