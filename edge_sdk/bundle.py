"""Bundle on disk: a directory (or ``.tar.gz``) with ``manifest.json``.

Opening a bundle validates the manifest and checks the size and sha256 of
every file it names before anything is loaded into an engine, so a truncated,
tampered or incomplete bundle is refused with the file named.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import weakref
import zlib
from pathlib import Path

import numpy as np

from .errors import ManifestError
from .manifest import MANIFEST_NAME, Manifest, parse_manifest

_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 16 << 20
#: Detached ed25519 signature of ``manifest.json`` (see :mod:`edge_sdk.signing`).
#: Not listed in the manifest; packed right after it when present.
SIGNATURE_NAME = "manifest.sig"


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

    @classmethod
    def open(cls, path: str | os.PathLike[str], verify: bool = True) -> Bundle:
        """Open a bundle directory or ``.tar.gz`` and verify it.

        Args:
            path: Bundle directory, or a packed ``.tar.gz`` / ``.tgz`` / ``.tar``.
            verify: Check size and sha256 of every listed file (keep True
                outside of tests of the verifier itself).

        Returns:
            The opened bundle.

        Raises:
            ManifestError: Missing, malformed, tampered or truncated files, or
                an unsupported schema version; the message names the file.
        """
        src = Path(path)
        if not src.exists():
            raise ManifestError(f"bundle not found: {src}")
        if not src.is_file():
            return cls._open_root(src, src, verify)
        tmp = tempfile.TemporaryDirectory(prefix="edge-bundle-")
        try:
            unpack(src, Path(tmp.name))
            bundle = cls._open_root(Path(tmp.name), src, verify)
        except BaseException:
            tmp.cleanup()  # a refused archive leaves no extracted files behind
            raise
        bundle._tmp = tmp
        weakref.finalize(bundle, tmp.cleanup)
        return bundle

    @classmethod
    def _open_root(cls, root: Path, src: Path, verify: bool) -> Bundle:
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ManifestError(f"missing from bundle {src}", MANIFEST_NAME)
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError("larger than 16 MiB; refusing to parse", MANIFEST_NAME)
        manifest = parse_manifest(manifest_path.read_bytes())
        bundle = cls(root, manifest, src)
        if verify:
            bundle.verify()
        return bundle

    def listed_files(self) -> list[tuple[str, int, str]]:
        """``(path, size, sha256)`` of every file the manifest names."""
        m = self.manifest
        files = [(a.path, a.size_bytes, a.sha256) for a in m.artifacts]
        files += [(f.path, f.size_bytes, f.sha256) for a in m.artifacts for f in a.companions]
        for extra in (m.canary, m.verification):
            if extra is not None:
                files.append((extra.path, extra.size_bytes, extra.sha256))
        return files

    def verify(self) -> None:
        """Check presence, size and sha256 of every listed file.

        Raises:
            ManifestError: Naming the first file that is missing, truncated or altered.
        """
        for rel, size, sha in self.listed_files():
            _check_member_path(rel)
            path = self.root / rel
            if not path.is_file():
                raise ManifestError("listed in the manifest but missing from the bundle", rel)
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
    """Write ``manifest.json`` atomically (write to a temp file, then rename)."""
    path = Path(root) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)
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


def unpack(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Safely extract a packed bundle (regular files only, no path escapes).

    Raises:
        ManifestError: Not a readable archive, truncated, or with unsafe members.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    name = Path(archive).name
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member_path(member.name)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ManifestError("archive member is not a regular file", member.name)
                fh = tar.extractfile(member)
                assert fh is not None
                target = dest_path / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    while chunk := fh.read(_CHUNK):
                        out.write(chunk)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ManifestError(
            f"cannot read bundle archive ({exc}); truncated or corrupt?", name
        ) from None
    return dest_path


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to a compressed ``.npz`` deterministically (no pickles).

    Compressed: graph features are often sparse or binary (Cora's canary, the
    full graph, is 15.6 MB raw and 0.2 MB compressed).
    """
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    Path(path).write_bytes(buf.getvalue())
