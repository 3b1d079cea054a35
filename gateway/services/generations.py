"""Creating videos: policy, quota, hold or forward, and the ledger.

Each step that changes state is one transaction of ``keys.generations.ledger``; the upstream call
happens between them, with no transaction (and no database connection) held open. Used by
the tester API (a create or remix), the approver plane and the CLI (an approved held
generation is submitted on the tester's behalf).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.upstream.client import (
    VIDEO_ID,
    UpstreamError,
    UpstreamUnanswered,
    timed_call,
    video_path,
)
from keys.access.lifecycle import Principal
from keys.errors import Forbidden, NotFound, QuotaExceeded
from keys.generations.ledger import ReservationSettled, cost_of, intent_of, present
from keys.limits.policies import GenerationRequest, decide
from keys.limits.quotas import Cost
from keys.models import Approval
from keys.records.usage import UsageRecord
from keys.store import Transaction

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.state import GatewayState

log = logging.getLogger("drawbridge.generations")


def refresh_running(state: GatewayState, context: RequestContext, tester_id: str) -> None:
    """Ask the backend about the tester's running videos, so finished ones free their slots."""
    store = state.store
    with store.read() as tx:
        running = [
            (video.id, video.upstream_id, video.snapshot) for video in tx.videos.running(tester_id)
        ]
    for video_id, upstream_id, snapshot in running:
        answer = timed_call(state.upstream, context, "GET", video_path(str(upstream_id)))
        with store.transaction() as tx:
            tx.generations.observe(
                video_id, present(answer.body, video_id, snapshot.get("remixed_from_video_id"))
            )


def lease(state: GatewayState) -> timedelta:
    """How long a reservation may stay in flight before the reconciler may settle it."""
    return timedelta(seconds=state.settings.reservation_lease_seconds)


def _admit(
    state: GatewayState,
    context: RequestContext,
    principal: Principal,
    cost: Cost,
    intent: dict[str, Any],
    admitted: Callable[[], UsageRecord],
) -> dict[str, str]:
    """Charge the quota and lease the reservation, writing the request's usage event (as
    ``admitted`` says it is now) with them."""
    store = state.store
    for attempt in (1, 2):
        try:
            with store.transaction() as tx:
                periods = tx.generations.admit(principal, cost, admitted(), intent, lease(state))
            context.usage_written = True
            return periods
        except QuotaExceeded as exc:
            # The job-slot count only learns that a video finished when someone looks;
            # look now, once, before refusing.
            if attempt == 2 or exc.quota.metric != "concurrent_jobs":
                raise
            refresh_running(state, context, principal.tester_id)
    raise AssertionError("unreachable")


