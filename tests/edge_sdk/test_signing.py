"""Ed25519 bundle signatures: keys, manifest signatures, signed bundles and packing."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edge_sdk import Bundle, ManifestError, pack, unpack
from edge_sdk.errors import ConfigError, SignatureError
from edge_sdk.manifest import MANIFEST_NAME
from edge_sdk.signing import (
    SIGNATURE_NAME,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
    sign_bundle,
    sign_manifest,
    verify_bundle,
    verify_manifest,
)

pytest.importorskip("cryptography")

MANIFEST = b'{"schema_version": "1.1", "model": {"name": "m", "version": "1"}}\n'


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


def signed_doc(private: Path, data: bytes = MANIFEST) -> dict[str, str]:
    return sign_manifest(data, load_private_key(private))


# -- keys -----------------------------------------------------------------------------------


def test_generate_keypair_files(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert (private.name, public.name) == ("fleet.key", "fleet.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    # the public file is the public half of the private key
    ((kid, _),) = load_public_keys([public]).items()
    assert kid == key_id(load_private_key(private).public_key())


def test_generate_keypair_refuses_overwrite(keys: tuple[Path, Path]) -> None:
    private = keys[0]
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(private.parent)
    assert private.read_bytes() == before
    generate_keypair(private.parent, overwrite=True)
    assert private.read_bytes() != before
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".."])
def test_generate_keypair_bad_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="plain file name"):
        generate_keypair(tmp_path, name=name)


def test_key_id_is_sha256_of_raw_public_key(keys: tuple[Path, Path]) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = load_private_key(keys[0]).public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert len(raw) == 32
    assert key_id(public) == hashlib.sha256(raw).hexdigest()[:16]
    assert len(key_id(public)) == 16


def test_load_private_key_errors(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(SignatureError, match="not found"):
        load_private_key(tmp_path / "absent.key")
    with pytest.raises(SignatureError, match="not a PEM private key"):
        load_private_key(keys[1])  # the public half
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "ec.key").write_bytes(pem)
    with pytest.raises(SignatureError, match="ed25519"):
        load_private_key(tmp_path / "ec.key")


def test_load_public_keys_dir_and_files(tmp_path: Path) -> None:
    _, pub1 = generate_keypair(tmp_path / "trust", name="one")
    _, pub2 = generate_keypair(tmp_path / "trust", name="two")
    (tmp_path / "trust" / "notes.txt").write_text("ignored")
    from_dir = load_public_keys([tmp_path / "trust"])
    assert len(from_dir) == 2
    assert set(load_public_keys([pub1, pub2])) == set(from_dir)
    assert len(load_public_keys(str(pub1))) == 1  # one path, not iterated as characters


def test_load_public_keys_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SignatureError, match="no trusted public keys"):
        load_public_keys([tmp_path / "empty"])
    with pytest.raises(SignatureError, match="not found"):
        load_public_keys([tmp_path / "absent.pub"])
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(SignatureError, match="not a PEM public key"):
        load_public_keys([tmp_path / "junk.pub"])


# -- manifest signatures --------------------------------------------------------------------


def test_sign_verify_round_trip(keys: tuple[Path, Path]) -> None:
    private, public = keys
    doc = signed_doc(private)
    assert set(doc) == {"alg", "key_id", "signature"}
    assert doc["alg"] == "ed25519"
    assert len(base64.b64decode(doc["signature"])) == 64
    trusted = load_public_keys([public])
    assert verify_manifest(MANIFEST, doc, trusted) == doc["key_id"]
    # the JSON text (bytes or str) of the document is accepted too
    assert verify_manifest(MANIFEST, json.dumps(doc), trusted) == doc["key_id"]
    assert verify_manifest(MANIFEST, json.dumps(doc).encode(), trusted) == doc["key_id"]


@pytest.mark.parametrize("position", [0, len(MANIFEST) // 2, len(MANIFEST) - 1])
def test_one_altered_byte_breaks_the_signature(keys: tuple[Path, Path], position: int) -> None:
    doc = signed_doc(keys[0])
    tampered = bytearray(MANIFEST)
    tampered[position] ^= 0x01
    with pytest.raises(SignatureError, match="does not match the manifest"):
        verify_manifest(bytes(tampered), doc, load_public_keys([keys[1]]))


def test_altered_signature_is_refused(keys: tuple[Path, Path]) -> None:
    doc = signed_doc(keys[0])
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[10] ^= 0xFF
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError, match="does not match the manifest"):
        verify_manifest(MANIFEST, doc, load_public_keys([keys[1]]))


def test_untrusted_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    other_private, _ = generate_keypair(tmp_path / "other")
    doc = signed_doc(other_private)
    trusted = load_public_keys([keys[1]])
    with pytest.raises(SignatureError) as info:
        verify_manifest(MANIFEST, doc, trusted)
    msg = str(info.value)
    assert f"signed by key {doc['key_id']} which is not among the trusted keys" in msg
    assert next(iter(trusted)) in msg


def test_key_id_claiming_a_trusted_key_does_not_help(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """A signature by another key that claims a trusted key's id fails verification."""
    other_private, _ = generate_keypair(tmp_path / "other")
    doc = signed_doc(other_private)
    trusted = load_public_keys([keys[1]])
    doc["key_id"] = next(iter(trusted))
    with pytest.raises(SignatureError, match="does not match"):
        verify_manifest(MANIFEST, doc, trusted)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("not json {", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"alg": "ed25519", "key_id": "x"}, r"\['signature'\] missing"),
        ({"alg": "ed25519", "key_id": 7, "signature": "AA=="}, r"\['key_id'\] missing"),
        ({"alg": "rsa", "key_id": "KID", "signature": "AA=="}, "unsupported signature algorithm"),
        ({"alg": "ed25519", "key_id": "KID", "signature": "!!notbase64!!"}, "not valid base64"),
        ({"alg": "ed25519", "key_id": "KID", "signature": "AAAA"}, "64 bytes, got 3"),
    ],
)
def test_malformed_signature_document(keys: tuple[Path, Path], doc: Any, match: str) -> None:
    trusted = load_public_keys([keys[1]])
    if isinstance(doc, dict) and doc.get("key_id") == "KID":
        doc = {**doc, "key_id": next(iter(trusted))}
    with pytest.raises(SignatureError, match=match):
        verify_manifest(MANIFEST, doc, trusted)


