"""``pytest-tpw compare A B``: B judged against A by the engine and the judge a run uses.

A (the reference) is a baseline file (every stored session of each test, as a run reads it)
or a results file (one session of each test). B (the candidate) is a results file (its
measurements, in the order its run took them, with each test's tolerance, fixed rounds and
canary role) or a baseline file (its latest session of each test). The verdicts are
relative to the run-wide shift over the tests both share and use the session spread pooled
across them; with one stored session of each test, the spreads are the engine's priors, and
the output says so. ``compare .tpw/KEY.json results.json`` gives the verdicts the run that
wrote ``results.json`` printed, with the settings it ran with (flags override them).

Exit codes: 0 fine, 1 regressed (with ``--fail``; a run-wide stack regression too with
``--fail-stack``), 2 an error: an unreadable or incomparable file, measurements of A and B
taken under different loads, bad usage.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tpw.config.options import DEFAULT, FIELD, HELP
from pytest_tpw.config.settings import ROWS, Settings, build
from pytest_tpw.errors import SettingError, TpwError
from pytest_tpw.load.figures import LoadFigures
from pytest_tpw.measure.samples import Measurement, Sample
from pytest_tpw.store import baseline, results
from pytest_tpw.store.baseline import BaselineFile, StoredSession

if TYPE_CHECKING:  # the engine (numpy, scipy) loads only when a comparison runs
    from pytest_tpw.judging.judge import Judge, Judgement
    from pytest_tpw.judging.replay import Candidate

#: The settings a comparison takes from the candidate's run, and the flags that override them.
JUDGING: dict[str, str | None] = {
    "tolerance": "--tolerance",
    "noise_floor": "--noise-floor",
    "confidence": "--confidence",
    "fdr": "--fdr",
    "rounds": None,
}


#: Measurements named at most in one line of the closing notes (the rest are counted).
LISTED = 10


def replay_module() -> Any:
    """:mod:`pytest_tpw.judging.replay`, imported when a comparison runs."""
    from pytest_tpw.judging import replay

    return replay


class InputError(TpwError):
    """Bad input to the command; the message names the file and what is wrong."""


# -- the two sides ---------------------------------------------------------------------------


class Side:
    """One file of the comparison: what it is, its hardware, sensor and software."""

    def __init__(
        self, path: Path, doc: Mapping[str, Any], note: str | None = None, is_baseline: bool = False
    ) -> None:
        self.path = path
        self.doc = doc
        self.note = note
        #: True when the file is a baseline file (its sessions, not a run's results).
        self.is_baseline = is_baseline

    @property
    def environment(self) -> dict[str, Any]:
        return results.mapping(self.doc, "environment")

    @property
    def hardware_key(self) -> str | None:
        return results.text(self.environment.get("hardware_key"))

    def sensor(self, field: str) -> str | None:
        return results.text(results.mapping(self.environment, "sensor").get(field))

    @property
    def edge_error_s(self) -> float:
        """The edge error of the sensor that measured this file (0 when it states none)."""
        value = results.mapping(self.environment, "sensor").get("edge_error_s")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 0.0
        number = float(value)
        return number if math.isfinite(number) and number > 0 else 0.0

    @property
    def software(self) -> dict[str, Any]:
        return results.mapping(self.environment, "software")

    def own(self, key: str) -> bool:
        """True for a measurement taken on this file's own hardware key."""
        entry = self.doc["measurements"][key]
        other = entry.get("hardware_key")
        return other is None or other == self.hardware_key


def _open(path: Path) -> BaselineFile | dict[str, Any]:
    """A baseline file (read by the store, whatever key it holds) or a results document."""
    if not results.looks_like_baseline(path):
        doc = results.read(path)
        if not results.is_baseline(doc):  # a baseline reformatted by hand is one too
            return results.check(doc, path)
    stored = baseline.load(path, None)
    assert stored is not None  # it was just there
    # each measurement is read (and checked) when compared: a 10,000-test file is not parsed
    # for a 300-test run
    return stored


