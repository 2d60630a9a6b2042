"""Bundle verification: every bad bundle is refused with the file named."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import Bundle, ManifestError, Runtime, pack, unpack
from edge_sdk.bundle import MAX_MANIFEST_BYTES, file_digest
from edge_sdk.manifest import MANIFEST_NAME

ARTIFACT = "model.onnx"
CANARY = "canary.npz"


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the bundle's manifest JSON in place."""
    path = bundle / MANIFEST_NAME
    raw = json.loads(path.read_text(encoding="utf-8"))
    edit(raw)
    path.write_text(json.dumps(raw), encoding="utf-8")


def refused(path: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        Bundle.open(path)
    return info.value


def test_exported_bundle_opens(tiny_gcn_bundle: Path) -> None:
    bundle = Bundle.open(tiny_gcn_bundle)
    assert [a.path for a in bundle.manifest.artifacts] == [ARTIFACT]
    assert bundle.manifest.canary is not None
    assert bundle.manifest.canary.path == CANARY


# -- missing files -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [ARTIFACT, CANARY])
def test_missing_listed_file(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    err = refused(bundle_copy)
    assert err.path == name
    assert name in str(err)
    assert "missing" in str(err)


def test_missing_manifest(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_NAME).unlink()
    err = refused(bundle_copy)
    assert err.path == MANIFEST_NAME
    assert MANIFEST_NAME in str(err)


def test_missing_bundle(tmp_path: Path) -> None:
    err = refused(tmp_path / "nowhere.bundle")
    assert "nowhere.bundle" in str(err)


# -- altered files -----------------------------------------------------------------------


def test_truncated_artifact(bundle_copy: Path) -> None:
    path = bundle_copy / ARTIFACT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = refused(bundle_copy)
    assert err.path == ARTIFACT
    assert "truncated" in str(err)
    assert str(len(data)) in str(err)


def test_grown_artifact(bundle_copy: Path) -> None:
    with open(bundle_copy / ARTIFACT, "ab") as fh:
        fh.write(b"\0")
    err = refused(bundle_copy)
    assert err.path == ARTIFACT
    assert "larger than recorded" in str(err)


@pytest.mark.parametrize("name", [ARTIFACT, CANARY])
def test_same_size_tampered_file(bundle_copy: Path, name: str) -> None:
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert path.stat().st_size == len(data)
    err = refused(bundle_copy)
    assert err.path == name
    assert "sha256" in str(err)


def test_verify_false_skips_digests(bundle_copy: Path) -> None:
    (bundle_copy / ARTIFACT).write_bytes(b"not a model")
    assert Bundle.open(bundle_copy, verify=False).manifest.model.name == "tiny-gcn"


# -- manifest content ----------------------------------------------------------------------


def test_manifest_not_json(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_NAME).write_text('{"schema_version": "1.0",', encoding="utf-8")
    err = refused(bundle_copy)
    assert err.path == MANIFEST_NAME
    assert "not valid JSON" in str(err)


def test_manifest_not_an_object(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_NAME).write_text("[]", encoding="utf-8")
    err = refused(bundle_copy)
    assert err.path == MANIFEST_NAME
    assert "JSON object" in str(err)


def test_manifest_too_large(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_NAME).write_bytes(b" " * (MAX_MANIFEST_BYTES + 1))
    err = refused(bundle_copy)
    assert err.path == MANIFEST_NAME
    assert "16 MiB" in str(err)


def _set(*keys: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


def _delete(*keys: str | int) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("graph", "num_features", value=0), "graph.num_features"),
        (_set("graph", "form", value="sparse"), "graph.form"),
        (_set("artifacts", 0, "size_bytes", value=-1), "artifacts.0.size_bytes"),
        (_set("artifacts", 0, "sha256", value="abc"), "artifacts.0.sha256"),
        (_set("artifacts", 0, "target", value="coreml"), "artifacts.0.target"),
        (_set("artifacts", value=[]), "artifacts"),
        (_delete("model", "name"), "model.name"),
        (_delete("inputs"), "inputs"),
        (_set("schema_version", value="one"), "schema_version"),
    ],
    ids=lambda v: v if isinstance(v, str) else "edit",
)
def test_manifest_field_invalid(
    bundle_copy: Path, edit: Callable[[dict[str, Any]], None], field: str
) -> None:
    edit_manifest(bundle_copy, edit)
    err = refused(bundle_copy)
    assert err.path == MANIFEST_NAME
    assert f"field {field}:" in str(err)


