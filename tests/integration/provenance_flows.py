"""Steps the provenance tests share on the live gateway: make a video through the SDK, share
it through an approved link, and fetch the deployment's roots (what an outside validator is
given)."""

from __future__ import annotations

from tests.integration.live import LiveGateway, TesterKey

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PROMPT = "a heron lands on a frozen pond at dawn"


def trust_anchors(gateway: LiveGateway) -> str:
    return "".join(gateway.admin_ok("GET", "/provenance/certificates")["trust_anchors"])


def made_video(gateway: LiveGateway, key: TesterKey) -> str:
    client = gateway.openai_client(key.secret)
    video = client.videos.create_and_poll(prompt=PROMPT, seconds="4")
    assert video.status == "completed", video
    return video.id


def share_link(gateway: LiveGateway, key: TesterKey, video_id: str) -> tuple[str, str]:
    """Request a share, approve it as the admin: (the link, the share approval's id)."""
    requested = gateway.tester_post(f"/videos/{video_id}/share", key.secret)
    assert requested.status_code == 200, requested.text
    approval_id = requested.json()["id"]
    gateway.admin_ok("POST", f"/approvals/{approval_id}/approve", json={"reason": "fine"})
    status = gateway.tester_get(f"/videos/{video_id}/share", key.secret).json()
    assert status["url"], status
    return str(status["url"]), str(approval_id)
