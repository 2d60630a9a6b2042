"""A/B model slots: staging, the atomic active pointer, rollback and crash recovery."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edge_sdk import Bundle, ManifestError, pack
from edge_sdk.bundle import SIGNATURE_NAME
from edge_sdk.errors import ConfigError, UpdateError
from edge_sdk.manifest import MANIFEST_NAME
from edge_sdk.node.slots import POINTER_NAME, ModelSlots


def versioned(src: Path, dest: Path, version: str) -> Path:
    """Copy of a bundle whose manifest says ``version`` (still a valid bundle)."""
    shutil.copytree(src, dest)
    raw = json.loads((dest / MANIFEST_NAME).read_text())
    raw["model"]["version"] = version
    (dest / MANIFEST_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return dest


@pytest.fixture
def v1(tiny_gcn_bundle: Path, tmp_path: Path) -> Path:
    return versioned(tiny_gcn_bundle, tmp_path / "v1.bundle", "1.0.0")


@pytest.fixture
def v2(tiny_gcn_bundle: Path, tmp_path: Path) -> Path:
    return versioned(tiny_gcn_bundle, tmp_path / "v2.bundle", "2.0.0")


def version_of(path: Path | None) -> str:
    assert path is not None
    return Bundle.open(path).manifest.model.version


def test_fresh_root_has_nothing_active(tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "state")
    assert slots.active() is None
    assert slots.previous() is None
    assert slots.state() is None
    assert not (tmp_path / "state" / POINTER_NAME).exists()
    with pytest.raises(UpdateError) as info:
        slots.rollback()
    assert info.value.step == "rollback"


def test_install_directory(v1: Path, tmp_path: Path) -> None:
    (v1 / SIGNATURE_NAME).write_text('{"alg": "ed25519"}')
    (v1 / "scratch.txt").write_text("unlisted")
    slots = ModelSlots(tmp_path / "state")
    active = slots.install(v1)
    assert active == tmp_path / "state" / "slots" / "a"
    assert slots.active() == active
    assert slots.previous() is None
    assert version_of(active) == "1.0.0"
    assert (active / SIGNATURE_NAME).read_text() == '{"alg": "ed25519"}'
    assert not (active / "scratch.txt").exists()
    assert (active / MANIFEST_NAME).read_bytes() == (v1 / MANIFEST_NAME).read_bytes()
    state = json.loads((tmp_path / "state" / POINTER_NAME).read_text())
    assert state == {"active": "a", "previous": None, "versions": {"a": "1.0.0"}}


def test_install_archive(v1: Path, tmp_path: Path) -> None:
    archive = pack(v1, tmp_path / "v1.tar.gz")
    slots = ModelSlots(tmp_path / "state")
    active = slots.install(archive)
    assert version_of(active) == "1.0.0"


def test_stage_does_not_change_active(v1: Path, v2: Path, tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "state")
    first = slots.install(v1)
    pointer = (tmp_path / "state" / POINTER_NAME).read_bytes()
    staged = slots.stage(v2)
    assert staged == tmp_path / "state" / "slots" / "b"
    assert version_of(staged) == "2.0.0"
    assert slots.active() == first
    assert (tmp_path / "state" / POINTER_NAME).read_bytes() == pointer
    # a restarted node still runs the old model
    assert ModelSlots(tmp_path / "state").active() == first


def test_activate_and_rollback(v1: Path, v2: Path, tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "state")
    a = slots.install(v1)
    b = slots.stage(v2)
    slots.activate(b)
    assert slots.active() == b
    assert slots.previous() == a
    assert slots.state() == {
        "active": "b",
        "previous": "a",
        "versions": {"a": "1.0.0", "b": "2.0.0"},
    }
    reopened = ModelSlots(tmp_path / "state")
    assert (reopened.active(), reopened.previous()) == (b, a)

    assert reopened.rollback() == a
    assert reopened.active() == a
    assert version_of(reopened.active()) == "1.0.0"
    assert reopened.previous() is None
    assert ModelSlots(tmp_path / "state").active() == a
    with pytest.raises(UpdateError, match="no previous model"):
        reopened.rollback()


def test_updates_alternate_slots(v1: Path, v2: Path, tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    v3 = versioned(tiny_gcn_bundle, tmp_path / "v3.bundle", "3.0.0")
    slots = ModelSlots(tmp_path / "state")
    seen = [slots.install(v) for v in (v1, v2, v3)]
    assert [p.name for p in seen] == ["a", "b", "a"]
    assert version_of(slots.active()) == "3.0.0"
    assert version_of(slots.previous()) == "2.0.0"
    assert slots.state()["versions"] == {"a": "3.0.0", "b": "2.0.0"}  # type: ignore[index]


def test_activate_refuses_other_paths(v1: Path, v2: Path, tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "state")
    active = slots.install(v1)
    with pytest.raises(UpdateError) as info:
        slots.activate(active)  # the active slot, not the staged one
    assert info.value.step == "swap"
    with pytest.raises(UpdateError, match="not the staged"):
        slots.activate(v2)  # a bundle outside the slots
    assert slots.active() == active


def test_invalid_bundle_is_not_staged(v1: Path, bundle_copy: Path, tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "state")
    active = slots.install(v1)
    with (bundle_copy / "model.onnx").open("r+b") as fh:
        fh.write(b"\x00\x00\x00\x00")
    with pytest.raises(ManifestError, match=r"model\.onnx"):
        slots.stage(bundle_copy)
    inactive = tmp_path / "state" / "slots" / "b"
    assert inactive.is_dir() and not any(inactive.iterdir())
    assert slots.active() == active


def test_invalid_archive_is_not_installed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    slots = ModelSlots(tmp_path / "state")
    with pytest.raises(ManifestError, match="cannot read bundle archive"):
        slots.install(bad)
    assert slots.active() is None
    with pytest.raises(ManifestError, match="not found"):
        slots.stage(tmp_path / "absent.tar.gz")


def test_crash_mid_stage_is_cleared_by_next_stage(v1: Path, v2: Path, tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "state")
    active = slots.install(v1)
    # A killed stage: manifest copied, model half written, plus leftovers.
    inactive = tmp_path / "state" / "slots" / "b"
    inactive.mkdir(exist_ok=True)
    shutil.copyfile(v2 / MANIFEST_NAME, inactive / MANIFEST_NAME)
    data = (v2 / "model.onnx").read_bytes()
    (inactive / "model.onnx").write_bytes(data[: len(data) // 2])
    (inactive / "leftover.tmp").write_bytes(b"junk")

    restarted = ModelSlots(tmp_path / "state")
    assert restarted.active() == active
    Bundle.open(active)  # the pointer still names a complete, verified slot
    with pytest.raises(UpdateError, match="does not verify"):
        restarted.activate(inactive)  # garbage is never activated
    assert restarted.active() == active

    staged = restarted.stage(v2)
    assert staged == inactive
    assert not (staged / "leftover.tmp").exists()
    restarted.activate(staged)
    assert version_of(restarted.active()) == "2.0.0"


def test_staging_over_previous_drops_it_first(
    v1: Path, v2: Path, tiny_gcn_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pointer never names a slot being rewritten, even if the stage is killed."""
    v3 = versioned(tiny_gcn_bundle, tmp_path / "v3.bundle", "3.0.0")
    slots = ModelSlots(tmp_path / "state")
    slots.install(v1)
    b = slots.install(v2)
    assert slots.previous() == tmp_path / "state" / "slots" / "a"

    def killed(src: Path, dest: Path) -> None:
        (dest / MANIFEST_NAME).write_bytes(b"{")  # partial write, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelSlots, "_copy_bundle", staticmethod(killed))
    with pytest.raises(KeyboardInterrupt):
        slots.stage(v3)
    monkeypatch.undo()

    restarted = ModelSlots(tmp_path / "state")
    assert restarted.active() == b
    assert restarted.previous() is None
    with pytest.raises(UpdateError):
        restarted.rollback()
    assert restarted.state() == {"active": "b", "previous": None, "versions": {"b": "2.0.0"}}


def test_kill_during_pointer_write_keeps_old_pointer(
    v1: Path, v2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = ModelSlots(tmp_path / "state")
    a = slots.install(v1)
    staged = slots.stage(v2)
    before = (tmp_path / "state" / POINTER_NAME).read_bytes()

    def killed(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # dies after writing the temp file, before the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        slots.activate(staged)
    monkeypatch.undo()
    assert (tmp_path / "state" / POINTER_NAME).read_bytes() == before
    # a kill -9 would also leave the temp file behind; the next start removes it
    (tmp_path / "state" / f".{POINTER_NAME}.x1y2.tmp").write_text('{"active": "b"}')
    restarted = ModelSlots(tmp_path / "state")
    assert restarted.active() == a
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [POINTER_NAME, "slots"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"active": "c", "previous": null, "versions": {}}',
        '{"active": "a", "previous": "a", "versions": {}}',
        '{"active": "a", "previous": null, "versions": []}',
        "",
    ],
)
def test_corrupt_pointer(tmp_path: Path, content: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / POINTER_NAME).write_text(content)
    with pytest.raises(ConfigError) as info:
        ModelSlots(state)
    assert str(state / POINTER_NAME) in str(info.value)