def test_unknown_schema_major_refused(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, _set("schema_version", value="2.0"))
    err = refused(bundle_copy)
    assert err.path == MANIFEST_NAME
    assert "schema_version" in str(err)
    assert "'2.0'" in str(err)
    assert "1.x" in str(err)


def test_newer_minor_accepted(bundle_copy: Path) -> None:
    def newer(raw: dict[str, Any]) -> None:
        raw["schema_version"] = "1.7"
        raw["signature"] = {"algorithm": "ed25519"}  # a field 1.0 does not know
        raw["model"]["owner"] = "line 4"

    edit_manifest(bundle_copy, newer)
    bundle = Bundle.open(bundle_copy)
    assert bundle.manifest.schema_version == "1.7"
    assert bundle.manifest.model.name == "tiny-gcn"


def test_newer_minor_with_nested_field_accepted(bundle_copy: Path) -> None:
    def newer(raw: dict[str, Any]) -> None:
        raw["schema_version"] = "1.7"
        raw["graph"]["max_degree"] = 64

    edit_manifest(bundle_copy, newer)
    assert Bundle.open(bundle_copy).manifest.schema_version == "1.7"


@pytest.mark.parametrize("rel", ["../x", "sub/../../x", "/tmp/x"])
@pytest.mark.parametrize("entry", ["artifact", "canary"])
def test_path_escaping_bundle_refused(bundle_copy: Path, rel: str, entry: str) -> None:
    # Plant a byte-identical file outside the bundle: only the path check can refuse it.
    src = bundle_copy / (ARTIFACT if entry == "artifact" else CANARY)
    outside = bundle_copy.parent / "x"
    shutil.copyfile(src, outside)
    size, sha = file_digest(outside)

    def point_outside(raw: dict[str, Any]) -> None:
        target = raw["artifacts"][0] if entry == "artifact" else raw["canary"]
        target.update(path=rel, size_bytes=size, sha256=sha)

    edit_manifest(bundle_copy, point_outside)
    err = refused(bundle_copy)
    assert err.path == rel
    assert "escapes" in str(err)


# -- canary -------------------------------------------------------------------------------


def test_load_canary(tiny_gcn_bundle: Path) -> None:
    bundle = Bundle.open(tiny_gcn_bundle)
    inputs, outputs = bundle.load_canary()
    assert set(inputs) == set(bundle.manifest.graph.input_names)  # a request, not the model feeds
    assert set(outputs) == {s.name for s in bundle.manifest.outputs}
    assert inputs["x"].shape[1] == bundle.manifest.graph.num_features
    assert outputs["out"].shape[0] == inputs["x"].shape[0]


def test_canary_reproduced_by_runtime(tiny_gcn_bundle: Path) -> None:
    bundle = Bundle.open(tiny_gcn_bundle)
    inputs, expected = bundle.load_canary()
    canary = bundle.manifest.canary
    assert canary is not None
    got = Runtime.load(bundle).infer(inputs)
    assert set(got) == set(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, atol=canary.atol, rtol=canary.rtol)


def test_no_canary(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, _set("canary", value=None))
    bundle = Bundle.open(bundle_copy)
    with pytest.raises(ManifestError) as info:
        bundle.load_canary()
    assert info.value.path == MANIFEST_NAME
    assert "canary" in str(info.value)


