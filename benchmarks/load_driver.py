"""How fast one ``tpw.load`` client can drive a server: requests per second it completes.

The server is the test suite's fake OpenAI-compatible streaming server
(``tests/fakes/openai_stream.py``) in a process of its own, answering at once with one token,
so the client, not the server, is the limit. Prints a table: concurrency, requests completed
per second in the steady part, achieved concurrency, failed requests, and the client
process's CPU time per request.

    python benchmarks/load_driver.py [--seconds 3] [--concurrency 1 8 32 64]

Run it on a quiet machine; the figure bounds the rates one test process can offer
(``rate=``) or reach (``concurrency=``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_tpw.load.driver import drive  # noqa: E402
from pytest_tpw.load.figures import WindowFigures  # noqa: E402
from pytest_tpw.load.plan import LoadPlan  # noqa: E402
from pytest_tpw.load.shape import LoadShape  # noqa: E402


class Edges:
    def open(self) -> float:
        return time.perf_counter()

    def close(self) -> float:
        return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_stream", "0", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        print(f"server {url} (pid {server.pid}); client: this process; {args.seconds:g} s steady")
        head = ("concurrency", "req/s", "in flight", "failed", "CPU ms/req")
        print("  ".join(f"{h:>{w}}" for h, w in zip(head, (11, 7, 9, 6, 10), strict=True)))
        for c in args.concurrency:
            shape = LoadShape.make(
                concurrency=c, rate=None, prompts=None, max_tokens=1, endpoint="chat", seed=0
            )
            cpu = time.process_time()
            plan = LoadPlan(url, shape, args.seconds, None, 60 + 3 * args.seconds, None, "x", None)
            run = drive(plan, edges=Edges())
            cpu = time.process_time() - cpu
            f = WindowFigures.of(run)
            print(
                f"{c:>11}  {f.completed / f.steady_s:>7.0f}  {f.concurrency:>9.2f}  "
                f"{f.errors:>6}  {1000 * cpu / max(f.requests, 1):>10.2f}"
            )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
