"""The ``pytest-tpw`` command: compare two result files, show the baselines, plot history.

- ``pytest-tpw compare A.json B.json [--tolerance 5%] [--fail]``: A is the reference, B the
  candidate (two commits, two drivers, two OS images on the same hardware); a table of
  ratios with intervals and verdicts, Benjamini-Hochberg across the measurements; exit 1
  on a regression when ``--fail`` is given.
- ``pytest-tpw show [DIR]``: the baselines in DIR (default ``.tpw``).
- ``pytest-tpw plot FILES... -o OUT.png``: tokens/J over sessions per measurement.

Exit codes: 0 fine, 1 a regression under ``--fail``, 2 bad input (named in the message).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import baseline, stats
from .report import num
from .settings import parse_confidence, parse_fraction, parse_positive_fraction


class InputError(Exception):
    """Bad input to the command; the message names the file and what is wrong."""


# -- reading result files --------------------------------------------------------------------


def load_results(path: Path) -> dict[str, Any]:
    """A ``--tpw-json`` document, checked enough to compare."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(data, dict) or "measurements" not in data or "schema" not in data:
        raise InputError(f"{path}: not a pytest-tpw result file (write one with "
                         "pytest --tpw --tpw-json PATH)")
    return data


def samples_of(entry: Any, where: str) -> list[float]:
    try:
        values = [float(s["tokens"]) / float(s["joules"]) for s in entry["samples"]]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"{where}: malformed samples ({exc!r})") from None
    if any(not v > 0 for v in values):
        raise InputError(f"{where}: samples must have positive tokens and joules")
    return values


def _hardware(doc: dict[str, Any]) -> str | None:
    env = doc.get("environment") or {}
    key = env.get("hardware_key") if isinstance(env, dict) else None
    return str(key) if key is not None else None


def _provenance(doc: dict[str, Any]) -> str | None:
    env = doc.get("environment") or {}
    sensor = env.get("sensor") if isinstance(env, dict) else None
    return sensor.get("provenance") if isinstance(sensor, dict) else None


# -- compare ---------------------------------------------------------------------------------


def compare(a_path: Path, b_path: Path, params: stats.Params, fail: bool) -> int:
    a, b = load_results(a_path), load_results(b_path)
    notes = _compare_notes(a, b, a_path, b_path)
    keys = sorted(set(a["measurements"]) & set(b["measurements"]))
    only = sorted(set(a["measurements"]) ^ set(b["measurements"]))
    comparisons = [
        stats.compare([samples_of(a["measurements"][k], f"{a_path}: {k}")],
                      samples_of(b["measurements"][k], f"{b_path}: {k}"), params)
        for k in keys
    ]
    comparisons = stats.apply_fdr(comparisons, params.fdr_q) if comparisons else []
    print(f"A (reference): {a_path}\nB (candidate): {b_path}")
    for line in _compare_table(keys, comparisons, params):
        print(line)
    for note in notes:
        print(note)
    if only:
        print(f"{len(only)} measurement(s) in only one file, not compared: " + ", ".join(only))
    regressed = [k for k, c in zip(keys, comparisons, strict=True)
                 if c.verdict is stats.Verdict.REGRESSED]
    print(f"{len(regressed)} regressed, tolerance {params.tolerance:.1%}, noise floor "
          f"{params.noise_floor:.1%}, Benjamini-Hochberg q = {params.fdr_q:g}")
    return 1 if fail and regressed else 0


def _compare_notes(a: dict[str, Any], b: dict[str, Any], a_path: Path,
                   b_path: Path) -> list[str]:
    notes = []
    if _hardware(a) != _hardware(b):
        notes.append(f"warning: different hardware ({_hardware(a)} in {a_path}, "
                     f"{_hardware(b)} in {b_path}): ratios mix hardware and software effects")
    pa, pb = _provenance(a), _provenance(b)
    if pa != pb:
        notes.append(f"warning: joules are {pa} in A and {pb} in B: not comparable")
    elif pa != "measured":
        notes.append(f"note: joules are {pa} in both files, not measured")
    changes = baseline.stack_changes((a.get("environment") or {}).get("software") or {},
                                     (b.get("environment") or {}).get("software") or {})
    if changes:
        notes.append("stack changes A -> B: " + "; ".join(changes))
    return notes


def _compare_table(keys: Sequence[str], comparisons: Sequence[stats.Comparison],
                   params: stats.Params) -> list[str]:
    header = ("measurement", "ratio B/A", f"{params.confidence:.0%} interval", "change",
              "n A", "n B", "verdict")
    rows = [header]
    for key, c in zip(keys, comparisons, strict=True):
        interval = (f"[{c.ci_low:.3f}, {c.ci_high:.3f}]" if c.ci_low is not None
                    and c.ci_high is not None else "-")
        rows.append((key, f"{c.ratio:.3f}", interval, f"{c.ratio - 1:+.1%}",
                     str(c.n_baseline), str(c.n_candidate), c.verdict.value))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join([r[0].ljust(widths[0]),
                       *(cell.rjust(w) for cell, w in zip(r[1:-1], widths[1:-1], strict=True)),
                       r[-1]]) for r in rows]