def reference(path: Path) -> tuple[Side, BaselineFile]:
    """A: its stored sessions, from a baseline file or a results file."""
    opened = _open(path)
    if isinstance(opened, BaselineFile):
        stored = opened
        sessions = sum(stored.count(k) for k in stored.measurements)
        env = {
            "hardware_key": stored.hardware_key,
            "sensor": {
                "name": stored.hardware.get("sensor"),
                "provenance": stored.hardware.get("provenance"),
            },
            "software": {},  # the latest compared session's: known once B is read (run)
        }
        note = (
            f"{path} is a baseline file: every stored session of each test is used, as a "
            f"run uses them ({sessions} session(s) of {len(stored.measurements)} "
            "measurement(s))"
        )
        return Side(path, {"environment": env, "measurements": {}}, note, True), stored
    side = Side(path, opened)
    key = side.hardware_key or "unknown"
    date = results.text(side.environment.get("date")) or "A"
    stored = BaselineFile(key, {}, {})
    for k in results.in_run_order(side.doc)[0]:
        if not side.own(k):
            continue
        entry = side.doc["measurements"][k]
        stored.measurements[k] = [
            StoredSession(
                date=date,
                commit=results.text(side.environment.get("commit")),
                software=dict(side.software),
                sensor=results.text(entry.get("sensor")) or side.sensor("name") or "",
                provenance=results.text(entry.get("provenance")) or side.sensor("provenance") or "",
                samples=results.samples(entry, f"{path}: {k}"),
                load=dict(entry["load"]) if isinstance(entry.get("load"), dict) else None,
            )
        ]
    return side, stored


def _latest(stored: BaselineFile, keys: Sequence[str] | None = None) -> StoredSession | None:
    """The newest stored session of ``keys`` (None: of all; each entry's last line only is
    read); None without one."""
    newest = (stored.newest(k) for k in (stored.measurements if keys is None else keys))
    return max((s for s in newest if s is not None), key=lambda s: s.date, default=None)


