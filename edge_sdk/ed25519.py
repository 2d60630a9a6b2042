"""Ed25519 keys, and signatures over a bundle manifest's bytes (no bundle I/O here).

The bundle-level operations (sign a bundle directory, verify it, report its
signature state) are in :mod:`edge_sdk.signing`, which re-exports this module's
public names; :mod:`edge_sdk.bundle` uses this module to check signatures on load,
so neither needs the other.

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
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

from ._fs import write_atomic
from ._optional import require
from .errors import ConfigError, SignatureError, UntrustedBundleError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ALG = "ed25519"
_SIG_FIELDS = ("alg", "key_id", "signature")
#: Detached ed25519 signature of ``manifest.json``, in the bundle root.
#: Not listed in the manifest; packed right after it when present.
SIGNATURE_NAME = "manifest.sig"
#: A signature document is ~150 bytes; anything much larger is not one.
MAX_SIGNATURE_BYTES = 64 << 10

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


def parse_signature_document(sig_doc: Mapping[str, Any] | bytes | str) -> dict[str, str]:
    raw: Any = sig_doc
    if isinstance(sig_doc, bytes | str):
        if len(sig_doc) > MAX_SIGNATURE_BYTES:
            raise malformed_signature(f"larger than {MAX_SIGNATURE_BYTES} bytes")
        try:
            raw = json.loads(sig_doc)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise malformed_signature(f"not valid JSON ({exc})") from None
    if not isinstance(raw, Mapping):
        raise malformed_signature(
            f"expected a JSON object with {list(_SIG_FIELDS)}, got {type(raw).__name__}"
        )
    missing = [k for k in _SIG_FIELDS if not isinstance(raw.get(k), str)]
    if missing:
        raise malformed_signature(f"field(s) {missing} missing or not strings")
    if raw["alg"] != ALG:
        raise UntrustedBundleError(
            "malformed", f"unsupported signature algorithm {raw['alg']!r}; expected {ALG!r}"
        )
    return {k: raw[k] for k in _SIG_FIELDS}


def malformed_signature(what: str) -> UntrustedBundleError:
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
    doc = parse_signature_document(sig_doc)
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
        raise malformed_signature("'signature' is not valid base64") from None
    if len(signature) != 64:
        raise malformed_signature(f"ed25519 signatures are 64 bytes, got {len(signature)}")
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


def check_signature(
    manifest_bytes: bytes, signature: bytes | None, trusted_keys: TrustedKeys, where: str
) -> str:
    """Check a manifest's signature against trusted keys (what :meth:`edge_sdk.Bundle.open` runs).

    Args:
        manifest_bytes: The exact bytes of ``manifest.json``.
        signature: The bytes of ``manifest.sig``; ``None`` if the bundle has none.
        trusted_keys: ``key_id -> public key``, or ``.pub`` files / directories.
        where: The bundle, named in the "not signed" message.

    Returns:
        The id of the trusted key that signed the manifest.

    Raises:
        UntrustedBundleError: Unsigned, altered after signing, signed by a key
            that is not trusted, or a malformed signature (``reason`` says which).
        SignatureError: The trusted keys cannot be loaded.
    """
    keys = trusted_key_map(trusted_keys)
    if signature is None:
        raise UntrustedBundleError(
            "unsigned",
            f"bundle is not signed: {where} has no {SIGNATURE_NAME}, and trusted keys "
            "were given; sign it (edge-fleet sign DIR --key KEY) before packing",
        )
    return verify_manifest(manifest_bytes, signature, keys)
