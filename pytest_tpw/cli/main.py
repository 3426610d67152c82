"""The ``pytest-tpw`` command: compare, show baselines, plot, export, Markdown report.

- ``pytest-tpw compare A B [--tolerance 5%] [--fail]``: B judged against A by the engine a
  run uses (:mod:`pytest_tpw.cli.compare`): a baseline file or a results file each, on the
  same hardware with the same sensor (else refused, exit 2).
- ``pytest-tpw show [DIR]``: the baselines in DIR (default ``.tpw``).
- ``pytest-tpw plot overview RESULTS.json -o OUT.png|svg``: ratios to baseline of one run.
- ``pytest-tpw plot history FILES_OR_DIRS... [--match PAT] -o OUT.png|svg``: tokens/J over
  time, one panel per measurement, sensor, provenance and hardware key.
- ``pytest-tpw export --format bencher|github-action-benchmark RESULTS.json [-o OUT]``,
  ``pytest-tpw export --testbed RESULTS.json``: dashboard JSON, the Bencher testbed name.
- ``pytest-tpw report RESULTS.json [--limit N] [-o OUT]``: the Markdown report.

Exit codes: 0 fine, 1 a regression under ``--fail``, 2 an error: bad input (named in the
message) or bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_tpw import stats
from pytest_tpw.cli import compare
from pytest_tpw.cli.compare import InputError
from pytest_tpw.errors import TpwError
from pytest_tpw.present import exports, mdreport, plots
from pytest_tpw.present.report import num
from pytest_tpw.store import baseline, results
from pytest_tpw.store.files import atomic_write_text

# -- show ------------------------------------------------------------------------------------


def levels(sessions: Sequence[baseline.StoredSession | None]) -> list[float | None]:
    """Each session's level (the 20 %-trimmed geometric mean of its windows), computed for
    all sessions of one window count at once; None for no session."""
    import numpy as np

    out: list[float | None] = [None] * len(sessions)
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(sessions):
        if s is not None and s.samples:
            by_length.setdefault(len(s.samples), []).append(i)
    for indices in by_length.values():
        logs = np.log([sessions[i].values() for i in indices])  # type: ignore[union-attr]
        means, _, _ = stats.trimmed_stats(logs)
        for i, m in zip(indices, np.exp(means), strict=True):
            out[i] = float(m)
    return out


def sensors_here(urls: Sequence[str]) -> int:
    """Which sensors work on this machine, in ``--tpw-sensor auto``'s order: the one auto
    would open, each that opens (its joules' provenance and hardware key) and why each
    other cannot. Every sensor is opened once and closed; nothing is measured."""
    from pytest_tpw.host.fingerprint import hardware_key
    from pytest_tpw.sensors import AUTO_ORDER, SensorOptions, survey

    found = survey(SensorOptions(urls=tuple(urls)))
    chosen = next((f.name for f in found if f.name in AUTO_ORDER and f.reason is None), None)
    width = max(len(f.name) for f in found)
    for f in found:
        mark = "*" if f.name == chosen else " "
        if f.reason is None:
            what = f"works: joules {f.provenance}, hardware key {hardware_key(f.hardware)}"
        else:
            what = f"no: {f.reason}"
        print(f"{mark} {f.name:<{width}}  {what}")
    order = ", ".join(AUTO_ORDER)
    print(
        f"--tpw-sensor auto tries {order} in turn and opens "
        f"{chosen or 'none of them'} here (*); docs/sensors.md has each one's install line"
    )
    return 0


def show(directory: Path) -> int:
    """What a baseline folder holds: per hardware key, each measurement's sessions, its
    newest level, and what accepts superseded. Only each entry's newest session is read."""
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
            stored = baseline.load(path, path.stem, check=False)
            old = baseline.load(baseline.superseded_path(path), path.stem, check=False)
            assert stored is not None
            keys = sorted(stored.measurements)
            newest = [stored.newest(k) for k in keys]
            before = [old.newest(k) if old is not None else None for k in keys]
        except baseline.BaselineError as exc:
            raise InputError(str(exc)) from None
        joules = stored.hardware.get("provenance", "unknown")
        print(
            f"{path}  hardware {stored.hardware_key}  sensor "
            f"{stored.hardware.get('sensor', '?')} (joules {joules})  "
            f"({len(stored.measurements)} measurement(s))"
        )
        rows = [
            (
                "measurement",
                "sessions",
                "latest",
                "commit",
                "tokens/J",
                "n",
                "superseded",
                "before (tokens/J)",
            )
        ]
        now_levels, old_levels = levels(newest), levels(before)
        for i, key in enumerate(keys):
            last = newest[i]
            if last is None:
                continue
            rows.append(
                (
                    key,
                    str(stored.count(key)),
                    last.date,
                    (last.commit or "-")[:10],
                    num(now_levels[i]),
                    str(len(last.samples)),
                    str(old.count(key) if old is not None else 0),
                    num(old_levels[i]),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print(
                "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            )
    print(
        "\naccept a new level (the old one moves to superseded/): pytest --tpw --tpw-update "
        "'NODEID'"
        "\nadd a session (learn how sessions differ):              pytest --tpw --tpw-record"
    )
    return 0


# -- plot, export, report -------------------------------------------------------------------


def plot_overview(path: Path, out: Path) -> int:
    doc = results.load(path)
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
    doc = results.load(path)
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
    doc = results.load(path)
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
        description="pytest-tpw tools: compare, show baselines, sensors, plot, export, report",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser(
        "compare",
        help="B judged against A by the engine a run uses (baseline or results files)",
        description=compare.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_arguments(cmp_)
    sns = sub.add_parser(
        "sensors", help="which energy sensors work on this machine, and why the others do not"
    )
    sns.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="a dcgm-exporter or Prometheus URL, to try the remote sensors too (repeatable)",
    )
    shw = sub.add_parser("show", help="the baselines: hardware keys, measurements, sessions")
    shw.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=Path(".tpw"),
        help="the baseline folder (default: .tpw, where pytest --tpw keeps them)",
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["plot"] and len(words) > 1 and words[1] not in (*PLOT_KINDS, "-h", "--help"):
        # the old `pytest-tpw plot FILES -o OUT.png` drew the history
        print("pytest-tpw: note: `plot FILES` is now `plot history FILES`", file=sys.stderr)
        words.insert(1, "history")
    args = _parser().parse_args(words)
    try:
        if args.command == "compare":
            return compare.main(args)
        if args.command == "show":
            return show(args.dir)
        if args.command == "sensors":
            return sensors_here(args.url)
        if args.command == "export":
            return export(args.results, args.format, args.output, args.testbed)
        if args.command == "report":
            return markdown_report(args.results, args.limit, args.output)
        if args.kind == "overview":
            return plot_overview(args.results, args.output)
        return plot_history(args.files, args.output, args.match)
    except TpwError as exc:  # every refusal names the file or option and what to do
        print(f"pytest-tpw: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pytest-tpw show | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
