"""Bundle on disk: a directory (or ``.tar.gz``) with ``manifest.json``.

Opening a bundle validates the manifest and checks the size and sha256 of
every file it names before anything is loaded into an engine, so a truncated,
tampered or incomplete bundle is refused with the file named. With trusted
keys, the manifest's signature is checked too (before an archive's files are
extracted). A bundle holds regular files only: a symbolic link is refused.

An archive is extracted as a stream and checked member by member before a
byte of it is written: ``manifest.json`` (and ``manifest.sig``) first, as
:func:`pack` writes them; then only the files the manifest lists, each at
most the size the manifest declares, so the manifest bounds what unpacking
can write.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import weakref
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

import numpy as np

from ._fs import write_atomic
from .ed25519 import MAX_SIGNATURE_BYTES, SIGNATURE_NAME, check_signature
from .errors import ManifestError
from .manifest import MANIFEST_NAME, Manifest, parse_manifest

if TYPE_CHECKING:
    from .ed25519 import TrustedKeys

_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 16 << 20
#: Largest size of the members that precede the bundle's files in an archive.
_HEAD_LIMITS = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES}


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Return ``(size_bytes, sha256_hex)`` of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _check_member_path(rel: str) -> None:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith(("/", "\\")):
        raise ManifestError("path escapes the bundle directory", rel)


def _refuse_symlinks(root: Path, rel: str) -> None:
    """Refuse ``rel`` (under ``root``) if it, or a folder on its way, is a symbolic link.

    ``root`` itself may be a link (``/opt/models/current -> v3.bundle``).
    """
    path = root
    for part in PurePosixPath(rel).parts:
        path = path / part
        if path.is_symlink():
            shown = path.relative_to(root).as_posix()
            raise ManifestError(
                f"is a symbolic link (to {os.readlink(path)}); a bundle holds regular "
                "files only: copy the file into the bundle",
                shown,
            )


def listed_files(manifest: Manifest) -> list[tuple[str, int, str]]:
    """``(path, size, sha256)`` of every file a manifest names."""
    m = manifest
    files = [(a.path, a.size_bytes, a.sha256) for a in m.artifacts]
    files += [(f.path, f.size_bytes, f.sha256) for a in m.artifacts for f in a.companions]
    for extra in (m.canary, m.verification):
        if extra is not None:
            files.append((extra.path, extra.size_bytes, extra.sha256))
    return files


class Bundle:
    """A verified bundle.

    Use :meth:`open`; the constructor does not verify.

    Attributes:
        root: Directory holding the files.
        manifest: The validated manifest.
    """

    def __init__(self, root: Path, manifest: Manifest, source: Path) -> None:
        self.root = root
        self.manifest = manifest
        self.source = source
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        #: The exact ``manifest.json`` bytes ``manifest`` was parsed from (set by :meth:`open`).
        self.manifest_bytes: bytes | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        verify: bool = True,
        trusted_keys: TrustedKeys | None = None,
    ) -> Bundle:
        """Open a bundle directory or ``.tar.gz`` and verify it.

        Args:
            path: Bundle directory, or a packed ``.tar.gz`` / ``.tgz`` / ``.tar``.
            verify: Check size and sha256 of every listed file (keep True
                outside of tests of the verifier itself).
            trusted_keys: Only accept a bundle whose ``manifest.sig`` was made
                by one of these keys over its exact ``manifest.json``
                (``key_id -> public key``, or ``.pub`` files / directories).
                ``None``: the signature is not checked.

        Returns:
            The opened bundle.

        Raises:
            ManifestError: Missing, malformed, tampered or truncated files, a
                symbolic link, an unsafe or unlisted archive member, or an
                unsupported schema version; the message names the file.
            UntrustedBundleError: ``trusted_keys`` given and the bundle is
                unsigned, altered after signing or signed by another key
                (``reason`` says which; CLIs exit 5).
            SignatureError: ``trusted_keys`` paths that cannot be loaded.
        """
        src = Path(path)
        if not src.exists():
            raise ManifestError(f"bundle not found: {src}")
        if not src.is_file():
            return cls._open_root(src, src, verify, trusted_keys)
        tmp = tempfile.TemporaryDirectory(prefix="edge-bundle-")
        try:
            unpack(src, Path(tmp.name), trusted_keys)
            bundle = cls._open_root(Path(tmp.name), src, verify, trusted_keys)
        except BaseException:
            tmp.cleanup()  # a refused archive leaves no extracted files behind
            raise
        bundle._tmp = tmp
        weakref.finalize(bundle, tmp.cleanup)
        return bundle

    @classmethod
    def _open_root(
        cls, root: Path, src: Path, verify: bool, trusted_keys: TrustedKeys | None
    ) -> Bundle:
        manifest_path = root / MANIFEST_NAME
        _refuse_symlinks(root, MANIFEST_NAME)
        if not manifest_path.is_file():
            raise ManifestError(f"missing from bundle {src}", MANIFEST_NAME)
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError("larger than 16 MiB; refusing to parse", MANIFEST_NAME)
        manifest_bytes = manifest_path.read_bytes()
        manifest = parse_manifest(manifest_bytes)
        bundle = cls(root, manifest, src)
        bundle.manifest_bytes = manifest_bytes
        if trusted_keys is not None:
            bundle.check_signature(trusted_keys)
        if verify:
            bundle.verify()
        return bundle

    def check_signature(self, trusted_keys: TrustedKeys) -> str:
        """Check ``manifest.sig`` against the trusted keys (see :func:`check_signature`).

        The signature is checked over the bytes :attr:`manifest` was parsed
        from (read again only for a bundle built by hand).

        Args:
            trusted_keys: ``key_id -> public key``, or ``.pub`` files / directories.

        Returns:
            The id of the trusted key that signed the manifest.

        Raises:
            UntrustedBundleError: Unsigned, altered after signing, or signed
                by a key that is not trusted.
            ManifestError: ``manifest.sig`` is a symbolic link.
        """
        _refuse_symlinks(self.root, SIGNATURE_NAME)
        manifest_bytes = self.manifest_bytes
        if manifest_bytes is None:
            manifest_bytes = (self.root / MANIFEST_NAME).read_bytes()
        sig_path = self.root / SIGNATURE_NAME
        signature = None
        if sig_path.is_file():
            if sig_path.stat().st_size > MAX_SIGNATURE_BYTES:
                raise ManifestError(
                    f"larger than {MAX_SIGNATURE_BYTES >> 10} KiB; not a signature", SIGNATURE_NAME
                )
            signature = sig_path.read_bytes()
        return check_signature(manifest_bytes, signature, trusted_keys, str(self.source))

    def listed_files(self) -> list[tuple[str, int, str]]:
        """``(path, size, sha256)`` of every file the manifest names."""
        return listed_files(self.manifest)

    def verify(self) -> None:
        """Check presence, size and sha256 of every listed file.

        The size is compared before the file is read, so a grown file is
        refused without hashing it.

        Raises:
            ManifestError: Naming the first file that is missing, truncated,
                altered or a symbolic link.
        """
        for rel, size, sha in self.listed_files():
            _check_member_path(rel)
            _refuse_symlinks(self.root, rel)
            path = self.root / rel
            if not path.is_file():
                raise ManifestError("listed in the manifest but missing from the bundle", rel)
            actual_size = path.stat().st_size
            if actual_size == size:
                actual_size, actual_sha = file_digest(path)
            if actual_size != size:
                kind = "truncated" if actual_size < size else "larger than recorded"
                raise ManifestError(
                    f"{kind}: manifest says {size} bytes, file has {actual_size}", rel
                )
            if actual_sha != sha:
                raise ManifestError(
                    f"sha256 mismatch (expected {sha[:12]}…, got {actual_sha[:12]}…): "
                    "the file was modified after export",
                    rel,
                )

    def path_of(self, rel: str) -> Path:
        """Absolute path of a bundle file."""
        _check_member_path(rel)
        return self.root / rel

    def load_canary(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Return the canary ``(inputs, expected_outputs)``.

        Raises:
            ManifestError: The bundle has no canary.
        """
        if self.manifest.canary is None:
            raise ManifestError("bundle has no canary inputs", MANIFEST_NAME)
        with np.load(self.path_of(self.manifest.canary.path), allow_pickle=False) as npz:
            inputs = {k[3:]: npz[k] for k in npz.files if k.startswith("in/")}
            outputs = {k[4:]: npz[k] for k in npz.files if k.startswith("out/")}
        return inputs, outputs


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically and durably (see :func:`edge_sdk._fs.write_atomic`)."""
    path = Path(root) / MANIFEST_NAME
    # 0o644 as before: readable like the artifacts beside it (a bundle is shared, not a secret).
    write_atomic(path, manifest.to_json().encode("utf-8"), mode=0o644)
    return path


def pack(root: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Pack a bundle directory into ``.tar.gz`` (manifest first, sorted names).

    The detached signature ``manifest.sig``, when present, is packed right
    after the manifest; other files the manifest does not list are left out.

    Raises:
        ManifestError: ``root`` is not a valid bundle.
    """
    bundle = Bundle.open(root)
    out_path = Path(out)
    head = [MANIFEST_NAME]
    if (bundle.root / SIGNATURE_NAME).is_file():
        head.append(SIGNATURE_NAME)
    listed = sorted({rel for rel, _, _ in bundle.listed_files()} - set(head))
    names = [*head, *listed]
    with tarfile.open(out_path, "w:gz") as tar:
        for rel in names:
            tar.add(bundle.root / rel, arcname=rel, recursive=False)
    return out_path


