"""Signature checks on every load path: Runtime.load, edge-export verify/inspect, edge-node.

With trusted keys, a bundle loads only if one of them signed its exact
manifest: unsigned, edited-after-signing and foreign-signed bundles are
refused with ``UntrustedBundleError`` (``reason`` says which; CLIs exit 5).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import edge_export

from edge_sdk import Bundle, Runtime, pack, unpack
from edge_sdk.errors import UntrustedBundleError
from edge_sdk.manifest import MANIFEST_NAME

pytest.importorskip("cryptography")

EXIT_UNTRUSTED = 5


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fleet's key pair (``key``/``pub``) and a rogue signing key (``rogue_key``)."""
    from edge_sdk.signing import generate_keypair

    root = tmp_path_factory.mktemp("keys")
    (key, pub), (rogue_key, _) = generate_keypair(root, "fleet"), generate_keypair(root, "rogue")
    return {"key": key, "pub": pub, "rogue_key": rogue_key}


@pytest.fixture(scope="module")
def signed(tiny_gcn_bundle: Path, keys: dict[str, Path], tmp_path_factory) -> Path:
    """The tiny bundle signed with the fleet key. Read-only."""
    from edge_sdk.signing import sign_bundle

    out = Path(shutil.copytree(tiny_gcn_bundle, tmp_path_factory.mktemp("signed") / "b"))
    sign_bundle(out, keys["key"])
    return out


def _edited(signed: Path, dest: Path) -> Path:
    """A copy of ``signed`` whose manifest was edited after signing (files still verify)."""
    out = Path(shutil.copytree(signed, dest))
    path = out / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["model"]["version"] = "9.9.9"
    path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    Bundle.open(out)  # checksums alone still pass: only the signature can tell
    return out


@pytest.fixture
def edited(signed: Path, tmp_path: Path) -> Path:
    return _edited(signed, tmp_path / "edited")


@pytest.fixture
def rogue_signed(tiny_gcn_bundle: Path, keys: dict[str, Path], tmp_path: Path) -> Path:
    from edge_sdk.signing import sign_bundle

    out = Path(shutil.copytree(tiny_gcn_bundle, tmp_path / "rogue"))
    sign_bundle(out, keys["rogue_key"])
    return out


def _refused(path: Path, trusted: object) -> UntrustedBundleError:
    with pytest.raises(UntrustedBundleError) as info:
        Runtime.load(path, trusted_keys=trusted)  # type: ignore[arg-type]
    return info.value


# -- Runtime.load -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dir", "archive"])
def test_runtime_load_refuses_a_manifest_edited_after_signing(
    edited: Path, keys: dict[str, Path], tmp_path: Path, form: str
) -> None:
    path = edited if form == "dir" else pack(edited, tmp_path / "edited.tar.gz")
    assert _refused(path, [keys["pub"]]).reason == "mismatch"
    # Without keys nothing is checked: the edit is only visible to the signature.
    with Runtime.load(path) as rt:
        assert rt.manifest.model.version == "9.9.9"


@pytest.mark.parametrize("form", ["dir", "archive"])
def test_runtime_load_refuses_an_unsigned_bundle_when_keys_are_given(
    tiny_gcn_bundle: Path, keys: dict[str, Path], tmp_path: Path, form: str
) -> None:
    path = tiny_gcn_bundle if form == "dir" else pack(tiny_gcn_bundle, tmp_path / "u.tar.gz")
    err = _refused(path, [keys["pub"]])
    assert err.reason == "unsigned" and err.exit_code == EXIT_UNTRUSTED


def test_runtime_load_refuses_another_key(rogue_signed: Path, keys: dict[str, Path]) -> None:
    from edge_sdk.signing import load_public_keys

    err = _refused(rogue_signed, load_public_keys(keys["pub"]))  # a loaded key map works too
    assert err.reason == "unknown_key"


