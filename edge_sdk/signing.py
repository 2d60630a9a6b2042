"""Ed25519 signatures over a bundle's manifest: sign, verify and report on a bundle.

Keys and the signature over the manifest bytes are in :mod:`edge_sdk.ed25519`;
this module re-exports them, so ``edge_sdk.signing`` is the one place to import from.

What a signature covers and the ``manifest.sig`` format: :mod:`edge_sdk.ed25519`.

Needs ``cryptography`` (the ``[mqtt]`` extra), imported on first use only:
this module imports without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._fs import write_atomic
from .bundle import Bundle
from .ed25519 import (
    ALG,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    TrustedKeys,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
    malformed_signature,
    parse_signature_document,
    sign_manifest,
    trusted_key_map,
    verify_manifest,
)
from .errors import ConfigError, ManifestError, UntrustedBundleError
from .manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "ALG",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_NAME",
    "SignatureStatus",
    "TrustedKeys",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "read_signature",
    "sign_bundle",
    "sign_manifest",
    "signature_status",
    "trusted_key_map",
    "verify_bundle",
    "verify_manifest",
]


def sign_bundle(
    bundle_dir: str | os.PathLike[str], private_key_path: str | os.PathLike[str]
) -> Path:
    """Verify a bundle directory, then write its ``manifest.sig``.

    Args:
        bundle_dir: The bundle directory (sign before packing).
        private_key_path: PEM ed25519 private key.

    Returns:
        Path of the written ``manifest.sig`` (replaced atomically if present).

    Raises:
        ConfigError: ``bundle_dir`` is an archive, not a directory.
        ManifestError: The bundle does not verify (nothing is signed).
        SignatureError: The key cannot be loaded.
    """
    root = Path(bundle_dir)
    if root.is_file():
        raise ConfigError(f"{root} is a file; sign the bundle directory before packing it")
    key = load_private_key(private_key_path)
    Bundle.open(root)
    manifest_bytes = (root / MANIFEST_NAME).read_bytes()
    doc = sign_manifest(manifest_bytes, key)
    out = root / SIGNATURE_NAME
    write_atomic(
        out, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode=0o644
    )
    return out


def verify_bundle(
    bundle_dir: str | os.PathLike[str], trusted: Mapping[str, Ed25519PublicKey]
) -> str:
    """Check ``manifest.sig`` of a bundle directory against its ``manifest.json``.

    Only the manifest is checked here; :meth:`edge_sdk.Bundle.open` checks
    the files against it. Together they cover the whole bundle.

    Returns:
        The id of the trusted key that signed the bundle.

    Raises:
        UntrustedBundleError: ``bundle is not signed`` (no ``manifest.sig``,
            reason ``unsigned``), or as :func:`verify_manifest`.
        ManifestError: No ``manifest.json``, or either file is a symbolic link.
    """
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST_NAME
    sig_path = root / SIGNATURE_NAME
    for path in (manifest_path, sig_path):
        if path.is_symlink():
            raise ManifestError("is a symbolic link; a bundle holds regular files only", path.name)
    if not manifest_path.is_file():
        raise ManifestError(f"missing from bundle {root}", MANIFEST_NAME)
    return verify_manifest(manifest_path.read_bytes(), read_signature(root), trusted)


def read_signature(bundle_dir: str | os.PathLike[str]) -> bytes:
    """Return the bytes of a bundle directory's ``manifest.sig``.

    Raises:
        UntrustedBundleError: No ``manifest.sig`` (``unsigned``), or one
            larger than :data:`MAX_SIGNATURE_BYTES` (``malformed``).
    """
    root = Path(bundle_dir)
    sig_path = root / SIGNATURE_NAME
    if not sig_path.is_file():
        raise UntrustedBundleError(
            "unsigned",
            f"bundle is not signed: {root} has no {SIGNATURE_NAME}, and trusted keys "
            "were given; sign it (edge-fleet sign DIR --key KEY) before packing",
        )
    if sig_path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise malformed_signature(f"{sig_path} is larger than {MAX_SIGNATURE_BYTES >> 10} KiB")
    return sig_path.read_bytes()


@dataclass(frozen=True)
class SignatureStatus:
    """What is known about a bundle's signature (see :func:`signature_status`).

    Attributes:
        state: ``valid`` (a trusted key signed exactly this manifest),
            ``invalid`` (malformed, altered after signing, or an unknown key),
            ``unsigned`` (no ``manifest.sig``), ``not checked`` (signed, but
            no trusted keys were given to check it against).
        key_id: The signing key's id as the signature names it, if readable.
        error: Why it is ``invalid`` (or ``unsigned`` when keys were given).
    """

    state: Literal["valid", "invalid", "unsigned", "not checked"]
    key_id: str | None = None
    error: UntrustedBundleError | None = None

    def describe(self) -> str:
        """One line for people, e.g. ``valid (key 3f2a...)``."""
        if self.state == "valid":
            return f"valid (key {self.key_id})"
        if self.state == "not checked":
            return f"not checked (signed by key {self.key_id}; pass --key to check it)"
        if self.state == "invalid":
            return f"invalid: {self.error}"
        return "unsigned"


def signature_status(
    bundle_dir: str | os.PathLike[str], trusted: TrustedKeys | None = None
) -> SignatureStatus:
    """Report a bundle directory's signature state without raising for a bad one.

    Args:
        bundle_dir: The bundle directory (an opened archive's ``Bundle.root``).
        trusted: Keys to check against; ``None`` only reads the signature.

    Raises:
        SignatureError: ``trusted`` paths that cannot be loaded.
        ManifestError: No ``manifest.json``, or a symbolic link.
    """
    keys = trusted_key_map(trusted) if trusted is not None else None
    root = Path(bundle_dir)
    try:
        if keys is not None:
            return SignatureStatus("valid", verify_bundle(root, keys))
        doc = parse_signature_document(read_signature(root))
    except UntrustedBundleError as exc:
        if exc.reason == "unsigned":
            return SignatureStatus("unsigned", None, exc if keys is not None else None)
        return SignatureStatus("invalid", _claimed_key(root), exc)
    return SignatureStatus("not checked", doc["key_id"])


def _claimed_key(root: Path) -> str | None:
    try:
        return parse_signature_document(read_signature(root))["key_id"]
    except UntrustedBundleError:
        return None
