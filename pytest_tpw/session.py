"""One measuring session: the opened sensor, the meters it hands out, what they measured.

Holds the session's state so that ``plugin.py`` stays a thin hook layer. No pytest import:
settings arrive already parsed, and the results leave as plain data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_tpw import fingerprint, report, sensors
from pytest_tpw.meter import Measurement, Meter, MeterConfig, Result, fixed_rounds
from pytest_tpw.settings import MarkerArgs, Settings


class TpwSession:
    """State of one pytest session with ``--tpw``: sensor, measurements, environment."""

    def __init__(self, settings: Settings, rootdir: Path,
                 extra_sensors: Mapping[str, sensors.SensorFactory] | None = None) -> None:
        self.settings = settings
        self.rootdir = rootdir
        self.extra_sensors = dict(extra_sensors or {})
        self.sensor: sensors.Sensor | None = None
        self.skipped: dict[str, str] = {}
        self.measurements: dict[str, tuple[Measurement, Result | None]] = {}
        self.extra_environment: dict[str, Any] = {}

    # -- sensor ----------------------------------------------------------------------------

    def open_sensor(self) -> sensors.Sensor:
        """Open the configured sensor (raises :class:`SensorUnavailable` with the reason)."""
        s = self.settings
        options = sensors.SensorOptions(
            devices=s.devices, sim_watts=s.sim_watts, sim_noise=s.sim_noise,
            cpu_watts_per_core=s.cpu_watts_per_core)
        selection = sensors.select(s.sensor, options, self.extra_sensors)
        self.sensor, self.skipped = selection.sensor, selection.skipped
        return self.sensor

    def close(self) -> None:
        if self.sensor is not None:
            self.sensor.close()

    def sensor_info(self) -> report.SensorInfo:
        assert self.sensor is not None
        return report.SensorInfo(self.sensor.name, self.sensor.provenance, self.sensor.method)

    # -- meters ----------------------------------------------------------------------------

    def meter_for(self, nodeid: str, marker: MarkerArgs | None) -> Meter:
        """A meter for one test, with the test's marker overriding the session settings."""
        s = self.settings if marker is None else self.settings.with_marker(marker)
        config = MeterConfig(enabled=s.enabled, warmup=s.warmup, min_window_s=s.min_window,
                             max_delay_s=s.max_delay, confidence=s.confidence,
                             devices=s.devices)
        return Meter(nodeid, config, self.sensor if s.enabled else None,
                     fixed_rounds(s.rounds_for_session()))

    def record(self, measurement: Measurement) -> Result | None:
        """Keep a finished measurement; returns its summary (None if it has no samples)."""
        result = measurement.result(self.settings.confidence) if measurement.samples else None
        self.measurements[measurement.key] = (measurement, result)
        return result

    # -- output ----------------------------------------------------------------------------

    def rows(self) -> list[report.Row]:
        return [report.Row(key, result, None, len(m.warnings))
                for key, (m, result) in self.measurements.items() if result is not None]

    def environment(self) -> dict[str, Any]:
        assert self.sensor is not None
        described = dict(self.sensor.describe())
        env: dict[str, Any] = {
            "hardware_key": fingerprint.hardware_key(self.sensor.hardware()),
            "sensor": {
                "name": self.sensor.name,
                "provenance": self.sensor.provenance,
                "method": self.sensor.method,
                "domains": list(self.sensor.domains()),
                "min_window_s": self.sensor.min_window_s(),
                "skipped": dict(self.skipped),
                "details": described,
            },
            "software": fingerprint.software_stack(described),
            "commit": fingerprint.git_commit(self.rootdir),
        }
        env.update(self.extra_environment)
        return env

    def json_document(self) -> dict[str, Any]:
        settings = {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self.settings).items()
        }
        return report.json_document(self.measurements, self.environment(), settings)
