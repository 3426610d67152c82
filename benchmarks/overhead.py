"""The plugin's own cost, printed as tables.

1. Installed but off: a generated suite of trivial tests run with the plugin loaded (no
   ``--tpw``) against the same suite with ``-p no:tpw``. Target: <= 1 % of wall time.
2. The meter's bookkeeping per window with the ``sim`` sensor (no start delay, no minimum
   window, a no-op workload): everything the meter does around the user's work. Target:
   <= 20 us per window.

Run: ``python benchmarks/overhead.py [--tests 1000] [--repeats 15] [--windows 20000]
[--instructions]``. Wall time of whole processes is noisy on a shared machine (a few
percent between runs); ``--instructions`` also counts each configuration's CPU
instructions under valgrind, which repeats to the last digits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_tpw.sensors import SensorOptions
from pytest_tpw.sensors.sim import SimSensor
from pytest_tpw.testing import make_meter


def make_suite(folder: Path, n_tests: int) -> None:
    per_file = 100
    for f in range(0, n_tests, per_file):
        body = "\n".join(
            f"def test_{i}():\n    assert {i} + 1 > {i}\n"
            for i in range(f, min(f + per_file, n_tests))
        )
        (folder / f"test_gen_{f // per_file:03d}.py").write_text(body)
    (folder / "pytest.ini").write_text("[pytest]\n")


def child_env() -> dict[str, str]:
    """The environment of the measured runs: bytecode caches allowed (an installed package
    has them; PYTHONDONTWRITEBYTECODE would make every run compile the plugin again) and
    the same dict layouts in every run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONHASHSEED"] = "0"
    return env