# -- show ------------------------------------------------------------------------------------


def show(directory: Path) -> int:
    if not directory.is_dir():
        raise InputError(f"{directory}: no baseline folder here (record baselines with "
                         "pytest --tpw --tpw-update)")
    files = sorted(directory.glob("*.json"))
    if not files:
        print(f"{directory}: no baseline files")
        return 0
    for path in files:
        try:
            stored = baseline.load(path, path.stem)
        except baseline.BaselineError as exc:
            raise InputError(str(exc)) from None
        assert stored is not None
        joules = stored.hardware.get("provenance", "unknown")
        print(f"{path}  hardware {stored.hardware_key}  sensor "
              f"{stored.hardware.get('sensor', '?')} (joules {joules})  "
              f"({len(stored.measurements)} measurement(s))")
        rows = [("measurement", "sessions", "latest", "commit", "tokens/J", "n")]
        for key in sorted(stored.measurements):
            sessions = stored.measurements[key]
            last = sessions[-1]
            level = stats.summarize(last.values()).estimate
            rows.append((key, str(len(sessions)), last.date, (last.commit or "-")[:10],
                         num(level), str(len(last.samples))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
                  .rstrip())
    return 0


# -- plot ------------------------------------------------------------------------------------


def _series(paths: Sequence[Path]) -> dict[str, list[tuple[str, list[float]]]]:
    """measurement -> [(label, tokens/J samples)] from baseline or result files, in order."""
    out: dict[str, list[tuple[str, list[float]]]] = {}
    for path in paths:
        data = load_results(path) if _is_results(path) else None
        if data is not None:
            label = str((data.get("environment") or {}).get("commit") or path.stem)[:10]
            for key, entry in data["measurements"].items():
                out.setdefault(key, []).append((label, samples_of(entry, f"{path}: {key}")))
            continue
        try:
            stored = baseline.load(path, path.stem)
        except baseline.BaselineError as exc:
            raise InputError(str(exc)) from None
        if stored is None:
            raise InputError(f"{path}: no such file")
        for key, sessions in stored.measurements.items():
            for s in sessions:
                out.setdefault(key, []).append(((s.commit or s.date)[:10], s.values()))
    return out


def _is_results(path: Path) -> bool:
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(head, dict) and "format" not in head and "measurements" in head


def plot(paths: Sequence[Path], out: Path) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("plot needs matplotlib: pip install matplotlib") from None
    series = _series(paths)
    if not series:
        raise InputError("nothing to plot: the files hold no measurements")
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.2 * len(series)), squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], sorted(series.items()), strict=True):
        summaries = [stats.summarize(values) for _, values in points]
        xs = range(len(points))
        levels = [s.estimate for s in summaries]
        lows = [s.estimate - (s.ci_low or s.estimate) for s in summaries]
        highs = [(s.ci_high or s.estimate) - s.estimate for s in summaries]
        ax.errorbar(xs, levels, yerr=[lows, highs], fmt="o-", capsize=3)
        ax.set_xticks(list(xs), [label for label, _ in points], fontsize=7)
        ax.set_title(key, fontsize=8)
        ax.set_ylabel("tokens/J")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


# -- entry point -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-tpw", description="pytest-tpw tools: "
                                     "compare result files, show baselines, plot history")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="A/B of two --tpw-json result files")
    cmp_.add_argument("a", type=Path, help="reference result file (A)")
    cmp_.add_argument("b", type=Path, help="candidate result file (B)")
    cmp_.add_argument("--tolerance", default="5%", help="largest tolerated drop (default 5%%)")
    cmp_.add_argument("--noise-floor", default="1%", help="smallest change worth reporting")
    cmp_.add_argument("--confidence", default="0.90", help="two-sided confidence (0.90)")
    cmp_.add_argument("--fdr", default="0.05", help="Benjamini-Hochberg q (0.05)")
    cmp_.add_argument("--fail", action="store_true", help="exit 1 when something regressed")
    shw = sub.add_parser("show", help="the baselines: hardware keys, measurements, sessions")
    shw.add_argument("dir", nargs="?", type=Path, default=Path(".tpw"))
    plt_ = sub.add_parser("plot", help="tokens/J over sessions, per measurement")
    plt_.add_argument("files", nargs="+", type=Path, help="baseline or result files")
    plt_.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    return parser


def _params(args: argparse.Namespace) -> stats.Params:
    try:
        return stats.Params(tolerance=parse_positive_fraction(args.tolerance),
                            noise_floor=parse_fraction(args.noise_floor),
                            confidence=parse_confidence(args.confidence),
                            fdr_q=parse_positive_fraction(args.fdr))
    except ValueError as exc:
        raise InputError(f"bad option: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "compare":
            return compare(args.a, args.b, _params(args), args.fail)
        if args.command == "show":
            return show(args.dir)
        return plot(args.files, args.output)
    except InputError as exc:
        print(f"pytest-tpw: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pytest-tpw show | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
