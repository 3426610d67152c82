"""The baseline store: ``DIR/<hardware-key>.json`` round trip, formatting, merge, load errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_tpw import baseline
from pytest_tpw.baseline import BaselineError, BaselineFile, StoredSession

KEY = "sim-x1"
HARDWARE = {"models": ["sim"], "provenance": "simulated", "sensor": "sim"}


def session(level: float = 6.5, n: int = 4, date: str = "2025-01-01T00:00:00+00:00",
            driver: str = "550.54", commit: str | None = "abc123") -> StoredSession:
    """A session of ``n`` windows at about ``level`` tokens per joule (values exact in JSON)."""
    samples = [(24, round(24 / (level + 0.01 * i), 6), 0.012) for i in range(n)]
    return StoredSession(date=date, commit=commit,
                         software={"python": "3.11.7", "driver": driver, "os": "Linux"},
                         sensor="sim", provenance="simulated", samples=samples)


def sample_file() -> BaselineFile:
    return BaselineFile(KEY, dict(HARDWARE), {
        "t.py::test_b": [session(6.5), session(6.4, date="2025-01-02T00:00:00+00:00")],
        "t.py::test_a::gen": [session(3.0, n=3, commit=None)],
    })


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
        [t / j for t, j, _ in original.sessions("t.py::test_b")[0].samples])


def test_missing_file_loads_as_none(tmp_path: Path) -> None:
    assert baseline.load(tmp_path / "nope" / "sim-x1.json", KEY) is None


def test_same_content_gives_identical_bytes() -> None:
    a = sample_file()
    # the same content, built in another order: measurements and software keys reversed
    b = BaselineFile(KEY, dict(reversed(list(HARDWARE.items()))), {})
    for key in reversed(list(a.measurements)):
        b.measurements[key] = [
            StoredSession(s.date, s.commit, dict(reversed(list(s.software.items()))), s.sensor,
                          s.provenance, list(s.samples))
            for s in a.measurements[key]]
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
    assert dates == ["2025-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00",
                     "2025-01-02T00:00:00+00:00"]
    assert lines.index(next(x for x in lines if "test_a::gen" in x)) < \
        lines.index(next(x for x in lines if "test_b" in x))


def test_samples_are_rounded_to_nine_digits() -> None:
    bf = BaselineFile(KEY, {}, {"k": [StoredSession("d", None, {}, "sim", "simulated",
                                                    [(3, 1 / 3, 2 / 3)])]})
    doc = json.loads(baseline.dumps(bf))
    assert doc["measurements"]["k"]["sessions"][0]["samples"] == [[3, 0.333333333,
                                                                   0.666666667]]


# -- merge ---------------------------------------------------------------------------------------


def test_merge_keeps_the_last_history_sessions() -> None:
    bf = BaselineFile(KEY)
    dates = [f"2025-01-0{i}T00:00:00+00:00" for i in range(1, 6)]
    for date in dates:
        assert bf.merge({"k": session(date=date)}, history=3, only_missing=False) == ["k"]
    assert [s.date for s in bf.sessions("k")] == dates[-3:]
    # a smaller history later trims the older ones too
    bf.merge({"k": session(date="2025-01-09T00:00:00+00:00")}, history=2, only_missing=False)
    assert [s.date for s in bf.sessions("k")] == [dates[-1], "2025-01-09T00:00:00+00:00"]


def test_merge_only_missing_leaves_existing_measurements_alone() -> None:
    bf = sample_file()
    before = [*bf.sessions("t.py::test_b")]
    written = bf.merge({"t.py::test_b": session(9.0), "t.py::test_new": session(7.0)},
                       history=10, only_missing=True)
    assert written == ["t.py::test_new"]
    assert bf.sessions("t.py::test_b") == before
    assert len(bf.sessions("t.py::test_new")) == 1


def test_merge_without_only_missing_appends_everywhere() -> None:
    bf = sample_file()
    written = bf.merge({"t.py::test_b": session(9.0), "t.py::test_new": session(7.0)},
                       history=10, only_missing=False)
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


@pytest.mark.parametrize("data", [{"measurements": {}, "schema": 1, "hardware_key": KEY},
                                  [1, 2, 3], "text", {"format": "something else"}],
                         ids=["no-format", "list", "string", "other-format"])
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
    "commit": None, "date": "d", "provenance": "simulated", "sensor": "sim", "software": {},
    "samples": [[10, 2.0, 0.01], [10, 2.1, 0.01]]}

MALFORMED_SESSIONS = {
    "no-samples": {k: v for k, v in GOOD_SESSION.items() if k != "samples"},
    "no-date": {k: v for k, v in GOOD_SESSION.items() if k != "date"},
    "sample-of-two": {**GOOD_SESSION, "samples": [[10, 2.0]]},
    "sample-not-numbers": {**GOOD_SESSION, "samples": [["ten", 2.0, 0.01]]},
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
    path = write_json(tmp_path / "sim-x1.json",
                      measurements_doc({**GOOD_SESSION, "samples": BAD_SAMPLES[case]}))
    with pytest.raises(BaselineError, match=r"positive tokens and joules") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)
    assert "t.py::test_x" in str(info.value)


def test_non_finite_joules_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    doc = json.dumps(measurements_doc({**GOOD_SESSION, "samples": [[10, 1.0, 0.01]]}))
    path.write_text(doc.replace("[10, 1.0, 0.01]", "[10, Infinity, 0.01]"), encoding="utf-8")
    with pytest.raises(BaselineError, match=r"positive tokens and joules"):
        baseline.load(path, KEY)


#: What counts as telling the user what to do about a damaged file.
FIX = re.compile(r"git checkout|--tpw-update|delete|remove|restore", re.I)



@pytest.mark.parametrize("bad", [MALFORMED_SESSIONS["no-samples"],
                                 {**GOOD_SESSION, "samples": BAD_SAMPLES["zero-joules"]}],
                         ids=["malformed", "non-positive"])
def test_damaged_session_errors_say_what_to_do(tmp_path: Path, bad: object) -> None:
    path = write_json(tmp_path / "sim-x1.json", measurements_doc(bad))
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    msg = str(info.value)
    assert str(path) in msg
    assert FIX.search(msg), msg
    assert "<file>" not in msg  # no unfilled placeholder


@pytest.mark.parametrize("doc", [raw(measurements=[]),
                                 raw(measurements={"k": {"no": "sessions"}}),
                                 raw(measurements={"k": []})],
                         ids=["measurements-list", "no-sessions", "entry-list"])
def test_malformed_measurements(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = write_json(tmp_path / "sim-x1.json", doc)
    with pytest.raises(BaselineError) as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("hardware", [[1, 2], "sim"], ids=["list", "string"])
def test_malformed_hardware_field_is_a_baseline_error(tmp_path: Path,
                                                      hardware: object) -> None:
    path = write_json(tmp_path / "sim-x1.json", raw(hardware=hardware))
    with pytest.raises(BaselineError, match=r"hardware") as info:
        baseline.load(path, KEY)
    assert str(path) in str(info.value)


# -- flush: merge into the file as it is on disk at write time --------------------------------


def test_flush_creates_the_file_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "perf" / "sim-x1.json"
    written = baseline.flush(path, KEY, HARDWARE, {"k": session()}, history=10,
                             only_missing=False)
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
    theirs.merge({"t.py::test_other": session(5.0)}, history=10, only_missing=False)
    baseline.write(path, theirs)
    written = baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": session(8.0)}, history=10,
                             only_missing=False)
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
    written = baseline.flush(path, KEY, HARDWARE, {"t.py::test_b": session(9.0)}, history=10,
                             only_missing=True)
    assert written == []
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b'{"format": "pytest-tpw baseline", "sche',
                                     b'{"format": "pytest-tpw baseline", "schema": 99}',
                                     b'{"some": "other tool"}'],
                         ids=["truncated", "newer-schema", "foreign"])
def test_flush_refuses_to_overwrite_a_bad_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sim-x1.json"
    path.write_bytes(content)
    with pytest.raises(BaselineError, match=re.escape(str(path))):
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, history=10, only_missing=False)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["sim-x1.json"]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sim-x1.json"
    for i in range(3):
        baseline.flush(path, KEY, HARDWARE, {f"k{i}": session()}, history=10,
                       only_missing=False)
    assert os.listdir(tmp_path) == ["sim-x1.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sim-x1.json"
    baseline.write(path, sample_file())
    before = path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match=r"disk full"):
        baseline.flush(path, KEY, HARDWARE, {"k": session()}, history=10, only_missing=False)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["sim-x1.json"]


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
        "added None -> 2", "driver 550.54 -> 560.28", "gone 1 -> None",
        "os Ubuntu 22.04 -> Ubuntu 24.04"]
    # with keys: only those, in that order
    assert baseline.stack_changes(old, new, ["os", "torch", "driver"]) == [
        "os Ubuntu 22.04 -> Ubuntu 24.04", "driver 550.54 -> 560.28"]
    assert baseline.stack_changes(old, dict(old)) == []


def test_pooled_concatenates_sessions() -> None:
    sessions = sample_file().sessions("t.py::test_b")
    assert baseline.pooled(sessions) == [*sessions[0].values(), *sessions[1].values()]
    assert len(baseline.pooled(sessions)) == 8
