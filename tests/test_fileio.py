"""Atomic replacement: the old file survives a failed write, no temporary file is left behind."""

from __future__ import annotations

import os

import pytest

from accelyolo.core.fileio import (
    copy_atomically,
    replace_atomically,
    temporary_sibling,
    write_bytes_atomically,
    write_text_atomically,
)


def test_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the folder is created
    assert write_text_atomically(path, "one") == path
    write_text_atomically(path, "two")
    assert path.read_text() == "two"
    write_bytes_atomically(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    copy_atomically(path, tmp_path / "c.txt")
    assert (tmp_path / "c.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "c.txt", "sub"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def half_write_then_fail(tmp: str) -> None:
        with open(tmp, "w") as file:
            file.write("partial")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        replace_atomically(path, half_write_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_umask_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        path = replace_atomically(tmp_path / "a", lambda tmp: os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o640


def test_temporary_sibling_removes_a_leftover_folder(tmp_path):
    with temporary_sibling(tmp_path / "dataset") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".dataset.")
        (tmp / "images").mkdir(parents=True)
        (tmp / "images" / "x.png").write_bytes(b"x")
    assert not list(tmp_path.iterdir())
