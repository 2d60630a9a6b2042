"""Resumable chunked OTA download: offers, chunk checks, resume after restart."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_sdk import Bundle, pack
from edge_sdk.errors import UpdateError
from edge_sdk.manifest import MANIFEST_NAME
from edge_sdk.mqtt.transfer import (
    DEFAULT_MAX_BUNDLE_BYTES,
    MAX_CHUNK_SIZE,
    Download,
    Offer,
    iter_chunks,
    read_chunk,
)

CHUNK = 4096
SIZE = 10 * CHUNK + 123  # 11 chunks, the last one short
SIG = {"alg": "ed25519", "key_id": "0" * 16, "signature": "AA=="}


def offer_doc(data: bytes, chunk_size: int = CHUNK, **override: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "deployment": "dep-1",
        "name": "tiny-gcn",
        "version": "2.0.0",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "chunk_size": chunk_size,
        "chunks": [
            hashlib.sha256(data[i : i + chunk_size]).hexdigest()
            for i in range(0, len(data), chunk_size)
        ],
        "manifest": '{"schema_version": "1.1"}\n',
        "signature": SIG,
        "force": False,
        "created": 1_700_000_000.5,
    }
    doc.update(override)
    return doc


@pytest.fixture
def data() -> bytes:
    return random.Random(7).randbytes(SIZE)


@pytest.fixture
def offer(data: bytes) -> Offer:
    return Offer.model_validate(offer_doc(data))


def chunk(data: bytes, i: int, size: int = CHUNK) -> bytes:
    return data[i * size : (i + 1) * size]


# -- download ------------------------------------------------------------------------------


def test_chunks_in_random_order(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    assert dl.progress() == (0, 11)
    assert dl.missing() == list(range(11))
    assert dl.missing(limit=3) == [0, 1, 2]
    order = list(range(11))
    random.Random(1).shuffle(order)
    for n, i in enumerate(order, 1):
        assert not dl.complete()
        dl.write_chunk(i, chunk(data, i))
        assert dl.progress() == (n, 11)
        assert i not in dl.missing()
    assert dl.complete()
    dl.write_chunk(order[0], chunk(data, order[0]))  # a duplicate is harmless
    archive = dl.finalize()
    assert archive == dl.archive_path
    assert archive.read_bytes() == data
    assert dl.finalize() == archive  # idempotent


def test_bad_chunk_is_refused_and_still_missing(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    bad = bytearray(chunk(data, 3))
    bad[100] ^= 0x01
    with pytest.raises(UpdateError) as info:
        dl.write_chunk(3, bytes(bad))
    assert info.value.step == "download"
    assert "chunk 3 sha256 mismatch" in str(info.value)
    assert 3 in dl.missing()
    assert dl.progress() == (0, 11)
    # nothing was recorded on disk either
    assert 3 in Download(tmp_path / "dep-1", offer).missing()
    dl.write_chunk(3, chunk(data, 3))
    assert 3 not in dl.missing()


@pytest.mark.parametrize(
    ("index", "payload", "match"),
    [
        (0, lambda d: chunk(d, 0)[:-1], "chunk 0 has 4095 bytes, expected 4096"),
        (0, lambda d: chunk(d, 0) + b"x", "chunk 0 has 4097 bytes, expected 4096"),
        (10, lambda d: chunk(d, 10) + b"\x00", "chunk 10 has 124 bytes, expected 123"),
        (10, lambda d: b"", "chunk 10 has 0 bytes, expected 123"),
        (11, lambda d: chunk(d, 0), r"chunk index 11 out of range 0\.\.10"),
        (-1, lambda d: chunk(d, 0), "out of range"),
        (True, lambda d: chunk(d, 1), "must be an int"),
    ],
)
def test_wrong_length_or_index(
    tmp_path: Path, data: bytes, offer: Offer, index: Any, payload: Any, match: str
) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    with pytest.raises(UpdateError, match=match):
        dl.write_chunk(index, payload(data))
    assert dl.progress() == (0, 11)


def test_last_chunk_is_short(tmp_path: Path, data: bytes, offer: Offer) -> None:
    assert len(chunk(data, 10)) == 123
    dl = Download(tmp_path / "dep-1", offer)
    dl.write_chunk(10, chunk(data, 10))
    assert dl.missing() == list(range(10))


def test_resume_after_restart(tmp_path: Path, data: bytes, offer: Offer) -> None:
    first = Download(tmp_path / "dep-1", offer)
    assert not first.resumed
    for i in (0, 2, 5, 10):
        first.write_chunk(i, chunk(data, i))
    del first  # the process dies

    again = Download(tmp_path / "dep-1", Offer.parse(offer.to_json()))
    assert again.resumed
    assert again.progress() == (4, 11)
    assert again.missing() == [1, 3, 4, 6, 7, 8, 9]
    for i in again.missing():
        again.write_chunk(i, chunk(data, i))
    assert again.finalize().read_bytes() == data


def test_resume_refetches_damaged_chunks(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    for i in range(11):
        dl.write_chunk(i, chunk(data, i))
    del dl
    with (tmp_path / "dep-1" / "bundle.part").open("r+b") as fh:
        fh.seek(6 * CHUNK + 5)
        fh.write(b"\xff\xfe")
    again = Download(tmp_path / "dep-1", offer)
    assert again.missing() == [6]
    again.write_chunk(6, chunk(data, 6))
    assert again.finalize().read_bytes() == data


def test_kill_between_write_and_record(tmp_path: Path, data: bytes, offer: Offer) -> None:
    """Bytes on disk but not recorded: the chunk is simply fetched again."""
    dl = Download(tmp_path / "dep-1", offer)
    dl.write_chunk(0, chunk(data, 0))
    with (tmp_path / "dep-1" / "bundle.part").open("r+b") as fh:  # write happened...
        fh.seek(4 * CHUNK)
        fh.write(chunk(data, 4))
    del dl  # ...and the process died before recording it
    again = Download(tmp_path / "dep-1", offer)
    assert again.missing() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_different_offer_starts_over(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    for i in range(5):
        dl.write_chunk(i, chunk(data, i))
    other_data = data[::-1]
    other = Offer.model_validate(offer_doc(other_data))  # same deployment id, other archive
    fresh = Download(tmp_path / "dep-1", other)
    assert not fresh.resumed
    assert fresh.progress() == (0, 11)
    for i in range(11):
        fresh.write_chunk(i, chunk(other_data, i))
    assert fresh.finalize().read_bytes() == other_data
    # the first offer in the same directory now starts over as well
    assert Download(tmp_path / "dep-1", offer).progress() == (0, 11)


def test_same_archive_other_chunking_starts_over(tmp_path: Path, data: bytes) -> None:
    dl = Download(tmp_path / "d", Offer.model_validate(offer_doc(data)))
    dl.write_chunk(0, chunk(data, 0))
    rechunked = Offer.model_validate(offer_doc(data, chunk_size=2 * CHUNK))
    again = Download(tmp_path / "d", rechunked)
    assert again.progress() == (0, 6)


def test_finalize_incomplete(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    dl.write_chunk(0, chunk(data, 0))
    with pytest.raises(UpdateError, match="10 of 11 chunks still missing"):
        dl.finalize()
    assert not dl.archive_path.exists()


def test_finalize_whole_file_mismatch(tmp_path: Path, data: bytes) -> None:
    """Chunk hashes that agree with each other but not with the whole sha256."""
    lying = Offer.model_validate(offer_doc(data, sha256="ab" * 32))
    dl = Download(tmp_path / "dep-1", lying)
    for i in range(11):
        dl.write_chunk(i, chunk(data, i))
    with pytest.raises(UpdateError, match="does not match the offer") as info:
        dl.finalize()
    assert info.value.step == "download"
    assert not dl.archive_path.exists()
    assert dl.progress() == (0, 11)  # the data was discarded
    assert (tmp_path / "dep-1" / "bundle.part").read_bytes() != data


def test_resume_after_finalize(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    for i in range(11):
        dl.write_chunk(i, chunk(data, i))
    archive = dl.finalize()
    again = Download(tmp_path / "dep-1", offer)
    assert again.complete()
    assert again.finalize() == archive
    assert archive.read_bytes() == data


def test_discard(tmp_path: Path, data: bytes, offer: Offer) -> None:
    dl = Download(tmp_path / "dep-1", offer)
    dl.write_chunk(0, chunk(data, 0))
    dl.discard()
    assert not (tmp_path / "dep-1").exists()


def test_download_size_limit(tmp_path: Path, data: bytes, offer: Offer) -> None:
    with pytest.raises(UpdateError) as info:
        Download(tmp_path / "dep-1", offer, max_size=SIZE - 1)
    assert info.value.step == "offer"
    assert f"{SIZE} bytes exceeds" in str(info.value)
    assert not (tmp_path / "dep-1").exists()


# -- offer validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"chunks": ["00" * 32] * 10}, "10 chunk hashes for 41083 bytes"),
        ({"chunks": ["00" * 32] * 12}, "12 chunk hashes"),
        ({"sha256": "AB" * 32}, "sha256"),
        ({"sha256": "ab" * 31}, "sha256"),
        ({"sha256": "zz" * 32}, "sha256"),
        ({"chunks": ["00" * 32] * 10 + ["xyz"]}, "chunks.10"),
        ({"unexpected": 1}, "unexpected"),
        ({"deployment": "../etc"}, "deployment"),
        ({"deployment": ""}, "deployment"),
        ({"deployment": "a" * 65}, "deployment"),
        ({"size": 0}, "size"),
        ({"size": "41083"}, "size"),
        ({"chunk_size": 1024}, "chunk_size"),
        ({"chunk_size": MAX_CHUNK_SIZE + 1}, "chunk_size"),
        ({"name": ""}, "name"),
        ({"signature": {"alg": 1}}, "signature"),
    ],
)
def test_offer_validation(data: bytes, override: dict[str, Any], field: str) -> None:
    doc = offer_doc(data, **override)
    with pytest.raises(ValidationError, match=field):
        Offer.model_validate(doc)
    with pytest.raises(UpdateError) as info:
        Offer.parse(json.dumps(doc))
    assert info.value.step == "offer"


def test_missing_field() -> None:
    with pytest.raises(UpdateError, match="field sha256: Field required"):
        Offer.parse({k: v for k, v in offer_doc(b"x" * 10).items() if k != "sha256"})
    with pytest.raises(UpdateError, match="not valid JSON"):
        Offer.parse(b"{oops")


def test_offer_size_limit() -> None:
    big = DEFAULT_MAX_BUNDLE_BYTES + 1
    n = math.ceil(big / MAX_CHUNK_SIZE)
    doc = offer_doc(b"x", size=big, chunk_size=MAX_CHUNK_SIZE, chunks=["00" * 32] * n)
    with pytest.raises(UpdateError, match="exceeds the node's limit of 536870912 bytes"):
        Offer.parse(doc)
    assert Offer.parse(doc, max_size=big).size == big
    doc.update(size=DEFAULT_MAX_BUNDLE_BYTES, chunks=["00" * 32] * (n - 1))
    assert Offer.parse(doc).size == DEFAULT_MAX_BUNDLE_BYTES
    with pytest.raises(UpdateError, match="limit of 1000 bytes"):
        Offer.parse(doc, max_size=1000)


def test_offer_json_round_trip(offer: Offer) -> None:
    assert Offer.parse(offer.to_json()) == offer
    assert offer.total_chunks == 11
    assert [offer.chunk_length(i) for i in (0, 9, 10)] == [CHUNK, CHUNK, 123]


# -- fleet side ----------------------------------------------------------------------------


def test_build_offer_from_a_bundle(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    archive = pack(tiny_gcn_bundle, tmp_path / "b.tar.gz")
    raw = archive.read_bytes()
    manifest_text = (tiny_gcn_bundle / MANIFEST_NAME).read_text(encoding="utf-8")
    offer = Offer.build(archive, "rollout-7", SIG, manifest_text, chunk_size=4096, force=True)
    assert (offer.name, offer.version) == ("tiny-gcn", "1.0.0")
    assert offer.size == len(raw)
    assert offer.sha256 == hashlib.sha256(raw).hexdigest()
    assert offer.total_chunks == math.ceil(len(raw) / 4096)
    assert offer.manifest == manifest_text
    assert offer.force and offer.signature == SIG
    chunks = list(iter_chunks(archive, 4096))
    assert b"".join(chunks) == raw
    assert all(read_chunk(archive, i, 4096) == c for i, c in enumerate(chunks))
    with pytest.raises(UpdateError, match="out of range"):
        read_chunk(archive, len(chunks), 4096)

    # the node side: random order, finalize, and it is the same bundle
    dl = Download(tmp_path / "node" / offer.deployment, Offer.parse(offer.to_json()))
    for i in random.Random(3).sample(range(len(chunks)), len(chunks)):
        dl.write_chunk(i, read_chunk(archive, i, offer.chunk_size))
    bundle = Bundle.open(dl.finalize())
    assert bundle.manifest.model.name == "tiny-gcn"
