"""How the baseline store scales: load and update times, peak memory, file size.

Builds a baseline of MEASUREMENTS measurements x SESSIONS sessions x WINDOWS windows in a
temp folder, then times each operation in a fresh subprocess on a fresh copy of the file (so
that each peak-memory figure is that operation's own: the growth of the peak resident set,
VmHWM, over the process's size after imports) and prints a table.

    python benchmarks/baseline_scale.py                      # 10,000 x 10 x 20
    python benchmarks/baseline_scale.py --measurements 1000  # quicker

Then what a user feels, in a scratch project of RUN_TESTS measured tests (sim sensor, one
warm-up and 3 fixed windows of 50 ms, no start delay) whose ids are the baseline's first
RUN_TESTS keys, each command in a fresh process, with and without the baseline file in
``.tpw/``: ``startup (--co)`` is ``pytest --tpw --co`` (the session start a user waits for);
``run of 300 tests`` is the measured run with ``--tpw-json``; ``compare`` is ``pytest-tpw
compare .tpw/KEY.json results.json`` (its seconds and peak resident memory, VmHWM);
``show`` is ``pytest-tpw show .tpw``.

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
import os
import random
import statistics
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


RUN_TESTS = 300
PER_FILE = 100
#: Each test: 1 warm-up and 3 recorded windows of 50 ms (about 0.2 s, as short as real
#: measured tests get), no start delay.
RUN_FLAGS = [
    "--tpw-rounds",
    "3",
    "-o",
    "tpw_min_window=0.05",
    "-o",
    "tpw_max_delay=0",
    "-q",
    "-p",
    "no:cacheprovider",
]
TEST_FILE = """
import time


def work():
    start = time.perf_counter()
    while time.perf_counter() - start < 0.0005:
        pass
    return 1

{tests}
"""
# the command wrapper that reports its own peak resident memory (VmHWM) on stderr
PEAK = """
import atexit, sys
from pathlib import Path
def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print("PEAK_KIB", line.split()[1], file=sys.stderr)
atexit.register(peak)
sys.argv = sys.argv[1:]
from pytest_tpw.cli.main import main
raise SystemExit(main(sys.argv[1:]))
"""


def build_project(folder: Path, baseline_path: Path | None) -> None:
    """RUN_TESTS measured tests named as the baseline's first keys; the baseline (its key
    set to the sim sensor's) in .tpw/ when given."""
    tests = folder / "tests"
    tests.mkdir(parents=True)
    for f in range(RUN_TESTS // PER_FILE):
        body = "\n".join(
            f"def test_case_{f * PER_FILE + i:05d}(tpw):\n    tpw(work, tokens=10)\n"
            for i in range(PER_FILE)
        )
        (tests / f"test_model_{f:03d}.py").write_text(TEST_FILE.format(tests=body))
    (folder / "pytest.ini").write_text("[pytest]\ntpw_sensor = sim\n")
    if baseline_path is not None:
        # the same file as the sim sensor's: its key, sensor and provenance (bytes edited,
        # so that the file keeps the layout pytest-tpw writes)
        data = baseline_path.read_bytes()
        for old, new in (
            (f'"hardware_key": "{KEY}"', '"hardware_key": "sim-x1"'),
            ('"provenance": "measured"', '"provenance": "simulated"'),
            ('"sensor": "nvml"', '"sensor": "sim"'),
        ):
            data = data.replace(old.encode(), new.encode())
        (folder / ".tpw").mkdir()
        (folder / ".tpw" / "sim-x1.json").write_bytes(data)


def timed(command: list[str], cwd: Path, repeats: int = 1) -> tuple[float, float | None, int]:
    """The median seconds of ``repeats`` runs of one command, each in a fresh process with
    bytecode compiled (as an installed package has it), its peak MiB when it reports it,
    and its exit code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        runs.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(
                f"{command} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                f"{done.stderr[-2000:]}"
            )
    peak = None
    for line in done.stderr.splitlines():
        if line.startswith("PEAK_KIB "):
            peak = int(line.split()[1]) / 1024
    return statistics.median(runs), peak, done.returncode


def user_phases(path: Path, tmp: Path) -> None:
    """What a user waits for, with and without the baseline (see the module docstring)."""
    pytest_cmd = [sys.executable, "-m", "pytest", "--tpw"]
    cli = [sys.executable, "-c", PEAK, "pytest-tpw"]
    rows = []
    for with_baseline in (False, True):
        folder = tmp / ("with" if with_baseline else "without")
        build_project(folder, path if with_baseline else None)
        collect = [*pytest_cmd, "--co", "-q", "-p", "no:cacheprovider"]
        timed(collect, folder)  # warm the disk cache, compile the bytecode
        co = timed(collect, folder, repeats=5)[0]
        run = timed([*pytest_cmd, *RUN_FLAGS, "--tpw-json", "r.json"], folder)[0]
        rows.append((with_baseline, co, run))
        if with_baseline:
            compare = timed([*cli, "compare", ".tpw/sim-x1.json", "r.json"], folder, 3)
            show = timed([*cli, "show", ".tpw"], folder, 3)
    (_, co0, run0), (_, co1, run1) = rows
    print(
        f"\nwhat a user waits for: a project of {RUN_TESTS} measured tests (sim, 1 + 3 windows "
        "of 50 ms each); medians of 5 (startup) and 3 (compare, show) runs, bytecode compiled"
    )
    print(f"{'command':<28} {'no baseline':>12} {'with it':>9} {'difference':>11}")
    print(f"{'startup (pytest --tpw --co)':<28} {co0:>11.2f}s {co1:>8.2f}s {co1 - co0:>+10.2f}s")
    print(
        f"{'run of ' + str(RUN_TESTS) + ' tests':<28} {run0:>11.2f}s {run1:>8.2f}s "
        f"{(run1 / run0 - 1):>+10.1%}  ({(run1 - run0) / RUN_TESTS * 1000:+.1f} ms a test)"
    )
    print(
        f"{'pytest-tpw compare':<28} {'':>12} {compare[0]:>8.2f}s  peak {compare[1] or 0:.0f} MiB"
    )
    print(f"{'pytest-tpw show':<28} {'':>12} {show[0]:>8.2f}s  peak {show[1] or 0:.0f} MiB")


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
    parser.add_argument(
        "--only-user",
        action="store_true",
        help="only what a user waits for (skip the store's own phases)",
    )
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
        user_phases(path, Path(tmp))
        if args.only_user:
            return
        print(f"\n{'operation':<18} {'seconds':>8} {'peak MiB':>9}  (peak: growth of VmHWM)")
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
