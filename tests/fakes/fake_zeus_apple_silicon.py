"""A stand-in for ``zeus_apple_silicon`` (zeus-apple-silicon 1.1.0) driven by a fake clock.

Copied from the real package's shape (ml-energy/zeus-apple-silicon, ``bindings/
energy_bindings.hpp`` and ``apple_energy/apple_energy.hpp``):

- ``AppleEnergyMetrics()`` is built empty; its eleven fields are ``int`` millijoules
  (``cpu_total_mj``, ``efficiency_core_manager_mj``, ``performance_core_manager_mj``,
  ``dram_mj``, ``gpu_mj``, ``gpu_sram_mj``, ``ane_mj``) or lists of them (``efficiency_cores_mj``,
  ``performance_cores_mj``, ``efficiency_cluster_mj``, ``performance_cluster_mj``), and
  ``None`` where the chip has no such IOReport channel;
- ``AppleEnergyMonitor()`` raises ``RuntimeError`` when the IOReport subscription fails;
  ``begin_window(key, restart=False)`` raises ``RuntimeError`` for a key already open,
  ``end_window(key)`` for a key not open, and returns the window's delta;
  ``get_cumulative_energy()`` the counters since an arbitrary fixed point.
- Counters are converted to whole millijoules by truncation (C++ integer division), from a
  delta in the channel's raw unit (here microjoules).

Install with ``monkeypatch.setitem(sys.modules, "zeus_apple_silicon", FakeZeusAppleSilicon(io))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType

#: Every field of the real ``AppleEnergyMetrics``, in its order.
FIELDS = (
    "cpu_total_mj",
    "efficiency_cores_mj",
    "performance_cores_mj",
    "efficiency_cluster_mj",
    "performance_cluster_mj",
    "efficiency_core_manager_mj",
    "performance_core_manager_mj",
    "dram_mj",
    "gpu_mj",
    "gpu_sram_mj",
    "ane_mj",
)

Watts = float | list[float] | None
Reading = int | list[int] | None

#: An M3 Max-like chip: the CPU total equals its clusters plus core managers, each cluster is
#: at least its cores (it adds shared L2), and every channel exists. Watts, not joules.
M3_MAX: dict[str, Watts] = {
    "cpu_total_mj": 6.0,
    "efficiency_cores_mj": [0.2, 0.2, 0.2, 0.2],
    "performance_cores_mj": [0.4] * 12,
    "efficiency_cluster_mj": [1.0],
    "performance_cluster_mj": [2.5, 2.3],
    "efficiency_core_manager_mj": 0.1,
    "performance_core_manager_mj": 0.1,
    "dram_mj": 0.75,
    "gpu_mj": 12.0,
    "gpu_sram_mj": 0.5,
    "ane_mj": 0.25,
}
#: An older chip without DRAM, ANE or GPU SRAM channels (those fields read None).
M1_NO_DRAM: dict[str, Watts] = {
    "cpu_total_mj": 3.0,
    "efficiency_cores_mj": [0.1, 0.1, 0.1, 0.1],
    "performance_cores_mj": [0.5, 0.5, 0.5, 0.5],
    "efficiency_cluster_mj": None,
    "performance_cluster_mj": None,
    "efficiency_core_manager_mj": 0.05,
    "performance_core_manager_mj": 0.05,
    "dram_mj": None,
    "gpu_mj": 2.0,
    "gpu_sram_mj": None,
    "ane_mj": None,
}
#: An Intel Mac (or a VM): IOReport has no Energy Model channel, every field is None.
NO_CHANNELS: dict[str, Watts] = dict.fromkeys(FIELDS)


def _to_mj(microjoules: int) -> int:
    """Truncate toward zero, as the C++ ``energy / 1'000LL`` does."""
    whole = abs(microjoules) // 1000
    return whole if microjoules >= 0 else -whole


