"""How close the remote GPU sensors come to known watts, beside the bound they state.

Replayed dcgm-exporters (``tests/fakes/dcgm_exporter.py``: the real exposition format, two
hosts, a MIG GPU, both label spellings, 650 W in all) on the loopback, read by the
``dcgm-exporter`` sensor directly and, where a ``prometheus`` binary is installed, through a
real Prometheus server scraping them. For each collect interval and window length it opens
several windows and prints the worst error of the measured watts against 650 W, and the
per-window bound the sensor stated (its edge error over the window).

    python benchmarks/fleet_accuracy.py [--windows 4] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_tpw.sensors.base import Sensor, SensorOptions  # noqa: E402
from pytest_tpw.sensors.dcgm_exporter import DcgmExporterSensor  # noqa: E402
from pytest_tpw.sensors.prometheus import PrometheusSensor  # noqa: E402
from tests.fakes import prometheus_server  # noqa: E402
from tests.fakes.dcgm_exporter import Exporter, FakeGpu, exporting  # noqa: E402

TRUE_WATTS = 650.0


def fleet(interval_s: float) -> list[Exporter]:
    return [
        Exporter(
            [FakeGpu("GPU-a", 300.0), FakeGpu("GPU-b", 150.0, 1, mig=3)],
            hostname="node1",
            interval_s=interval_s,
        ),
        Exporter(
            [FakeGpu("GPU-c", 200.0)],
            hostname="node2",
            host_label="hostname",
            uuid_label="uuid",
            interval_s=interval_s,
        ),
    ]


def windows(sensor: Sensor, seconds: float, n: int, rng: random.Random) -> tuple[float, float]:
    """The worst relative error of n windows' watts, and the largest bound stated. Each
    window starts at a random phase of the counter's refresh and lasts ``seconds`` plus a
    random part of a second, as real windows do."""
    worst, bound = 0.0, 0.0
    for _ in range(n):
        time.sleep(rng.uniform(0.0, 0.5))
        token = sensor.begin()
        started = time.perf_counter()
        time.sleep(seconds + rng.uniform(0.0, 0.5))
        elapsed = time.perf_counter() - started  # the window ends as end() is called
        energy = sensor.end(token)
        worst = max(worst, abs(energy.total / elapsed / TRUE_WATTS - 1))
        bound = max(bound, float(energy.state.get("bound") or 0.0))
    return worst, bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"true power {TRUE_WATTS:g} W (2 hosts, 3 GPUs, one with 3 MIG instances)")
    print(f"{'sensor':<14} {'collect':>8} {'window':>7} {'worst error':>12} {'stated bound':>13}")
    for interval in (0.1, 0.5):
        for seconds in (1.0, 2.0, 5.0):
            with ExitStack() as stack:
                urls = tuple(stack.enter_context(exporting(e)) for e in fleet(interval))
                sensor = DcgmExporterSensor(SensorOptions(urls=urls, tolerance=0.2))
                sensor.open()
                worst, bound = windows(sensor, seconds, args.windows, rng)
            print(
                f"{'dcgm-exporter':<14} {interval * 1000:>6.0f}ms {seconds:>6.1f}s "
                f"{worst:>12.1%} {bound:>13.1%}"
            )
    if prometheus_server.binary() is None:
        print(f"prometheus: not installed ({prometheus_server.INSTALL})")
        return
    with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        urls = tuple(stack.enter_context(exporting(e)) for e in fleet(0.1))
        targets = [u.split("//", 1)[1].split("/", 1)[0] for u in urls]
        server = stack.enter_context(prometheus_server.prometheus(targets, Path(folder)))
        sensor = PrometheusSensor(SensorOptions(urls=(server,)))
        sensor.open()
        for seconds in (2.0, 5.0):
            worst, bound = windows(sensor, seconds, args.windows, rng)
            print(
                f"{'prometheus':<14} {'100ms':>8} {seconds:>6.1f}s {worst:>12.1%} {bound:>13.1%}"
                "  (scrape 200 ms)"
            )


if __name__ == "__main__":
    main()
