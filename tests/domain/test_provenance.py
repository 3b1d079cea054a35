"""keys/provenance: the signing identity, manifests signed and read with c2pa, the bounded
MP4 walk, and identify, on real MP4s made by the simulator's encoder."""

from __future__ import annotations

import hashlib
import io
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.simulator.content import video_chunks
from keys.access.vault import Vault
from keys.errors import InvalidInput
from keys.provenance.identify import examine, identify
from keys.provenance.identity import unlock
from keys.provenance.manifests import DeliveryFacts, DeliveryManifest, read_manifest, sign_mp4
from keys.provenance.mp4 import MAX_DEPTH, NotAnMp4, StreamedMp4, check_mp4, without_c2pa
from keys.provenance.signer_cache import SignerCache
from keys.store import Store
from tests.helpers import TEST_ROOT_SECRET

VAULT = Vault(TEST_ROOT_SECRET)


def mp4(video_id: str = "video_a", size: int = 50_000) -> bytes:
    return b"".join(video_chunks(video_id, "1280x720", 4, size))


def facts(download_id: str = "dl_1", seq: int = 7, **changes: object) -> DeliveryFacts:
    values: dict[str, object] = {
        "download_id": download_id,
        "downloaded_at": "2026-12-07T00:00:00+00:00",
        "route": "download",
        "generation_id": "video_a",
        "model": "sora-2",
        "prompt_hmac_sha256": "ab" * 32,
        "key_id": "key_1",
        "tester_id": "tst_1",
        "cohort": "default",
        "downloading_key_id": "key_1",
        "recipient": "key:key_1",
        "audit_seq": seq,
        "signer_key_id": "0" * 16,
    }
    values.update(changes)
    return DeliveryFacts(**values)  # type: ignore[arg-type]


def signed(store: Store, data: bytes, delivery: DeliveryFacts) -> bytes:
    with store.transaction() as tx:
        identity = unlock(tx.provenance_signers.ensure(VAULT), VAULT)
    out = io.BytesIO()
    sign_mp4(identity.chain_pem, identity.private_key_pem, delivery, io.BytesIO(data), out)
    return out.getvalue()


def record_delivery(
    store: Store, download_id: str, video_id: str, original: bytes, delivered: bytes
) -> None:
    """File a delivery in the index the way the gateway does."""
    with store.transaction() as tx:
        tx.deliveries.record(
            id=download_id,
            at=store.clock(),
            request_id="req_" + download_id,
            route="download",
            video_id=video_id,
            tester_id="tst_1",
            key_id="key_1",
            cohort="default",
            recipient="key:key_1",
            downloading_key_id="key_1",
            audit_seq=7,
            signer_generation=1,
            delivered_bytes=len(delivered),
            delivered_sha256=hashlib.sha256(delivered).hexdigest(),
            original_sha256=hashlib.sha256(original).hexdigest(),
            media_sha256=check_mp4(io.BytesIO(original), len(original)),
        )


def anchors(store: Store) -> list[str]:
    with store.read() as tx:
        return tx.provenance_signers.trust_anchors()