def candidate(path: Path) -> Side:
    """B: a results file, or a baseline file's latest session of each test."""
    opened = _open(path)
    if not isinstance(opened, BaselineFile):
        return Side(path, opened)
    stored = opened
    latest = {key: s for key in stored.measurements if (s := stored.newest(key)) is not None}
    if not latest:
        raise InputError(f"{path}: a baseline file without sessions; nothing to compare")
    newest = max(latest.values(), key=lambda s: s.date)
    dates = sorted(s.date[:10] for s in latest.values())
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    as_doc = {
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
    note = (
        f"{path} is a baseline file: its latest session of each of its {len(latest)} "
        f"measurement(s) is the candidate ({span})"
    )
    return Side(path, as_doc, note, True)


def incomparable(a: Side, b: Side, stored: BaselineFile, keys: Sequence[str]) -> list[str]:
    """What differs between A and B that makes their ratios meaningless; empty when fine."""
    out = []
    facts = [
        ("hardware key", a.hardware_key, b.hardware_key),
        ("sensor", a.sensor("name"), b.sensor("name")),
        ("joules", a.sensor("provenance"), b.sensor("provenance")),
    ]
    for what, va, vb in facts:
        if va != vb:
            out.append(f"{what} {va or 'unknown'} in A, {vb or 'unknown'} in B")
    if out:
        return out
    for key in keys:  # a measurement may name its own sensor (several in one session)
        entry = b.doc["measurements"][key]
        for s in stored.sessions(key)[-1:]:
            for field, va in (("sensor", s.sensor), ("provenance", s.provenance)):
                vb = results.text(entry.get(field))
                if va and vb and va != vb:
                    out.append(f"{key}: {field} {va} in A, {vb} in B")
    return out


# -- settings and candidates -----------------------------------------------------------------


def settings_for(b: Side, flags: Mapping[str, str | None]) -> Settings:
    """The judging settings: each flag given on the command line, else the candidate run's
    own (its results file records them), else the defaults."""
    recorded = results.mapping(b.doc, "settings")

    def lookup(row: tuple[Any, ...]) -> tuple[str | None, str]:
        field = row[FIELD]
        if field not in JUDGING:
            return None, "default"
        flag = JUDGING[field]
        if flag is not None and flags.get(field) is not None:
            return flags[field], flag
        value = recorded.get(field)
        if value is None or isinstance(value, bool):
            return None, "default"
        return str(value), f"{b.path}: settings.{field}"

    try:
        return build(lookup, enabled=True)
    except SettingError as exc:
        raise InputError(str(exc)) from None


def candidates(b: Side, keys: Sequence[str], settings: Settings, keep: bool) -> list[Candidate]:
    """B's measurements as the engine takes them; ``keep``: each test keeps the tolerance
    it ran with (no ``--tolerance`` given)."""
    out = []
    for key in keys:
        entry = b.doc["measurements"][key]
        where = f"{b.path}: {key}"
        nodeid, name = results.text(entry.get("nodeid")), entry.get("name")
        if nodeid is None or (name is not None and not isinstance(name, str)):
            nodeid, name = key, None
        if (nodeid if name is None else f"{nodeid}::{name}") != key:
            nodeid, name = key, None
        m = Measurement(
            nodeid,
            name,
            results.text(entry.get("sensor")) or b.sensor("name") or "",
            results.text(entry.get("provenance")) or b.sensor("provenance") or "",  # type: ignore[arg-type]
            complete=True,
        )
        shape = entry.get("load")
        if isinstance(shape, dict):  # checked when the file was read
            m.load = LoadFigures(dict(shape), results.text(shape.get("model")) or "")
        raw = entry.get("samples") or []
        for (tokens, joules, seconds), data in zip(results.samples(entry, where), raw, strict=True):
            notes = data.get("warnings") if isinstance(data, dict) else None
            texts = [w for w in notes if isinstance(w, str)] if isinstance(notes, list) else []
            m.samples.append(Sample(tokens, joules, seconds, 1, {}, warnings=texts))
        test = results.mapping(entry, "comparison")
        tolerance = test.get("tolerance") if keep else None
        if tolerance is not None and not (
            isinstance(tolerance, float) and settings.noise_floor < tolerance < 1.0
        ):
            raise InputError(
                f"{where}: comparison.tolerance {tolerance!r} must be a fraction above the "
                f"noise floor ({settings.noise_floor:.1%}) and below 1"
            )
        rounds = test.get("rounds")
        if rounds is not None and not (type(rounds) is int and rounds >= 2):
            raise InputError(f"{where}: comparison.rounds {rounds!r} must be a whole number >= 2")
        canary = test.get("canary") is True
        out.append(replay_module().Candidate(m, tolerance, rounds, canary))
    return out


# -- the command -----------------------------------------------------------------------------


def run(
    a_path: Path, b_path: Path, flags: Mapping[str, str | None], fail: bool, fail_stack: bool
) -> int:
    """Compare, print, and return the exit code."""
    a, stored = reference(a_path)
    b = candidate(b_path)
    keys, ordered = results.in_run_order(b.doc)
    own = [k for k in keys if b.own(k)]
    elsewhere = [k for k in keys if not b.own(k)]
    differs = incomparable(a, b, stored, [k for k in own if k in stored.measurements])
    if differs:
        raise InputError(
            f"{a_path} (A) and {b_path} (B) are not comparable: "
            + "; ".join(differs)
            + ". Tokens per joule from different machines, sensors or joule provenances "
            "differ for reasons that are not the code; compare files recorded on the same "
            "hardware with the same sensor"
        )
    notes = [n for n in (a.note, b.note) if n]
    focus = None
    if a.is_baseline:
        # the stored tests B's run compared and learned its prior from; a run that compared
        # none (no baseline then), or a file that does not say: the tests B measured
        focus = [k for k in prior_keys(b, stored.hardware_key) or own if k in stored.measurements]
        latest = _latest(stored, focus)
        if latest is not None:  # A's stack: that of the latest session B is compared with
            a.doc["environment"]["software"] = latest.software
    dropped = _drop_own_session(stored, b, focus) if a.is_baseline else 0
    if dropped:
        notes.append(
            f"A holds B's own session of {dropped} measurement(s) (same date, written by "
            "--tpw-record or --tpw-update): left out, as B's run judged it against the "
            "sessions before it"
        )
    if not ordered and own:
        notes.append(f"{b_path} does not record its run order: tests are judged in name order")
    settings = settings_for(b, flags)
    judge = replay_module().replay(
        stored,
        stored.hardware_key,
        candidates(b, own, settings, keep=flags.get("tolerance") is None),
        settings,
        b.software,
        focus,
        edge_error_s=b.edge_error_s,
    )
    print(f"A (reference): {a_path}\nB (candidate): {b_path}")
    for note in notes:
        print(f"note: {note}")
    for line in table(own, judge, settings.confidence):
        print(line)
    for line in closing_lines(judge, a, b, own, stored, elsewhere):
        print(line)
    loads = [k for k in own if judge.load_change(k) is not None]
    if loads:
        # an incomparable pair is an error, whatever else was found: the comparison is not whole
        print(
            f"error: {len(loads)} measurement(s) of A and B ran under different loads and "
            "were not compared (listed above); measure both at one load",
            file=sys.stderr,
        )
        return 2
    regressed = [j for j in judge.judgements.values() if j.verdict.value == "REGRESSED"]
    stack = judge.run_wide is not None and judge.run_wide.finding == "STACK_REGRESSION"
    return 1 if (fail and regressed) or (fail_stack and stack) else 0


def prior_keys(b: Side, hardware_key: str) -> list[str] | None:
    """The stored measurements B's run compared (and learned its prior from), as its
    results file records them; None when it does not."""
    recorded = results.mapping(b.doc, "prior_keys").get(hardware_key)
    if not isinstance(recorded, list) or not all(isinstance(k, str) for k in recorded):
        return None
    return list(recorded)


def _drop_own_session(stored: BaselineFile, b: Side, keys: Sequence[str] | None) -> int:
    """Leave out stored sessions written by B's own run (same date): a run that recorded
    itself was judged against the sessions before it. Only ``keys`` are read (None: all)."""
    date = results.text(b.environment.get("date"))
    if not date:
        return 0
    dropped = 0
    for key in list(stored.measurements) if keys is None else keys:
        sessions = stored.measurements[key]
        kept = [s for s in sessions if s.date != date]
        if len(kept) != len(sessions):
            dropped += 1
            stored.measurements[key] = kept
    return dropped


def table(keys: Sequence[str], judge: Judge, confidence: float) -> list[str]:
    """One row per measurement of B: the ratio that decided (relative to the run-wide
    shift), its interval, the windows on each side, the verdict."""
    header = (
        "measurement",
        "ratio B/A",
        f"{confidence:.0%} interval",
        "change",
        "A windows",
        "B windows",
        "verdict",
    )
    rows = [header]
    for key in keys:
        j = judge.judgements.get(key)
        if j is None:
            continue
        rows.append((key, *_cells(j)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return [
        "  ".join(
            [
                r[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(r[1:-1], widths[1:-1], strict=True)),
                r[-1],
            ]
        ).rstrip()
        for r in rows
    ]


def _cells(j: Judgement) -> tuple[str, str, str, str, str, str]:
    c = j.comparison
    if c is None or j.ratio is None:
        return ("-", "-", "-", "-", "-", j.verdict.value)
    interval = (
        "-" if c.ci_low is None or c.ci_high is None else f"[{c.ci_low:.3f}, {c.ci_high:.3f}]"
    )
    sessions = f"{c.n_baseline} in {c.n_sessions}"
    return (
        f"{j.ratio:.3f}",
        interval,
        f"{j.ratio - 1:+.1%}",
        sessions,
        str(c.n_candidate),
        j.verdict.value,
    )


def closing_lines(
    judge: Judge,
    a: Side,
    b: Side,
    keys: Sequence[str],
    stored: BaselineFile,
    elsewhere: Sequence[str],
) -> list[str]:
    """Under the table: the run-wide finding, what rests on priors, the stack changes, what
    was not compared, the verdict counts."""
    lines: list[str] = []
    run_wide = judge.run_wide
    if run_wide is not None:
        lines.append(run_wide.text)
        lines += [f"  {n}" for n in run_wide.notes]
    note = replay_module().prior_note(judge)
    if note:
        lines.append(f"note: {note}")
    provenance = a.sensor("provenance")
    if provenance is not None and provenance != "measured":
        lines.append(f"note: joules are {provenance} in both files, not measured")
    from pytest_tpw.judging.judge import STACK_KEYS

    changes = baseline.stack_changes(a.software, b.software, STACK_KEYS)
    if changes:
        lines.append("stack changes A -> B: " + "; ".join(changes))
    only_a = sorted(set(stored.measurements) - set(keys))
    only_b = [k for k in keys if not stored.count(k)]
    for side, only in (("A", only_a), ("B", only_b)):
        if only:
            named = ", ".join(only[:LISTED])
            more = f" and {len(only) - LISTED} more" if len(only) > LISTED else ""
            lines.append(f"{len(only)} measurement(s) only in {side}, not compared: {named}{more}")
    for key in keys:
        change = judge.load_change(key)
        if change is not None:
            lines.append(f"{key}: INCOMPARABLE: A and B ran under different loads ({change})")
    if elsewhere:
        lines.append(
            f"{len(elsewhere)} measurement(s) of B taken on other hardware, not compared: "
            + ", ".join(elsewhere)
        )
    counts: dict[str, int] = {}
    for j in judge.judgements.values():
        counts[j.verdict.value] = counts.get(j.verdict.value, 0) + 1
    s = judge.settings
    lines.append(
        "verdicts: "
        + (", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "none")
        + f" (tolerance {s.tolerance:.1%}, noise floor {s.noise_floor:.1%}, confidence "
        f"{s.confidence:.0%}, Benjamini-Hochberg q = {s.fdr:g})"
    )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, help="reference (A): .tpw/KEY.json or a --tpw-json file")
    parser.add_argument("b", type=Path, help="candidate (B): a --tpw-json file or .tpw/KEY.json")
    for field, flag in JUDGING.items():
        if flag is not None:
            row = ROWS[field]
            default = str(row[DEFAULT]).replace("%", "%%")
            parser.add_argument(
                flag, help=f"{row[HELP].split(' (default')[0]} (default: B's run's, else {default})"
            )
    parser.add_argument("--fail", action="store_true", help="exit 1 when a test regressed")
    parser.add_argument(
        "--fail-stack",
        action="store_true",
        help="exit 1 also when every test moved together and the software stack changed "
        "(a run-wide stack regression)",
    )


def main(args: argparse.Namespace) -> int:
    flags = {field: getattr(args, field) for field, flag in JUDGING.items() if flag}
    return run(args.a, args.b, flags, args.fail, args.fail_stack)
