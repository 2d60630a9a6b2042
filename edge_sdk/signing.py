"""Ed25519 signatures over a bundle's manifest.

``manifest.json`` lists the size and sha256 of every other file of a bundle,
so a signature over the exact manifest bytes covers the whole bundle (once
:meth:`edge_sdk.Bundle.open` has checked the files against the manifest).
The signature is a detached JSON document, ``manifest.sig`` in the bundle
root, not listed in the manifest::

    {"alg": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}

``key_id`` is the first 16 hex digits of the sha256 of the raw 32-byte public
key; a verifier looks the key up among its trusted keys by that id.

Needs ``cryptography`` (the ``[mqtt]`` extra), imported on first use only:
this module imports without it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._fs import write_atomic
from ._optional import require
from .bundle import MAX_SIGNATURE_BYTES, SIGNATURE_NAME, Bundle
from .errors import ConfigError, ManifestError, SignatureError, UntrustedBundleError
from .manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ALG = "ed25519"
_SIG_FIELDS = ("alg", "key_id", "signature")

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

#: Trusted keys as the API takes them: ``key_id -> public key`` (from
#: :func:`load_public_keys`), or ``.pub`` files / directories to load.
TrustedKeys: TypeAlias = (
    "Mapping[str, Ed25519PublicKey] | Iterable[str | os.PathLike[str]] | str | os.PathLike[str]"
)


def _crypto() -> tuple[ModuleType, ModuleType]:
    """Return the ``ed25519`` and ``serialization`` modules of cryptography."""
    require("cryptography", "bundle signatures")
    ed25519 = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
    serialization = importlib.import_module("cryptography.hazmat.primitives.serialization")
    return ed25519, serialization


# -- keys -----------------------------------------------------------------------------------


def generate_keypair(
    directory: str | os.PathLike[str], name: str = "fleet", overwrite: bool = False
) -> tuple[Path, Path]:
    """Create a new ed25519 key pair.

    Args:
        directory: Where to write the keys (created if missing).
        name: Base file name: writes ``{name}.key`` and ``{name}.pub``.
        overwrite: Replace existing key files (the old keys are lost).

    Returns:
        ``(private_key_path, public_key_path)``. The private key is PKCS8 PEM,
        unencrypted, file mode ``0o600``; the public key is PEM
        SubjectPublicKeyInfo, to be copied to every node that must trust it.

    Raises:
        ConfigError: A key file exists and ``overwrite`` is False, or ``name``
            is not a plain file name.
        BackendUnavailableError: ``cryptography`` is not installed.
    """
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ConfigError(f"key name {name!r} must be a plain file name (no directories)")
    ed25519, serialization = _crypto()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"refusing to overwrite existing key file(s) {', '.join(existing)}; "
            "pass overwrite=True (--force) to replace them, or choose another name"
        )
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_atomic(private_path, private_pem, mode=0o600)
    write_atomic(public_path, public_pem, mode=0o644)
    return private_path, public_path


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the id of a public key: first 16 hex of sha256 of its raw 32 bytes."""
    _, serialization = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an unencrypted PEM ed25519 private key.

    Raises:
        SignatureError: The file is missing, unreadable, encrypted, or not an
            ed25519 private key.
        BackendUnavailableError: ``cryptography`` is not installed.
    """
    ed25519, serialization = _crypto()
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"private key not found: {p}") from None
    except OSError as exc:
        raise SignatureError(f"cannot read private key {p}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SignatureError(
            f"private key {p} is password-protected; signing needs an unencrypted PKCS8 key"
        ) from None
    except Exception as exc:  # ValueError / UnsupportedAlgorithm from cryptography
        raise SignatureError(
            f"{p} is not a PEM private key ({exc}); expected an ed25519 key "
            "as written by generate_keypair / edge-fleet keygen"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(
            f"{p} holds a {type(key).__name__.lstrip('_')} key; bundles are signed "
            "with ed25519 keys only"
        )
    return key


def _load_public_key(path: Path) -> Ed25519PublicKey:
    ed25519, serialization = _crypto()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read public key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except Exception as exc:  # ValueError / UnsupportedAlgorithm from cryptography
        raise SignatureError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(
            f"{path} holds a {type(key).__name__.lstrip('_')} key; only ed25519 keys are trusted"
        )
    return key


def load_public_keys(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
) -> dict[str, Ed25519PublicKey]:
    """Load the trusted public keys.

    Args:
        paths: ``.pub`` files and/or directories whose ``*.pub`` files are
            all loaded. A single path is accepted too.

    Returns:
        ``key_id -> public key``.

    Raises:
        SignatureError: A path is missing, a file is not an ed25519 public
            key, or no key was found at all.
        BackendUnavailableError: ``cryptography`` is not installed.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    keys: dict[str, Ed25519PublicKey] = {}
    searched: list[str] = []
    for entry in paths:
        p = Path(entry)
        searched.append(str(p))
        if p.is_dir():
            files = sorted(f for f in p.glob("*.pub") if f.is_file())
        elif p.is_file():
            files = [p]
        else:
            raise SignatureError(f"trusted key path not found: {p}")
        for f in files:
            key = _load_public_key(f)
            keys[key_id(key)] = key
    if not keys:
        raise SignatureError(
            f"no trusted public keys (*.pub) found in {searched or 'the given paths'}; "
            "copy the fleet's public key to the node"
        )
    return keys


