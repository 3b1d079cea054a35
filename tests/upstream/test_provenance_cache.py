"""Signed downloads from the host's content cache (gateway/services/provenance.py
``open_delivery``): a repeat delivery the backend confirms with 304 streams the cached bytes
and signs with the stored binding; anything else is the normal path, and an entry that
does not hold together is never served short or signed over bytes it does not have."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import c2pa
import pytest
import responses
from requests import PreparedRequest

from bench.harness import labelled_counts
from gateway.services.provenance import DeliveryCut
from gateway.settings import Secret
from gateway.simulator.content import video_chunks
from gateway.state import GatewayState
from gateway.upstream.client import UpstreamClient, UpstreamError
from keys.access.lifecycle import IssuedKey
from keys.models import Delivery
from keys.provenance.content_cache import entry_name
from keys.provenance.mp4 import C2PA_UUID, check_mp4
from keys.store import Store
from tests.helpers import UPSTREAM_URL, bearer
from tests.upstream.test_proxy_hygiene import own_video

CONTENT = f"{UPSTREAM_URL}/videos/video_p/content"
NAME = entry_name("video_p", "video")


class Backend:
    """A backend that tags its content with a strong ETag and answers a matching
    If-None-Match with 304, as a real HTTP server does (``honours=False``: it ignores it)."""

    def __init__(self, body: bytes, etag: str = '"v1"') -> None:
        self.body, self.etag = body, etag
        self.honours = True
        self.gone: int | None = None
        self.asked: list[str | None] = []  # the If-None-Match of each request
        self.on_304: Any = None

    def __call__(self, request: PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        condition = request.headers.get("If-None-Match")
        self.asked.append(condition)
        if self.gone is not None:
            error = {"error": {"message": "gone", "type": "invalid_request_error", "code": None}}
            return self.gone, {"Content-Type": "application/json"}, json.dumps(error).encode()
        if self.honours and condition == self.etag:
            if self.on_304 is not None:
                self.on_304()
            return 304, {"ETag": self.etag}, b""
        headers = {
            "Content-Type": "video/mp4",
            "Content-Length": str(len(self.body)),
            "ETag": self.etag,
        }
        return 200, headers, self.body


@pytest.fixture
def original() -> bytes:
    return b"".join(video_chunks("video_p", "1280x720", 4, 300_000))


@pytest.fixture
def origin(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, original: bytes
) -> Backend:
    own_video(client, key, upstream, "video_p")
    fake = Backend(original)
    upstream.add_callback(responses.GET, CONTENT, callback=fake, content_type=None)
    return fake


def download(client: Any, key: IssuedKey) -> Any:
    return client.get("/v1/videos/video_p/content", headers=bearer(key.secret))


def rows(store: Store) -> list[Delivery]:
    with store.read() as tx:
        return sorted(tx.deliveries.of_video("video_p"), key=lambda row: row.at)


def cache_outcomes(client: Any) -> dict[str, int]:
    text = client.get("/metrics").get_data(as_text=True)
    return labelled_counts(text, "drawbridge_provenance_cache_total")


def anchors_of(state: GatewayState) -> str:
    with state.store.read() as tx:
        return "".join(tx.provenance_signers.trust_anchors())


def reading(data: bytes, anchors: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(validation state, the delivery assertion, the BMFF hash assertion)."""
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": anchors}})
    with c2pa.Reader("video/mp4", io.BytesIO(data), context=context) as reader:
        state = reader.get_validation_state()
        store = json.loads(reader.detailed_json())
    assertions = store["manifests"][store["active_manifest"]]["assertion_store"]
    return state, assertions["org.drawbridge.delivery"], assertions["c2pa.hash.bmff.v3"]


def cache_dir(state: GatewayState) -> Path:
    return state.content_cache.directory


def forget_in_memory(state: GatewayState) -> None:
    """What another worker of the host knows: the disk cache, none of this one's memory."""
    state.content_cache._digests.clear()
    for key in list(state.signers.bindings._entries):
        state.signers.bindings.drop(key)