# -- packed bundles -----------------------------------------------------------------------


def test_pack_unpack_roundtrip(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    archive = pack(tiny_gcn_bundle, tmp_path / "tiny.tar.gz")
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == MANIFEST_NAME
        assert sorted(tar.getnames()) == sorted([MANIFEST_NAME, ARTIFACT, CANARY, "verify.npz"])
    unpacked = unpack(archive, tmp_path / "unpacked")
    for name in (MANIFEST_NAME, ARTIFACT, CANARY):
        assert (unpacked / name).read_bytes() == (tiny_gcn_bundle / name).read_bytes()

    inputs, _ = Bundle.open(tiny_gcn_bundle).load_canary()
    from_dir = Runtime.load(tiny_gcn_bundle).infer(inputs)
    from_archive = Runtime.load(archive).infer(inputs)
    assert set(from_archive) == set(from_dir)
    for name, value in from_dir.items():
        np.testing.assert_array_equal(from_archive[name], value)


def test_pack_refuses_invalid_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / CANARY).unlink()
    with pytest.raises(ManifestError) as info:
        pack(bundle_copy, tmp_path / "bad.tar.gz")
    assert info.value.path == CANARY


def test_truncated_archive_refused(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    archive = pack(tiny_gcn_bundle, tmp_path / "tiny.tar.gz")
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    err = refused(cut)
    assert err.path == "cut.tar.gz"
    assert "truncated or corrupt" in str(err)


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_refused_archive_leaves_no_temp_files(
    tiny_gcn_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    archive = pack(tiny_gcn_bundle, tmp_path / "tiny.tar.gz")
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:-100])
    else:
        copy = Path(shutil.copytree(tiny_gcn_bundle, tmp_path / "copy"))
        (copy / ARTIFACT).write_bytes(b"\0" * (copy / ARTIFACT).stat().st_size)
        with tarfile.open(archive, "w:gz") as tar:
            for name in (MANIFEST_NAME, ARTIFACT, CANARY):
                tar.add(copy / name, arcname=name)
    refused(archive)
    assert list(scratch.iterdir()) == []


def test_not_an_archive_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar file at all" * 40)
    assert refused(junk).path == "junk.tar.gz"


def _hostile_archive(tiny_gcn_bundle: Path, path: Path, bad: tarfile.TarInfo) -> Path:
    """A valid bundle archive with ``bad`` appended."""
    with tarfile.open(path, "w:gz") as tar:
        for name in (MANIFEST_NAME, ARTIFACT, CANARY):
            tar.add(tiny_gcn_bundle / name, arcname=name)
        payload = b"pwned" if bad.type == tarfile.REGTYPE else None
        if payload is not None:
            bad.size = len(payload)
        tar.addfile(bad, io.BytesIO(payload) if payload is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


HOSTILE = {
    "dotdot": (_member("../evil"), "../evil", "escapes"),
    "nested-dotdot": (_member("sub/../../evil"), "sub/../../evil", "escapes"),
    "absolute": (_member("/tmp/evil"), "/tmp/evil", "escapes"),
    "symlink": (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link", "not a regular file"),
    "hardlink": (_member("hard", tarfile.LNKTYPE, ARTIFACT), "hard", "not a regular file"),
    "fifo": (_member("pipe", tarfile.FIFOTYPE), "pipe", "not a regular file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_refused(tiny_gcn_bundle: Path, tmp_path: Path, case: str) -> None:
    member, name, words = HOSTILE[case]
    archive = _hostile_archive(tiny_gcn_bundle, tmp_path / "hostile.tar.gz", member)

    err = refused(archive)
    assert err.path == name
    assert words in str(err)

    dest = tmp_path / "a" / "dest"
    with pytest.raises(ManifestError) as info:
        unpack(archive, dest)
    assert info.value.path == name
    assert not (tmp_path / "a" / "evil").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))
