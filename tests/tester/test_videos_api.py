"""The tester API: ownership, listing and the ``/v1/me`` view.

Upstream every video belongs to the master credential; these tests pin that a tester only
ever sees, downloads, deletes or remixes their own, and that refusing someone else's never
costs an upstream call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import responses
from sqlalchemy import update

from keys.access.lifecycle import IssuedKey
from keys.models import Tester, Video
from keys.store import Store
from tests.helpers import UPSTREAM_CREDENTIAL, UPSTREAM_URL, assert_error, bearer, forwarded_fields

VIDEOS = f"{UPSTREAM_URL}/videos"


@pytest.fixture
def alice(make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key()


@pytest.fixture
def bob(make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key()


def video(video_id: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {"id": video_id, "object": "video", "status": status, "model": "sora-2", **extra}


def create(
    client: Any,
    upstream: responses.RequestsMock,
    key: IssuedKey,
    video_id: str,
    status: str = "completed",
) -> dict[str, Any]:
    upstream.add(responses.POST, VIDEOS, json=video(video_id, status))
    response = client.post(
        "/v1/videos",
        json={"model": "sora-2", "prompt": f"prompt for {video_id}"},
        headers=bearer(key.secret),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def listing(client: Any, key: IssuedKey, query: str = "") -> dict[str, Any]:
    response = client.get(f"/v1/videos{query}", headers=bearer(key.secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["data"]]


# -- create ----------------------------------------------------------------------------


def test_json_create_records_ownership_for_the_caller(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, store: Store
) -> None:
    body = create(client, upstream, alice, "video_json1", status="queued")

    assert body["id"] == "video_json1"
    with store.read() as tx:
        recorded = tx.videos.owned("video_json1", alice.key.tester_id)
        assert recorded.key_id == alice.key.id
        assert recorded.status == "queued"


def test_multipart_create_forwards_the_checked_fields_and_records_ownership(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, store: Store
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_multi", "queued"))
    boundary = "----drawbridgeboundary"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="prompt"\r\n\r\n'
            "a lighthouse at dusk\r\n"
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="input_reference"; filename="ref.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG\r\n\x1a\n\x00\x01binary"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"

    response = client.post(
        "/v1/videos",
        data=body,
        headers={**bearer(alice.secret), "Content-Type": content_type},
    )

    assert response.status_code == 200
    fields, files = forwarded_fields(upstream.calls[0].request)
    assert fields == {
        "prompt": "a lighthouse at dusk",
        "model": "sora-2",
        "seconds": "4",
        "size": "720x1280",
    }
    assert files == {
        "input_reference": ("ref.png", "image/png", b"\x89PNG\r\n\x1a\n\x00\x01binary")
    }
    with store.read() as tx:
        assert tx.videos.owned("video_multi", alice.key.tester_id).key_id == alice.key.id


def test_upstream_failure_on_create_records_nothing(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    upstream.add(responses.POST, VIDEOS, status=500, json={"error": {"message": "x"}})

    response = client.post("/v1/videos", json={"prompt": "p"}, headers=bearer(alice.secret))

    assert response.status_code == 502
    assert listing(client, alice)["data"] == []


# -- someone else's video --------------------------------------------------------------


def other_tester_requests(video_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"/v1/videos/{video_id}", {}),
        ("DELETE", f"/v1/videos/{video_id}", {}),
        ("GET", f"/v1/videos/{video_id}/content", {}),
        ("GET", f"/v1/videos/{video_id}/content?variant=thumbnail", {}),
        ("POST", f"/v1/videos/{video_id}/remix", {"json": {"prompt": "mine now"}}),
    ]


def test_another_testers_video_is_404_without_an_upstream_call(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, bob: IssuedKey
) -> None:
    create(client, upstream, alice, "video_alices")
    calls_before = len(upstream.calls)

    for method, path, kwargs in other_tester_requests("video_alices"):
        response = client.open(path, method=method, headers=bearer(bob.secret), **kwargs)

        assert response.status_code == 404, (method, path)
        assert_error(response, 404, "not_found")
        # and it looks exactly like a video that does not exist at all
        missing = client.open(
            path.replace("video_alices", "video_nobodys"),
            method=method,
            headers=bearer(bob.secret),
            **kwargs,
        )
        assert missing.status_code == 404, (method, path)
        assert missing.get_json()["error"]["code"] == response.get_json()["error"]["code"]
    assert len(upstream.calls) == calls_before


def test_another_testers_video_stays_alices_after_bobs_attempts(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, bob: IssuedKey
) -> None:
    create(client, upstream, alice, "video_alices")
    for method, path, kwargs in other_tester_requests("video_alices"):
        client.open(path, method=method, headers=bearer(bob.secret), **kwargs)
    upstream.add(responses.GET, f"{VIDEOS}/video_alices", json=video("video_alices"))

    response = client.get("/v1/videos/video_alices", headers=bearer(alice.secret))

    assert response.status_code == 200
    assert ids(listing(client, alice)) == ["video_alices"]
    assert listing(client, bob)["data"] == []


def test_a_second_key_of_the_same_tester_sees_the_video(
    client: Any,
    upstream: responses.RequestsMock,
    alice: IssuedKey,
    make_key: Callable[..., IssuedKey],
) -> None:
    create(client, upstream, alice, "video_shared")
    second = make_key(alice.key.tester_id)
    upstream.add(responses.GET, f"{VIDEOS}/video_shared", json=video("video_shared"))

    response = client.get("/v1/videos/video_shared", headers=bearer(second.secret))

    assert response.status_code == 200
    assert response.get_json()["id"] == "video_shared"


# -- own videos ------------------------------------------------------------------------


def test_retrieve_proxies_and_refreshes_the_snapshot_when_the_status_moves(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, store: Store
) -> None:
    create(client, upstream, alice, "video_poll", status="queued")
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_poll",
        json=video("video_poll", "in_progress", progress=40),
        headers={"openai-poll-after-ms": "2000", "X-Upstream-Node": "n7"},
    )

    response = client.get("/v1/videos/video_poll", headers=bearer(alice.secret))

    assert response.status_code == 200
    assert response.get_json()["progress"] == 40
    assert response.headers["openai-poll-after-ms"] == "2000"
    assert "X-Upstream-Node" not in response.headers
    with store.read() as tx:
        assert tx.videos.owned("video_poll", alice.key.tester_id).status == "in_progress"


def test_remix_forwards_only_the_prompt_and_records_the_new_video(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, bob: IssuedKey
) -> None:
    create(client, upstream, alice, "video_orig")
    upstream.add(responses.POST, f"{VIDEOS}/video_orig/remix", json=video("video_remix", "queued"))

    response = client.post(
        "/v1/videos/video_orig/remix",
        json={"prompt": "now in winter", "model": "other", "extra": {"x": 1}},
        headers=bearer(alice.secret),
    )

    assert response.status_code == 200
    assert json.loads(upstream.calls[-1].request.body) == {"prompt": "now in winter"}
    assert "video_remix" in ids(listing_without_refresh(client, upstream, alice))
    bob_view = client.get("/v1/videos/video_remix", headers=bearer(bob.secret))
    assert bob_view.status_code == 404


def listing_without_refresh(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey
) -> dict[str, Any]:
    upstream.add(responses.GET, f"{VIDEOS}/video_remix", json=video("video_remix"))
    return listing(client, key)


def test_remix_requires_a_prompt(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    create(client, upstream, alice, "video_orig")
    calls_before = len(upstream.calls)

    for payload in (None, {}, {"prompt": 5}, {"prompt": None}, ["prompt"]):
        response = client.post(
            "/v1/videos/video_orig/remix", json=payload, headers=bearer(alice.secret)
        )

        assert response.status_code == 400, payload
        assert_error(response, 400, "missing_required_parameter", param="prompt")
    assert len(upstream.calls) == calls_before


def test_deleted_videos_disappear_and_answer_404(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    create(client, upstream, alice, "video_keep")
    create(client, upstream, alice, "video_gone")
    upstream.add(
        responses.DELETE,
        f"{VIDEOS}/video_gone",
        json={"id": "video_gone", "object": "video.deleted", "deleted": True},
    )

    deleted = client.delete("/v1/videos/video_gone", headers=bearer(alice.secret))

    assert deleted.status_code == 200
    assert deleted.get_json()["deleted"] is True
    assert ids(listing(client, alice)) == ["video_keep"]
    calls_before = len(upstream.calls)
    for method, path, kwargs in other_tester_requests("video_gone"):
        response = client.open(path, method=method, headers=bearer(alice.secret), **kwargs)
        assert_error(response, 404, "not_found")
    assert len(upstream.calls) == calls_before


def test_delete_of_a_video_the_upstream_lost_is_404_and_forgotten(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    create(client, upstream, alice, "video_lost")
    upstream.add(
        responses.DELETE,
        f"{VIDEOS}/video_lost",
        status=404,
        json={"error": {"message": "not found", "code": "not_found"}},
    )

    response = client.delete("/v1/videos/video_lost", headers=bearer(alice.secret))

    assert_error(response, 404, "not_found")
    assert listing(client, alice)["data"] == []


def test_delete_of_a_video_whose_backend_id_could_never_be_served_is_404_and_forgotten(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, store: Store
) -> None:
    # A backend id no request could address (say, adopted from a lying backend's listing) is
    # as good as lost: the video is forgotten, and nothing is sent upstream.
    create(client, upstream, alice, "video_odd")
    with store.transaction() as tx:
        tx.session.execute(
            update(Video).where(Video.upstream_id == "video_odd").values(upstream_id="odd/id")
        )
    calls_before = len(upstream.calls)

    response = client.delete("/v1/videos/video_odd", headers=bearer(alice.secret))

    assert_error(response, 404, "not_found")
    assert len(upstream.calls) == calls_before
    assert listing(client, alice)["data"] == []


def test_failed_upstream_delete_keeps_the_video(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    create(client, upstream, alice, "video_stays")
    upstream.add(responses.DELETE, f"{VIDEOS}/video_stays", status=503, body=b"down")

    response = client.delete("/v1/videos/video_stays", headers=bearer(alice.secret))

    assert response.status_code == 502
    assert ids(listing(client, alice)) == ["video_stays"]


def test_ids_with_bad_characters_are_404_without_an_upstream_call(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    bad_ids = ["video!", "vid eo", "video%2Fx", "vídeo", "x" * 129, "video.mp4", "video;", "v'"]
    for video_id in bad_ids:
        for method, path, kwargs in other_tester_requests(video_id):
            response = client.open(path, method=method, headers=bearer(alice.secret), **kwargs)
            assert response.status_code in (400, 404), (method, path)
            assert response.get_json()["error"]["code"] in ("not_found", "invalid_path")
    assert len(upstream.calls) == 0


# -- list ------------------------------------------------------------------------------


@pytest.fixture
def five_videos(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, bob: IssuedKey
) -> list[str]:
    """Alice creates five completed videos (oldest first); Bob one, in between."""
    made = []
    for number in range(1, 6):
        made.append(create(client, upstream, alice, f"video_a{number}")["id"])
        if number == 3:
            create(client, upstream, bob, "video_bob")
    return made


def test_list_returns_only_the_callers_videos_newest_first(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, five_videos: list[str]
) -> None:
    page = listing(client, alice)

    assert page["object"] == "list"
    assert ids(page) == list(reversed(five_videos))
    assert page["first_id"] == "video_a5"
    assert page["last_id"] == "video_a1"
    assert page["has_more"] is False


def test_list_paginates_with_after_and_limit(
    client: Any, alice: IssuedKey, five_videos: list[str]
) -> None:
    first = listing(client, alice, "?limit=2")
    second = listing(client, alice, f"?limit=2&after={first['last_id']}")
    third = listing(client, alice, f"?limit=2&after={second['last_id']}")

    assert ids(first) == ["video_a5", "video_a4"]
    assert first["has_more"] is True
    assert (second["first_id"], second["last_id"]) == ("video_a3", "video_a2")
    assert second["has_more"] is True
    assert ids(third) == ["video_a1"]
    assert third["has_more"] is False


def test_list_in_ascending_order(client: Any, alice: IssuedKey, five_videos: list[str]) -> None:
    first = listing(client, alice, "?order=asc&limit=3")
    rest = listing(client, alice, f"?order=asc&limit=3&after={first['last_id']}")

    assert ids(first) == ["video_a1", "video_a2", "video_a3"]
    assert first["has_more"] is True
    assert ids(rest) == ["video_a4", "video_a5"]
    assert rest["has_more"] is False


def test_list_limit_exactly_the_count_has_no_more(
    client: Any, alice: IssuedKey, five_videos: list[str]
) -> None:
    page = listing(client, alice, "?limit=5")

    assert len(page["data"]) == 5
    assert page["has_more"] is False


def test_empty_list(client: Any, alice: IssuedKey) -> None:
    assert listing(client, alice) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_bad_limit_is_400_naming_the_parameter(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey
) -> None:
    for limit in ("0", "101", "-1", "abc", "1.5", "", " 5", "\u00b2", "1e2"):
        response = client.get(
            "/v1/videos", query_string={"limit": limit}, headers=bearer(alice.secret)
        )

        assert response.status_code == 400, limit
        assert_error(response, 400, "invalid_value", param="limit")


def test_limit_bounds_are_accepted(client: Any, alice: IssuedKey) -> None:
    listing(client, alice, "?limit=1")
    listing(client, alice, "?limit=100")


def test_bad_order_is_400(client: Any, alice: IssuedKey) -> None:
    for order in ("up", "DESC", "asc;", " asc"):
        response = client.get(
            "/v1/videos", query_string={"order": order}, headers=bearer(alice.secret)
        )

        assert response.status_code == 400, order
        assert_error(response, 400, "invalid_value", param="order")


def test_after_of_someone_elses_video_is_400(
    client: Any, alice: IssuedKey, bob: IssuedKey, five_videos: list[str]
) -> None:
    response = client.get("/v1/videos?after=video_a3", headers=bearer(bob.secret))

    assert_error(response, 400, "invalid_value", param="after")
    assert "video_a" not in json.dumps(response.get_json()["error"]).replace("video_a3", "")


def test_after_of_an_unknown_video_is_400(client: Any, alice: IssuedKey) -> None:
    response = client.get("/v1/videos?after=video_nothing", headers=bearer(alice.secret))

    assert_error(response, 400, "invalid_value", param="after")


def test_list_refreshes_unfinished_videos_only(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, store: Store
) -> None:
    create(client, upstream, alice, "video_done", status="completed")
    create(client, upstream, alice, "video_failed", status="failed")
    create(client, upstream, alice, "video_queued", status="queued")
    create(client, upstream, alice, "video_running", status="in_progress")
    upstream.add(responses.GET, f"{VIDEOS}/video_queued", json=video("video_queued", "in_progress"))
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_running",
        json=video("video_running", "completed", progress=100),
    )
    calls_before = len(upstream.calls)

    page = listing(client, alice)

    refreshed = [call.request for call in upstream.calls[calls_before:]]
    assert sorted(request.url for request in refreshed) == [
        f"{VIDEOS}/video_queued",
        f"{VIDEOS}/video_running",
    ]
    assert all(r.headers["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}" for r in refreshed)
    statuses = {item["id"]: item["status"] for item in page["data"]}
    assert statuses == {
        "video_done": "completed",
        "video_failed": "failed",
        "video_queued": "in_progress",
        "video_running": "completed",
    }

    # The finished one is now served from the ledger: only the still-queued one is asked.
    calls_before = len(upstream.calls)
    listing(client, alice)
    assert [call.request.url for call in upstream.calls[calls_before:]] == [
        f"{VIDEOS}/video_queued"
    ]


def test_list_with_only_finished_videos_makes_no_upstream_call(
    client: Any, upstream: responses.RequestsMock, alice: IssuedKey, five_videos: list[str]
) -> None:
    calls_before = len(upstream.calls)

    listing(client, alice)
    listing(client, alice, "?order=asc&limit=2")

    assert len(upstream.calls) == calls_before


# -- /v1/me ----------------------------------------------------------------------------


def test_me_shows_hint_and_status_and_never_a_secret(
    client: Any, alice: IssuedKey, store: Store
) -> None:
    response = client.get("/v1/me", headers=bearer(alice.secret))

    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "me"
    assert body["key"]["id"] == alice.key.id
    assert body["key"]["hint"] == f"drwb_...{alice.secret[-4:]}"
    assert body["key"]["status"] == "active"
    assert body["tester"]["id"] == alice.key.tester_id
    text = response.get_data(as_text=True)
    assert alice.secret not in text
    assert alice.secret[5:] not in text  # nor the body without its prefix
    assert alice.key.digest not in text
    assert UPSTREAM_CREDENTIAL not in text
    assert "email" not in body["tester"]


def test_me_shows_the_callers_own_key(
    client: Any, alice: IssuedKey, bob: IssuedKey, make_tester: Callable[..., Tester]
) -> None:
    mine = client.get("/v1/me", headers=bearer(alice.secret)).get_json()
    theirs = client.get("/v1/me", headers=bearer(bob.secret)).get_json()

    assert mine["key"]["id"] == alice.key.id
    assert theirs["key"]["id"] == bob.key.id
    assert mine["tester"]["id"] != theirs["tester"]["id"]


def test_me_during_a_rotation_grace_period_shows_rotated(
    client: Any, alice: IssuedKey, store: Store
) -> None:
    from datetime import timedelta

    with store.transaction() as tx:
        tx.keys.rotate(alice.key.id, "test:setup", timedelta(hours=1))

    response = client.get("/v1/me", headers=bearer(alice.secret))

    assert response.status_code == 200
    assert response.get_json()["key"]["status"] == "rotated"
    assert response.get_json()["key"]["grace_until"] is not None


@pytest.mark.parametrize(
    ("requests_per_minute", "suggested", "expected"),
    [(60, "200", "2000"), (30, "200", "4000"), (600, "1500", "1500"), (600, None, "200")],
)
def test_the_poll_interval_keeps_a_poller_within_half_its_rate_limit(
    client: Any,
    upstream: responses.RequestsMock,
    alice: IssuedKey,
    store: Store,
    requests_per_minute: int,
    suggested: str | None,
    expected: str,
) -> None:
    with store.transaction() as tx:
        tx.policies.set_overrides(
            alice.key.tester_id, {"requests_per_minute": requests_per_minute}, "test"
        )
    create(client, upstream, alice, "video_slow", status="queued")
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_slow",
        json=video("video_slow", "in_progress", progress=10),
        headers={"Openai-Poll-After-Ms": suggested} if suggested else {},
    )

    response = client.get("/v1/videos/video_slow", headers=bearer(alice.secret))

    assert response.headers["openai-poll-after-ms"] == expected
