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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_files_get_the_mode_open_would_give_them(tmp_path, umask, mode):
    # 22.7: written through mkstemp, reports were 0600 while their neighbours were 0644
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
        (tmp_path / "neighbour.md").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == mode
    assert (tmp_path / "neighbour.md").stat().st_mode & 0o777 == mode


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    import errno

    from mathrecipe.errors import environment_message

    def full(*a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as f.write raises it: no file name

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_text(tmp_path / "summary.json", "x")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "summary.json")
    assert environment_message(e.value) == (f"{tmp_path / 'summary.json'}: no space left on device; free some space "
                                            "(or write somewhere else), then rerun the same command")
    assert os.listdir(tmp_path) == []


def test_environment_failures_of_libraries_are_recognised_and_bugs_are_not():
    import pickle

    from mathrecipe.errors import environment_message

    torch_full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert "the disk is full" in environment_message(torch_full)
    rust_full = Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                          'left on device" })')
    assert environment_message(rust_full).startswith("writing failed: no space left on device")
    assert "safetensors" in environment_message(pickle.UnpicklingError("Weights only load failed."))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = PermissionError(13, "Permission denied", "/ro/x.json")
    assert environment_message(wrapped).startswith("/ro/x.json: permission denied")
    assert environment_message(KeyError("bug")) is None and environment_message(FileNotFoundError(2, "x")) is None
