"""A/B model slots with an atomic active pointer.

Layout under the node's state root::

    root/slots/a/           one complete bundle directory
    root/slots/b/           the other
    root/active.json        {"active": "a", "previous": "b" | null, "versions": {...}}

``active.json`` is only ever replaced atomically (temp file, fsync,
``os.replace``, fsync of the directory). An update stages the new bundle into
the slot the pointer does *not* name as active, verifies it, and only then
flips the pointer. So a kill at any moment leaves the pointer naming a
complete, verified slot; a crash mid-stage leaves garbage only in the
inactive slot, which the next stage clears. The pointer never names a slot
that is being cleared: staging over the ``previous`` slot first drops it from
the pointer (rollback is then no longer possible).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import fsync_dir, fsync_tree, write_atomic
from ..bundle import SIGNATURE_NAME, Bundle, unpack
from ..errors import ConfigError, ManifestError, UpdateError
from ..manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from ..signing import TrustedKeys

SLOTS = ("a", "b")
POINTER_NAME = "active.json"
_MAX_POINTER_BYTES = 64 << 10


class ModelSlots:
    """Two bundle slots and the pointer saying which one is live.

    Not safe for concurrent use by several processes; one node owns a root.

    Args:
        root: State directory (created if missing).

    Raises:
        ConfigError: ``active.json`` exists but is unreadable or malformed.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.slots_dir = self.root / "slots"
        self.pointer_path = self.root / POINTER_NAME
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f".{POINTER_NAME}.*.tmp"):  # from a kill mid-write
            stale.unlink(missing_ok=True)
        self._read_pointer()  # fail early on a corrupt pointer

    # -- pointer --------------------------------------------------------------------------
    def _read_pointer(self) -> dict[str, Any] | None:
        path = self.pointer_path
        if not path.exists():
            return None
        fix = "; restore it or delete it and reinstall a bundle (edge-node install)"
        try:
            if path.stat().st_size > _MAX_POINTER_BYTES:
                raise ConfigError(f"{path}: larger than 64 KiB, not a slot pointer{fix}")
            raw = json.loads(path.read_bytes())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the active-slot pointer ({exc}){fix}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object{fix}")
        active, previous = raw.get("active"), raw.get("previous")
        if active not in SLOTS:
            raise ConfigError(f"{path}: 'active' must be one of {list(SLOTS)}, got {active!r}{fix}")
        if previous is not None and (previous not in SLOTS or previous == active):
            raise ConfigError(
                f"{path}: 'previous' must be null or the other slot, got {previous!r}{fix}"
            )
        versions = raw.get("versions", {})
        if not isinstance(versions, dict):
            raise ConfigError(f"{path}: 'versions' must be an object{fix}")
        return {"active": active, "previous": previous, "versions": versions}

    def _write_pointer(self, doc: dict[str, Any]) -> None:
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
        write_atomic(self.pointer_path, data)
        fsync_dir(self.root)

    def slot_dir(self, slot: str) -> Path:
        """Directory of slot ``"a"`` or ``"b"``."""
        if slot not in SLOTS:
            raise ValueError(f"slot must be one of {SLOTS}, got {slot!r}")
        return self.slots_dir / slot

    def state(self) -> dict[str, Any] | None:
        """The pointer document (``active``, ``previous``, ``versions``); None if none yet."""
        return self._read_pointer()

    def active(self) -> Path | None:
        """Bundle directory of the active slot, None before any install."""
        ptr = self._read_pointer()
        return self.slot_dir(ptr["active"]) if ptr else None

    def previous(self) -> Path | None:
        """Bundle directory a :meth:`rollback` would return to, if any."""
        ptr = self._read_pointer()
        return self.slot_dir(ptr["previous"]) if ptr and ptr["previous"] else None

    def inactive(self) -> Path:
        """The slot the next :meth:`stage` writes into."""
        ptr = self._read_pointer()
        slot = "a" if ptr is None or ptr["active"] == "b" else "b"
        return self.slot_dir(slot)

    # -- update flow ----------------------------------------------------------------------
    def stage(
        self, archive_or_dir: str | os.PathLike[str], trusted_keys: TrustedKeys | None = None
    ) -> Path:
        """Copy or unpack a bundle into the inactive slot and verify it.

        The inactive slot is cleared first (removing what a crashed stage
        left behind). If it was the pointer's ``previous`` slot, the pointer
        drops it first, so the pointer never names a slot being rewritten.

        Args:
            archive_or_dir: Bundle directory or packed ``.tar.gz``.
            trusted_keys: Stage only a bundle signed by one of these keys
                (see :meth:`Bundle.open`).

        Returns:
            The staged slot directory (pass it to :meth:`activate`).

        Raises:
            ManifestError: The bundle is missing, unreadable or does not verify;
                the slot is left empty.
            UntrustedBundleError: ``trusted_keys`` given and the bundle is not
                signed by one of them; the slot is left empty.
        """
        src = Path(archive_or_dir)
        if not src.exists():
            raise ManifestError(f"bundle not found: {src}")
        target = self.inactive()
        ptr = self._read_pointer()
        if ptr is not None and ptr["previous"] == target.name:
            versions = {k: v for k, v in ptr["versions"].items() if k != target.name}
            self._write_pointer({"active": ptr["active"], "previous": None, "versions": versions})
        self._clear(target)
        try:
            if src.is_dir():
                self._copy_bundle(src, target)
            else:
                unpack(src, target, trusted_keys)
            Bundle.open(target, trusted_keys=trusted_keys)
        except BaseException:
            self._clear(target)
            raise
        return target

    def activate(self, staged: str | os.PathLike[str]) -> None:
        """Make the staged slot the active one; the old active becomes ``previous``.

        The staged slot is verified again and flushed to disk before the
        pointer moves.

        Raises:
            UpdateError: (step ``swap``) ``staged`` is not the inactive slot, or
                it no longer verifies.
        """
        staged_path = Path(staged)
        target = self.inactive()
        if staged_path.resolve() != target.resolve():
            raise UpdateError(
                "swap", f"{staged_path} is not the staged (inactive) slot {target}; stage first"
            )
        try:
            bundle = Bundle.open(target)
        except ManifestError as exc:
            raise UpdateError("swap", f"staged slot {target.name} does not verify: {exc}") from exc
        fsync_tree(target)
        ptr = self._read_pointer()
        versions = {} if ptr is None else dict(ptr["versions"])
        versions[target.name] = bundle.manifest.model.version
        old = ptr["active"] if ptr else None
        keep = {s for s in (target.name, old) if s}
        self._write_pointer(
            {
                "active": target.name,
                "previous": old,
                "versions": {k: v for k, v in versions.items() if k in keep},
            }
        )

    def install(
        self, bundle_path: str | os.PathLike[str], trusted_keys: TrustedKeys | None = None
    ) -> Path:
        """Stage and activate a bundle in one go (first install, or forced).

        Args:
            bundle_path: Bundle directory or packed ``.tar.gz``.
            trusted_keys: As :meth:`stage`.

        Returns:
            The now-active slot directory.

        Raises:
            ManifestError: The bundle does not verify; nothing changes.
            UntrustedBundleError: As :meth:`stage`; nothing changes.
        """
        staged = self.stage(bundle_path, trusted_keys)
        self.activate(staged)
        return staged

    def rollback(self) -> Path:
        """Make the previous slot active again.

        The slot rolled back from is dropped from the pointer (``previous``
        becomes null): a second rollback is refused rather than returning to
        the model that was just abandoned.

        Returns:
            The now-active slot directory.

        Raises:
            UpdateError: (step ``rollback``) there is no previous slot.
        """
        ptr = self._read_pointer()
        if ptr is None or not ptr["previous"]:
            raise UpdateError("rollback", "there is no previous model to roll back to")
        back = ptr["previous"]
        versions = {k: v for k, v in ptr["versions"].items() if k == back}
        self._write_pointer({"active": back, "previous": None, "versions": versions})
        return self.slot_dir(back)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _clear(slot: Path) -> None:
        if slot.exists():
            shutil.rmtree(slot)
        slot.mkdir(parents=True)

    @staticmethod
    def _copy_bundle(src: Path, dest: Path) -> None:
        """Copy the manifest, its signature and the listed files (verified first)."""
        bundle = Bundle.open(src)
        names = [MANIFEST_NAME]
        if (src / SIGNATURE_NAME).is_file():
            names.append(SIGNATURE_NAME)
        names += sorted({rel for rel, _, _ in bundle.listed_files()} - set(names))
        for rel in names:
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.path_of(rel), out)


__all__ = ["POINTER_NAME", "SLOTS", "ModelSlots"]
