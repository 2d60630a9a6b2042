"""Archives are checked member by member before anything is written; symlinks are refused.

The manifest bounds what unpacking may write: only the files it lists, at
most the sizes it declares. Big members are made cheaply (a sparse file, or a
header that claims a size the archive never holds): no test writes 1 GiB.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from edge_sdk import Bundle, ManifestError, pack, unpack
from edge_sdk.bundle import listed_files
from edge_sdk.manifest import MANIFEST_NAME, parse_manifest

ARTIFACT = "model.onnx"
GIB = 1 << 30


def _members(bundle: Path) -> list[str]:
    """The bundle's files in pack order (manifest first)."""
    manifest = parse_manifest((bundle / MANIFEST_NAME).read_bytes())
    return [MANIFEST_NAME, *sorted({p for p, _, _ in listed_files(manifest)})]


def _declared(bundle: Path) -> dict[str, int]:
    manifest = parse_manifest((bundle / MANIFEST_NAME).read_bytes())
    return {p: size for p, size, _ in listed_files(manifest)}


def _write_tar(path: Path, bundle: Path, names: list[str]) -> None:
    with tarfile.open(path, "w") as tar:
        for name in names:
            tar.add(bundle / name, arcname=name)


def _refused_unpack(archive: Path, dest: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        unpack(archive, dest)
    return info.value


def test_unlisted_1gib_member_is_refused_before_it_is_written(
    tiny_gcn_bundle: Path, tmp_path: Path
) -> None:
    """A real (sparse) 1 GiB member after the listed files: refused on its header."""
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in _members(tiny_gcn_bundle):
            tar.add(tiny_gcn_bundle / name, arcname=name)
        info = tarfile.TarInfo("payload.bin")
        info.size = GIB
        tar.fileobj.write(info.tobuf(tarfile.GNU_FORMAT))  # type: ignore[union-attr]
    with archive.open("r+b") as fh:  # the member's data: a hole, then the end-of-archive blocks
        fh.seek(0, os.SEEK_END)
        fh.seek(GIB, os.SEEK_CUR)
        fh.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    assert archive.stat().st_size > GIB and archive.stat().st_blocks * 512 < 16 << 20
    with tarfile.open(archive) as tar:  # a well-formed archive, as tar sees it
        assert tar.getmember("payload.bin").size == GIB

    dest = tmp_path / "dest"
    err = _refused_unpack(archive, dest)
    assert err.path == "payload.bin" and "not listed in the manifest" in str(err)
    assert not (dest / "payload.bin").exists()
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert (
        written
        <= sum(_declared(tiny_gcn_bundle).values())
        + (tiny_gcn_bundle / MANIFEST_NAME).stat().st_size
    )
    with pytest.raises(ManifestError) as info:
        Bundle.open(archive)
    assert info.value.path == "payload.bin"


def test_member_claiming_more_than_the_manifest_says_writes_nothing(
    tiny_gcn_bundle: Path, tmp_path: Path
) -> None:
    """A listed file whose header claims 1 GiB (data never there): refused on the header."""
    archive = tmp_path / "lying.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_gcn_bundle / MANIFEST_NAME, arcname=MANIFEST_NAME)
        info = tarfile.TarInfo(ARTIFACT)
        info.size = GIB
        tar.fileobj.write(info.tobuf())  # type: ignore[union-attr]
        tar.fileobj.write(b"\0" * 4096)  # type: ignore[union-attr]
        tar.offset += tarfile.BLOCKSIZE + 4096  # keep tarfile's close() from padding
    dest = tmp_path / "dest"
    err = _refused_unpack(archive, dest)
    assert err.path == ARTIFACT
    assert f"manifest says {_declared(tiny_gcn_bundle)[ARTIFACT]} bytes" in str(err)
    assert f"archive member has {GIB}" in str(err)
    assert not (dest / ARTIFACT).exists()


def test_member_a_little_larger_than_declared_is_refused(
    tiny_gcn_bundle: Path, tmp_path: Path
) -> None:
    grown = Path(shutil.copytree(tiny_gcn_bundle, tmp_path / "grown"))
    with (grown / ARTIFACT).open("ab") as fh:
        fh.write(b"\0" * 100)
    archive = tmp_path / "grown.tar"
    _write_tar(archive, grown, _members(grown))
    dest = tmp_path / "dest"
    err = _refused_unpack(archive, dest)
    assert err.path == ARTIFACT and "larger than recorded" in str(err)
    assert not (dest / ARTIFACT).exists()


def test_truncated_archive_writes_no_more_than_declared(
    tiny_gcn_bundle: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "whole.tar"
    _write_tar(archive, tiny_gcn_bundle, _members(tiny_gcn_bundle))
    with tarfile.open(archive) as tar:
        member = tar.getmember(ARTIFACT)
        cut_at = member.offset_data + member.size // 2  # in the middle of the model
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:cut_at])
    dest = tmp_path / "dest"
    err = _refused_unpack(cut, dest)
    assert err.path == "cut.tar" and "truncated or corrupt" in str(err)
    declared = _declared(tiny_gcn_bundle)
    for path in dest.rglob("*"):
        if path.is_file() and path.name != MANIFEST_NAME:
            assert path.stat().st_size <= declared[path.relative_to(dest).as_posix()]
    with pytest.raises(ManifestError):
        Bundle.open(cut)


