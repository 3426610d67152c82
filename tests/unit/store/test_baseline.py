"""The baseline store: ``DIR/<hardware-key>.json`` round trip, formatting, merge, load errors."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw.config.settings import BaselineMode
from pytest_tpw.store import baseline
from pytest_tpw.store.baseline import BaselineError, BaselineFile, StoredSession
from pytest_tpw.store.files import OutputWriteError

KEY = "sim-x1"
HARDWARE = {"models": ["sim"], "provenance": "simulated", "sensor": "sim"}


def session(
    level: float = 6.5,
    n: int = 4,
    date: str = "2025-01-01T00:00:00+00:00",
    driver: str = "550.54",
    commit: str | None = "abc123",
) -> StoredSession:
    """A session of ``n`` windows at about ``level`` tokens per joule (values exact in JSON)."""
    samples = [(24, round(24 / (level + 0.01 * i), 6), 0.012) for i in range(n)]
    return StoredSession(
        date=date,
        commit=commit,
        software={"python": "3.11.7", "driver": driver, "os": "Linux"},
        sensor="sim",
        provenance="simulated",
        samples=samples,
    )


def sample_file() -> BaselineFile:
    return BaselineFile(
        KEY,
        dict(HARDWARE),
        {
            "t.py::test_b": [session(6.5), session(6.4, date="2025-01-02T00:00:00+00:00")],
            "t.py::test_a::gen": [session(3.0, n=3, commit=None)],
        },
    )


def raw(**changes: Any) -> dict[str, Any]:
    """A valid baseline document as plain JSON data, with top-level fields replaced."""
    doc: dict[str, Any] = json.loads(baseline.dumps(sample_file()))
    doc.update(changes)
    return doc


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# -- round trip and formatting -----------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    original = sample_file()
    path = baseline.path_for(tmp_path / ".tpw", KEY)
    assert path == tmp_path / ".tpw" / "sim-x1.json"
    baseline.write(path, original)
    loaded = baseline.load(path, KEY)
    assert loaded == original
    assert loaded is not None
    assert loaded.sessions("t.py::test_b")[1].date == "2025-01-02T00:00:00+00:00"
    assert loaded.sessions("t.py::test_a::gen")[0].commit is None
    assert loaded.sessions("nowhere") == []
    assert loaded.sessions("t.py::test_b")[0].values() == pytest.approx(
        [t / j for t, j, _ in original.sessions("t.py::test_b")[0].samples]
    )


def test_missing_file_loads_as_none(tmp_path: Path) -> None:
    assert baseline.load(tmp_path / "nope" / "sim-x1.json", KEY) is None


def test_same_content_gives_identical_bytes() -> None:
    a = sample_file()
    # the same content, built in another order: measurements and software keys reversed
    b = BaselineFile(KEY, dict(reversed(list(HARDWARE.items()))), {})
    for key in reversed(list(a.measurements)):
        b.measurements[key] = [
            StoredSession(
                s.date,
                s.commit,
                dict(reversed(list(s.software.items()))),
                s.sensor,
                s.provenance,
                list(s.samples),
            )
            for s in a.measurements[key]
        ]
    assert list(b.measurements) != list(a.measurements)
    assert baseline.dumps(a) == baseline.dumps(b)
    assert baseline.dumps(a) == baseline.dumps(sample_file())


def test_text_is_valid_json_with_sorted_keys() -> None:
    text = baseline.dumps(sample_file())
    assert text.endswith("}\n")
    unsorted: list[list[str]] = []

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if keys != sorted(keys):
            unsorted.append(keys)
        return dict(pairs)

    doc = json.loads(text, object_pairs_hook=check)
    assert unsorted == []
    assert doc["format"] == baseline.FORMAT
    assert doc["schema"] == baseline.SCHEMA_VERSION
    assert doc["hardware_key"] == KEY


def test_one_session_per_line() -> None:
    bf = sample_file()
    lines = baseline.dumps(bf).splitlines()
    session_lines = [line for line in lines if '"samples"' in line]
    assert len(session_lines) == 3
    for line in session_lines:
        one = json.loads(line.strip().rstrip(","))  # each session parses on its own
        assert set(one) == {"commit", "date", "provenance", "sensor", "software", "samples"}
    # in the file's order: measurements sorted, sessions oldest first
    dates = [json.loads(line.strip().rstrip(","))["date"] for line in session_lines]
    assert dates == [
        "2025-01-01T00:00:00+00:00",
        "2025-01-01T00:00:00+00:00",
        "2025-01-02T00:00:00+00:00",
    ]
    assert lines.index(next(x for x in lines if "test_a::gen" in x)) < lines.index(
        next(x for x in lines if "test_b" in x)
    )


def test_samples_are_rounded_to_nine_digits() -> None:
    bf = BaselineFile(
        KEY, {}, {"k": [StoredSession("d", None, {}, "sim", "simulated", [(3, 1 / 3, 2 / 3)])]}
    )
    doc = json.loads(baseline.dumps(bf))
    assert doc["measurements"]["k"]["sessions"][0]["samples"] == [[3, 0.333333333, 0.666666667]]


# -- merge ---------------------------------------------------------------------------------------


def test_merge_keeps_the_last_history_sessions() -> None:
    bf = BaselineFile(KEY)
    dates = [f"2025-01-0{i}T00:00:00+00:00" for i in range(1, 6)]
    for date in dates:
        assert bf.merge({"k": session(date=date)}, history=3, mode="extend") == ["k"]
    assert [s.date for s in bf.sessions("k")] == dates[-3:]
    # a smaller history later trims the older ones too
    bf.merge({"k": session(date="2025-01-09T00:00:00+00:00")}, history=2, mode="extend")
    assert [s.date for s in bf.sessions("k")] == [dates[-1], "2025-01-09T00:00:00+00:00"]


def test_merge_only_missing_leaves_existing_measurements_alone() -> None:
    bf = sample_file()
    before = [*bf.sessions("t.py::test_b")]
    written = bf.merge(
        {"t.py::test_b": session(9.0), "t.py::test_new": session(7.0)},
        history=10,
        mode="missing",
    )
    assert written == ["t.py::test_new"]
    assert bf.sessions("t.py::test_b") == before
    assert len(bf.sessions("t.py::test_new")) == 1


def test_merge_without_only_missing_appends_everywhere() -> None:
    bf = sample_file()
    written = bf.merge(
        {"t.py::test_b": session(9.0), "t.py::test_new": session(7.0)},
        history=10,
        mode="extend",
    )
    assert written == ["t.py::test_b", "t.py::test_new"]
    assert len(bf.sessions("t.py::test_b")) == 3
    assert bf.sessions("t.py::test_b")[-1] == session(9.0)


# -- load errors ---------------------------------------------------------------------------------


def test_invalid_json_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / ".tpw" / "sim-x1.json"
    path.parent.mkdir()
    path.write_text(baseline.dumps(sample_file())[:-40], encoding="utf-8")  # cut short
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert str(path) in msg
    assert "corrupt" in msg
    assert f"git checkout -- {path}" in msg
    assert "--tpw-update" in msg


@pytest.mark.parametrize(
    "data",
    [
        {"measurements": {}, "schema": 1, "hardware_key": KEY},
        [1, 2, 3],
        "text",
        {"format": "something else"},
    ],
    ids=["no-format", "list", "string", "other-format"],
)
def test_foreign_json_is_not_a_baseline(tmp_path: Path, data: object) -> None:
    path = write_json(tmp_path / "sim-x1.json", data)
    with pytest.raises(BaselineError, match=r"not a pytest-tpw baseline") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)
    assert "move it out" in str(info.value)


def test_newer_schema_says_upgrade(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sim-x1.json", raw(schema=baseline.SCHEMA_VERSION + 1))
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert str(path) in msg
    assert "newer" in msg
    assert "upgrade" in msg
    assert "pip install -U pytest-tpw" in msg


@pytest.mark.parametrize("schema", [0, "1", None, 1.0])
def test_invalid_schema_version(tmp_path: Path, schema: object) -> None:
    path = write_json(tmp_path / "sim-x1.json", raw(schema=schema))
    with pytest.raises(BaselineError, match=r"schema") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


def test_hardware_key_must_match_the_file_name(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sim-x1.json", raw(hardware_key="nvidia-h100-x1"))
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert str(path) in msg
    assert "'nvidia-h100-x1'" in msg and "'sim-x1'" in msg
    assert "rename" in msg


GOOD_SESSION: dict[str, Any] = {
    "commit": None,
    "date": "d",
    "provenance": "simulated",
    "sensor": "sim",
    "software": {},
    "samples": [[10, 2.0, 0.01], [10, 2.1, 0.01]],
}

MALFORMED_SESSIONS = {
    "no-samples": {k: v for k, v in GOOD_SESSION.items() if k != "samples"},
    "no-date": {k: v for k, v in GOOD_SESSION.items() if k != "date"},
    "sample-of-two": {**GOOD_SESSION, "samples": [[10, 2.0]]},
    "unknown-field": {**GOOD_SESSION, "extra": 1},
    "session-is-a-list": [1, 2, 3],
}

BAD_SAMPLES = {
    "zero-joules": [[10, 0.0, 0.01]],
    "negative-joules": [[10, -1.0, 0.01]],
    "zero-tokens": [[0, 2.0, 0.01]],
    "negative-tokens": [[-5, 2.0, 0.01]],
    "empty": [],
}


def measurements_doc(session_data: object) -> dict[str, Any]:
    return raw(measurements={"t.py::test_x": {"sessions": [GOOD_SESSION, session_data]}})


@pytest.mark.parametrize("case", list(MALFORMED_SESSIONS))
def test_malformed_session_names_file_and_measurement(tmp_path: Path, case: str) -> None:
    path = write_json(tmp_path / "sim-x1.json", measurements_doc(MALFORMED_SESSIONS[case]))
    with pytest.raises(BaselineError, match=r"malformed session") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)
    assert "t.py::test_x" in str(info.value)


@pytest.mark.parametrize("case", list(BAD_SAMPLES))
def test_non_positive_samples_name_file_and_measurement(tmp_path: Path, case: str) -> None:
    path = write_json(
        tmp_path / "sim-x1.json", measurements_doc({**GOOD_SESSION, "samples": BAD_SAMPLES[case]})
    )
    with pytest.raises(BaselineError, match=r"positive tokens and joules") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)
    assert "t.py::test_x" in str(info.value)


def test_non_finite_joules_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    doc = json.dumps(measurements_doc({**GOOD_SESSION, "samples": [[10, 1.0, 0.01]]}))
    path.write_text(doc.replace("[10, 1.0, 0.01]", "[10, Infinity, 0.01]"), encoding="utf-8")
    with pytest.raises(BaselineError, match=r"sample 1: joules must be a number, not Infinity"):
        baseline.load(path, KEY)


#: What counts as telling the user what to do about a damaged file.
FIX = re.compile(r"git checkout|--tpw-update|delete|remove|restore", re.I)


@pytest.mark.parametrize(
    "bad",
    [MALFORMED_SESSIONS["no-samples"], {**GOOD_SESSION, "samples": BAD_SAMPLES["zero-joules"]}],
    ids=["malformed", "non-positive"],
)
def test_damaged_session_errors_say_what_to_do(tmp_path: Path, bad: object) -> None:
    path = write_json(tmp_path / "sim-x1.json", measurements_doc(bad))
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert str(path) in msg
    assert FIX.search(msg), msg
    assert "<file>" not in msg  # no unfilled placeholder


@pytest.mark.parametrize(
    "doc",
    [
        raw(measurements=[]),
        raw(measurements={"k": {"no": "sessions"}}),
        raw(measurements={"k": []}),
    ],
    ids=["measurements-list", "no-sessions", "entry-list"],
)
def test_malformed_measurements(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = write_json(tmp_path / "sim-x1.json", doc)
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("hardware", [[1, 2], "sim"], ids=["list", "string"])
def test_malformed_hardware_field_is_a_baseline_error(tmp_path: Path, hardware: object) -> None:
    path = write_json(tmp_path / "sim-x1.json", raw(hardware=hardware))
    with pytest.raises(BaselineError, match=r"hardware") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


# -- flush: merge into the file as it is on disk at write time --------------------------------


def test_flush_creates_the_file_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "perf" / "sim-x1.json"
    written = baseline.flush(path, KEY, HARDWARE, {"k": session()}, history=10, mode="extend")
    assert written == ["k"]
    loaded = baseline.load(path, KEY)
    assert loaded is not None
    assert loaded.hardware == HARDWARE
    assert loaded.sessions("k") == [session()]


def test_flush_rereads_the_file_at_write_time(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    seen_at_start = baseline.load(path, KEY)
    assert seen_at_start is not None and "t.py::test_other" not in seen_at_start.measurements
    # someone else (another job, a merged branch) writes a measurement meanwhile
    theirs = baseline.load(path, KEY)
    assert theirs is not None
    theirs.merge({"t.py::test_other": session(5.0)}, history=10, mode="extend")
    baseline.write(path, theirs)
    written = baseline.flush(
        path, KEY, HARDWARE, {"t.py::test_b": session(8.0)}, history=10, mode="extend"
    )
    assert written == ["t.py::test_b"]
    after = baseline.load(path, KEY)
    assert after is not None
    assert after.sessions("t.py::test_other") == [session(5.0)]
    assert len(after.sessions("t.py::test_b")) == 3
    assert after.sessions("t.py::test_a::gen") == sample_file().sessions("t.py::test_a::gen")


def test_flush_only_missing_writes_nothing_when_all_exist(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    before = path.read_bytes()
    written = baseline.flush(
        path, KEY, HARDWARE, {"t.py::test_b": session(9.0)}, history=10, mode="missing"
    )
    assert written == []
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        b'{"format": "pytest-tpw baseline", "sche',
        b'{"format": "pytest-tpw baseline", "schema": 99}',
        b'{"some": "other tool"}',
    ],
    ids=["truncated", "newer-schema", "foreign"],
)
def test_flush_refuses_to_overwrite_a_bad_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sim-x1.json"
    path.write_bytes(content)
    with pytest.raises(BaselineError, match=re.escape(str(path))):
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, history=10, mode="extend")
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["sim-x1.json"]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    for i in range(3):
        baseline.flush(path, KEY, HARDWARE, {f"k{i}": session()}, history=10, mode="extend")
    assert sorted(os.listdir(tmp_path)) == ["sim-x1.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    before = path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputWriteError, match=r"disk full"):
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, history=10, mode="extend")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["sim-x1.json"]


# -- other hardware, stack changes ----------------------------------------------------------------


def test_other_hardware_lists_other_keys(tmp_path: Path) -> None:
    directory = tmp_path / ".tpw"
    assert baseline.other_hardware(directory, KEY) == []  # no folder yet
    directory.mkdir()
    assert baseline.other_hardware(directory, KEY) == []
    for name in ("sim-x1.json", "nvidia-h100-x1.json", "amd-mi300x-x8.json", "notes.txt"):
        (directory / name).write_text("{}", encoding="utf-8")
    assert baseline.other_hardware(directory, KEY) == ["amd-mi300x-x8", "nvidia-h100-x1"]
    assert baseline.other_hardware(directory, "nvidia-h100-x1") == ["amd-mi300x-x8", "sim-x1"]


def test_stack_changes() -> None:
    old = {"driver": "550.54", "torch": "2.3.0", "os": "Ubuntu 22.04", "gone": "1"}
    new = {"driver": "560.28", "torch": "2.3.0", "os": "Ubuntu 24.04", "added": "2"}
    assert baseline.stack_changes(old, new) == [
        "added None -> 2",
        "driver 550.54 -> 560.28",
        "gone 1 -> None",
        "os Ubuntu 22.04 -> Ubuntu 24.04",
    ]
    # with keys: only those, in that order
    assert baseline.stack_changes(old, new, ["os", "torch", "driver"]) == [
        "os Ubuntu 22.04 -> Ubuntu 24.04",
        "driver 550.54 -> 560.28",
    ]
    assert baseline.stack_changes(old, dict(old)) == []


def test_pooled_concatenates_sessions() -> None:
    sessions = sample_file().sessions("t.py::test_b")
    assert baseline.pooled(sessions) == [*sessions[0].values(), *sessions[1].values()]
    assert len(baseline.pooled(sessions)) == 8


# -- update modes: replace (--tpw-update), extend (--tpw-record), missing -----------------------


def test_replace_makes_this_session_the_whole_history(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    new = session(9.0, date="2025-03-01T00:00:00+00:00")
    written = baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": new}, 10, "replace")
    assert written == ["t.py::test_b"]
    after = baseline.load(path, KEY)
    assert after is not None
    assert after.sessions("t.py::test_b") == [new]  # the old level is gone: accepted
    assert after.sessions("t.py::test_a::gen") == sample_file().sessions("t.py::test_a::gen")


def test_extend_appends_and_keeps_the_last_history(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    new = session(9.0, date="2025-03-01T00:00:00+00:00")
    assert baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": new}, 2, "extend") == [
        "t.py::test_b"
    ]
    after = baseline.load(path, KEY)
    assert after is not None
    assert after.sessions("t.py::test_b") == [sample_file().sessions("t.py::test_b")[1], new]


def superseded(path: Path, key: str) -> list[StoredSession]:
    kept = baseline.load(baseline.superseded_path(path), KEY)
    return [] if kept is None else kept.sessions(key)


def test_an_accept_keeps_the_sessions_it_replaced_where_no_verdict_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    old = sample_file().sessions("t.py::test_b")
    first = session(9.0, date="2025-03-01T00:00:00+00:00")
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": first}, 10, "replace")
    assert superseded(path, "t.py::test_b") == old
    assert superseded(path, "t.py::test_a::gen") == []  # not written: nothing superseded
    second = session(9.5, date="2025-04-01T00:00:00+00:00")
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": second}, 10, "replace")
    assert superseded(path, "t.py::test_b") == [*old, first]
    # the verdicts' file: only the accepted level; the folder's hardware list is unchanged
    after = baseline.load(path, KEY)
    assert after is not None and after.sessions("t.py::test_b") == [second]
    assert baseline.other_hardware(tmp_path, "other-x1") == [KEY]
    assert baseline.is_superseded(baseline.superseded_path(path)) and not baseline.is_superseded(
        path
    )


@pytest.mark.parametrize("canonical", [True, False], ids=["as written", "reformatted"])
def test_sessions_rotated_out_of_the_history_are_kept_too(tmp_path: Path, canonical: bool) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    if not canonical:  # parsed in full rather than appended to as bytes
        path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8"))), "utf-8")
    old = sample_file().sessions("t.py::test_b")
    new = session(9.0, date="2025-03-01T00:00:00+00:00")
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": new}, 2, "extend")
    assert superseded(path, "t.py::test_b") == old[:1]
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": session(9.1)}, 2, "extend")
    assert superseded(path, "t.py::test_b") == old


def test_superseded_sessions_are_capped_per_measurement(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    dates = [f"2025-01-{d:02d}T00:00:00+00:00" for d in range(1, baseline.SUPERSEDED_KEEP + 4)]
    for date in dates:
        baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": session(date=date)}, 1, "replace")
    kept = [s.date for s in superseded(path, "t.py::test_b")]
    assert kept == dates[-baseline.SUPERSEDED_KEEP - 1 : -1]


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_superseded_keeps_what_it_is_told(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "sim-x1.json"
    dates = [f"2025-02-{d:02d}T00:00:00+00:00" for d in range(1, 7)]
    for date in dates:
        baseline.flush(
            path, KEY, HARDWARE, {"t.py::test_b": session(date=date)}, 1, "replace", superseded=keep
        )
    if keep == 0:
        assert not baseline.superseded_path(path).exists()
    else:
        kept = [s.date for s in superseded(path, "t.py::test_b")]
        assert kept == dates[-1 - keep : -1]


def test_a_damaged_entry_is_replaced_by_an_accept_and_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    good = baseline.dumps(BaselineFile(KEY, dict(HARDWARE), {"t.py::test_x": [_OLD]}))
    path.write_text(good.replace("[10, 2.0, 0.01]", "[1.9, 2.0, 0.01]"), encoding="utf-8")
    new = session(9.0, date="2025-03-01T00:00:00+00:00")
    assert baseline.flush(path, KEY, HARDWARE, {"t.py::test_x": new}, 10, "replace") == [
        "t.py::test_x"
    ]
    loaded = baseline.load(path, KEY)
    assert loaded is not None and loaded.sessions("t.py::test_x") == [new]
    assert not baseline.superseded_path(path).exists()


def test_missing_writes_only_measurements_without_sessions(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    updates = {"t.py::test_b": session(9.0), "t.py::test_new": session(7.0)}
    assert baseline.flush(path, KEY, HARDWARE, updates, 10, "missing") == ["t.py::test_new"]
    after = baseline.load(path, KEY)
    assert after is not None
    assert after.sessions("t.py::test_b") == sample_file().sessions("t.py::test_b")
    assert after.sessions("t.py::test_new") == [session(7.0)]


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'replace', 'extend', 'missing'"):
        sample_file().merge({"k": session()}, 10, mode="overwrite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'overwrite'"):
        baseline.flush(tmp_path / "x.json", KEY, HARDWARE, {"k": session()}, 10, "overwrite")  # type: ignore[arg-type]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("history", [1, 2, 3, 10])
@pytest.mark.parametrize("mode", ["extend", "replace", "missing"])
def test_merging_unparsed_entries_gives_the_same_bytes(
    tmp_path: Path, history: int, mode: BaselineMode
) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    updates = {
        "t.py::test_b": session(9.0, date="2025-03-01T00:00:00+00:00"),
        "t.py::test_a::gen": session(1.0, n=2),
        "t.py::test_new": session(2.0),
    }
    lazy = baseline.load(path, KEY, check=False)
    full = baseline.load(path, KEY)
    assert lazy is not None and full is not None
    full.validate()
    assert isinstance(lazy.measurements, baseline.Measurements)
    assert lazy.merge(updates, history, mode=mode) == full.merge(updates, history, mode=mode)
    if mode == "extend":  # appended without parsing the stored sessions
        assert lazy.measurements.raw("t.py::test_b") is not None
    assert baseline.dumps(lazy) == baseline.dumps(full)


def test_untouched_measurements_are_copied_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    text = path.read_text(encoding="utf-8")
    assert ", 0.012]" in text
    # a valid value written by hand in a form the writer would not use
    path.write_text(text.replace(", 0.012]", ", 0.0120]"), encoding="utf-8")
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_new": session()}, 10, "extend")
    after = path.read_text(encoding="utf-8")
    assert after.count(", 0.0120]") == text.count(", 0.012]")  # not re-serialised
    loaded = baseline.load(path, KEY)
    assert loaded is not None and loaded.sessions("t.py::test_new") == [session()]


# -- concurrent writers: two processes, barrier-synchronised ---------------------------------


def _concurrent_writer(path: str, who: int, rounds: int, barrier: Any) -> None:
    for r in range(rounds):
        barrier.wait(timeout=120)
        updates = {
            f"p{who}-r{r:02d}": session(date=f"2025-01-01T00:00:{r:02d}+00:00"),
            "shared": session(level=who + 1.0),
        }
        written = baseline.flush(Path(path), KEY, HARDWARE, updates, 1000, "extend")
        if written != sorted(updates):
            raise SystemExit(f"wrote {written}")


def test_two_processes_flushing_together_both_land(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    rounds = 20
    path = tmp_path / "sim-x1.json"
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_concurrent_writer, args=(str(path), who, rounds, barrier))
        for who in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    after = baseline.load(path, KEY)
    assert after is not None
    expected = {f"p{who}-r{r:02d}" for who in (0, 1) for r in range(rounds)}
    assert set(after.measurements) == expected | {"shared"}  # nobody's measurement lost
    assert len(after.sessions("shared")) == 2 * rounds  # nor any session of a shared one
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_flush_holds_the_lock_while_cleaning_reading_and_replacing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    seen: list[str] = []

    def held() -> bool:
        fd = os.open(baseline.lock_path(path), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock, if it got it
        return False

    real_clean, real_load, real_replace = baseline.remove_stale_temps, baseline.load, os.replace

    def clean(p: Path) -> list[str]:
        seen.append(f"clean {held()}")
        return real_clean(p)

    def load(*args: Any, **kwargs: Any) -> BaselineFile | None:
        seen.append(f"load {held()}")
        return real_load(*args, **kwargs)

    def replace(src: Any, dst: Any) -> None:
        seen.append(f"replace {held()}")
        real_replace(src, dst)

    monkeypatch.setattr(baseline, "remove_stale_temps", clean)
    monkeypatch.setattr(baseline, "load", load)
    monkeypatch.setattr(os, "replace", replace)
    baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    monkeypatch.undo()
    assert seen == ["clean True", "load True", "replace True"]
    assert not held()


def test_a_flush_waiting_for_the_lock_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    before = path.read_bytes()
    fd = os.open(baseline.lock_path(path), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer, stuck
    try:
        with pytest.raises(BaselineError, match=r"another run has been writing") as info:
            baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend", lock_timeout_s=0.05)
    finally:
        os.close(fd)
    assert str(baseline.lock_path(path)) in str(info.value)
    assert path.read_bytes() == before


def test_writes_lock_the_folder_and_leave_no_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "perf" / "sim-x1.json"
    baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    assert baseline.lock_path(path) == tmp_path / "perf"
    assert os.listdir(tmp_path / "perf") == ["sim-x1.json"]  # nothing else to commit


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    ours = [".sim-x1.json.k1ll3d_0.tmp", ".sim-x1.json.abcdefgh.tmp"]
    not_ours = [
        ".sim-x2.json.abcdefgh.tmp",
        ".sim-x1.json.abc.tmp",
        "notes.tmp",
        "sim-x1.json.abcdefgh.tmp",
        ".sim-x1.json.abcdefgh.tmp.keep",
    ]
    long_ago = time.time() - 3600
    for name in ours + not_ours:
        (tmp_path / name).write_text("half a file", encoding="utf-8")
        os.utime(tmp_path / name, (long_ago, long_ago))
    fresh = ".sim-x1.json.wr1t1ng_.tmp"  # a writer that does not lock, writing right now
    (tmp_path / fresh).write_text("being written", encoding="utf-8")
    (tmp_path / ".sim-x1.json.dirdirdi.tmp").mkdir()  # not a file: kept
    baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    left = sorted(os.listdir(tmp_path))
    assert left == sorted([*not_ours, fresh, ".sim-x1.json.dirdirdi.tmp", "sim-x1.json"])


def test_a_real_killed_writer_leaves_a_temp_that_the_next_write_removes(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    # a writer killed after creating its temp file, before the replace
    code = (
        "import os, sys, pytest_tpw.store.files as f\n"
        "def stop(*a):\n    print('temp written', flush=True); os.kill(os.getpid(), 9)\n"
        "os.replace = stop\n"
        "f.atomic_write_text(__import__('pathlib').Path(sys.argv[1]), 'x' * 1000)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".sim-x1.json.")
    long_ago = time.time() - 3600  # the killed writer's temp is old by the next run
    os.utime(tmp_path / temps[0], (long_ago, long_ago))
    baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_a_symlinked_baseline_is_written_through_to_its_target(tmp_path: Path) -> None:
    real = tmp_path / "shared" / "sim-x1.json"
    real.parent.mkdir()
    baseline.write(real, sample_file())
    link = tmp_path / ".tpw" / "sim-x1.json"
    link.parent.mkdir()
    link.symlink_to(real)
    baseline.flush(link, KEY, HARDWARE, {"t.py::test_new": session()}, 10, "extend")
    assert link.is_symlink() and link.resolve() == real  # still a link to the same file
    loaded = baseline.load(real, KEY)
    assert loaded is not None and loaded.sessions("t.py::test_new") == [session()]
    assert baseline.lock_path(link) == real.parent  # the lock is on the folder written
    assert sorted(os.listdir(link.parent)) == ["sim-x1.json"]


def test_flush_into_an_unwritable_place_is_an_output_write_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the folder should be", encoding="utf-8")
    path = tmp_path / "blocker" / "sim-x1.json"
    with pytest.raises(OutputWriteError) as info:
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    assert "blocker" in str(info.value) and "in the way" in str(info.value)


def test_flush_on_a_full_disk_is_an_output_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    before = path.read_bytes()

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputWriteError, match=r"the disk is full") as info:
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    monkeypatch.undo()
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["sim-x1.json"]


# -- hostile files ----------------------------------------------------------------------------

_OLD = StoredSession(
    "2025-01-01T00:00:00+00:00", "abc", {"python": "3.11.7"}, "sim", "simulated", [(10, 2.0, 0.01)]
)
_NEW = StoredSession(
    "2025-01-02T00:00:00+00:00",
    "def",
    {"python": "3.11.8"},
    "sim",
    "simulated",
    [(10, 2.5, 0.01), (12, 2.5, 0.01)],
)


def hostile_text(layout: str, old: str, new: str) -> str:
    """A baseline whose measurement 't.py::test_x' has ``old`` replaced by ``new`` once."""
    good = BaselineFile(KEY, dict(HARDWARE), {"t.py::test_x": [_OLD, _NEW], "t.py::test_y": [_OLD]})
    text = baseline.dumps(good)
    if layout == "reformatted":  # by hand or by a tool: parsed in full, not by line
        text = json.dumps(json.loads(text))
    assert text.count(old) == 1, (old, text)
    return text.replace(old, new)


SAMPLE = "[10, 2.5, 0.01]"
HOSTILE: dict[str, tuple[str, str, str]] = {
    "float-tokens": (SAMPLE, "[1.9, 2.5, 0.01]", "tokens must be a whole number, not 1.9"),
    "integral-float-tokens": (SAMPLE, "[10.0, 2.5, 0.01]", "tokens must be a whole number"),
    "bool-tokens": (SAMPLE, "[true, 2.5, 0.01]", "tokens must be a whole number, not True"),
    "5000-digit-tokens": (
        SAMPLE,
        "[" + "9" * 5000 + ", 2.5, 0.01]",
        "not <an integer of 5000 digits>",
    ),
    "tokens-over-the-cap": (SAMPLE, "[1000000000000000000, 2.5, 0.01]", "out of range"),
    "zero-tokens": (SAMPLE, "[0, 2.5, 0.01]", "tokens 0 out of range"),
    "1e400-joules": (SAMPLE, "[10, 1e400, 0.01]", "joules inf is not a finite number"),
    "subnormal-joules": (SAMPLE, "[10, 1e-320, 0.01]", "joules 1e-320 is not"),
    "tiny-joules": (SAMPLE, "[10, 1e-13, 0.01]", "joules 1e-13 is not"),
    "huge-int-joules": (
        SAMPLE,
        "[10, " + "1" * 400 + ", 0.01]",
        "joules must be a number, not <an integer of 400 digits>",
    ),
    "string-joules": (SAMPLE, '[10, "2.5", 0.01]', "joules must be a number, not '2.5'"),
    "null-joules": (SAMPLE, "[10, null, 0.01]", "joules must be a number, not None"),
    "nan-seconds": (SAMPLE, "[10, 2.5, NaN]", "seconds must be a number, not NaN"),
    "infinite-seconds": (SAMPLE, "[10, 2.5, Infinity]", "seconds must be a number, not Infinity"),
    "negative-seconds": (SAMPLE, "[10, 2.5, -0.01]", "seconds -0.01 is not"),
    "zero-seconds": (SAMPLE, "[10, 2.5, 0.0]", "seconds 0.0 is not"),
    "bool-seconds": (SAMPLE, "[10, 2.5, true]", "seconds must be a number, not True"),
    "short-sample": (SAMPLE, "[10, 2.5]", "must be [tokens, joules, seconds]"),
    "long-sample": (SAMPLE, "[10, 2.5, 0.01, 1]", "must be [tokens, joules, seconds]"),
    "sample-object": (SAMPLE, '{"tokens": 10}', "must be [tokens, joules, seconds]"),
    "duplicate-session-key": (
        '"date": "2025-01-02T00:00:00+00:00"',
        '"date": "x", "date": "2025-01-02T00:00:00+00:00"',
        "duplicate key 'date'",
    ),
    "number-date": (
        '"date": "2025-01-02T00:00:00+00:00"',
        '"date": 20250102',
        "date must be a string",
    ),
    "number-commit": ('"commit": "def"', '"commit": 5', "commit must be a string or null"),
    "list-software": ('{"python": "3.11.8"}', '[["3.11.8"]]', "software must be an object"),
    "nested-software-value": (
        '{"python": "3.11.8"}',
        '{"python": {"a": [1]}}',
        "software 'python' must be a string, number or null",
    ),
    "duplicate-software-key": (
        '{"python": "3.11.8"}',
        '{"python": "3.11.8", "python": "3"}',
        "duplicate key 'python'",
    ),
    "deep-nesting": ('{"python": "3.11.8"}', "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "list-load": ('"commit": "def"', '"commit": "def", "load": [4]', "load must be an object"),
    "nested-load-value": (
        '"commit": "def"',
        '"commit": "def", "load": {"concurrency": [4]}',
        "load 'concurrency' must be a string, number or null",
    ),
}


@pytest.mark.parametrize("layout", ["canonical", "reformatted"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_values_are_refused_naming_file_measurement_and_field(
    tmp_path: Path, case: str, layout: str
) -> None:
    old, new, expected = HOSTILE[case]
    path = tmp_path / "sim-x1.json"
    path.write_text(hostile_text(layout, old, new), encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert expected in msg, msg
    assert str(path) in msg
    if not (case == "deep-nesting" and layout == "reformatted"):  # the parser stops early
        assert "'t.py::test_x'" in msg, msg
    assert FIX.search(msg), msg
    assert len(msg) < 1000  # a 5000-digit value is not pasted into the message
    # a write refuses it too, and leaves the file as it was
    with pytest.raises(BaselineError):
        baseline.flush(path, KEY, HARDWARE, {"t.py::test_z": session()}, 10, "extend")
    assert path.read_bytes() == before


def test_a_large_file_checks_each_measurement_when_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sim-x1.json"
    path.write_text(hostile_text("canonical", SAMPLE, "[1.9, 2.5, 0.01]"), encoding="utf-8")
    monkeypatch.setattr(baseline, "CHECK_ALL_BELOW", 100)  # as if this file were huge
    loaded = baseline.load(path, KEY)
    assert loaded is not None
    assert set(loaded.measurements) == {"t.py::test_x", "t.py::test_y"}
    assert loaded.sessions("t.py::test_y") == [_OLD]  # the sound entry is usable
    with pytest.raises(BaselineError, match=r"'t.py::test_x', session 2: sample 1: tokens"):
        loaded.sessions("t.py::test_x")
    with pytest.raises(BaselineError, match=r"tokens must be a whole number"):
        baseline.load(path, KEY, check=True)
    with pytest.raises(BaselineError, match=r"tokens must be a whole number"):
        loaded.validate()


@pytest.mark.parametrize("layout", ["canonical", "reformatted"])
def test_a_duplicate_measurement_key_is_refused(tmp_path: Path, layout: str) -> None:
    text = hostile_text(layout, '"t.py::test_y"', '"t.py::test_x"')
    path = tmp_path / "sim-x1.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BaselineError, match=r"duplicate key 't.py::test_x'") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"schema": 1', '"schema": true', "schema"),
        ('"schema": 1', '"schema": NaN', "schema"),
        (
            '"hardware_key": "sim-x1"',
            '"hardware_key": "sim-x1", "hardware_key": "sim-x1"',
            "duplicate key 'hardware_key'",
        ),
        (
            '"provenance": "simulated", "sensor": "sim"}',
            '"provenance": "simulated", "sensor": 1e400}',
            "hardware",
        ),
    ],
    ids=["bool-schema", "nan-schema", "duplicate-top-level-key", "infinite-hardware-value"],
)
def test_hostile_header_values(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = baseline.dumps(sample_file())
    assert text.count(old) == 1
    path = tmp_path / "sim-x1.json"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(BaselineError, match=expected) as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


def test_non_utf8_bytes_name_the_file_and_the_line(tmp_path: Path) -> None:
    text = baseline.dumps(sample_file()).encode()
    assert text.count(b"abc123") == 2
    path = tmp_path / "sim-x1.json"
    path.write_bytes(text.replace(b"abc123", b"abc\xff23", 1))
    line = text[: text.index(b"abc123")].count(b"\n") + 1
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert str(path) in msg
    assert f"not UTF-8 text (byte 0xff at line {line}," in msg
    assert FIX.search(msg)


def load_in_thread(path: Path, **kwargs: Any) -> BaseException | None:
    """``baseline.load`` in a thread: a hang fails the test instead of the suite."""
    import threading

    out: list[BaseException | None] = []

    def run() -> None:
        try:
            baseline.load(path, KEY, **kwargs)
            out.append(None)
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert out, "load() hung"
    return out[0]


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    os.mkfifo(path)
    error = load_in_thread(path)
    assert isinstance(error, BaselineError)
    assert str(path) in str(error) and "a FIFO" in str(error) and "not opened" in str(error)
    with pytest.raises(BaselineError, match=r"FIFO"):
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend")
    assert path.is_fifo()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_link_to_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    path.symlink_to("/dev/zero")
    error = load_in_thread(path)
    assert isinstance(error, BaselineError)
    assert "a character device" in str(error) and str(path) in str(error)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    path.mkdir()
    with pytest.raises(BaselineError, match=r"is a directory, not a regular file"):
        baseline.load(path, KEY)


def test_a_file_over_the_size_cap_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    size = path.stat().st_size
    before = path.read_bytes()

    def no_read(*args: object) -> bytes:
        raise AssertionError("read a file over the cap")

    monkeypatch.setattr(os, "read", no_read)
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY, max_bytes=size - 1)
    assert f"{size} bytes, more than the limit of {size - 1}" in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(BaselineError, match=r"more than the limit"):
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, 10, "extend", max_bytes=size - 1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert baseline.load(path, KEY, max_bytes=size) == sample_file()  # at the cap: fine


def test_other_hardware_ignores_hidden_files(tmp_path: Path) -> None:
    for name in ("sim-x1.json", "a-x1.json", ".b-x1.json", ".sim-x1.json.lock"):
        (tmp_path / name).write_text("{}", encoding="utf-8")
    assert baseline.other_hardware(tmp_path, KEY) == ["a-x1"]


def test_extend_checks_the_sessions_it_keeps_not_those_it_drops(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    good = baseline.dumps(BaselineFile(KEY, dict(HARDWARE), {"t.py::test_x": [_OLD, _NEW]}))
    assert good.count("[10, 2.0, 0.01]") == 1
    text = good.replace("[10, 2.0, 0.01]", "[1.9, 2.0, 0.01]")  # damage the oldest session
    path.write_text(text, encoding="utf-8")
    new = session(9.0, date="2025-03-01T00:00:00+00:00")
    with pytest.raises(BaselineError, match=r"'t.py::test_x', session 1: sample 1: tokens"):
        baseline.flush(path, KEY, HARDWARE, {"t.py::test_x": new}, 3, "extend")
    assert path.read_text(encoding="utf-8") == text
    # with history 2 the damaged oldest session rotates out: the kept one is sound
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_x": new}, 2, "extend")
    loaded = baseline.load(path, KEY)
    assert loaded is not None and loaded.sessions("t.py::test_x") == [_NEW, new]


def test_extend_of_an_entry_edited_across_lines_parses_it(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    text = baseline.dumps(BaselineFile(KEY, dict(HARDWARE), {"t.py::test_x": [_OLD, _NEW]}))
    # a hand edit that splits one session over two lines: still valid JSON, same layout
    edited = text.replace(
        '"sensor": "sim", "software": {"python": "3.11.7"}',
        '"sensor": "sim",\n "software": {"python": "3.11.7"}',
    )
    assert edited != text
    path.write_text(edited, encoding="utf-8")
    new = session(9.0, date="2025-03-01T00:00:00+00:00")
    baseline.flush(path, KEY, HARDWARE, {"t.py::test_x": new}, 2, "extend")
    loaded = baseline.load(path, KEY)
    assert loaded is not None and loaded.sessions("t.py::test_x") == [_NEW, new]


@pytest.mark.parametrize("canonical", [True, False], ids=["as written", "reformatted"])
def test_a_file_named_by_hand_is_loaded_with_the_key_it_holds(
    tmp_path: Path, canonical: bool
) -> None:
    path = tmp_path / "anything.json"
    baseline.write(path, sample_file())
    if not canonical:
        path.write_text(json.dumps(json.loads(path.read_text())), encoding="utf-8")
    loaded = baseline.load(path, None)
    assert loaded is not None and loaded.hardware_key == KEY
    assert sorted(loaded.measurements) == sorted(sample_file().measurements)
    with pytest.raises(BaselineError, match="but its name says 'other-x1'"):
        baseline.load(path, "other-x1")


@pytest.mark.parametrize("canonical", [True, False], ids=["as written", "reformatted"])
def test_the_newest_session_and_the_count_without_reading_the_rest(
    tmp_path: Path, canonical: bool
) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    if not canonical:
        path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8"))), "utf-8")
    loaded = baseline.load(path, KEY, check=False)
    assert loaded is not None
    expected = sample_file()
    for key in expected.measurements:
        assert loaded.count(key) == len(expected.sessions(key))
        assert loaded.newest(key) == expected.sessions(key)[-1]
    assert loaded.newest("t.py::nothing") is None and loaded.count("t.py::nothing") == 0
    if canonical:  # the older sessions were never parsed
        measurements = loaded.measurements
        assert isinstance(measurements, baseline.Measurements)
        assert measurements.raw("t.py::test_b") is not None


def test_a_damaged_newest_line_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    good = baseline.dumps(BaselineFile(KEY, dict(HARDWARE), {"t.py::test_x": [_OLD, _NEW]}))
    head, tail = good.rsplit('"sensor": "sim"', 1)  # the newest session's
    damaged = head + '"sensor": 5' + tail
    path.write_text(damaged, encoding="utf-8")
    loaded = baseline.load(path, KEY, check=False)
    assert loaded is not None
    with pytest.raises(BaselineError, match=r"'t.py::test_x'.*sensor must be a string"):
        loaded.newest("t.py::test_x")


def test_a_load_measurement_keeps_its_load_shape_and_others_write_none(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    shape = {"concurrency": 8, "prompts": "abc", "n_prompts": 2, "max_tokens": 16,
             "endpoint": "chat"}  # fmt: skip
    loaded_session = replace(session(), load=shape)
    baseline.flush(
        path, KEY, HARDWARE, {"t.py::test_l": loaded_session, "t.py::test_p": session()}, 10,
        "extend",
    )  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert text.count('"load"') == 1  # a measurement without a load writes no field
    loaded = baseline.load(path, KEY, check=True)
    assert loaded is not None
    assert loaded.sessions("t.py::test_l")[0].load == shape
    assert loaded.sessions("t.py::test_p")[0].load is None


# -- the devices' settings in stack changes ----------------------------------------------------


def test_a_power_limit_or_clocks_change_is_a_stack_change_whatever_keys_are_named() -> None:
    old = {"driver": "550.54", "power_limit_w": "700", "clocks_policy": "default"}
    new = {"driver": "550.54", "power_limit_w": "500", "clocks_policy": "application clocks"}
    assert baseline.stack_changes(old, new, ["driver"]) == [
        "power_limit_w 700 -> 500",
        "clocks_policy default -> application clocks",
    ]
    # a session recorded before the settings were (or by a sensor that cannot read them)
    # says nothing about them: not a change
    assert baseline.stack_changes({"driver": "550.54"}, new, ["driver"]) == []
    assert baseline.stack_changes(old, {"driver": "550.54"}) == []


# -- a baseline file under an older form of its key ---------------------------------------------

OLD = "amd-epyc-cpu-estimate-x1"
NEW = "amd-epyc-16c-cpu-estimate-x1"


def test_a_file_renamed_after_the_new_key_is_read_and_rewritten_with_it(tmp_path: Path) -> None:
    path = tmp_path / f"{NEW}.json"  # git mv OLD.json NEW.json: the old key is still inside
    baseline.write(path, replace(sample_file(), hardware_key=OLD))
    with pytest.raises(BaselineError, match="rename it"):
        baseline.load(path, NEW)  # not told that OLD is NEW's older form: refused
    loaded = baseline.load(path, NEW, legacy=[OLD])
    assert loaded is not None and loaded.hardware_key == NEW
    assert loaded.sessions("t.py::test_b") == sample_file().sessions("t.py::test_b")
    baseline.flush(
        path,
        NEW,
        HARDWARE,
        {"k": session()},
        10,
        "extend",
        legacy=[(OLD, tmp_path / f"{OLD}.json")],
    )
    assert json.loads(path.read_text(encoding="utf-8"))["hardware_key"] == NEW
    assert baseline.load(path, NEW) is not None


@pytest.mark.parametrize("mode", ["extend", "replace", "missing"])
def test_the_first_write_under_a_new_key_carries_the_legacy_file_over(
    tmp_path: Path, mode: BaselineMode
) -> None:
    old = tmp_path / f"{OLD}.json"
    baseline.write(old, replace(sample_file(), hardware_key=OLD))
    before = old.read_bytes()
    new = tmp_path / f"{NEW}.json"
    updates = {"t.py::test_b": session(8.0, date="2025-02-01T00:00:00+00:00")}
    baseline.flush(new, NEW, HARDWARE, updates, 10, mode, legacy=[(OLD, old)])
    carried = baseline.load(new, NEW)
    assert carried is not None and carried.hardware_key == NEW
    # nothing lost: the measurement this session did not touch came over whole
    assert carried.sessions("t.py::test_a::gen") == sample_file().sessions("t.py::test_a::gen")
    expected = {
        "extend": [*sample_file().sessions("t.py::test_b"), updates["t.py::test_b"]],
        "replace": [updates["t.py::test_b"]],
        "missing": sample_file().sessions("t.py::test_b"),  # written even so: carried over
    }[mode]
    assert carried.sessions("t.py::test_b") == expected
    assert old.read_bytes() == before  # left for other runners that shared the old key
    # once the new file exists, the legacy one is never read again
    old.write_text("not json", encoding="utf-8")
    baseline.flush(new, NEW, HARDWARE, {"k": session()}, 10, "extend", legacy=[(OLD, old)])
    after = baseline.load(new, NEW)
    assert after is not None and after.sessions("k") == [session()]
