"""Resumable chunked download of an over-the-air bundle.

The fleet announces a packed bundle with an :class:`Offer`: size, sha256 of
the whole archive, the sha256 of each fixed-size chunk, the exact
``manifest.json`` text and its signature document. The node fetches chunks
in any order, over as many connections and restarts as it takes, into a
:class:`Download`:

* chunk ``i`` is written at offset ``i * chunk_size`` of a preallocated part
  file and made durable (fsync) *before* it is recorded as received; a kill
  between the two only means the chunk is fetched again;
* the record is a byte map (one byte per chunk, ``1`` = received), updated
  one byte at a time, so it cannot be torn;
* a restarted process re-creates the :class:`Download` for the same offer and
  resumes: recorded chunks are re-hashed from the part file, so only missing
  (or damaged) chunks are fetched again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .._fs import fsync_dir, write_atomic
from ..bundle import MAX_MANIFEST_BYTES, file_digest
from ..errors import UpdateError
from ..manifest import parse_manifest

DEFAULT_MAX_BUNDLE_BYTES = 512 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 4 << 20
DEFAULT_CHUNK_SIZE = 256 << 10
_HEX64 = r"^[0-9a-f]{64}$"
Sha256Hex = Annotated[str, StringConstraints(pattern=_HEX64)]

OFFER_NAME = "offer.json"
PART_NAME = "bundle.part"
RECORD_NAME = "chunks.map"
ARCHIVE_NAME = "bundle.tar.gz"
_sync = getattr(os, "fdatasync", os.fsync)  # sizes never change after preallocation


class Offer(BaseModel):
    """A bundle the fleet offers to nodes (the ``offer`` message).

    Validate untrusted input with :meth:`parse`, which raises
    :class:`~edge_sdk.errors.UpdateError` (step ``offer``). The size limit
    defaults to 512 MiB; pass ``context={"max_size": n}`` to
    ``model_validate`` (or ``max_size`` to :meth:`parse`) to change it.

    Attributes:
        deployment: Deployment id, ``[A-Za-z0-9_.-]{1,64}`` starting with a
            letter or digit (it names a staging directory on the node).
        name: Model name (from the manifest).
        version: Model version (from the manifest).
        size: Archive size in bytes.
        sha256: sha256 of the whole archive.
        chunk_size: Bytes per chunk (4 KiB..4 MiB); the last one may be shorter.
        chunks: sha256 of each chunk, ``ceil(size / chunk_size)`` of them.
        manifest: Exact ``manifest.json`` text of the bundle.
        signature: The ``manifest.sig`` document (see :mod:`edge_sdk.signing`).
        force: Install even if not newer than the running version.
        created: Unix time the offer was made.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    deployment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = Field(min_length=1, max_length=256)
    version: str = Field(min_length=1, max_length=256)
    size: int = Field(gt=0)
    sha256: Sha256Hex
    chunk_size: int = Field(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
    chunks: list[Sha256Hex]
    manifest: str = Field(min_length=1, max_length=MAX_MANIFEST_BYTES)
    signature: dict[str, str]
    force: bool = False
    created: float

    @field_validator("size")
    @classmethod
    def _within_limit(cls, v: int, info: ValidationInfo) -> int:
        limit = (info.context or {}).get("max_size", DEFAULT_MAX_BUNDLE_BYTES)
        if v > limit:
            raise ValueError(f"bundle of {v} bytes exceeds the node's limit of {limit} bytes")
        return v

    @model_validator(mode="after")
    def _chunk_count(self) -> Offer:
        expected = math.ceil(self.size / self.chunk_size)
        if len(self.chunks) != expected:
            raise ValueError(
                f"{len(self.chunks)} chunk hashes for {self.size} bytes in chunks of "
                f"{self.chunk_size}; expected {expected}"
            )
        return self

    @property
    def total_chunks(self) -> int:
        """Number of chunks."""
        return len(self.chunks)

    def chunk_length(self, index: int) -> int:
        """Byte length of chunk ``index`` (the last one may be shorter)."""
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_json(self) -> str:
        """Serialise (stable key order)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def parse(
        cls, raw: bytes | str | dict[str, Any], max_size: int = DEFAULT_MAX_BUNDLE_BYTES
    ) -> Offer:
        """Validate an offer received from the fleet.

        Args:
            raw: JSON text/bytes, or an already decoded object.
            max_size: Largest bundle the node accepts, in bytes.

        Raises:
            UpdateError: (step ``offer``) not JSON, or a field is invalid
                (the field is named).
        """
        data: Any = raw
        if isinstance(raw, bytes | str):
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UpdateError("offer", f"offer is not valid JSON ({exc})") from None
        try:
            return cls.model_validate(data, context={"max_size": max_size})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise UpdateError("offer", f"field {where}: {first['msg']}{more}") from None

    @classmethod
    def build(
        cls,
        archive_path: str | os.PathLike[str],
        deployment: str,
        signature_doc: dict[str, str],
        manifest_text: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        force: bool = False,
        max_size: int = DEFAULT_MAX_BUNDLE_BYTES,
    ) -> Offer:
        """Describe a packed bundle for the fleet to publish.

        Args:
            archive_path: The packed bundle (``.tar.gz``).
            deployment: Deployment id.
            signature_doc: The bundle's ``manifest.sig`` document.
            manifest_text: Exact text of the bundle's ``manifest.json``
                (name and version are read from it).
            chunk_size: Bytes per chunk.
            force: Ask nodes to install even if not newer.
            max_size: Largest archive allowed.

        Raises:
            ManifestError: ``manifest_text`` is not a valid manifest.
            pydantic.ValidationError: An argument is out of range.
        """
        manifest = parse_manifest(manifest_text)
        whole = hashlib.sha256()
        chunks: list[str] = []
        size = 0
        for chunk in iter_chunks(archive_path, chunk_size):
            whole.update(chunk)
            chunks.append(hashlib.sha256(chunk).hexdigest())
            size += len(chunk)
        return cls.model_validate(
            {
                "deployment": deployment,
                "name": manifest.model.name,
                "version": manifest.model.version,
                "size": size,
                "sha256": whole.hexdigest(),
                "chunk_size": chunk_size,
                "chunks": chunks,
                "manifest": manifest_text,
                "signature": dict(signature_doc),
                "force": force,
                "created": time.time(),
            },
            context={"max_size": max_size},
        )


def iter_chunks(archive_path: str | os.PathLike[str], chunk_size: int) -> Iterator[bytes]:
    """Yield the archive in consecutive ``chunk_size`` pieces (the last may be shorter)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    with open(archive_path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def read_chunk(archive_path: str | os.PathLike[str], index: int, chunk_size: int) -> bytes:
    """Read chunk ``index`` of an archive (what the fleet sends for a request).

    Raises:
        UpdateError: (step ``download``) ``index`` is outside the archive.
    """
    size = os.path.getsize(archive_path)
    total = math.ceil(size / chunk_size) if chunk_size > 0 else 0
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < total:
        raise UpdateError("download", f"chunk index {index!r} out of range 0..{total - 1}")
    with open(archive_path, "rb") as fh:
        fh.seek(index * chunk_size)
        return fh.read(chunk_size)


class Download:
    """The node's side of one offer: chunks received so far, persisted.

    Thread-safe (one lock); one process per directory.

    Args:
        directory: Staging directory of this deployment (created if missing).
            It holds ``offer.json``, the part file and the chunk record. The
            same offer (same deployment id, archive sha256 and chunking) in
            the same directory resumes; any other offer starts over.
        offer: The validated offer.
        max_size: Largest bundle accepted, in bytes.

    Raises:
        UpdateError: (step ``offer``) the offer exceeds ``max_size``;
            (step ``download``) no disk space for the part file.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        offer: Offer,
        max_size: int = DEFAULT_MAX_BUNDLE_BYTES,
    ) -> None:
        if offer.size > max_size:
            raise UpdateError(
                "offer", f"bundle of {offer.size} bytes exceeds the node's limit of {max_size}"
            )
        self.directory = Path(directory)
        self.offer = offer
        self._lock = threading.Lock()
        self._offer_path = self.directory / OFFER_NAME
        self._part = self.directory / PART_NAME
        self._record = self.directory / RECORD_NAME
        self._archive = self.directory / ARCHIVE_NAME
        self._received = bytearray(offer.total_chunks)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.resumed = self._try_resume()
        if not self.resumed:
            self._start_over()

    # -- persistence ----------------------------------------------------------------------
    @property
    def _data(self) -> Path:
        """The file chunks live in: the part file, or the archive once finalized."""
        return self._archive if self._archive.exists() else self._part

    def _same_offer(self) -> bool:
        try:
            stored = json.loads(self._offer_path.read_bytes())
        except (OSError, ValueError):
            return False
        if not isinstance(stored, dict):
            return False
        o = self.offer
        return (
            stored.get("deployment") == o.deployment
            and stored.get("sha256") == o.sha256
            and stored.get("size") == o.size
            and stored.get("chunk_size") == o.chunk_size
            and stored.get("chunks") == o.chunks
        )

    def _try_resume(self) -> bool:
        if not self._same_offer():
            return False
        try:
            record = self._record.read_bytes()
            data_size = self._data.stat().st_size
        except OSError:
            return False
        if len(record) != self.offer.total_chunks or data_size != self.offer.size:
            return False
        # Re-hash what the record claims, so damaged chunks are fetched again.
        with open(self._data, "rb") as fh:
            for i, flag in enumerate(record):
                if flag != 1:
                    continue
                fh.seek(i * self.offer.chunk_size)
                chunk = fh.read(self.offer.chunk_length(i))
                if hashlib.sha256(chunk).hexdigest() == self.offer.chunks[i]:
                    self._received[i] = 1
        if bytes(self._received) != record:
            self._write_record(bytes(self._received))
        return True

    def _write_record(self, content: bytes) -> None:
        with open(self._record, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())

    def _start_over(self) -> None:
        # offer.json goes first and comes back last: a kill in between never
        # resumes with a record that belongs to other data.
        self._offer_path.unlink(missing_ok=True)
        for p in (self._archive, self._part, self._record):
            p.unlink(missing_ok=True)
        self._received = bytearray(self.offer.total_chunks)
        self._preallocate()
        self._write_record(bytes(self._received))
        write_atomic(self._offer_path, self.offer.to_json().encode("utf-8"))
        fsync_dir(self.directory)

    def _preallocate(self) -> None:
        size = self.offer.size
        fd = os.open(self._part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except AttributeError:  # not on this platform
                os.ftruncate(fd, size)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise UpdateError(
                        "download",
                        f"not enough disk space in {self.directory} for {size} bytes",
                    ) from None
                os.ftruncate(fd, size)  # file system without fallocate: sparse file
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._part.unlink(missing_ok=True)
            raise
        os.close(fd)

    # -- queries --------------------------------------------------------------------------
    def missing(self, limit: int | None = None) -> list[int]:
        """Indices of chunks not received yet, ascending (at most ``limit``)."""
        with self._lock:
            out: list[int] = []
            for i, flag in enumerate(self._received):
                if not flag:
                    out.append(i)
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def progress(self) -> tuple[int, int]:
        """``(chunks received, total chunks)``."""
        with self._lock:
            return sum(self._received), len(self._received)

    def complete(self) -> bool:
        """True when every chunk has been received."""
        with self._lock:
            return all(self._received)

    @property
    def archive_path(self) -> Path:
        """Where :meth:`finalize` puts the verified archive."""
        return self._archive

    # -- writing --------------------------------------------------------------------------
    def write_chunk(self, index: int, data: bytes) -> None:
        """Check one chunk against the offer and store it durably.

        A chunk already received is checked and otherwise ignored.

        Raises:
            UpdateError: (step ``download``) bad index, wrong length, or sha256
                mismatch; nothing is written or recorded.
        """
        o = self.offer
        if isinstance(index, bool) or not isinstance(index, int):
            raise UpdateError("download", f"chunk index must be an int, got {index!r}")
        if not 0 <= index < o.total_chunks:
            raise UpdateError(
                "download", f"chunk index {index} out of range 0..{o.total_chunks - 1}"
            )
        expected = o.chunk_length(index)
        if len(data) != expected:
            raise UpdateError(
                "download", f"chunk {index} has {len(data)} bytes, expected {expected}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != o.chunks[index]:
            raise UpdateError(
                "download",
                f"chunk {index} sha256 mismatch (expected {o.chunks[index][:12]}…, "
                f"got {digest[:12]}…); it will be fetched again",
            )
        with self._lock:
            if self._received[index]:
                return
            with open(self._data, "r+b") as fh:
                fh.seek(index * o.chunk_size)
                fh.write(data)
                fh.flush()
                _sync(fh.fileno())
            # Only now that the bytes are durable is the chunk recorded.
            with open(self._record, "r+b") as fh:
                fh.seek(index)
                fh.write(b"\x01")
                fh.flush()
                _sync(fh.fileno())
            self._received[index] = 1

    def finalize(self) -> Path:
        """Check the whole archive and return its path.

        Returns:
            ``archive_path`` (the part file renamed once it verifies).

        Raises:
            UpdateError: (step ``download``) chunks are missing, or the whole
                file does not match the offer's size and sha256; the part file
                is then discarded and every chunk is missing again.
        """
        with self._lock:
            todo = len(self._received) - sum(self._received)
            if todo:
                raise UpdateError(
                    "download", f"{todo} of {len(self._received)} chunks still missing"
                )
            data = self._data
            size, digest = file_digest(data)
            if size != self.offer.size or digest != self.offer.sha256:
                self._start_over()
                raise UpdateError(
                    "download",
                    f"downloaded archive does not match the offer (size {size} vs "
                    f"{self.offer.size}, sha256 {digest[:12]}… vs "
                    f"{self.offer.sha256[:12]}…); discarded",
                )
            if data != self._archive:
                os.replace(data, self._archive)
                fsync_dir(self.directory)
            return self._archive

    def discard(self) -> None:
        """Delete everything this download stored (and the directory if then empty)."""
        with self._lock:
            for p in (self._offer_path, self._archive, self._part, self._record):
                p.unlink(missing_ok=True)
            self._received = bytearray(self.offer.total_chunks)
            with contextlib.suppress(OSError):  # not empty: leave it
                self.directory.rmdir()


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BUNDLE_BYTES",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "Download",
    "Offer",
    "iter_chunks",
    "read_chunk",
]