@pytest.mark.parametrize("worker", ["same", "another"])
def test_a_repeat_download_streams_the_cached_bytes_signed_with_the_stored_binding(
    client: Any,
    key: IssuedKey,
    origin: Backend,
    original: bytes,
    state: GatewayState,
    worker: str,
) -> None:
    cold = download(client, key)
    first = cold.get_data()
    assert cold.status_code == 200
    if worker == "another":
        forget_in_memory(state)  # it hashes the local file as it streams it
    sha256 = hashlib.sha256(original).hexdigest()
    assert (state.content_cache.digest_of(sha256) is not None) == (worker == "same")
    warm = download(client, key)
    second = warm.get_data()

    assert origin.asked == [None, '"v1"']  # the second was a conditional GET, answered 304
    assert cache_outcomes(client) == {"miss": 1, "hit": 1}
    assert warm.status_code == 200 and warm.headers["Content-Type"] == "video/mp4"
    assert warm.headers["Content-Length"] == str(len(second))
    assert "ETag" not in warm.headers
    # The backend sent no body the second time: these bytes are the cached ones.
    assert first[: len(original)] == second[: len(original)] == original
    assert second[len(original) + 8 : len(original) + 24] == C2PA_UUID
    anchors = anchors_of(state)
    (state_1, delivery_1, binding_1), (state_2, delivery_2, binding_2) = (
        reading(first, anchors),
        reading(second, anchors),
    )
    assert state_1 == state_2 == "Trusted"
    assert binding_1 == binding_2  # the stored binding
    assert delivery_1["download_id"] != delivery_2["download_id"]
    assert warm.headers["X-Drawbridge-Download-Id"] == delivery_2["download_id"]

    # The index row of the hit: the cold delivery's original and media hashes, and the hash
    # of what this client got.
    cold_row, hit_row = rows(state.store)
    assert hit_row.id == delivery_2["download_id"]
    assert hit_row.original_sha256 == cold_row.original_sha256
    assert hit_row.original_sha256 == hashlib.sha256(original).hexdigest()
    assert hit_row.media_sha256 == cold_row.media_sha256
    assert hit_row.media_sha256 == check_mp4(io.BytesIO(original), len(original))
    assert hit_row.delivered_sha256 == hashlib.sha256(second).hexdigest()
    assert hit_row.delivered_bytes == len(second)
    assert hit_row.unsigned_reason is None
    # Audited as every delivery is.
    with state.store.read() as tx:
        entries = [e for e in tx.audit.entries() if e.action == "video.deliver"]
    assert [e.details["download_id"] for e in entries][-2:] == [cold_row.id, hit_row.id]


def test_bytes_the_backend_changed_come_with_a_new_etag_and_replace_the_entry(
    client: Any, key: IssuedKey, origin: Backend, original: bytes, state: GatewayState
) -> None:
    download(client, key).get_data()
    changed = b"".join(video_chunks("video_p", "1280x720", 4, 310_000))
    origin.body, origin.etag = changed, '"v2"'

    again = download(client, key).get_data()
    hit = state.content_cache.open(NAME)
    assert hit is not None
    hit.close()
    latest = download(client, key).get_data()

    assert origin.asked == [None, '"v1"', '"v2"']
    assert cache_outcomes(client) == {"miss": 1, "refused": 1, "hit": 1}
    assert hit.video.etag == '"v2"' and hit.video.length == len(changed)
    assert again[: len(changed)] == latest[: len(changed)] == changed
    anchors = anchors_of(state)
    assert reading(again, anchors)[0] == reading(latest, anchors)[0] == "Trusted"
    assert {row.original_sha256 for row in rows(state.store)[1:]} == {
        hashlib.sha256(changed).hexdigest()
    }
    assert len(list(cache_dir(state).glob("*.mp4"))) == 1  # the old bytes are gone


def test_a_backend_that_ignores_if_none_match_gets_the_normal_path(
    client: Any, key: IssuedKey, origin: Backend, original: bytes, state: GatewayState
) -> None:
    origin.honours = False
    first = download(client, key).get_data()
    second = download(client, key).get_data()

    assert origin.asked == [None, '"v1"']
    assert cache_outcomes(client) == {"miss": 1, "refused": 1}
    anchors = anchors_of(state)
    assert reading(first, anchors)[0] == reading(second, anchors)[0] == "Trusted"
    assert second[: len(original)] == original
    hit = state.content_cache.open(NAME)  # kept again, from the new 200
    assert hit is not None and hit.video.etag == '"v1"'
    hit.close()


@pytest.mark.parametrize(("gone", "status"), [(404, 404), (410, 400)])
def test_a_video_gone_at_revalidation_is_the_backends_error_and_the_entry_is_dropped(
    client: Any, key: IssuedKey, origin: Backend, state: GatewayState, gone: int, status: int
) -> None:
    download(client, key).get_data()
    origin.gone = gone

    response = download(client, key)

    assert origin.asked == [None, '"v1"']
    assert response.status_code == status  # as without the cache
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert state.content_cache.open(NAME) is None
    assert list(cache_dir(state).iterdir()) in ([], [cache_dir(state) / ".lock"])
    assert cache_outcomes(client) == {"miss": 1, "refused": 1}
    assert len(rows(state.store)) == 1


