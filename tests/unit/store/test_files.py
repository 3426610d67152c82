"""Atomic writes, appends, typed write errors and stable JSON."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path

import pytest

from pytest_tpw.errors import TpwError
from pytest_tpw.store import files
from pytest_tpw.store.files import OutputWriteError, append_text, atomic_write_text, dump_json


def test_atomic_write_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.json"
    atomic_write_text(target, "hello\n")
    assert target.read_text(encoding="utf-8") == "hello\n"
    assert os.listdir(target.parent) == ["c.json"]  # no temp file left


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old old old old\n", encoding="utf-8")
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"  # shorter text: nothing of the old
    assert os.listdir(tmp_path) == ["f.json"]


def test_atomic_write_unicode(tmp_path: Path) -> None:
    target = tmp_path / "u.txt"
    atomic_write_text(target, "joules \u2192 tokens \u00b5")
    assert target.read_bytes() == "joules \u2192 tokens \u00b5".encode()


def test_failed_replace_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    target.write_text("old\n", encoding="utf-8")
    seen: list[str] = []

    def boom(src: str, dst: object) -> None:
        seen.append(src)
        assert Path(src).read_text(encoding="utf-8") == "new\n"  # the temp was complete
        raise OSError("disk on fire")

    monkeypatch.setattr("pytest_tpw.store.files.os.replace", boom)
    with pytest.raises(OutputWriteError, match=r"disk on fire") as info:
        atomic_write_text(target, "new\n")
    assert isinstance(info.value, OSError)  # callers catching OSError keep working
    assert str(target) in str(info.value)
    monkeypatch.undo()
    assert seen and Path(seen[0]).parent == tmp_path  # the temp sat beside the target
    assert target.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["f.json"]


def test_interrupted_write_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    target.write_text("old\n", encoding="utf-8")

    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C while writing

    monkeypatch.setattr("pytest_tpw.store.files.os.fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["f.json"]


def test_atomic_write_gives_ordinary_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.json", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644  # 0o666 & ~0o022


def test_dump_json_sorted_indented_trailing_newline() -> None:
    text = dump_json({"b": 1, "a": {"d": [1, 2], "c": None}})
    assert (
        text == '{\n  "a": {\n    "c": null,\n    "d": [\n      1,\n      2\n    ]\n  },\n'
        '  "b": 1\n}\n'
    )
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert json.loads(text) == {"b": 1, "a": {"d": [1, 2], "c": None}}


def test_dump_json_is_deterministic() -> None:
    assert dump_json({"x": 1, "y": 2}) == dump_json({"y": 2, "x": 1})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_dump_json_refuses_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        dump_json({"tokens_per_joule": bad})
    with pytest.raises(ValueError):
        dump_json([1.0, {"deep": [bad]}])


# -- typed write errors: the path, the cause, no temp file --------------------------------------


def _raise(code: int) -> object:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    ("code", "cause", "fix"),
    [
        (errno.ENOSPC, "the disk is full", "free some space"),
        (errno.EROFS, "read-only", "writable folder"),
        (errno.EACCES, "permission denied", "writable for this user"),
        (errno.EDQUOT, "quota", "free some space"),
    ],
)
def test_failed_replace_is_a_typed_error_naming_path_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, cause: str, fix: str
) -> None:
    target = tmp_path / "report.json"
    target.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(os, "replace", _raise(code))
    with pytest.raises(OutputWriteError) as info:
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    msg = str(info.value)
    assert str(target) in msg and cause in msg and fix in msg, msg
    assert errno.errorcode[code] in msg
    assert isinstance(info.value, TpwError) and isinstance(info.value, OSError)
    assert info.value.errno == code
    assert info.value.filename == str(target)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["report.json"]


def test_no_permission_to_create_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as root chmod does not stop a write: simulate the folder refusing new files
    monkeypatch.setattr(tempfile, "mkstemp", _raise(errno.EACCES))
    with pytest.raises(OutputWriteError, match=r"permission denied") as info:
        atomic_write_text(tmp_path / "out.json", "x")
    assert str(tmp_path / "out.json") in str(info.value)
    assert os.listdir(tmp_path) == []


def test_a_directory_where_the_file_should_be(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.mkdir()
    (target / "keep").write_text("k", encoding="utf-8")
    with pytest.raises(OutputWriteError, match=r"a directory is in the way") as info:
        atomic_write_text(target, "x")
    assert str(target) in str(info.value)
    assert "remove that directory" in str(info.value)
    assert target.is_dir() and (target / "keep").read_text(encoding="utf-8") == "k"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]  # no temp left beside it


def test_a_file_where_a_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("I am a file", encoding="utf-8")
    target = tmp_path / "blocker" / "sub" / "out.json"
    with pytest.raises(OutputWriteError) as info:
        atomic_write_text(target, "x")
    assert str(target) in str(info.value)
    assert "in the way" in str(info.value)
    assert (tmp_path / "blocker").read_text(encoding="utf-8") == "I am a file"


def test_a_symlink_is_written_through_to_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real" / "data.json"
    real.parent.mkdir()
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink()  # still a link...
    assert real.read_text(encoding="utf-8") == "new"  # ...and the target has the new text
    assert os.listdir(real.parent) == ["data.json"]


def test_an_interrupting_chunk_source_leaves_no_temp(tmp_path: Path) -> None:
    def chunks() -> object:
        yield b"first"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        files.atomic_write_chunks(tmp_path / "f.json", chunks())  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_atomic_write_chunks_concatenates_bytes_str_and_views(tmp_path: Path) -> None:
    files.atomic_write_chunks(tmp_path / "f", [b"ab", "\u00b5", memoryview(b"xyz")[1:]])
    assert (tmp_path / "f").read_bytes() == b"ab\xc2\xb5yz"


def test_append_text_creates_then_appends(tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    append_text(summary, "# one\n")
    append_text(summary, "two \u2192\n")
    assert summary.read_text(encoding="utf-8") == "# one\ntwo \u2192\n"


def test_append_text_errors_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "summary"
    directory.mkdir()
    with pytest.raises(OutputWriteError, match=r"cannot append to .*a directory") as info:
        append_text(directory, "x")
    assert str(directory) in str(info.value)
    summary = tmp_path / "summary.md"
    summary.write_text("kept\n", encoding="utf-8")
    real_open = open

    def full(path: object, mode: str = "r", **kwargs: object) -> object:
        if "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, mode, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OutputWriteError, match=r"the disk is full") as info:
        append_text(summary, "lost")
    monkeypatch.undo()
    assert str(summary) in str(info.value)
    assert summary.read_text(encoding="utf-8") == "kept\n"