class AppleEnergyMetrics:
    """The real class is built empty and its fields assigned; so is this one."""

    cpu_total_mj: int | None
    efficiency_cores_mj: list[int] | None
    performance_cores_mj: list[int] | None
    efficiency_cluster_mj: list[int] | None
    performance_cluster_mj: list[int] | None
    efficiency_core_manager_mj: int | None
    performance_core_manager_mj: int | None
    dram_mj: int | None
    gpu_mj: int | None
    gpu_sram_mj: int | None
    ane_mj: int | None

    def __init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, None)


class FakeIOReport:
    """The chip's IOReport Energy Model counters: ``watts`` x fake time, in microjoules.

    ``reset_at_s`` restarts a field's counter from zero at a fake instant (a reset the window
    must reject); ``init_error`` makes the monitor's constructor fail; ``calls`` counts them.
    """

    def __init__(self, watts: Mapping[str, Watts], clock: Callable[[], float]) -> None:
        self.watts = dict(watts)
        self.clock = clock
        self.reset_at_s: dict[str, float] = {}
        self.init_error: str | None = None
        self.calls: dict[str, int] = {}
        self.open_keys: set[str] = set()

    def _counter(self, name: str, watts: float, now: float) -> int:
        since = self.reset_at_s.get(name, 0.0)
        start = since if now >= since else 0.0
        return round(watts * (now - start) * 1e6)

    def sample(self) -> dict[str, Reading]:
        """Every field's cumulative counter now, in microjoules."""
        now = self.clock()
        out: dict[str, Reading] = {}
        for name in FIELDS:
            watts = self.watts.get(name)
            if isinstance(watts, list):
                out[name] = [self._counter(name, w, now) for w in watts]
            elif watts is None:
                out[name] = None
            else:
                out[name] = self._counter(name, watts, now)
        return out

    def count(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1


def _metrics(start: Mapping[str, Reading], end: Mapping[str, Reading]) -> AppleEnergyMetrics:
    """The delta of two samples, converted to millijoules, as ``parse_sample`` does."""
    metrics = AppleEnergyMetrics()
    for name in FIELDS:
        a, b = start[name], end[name]
        if isinstance(a, list) and isinstance(b, list):
            setattr(metrics, name, [_to_mj(y - x) for x, y in zip(a, b, strict=True)])
        elif isinstance(a, int) and isinstance(b, int):
            setattr(metrics, name, _to_mj(b - a))
    return metrics


class FakeAppleEnergyMonitor:
    """``AppleEnergyMonitor`` over one :class:`FakeIOReport`."""

    def __init__(self, io: FakeIOReport) -> None:
        io.count("AppleEnergyMonitor")
        if io.init_error is not None:
            raise RuntimeError(io.init_error)
        self._io = io
        self._begun: dict[str, dict[str, Reading]] = {}

    def begin_window(self, key: str, restart: bool = False) -> None:
        self._io.count("begin_window")
        if key in self._begun and not restart:
            raise RuntimeError("Measurement with specified key already exists.")
        self._begun[key] = self._io.sample()
        self._io.open_keys.add(key)

    def end_window(self, key: str) -> AppleEnergyMetrics:
        self._io.count("end_window")
        if key not in self._begun:
            raise RuntimeError("No measurement with provided key had been started.")
        start = self._begun.pop(key)
        self._io.open_keys.discard(key)
        return _metrics(start, self._io.sample())

    def get_cumulative_energy(self) -> AppleEnergyMetrics:
        self._io.count("get_cumulative_energy")
        metrics = AppleEnergyMetrics()
        for name, value in self._io.sample().items():
            if isinstance(value, list):
                setattr(metrics, name, [_to_mj(v) for v in value])
            elif value is not None:
                setattr(metrics, name, _to_mj(value))
        return metrics


class FakeZeusAppleSilicon(ModuleType):
    """The module: ``AppleEnergyMonitor()`` (no arguments, as the real one) and the metrics."""

    def __init__(self, io: FakeIOReport) -> None:
        super().__init__("zeus_apple_silicon")
        self.io = io

        class AppleEnergyMonitor(FakeAppleEnergyMonitor):
            def __init__(self) -> None:
                super().__init__(io)

        self.AppleEnergyMonitor = AppleEnergyMonitor
        self.AppleEnergyMetrics = AppleEnergyMetrics
