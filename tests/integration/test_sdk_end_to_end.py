"""The official openai SDK, unmodified, through the live gateway to the live simulator."""

from __future__ import annotations

import openai
import pytest

from tests.integration.conftest import SIM_CONTENT_BYTES
from tests.integration.live import LiveGateway, LiveSimulator, TesterKey, sdk_error_code

pytestmark = pytest.mark.integration


def listed_ids(client: openai.OpenAI) -> list[str]:
    return [video.id for video in client.videos.list(limit=100).data]


def test_video_lifecycle_with_the_sdk(live_gateway: LiveGateway, tester_key: TesterKey) -> None:
    client = live_gateway.openai_client(tester_key.secret)

    video = client.videos.create_and_poll(prompt="a red kite over the dunes", seconds="4")
    assert video.status == "completed", video
    assert video.progress == 100 and video.prompt == "a red kite over the dunes"

    content = client.videos.download_content(video.id).read()
    assert len(content) > SIM_CONTENT_BYTES
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.response.headers["content-type"] == "image/webp"
    assert len(thumbnail.read()) > 0

    assert video.id in listed_ids(client)
    assert client.videos.retrieve(video.id).status == "completed"

    remix = client.videos.remix(video.id, prompt="the same kite, at night")
    assert remix.id != video.id
    assert remix.remixed_from_video_id == video.id
    # The remix belongs to the same tester: they see it, poll it to the end and download it.
    assert remix.id in listed_ids(client)
    finished = client.videos.poll(remix.id)
    assert finished.status == "completed"
    assert len(client.videos.download_content(remix.id).read()) > SIM_CONTENT_BYTES

    deleted = client.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.retrieve(video.id)
    assert sdk_error_code(caught.value) == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert video.id not in listed_ids(client)
    # Deleting one video leaves the other alone.
    assert client.videos.retrieve(remix.id).status == "completed"


def test_create_with_an_input_reference_upload(
    live_gateway: LiveGateway, simulator: LiveSimulator, tester_key: TesterKey
) -> None:
    client = live_gateway.openai_client(tester_key.secret)
    reference = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64  # 16 KiB of "image"

    video = client.videos.create(
        prompt="animate this still",
        input_reference=("reference.png", reference, "image/png"),
        size="1280x720",
    )
    assert video.status in ("queued", "in_progress")
    assert video.size == "1280x720" and video.prompt == "animate this still"

    # The multipart body went upstream as multipart (the proxy does not rewrite it).
    creates = [
        entry
        for entry in simulator.recorded_requests()
        if entry["method"] == "POST" and entry["path"] == "/v1/videos"
    ]
    assert creates, "the simulator saw no create"
    assert creates[-1]["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")

    assert client.videos.poll(video.id).status == "completed"
    assert video.id in listed_ids(client)
    assert len(client.videos.download_content(video.id).read()) > SIM_CONTENT_BYTES