def test_runtime_load_accepts_the_right_key(
    signed: Path, tiny_gcn_bundle: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    inputs, expected = Bundle.open(tiny_gcn_bundle).load_canary()
    archive = pack(signed, tmp_path / "signed.tar.gz")
    # A .pub file, or a directory of them (it holds the rogue key too: any trusted key will do).
    cases = [(signed, keys["pub"]), (archive, keys["pub"]), (signed, keys["pub"].parent)]
    for path, trusted in cases:
        with Runtime.load(path, trusted_keys=[trusted]) as rt:
            got = rt.infer(inputs)
        np.testing.assert_allclose(got["out"], expected["out"], atol=1e-5)
    # An opened Bundle is checked too.
    assert _refused(Bundle.open(tiny_gcn_bundle), [keys["pub"]]).reason == "unsigned"
    Runtime.load(Bundle.open(signed), trusted_keys=[keys["pub"]]).close()


def test_signed_archive_with_edited_manifest_extracts_nothing(
    edited: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    """The signature is checked on the archive's manifest before any file is extracted."""
    archive = pack(edited, tmp_path / "edited.tar.gz")
    dest = tmp_path / "dest"
    with pytest.raises(UntrustedBundleError) as info:
        unpack(archive, dest, trusted_keys=[keys["pub"]])
    assert info.value.reason == "mismatch"
    assert list(dest.iterdir()) == []


def test_signature_status(
    signed: Path, edited: Path, rogue_signed: Path, tiny_gcn_bundle: Path, keys: dict[str, Path]
) -> None:
    from edge_sdk.signing import key_id, load_private_key, signature_status

    kid = key_id(load_private_key(keys["key"]).public_key())
    trusted = [keys["pub"]]
    assert signature_status(signed, trusted).state == "valid"
    assert signature_status(signed, trusted).key_id == kid
    assert signature_status(signed).state == "not checked"
    assert signature_status(signed).key_id == kid
    bad = signature_status(edited, trusted)
    assert (bad.state, bad.key_id) == ("invalid", kid)
    assert bad.error is not None and bad.error.reason == "mismatch"
    other = signature_status(rogue_signed, trusted)
    assert other.state == "invalid" and other.error is not None
    assert other.error.reason == "unknown_key"
    assert signature_status(tiny_gcn_bundle).state == "unsigned"
    assert signature_status(tiny_gcn_bundle).error is None  # no keys: information, not refusal
    unsigned = signature_status(tiny_gcn_bundle, trusted)
    assert unsigned.state == "unsigned" and unsigned.error is not None


# -- edge-export verify / inspect ---------------------------------------------------------------


def _status_line(stderr: str) -> str:
    return next(ln for ln in stderr.splitlines() if ln.startswith("signature: "))


def test_verify_cli_refuses_untrusted_bundles_with_exit_5(
    signed: Path, edited: Path, rogue_signed: Path, tiny_gcn_bundle: Path, keys: dict[str, Path]
) -> None:
    pub = str(keys["pub"])
    for bundle in (edited, rogue_signed, tiny_gcn_bundle):
        proc = edge_export("verify", str(bundle), "--key", pub, check=EXIT_UNTRUSTED)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr
        assert proc.stdout == ""  # refused before parity ran
    ok = edge_export(
        "verify", str(signed), "--key", pub, "--backend", "onnxruntime", "--json", check=0
    )
    assert [r["report"]["passed"] for r in json.loads(ok.stdout)] == [True]
    assert _status_line(ok.stderr).startswith("signature: valid")
    # Without --key the signature is not a gate (exit 0 on the edited bundle).
    edge_export("verify", str(edited), "--backend", "onnxruntime", "--json", check=0)


def test_inspect_cli_shows_the_signature_status(
    signed: Path, edited: Path, tiny_gcn_bundle: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    pub = str(keys["pub"])
    archive = pack(edited, tmp_path / "edited.tar.gz")
    for bundle in (edited, archive):
        bad = edge_export("inspect", str(bundle), "--key", pub, "--json", check=EXIT_UNTRUSTED)
        assert _status_line(bad.stderr).startswith("signature: invalid")
        # The manifest is still shown, so the operator sees what was changed.
        assert json.loads(bad.stdout)["model"]["version"] == "9.9.9"
    good = edge_export("inspect", str(signed), "--key", pub, "--json", check=0)
    assert _status_line(good.stderr).startswith("signature: valid")
    plain = edge_export("inspect", str(signed), "--json", check=0)
    assert _status_line(plain.stderr).startswith("signature: not checked")
    unsigned = edge_export("inspect", str(tiny_gcn_bundle), "--json", check=0)
    assert _status_line(unsigned.stderr) == "signature: unsigned"
    refused = edge_export("inspect", str(tiny_gcn_bundle), "--key", pub, check=EXIT_UNTRUSTED)
    assert _status_line(refused.stderr) == "signature: unsigned"


# -- edge-node -------------------------------------------------------------------------------


def _edge_node(*args: str) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("edge-node")
    return subprocess.Popen(
        [str(exe), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "EDGE_SDK_HTTP_TOKEN": ""},
    )


def test_node_serve_refuses_untrusted_bundles(
    edited: Path, rogue_signed: Path, tiny_gcn_bundle: Path, keys: dict[str, Path]
) -> None:
    """It exits 5 with one error line; a node that served would time out here instead."""
    for bundle in (edited, rogue_signed, tiny_gcn_bundle):
        proc = _edge_node("serve", str(bundle), "--port", "0", "--trusted-key", str(keys["pub"]))
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == EXIT_UNTRUSTED, err
        assert [ln for ln in err.splitlines() if ln.startswith("error: ")], err


def test_node_serve_serves_a_trusted_bundle(signed: Path, keys: dict[str, Path]) -> None:
    proc = _edge_node("serve", str(signed), "--port", "0", "--trusted-key", str(keys["pub"]))
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "edge-node serve:" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
        assert "edge-node serve:" in line, proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_node_run_refuses_an_unsigned_first_bundle_and_installs_nothing(
    tiny_gcn_bundle: Path, edited: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from edge_sdk.cli.node_cli import app
    from edge_sdk.node.slots import ModelSlots

    for bundle in (tiny_gcn_bundle, edited):
        state = tmp_path / f"state-{bundle.name}"
        args = ["run", "--bundle", str(bundle), "--state-dir", str(state)]
        res = CliRunner().invoke(app, [*args, "--trusted-key", str(keys["pub"]), "--duration", "0"])
        assert res.exit_code == EXIT_UNTRUSTED, res.output
        assert ModelSlots(state / "models").active() is None  # nothing was installed


def test_node_refuses_a_tampered_active_slot_on_restart(
    signed: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    from edge_sdk.node import EdgeNode, NodeConfig

    cfg = NodeConfig(
        node_id="n1", bundle=signed, state_dir=tmp_path / "state", trusted_keys=[keys["pub"]]
    )
    node = EdgeNode(cfg)
    active = node.slots.active()
    node.stop()
    assert active is not None and (active / "manifest.sig").is_file()
    _edited(active, tmp_path / "tampered")  # same edit, applied to the slot itself
    shutil.rmtree(active)
    shutil.copytree(tmp_path / "tampered", active)
    with pytest.raises(UntrustedBundleError) as info:
        EdgeNode(cfg.model_copy(update={"bundle": None}))
    assert info.value.reason == "mismatch"
