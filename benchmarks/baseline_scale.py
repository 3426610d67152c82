"""How the baseline store scales: load and update times, peak memory, file size.

Builds a baseline of MEASUREMENTS measurements x SESSIONS sessions x WINDOWS windows in a
temp folder, then times each operation in a fresh subprocess on a fresh copy of the file (so
that each peak-memory figure is that operation's own: the growth of the peak resident set,
VmHWM, over the process's size after imports) and prints a table.

    python benchmarks/baseline_scale.py                      # 10,000 x 10 x 20
    python benchmarks/baseline_scale.py --measurements 1000  # quicker

Operations: ``load (default)`` is ``baseline.load`` as a test session calls it, then one
measurement read; ``load (checked)`` validates every measurement at load (``check=True``);
``load (no check)`` validates only the measurement read; ``load + read all`` parses every
session into objects; ``extend few`` / ``extend all`` / ``replace all`` are
``baseline.flush`` adding one session to 10 / every measurement (``extend``), or making it
every measurement's only session (``replace``), each re-reading and rewriting the file.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "bench-x1"
HARDWARE = {"models": ["NVIDIA H100 80GB HBM3"], "provenance": "measured", "sensor": "nvml"}
SOFTWARE = {
    "cpu_governor": "performance",
    "cuda_driver": "12.4",
    "cuda_runtime": "12.1",
    "driver": "550.54.15",
    "implementation": "CPython",
    "kernel": "6.5.0-1024",
    "machine": "x86_64",
    "numpy": "1.26.4",
    "os": "Ubuntu 22.04.4 LTS",
    "pytest-tpw": "0.3.0",
    "python": "3.11.7",
    "torch": "2.3.0",
    "transformers": "4.41.0",
}


def session(rng: random.Random, date: str, windows: int) -> object:
    from pytest_tpw.store.baseline import StoredSession

    samples = [(24000, rng.uniform(1000, 1100), rng.uniform(0.5, 0.6)) for _ in range(windows)]
    return StoredSession(
        date=date,
        commit="0123456789abcdef0123456789abcdef01234567",
        software=dict(SOFTWARE),
        sensor="nvml",
        provenance="measured",
        samples=samples,
    )


def build(path: Path, measurements: int, sessions: int, windows: int) -> None:
    from pytest_tpw.store import baseline

    rng = random.Random(1)
    data = baseline.BaselineFile(
        KEY,
        dict(HARDWARE),
        {
            f"tests/test_model_{m // 100:03d}.py::test_case_{m:05d}": [
                session(rng, f"2025-01-{s + 1:02d}T00:00:00+00:00", windows)  # type: ignore[misc]
                for s in range(sessions)
            ]
            for m in range(measurements)
        },
    )
    baseline.write(path, data)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM, Linux): unlike ru_maxrss, not inherited
    from the parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("needs Linux /proc/self/status (VmHWM)")


def phase(name: str, path: Path, windows: int, few: int) -> dict[str, float]:
    """Run one operation; returns its seconds and peak memory growth (MiB)."""
    from pytest_tpw.store import baseline

    rng = random.Random(2)
    base = peak_rss_mib()
    start = time.perf_counter()
    if name == "load (checked)":
        loaded = baseline.load(path, KEY, check=True)
        assert loaded is not None
        # read one measurement, as a session judging one test does
        assert loaded.sessions(next(iter(sorted(loaded.measurements))))
    elif name == "load (default)":
        loaded = baseline.load(path, KEY)
        assert loaded is not None
        assert loaded.sessions(next(iter(sorted(loaded.measurements))))
    elif name == "load (no check)":
        loaded = baseline.load(path, KEY, check=False)
        assert loaded is not None
        assert loaded.sessions(next(iter(sorted(loaded.measurements))))
    elif name == "load + read all":
        loaded = baseline.load(path, KEY, check=False)
        assert loaded is not None
        loaded.validate()
    else:
        loaded = baseline.load(path, KEY, check=False)
        assert loaded is not None
        keys = sorted(loaded.measurements)
        del loaded
        mode = "replace" if "replace" in name else "extend"
        chosen = keys if "all" in name else keys[:few]
        # one new session per measurement, as a real run gives
        updates = {k: session(rng, "2025-02-01T00:00:00+00:00", windows) for k in chosen}
        start = time.perf_counter()  # the flush alone: it loads the file itself
        written = baseline.flush(path, KEY, HARDWARE, updates, 10, mode)  # type: ignore[arg-type]
        assert written == chosen
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": peak_rss_mib() - base}


PHASES = [
    "load (default)",
    "load (checked)",
    "load (no check)",
    "load + read all",
    "extend few",
    "extend all",
    "replace all",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--few", type=int, default=10, help="measurements in 'extend few'")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, Path(args.file), args.windows, args.few)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"{KEY}.json")
        start = time.perf_counter()
        build(path, args.measurements, args.sessions, args.windows)
        built = time.perf_counter() - start
        size = path.stat().st_size
        print(
            f"baseline: {args.measurements} measurements x {args.sessions} sessions x "
            f"{args.windows} windows, {size / 2**20:.1f} MiB (built in {built:.1f} s)"
        )
        print(f"{'operation':<18} {'seconds':>8} {'peak MiB':>9}  (peak: growth of VmHWM)")
        for name in PHASES:
            # updates grow the file: each runs on a fresh copy of the built one
            work = Path(tmp, "work", path.name)
            work.parent.mkdir(exist_ok=True)
            work.write_bytes(path.read_bytes())
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--phase",
                    name,
                    "--file",
                    str(work),
                    "--windows",
                    str(args.windows),
                    "--few",
                    str(args.few),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout)
            print(f"{name:<18} {result['seconds']:>8.2f} {result['peak_mib']:>9.0f}")


if __name__ == "__main__":
    main()