def trusted_key_map(keys: TrustedKeys) -> Mapping[str, Ed25519PublicKey]:
    """Return ``key_id -> public key`` for keys given as a mapping or as paths.

    Raises:
        SignatureError: As :func:`load_public_keys` for paths.
    """
    if isinstance(keys, Mapping):
        return keys
    return load_public_keys(keys)


# -- signatures -----------------------------------------------------------------------------


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> dict[str, str]:
    """Sign the exact bytes of ``manifest.json``.

    Returns:
        The signature document ``{"alg", "key_id", "signature"}``.
    """
    signature = private_key.sign(bytes(manifest_bytes))
    return {
        "alg": ALG,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def _parse_sig_doc(sig_doc: Mapping[str, Any] | bytes | str) -> dict[str, str]:
    raw: Any = sig_doc
    if isinstance(sig_doc, bytes | str):
        if len(sig_doc) > MAX_SIGNATURE_BYTES:
            raise _malformed(f"larger than {MAX_SIGNATURE_BYTES} bytes")
        try:
            raw = json.loads(sig_doc)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _malformed(f"not valid JSON ({exc})") from None
    if not isinstance(raw, Mapping):
        raise _malformed(
            f"expected a JSON object with {list(_SIG_FIELDS)}, got {type(raw).__name__}"
        )
    missing = [k for k in _SIG_FIELDS if not isinstance(raw.get(k), str)]
    if missing:
        raise _malformed(f"field(s) {missing} missing or not strings")
    if raw["alg"] != ALG:
        raise UntrustedBundleError(
            "malformed", f"unsupported signature algorithm {raw['alg']!r}; expected {ALG!r}"
        )
    return {k: raw[k] for k in _SIG_FIELDS}


def _malformed(what: str) -> UntrustedBundleError:
    return UntrustedBundleError("malformed", f"malformed signature: {what}")


def verify_manifest(
    manifest_bytes: bytes,
    sig_doc: Mapping[str, Any] | bytes | str,
    trusted: Mapping[str, Ed25519PublicKey],
) -> str:
    """Check a signature document against the exact manifest bytes.

    Args:
        manifest_bytes: The bytes of ``manifest.json`` as stored.
        sig_doc: The signature document (parsed, or its JSON text).
        trusted: ``key_id -> public key`` (see :func:`load_public_keys`).

    Returns:
        The id of the trusted key that made the signature.

    Raises:
        UntrustedBundleError: (a :class:`SignatureError`) with ``reason``
            ``malformed`` (bad document, unsupported algorithm),
            ``unknown_key`` (a key that is not trusted) or ``mismatch`` (a
            signature that does not match the manifest).
    """
    doc = _parse_sig_doc(sig_doc)
    kid = doc["key_id"]
    public = trusted.get(kid)
    if public is None:
        raise UntrustedBundleError(
            "unknown_key",
            f"signed by key {kid} which is not among the trusted keys {sorted(trusted)}",
        )
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("'signature' is not valid base64") from None
    if len(signature) != 64:
        raise _malformed(f"ed25519 signatures are 64 bytes, got {len(signature)}")
    exceptions = importlib.import_module("cryptography.exceptions")
    try:
        public.verify(signature, bytes(manifest_bytes))
    except exceptions.InvalidSignature:
        raise UntrustedBundleError(
            "mismatch",
            "signature does not match the manifest: the manifest was altered "
            "or signed by another key",
        ) from None
    return kid


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
        raise _malformed(f"{sig_path} is larger than {MAX_SIGNATURE_BYTES >> 10} KiB")
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
        doc = _parse_sig_doc(read_signature(root))
    except UntrustedBundleError as exc:
        if exc.reason == "unsigned":
            return SignatureStatus("unsigned", None, exc if keys is not None else None)
        return SignatureStatus("invalid", _claimed_key(root), exc)
    return SignatureStatus("not checked", doc["key_id"])


def _claimed_key(root: Path) -> str | None:
    try:
        return _parse_sig_doc(read_signature(root))["key_id"]
    except UntrustedBundleError:
        return None
