"""The ``pytest-tpw`` command: compare, show baselines, plot, export, Markdown report.

- ``pytest-tpw compare A.json B.json [--tolerance 5%] [--fail]``: A is the reference, B the
  candidate (two commits, two drivers, two OS images on the same machine); each is a results
  file (``--tpw-json``) or a baseline file (``.tpw/<key>.json``, whose latest session of each
  measurement is used). A table of ratios with intervals and verdicts, Benjamini-Hochberg
  across the measurements; exit 1 on a regression when ``--fail`` is given. Files from
  different hardware keys, sensors or provenances are refused (exit 2): their ratios would
  mix the machine or the meter into the verdict.
- ``pytest-tpw show [DIR]``: the baselines in DIR (default ``.tpw``).
- ``pytest-tpw plot overview RESULTS.json -o OUT.png|svg``: ratios to baseline of one run.
- ``pytest-tpw plot history FILES_OR_DIRS... [--match PAT] -o OUT.png|svg``: tokens/J over
  time, one panel per measurement, sensor, provenance and hardware key.
- ``pytest-tpw export --format bencher|github-action-benchmark RESULTS.json [-o OUT]``,
  ``pytest-tpw export --testbed RESULTS.json``: dashboard JSON, the Bencher testbed name.
- ``pytest-tpw report RESULTS.json [--limit N] [-o OUT]``: the Markdown report.

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

from pytest_tpw import stats
from pytest_tpw.config.settings import parse_confidence, parse_fraction, parse_positive_fraction
from pytest_tpw.present import exports, mdreport, plots
from pytest_tpw.present.report import num
from pytest_tpw.store import baseline
from pytest_tpw.store.files import atomic_write_text


class InputError(Exception):
    """Bad input to the command; the message names the file and what is wrong."""


# -- reading result and baseline files -------------------------------------------------------


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder; name a file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable as JSON ({exc})") from None


def load_results(path: Path) -> dict[str, Any]:
    """A ``--tpw-json`` document, checked enough to compare."""
    data = _read(path)
    if isinstance(data, dict) and data.get("format") == baseline.FORMAT:
        raise InputError(
            f"{path}: a baseline file, not a results file; this command needs "
            "the file pytest --tpw --tpw-json PATH writes"
        )
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("measurements"), dict)
        or "schema" not in data
    ):
        raise InputError(
            f"{path}: not a pytest-tpw result file (write one with pytest --tpw --tpw-json PATH)"
        )
    return data


def load_comparable(path: Path) -> tuple[dict[str, Any], str | None]:
    """A results document, or a baseline file seen as one (its latest session of each
    measurement); the second item says which sessions a baseline file gave."""
    data = _read(path)
    if not (isinstance(data, dict) and data.get("format") == baseline.FORMAT):
        return load_results(path), None
    try:
        stored = baseline.load(path, str(data.get("hardware_key")))
    except baseline.BaselineError as exc:
        raise InputError(str(exc)) from None
    assert stored is not None
    latest = {key: sessions[-1] for key, sessions in stored.measurements.items() if sessions}
    if not latest:
        raise InputError(f"{path}: a baseline file without sessions; nothing to compare")
    newest = max(latest.values(), key=lambda s: s.date)
    doc = {
        "schema": 1,
        "environment": {
            "hardware_key": stored.hardware_key,
            "sensor": {
                "name": stored.hardware.get("sensor", newest.sensor),
                "provenance": stored.hardware.get("provenance", newest.provenance),
            },
            "software": newest.software,
            "commit": newest.commit,
        },
        "measurements": {
            key: {
                "sensor": s.sensor,
                "provenance": s.provenance,
                "samples": [{"tokens": t, "joules": j, "seconds": sec} for t, j, sec in s.samples],
            }
            for key, s in latest.items()
        },
    }
    dates = sorted(s.date for s in latest.values())
    span = (
        dates[0][:10] if dates[0][:10] == dates[-1][:10] else f"{dates[0][:10]} to {dates[-1][:10]}"
    )
    return doc, (
        f"{path} is a baseline file: using the latest session of each of its "
        f"{len(latest)} measurement(s) ({span})"
    )


def samples_of(entry: Any, where: str) -> list[float]:
    try:
        values = [float(s["tokens"]) / float(s["joules"]) for s in entry["samples"]]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"{where}: malformed samples ({exc!r})") from None
    if not values:
        raise InputError(f"{where}: no samples")
    if any(not v > 0 for v in values):
        raise InputError(f"{where}: samples must have positive tokens and joules")
    return values


def _env(doc: dict[str, Any]) -> dict[str, Any]:
    env = doc.get("environment")
    return env if isinstance(env, dict) else {}


def _hardware(doc: dict[str, Any]) -> str | None:
    key = _env(doc).get("hardware_key")
    return str(key) if key is not None else None


def _sensor(doc: dict[str, Any], field: str) -> str | None:
    sensor = _env(doc).get("sensor")
    value = sensor.get(field) if isinstance(sensor, dict) else None
    return str(value) if value is not None else None


def _provenance(doc: dict[str, Any]) -> str | None:
    return _sensor(doc, "provenance")


# -- compare ---------------------------------------------------------------------------------


def incomparable(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """What differs between A and B that makes their ratios meaningless; empty when fine."""
    out = []
    facts = [
        ("hardware key", _hardware(a), _hardware(b)),
        ("sensor", _sensor(a, "name"), _sensor(b, "name")),
        ("joules", _provenance(a), _provenance(b)),
    ]
    for what, va, vb in facts:
        if va != vb:
            out.append(f"{what} {va or 'unknown'} in A, {vb or 'unknown'} in B")
    if out:
        return out
    for key in keys:  # a measurement may name its own sensor (several in one session)
        ea, eb = a["measurements"][key], b["measurements"][key]
        for field in ("sensor", "provenance"):
            va, vb = ea.get(field), eb.get(field)
            if va is not None and vb is not None and va != vb:
                out.append(f"{key}: {field} {va} in A, {vb} in B")
    return out


def compare(a_path: Path, b_path: Path, params: stats.Params, fail: bool) -> int:
    (a, a_note), (b, b_note) = load_comparable(a_path), load_comparable(b_path)
    keys = sorted(set(a["measurements"]) & set(b["measurements"]))
    differs = incomparable(a, b, keys)
    if differs:
        raise InputError(
            f"{a_path} (A) and {b_path} (B) are not comparable: "
            + "; ".join(differs)
            + ". Tokens per joule from different machines, sensors or joule provenances "
            "differ for reasons that are not the code; compare files recorded on the same "
            "hardware with the same sensor"
        )
    only = sorted(set(a["measurements"]) ^ set(b["measurements"]))
    comparisons = [
        stats.compare(
            [samples_of(a["measurements"][k], f"{a_path}: {k}")],
            samples_of(b["measurements"][k], f"{b_path}: {k}"),
            params,
        )
        for k in keys
    ]
    comparisons = stats.apply_fdr(comparisons, params.fdr_q) if comparisons else []
    print(f"A (reference): {a_path}\nB (candidate): {b_path}")
    for note in (a_note, b_note):
        if note:
            print(f"note: {note}")
    for line in _compare_table(keys, comparisons, params):
        print(line)
    for note in _compare_notes(a, b):
        print(note)
    for line in run_wide_lines(b):
        print(line)
    if only:
        print(f"{len(only)} measurement(s) in only one file, not compared: " + ", ".join(only))
    regressed = [
        k for k, c in zip(keys, comparisons, strict=True) if c.verdict is stats.Verdict.REGRESSED
    ]
    print(
        f"{len(regressed)} regressed, tolerance {params.tolerance:.1%}, noise floor "
        f"{params.noise_floor:.1%}, Benjamini-Hochberg q = {params.fdr_q:g}"
    )
    return 1 if fail and regressed else 0


def run_wide_lines(doc: dict[str, Any]) -> list[str]:
    """The candidate's run-wide findings (one per hardware key), as the session judged them."""
    findings = doc.get("run_wide")
    if not isinstance(findings, list):
        return []
    lines = []
    for f in findings:
        if not isinstance(f, dict):
            continue
        text = f.get("text")
        if not text:
            ratio = f.get("ratio")
            text = f"run-wide: {f.get('verdict', '?')}" + (
                f", ratio {ratio:.3f}" if isinstance(ratio, int | float) else ""
            )
        prefix = f"B {f['hardware_key']} " if len(findings) > 1 and f.get("hardware_key") else "B "
        lines.append(f"{prefix}{text} [{f.get('verdict', '?')}]")
        lines += [f"  {note}" for note in f.get("notes") or [] if isinstance(note, str)]
    return lines


