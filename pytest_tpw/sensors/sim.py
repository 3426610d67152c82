"""The ``sim`` sensor: a simulated device drawing constant power, joules = watts x wall time.

For demos and for tests on machines without energy counters. Every output labels its
joules *simulated*.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from pytest_tpw.sensors.base import Provenance, Sensor, WindowEnergy


class SimSensor(Sensor):
    name = "sim"
    provenance: Provenance = "simulated"

    def open(self) -> None:
        self._rng = random.Random(self.options.seed)
        self.method = (
            f"simulated device, {self.options.sim_watts:g} W constant "
            f"x wall time, {self.options.sim_noise:.1%} noise"
        )

    def domains(self) -> Sequence[str]:
        return ("sim:0",)

    def min_window_s(self) -> float:
        # Nothing quantises a simulated reading; keep windows just long enough that timer
        # resolution and scheduling jitter stay far below the simulated noise.
        return 0.01

    def begin(self) -> object:
        return time.perf_counter()

    def end(self, token: object) -> WindowEnergy:
        assert isinstance(token, float)
        seconds = time.perf_counter() - token
        factor = 1.0 + self._rng.gauss(0.0, self.options.sim_noise)
        joules = self.options.sim_watts * seconds * max(factor, 0.0)
        return WindowEnergy({"sim:0": joules}, state={"watts": self.options.sim_watts})

    def describe(self) -> dict[str, object]:
        return {"watts": self.options.sim_watts, "noise": self.options.sim_noise}

    def hardware(self) -> tuple[str, ...]:
        # one simulated device whatever its watts: changing tpw_sim_watts is how a demo
        # or a test injects a regression against the same baseline
        return ("sim",)

    def lock_ids(self) -> tuple[str, ...]:
        # one simulated device per host, locked like a real one so that parallel runs
        # exercise the locks
        return ("sim-device",)
