"""Sharing and reviewed downloads: a share link exists only after an approver says yes, it
streams the content without a key until it expires, and a tampered or forged token is
refused. Cohorts can turn sharing off, or require approval before any download."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses

from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.approvals.share_links import ShareLinkSigner
from keys.models import Approval, Tester
from keys.store import Store
from tests.flows import CONTENT, FakeBackend, admin_call, create_video, ok, retrieve, set_overrides
from tests.helpers import FakeClock, assert_error, bearer

LINK_SECONDS = 3600


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


@pytest.fixture
def tester(make_tester: Callable[..., Tester], store: Store) -> Tester:
    tester = make_tester()
    set_overrides(store, tester.id, share_link_seconds=LINK_SECONDS)
    return tester


def completed_video(client: Any, upstream: FakeBackend, key: IssuedKey) -> str:
    video = ok(create_video(client, key))
    upstream.finish(video["id"])
    assert ok(retrieve(client, key, video["id"]))["status"] == "completed"
    video_id: str = video["id"]
    return video_id


def ask_to_share(client: Any, key: IssuedKey, video_id: str) -> Any:
    return client.post(f"/v1/videos/{video_id}/share", headers=bearer(key.secret))


def share_status(client: Any, key: IssuedKey, video_id: str) -> Any:
    return client.get(f"/v1/videos/{video_id}/share", headers=bearer(key.secret))


def decide(client: Any, token: IssuedToken, approval_id: str, verb: str, reason: str) -> Any:
    return admin_call(client, token, "POST", f"/approvals/{approval_id}/{verb}", {"reason": reason})


def token_of(url: str) -> str:
    assert url.startswith("http://localhost/s/"), url
    return url.removeprefix("http://localhost/s/")


def public(client: Any, token: str, **kwargs: Any) -> Any:
    return client.get(f"/s/{token}", **kwargs)


@pytest.fixture
def shared(
    client: Any, upstream: FakeBackend, key: IssuedKey, approver: IssuedToken
) -> dict[str, Any]:
    """An approved share of a completed video: its request, video and link token."""
    video_id = completed_video(client, upstream, key)
    request = ok(ask_to_share(client, key, video_id))
    ok(decide(client, approver, request["id"], "approve", "lovely"))
    approved = ok(share_status(client, key, video_id))
    return {"request": approved, "video_id": video_id, "token": token_of(approved["url"])}


# -- the link after approval -----------------------------------------------------------


def test_a_share_link_exists_only_after_approval(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    key: IssuedKey,
    approver: IssuedToken,
    clock: FakeClock,
) -> None:
    video_id = completed_video(client, upstream, key)

    pending = ok(ask_to_share(client, key, video_id))

    assert pending["object"] == "video.share" and pending["status"] == "pending"
    assert pending["url"] is None and pending["video_id"] == video_id
    assert ok(share_status(client, key, video_id))["url"] is None
    # Asking again while it is pending opens no second request.
    assert ok(ask_to_share(client, key, video_id))["id"] == pending["id"]

    ok(decide(client, approver, pending["id"], "approve", "lovely"))
    approved = ok(share_status(client, key, video_id))

    assert approved["status"] == "approved" and approved["reason"] == "lovely"
    assert approved["expires_at"] == int(clock.now.timestamp()) + LINK_SECONDS
    response = public(client, token_of(approved["url"]))  # no key at all
    assert response.status_code == 200
    assert response.get_data() == CONTENT
    assert response.headers["Content-Type"] == "video/mp4"
    content_url = str(upstream.mock.calls[-1].request.url)
    assert content_url.endswith(f"/videos/{video_id}/content?variant=video")


def test_a_rejected_share_has_no_link_and_says_why(
    client: Any, upstream: FakeBackend, key: IssuedKey, approver: IssuedToken
) -> None:
    video_id = completed_video(client, upstream, key)
    request = ok(ask_to_share(client, key, video_id))

    ok(decide(client, approver, request["id"], "reject", "Shows a real person."))

    rejected = ok(share_status(client, key, video_id))
    assert rejected["status"] == "rejected" and rejected["url"] is None
    assert rejected["reason"] == "Shows a real person."


def test_only_completed_own_videos_can_be_shared(
    client: Any, upstream: FakeBackend, key: IssuedKey, make_key: Callable[..., IssuedKey]
) -> None:
    running = ok(create_video(client, key))["id"]
    assert_error(ask_to_share(client, key, running), 400, "video_not_ready")
    done = completed_video(client, upstream, key)
    mallory = make_key()
    assert_error(ask_to_share(client, mallory, done), 404, "not_found")
    assert_error(share_status(client, mallory, done), 404, "not_found")
    assert_error(share_status(client, key, done), 404, "not_found")  # no request yet


def test_a_share_link_stops_at_expiry(
    client: Any, key: IssuedKey, clock: FakeClock, shared: dict[str, Any]
) -> None:
    clock.advance(seconds=LINK_SECONDS - 1)
    assert public(client, shared["token"]).status_code == 200

    clock.advance(seconds=1)

    assert_error(public(client, shared["token"]), 410, "share_link_expired")
    status = ok(share_status(client, key, shared["video_id"]))
    assert status["status"] == "expired" and status["url"] is None
    # The tester may ask again: a new request, for an approver to decide.
    again = ok(ask_to_share(client, key, shared["video_id"]))
    assert again["status"] == "pending" and again["id"] != shared["request"]["id"]


def _flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def test_a_tampered_token_is_refused(client: Any, shared: dict[str, Any]) -> None:
    token = shared["token"]
    payload, tag = token.split(".")
    approval_id, expires = base64.urlsafe_b64decode(payload + "==").decode().rsplit(".", 1)
    later = int(expires) + 86_400 * 365

    def encode(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    tampered = [
        _flip(token, 0),  # payload
        _flip(token, len(token) - 1),  # tag
        f"{encode(f'{approval_id}.{later}')}.{tag}",  # a longer life, same tag
        f"{encode(f'apr_other.{expires}')}.{tag}",  # another share, same tag
        f"{payload}.",
        f"{payload}.{tag}.{tag}",
        payload,
        "garbage",
        "%E2%9C%93.%E2%9C%93",
    ]
    for bad in tampered:
        assert_error(public(client, bad), 404, "invalid_share_link")
    assert public(client, token).status_code == 200  # the genuine one still works


def test_a_forged_token_is_refused(
    client: Any, store: Store, app: Any, shared: dict[str, Any], clock: FakeClock
) -> None:
    expires = clock.now + timedelta(days=1)
    forger = ShareLinkSigner(b"\x00" * 32)
    assert_error(
        public(client, forger.token(shared["request"]["id"], expires)), 404, "invalid_share_link"
    )

    # Even correctly signed, a token only opens an approved share request.
    signer: ShareLinkSigner = app.extensions["drawbridge"].share_links
    with store.read() as tx:
        requests_ = {a.kind: a for a in tx.session.query(Approval).all()}
    assert set(requests_) == {"share"}
    assert_error(public(client, signer.token("apr_missing", expires)), 404, "invalid_share_link")


def test_a_signed_token_for_a_pending_or_other_kind_of_request_is_refused(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    app: Any,
    key: IssuedKey,
    tester: Tester,
    clock: FakeClock,
) -> None:
    signer: ShareLinkSigner = app.extensions["drawbridge"].share_links
    expires = clock.now + timedelta(hours=1)
    video_id = completed_video(client, upstream, key)
    pending = ok(ask_to_share(client, key, video_id))
    with store.transaction() as tx:
        download = tx.approvals.hold("download", tester.id, key.key.id, video_id, "reviewed")
        tx.approvals.decide(download.id, True, "test:approver", None)

    for approval_id in (pending["id"], download.id):
        assert_error(public(client, signer.token(approval_id, expires)), 404, "invalid_share_link")


def test_deleting_the_video_ends_its_share_link(
    client: Any, key: IssuedKey, shared: dict[str, Any]
) -> None:
    ok(client.delete(f"/v1/videos/{shared['video_id']}", headers=bearer(key.secret)))
    response = public(client, shared["token"])
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] in ("not_found", "invalid_share_link")


def test_a_share_link_carries_no_credential_and_needs_none(
    client: Any, upstream: FakeBackend, shared: dict[str, Any]
) -> None:
    response = public(client, shared["token"], headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200
    assert_error(
        public(client, shared["token"] + "?variant=../../x"), 400, "invalid_value", "variant"
    )


# -- cohort settings -------------------------------------------------------------------


def test_sharing_off_refuses_share_requests(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    video_id = completed_video(client, upstream, key)
    set_overrides(store, tester.id, sharing="off")

    error = assert_error(ask_to_share(client, key, video_id), 403, "policy_violation")

    assert "Sharing is not available" in error["message"]
    with store.read() as tx:
        assert tx.approvals.list(kind="share") == []


def test_downloads_wait_for_an_approver_in_a_reviewing_cohort(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    set_overrides(store, tester.id, content_requires_approval=True)
    video_id = completed_video(client, upstream, key)
    content_url = f"/v1/videos/{video_id}/content"

    first = assert_error(
        client.get(content_url, headers=bearer(key.secret)), 403, "approval_required"
    )
    again = assert_error(
        client.get(content_url, headers=bearer(key.secret)), 403, "approval_required"
    )
    assert first["message"] == again["message"]  # one request, not one per attempt
    with store.read() as tx:
        (request,) = tx.approvals.list(kind="download")
    assert request.id in first["message"] and request.video_id == video_id
    me = ok(client.get("/v1/me", headers=bearer(key.secret)))
    assert [(r["id"], r["status"]) for r in me["requests"]] == [(request.id, "pending")]
    assert not any("/content" in str(call.request.url) for call in upstream.mock.calls)

    ok(decide(client, approver, request.id, "approve", "fine"))

    response = client.get(content_url, headers=bearer(key.secret))
    assert response.status_code == 200 and response.get_data() == CONTENT


def test_a_rejected_download_stays_refused_with_the_reason(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    set_overrides(store, tester.id, content_requires_approval=True)
    video_id = completed_video(client, upstream, key)
    content_url = f"/v1/videos/{video_id}/content"
    assert_error(client.get(content_url, headers=bearer(key.secret)), 403, "approval_required")
    with store.read() as tx:
        (request,) = tx.approvals.list(kind="download")

    ok(decide(client, approver, request.id, "reject", "Contains a watermark."))

    for _ in range(2):
        error = assert_error(
            client.get(content_url, headers=bearer(key.secret)), 403, "approval_rejected"
        )
        assert "Contains a watermark." in error["message"]
    with store.read() as tx:
        assert len(tx.approvals.list(kind="download")) == 1
    assert not any("/content" in str(call.request.url) for call in upstream.mock.calls)


def test_the_shipped_red_team_cohort_reviews_downloads_and_refuses_sharing(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    approver: IssuedToken,
) -> None:
    from pathlib import Path

    from keys.limits.policies import load_policy_file

    policies = load_policy_file(Path(__file__).resolve().parents[2] / "config/policies.toml")
    with store.transaction() as tx:
        tx.policies.set_policy("red-team", policies.cohorts["red-team"], "test:setup")
    key = make_key(make_tester(cohort="red-team").id)

    video = ok(create_video(client, key))  # held: every generation is reviewed
    assert video["status"] == "queued" and upstream.creates == []
    with store.read() as tx:
        (held,) = tx.approvals.list(kind="generation")
    ok(decide(client, approver, held.id, "approve", "ok"))
    upstream.finish_all()
    assert ok(retrieve(client, key, video["id"]))["status"] == "completed"

    assert_error(ask_to_share(client, key, video["id"]), 403, "policy_violation")
    assert_error(
        client.get(f"/v1/videos/{video['id']}/content", headers=bearer(key.secret)),
        403,
        "approval_required",
    )


def test_share_link_expiry_uses_the_policy_in_force_when_approved(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
    clock: FakeClock,
) -> None:
    video_id = completed_video(client, upstream, key)
    request = ok(ask_to_share(client, key, video_id))
    set_overrides(store, tester.id, share_link_seconds=60)

    ok(decide(client, approver, request["id"], "approve", "ok"))

    approved = ok(share_status(client, key, video_id))
    assert approved["expires_at"] == int(clock.now.timestamp()) + 60
    expires = datetime.fromtimestamp(approved["expires_at"], UTC)
    assert expires - clock.now == timedelta(seconds=60)


def test_links_use_the_configured_public_url_not_the_host_header(
    client: Any, app: Any, shared: dict[str, Any], key: IssuedKey
) -> None:
    settings = app.extensions["drawbridge"].settings
    app.extensions["drawbridge"].settings = dataclasses.replace(
        settings, public_url="https://drawbridge.example.com/"
    )

    response = client.get(
        f"/v1/videos/{shared['video_id']}/share",
        headers={**bearer(key.secret), "Host": "evil.test"},
    )

    url = ok(response)["url"]
    assert url == f"https://drawbridge.example.com/s/{shared['token']}"


def test_a_link_stops_when_its_key_is_revoked_or_the_program_locked_down(
    client: Any, shared: dict[str, Any], store: Store, key: IssuedKey
) -> None:
    assert public(client, shared["token"]).status_code == 200
    with store.transaction() as tx:
        tx.lockdown.set_lockdown(True, "admin:test", "leak")
    assert_error(public(client, shared["token"]), 503, "lockdown")
    with store.transaction() as tx:
        tx.lockdown.set_lockdown(False, "admin:test", None)
        tx.keys.revoke(key.key.id, "admin:test", "posted on a forum")
    assert_error(public(client, shared["token"]), 404, "invalid_share_link")


def test_every_other_spelling_of_a_token_is_refused(client: Any, shared: dict[str, Any]) -> None:
    token = shared["token"]
    # Each base64 character after the first in a group can hide spare bits; try every
    # replacement of the last character of both halves: only the genuine token works.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    payload, tag = token.split(".")
    spellings = {f"{payload[:-1]}{c}.{tag}" for c in alphabet} | {
        f"{payload}.{tag[:-1]}{c}" for c in alphabet
    }
    spellings.discard(token)
    for spelling in sorted(spellings):
        assert public(client, spelling).status_code == 404, spelling
