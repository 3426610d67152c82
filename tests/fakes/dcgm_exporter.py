"""A replayed dcgm-exporter: the real exposition format on the loopback, with energy counters
that advance at known watts and refresh once per collect interval, as the exporter does.

Each GPU draws a constant power; its ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (mJ) is the
energy up to the last collect tick (``interval_s``). Options reproduce what real exporters
serve: the hostname label spelled ``Hostname`` (older releases) or ``hostname`` (newest),
``uuid`` under ``--use-old-namespace``, a MIG-enabled GPU whose instances repeat its whole
counter on series of their own, Kubernetes ``pod`` labels, and a driver reload (the counter
restarts from 0). Run standalone for Prometheus or benchmarks:
``python -m tests.fakes.dcgm_exporter PORT WATTS[,WATTS...] INTERVAL_S``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeGpu:
    uuid: str
    watts: float
    index: int = 0
    model: str = "NVIDIA H100 80GB HBM3"
    #: MIG instances (their series repeat this GPU's whole counter).
    mig: int = 0
    pod: str | None = None


@dataclass
class Exporter:
    gpus: list[FakeGpu]
    hostname: str = "node1"
    interval_s: float = 0.1
    #: "Hostname" (older releases) or "hostname" (the newest); None: no host label.
    host_label: str | None = "Hostname"
    uuid_label: str = "UUID"
    start_mj: float = 1.0e9
    started: float = field(default_factory=time.time)
    #: Wall time at which the driver "reloads": counters restart from 0.
    reset_at: float | None = None
    scrapes: int = 0

    def energy_mj(self, gpu: FakeGpu, now: float) -> float:
        tick = self.started + self.interval_s * int((now - self.started) / self.interval_s)
        if self.reset_at is not None and tick >= self.reset_at:
            return gpu.watts * (tick - self.reset_at) * 1000.0
        return self.start_mj + gpu.watts * (tick - self.started) * 1000.0

    def exposition(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        lines = [
            "# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot "
            "(in mJ).",
            "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter",
        ]
        for gpu in self.gpus:
            base = [
                f'gpu="{gpu.index}"',
                f'{self.uuid_label}="{gpu.uuid}"',
                f'pci_bus_id="00000000:{gpu.index + 10:02X}:00.0"',
                f'device="nvidia{gpu.index}"',
                f'modelName="{gpu.model}"',
            ]
            if self.host_label is not None:
                base.append(f'{self.host_label}="{self.hostname}"')
            if gpu.pod is not None:
                base += [f'pod="{gpu.pod}"', 'namespace="serving"', 'container="vllm"']
            value = f"{self.energy_mj(gpu, now):.0f}"
            instances = [[]] if gpu.mig == 0 else [
                ['GPU_I_PROFILE="1g.10gb"', f'GPU_I_ID="{i}"'] for i in range(gpu.mig)
            ]  # fmt: skip
            for extra in instances:
                labels = ",".join(base + extra)
                lines.append(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} {value}")
            power = ",".join(base)
            lines.append(f"DCGM_FI_DEV_POWER_USAGE{{{power}}} {gpu.watts:.3f}")
        return "\n".join(lines) + "\n"


def _handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            exporter.scrapes += 1
            body = exporter.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@contextmanager
def exporting(exporter: Exporter, port: int = 0) -> Iterator[str]:
    """The exporter's metrics URL while the block runs."""
    server = _Server(("127.0.0.1", port), _handler(exporter))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


if __name__ == "__main__":
    import sys

    watts = [float(w) for w in sys.argv[2].split(",")]
    fake = Exporter(
        [FakeGpu(f"GPU-{i:08d}-0000-0000-0000-000000000000", w, i) for i, w in enumerate(watts)],
        interval_s=float(sys.argv[3]),
    )
    with exporting(fake, int(sys.argv[1])) as url:
        print(url, flush=True)
        threading.Event().wait()
