"""Atomic writes and stable JSON."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from pytest_tpw.files import atomic_write_text, dump_json


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


def test_failed_replace_keeps_old_file_and_no_temp(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    target.write_text("old\n", encoding="utf-8")
    seen: list[str] = []

    def boom(src: str, dst: object) -> None:
        seen.append(src)
        assert Path(src).read_text(encoding="utf-8") == "new\n"  # the temp was complete
        raise OSError("disk on fire")

    monkeypatch.setattr("pytest_tpw.files.os.replace", boom)
    with pytest.raises(OSError, match=r"disk on fire"):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert seen and Path(seen[0]).parent == tmp_path  # the temp sat beside the target
    assert target.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["f.json"]


def test_interrupted_write_keeps_old_file_and_no_temp(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    target.write_text("old\n", encoding="utf-8")

    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C while writing

    monkeypatch.setattr("pytest_tpw.files.os.fsync", interrupt)
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
    assert text == '{\n  "a": {\n    "c": null,\n    "d": [\n      1,\n      2\n    ]\n  },\n' \
                   '  "b": 1\n}\n'
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
