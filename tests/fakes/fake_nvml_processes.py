"""``FakeNvml`` with graphics processes too, for GPU discovery by process (``server.py``).

The base fake lists compute processes per board from ``Faults.processes``; this one adds
``nvmlDeviceGetGraphicsRunningProcesses`` from its own ``graphics`` map (NVML index -> pids).
"""

from __future__ import annotations

from typing import Any

from tests.fakes.fake_pynvml import FakeHandle, FakeNvml, Faults, ProcessInfo, load_trace


class FakeNvmlWithProcesses(FakeNvml):
    def __init__(
        self,
        compute: dict[int, list[int]] | None = None,
        graphics: dict[int, list[int]] | None = None,
        trace: str = "nvml_synthetic_h100.json",
        faults: Faults | None = None,
    ) -> None:
        faults = faults or Faults()
        faults.processes = dict(compute or {})
        super().__init__(load_trace(trace), faults=faults)
        self.graphics = dict(graphics or {})

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        self._call("nvmlDeviceGetGraphicsRunningProcesses")
        pids = self.graphics.get(self._device(handle).spec["nvml_index"], [])
        return [ProcessInfo(pid) for pid in pids]
