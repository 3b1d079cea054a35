"""What the gateway does to content on its way out (gateway/services/provenance.py): a real
MP4 is signed and filed in the index, anything else goes out as it came, with a reason
logged and counted."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import Any

import c2pa
import pytest
import responses

from gateway.services.provenance import DeliveryCut
from gateway.simulator.content import video_chunks
from gateway.state import GatewayState
from gateway.upstream.client import STREAM_CHUNK_BYTES
from keys.access.lifecycle import IssuedKey
from keys.models import Delivery
from keys.provenance.manifests import read_manifest
from keys.provenance.mp4 import C2PA_UUID, check_mp4
from keys.store import Store
from tests.helpers import UPSTREAM_URL, bearer
from tests.upstream.test_proxy_hygiene import own_video

VIDEOS = f"{UPSTREAM_URL}/videos"


def serve(upstream: responses.RequestsMock, body: bytes, content_type: str) -> None:
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_p/content",
        body=body,
        content_type=content_type,
        headers={"Content-Length": str(len(body)), "ETag": '"v1"'},
    )


def download(client: Any, key: IssuedKey) -> Any:
    return client.get("/v1/videos/video_p/content", headers=bearer(key.secret))


def deliveries(store: Store) -> list[Delivery]:
    with store.read() as tx:
        return tx.deliveries.of_video("video_p")


def outcomes(client: Any) -> str:
    text = client.get("/metrics").get_data(as_text=True)
    return "\n".join(line for line in text.splitlines() if line.startswith("drawbridge_provenance"))


def test_an_mp4_is_signed_and_indexed(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, state: GatewayState
) -> None:
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 300_000))
    serve(upstream, original, "video/mp4")

    response = download(client, key)

    data = response.get_data()
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(data)) != str(len(original))
    assert "ETag" not in response.headers  # the backend's tag would lie about these bytes
    (row,) = deliveries(state.store)
    assert response.headers["X-Drawbridge-Download-Id"] == row.id
    assert (row.unsigned_reason, row.downloading_key_id, row.route) == (
        None,
        key.key.id,
        "download",
    )
    anchors = "".join(state.store.read().__enter__().provenance_signers.trust_anchors())
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": anchors}})
    with c2pa.Reader("video/mp4", io.BytesIO(data), context=context) as reader:
        assert reader.get_validation_state() == "Trusted"
    assert 'outcome="signed"} 1' in outcomes(client)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"\x00" * 5000, "video/mp4"), (b"GIF89a" + b"\x00" * 100, "image/gif")],
)
def test_what_cannot_be_signed_goes_out_unchanged_and_is_counted(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    state: GatewayState,
    body: bytes,
    content_type: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own_video(client, key, upstream, "video_p")
    serve(upstream, body, content_type)

    response = download(client, key)

    assert response.get_data() == body
    assert response.headers["ETag"] == '"v1"'
    (row,) = deliveries(state.store)
    assert row.unsigned_reason == "not_mp4" and row.original_sha256 == row.delivered_sha256
    assert "goes out unsigned: not_mp4" in caplog.text
    assert 'outcome="not_mp4"} 1' in outcomes(client)


@pytest.mark.parametrize("settings_overrides", [{"provenance_sign": False}])
def test_signing_can_be_turned_off(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, state: GatewayState
) -> None:
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 100_000))
    serve(upstream, original, "video/mp4")
    assert download(client, key).get_data() == original
    assert deliveries(state.store) == []


def lying(upstream: responses.RequestsMock, body: bytes, declared: int) -> None:
    """A backend whose Content-Length is not its body's."""
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_p/content",
        body=body,
        content_type="video/mp4",
        headers={"Content-Length": str(declared)},
        auto_calculate_content_length=False,
    )


@pytest.mark.parametrize("change", ["truncated", "longer", "broken_boxes"])
def test_a_body_that_goes_wrong_midway_is_cut_and_never_signed(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    state: GatewayState,
    change: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 300_000))
    if change == "truncated":
        lying(upstream, original[:200_000], len(original))
    elif change == "longer":
        lying(upstream, original + b"\x00" * 5000, len(original))
    else:  # a whole MP4, then, past the first chunk streamed out, a box of impossible size
        original = b"".join(video_chunks("video_p", "1280x720", 4, STREAM_CHUNK_BYTES + 1000))
        serve(upstream, original + struct.pack(">I4s", 4, b"junk"), "video/mp4")

    received = b""
    # Ours, or (cut short) the backend client's own error: either way the body stops, on
    # its first chunk or a later one.
    with pytest.raises(DeliveryCut if change != "truncated" else Exception):
        response = client.get(
            "/v1/videos/video_p/content", headers=bearer(key.secret), buffered=False
        )
        for chunk in response.response:
            received += chunk
    assert len(received) <= len(original) + 8
    assert C2PA_UUID not in received  # no manifest went out
    assert deliveries(state.store) == []  # nothing filed as delivered
    assert "cut, unsigned" in caplog.text
    assert 'outcome="cut"} 1' in outcomes(client)


