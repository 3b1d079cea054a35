"""Held generations: a rule holds a create, the tester sees an ordinary queued video under a
gateway id, and an approver's decision either submits it upstream (ids mapped from then on)
or fails it with the reason and gives the quota back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

from gateway.services.generations import lease_submission
from gateway.state import GatewayState
from gateway.upstream.reconciler import UpstreamBackend
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.generations.reconcile import Reconciler
from keys.models import Approval, Tester, Video
from keys.store import Store
from tests.flows import (
    CONTENT,
    VIDEOS,
    FakeBackend,
    admin_call,
    create_video,
    ledger,
    ok,
    quota_state,
    retrieve,
    set_overrides,
)
from tests.helpers import (
    UPSTREAM_CREDENTIAL,
    Cli,
    FakeClock,
    assert_error,
    bearer,
    forwarded_fields,
)

HELD = "a crowd cheering the president"
RULE = {
    "pattern": "(?i)president",
    "action": "hold",
    "reason": "Prompts about real public figures are reviewed before they run.",
}
RESERVED_4S = {
    "generations_per_day": 1,
    "video_seconds_per_day": 4,
    "video_seconds_per_month": 4,
    "concurrent_jobs": 1,
}
ZERO = dict.fromkeys(RESERVED_4S, 0)


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


@pytest.fixture
def tester(make_tester: Callable[..., Tester], store: Store) -> Tester:
    tester = make_tester()
    set_overrides(store, tester.id, prompt_rules=[RULE])
    return tester


def actor_of(token: IssuedToken) -> str:
    return f"{token.token.role}:{token.token.id}:{token.token.name}"


def approval_for(store: Store, video_id: str) -> Approval:
    with store.read() as tx:
        approval = tx.approvals.latest(video_id, "generation")
    assert approval is not None
    return approval


def decide(
    client: Any, token: IssuedToken, approval_id: str, verb: str, reason: str | None = None
) -> Any:
    body = {"reason": reason} if reason is not None else {}
    return admin_call(client, token, "POST", f"/approvals/{approval_id}/{verb}", body)


def hold(client: Any, key: IssuedKey, prompt: str = HELD, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(create_video(client, key, prompt, **fields))
    return body


# -- holding ---------------------------------------------------------------------------


def test_a_held_create_is_an_ordinary_queued_video_under_a_gateway_id(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    video = hold(client, key, size="1280x720", seconds="8")

    assert video["object"] == "video" and video["status"] == "queued"
    assert video["id"].startswith("video_") and len(video["id"]) > 20
    assert (video["prompt"], video["size"], video["seconds"]) == (HELD, "1280x720", "8")
    assert video["progress"] == 0 and video["error"] is None
    assert upstream.creates == []
    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 8,
        "video_seconds_per_month": 8,
        "concurrent_jobs": 1,
    }
    approval = approval_for(store, video["id"])
    assert (approval.status, approval.held_because) == ("pending", RULE["reason"])
    assert approval.tester_id == tester.id and approval.key_id == key.key.id


def test_a_held_video_keeps_answering_queued_with_a_poll_interval(
    client: Any, upstream: FakeBackend, key: IssuedKey
) -> None:
    video = hold(client, key)

    for _ in range(2):
        response = retrieve(client, key, video["id"])
        assert ok(response) == video
        assert int(response.headers["openai-poll-after-ms"]) > 0
    listed = ok(client.get("/v1/videos", headers=bearer(key.secret)))
    assert listed["data"] == [video]
    assert_error(
        client.get(f"/v1/videos/{video['id']}/content", headers=bearer(key.secret)),
        400,
        "video_not_ready",
    )
    assert len(upstream.mock.calls) == 0


def test_hold_generations_holds_every_create(
    client: Any,
    upstream: FakeBackend,
    make_key: Callable[..., IssuedKey],
    make_tester: Callable[..., Tester],
    store: Store,
) -> None:
    tester = make_tester()
    set_overrides(store, tester.id, hold_generations=True)
    video = hold(client, make_key(tester.id), "a kite")
    assert video["status"] == "queued" and upstream.creates == []
    assert "reviewed" in approval_for(store, video["id"]).held_because


# -- approving -------------------------------------------------------------------------


def test_approval_submits_upstream_and_maps_the_ids(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])

    decided = ok(decide(client, approver, approval.id, "approve", "fine"))

    assert decided["status"] == "approved" and decided["decided_by"] == actor_of(approver)
    assert decided["decision_reason"] == "fine"
    (created,) = upstream.creates
    assert created["url"] == VIDEOS
    # The backend gets exactly the values the policy and quota were checked against.
    assert json.loads(created["body"]) == {
        "prompt": HELD,
        "model": "sora-2",
        "seconds": "4",
        "size": "720x1280",
    }
    upstream_id = created["id"]
    assert decided["video"]["id"] == video["id"] and decided["video"]["status"] == "queued"

    # From now on the tester's gateway id reaches the backend's object.
    running = ok(retrieve(client, key, video["id"]))
    assert running["id"] == video["id"] and running["status"] == "queued"
    assert upstream.mock.calls[-1].request.url == f"{VIDEOS}/{upstream_id}"
    upstream.finish(upstream_id)
    done = ok(retrieve(client, key, video["id"]))
    assert done["id"] == video["id"] and done["status"] == "completed"
    assert upstream_id not in json.dumps(done)
    assert ledger(store, tester.id) == {**RESERVED_4S, "concurrent_jobs": 0}
    assert quota_state(store, video["id"]) == "settled"
    content = client.get(f"/v1/videos/{video['id']}/content", headers=bearer(key.secret))
    assert content.status_code == 200 and content.get_data() == CONTENT
    listed = ok(client.get("/v1/videos", headers=bearer(key.secret)))
    assert [item["id"] for item in listed["data"]] == [video["id"]]

    with store.read() as tx:
        entries = [e for e in tx.audit.entries() if e.target == approval.id]
    assert [(e.action, e.actor) for e in entries] == [
        ("approval.request.generation", f"tester:{tester.id}"),
        ("approval.approved", actor_of(approver)),
    ]


def test_an_approved_multipart_create_goes_upstream_as_checked(
    client: Any, upstream: FakeBackend, store: Store, key: IssuedKey, approver: IssuedToken
) -> None:
    boundary = "heldboundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="prompt"\r\n\r\n'
        f"{HELD}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="seconds"\r\n\r\n'
        "8\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    response = client.post(
        "/v1/videos",
        data=body,
        headers={
            **bearer(key.secret),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    video = ok(response)
    assert video["seconds"] == "8"

    ok(decide(client, approver, approval_for(store, video["id"]).id, "approve"))

    assert len(upstream.creates) == 1
    request = upstream.mock.calls[-1].request
    assert forwarded_fields(request) == (
        {"prompt": HELD, "model": "sora-2", "seconds": "8", "size": "720x1280"},
        {},
    )
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert request.headers["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"


def test_an_upstream_failure_on_approval_fails_the_video_and_refunds(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    video = hold(client, key)
    upstream.failures.append(500)

    decided = ok(decide(client, approver, approval_for(store, video["id"]).id, "approve"))

    assert decided["status"] == "approved" and decided["video"] is None
    failed = ok(retrieve(client, key, video["id"]))
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_error"
    assert ledger(store, tester.id) == ZERO


# -- rejecting -------------------------------------------------------------------------


def test_rejection_fails_the_video_with_the_reason_and_refunds(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    reason = "Depicts a real head of state."

    decided = ok(decide(client, approver, approval.id, "reject", reason))

    assert decided["status"] == "rejected" and decided["decision_reason"] == reason
    failed = ok(retrieve(client, key, video["id"]))
    assert failed["id"] == video["id"] and failed["status"] == "failed"
    assert failed["error"] == {"code": "rejected_by_reviewer", "message": reason}
    assert failed["completed_at"] is not None
    assert ledger(store, tester.id) == ZERO
    assert quota_state(store, video["id"]) == "refunded"
    assert len(upstream.mock.calls) == 0
    with store.read() as tx:
        (entry,) = [e for e in tx.audit.entries() if e.action == "approval.rejected"]
    assert (entry.actor, entry.target, entry.reason) == (actor_of(approver), approval.id, reason)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_rejection_needs_a_reason(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    key: IssuedKey,
    approver: IssuedToken,
    reason: str | None,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])

    assert_error(
        decide(client, approver, approval.id, "reject", reason), 400, "invalid_value", "reason"
    )

    assert approval_for(store, video["id"]).status == "pending"
    assert ok(retrieve(client, key, video["id"]))["status"] == "queued"


@pytest.mark.parametrize(
    ("first", "second"),
    [("approve", "approve"), ("approve", "reject"), ("reject", "approve"), ("reject", "reject")],
)
def test_deciding_twice_is_409_already_decided(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    key: IssuedKey,
    approver: IssuedToken,
    make_token: Callable[..., IssuedToken],
    first: str,
    second: str,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    ok(decide(client, approver, approval.id, first, "first decision"))
    calls = len(upstream.mock.calls)

    other = make_token("admin", "Second Opinion")
    error = assert_error(
        decide(client, other, approval.id, second, "second decision"), 409, "already_decided"
    )

    assert actor_of(approver) in error["message"]
    assert len(upstream.mock.calls) == calls  # nothing submitted twice
    after = approval_for(store, video["id"])
    assert after.decision_reason == "first decision" and after.decided_by == actor_of(approver)


def test_an_unknown_request_is_404(client: Any, approver: IssuedToken) -> None:
    assert_error(decide(client, approver, "apr_nothere", "approve"), 404, "not_found")


@pytest.mark.parametrize("role", ["auditor"])
def test_only_approvers_and_admins_decide(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    key: IssuedKey,
    make_token: Callable[..., IssuedToken],
    role: str,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    reader = make_token(role)

    for verb in ("approve", "reject"):
        assert_error(decide(client, reader, approval.id, verb, "no"), 403, "permission_denied")
        response = client.post(
            f"/admin/v1/approvals/{approval.id}/{verb}",
            json={"reason": "no"},
            headers=bearer(key.secret),  # a tester key is no admin token
        )
        assert response.status_code == 401
        response = client.post(f"/admin/v1/approvals/{approval.id}/{verb}", json={})
        assert response.status_code == 401
    assert approval_for(store, video["id"]).status == "pending"
    assert upstream.creates == []
    # Auditors may still read the queue.
    listed = ok(admin_call(client, reader, "GET", "/approvals?status=pending"))
    assert [a["id"] for a in listed["data"]] == [approval.id]
    # Admins decide too.
    ok(decide(client, make_token("admin"), approval.id, "approve"))


# -- remixes and deletes ---------------------------------------------------------------


def test_a_held_remix_of_a_held_video_uses_the_backend_ids(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    source = hold(client, key)
    # A held source cannot be remixed before it exists upstream.
    refused = client.post(
        f"/v1/videos/{source['id']}/remix", json={"prompt": "again"}, headers=bearer(key.secret)
    )
    assert_error(refused, 400, "video_not_ready")
    ok(decide(client, approver, approval_for(store, source["id"]).id, "approve"))
    source_upstream = upstream.creates[0]["id"]
    upstream.finish(source_upstream)
    assert ok(retrieve(client, key, source["id"]))["status"] == "completed"

    remix = ok(
        client.post(
            f"/v1/videos/{source['id']}/remix",
            json={"prompt": "the president, at night"},
            headers=bearer(key.secret),
        )
    )

    assert remix["status"] == "queued" and remix["remixed_from_video_id"] == source["id"]
    assert len(upstream.creates) == 1  # held: nothing went upstream
    ok(decide(client, approver, approval_for(store, remix["id"]).id, "approve"))
    created = upstream.creates[1]
    assert created["url"] == f"{VIDEOS}/{source_upstream}/remix"
    assert json.loads(created["body"]) == {"prompt": "the president, at night"}
    upstream.finish(created["id"])
    done = ok(retrieve(client, key, remix["id"]))
    assert done["id"] == remix["id"] and done["status"] == "completed"
    assert done["remixed_from_video_id"] == source["id"]
    assert ledger(store, tester.id)["generations_per_day"] == 2


def test_deleting_a_held_video_refunds_and_a_late_approval_submits_nothing(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])

    deleted = ok(client.delete(f"/v1/videos/{video['id']}", headers=bearer(key.secret)))

    assert deleted == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert ledger(store, tester.id) == ZERO
    assert_error(retrieve(client, key, video["id"]), 404, "not_found")
    decided = ok(decide(client, approver, approval.id, "approve"))
    assert decided["video"] is None
    assert upstream.creates == [] and len(upstream.mock.calls) == 0
    assert ledger(store, tester.id) == ZERO


def test_another_tester_cannot_see_or_delete_a_held_video(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    make_key: Callable[..., IssuedKey],
) -> None:
    video = hold(client, key)
    mallory = make_key()
    assert_error(retrieve(client, mallory, video["id"]), 404, "not_found")
    response = client.delete(f"/v1/videos/{video['id']}", headers=bearer(mallory.secret))
    assert_error(response, 404, "not_found")
    assert ledger(store, tester.id) == RESERVED_4S


# -- the CLI ---------------------------------------------------------------------------


def test_approvals_through_the_cli(
    cli: Cli,
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
) -> None:
    approved_video, rejected_video = hold(client, key), hold(client, key)
    ids = {approval_for(store, v["id"]).id: v["id"] for v in (approved_video, rejected_video)}

    listed = json.loads(cli("approvals", "list", "--json").output)
    assert {(a["id"], a["video_id"], a["status"]) for a in listed} == {
        (approval_id, video_id, "pending") for approval_id, video_id in ids.items()
    }
    assert all(a["held_because"] == RULE["reason"] for a in listed)
    table = cli("approvals", "list", "--kind", "generation", "--tester", tester.id).output
    assert all(approval_id in table for approval_id in ids)

    approve_id = approval_for(store, approved_video["id"]).id
    reject_id = approval_for(store, rejected_video["id"]).id
    decided = json.loads(cli("approvals", "approve", approve_id, "--json").output)
    assert decided["status"] == "approved" and decided["decided_by"].startswith("cli:")
    assert decided["video"]["id"] == approved_video["id"]
    assert len(upstream.creates) == 1
    with store.read() as tx:
        video = tx.session.get(Video, approved_video["id"])
        assert video is not None and video.upstream_id == upstream.creates[0]["id"]

    missing_reason = cli("approvals", "reject", reject_id, code=None)
    assert missing_reason.exit_code == 2 and "--reason" in missing_reason.output
    blank = cli("approvals", "reject", reject_id, "--reason", " ", code=None)
    assert blank.exit_code == 1 and "invalid_value" in blank.output
    cli("approvals", "reject", reject_id, "--reason", "Not this one.")
    failed = ok(retrieve(client, key, rejected_video["id"]))
    assert failed["error"] == {"code": "rejected_by_reviewer", "message": "Not this one."}

    twice = cli("approvals", "approve", reject_id, code=None)
    assert twice.exit_code == 1 and "already_decided" in twice.output
    assert len(upstream.creates) == 1
    assert json.loads(cli("approvals", "list", "--json").output) == []
    decided_list = json.loads(cli("approvals", "list", "--status", "rejected", "--json").output)
    assert [a["id"] for a in decided_list] == [reject_id]
    assert ledger(store, tester.id)["generations_per_day"] == 1


def test_a_held_request_of_a_revoked_key_cannot_be_approved(
    client: Any, upstream: FakeBackend, store: Store, key: IssuedKey, approver: IssuedToken
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    with store.transaction() as tx:
        tx.keys.revoke(key.key.id, "admin:test", "posted on a forum")

    response = decide(client, approver, approval.id, "approve")

    assert_error(response, 409, "requester_not_active")
    assert upstream.creates == []
    assert approval_for(store, video["id"]).status == "pending"
    ok(decide(client, approver, approval.id, "reject", "key was leaked"))


def test_nothing_held_can_be_approved_during_a_lockdown(
    client: Any, upstream: FakeBackend, store: Store, key: IssuedKey, approver: IssuedToken
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    with store.transaction() as tx:
        tx.lockdown.set_lockdown(True, "admin:test", "credentials on a public site")

    assert_error(decide(client, approver, approval.id, "approve"), 409, "lockdown")
    assert upstream.creates == []


def test_a_video_deleted_while_its_approval_is_submitted_does_not_run_uncharged(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    original = upstream._create

    def create_while_the_tester_deletes(request: Any) -> Any:
        answer = original(request)
        with store.transaction() as tx:  # the tester's DELETE lands mid-submission
            tx.generations.deleted(video["id"], ran=False)
        return answer

    upstream.mock.remove(responses.POST, VIDEOS)
    upstream.mock.add_callback(responses.POST, VIDEOS, callback=create_while_the_tester_deletes)

    decided = ok(decide(client, approver, approval.id, "approve"))

    assert decided["video"] is None
    (created,) = upstream.creates
    assert created["id"] not in upstream.videos  # taken back from the backend
    assert ledger(store, tester.id) == ZERO  # nothing charged for a video nobody will see


# -- lost submissions --------------------------------------------------------------------


def test_an_approved_submission_whose_answer_was_lost_is_adopted_by_the_reconciler(
    client: Any,
    state: GatewayState,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    approver: IssuedToken,
) -> None:
    video = hold(client, key)
    upstream.lost_answers = 1

    decided = ok(decide(client, approver, approval_for(store, video["id"]).id, "approve"))

    assert decided["video"] is None
    assert ledger(store, tester.id) == RESERVED_4S
    report = Reconciler(store, UpstreamBackend(state.upstream)).run()
    (adopted,) = report.actions
    assert (adopted.action, adopted.video_id) == ("adopted", video["id"])
    with store.read() as tx:
        assert tx.videos.upstream_id(video["id"], tester.id) == adopted.upstream_id
    upstream.finish(str(adopted.upstream_id))
    assert ok(retrieve(client, key, video["id"]))["status"] == "completed"
    assert ledger(store, tester.id)["generations_per_day"] == 1


def test_a_worker_dying_right_after_the_approval_leaves_nothing_queued_forever(
    client: Any,
    state: GatewayState,
    clock: FakeClock,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
) -> None:
    video = hold(client, key)
    approval = approval_for(store, video["id"])
    # What the approval does before its upstream call, and then the worker is gone.
    with store.transaction() as tx:
        approved = tx.approvals.decide(approval.id, True, "test:approver", None)
        lease_submission(state, tx, approved)
    clock.advance(seconds=state.settings.reservation_lease_seconds + 1)

    report = Reconciler(store, UpstreamBackend(state.upstream)).run()

    assert [action.action for action in report.actions] == ["refunded"]
    failed = ok(retrieve(client, key, video["id"]))
    assert failed["status"] == "failed"
    assert ledger(store, tester.id) == ZERO
    assert upstream.creates == []