def _compare_notes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    notes = []
    provenance = _provenance(a)
    if provenance is not None and provenance != "measured":
        notes.append(f"note: joules are {provenance} in both files, not measured")
    changes = baseline.stack_changes(_env(a).get("software") or {}, _env(b).get("software") or {})
    if changes:
        notes.append("stack changes A -> B: " + "; ".join(changes))
    return notes


def _compare_table(
    keys: Sequence[str], comparisons: Sequence[stats.Comparison], params: stats.Params
) -> list[str]:
    header = (
        "measurement",
        "ratio B/A",
        f"{params.confidence:.0%} interval",
        "change",
        "n A",
        "n B",
        "verdict",
    )
    rows = [header]
    for key, c in zip(keys, comparisons, strict=True):
        interval = (
            f"[{c.ci_low:.3f}, {c.ci_high:.3f}]"
            if c.ci_low is not None and c.ci_high is not None
            else "-"
        )
        rows.append(
            (
                key,
                f"{c.ratio:.3f}",
                interval,
                f"{c.ratio - 1:+.1%}",
                str(c.n_baseline),
                str(c.n_candidate),
                c.verdict.value,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return [
        "  ".join(
            [
                r[0].ljust(widths[0]),
                *(cell.rjust(w) for cell, w in zip(r[1:-1], widths[1:-1], strict=True)),
                r[-1],
            ]
        )
        for r in rows
    ]


# -- show ------------------------------------------------------------------------------------


def show(directory: Path) -> int:
    if not directory.is_dir():
        raise InputError(
            f"{directory}: no baseline folder here (record baselines with "
            "pytest --tpw --tpw-update)"
        )
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
        print(
            f"{path}  hardware {stored.hardware_key}  sensor "
            f"{stored.hardware.get('sensor', '?')} (joules {joules})  "
            f"({len(stored.measurements)} measurement(s))"
        )
        rows = [("measurement", "sessions", "latest", "commit", "tokens/J", "n")]
        for key in sorted(stored.measurements):
            sessions = stored.measurements[key]
            last = sessions[-1]
            level = stats.summarize(last.values()).estimate
            rows.append(
                (
                    key,
                    str(len(sessions)),
                    last.date,
                    (last.commit or "-")[:10],
                    num(level),
                    str(len(last.samples)),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print(
                "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            )
    print(
        "\naccept a new level (replaces a test's sessions): pytest --tpw --tpw-update 'NODEID'"
        "\nadd a session (learn how sessions differ):      pytest --tpw --tpw-record"
    )
    return 0


# -- plot, export, report -------------------------------------------------------------------


def plot_overview(path: Path, out: Path) -> int:
    doc = load_results(path)
    try:
        plots.overview(doc, out)
    except plots.PlotError as exc:
        raise InputError(f"{path}: {exc}" if "nothing to plot" in str(exc) else str(exc)) from None
    print(f"wrote {out}")
    return 0


def plot_history(paths: Sequence[Path], out: Path, match: str | None) -> int:
    try:
        series = plots.load_series(paths)
        plots.history(series, out, match)
    except plots.PlotError as exc:
        raise InputError(str(exc)) from None
    print(f"wrote {out}")
    return 0


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        atomic_write_text(out, text)
    except OSError as exc:  # files.OutputWriteError names the path, the cause and the fix
        raise InputError(str(exc)) from None
    print(f"wrote {out}", file=sys.stderr)


def export(path: Path, fmt: str | None, out: Path | None, testbed: bool) -> int:
    doc = load_results(path)
    if testbed:
        _emit(exports.bencher_testbed(doc) + "\n", out)
        return 0
    assert fmt is not None
    try:
        text = exports.render(doc, fmt)
    except exports.ExportError as exc:
        raise InputError(f"{path}: {exc}") from None
    _emit(text, out)
    return 0


def markdown_report(path: Path, limit: int, out: Path | None) -> int:
    doc = load_results(path)
    try:
        text = mdreport.render(doc, limit)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    _emit(text, out)
    return 0


# -- entry point -----------------------------------------------------------------------------


PLOT_KINDS = ("overview", "history")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 400:
        raise argparse.ArgumentTypeError(f"{value} is too small; at least 400 characters")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-tpw",
        description="pytest-tpw tools: compare, show baselines, plot, export, report",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="A/B of two result or baseline files")
    cmp_.add_argument("a", type=Path, help="reference (A): a --tpw-json file or .tpw/KEY.json")
    cmp_.add_argument("b", type=Path, help="candidate (B): a --tpw-json file or .tpw/KEY.json")
    cmp_.add_argument("--tolerance", default="5%", help="largest tolerated drop (default 5%%)")
    cmp_.add_argument("--noise-floor", default="1%", help="smallest change worth reporting")
    cmp_.add_argument("--confidence", default="0.90", help="two-sided confidence (0.90)")
    cmp_.add_argument("--fdr", default="0.05", help="Benjamini-Hochberg q (0.05)")
    cmp_.add_argument("--fail", action="store_true", help="exit 1 when something regressed")
    shw = sub.add_parser("show", help="the baselines: hardware keys, measurements, sessions")
    shw.add_argument("dir", nargs="?", type=Path, default=Path(".tpw"))
    plt_ = sub.add_parser("plot", help="figures: overview of one run, history over time")
    kinds = plt_.add_subparsers(dest="kind", required=True)
    ovw = kinds.add_parser("overview", help="ratio to baseline of every measurement of a run")
    ovw.add_argument("results", type=Path, help="a --tpw-json results file")
    ovw.add_argument("-o", "--output", type=Path, required=True, help="OUT.png or OUT.svg")
    hist = kinds.add_parser("history", help="tokens/J over time from baselines and results")
    hist.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="baseline files, results files, or folders of them (.tpw)",
    )
    hist.add_argument("--match", help="measurements to draw: a substring or a glob")
    hist.add_argument("-o", "--output", type=Path, required=True, help="OUT.png or OUT.svg")
    exp = sub.add_parser("export", help="dashboard JSON: Bencher, github-action-benchmark")
    what = exp.add_mutually_exclusive_group(required=True)
    what.add_argument("--format", choices=exports.FORMATS, help="the export format")
    what.add_argument(
        "--testbed",
        action="store_true",
        help="print the Bencher testbed (the hardware key) and nothing else",
    )
    exp.add_argument("results", type=Path, help="a --tpw-json results file")
    exp.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    rep = sub.add_parser("report", help="Markdown report for a PR comment or a job summary")
    rep.add_argument("results", type=Path, help="a --tpw-json results file")
    rep.add_argument(
        "--limit",
        type=_limit,
        default=mdreport.COMMENT_LIMIT,
        help=f"largest size in characters (default {mdreport.COMMENT_LIMIT}, a "
        f"PR comment; a job summary takes {mdreport.STEP_SUMMARY_LIMIT})",
    )
    rep.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    return parser


def _params(args: argparse.Namespace) -> stats.Params:
    try:
        return stats.Params(
            tolerance=parse_positive_fraction(args.tolerance),
            noise_floor=parse_fraction(args.noise_floor),
            confidence=parse_confidence(args.confidence),
            fdr_q=parse_positive_fraction(args.fdr),
        )
    except ValueError as exc:
        raise InputError(f"bad option: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["plot"] and len(words) > 1 and words[1] not in (*PLOT_KINDS, "-h", "--help"):
        # the old `pytest-tpw plot FILES -o OUT.png` drew the history
        print("pytest-tpw: note: `plot FILES` is now `plot history FILES`", file=sys.stderr)
        words.insert(1, "history")
    args = _parser().parse_args(words)
    try:
        if args.command == "compare":
            return compare(args.a, args.b, _params(args), args.fail)
        if args.command == "show":
            return show(args.dir)
        if args.command == "export":
            return export(args.results, args.format, args.output, args.testbed)
        if args.command == "report":
            return markdown_report(args.results, args.limit, args.output)
        if args.kind == "overview":
            return plot_overview(args.results, args.output)
        return plot_history(args.files, args.output, args.match)
    except InputError as exc:
        print(f"pytest-tpw: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pytest-tpw show | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