def generate(
    state: GatewayState,
    context: RequestContext,
    request: GenerationRequest,
    forwarded: tuple[bytes, str],
    path: str,
    admitted: Callable[[], UsageRecord],
    remix_of: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Run a creation or remix of the admitted tester through policy and quota, then hold it
    or forward it.

    ``forwarded`` is the body to send upstream and its content type; ``path`` the upstream
    path; ``admitted`` makes the request's usage event as it stands, written with the quota
    charge;
    ``remix_of`` the source video's (gateway id, upstream id). Returns the video object the
    tester sees. Raises Forbidden (the cohort's policy), QuotaExceeded or UpstreamError.
    """
    principal = context.principal
    assert principal is not None, "generate() needs an admitted tester"
    body, content_type = forwarded
    decision = decide(principal.policy, request)
    if decision.action == "deny":
        raise Forbidden(str(decision.reason), code="policy_violation", param=decision.param)
    cost = cost_of(request)
    intent = intent_of(request, remix_of[1] if remix_of else None)
    periods = _admit(state, context, principal, cost, intent, admitted)
    store = state.store
    if decision.action == "hold":
        try:
            with store.transaction() as tx:
                video, _ = tx.generations.hold(
                    principal,
                    request,
                    cost,
                    periods,
                    str(decision.reason),
                    context.request_id,
                    body,
                    content_type,
                    remix_of,
                )
                return dict(video.snapshot)
        except ReservationSettled:
            raise UpstreamError(504, _OUTLIVED, "upstream_timeout") from None
    try:
        answer = timed_call(
            state.upstream, context, "POST", path, body=body, content_type=content_type
        )
        created_id = answer.body.get("id")
        # An id we could never route back to is the backend's fault (502).
        if not isinstance(created_id, str) or not VIDEO_ID.fullmatch(created_id):
            raise UpstreamError(
                502, "The generation backend sent an unreadable answer.", "upstream_error"
            )
    except UpstreamUnanswered as exc:
        # The backend may have created the job: the reconciler finds it (the video becomes
        # the tester's) or refunds, at once rather than when the lease would have run out.
        _leave_to_reconciler(state, context.request_id, exc.status, exc.code)
        raise
    except UpstreamError as exc:
        with store.transaction() as tx:
            tx.generations.not_created(
                principal.tester_id, cost, periods, context.request_id, exc.status, exc.code
            )
        raise
    snapshot = present(answer.body, created_id, remix_of[0] if remix_of else None)
    try:
        with store.transaction() as tx:
            tx.generations.created(
                principal, snapshot, cost, periods, context.request_id, context.upstream_ms or 0.0
            )
    except ReservationSettled:
        return _after_reconciler(state, context, principal.tester_id, created_id)
    except IntegrityError:
        # The backend answered with an id it had given before: never hand one video to two
        # owners. Refund, and blame the backend.
        with store.transaction() as tx:
            tx.generations.not_created(
                principal.tester_id, cost, periods, context.request_id, 502, "upstream_error"
            )
        raise UpstreamError(
            502, "The generation backend reused a video id.", "upstream_error"
        ) from None
    except SQLAlchemyError:
        # The job runs upstream but the ledger could not say so: hand it to the reconciler
        # now (if the database lets us), which makes it the tester's.
        _leave_to_reconciler(state, context.request_id, 500, "internal_error")
        raise
    return snapshot


def _leave_to_reconciler(state: GatewayState, request_id: str, status: int, code: str) -> None:
    try:
        with state.store.transaction() as tx:
            tx.generations.unanswered(request_id, status, code)
    except SQLAlchemyError:
        log.warning("could not end the lease of %s; it runs out on its own", request_id)
    if state.sweep is not None:
        state.sweep.wake()


_OUTLIVED = "The request outlived its reservation; nothing was charged."


def _after_reconciler(
    state: GatewayState, context: RequestContext, tester_id: str, created_id: str
) -> dict[str, Any]:
    """This request outlived its lease and the reconciler settled it first: the video is the
    tester's if it adopted this job; otherwise it refunded, and the job must not run."""
    with state.store.read() as tx:
        try:
            return dict(tx.videos.owned(created_id, tester_id).snapshot)
        except NotFound:
            pass
    try:
        timed_call(state.upstream, context, "DELETE", video_path(created_id))
    except UpstreamError:
        log.warning("could not delete upstream video %s of a refunded reservation", created_id)
    raise UpstreamError(504, _OUTLIVED, "upstream_timeout")


def submission_id(approval: Approval) -> str:
    return "sub_" + approval.id


def lease_submission(state: GatewayState, tx: Transaction, approval: Approval) -> None:
    """Lease an approved generation's submission in the approval's own transaction: a worker
    dying anywhere before it records the backend's answer leaves the video to the reconciler
    instead of queued forever with its quota reserved."""
    tx.generations.submitting(
        approval, submission_id(approval), submission_intent(approval), lease(state)
    )


def submit_approved(
    state: GatewayState, approval: Approval, request_id: str
) -> dict[str, Any] | None:
    """Send an approved generation to the backend on the tester's behalf.

    Returns the video object, or None when the tester deleted it meanwhile or the backend
    failed — then the video fails (quota refunded) rather than the approver's request. Needs
    no HTTP request, so the CLI calls it too. The submission was leased with the decision
    (lease_submission).
    """
    store = state.store
    submission = submission_id(approval)
    with store.transaction() as tx:
        try:
            tx.videos.owned(approval.video_id, approval.tester_id)
        except NotFound:
            tx.generations.release(submission)
            return None
    remix_of = approval.request.get("remix_of")
    path = video_path(remix_of, "/remix") if remix_of else "videos"
    try:
        answer = state.upstream.call_json(
            "POST",
            path,
            request_id=request_id,
            body=approval.body or b"",
            content_type=approval.content_type or "application/json",
        )
        if not VIDEO_ID.fullmatch(str(answer.body.get("id", ""))):
            raise UpstreamError(
                502, "The generation backend sent an unreadable answer.", "upstream_error"
            )
    except UpstreamUnanswered as exc:
        _leave_to_reconciler(state, submission, exc.status, exc.code)
        return None
    except UpstreamError as exc:
        with store.transaction() as tx:
            tx.generations.submission_failed(approval.video_id, exc.message, submission)
        return None
    with store.transaction() as tx:
        wanted = tx.generations.submitted(approval.video_id, answer.body, submission)
        if wanted:
            return dict(tx.videos.owned(approval.video_id, approval.tester_id).snapshot)
    # Deleted while in flight (or refunded by the reconciler): take it back from the backend.
    try:
        state.upstream.call_json(
            "DELETE", video_path(str(answer.body["id"])), request_id=request_id
        )
    except UpstreamError:
        log.warning("could not delete upstream video %s of a deleted held video", answer.body["id"])
    return None


def submission_intent(approval: Approval) -> dict[str, Any]:
    """What an approved generation sends upstream, as keys.generations.ledger.intent_of says it."""
    held = approval.request
    return {
        "model": held.get("model"),
        "size": held.get("size"),
        "seconds": str(held.get("seconds")),
        "prompt": held.get("prompt"),
        "remix_of": held.get("remix_of"),
    }
