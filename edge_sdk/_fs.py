"""Crash-safe file writes: the one atomic write and the fsync helpers every writer uses."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or creation in directory ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Flush every file and directory under ``root`` to disk."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` all at once and durably.

    Writes a temp file beside ``path``, fsyncs it, renames it over ``path`` with
    ``os.replace`` and fsyncs the directory. A crash leaves either the old file
    or the new one, never a mix, and once this returns the new one survives a
    power cut; a concurrent reader never sees half a file. The temp file is
    removed on failure. This is the one atomic write of the code base: the
    bundle manifest, signatures, keys, model slots, transfer offers, OTA
    history, the Sparkplug bdSeq and TensorRT timing caches all go through it.

    Args:
        path: File to write; its directory must exist.
        data: Its new content.
        mode: Permission bits of the new file (default: ``mkstemp``'s 0o600).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
