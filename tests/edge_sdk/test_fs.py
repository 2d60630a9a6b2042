"""The one atomic write (``edge_sdk._fs.write_atomic``): all or nothing, durable, no litter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_sdk import _fs
from edge_sdk._fs import write_atomic


def test_replaces_the_file_and_fsyncs_its_directory(tmp_path: Path, monkeypatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(_fs, "fsync_dir", lambda p: synced.append(Path(p)))
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert synced == [tmp_path]  # the rename itself is made durable
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_mode_is_applied_and_defaults_to_owner_only(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", b"x")
    write_atomic(tmp_path / "b", b"x", mode=0o644)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "pointer"
    target.write_bytes(b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_fs.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["pointer"]