def test_the_first_bytes_go_out_before_the_backend_sent_its_last(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, state: GatewayState
) -> None:
    """The signed download streams: the client holds the first chunk while the backend's
    body is still being read (nothing is spooled whole first)."""
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 3_000_000))
    serve(upstream, original, "video/mp4")

    response = client.get("/v1/videos/video_p/content", headers=bearer(key.secret), buffered=False)
    body = iter(response.response)
    first = next(body)
    assert original.startswith(first) and len(first) < len(original)
    assert deliveries(state.store) == []  # filed only once the last byte went through
    rest = b"".join(body)
    data = first + rest
    assert data[: len(original)] == original  # the backend's bytes, untouched
    assert data[len(original) + 8 : len(original) + 24] == C2PA_UUID  # then the manifest
    (row,) = deliveries(state.store)
    assert row.original_sha256 == hashlib.sha256(original).hexdigest()
    assert row.delivered_sha256 == hashlib.sha256(data).hexdigest()
    assert row.media_sha256 == check_mp4(io.BytesIO(original), len(original))


def hard_binding(data: bytes, anchors: str) -> dict[str, Any]:
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": anchors}})
    with c2pa.Reader("video/mp4", io.BytesIO(data), context=context) as reader:
        assert reader.get_validation_state() == "Trusted"
        store = json.loads(reader.detailed_json())
    binding: dict[str, Any] = store["manifests"][store["active_manifest"]]["assertion_store"]
    return binding["c2pa.hash.bmff.v3"]


def test_a_repeat_download_signs_with_the_first_ones_bmff_hash(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, state: GatewayState
) -> None:
    """The first delivery of some bytes has c2pa hash them (a copy, after the last byte);
    the next signs with the binding it left, a manifest of its own over the same hash."""
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 300_000))
    serve(upstream, original, "video/mp4")

    assert len(state.signers.bindings) == 0
    first = download(client, key).get_data()
    assert len(state.signers.bindings) == 1
    second = download(client, key).get_data()
    anchors = "".join(state.store.read().__enter__().provenance_signers.trust_anchors())

    assert first[: len(original)] == second[: len(original)] == original
    assert first != second  # each download its own manifest
    assert hard_binding(first, anchors) == hard_binding(second, anchors)
    rows = deliveries(state.store)
    assert len({row.id for row in rows}) == 2
    assert {row.media_sha256 for row in rows} == {check_mp4(io.BytesIO(original), len(original))}
    assert {row.original_sha256 for row in rows} == {hashlib.sha256(original).hexdigest()}
    assert {row.delivered_sha256 for row in rows} == {
        hashlib.sha256(first).hexdigest(),
        hashlib.sha256(second).hexdigest(),
    }
    tampered = bytearray(second)
    tampered[len(original) // 2] ^= 0x01
    reading = read_manifest(io.BytesIO(bytes(tampered)), [anchors])
    assert reading.state == "invalid" and "assertion.bmffHash.mismatch" in reading.failures


def test_changed_bytes_under_a_known_binding_are_cut_not_signed(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    state: GatewayState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Same video, length and ETag, other bytes: the binding is for the first bytes, so the
    second download gets no manifest (and the next hashes again)."""
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 300_000))
    serve(upstream, original, "video/mp4")
    download(client, key).get_data()
    changed = bytearray(original)
    changed[-10] ^= 0x01
    upstream.replace(
        responses.GET,
        f"{VIDEOS}/video_p/content",
        body=bytes(changed),
        content_type="video/mp4",
        headers={"Content-Length": str(len(changed)), "ETag": '"v1"'},
    )

    with pytest.raises(DeliveryCut):
        response = download(client, key)
        response.get_data()
    assert "bytes changed" in caplog.text
    assert len(state.signers.bindings) == 0
    assert len(deliveries(state.store)) == 1  # only the first
    third = download(client, key).get_data()
    assert third[: len(changed)] == bytes(changed)
    anchors = "".join(state.store.read().__enter__().provenance_signers.trust_anchors())
    assert read_manifest(io.BytesIO(third), [anchors]).state == "valid"


def test_a_body_whose_first_chunk_is_no_mp4_goes_out_unsigned_as_it_came(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, state: GatewayState
) -> None:
    # Nothing has gone out yet when the first chunk shows the boxes do not add up: the body
    # is delivered unchanged (filed, counted "not_mp4"), not cut.
    own_video(client, key, upstream, "video_p")
    original = b"".join(video_chunks("video_p", "1280x720", 4, 300_000))
    broken = original[:40] + struct.pack(">I4s", len(original), b"mdat") + original[48:]
    serve(upstream, broken, "video/mp4")

    assert download(client, key).get_data() == broken
    (row,) = deliveries(state.store)
    assert row.unsigned_reason == "not_mp4"
    assert 'outcome="not_mp4"} 1' in outcomes(client)
