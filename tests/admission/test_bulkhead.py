"""The bulkhead: at most ``max_inflight_per_key`` requests of one key in progress per worker,
one more refused with 429 at once; every place is given back, also by streamed downloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import responses

from gateway.admission.bulkhead import Bulkhead
from gateway.http.errors import api_error
from gateway.state import GatewayState
from keys.access.lifecycle import IssuedKey
from keys.errors import TooManyInFlight
from tests.helpers import UPSTREAM_URL, bearer

CAP = 2


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_inflight_per_key": CAP}


@pytest.fixture
def key(make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key()


def test_a_key_gets_its_cap_and_not_one_more() -> None:
    bulkhead = Bulkhead(2)
    first, _second = bulkhead.enter("key_a"), bulkhead.enter("key_a")
    with pytest.raises(TooManyInFlight) as refused:
        bulkhead.enter("key_a")
    error = api_error(refused.value)
    assert error.status == 429
    assert error.code == "too_many_concurrent_requests"
    assert error.headers["Retry-After"] == "1"
    assert error.headers["retry-after-ms"] == "1000"
    assert error.headers["x-should-retry"] == "true"
    # Another key is not affected by key_a's requests.
    bulkhead.enter("key_b").release()
    first.release()
    first.release()  # a second release gives nothing back twice
    assert bulkhead.inflight("key_a") == 1
    bulkhead.enter("key_a")
    assert bulkhead.inflight("key_a") == 2


def test_zero_turns_the_cap_off() -> None:
    bulkhead = Bulkhead(0)
    slots = [bulkhead.enter("key_a") for _ in range(100)]
    assert bulkhead.inflight("key_a") == 100
    for slot in slots:
        slot.release()
    assert bulkhead.inflight("key_a") == 0


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        Bulkhead(-1)


def test_every_request_gives_its_place_back(
    client: Any, state: GatewayState, key: IssuedKey
) -> None:
    for _ in range(CAP * 3):
        assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    assert state.bulkhead.inflight(key.key.id) == 0
    # Also a refused one (an unknown video is a 404 after the key was admitted).
    answer = client.get("/v1/videos/video_unknown", headers=bearer(key.secret))
    assert answer.status_code == 404
    assert state.bulkhead.inflight(key.key.id) == 0


def test_a_key_at_its_cap_is_refused_with_429_and_others_are_not(
    client: Any, state: GatewayState, key: IssuedKey, make_key: Callable[..., IssuedKey]
) -> None:
    held = [state.bulkhead.enter(key.key.id) for _ in range(CAP)]  # requests in progress
    refused = client.get("/v1/me", headers=bearer(key.secret))
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_concurrent_requests"
    assert error["type"] == "rate_limit_error"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["x-should-retry"] == "true"
    # The refused request did not count against the key's rate limit either.
    assert "x-ratelimit-remaining-requests" not in refused.headers

    other = make_key()
    assert client.get("/v1/me", headers=bearer(other.secret)).status_code == 200

    held[0].release()
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    assert state.bulkhead.inflight(key.key.id) == CAP - 1


def test_a_download_holds_its_place_until_the_stream_is_closed(
    client: Any, state: GatewayState, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(
        responses.POST,
        f"{UPSTREAM_URL}/videos",
        json={"id": "video_up1", "object": "video", "status": "completed", "model": "sora-2"},
    )
    created = client.post("/v1/videos", json={"prompt": "a cat"}, headers=bearer(key.secret))
    assert created.status_code == 200, created.get_data(as_text=True)
    upstream.add(
        responses.GET,
        f"{UPSTREAM_URL}/videos/video_up1/content",
        body=b"x" * 100_000,
        content_type="video/mp4",
    )
    download = client.get(
        f"/v1/videos/{created.get_json()['id']}/content",
        headers=bearer(key.secret),
        buffered=False,
    )
    assert download.status_code == 200
    assert state.bulkhead.inflight(key.key.id) == 1  # the view returned; the stream is open
    assert len(b"".join(download.response)) == 100_000
    download.close()
    assert state.bulkhead.inflight(key.key.id) == 0