def run_suite(folder: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    out = subprocess.run(
        cmd, cwd=folder, capture_output=True, text=True, check=False, env=child_env()
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"suite failed ({' '.join(cmd)}):\n{out.stdout[-2000:]}")
    return elapsed


def off_mode(n_tests: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_suite(folder, n_tests)
        run_suite(folder, [])  # warm the file cache and bytecode
        run_suite(folder, ["-p", "no:tpw"])
        on: list[float] = []
        off: list[float] = []
        for i in range(repeats):  # interleaved, alternating order, so drift hits both
            pair = [(on, []), (off, ["-p", "no:tpw"])]
            for times, extra in pair if i % 2 == 0 else pair[::-1]:
                times.append(run_suite(folder, extra))
    med_on, med_off = statistics.median(on), statistics.median(off)
    diffs = sorted(a - b for a, b in zip(on, off, strict=True))
    print(
        f"\n1. plugin installed, --tpw off: {n_tests} trivial tests, {repeats} runs each "
        "(median wall time of a whole pytest process)"
    )
    print(f"{'configuration':<28}{'median s':>10}{'min s':>9}{'max s':>9}")
    print(f"{'-p no:tpw (plugin absent)':<28}{med_off:>10.3f}{min(off):>9.3f}{max(off):>9.3f}")
    print(f"{'plugin loaded, no --tpw':<28}{med_on:>10.3f}{min(on):>9.3f}{max(on):>9.3f}")
    print(
        f"overhead: {(med_on / med_off - 1):+.2%} of wall time "
        f"(median of paired differences {statistics.median(diffs) * 1e3:+.1f} ms; "
        f"quartiles {diffs[len(diffs) // 4] * 1e3:+.1f} .. "
        f"{diffs[3 * len(diffs) // 4] * 1e3:+.1f} ms); target <= +1%"
    )


def instructions(folder: Path, extra: list[str]) -> int:
    """CPU instructions of one whole pytest run, counted by valgrind (repeatable to ~1e-8)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "callgrind.out")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *extra,
        ]
        subprocess.run(cmd, cwd=folder, capture_output=True, check=True, env=child_env())
        totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
        return int(totals[0].split()[1])


#: Other plugins that load with this project's dev install; "disabled" runs turn them off,
#: so that only pytest and this plugin remain.
OTHER_PLUGINS = ("xdist", "hypothesispytest", "anyio", "rerunfailures", "timeout", "randomly")


def off_mode_instructions(sizes: list[int], others: str = "both") -> None:
    """Instructions of whole runs at two suite sizes, plugin absent vs loaded: the fixed
    part (start-up) and the per-collected-test part of what the plugin adds, off."""
    if shutil.which("valgrind") is None:
        print("\n1b. skipped: valgrind is not installed (apt-get install valgrind)")
        return
    disabled = [arg for name in OTHER_PLUGINS for arg in ("-p", f"no:{name}")]
    rows = []
    configs = [("others disabled", disabled), ("others enabled", [])]
    for label, extra_args in [c for c in configs if others in ("both", c[0].split()[1])]:
        extra: dict[int, tuple[int, int]] = {}
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                make_suite(folder, n)
                run_suite(folder, extra_args)  # bytecode caches written before counting
                run_suite(folder, [*extra_args, "-p", "no:tpw"])
                absent = instructions(folder, [*extra_args, "-p", "no:tpw"])
                loaded = instructions(folder, extra_args)
            extra[n] = (absent, loaded)
            rows.append((label, n, absent, loaded))
        if len(sizes) >= 2:
            (n1, (a1, l1)), (n2, (a2, l2)) = sorted(extra.items())[0], sorted(extra.items())[-1]
            per_test = ((l2 - a2) - (l1 - a1)) / (n2 - n1)
            fixed = (l1 - a1) - per_test * n1
            rows.append((label, -1, round(fixed), round(per_test)))
    print(
        "\n1b. plugin installed, --tpw off, as CPU instructions of one run each under valgrind "
        "(PYTHONHASHSEED=0; repeatable to the last digits)"
    )
    print(f"{'other plugins':<17}{'tests':>7}{'-p no:tpw':>16}{'plugin loaded':>16}{'extra':>14}")
    for label, n, absent, loaded in rows:
        if n < 0:
            print(
                f"{label:<17}{'fit':>7}  fixed {absent / 1e6:,.1f} M instructions, "
                f"per collected test {loaded / 1e6:,.4f} M"
            )
            continue
        print(f"{label:<17}{n:>7}{absent:>16,}{loaded:>16,}{loaded / absent - 1:>+14.2%}")
    print("targets: <= +0.5 % at 1000 tests, <= 20 M fixed, <= 0.01 M per collected test")


def meter_costs(windows: int) -> dict[str, float]:
    """Wall seconds per window: bare no-op calls, the sim sensor's begin()+end() alone, and
    the meter (``pytest_tpw.testing.make_meter``: sim sensor, real clock, no warm-up, no start
    delay, no minimum window) in the call form and the loop form, each over ``windows``."""
    sensor = SimSensor(SensorOptions(seed=1))
    sensor.open()

    def noop() -> int:
        return 1

    # the bare loop: the same number of calls with no meter around them
    start = time.perf_counter()
    for _ in range(windows):
        noop()
    bare = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(windows):
        sensor.end(sensor.begin())
    sensor_only = time.perf_counter() - start

    call_meter, loop_meter = (
        make_meter(sensor, rounds=windows, warmup=0, delay=0.0, min_window_s=0.0) for _ in range(2)
    )
    start = time.perf_counter()
    call_meter(noop, tokens=1)
    call_form = time.perf_counter() - start
    start = time.perf_counter()
    for w in loop_meter.rounds():
        with w:
            w.add_tokens(noop())
    loop_form = time.perf_counter() - start
    for m in (call_meter, loop_meter):
        recorded = len(m.measurements[-1].samples)
        if recorded != windows:
            raise SystemExit(f"the meter recorded {recorded} windows, not {windows}")
    return {
        "windows": float(windows),
        "bare_s": bare / windows,
        "sensor_only_s": sensor_only / windows,
        "call_form_s": call_form / windows,
        "loop_form_s": loop_form / windows,
    }


def per_window(windows: int) -> None:
    costs = meter_costs(windows)
    print(f"\n2. meter bookkeeping per window, sim sensor, {windows} windows, no-op work")
    print(f"{'what':<36}{'us/window':>10}")
    print(f"{'sim sensor begin()+end() alone':<36}{costs['sensor_only_s'] * 1e6:>10.2f}")
    for form in ("call form", "loop form"):
        elapsed = costs[form.replace(" ", "_") + "_s"]
        print(
            f"{'meter, ' + form + ' (minus bare calls)':<36}"
            f"{(elapsed - costs['bare_s']) * 1e6:>10.2f}"
        )
    print("target: <= 20 us per window (the meter's part; a real sensor adds its own reads)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--windows", type=int, default=20000)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count CPU instructions under valgrind (about a minute a run)",
    )
    parser.add_argument(
        "--others",
        choices=("both", "disabled", "enabled"),
        default="both",
        help="count instructions with the other installed plugins disabled, enabled or both",
    )
    args = parser.parse_args()
    print(
        f"$ python benchmarks/overhead.py --tests {args.tests} --repeats {args.repeats} "
        f"--windows {args.windows}" + (" --instructions" if args.instructions else "")
    )
    print(f"python {sys.version.split()[0]}, {sys.platform}")
    off_mode(args.tests, args.repeats)
    if args.instructions:
        off_mode_instructions(sorted({100, args.tests}), args.others)
    per_window(args.windows)


if __name__ == "__main__":
    main()