def test_the_identity_is_made_once_and_a_manifest_validates_against_its_root(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.provenance_signers.ensure(VAULT)
    with store.transaction() as tx:
        assert tx.provenance_signers.ensure(VAULT).key_id == first.key_id
        assert "PRIVATE KEY" not in first.key_encrypted + first.root_key_encrypted
    data = signed(store, mp4(), facts())
    reading = read_manifest(io.BytesIO(data), anchors(store))
    assert (reading.state, reading.failures) == ("valid", ())
    assert reading.delivery is not None
    assert (reading.delivery["download_id"], reading.delivery["audit_seq"]) == ("dl_1", 7)
    assert "prompt" not in reading.delivery


def test_a_changed_byte_or_a_foreign_root_is_invalid_and_no_manifest_is_absent(
    store: Store,
) -> None:
    data = bytearray(signed(store, mp4(), facts()))
    data[-10] ^= 0xFF  # in the media data
    assert read_manifest(io.BytesIO(bytes(data)), anchors(store)).state == "invalid"
    assert read_manifest(io.BytesIO(mp4()), anchors(store)).state == "absent"
    # Checked against no anchor of ours (another deployment's roots): sound but untrusted.
    foreign = read_manifest(io.BytesIO(signed(store, mp4(), facts())), [])
    assert (foreign.state, foreign.failures) == ("invalid", ("signingCredential.untrusted",))


def test_rotation_signs_with_a_new_certificate_and_old_files_still_verify(store: Store) -> None:
    old = signed(store, mp4(), facts())
    with store.transaction() as tx:
        before = tx.provenance_signers.ensure(VAULT)
        after = tx.provenance_signers.rotate(VAULT, "admin:test")
        fresh_root = tx.provenance_signers.rotate(VAULT, "admin:test", new_root=True)
    assert after.key_id != before.key_id and after.root_cert_pem == before.root_cert_pem
    assert fresh_root.root_cert_pem != before.root_cert_pem
    new = signed(store, mp4(), facts("dl_2"))
    assert len(anchors(store)) == 2
    for data in (old, new):
        assert read_manifest(io.BytesIO(data), anchors(store)).state == "valid"
    with store.read() as tx:
        actions = [entry.action for entry in tx.audit.entries()]
    assert actions.count("provenance.signer_created") == 3


def test_the_mp4_walk_refuses_what_is_not_a_whole_mp4() -> None:
    data = mp4()
    assert check_mp4(io.BytesIO(data), len(data)) == check_mp4(io.BytesIO(data), len(data))
    cases = {
        "not a video": b"PK\x03\x04" + b"\x00" * 100,
        "truncated": data[: len(data) // 2],
        "tiny": b"\x00\x00",
    }
    nested = struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00"
    inner = b""
    for _ in range(MAX_DEPTH + 2):
        inner = struct.pack(">I4s", 8 + len(inner), b"moov") + inner
    cases["nesting"] = nested + inner
    for bad in cases.values():
        with pytest.raises(NotAnMp4):
            check_mp4(io.BytesIO(bad), len(bad))


def test_identify_by_manifest_by_hash_and_unknown(store: Store) -> None:
    original = mp4("video_b")
    delivered = signed(store, original, facts("dl_9", generation_id="video_b"))
    record_delivery(store, "dl_9", "video_b", original, delivered)
    roots = anchors(store)
    with store.transaction() as tx:
        by_manifest = identify(tx, examine(io.BytesIO(delivered), roots), "auditor:test")
        bare = examine(io.BytesIO(without_c2pa(delivered)), roots)
        stripped = identify(tx, bare, "auditor:test")
        # The container changed (a box added after ftyp), the media data kept.
        ftyp = struct.unpack(">I", original[:4])[0]
        remuxed_bytes = original[:ftyp] + struct.pack(">I4s", 16, b"free") + b"x" * 8
        remuxed_bytes += original[ftyp:]
        remuxed = identify(tx, examine(io.BytesIO(remuxed_bytes), roots), "auditor:test")
        raw = identify(tx, examine(io.BytesIO(original), roots), "auditor:test")
        stranger = identify(tx, examine(io.BytesIO(mp4("video_never")), roots), "auditor:test")
    with pytest.raises(InvalidInput):
        examine(io.BytesIO(b"not a video at all"), roots)
    assert (by_manifest.verdict, by_manifest.manifest, by_manifest.matched_by) == (
        "identified",
        "valid",
        "manifest",
    )
    assert by_manifest.deliveries[0]["download_id"] == "dl_9"
    # The manifest is appended after the backend's bytes: stripped, they are those bytes.
    assert bare.sha256 == hashlib.sha256(original).hexdigest()
    assert (stripped.manifest, stripped.matched_by) == ("absent", "original_hash")
    assert stripped.deliveries[0]["download_id"] == "dl_9"
    assert (remuxed.manifest, remuxed.matched_by) == ("absent", "media_hash")
    assert raw.matched_by == "original_hash"
    assert (stranger.verdict, stranger.deliveries) == ("unknown", [])
    with store.read() as tx:
        looked_up = [e for e in tx.audit.entries() if e.action == "provenance.identify"]
    assert len(looked_up) == 5


@pytest.mark.parametrize("chunk", [1, 7, 8, 9, 4096, 1 << 20])
def test_the_streamed_walk_agrees_with_the_whole_file_walk_at_any_chunk_size(chunk: int) -> None:
    data = mp4("video_s", 200_000)
    walk = StreamedMp4(len(data))
    for start in range(0, len(data), chunk):
        walk.feed(data[start : start + chunk])
    assert walk.finish() == check_mp4(io.BytesIO(data), len(data))


def test_the_streamed_walk_refuses_what_the_whole_file_walk_refuses() -> None:
    data = mp4("video_s")
    ftyp = struct.unpack(">I", data[:4])[0]
    deep = data[:ftyp] + nested(MAX_DEPTH + 2)
    past_the_end = data[:ftyp] + struct.pack(">I4s", 1000, b"mdat") + b"x" * 10
    for bad in (b"\x00" * 64, data[:-1], past_the_end, deep):
        with pytest.raises(NotAnMp4):
            check_mp4(io.BytesIO(bad), len(bad))
        walk = StreamedMp4(len(bad))
        with pytest.raises(NotAnMp4):
            walk.feed(bad)
            walk.finish()
    # Truncated: what arrived is fine so far, the end is missing.
    walk = StreamedMp4(len(data))
    walk.feed(data[:-100])
    with pytest.raises(NotAnMp4):
        walk.finish()


def nested(depth: int) -> bytes:
    box = struct.pack(">I4s", 8, b"free")
    for _ in range(depth):
        box = struct.pack(">I4s", 8 + len(box), b"moov") + box
    return box


def test_the_streamed_walk_reads_64_bit_box_sizes() -> None:
    ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00"
    payload = bytes(range(256)) * 40
    data = ftyp + struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload)) + payload
    for chunk in (1, 5, 12, len(data)):
        walk = StreamedMp4(len(data))
        for start in range(0, len(data), chunk):
            walk.feed(data[start : start + chunk])
        assert walk.finish() == check_mp4(io.BytesIO(data), len(data))
        assert walk.finish() == hashlib.sha256(payload).hexdigest()