# -- bundles --------------------------------------------------------------------------------


def test_sign_and_verify_bundle(bundle_copy: Path, keys: tuple[Path, Path]) -> None:
    sig_path = sign_bundle(bundle_copy, keys[0])
    assert sig_path == bundle_copy / SIGNATURE_NAME
    doc = json.loads(sig_path.read_text())
    trusted = load_public_keys([keys[1]])
    assert verify_bundle(bundle_copy, trusted) == doc["key_id"]
    # the signature is an unlisted extra file: the bundle still opens and verifies
    Bundle.open(bundle_copy)


def test_unsigned_bundle(bundle_copy: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(SignatureError, match="bundle is not signed"):
        verify_bundle(bundle_copy, load_public_keys([keys[1]]))


def test_manifest_edited_after_signing(bundle_copy: Path, keys: tuple[Path, Path]) -> None:
    sign_bundle(bundle_copy, keys[0])
    path = bundle_copy / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["model"]["version"] = "9.9.9"  # the bundle still verifies, the signature must not
    path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    Bundle.open(bundle_copy)
    with pytest.raises(SignatureError, match="does not match the manifest"):
        verify_bundle(bundle_copy, load_public_keys([keys[1]]))


def test_sign_bundle_refuses_a_broken_bundle(bundle_copy: Path, keys: tuple[Path, Path]) -> None:
    with (bundle_copy / "model.onnx").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(ManifestError, match=r"model\.onnx"):
        sign_bundle(bundle_copy, keys[0])
    assert not (bundle_copy / SIGNATURE_NAME).exists()


def test_sign_bundle_refuses_an_archive(
    bundle_copy: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    archive = pack(bundle_copy, tmp_path / "b.tar.gz")
    with pytest.raises(ConfigError, match="sign the bundle directory"):
        sign_bundle(archive, keys[0])


def test_pack_carries_the_signature(
    bundle_copy: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    sign_bundle(bundle_copy, keys[0])
    (bundle_copy / "scratch.txt").write_text("not listed, not packed")
    archive = pack(bundle_copy, tmp_path / "signed.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[:2] == [MANIFEST_NAME, SIGNATURE_NAME]
    assert "scratch.txt" not in names
    out = unpack(archive, tmp_path / "unpacked")
    Bundle.open(out)
    trusted = load_public_keys([keys[1]])
    assert (
        verify_bundle(out, trusted)
        == json.loads((bundle_copy / SIGNATURE_NAME).read_text())["key_id"]
    )
    assert (out / MANIFEST_NAME).read_bytes() == (bundle_copy / MANIFEST_NAME).read_bytes()


def test_pack_unsigned_bundle_has_no_signature(bundle_copy: Path, tmp_path: Path) -> None:
    archive = pack(bundle_copy, tmp_path / "plain.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == MANIFEST_NAME
    assert SIGNATURE_NAME not in names


BLOCKED_IMPORT = r"""
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import edge_sdk.signing as s
from edge_sdk.errors import BackendUnavailableError
try:
    s.generate_keypair(sys.argv[1])
except BackendUnavailableError as exc:
    print("REFUSED:", exc)
"""


def test_imports_without_cryptography(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED: cryptography is not installed" in proc.stdout
    assert "edge-graph-sdk[mqtt]" in proc.stdout
    assert not list(tmp_path.iterdir())
