"""A finished session's files: baselines, ``--tpw-json``, exports, the Markdown report, the
job summary. Only the controller (or a plain session) writes; each write fails alone, with
a note naming its path and cause, and the report still prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_tpw.errors import TpwError
from pytest_tpw.host import fingerprint
from pytest_tpw.judging.judge import HardwareShare
from pytest_tpw.store import recording
from pytest_tpw.store.files import append_text, atomic_write_text, dump_json

if TYPE_CHECKING:
    from pytest_tpw.run.session import TpwSession

#: Where GitHub Actions reads a job summary from.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def write_outputs(
    session: TpwSession, interrupted: bool, environment_hook: Callable[[], None]
) -> bool:
    """Write every output the settings ask for; False if any write failed."""
    from pytest_tpw.present import document, exports, mdreport

    s = session.settings
    ok = True
    environment_hook()
    if s.writes_baselines:
        for share in session.shares.values():
            if share.measurements or share.key == session.hardware_key:
                path = session.baseline_path_of(share.key)
                write = partial(_write_baselines, session, share, path, interrupted)
                ok &= _output(session, "baselines", path, write)
    doc = document.run_document(
        session.shares,
        session.hardware_key,
        session.environment(),
        s,
        session.idle_watts,
    )
    for key, found in session.implausible.items():
        entry = doc["measurements"].get(key)
        if entry is not None:
            entry["implausible"] = list(found)
    texts: list[tuple[str, Path, str]] = []
    if s.json is not None:
        texts.append(("--tpw-json", s.json, dump_json(doc)))
    texts += [(f"--tpw-export {fmt}", to, exports.render(doc, fmt)) for fmt, to in s.export]
    if s.report is not None:
        texts.append(("--tpw-report", s.report, mdreport.render(doc)))
    for what, target, text in texts:
        path = session.invocation_dir / target  # absolute paths stay as they are
        ok &= _output(session, what, path, partial(atomic_write_text, path, text))
    summary = os.environ.get(STEP_SUMMARY_ENV)
    if summary and doc["measurements"]:
        text = mdreport.render(doc, mdreport.STEP_SUMMARY_LIMIT)
        write = partial(append_text, Path(summary), text)
        ok &= _output(session, STEP_SUMMARY_ENV, Path(summary), write)
    return ok


def _output(session: TpwSession, what: str, path: Path, write: Callable[[], None]) -> bool:
    try:
        write()
    except (OSError, TpwError) as exc:
        session.notes.append(f"{what} NOT written to {path}: {exc}")
        return False
    return True


def _write_baselines(
    session: TpwSession, share: HardwareShare, path: Path, interrupted: bool
) -> None:
    """One hardware key's finished measurements of tests that passed, as this session."""
    mode = session.settings.baseline_mode
    assert mode is not None
    old = session.legacy_keys.get(share.key)
    legacy = [] if old is None else [(old, session.baseline_path_of(old))]
    note = recording.record(
        path,
        share.key,
        share.hardware,
        [
            (
                key,
                m.sensor,
                m.provenance,
                [(s.tokens, s.joules, s.seconds) for s in m.samples],
                None if m.load is None else m.load.shape,
            )
            for key, (m, _) in share.measurements.items()
            if m.finished
            and m.nodeid not in session.failed_tests
            and not (mode == "extend" and share.judge.incomparable(m))
        ],
        date=session.started.replace(microsecond=0).isoformat(),
        commit=fingerprint.git_commit(session.rootdir),
        software={**share.judge.software, **session.extra_environment},
        history=session.settings.history,
        superseded=session.settings.superseded,
        mode=mode,
        interrupted=interrupted,
        legacy=legacy,
    )
    session.notes.append(note)