def unpack(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    trusted_keys: TrustedKeys | None = None,
) -> Path:
    """Safely extract a packed bundle, checking each member before writing it.

    ``manifest.json`` (and ``manifest.sig``) must come first, as :func:`pack`
    writes them; every later member must be a regular file the manifest
    lists, of exactly its declared size, at a path inside ``dest``. So an
    archive can write no more than its manifest declares, and nothing
    unlisted. With ``trusted_keys`` the signature is checked before any file
    after the manifest is extracted. Files are not hashed here:
    :meth:`Bundle.open` (which calls this) checks them against the manifest.

    Args:
        archive: The ``.tar.gz`` / ``.tgz`` / ``.tar``.
        dest: Directory to extract into (created; expected empty).
        trusted_keys: As :meth:`Bundle.open`.

    Returns:
        ``dest``.

    Raises:
        ManifestError: Not a readable archive, truncated, with unsafe members
            (links, devices, absolute or ``..`` paths), members not listed in
            the manifest or larger than it says, or an invalid manifest.
        UntrustedBundleError: As :meth:`Bundle.open`.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    name = Path(archive).name
    try:
        with tarfile.open(archive, "r:*") as tar:
            _Extraction(tar, dest_path, name, trusted_keys).run()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ManifestError(
            f"cannot read bundle archive ({exc}); truncated or corrupt?", name
        ) from None
    return dest_path


class _Extraction:
    """One archive extracted member by member (see :func:`unpack`)."""

    def __init__(
        self, tar: tarfile.TarFile, dest: Path, name: str, trusted_keys: TrustedKeys | None
    ) -> None:
        self.tar = tar
        self.dest = dest
        self.name = name
        self.trusted_keys = trusted_keys
        self.head: dict[str, bytes] = {}
        #: Declared size of every listed file; set once the manifest is read.
        self.sizes: Mapping[str, int] | None = None
        self.folders: set[str] = {"."}
        self.seen: set[str] = set()

    def run(self) -> None:
        for member in self.tar:
            rel = _member_name(member)
            if member.isdir():
                if self.sizes is not None and rel not in self.folders:
                    raise ManifestError("archive folder not listed in the manifest", rel)
                if self.sizes is None and rel != ".":
                    self._no_manifest_yet(rel)
                continue
            if not member.isfile():
                kind = (
                    "a symbolic link" if member.issym() else "a hard link" if member.islnk() else ""
                )
                raise ManifestError(
                    f"archive member is not a regular file{f' ({kind})' if kind else ''}", rel
                )
            if rel in self.seen:
                raise ManifestError("appears twice in the archive", rel)
            self.seen.add(rel)
            if rel in _HEAD_LIMITS:
                self._read_head(member, rel)
            else:
                self._extract(member, rel)
        if self.sizes is None:
            self._start(None)

    def _no_manifest_yet(self, rel: str) -> None:
        raise ManifestError(
            f"archive member before {MANIFEST_NAME}: a bundle archive starts with its manifest "
            "(repack it with edge-export pack)",
            rel,
        )

    def _read_head(self, member: tarfile.TarInfo, rel: str) -> None:
        if self.sizes is not None:
            raise ManifestError(
                f"comes after the bundle's files; {MANIFEST_NAME} and {SIGNATURE_NAME} come "
                "first (repack it with edge-export pack)",
                rel,
            )
        limit = _HEAD_LIMITS[rel]
        if member.size > limit:
            raise ManifestError(f"larger than {limit >> 10} KiB; refusing to read it", rel)
        fh = self.tar.extractfile(member)
        assert fh is not None  # a regular file
        self.head[rel] = fh.read(limit + 1)
        if len(self.head[rel]) != member.size:
            raise ManifestError("truncated archive member", rel)

    def _start(self, rel: str | None) -> Mapping[str, int]:
        """Parse the manifest read so far, check its signature, write the head files."""
        manifest_bytes = self.head.get(MANIFEST_NAME)
        if manifest_bytes is None:
            if rel is not None:
                self._no_manifest_yet(rel)
            raise ManifestError(f"missing from bundle archive {self.name}", MANIFEST_NAME)
        manifest = parse_manifest(manifest_bytes)
        if self.trusted_keys is not None:
            check_signature(
                manifest_bytes, self.head.get(SIGNATURE_NAME), self.trusted_keys, self.name
            )
        sizes: dict[str, int] = {}
        for path, size, _ in listed_files(manifest):
            _check_member_path(path)
            key = PurePosixPath(path).as_posix()
            sizes[key] = size
            self.folders.update(p.as_posix() for p in PurePosixPath(key).parents)
        for head_name, data in self.head.items():
            with _create(self.dest / head_name) as out:
                out.write(data)
        self.sizes = sizes
        return sizes

    def _extract(self, member: tarfile.TarInfo, rel: str) -> None:
        sizes = self.sizes if self.sizes is not None else self._start(rel)
        declared = sizes.get(rel)
        if declared is None:
            raise ManifestError(
                "archive member not listed in the manifest; refusing to extract it", rel
            )
        if member.size != declared:
            kind = "truncated" if member.size < declared else "larger than recorded"
            raise ManifestError(
                f"{kind}: manifest says {declared} bytes, archive member has {member.size}", rel
            )
        fh = self.tar.extractfile(member)
        assert fh is not None  # a regular file
        target = self.dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with _create(target) as out:
            _copy_at_most(fh, out, declared, rel)


def _create(path: Path) -> IO[bytes]:
    """Open a new file at ``path``, replacing a file or link there (never writing through it)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    return open(path, "xb")


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's path, checked and normalised (``./a//b`` -> ``a/b``)."""
    _check_member_path(member.name)
    rel = PurePosixPath(member.name).as_posix()
    if not member.name or "\\" in member.name:
        raise ManifestError("archive member has an empty or non-POSIX path", member.name)
    return rel


def _copy_at_most(src: IO[bytes], out: IO[bytes], size: int, rel: str) -> None:
    """Copy exactly ``size`` bytes; never write more, whatever the stream holds."""
    written = 0
    while written < size:
        chunk = src.read(min(_CHUNK, size - written))
        if not chunk:
            raise ManifestError(f"truncated archive member: {written} of {size} bytes", rel)
        out.write(chunk)
        written += len(chunk)


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to a compressed ``.npz`` deterministically (no pickles).

    Compressed: graph features are often sparse or binary (Cora's canary, the
    full graph, is 15.6 MB raw and 0.2 MB compressed).
    """
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    Path(path).write_bytes(buf.getvalue())