def test_an_entry_cut_short_on_disk_is_dropped_and_the_download_goes_the_normal_way(
    client: Any, key: IssuedKey, origin: Backend, original: bytes, state: GatewayState
) -> None:
    download(client, key).get_data()
    (data,) = cache_dir(state).glob("*.mp4")
    os.truncate(data, len(original) // 2)

    second = download(client, key).get_data()

    assert origin.asked == [None, None]  # no entry left to revalidate: an unconditional GET
    assert second[: len(original)] == original
    assert reading(second, anchors_of(state))[0] == "Trusted"
    assert rows(state.store)[-1].delivered_sha256 == hashlib.sha256(second).hexdigest()
    hit = state.content_cache.open(NAME)  # written again, whole
    assert hit is not None and os.fstat(hit.file.fileno()).st_size == len(original)
    hit.close()


def streamed(client: Any, key: IssuedKey, received: bytearray) -> None:
    """Read a download into ``received`` as it streams (what came before a cut stays)."""
    response = client.get("/v1/videos/video_p/content", headers=bearer(key.secret), buffered=False)
    for chunk in response.response:
        received += chunk


def test_an_entry_cut_short_while_it_is_served_cuts_the_download_unsigned(
    client: Any,
    key: IssuedKey,
    origin: Backend,
    original: bytes,
    state: GatewayState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    download(client, key).get_data()
    (data,) = cache_dir(state).glob("*.mp4")
    # Between the entry's check (before the conditional GET) and its streaming.
    origin.on_304 = lambda: os.truncate(data, len(original) - 1000)

    received = bytearray()
    with pytest.raises(DeliveryCut):
        streamed(client, key, received)
    assert 0 < len(received) < len(original)
    assert C2PA_UUID not in received
    assert len(rows(state.store)) == 1  # nothing filed as delivered
    assert "cut, unsigned" in caplog.text
    assert state.content_cache.open(NAME) is None


def test_changed_cached_bytes_are_never_signed(
    client: Any, key: IssuedKey, origin: Backend, original: bytes, state: GatewayState
) -> None:
    """A worker that does not hold the original's hash state hashes the file as it streams:
    bytes changed on disk (same length) get no manifest, and the entry goes."""
    download(client, key).get_data()
    (data,) = cache_dir(state).glob("*.mp4")
    with data.open("r+b") as file:
        file.seek(len(original) - 10)
        file.write(b"\xff" * 4)
    forget_in_memory(state)

    received = bytearray()
    with pytest.raises(DeliveryCut):
        streamed(client, key, received)
    assert len(received) == len(original) and C2PA_UUID not in received  # no manifest came
    assert len(rows(state.store)) == 1
    assert state.content_cache.open(NAME) is None


@pytest.mark.parametrize("settings_overrides", [{"provenance_cache_bytes": 0}])
def test_with_no_cache_every_download_is_unconditional(
    client: Any, key: IssuedKey, origin: Backend, state: GatewayState
) -> None:
    download(client, key).get_data()
    download(client, key).get_data()
    assert origin.asked == [None, None]
    assert cache_outcomes(client) == {}
    assert not cache_dir(state).exists()


def test_a_weak_etag_is_never_cached(
    client: Any, key: IssuedKey, origin: Backend, state: GatewayState
) -> None:
    origin.etag = 'W/"v1"'
    download(client, key).get_data()
    download(client, key).get_data()
    assert origin.asked == [None, None]
    assert state.content_cache.open(NAME) is None


def test_the_upstream_client_asks_conditionally_and_hands_back_a_304_without_a_body(
    upstream: responses.RequestsMock, original: bytes
) -> None:
    fake = Backend(original)
    upstream.add_callback(responses.GET, CONTENT, callback=fake, content_type=None)
    client = UpstreamClient(UPSTREAM_URL, Secret("sk-test"))
    try:
        status, headers, chunks = client.open_stream(
            "videos/video_p/content", request_id="req_1", params={}, if_none_match='"v1"'
        )
        assert (status, headers, list(chunks)) == (304, {"ETag": '"v1"'}, [])
        status, _, chunks = client.open_stream(
            "videos/video_p/content", request_id="req_2", params={}, if_none_match='"v0"'
        )
        assert status == 200 and b"".join(chunks) == original
        assert fake.asked == ['"v1"', '"v0"']
        # Unasked, a 304 is what any other 3xx is: the backend's failure.
        upstream.replace(responses.GET, CONTENT, status=304)
        with pytest.raises(UpstreamError) as raised:
            client.open_stream("videos/video_p/content", request_id="req_3", params={})
        assert raised.value.status == 502
    finally:
        client.close()


def test_deleting_a_video_removes_its_cached_bytes(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    origin: Backend,
    state: GatewayState,
) -> None:
    download(client, key).get_data()
    assert state.content_cache.open(NAME) is not None
    upstream.add(
        responses.DELETE,
        f"{UPSTREAM_URL}/videos/video_p",
        json={"id": "video_p", "object": "video.deleted", "deleted": True},
    )
    assert client.delete("/v1/videos/video_p", headers=bearer(key.secret)).status_code == 200
    assert state.content_cache.open(NAME) is None
    assert not list(cache_dir(state).glob("*.mp4"))
