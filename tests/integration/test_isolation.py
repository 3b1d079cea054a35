"""Tester isolation on the live gateway: upstream, every video belongs to the one master
credential; through the gateway, tester B cannot tell tester A's videos exist."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.integration.conftest import SIM_CONTENT_BYTES
from tests.integration.live import LiveGateway, TesterKey, error_of, sdk_error_code

pytestmark = pytest.mark.integration

UNKNOWN_VIDEO = "video_0123456789abcdef01234567"


def test_tester_b_cannot_touch_tester_a_videos(
    live_gateway: LiveGateway, make_tester_key: Callable[..., TesterKey]
) -> None:
    key_a, key_b = make_tester_key(), make_tester_key()
    client_a = live_gateway.openai_client(key_a.secret)
    client_b = live_gateway.openai_client(key_b.secret)

    video = client_a.videos.create_and_poll(prompt="tester A's private storyboard")
    assert video.status == "completed"
    own_b = client_b.videos.create(prompt="tester B's own video")

    attempts: dict[str, Callable[[], object]] = {
        "retrieve": lambda: client_b.videos.retrieve(video.id),
        "download_content": lambda: client_b.videos.download_content(video.id).read(),
        "thumbnail": lambda: client_b.videos.download_content(video.id, variant="thumbnail"),
        "remix": lambda: client_b.videos.remix(video.id, prompt="stolen"),
        "delete": lambda: client_b.videos.delete(video.id),
    }
    for name, attempt in attempts.items():
        with pytest.raises(openai.NotFoundError) as caught:
            attempt()
        assert sdk_error_code(caught.value) == "not_found", name

    # B's listing holds B's video only, on every page and in both orders.
    for order in ("desc", "asc"):
        listed = [v.id for v in client_b.videos.list(order=order, limit=100).data]
        assert listed == [own_b.id], order
    # A's id as a page cursor is answered exactly like an id that does not exist.
    as_cursor = live_gateway.tester_get("/videos", key_b.secret, params={"after": video.id})
    unknown = live_gateway.tester_get("/videos", key_b.secret, params={"after": UNKNOWN_VIDEO})
    assert as_cursor.status_code == unknown.status_code
    assert error_of(as_cursor)["code"] == error_of(unknown)["code"]
    # ...and so is A's video itself.
    foreign = live_gateway.tester_get(f"/videos/{video.id}", key_b.secret)
    missing = live_gateway.tester_get(f"/videos/{UNKNOWN_VIDEO}", key_b.secret)
    assert foreign.status_code == missing.status_code == 404
    assert error_of(foreign)["code"] == error_of(missing)["code"] == "not_found"

    # A's video is intact after all of that.
    again = client_a.videos.retrieve(video.id)
    assert again.status == "completed" and again.prompt == "tester A's private storyboard"
    assert len(client_a.videos.download_content(video.id).read()) > SIM_CONTENT_BYTES
    assert [v.id for v in client_a.videos.list(limit=100).data] == [video.id]
    remix = client_a.videos.remix(video.id, prompt="A's own remix")
    assert remix.remixed_from_video_id == video.id

    # A cannot reach B's video either, and B's remix of A's video created nothing.
    with pytest.raises(openai.NotFoundError):
        client_a.videos.retrieve(own_b.id)
    assert [v.id for v in client_b.videos.list(limit=100).data] == [own_b.id]