def test_manifest_must_come_first(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "late.tar"
    names = _members(tiny_gcn_bundle)
    _write_tar(archive, tiny_gcn_bundle, [*names[1:], MANIFEST_NAME])
    dest = tmp_path / "dest"
    err = _refused_unpack(archive, dest)
    assert err.path == names[1] and "starts with its manifest" in str(err)
    assert list(dest.iterdir()) == []


def test_duplicate_member_is_refused(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "twice.tar"
    _write_tar(archive, tiny_gcn_bundle, [*_members(tiny_gcn_bundle), ARTIFACT])
    err = _refused_unpack(archive, tmp_path / "dest")
    assert err.path == ARTIFACT and "twice" in str(err)


def test_oversized_manifest_member_is_not_read(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "huge-manifest.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = GIB
        tar.fileobj.write(info.tobuf())  # type: ignore[union-attr]
        tar.offset += tarfile.BLOCKSIZE
    err = _refused_unpack(archive, tmp_path / "dest")
    assert err.path == MANIFEST_NAME and "refusing to read it" in str(err)


def test_packed_and_dot_prefixed_archives_still_open(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    """``./name`` members and folder entries for listed paths are accepted."""
    Bundle.open(pack(tiny_gcn_bundle, tmp_path / "p.tar.gz"))
    archive = tmp_path / "dot.tar"
    with tarfile.open(archive, "w") as tar:
        dot = tarfile.TarInfo(".")
        dot.type = tarfile.DIRTYPE
        tar.addfile(dot)
        for name in _members(tiny_gcn_bundle):
            tar.add(tiny_gcn_bundle / name, arcname=f"./{name}")
    assert Bundle.open(archive).manifest.model.name == "tiny-gcn"


def test_unlisted_member_in_a_packed_archive_is_refused(
    tiny_gcn_bundle: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "extra.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in _members(tiny_gcn_bundle):
            tar.add(tiny_gcn_bundle / name, arcname=name)
        info = tarfile.TarInfo("notes/readme.txt")
        data = b"hello"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "dest"
    err = _refused_unpack(archive, dest)
    assert err.path == "notes/readme.txt"
    assert not (dest / "notes").exists()


# -- symlinks in bundle directories -------------------------------------------------------------


@pytest.mark.parametrize("name", [ARTIFACT, MANIFEST_NAME])
def test_symlink_in_a_bundle_directory_is_refused(
    bundle_copy: Path, tmp_path: Path, name: str
) -> None:
    # The link points at a byte-identical file: only the link itself can be refused.
    outside = tmp_path / f"outside-{name}"
    shutil.move(bundle_copy / name, outside)
    (bundle_copy / name).symlink_to(outside)
    with pytest.raises(ManifestError) as info:
        Bundle.open(bundle_copy)
    assert info.value.path == name
    assert "symbolic link" in str(info.value) and str(outside) in str(info.value)


def test_symlinked_folder_on_a_listed_path_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    """``sub -> /elsewhere`` with ``sub/model.onnx`` listed: refused at the folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(bundle_copy / ARTIFACT, elsewhere / ARTIFACT)
    (bundle_copy / "sub").symlink_to(elsewhere, target_is_directory=True)
    path = bundle_copy / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["artifacts"][0]["path"] = f"sub/{ARTIFACT}"
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError) as info:
        Bundle.open(bundle_copy)
    assert info.value.path == "sub" and "symbolic link" in str(info.value)


def test_bundle_root_may_be_a_symlink(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    """``/opt/models/current -> v3.bundle`` is how deployments switch: the root may be a link."""
    link = tmp_path / "current"
    link.symlink_to(tiny_gcn_bundle, target_is_directory=True)
    assert Bundle.open(link).manifest.model.name == "tiny-gcn"


def test_unpack_replaces_files_and_links_in_dest(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    """Unpacking over an earlier copy replaces its files and never writes through a link."""
    archive = pack(tiny_gcn_bundle, tmp_path / "p.tar.gz")
    dest = unpack(archive, tmp_path / "dest")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (dest / ARTIFACT).unlink()
    (dest / ARTIFACT).symlink_to(victim)
    unpack(archive, dest)
    assert victim.read_bytes() == b"keep me"
    assert not (dest / ARTIFACT).is_symlink()
    assert (dest / ARTIFACT).read_bytes() == (tiny_gcn_bundle / ARTIFACT).read_bytes()