def test_the_signer_cache_reads_the_generation_in_the_callers_transaction_and_keeps_one_context_per_generation(  # noqa: E501
    store: Store,
) -> None:
    signers = SignerCache(store, VAULT)
    with store.transaction() as tx:  # the first delivery ever makes the identity in its own
        first = signers.current(tx)
    context = signers.manifest_signer(first)
    with store.transaction() as tx:
        assert signers.current(tx) is first
    assert signers.manifest_signer(first) is context
    data = mp4()
    for download_id in ("dl_a", "dl_b"):  # one context signs every manifest of its generation
        manifest = DeliveryManifest(context, facts(download_id))
        manifest.hash(io.BytesIO(data))
        reading = read_manifest(io.BytesIO(data + manifest.sign()), anchors(store))
        assert reading.state == "valid" and reading.delivery is not None
        assert reading.delivery["download_id"] == download_id
    with store.transaction() as tx:
        tx.provenance_signers.rotate(VAULT, "admin:test")
    with store.transaction() as tx:  # a rotation is in force at the next delivery
        after = signers.current(tx)
    assert after.generation == first.generation + 1
    assert signers.current().generation == after.generation
    assert signers.manifest_signer(after) is not context


def test_one_generations_context_signs_from_several_threads_at_once(store: Store) -> None:
    signers = SignerCache(store, VAULT)
    context = signers.manifest_signer(signers.current())
    data = mp4()
    start = threading.Barrier(4)

    def deliver(worker: int) -> list[bytes]:
        start.wait()
        files = []
        for index in range(3):
            manifest = DeliveryManifest(context, facts(f"dl_{worker}_{index}"))
            manifest.hash(io.BytesIO(data))
            files.append(data + manifest.sign())
        return files

    with ThreadPoolExecutor(4) as pool:
        delivered = [file for files in pool.map(deliver, range(4)) for file in files]
    roots = anchors(store)
    ids = set()
    for file in delivered:
        reading = read_manifest(io.BytesIO(file), roots)
        assert reading.state == "valid" and reading.delivery is not None
        ids.add(reading.delivery["download_id"])
    assert len(ids) == 12
