"""What the gateway does to content on its way out (gateway/services/provenance.py): a real
MP4 is signed and filed in the index, anything else goes out as it came, with a reason
logged and counted."""

from __future__ import annotations

import io
from typing import Any

import c2pa
import pytest
import responses

from gateway.simulator.content import video_chunks
from gateway.state import GatewayState
from keys.access.lifecycle import IssuedKey
from keys.models import Delivery
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
