"""Crash-safe files: an interrupted write never leaves half a file, a folder swap never leaves half a folder."""

import os

import pytest

from mathrecipe.files import atomic_write_text, read_jsonl_rows, replace_dir


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["summary.json"]


def test_atomic_write_text_and_bytes(tmp_path):
    atomic_write_text(tmp_path / "a" / "x.txt", "é")
    atomic_write_text(tmp_path / "a" / "y.bin", b"\x00\x01")
    assert (tmp_path / "a" / "x.txt").read_text(encoding="utf-8") == "é"
    assert (tmp_path / "a" / "y.bin").read_bytes() == b"\x00\x01"


def test_replace_dir_swaps_whole_folders(tmp_path):
    final, tmp = tmp_path / "final", tmp_path / "final.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    replace_dir(tmp, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_read_jsonl_rows_skips_a_line_cut_by_a_kill(tmp_path, caplog):
    p = tmp_path / "epochs.jsonl"
    p.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl_rows(p) == [{"epoch": 1}, {"epoch": 2}]
    assert "line 3: cut off" in caplog.text
    assert read_jsonl_rows(tmp_path / "missing.jsonl") == []
