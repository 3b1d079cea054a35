"""The quota-accounted life of a generation: admitted (quota reserved, billable usage event
and a leased reservation written, in one transaction), created or held, and finally settled
(completed: only the job slot is given back) or refunded (the upstream call, the generation or
the approver said no).

The HTTP edge makes the upstream calls between these steps; each step is one transaction.
Every step that ends a reservation deletes its row with a conditional DELETE, so exactly one
of the worker and the reconciler (keys/generations/reconcile.py) settles it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from keys.access.lifecycle import Principal
from keys.approvals.decisions import ApprovalService
from keys.generations.videos import TERMINAL_STATUSES, VideoLedger
from keys.limits.policies import GenerationRequest
from keys.limits.quotas import Cost, QuotaService
from keys.models import Approval, Reservation, Video
from keys.records.usage import CREATED, HELD, REFUNDED, UsageLog, UsageRecord


def new_video_id() -> str:
    """An id for a video the gateway holds before the backend has one (OpenAI's shape)."""
    return "video_" + secrets.token_hex(24)


def cost_of(request: GenerationRequest) -> Cost:
    return Cost(generations=1, video_seconds=request.seconds)


def intent_of(request: GenerationRequest, remix_of: str | None = None) -> dict[str, Any]:
    """What a creation asks the backend for, in the terms its video object answers with:
    how the reconciler recognises the job of a reservation whose answer was lost.
    ``remix_of`` is the source's upstream id."""
    return {
        "model": request.model,
        "size": request.size,
        "seconds": str(request.seconds),
        "prompt": request.prompt,
        "remix_of": remix_of,
    }


class ReservationSettled(Exception):
    """The reservation was already settled by someone else (the reconciler, after its lease
    ran out): the caller's outcome must not be recorded a second time."""


def held_snapshot(
    video_id: str, request: GenerationRequest, created_at: datetime, remix_of: str | None
) -> dict[str, Any]:
    """The video object a tester sees while an approver decides."""
    return {
        "id": video_id,
        "object": "video",
        "created_at": int(created_at.timestamp()),
        "completed_at": None,
        "expires_at": None,
        "error": None,
        "model": request.model,
        "progress": 0,
        "prompt": request.prompt,
        "remixed_from_video_id": remix_of,
        "seconds": str(request.seconds),
        "size": request.size,
        "status": "queued",
    }


def failed_snapshot(
    snapshot: dict[str, Any], code: str, message: str, now: datetime
) -> dict[str, Any]:
    return {
        **snapshot,
        "status": "failed",
        "progress": snapshot.get("progress", 0),
        "completed_at": int(now.timestamp()),
        "error": {"code": code, "message": message},
    }


class GenerationService:
    def __init__(
        self,
        session: Session,
        clock: Callable[[], datetime],
        videos: VideoLedger,
        quotas: QuotaService,
        approvals: ApprovalService,
        usage: UsageLog,
    ) -> None:
        self._session = session
        self._clock = clock
        self._videos = videos
        self._quotas = quotas
        self._approvals = approvals
        self._usage = usage

    def admit(
        self,
        principal: Principal,
        cost: Cost,
        event: UsageRecord,
        intent: dict[str, Any],
        lease: timedelta,
    ) -> dict[str, str]:
        """Reserve the cost, write the billable event and the reservation's lease. Raises
        QuotaExceeded (and the transaction must roll back)."""
        periods = self._quotas.reserve(principal.tester_id, principal.policy, cost)
        event.generations, event.video_seconds = cost.generations, cost.video_seconds
        self._usage.record(event)
        now = self._clock()
        self._session.add(
            Reservation(
                request_id=event.request_id,
                tester_id=principal.tester_id,
                key_id=principal.key_id,
                created_at=now,
                lease_until=now + lease,
                generations=cost.generations,
                video_seconds=cost.video_seconds,
                quota_periods=periods,
                intent=intent,
            )
        )
        return periods

    def release(self, request_id: str) -> bool:
        """End a reservation's lease; False when it had already ended (someone settled it)."""
        result = self._session.execute(
            delete(Reservation)
            .where(Reservation.request_id == request_id)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def unanswered(self, request_id: str, status: int, error_code: str) -> None:
        """The backend may or may not have created the job (a timeout, a broken connection):
        end the lease now, so the reconciler settles or refunds it against the backend."""
        self._session.execute(
            update(Reservation)
            .where(Reservation.request_id == request_id, Reservation.claimed_by.is_(None))
            .values(lease_until=self._clock())
        )
        self._usage.complete(request_id, status=status, error_code=error_code)

    def submitting(
        self, approval: Approval, request_id: str, intent: dict[str, Any], lease: timedelta
    ) -> None:
        """An approved held video is about to be sent upstream: lease its submission, so a
        worker dying before it records the answer leaves something the reconciler finds."""
        now = self._clock()
        self._session.add(
            Reservation(
                request_id=request_id,
                tester_id=approval.tester_id,
                key_id=approval.key_id,
                video_id=approval.video_id,
                created_at=now,
                lease_until=now + lease,
                quota_periods={},
                intent=intent,
            )
        )

    def created(
        self,
        principal: Principal,
        snapshot: dict[str, Any],
        cost: Cost,
        periods: dict[str, str],
        request_id: str,
        upstream_latency_ms: float,
    ) -> Video:
        """The backend accepted the generation: the video is the tester's. Raises
        ReservationSettled when the reconciler already settled the reservation."""
        if not self.release(request_id):
            raise ReservationSettled(request_id)
        video_id = str(snapshot["id"])
        video = self._videos.record(
            video_id,
            principal.tester_id,
            principal.key_id,
            snapshot,
            video_seconds=cost.video_seconds,
            quota_periods=periods,
            quota_state="reserved",
        )
        self._usage.complete(
            request_id,
            outcome=CREATED,
            status=200,
            video_id=video_id,
            upstream_latency_ms=upstream_latency_ms,
        )
        self.observe(video_id, snapshot)
        return video

    def not_created(
        self,
        tester_id: str,
        cost: Cost,
        periods: dict[str, str],
        request_id: str,
        status: int,
        error_code: str,
    ) -> None:
        """The backend refused or failed: refund everything (unless the reconciler already
        settled the reservation)."""
        if not self.release(request_id):
            return
        self._quotas.give_back(tester_id, periods, cost, refund=True)
        self._usage.complete(request_id, outcome=REFUNDED, status=status, error_code=error_code)

    def hold(
        self,
        principal: Principal,
        request: GenerationRequest,
        cost: Cost,
        periods: dict[str, str],
        held_because: str,
        request_id: str,
        body: bytes,
        content_type: str,
        remix_of: tuple[str, str] | None = None,
    ) -> tuple[Video, Approval]:
        """Keep a generation for an approver. ``remix_of`` is (gateway id, upstream id).
        Raises ReservationSettled when the reconciler already refunded the reservation."""
        if not self.release(request_id):
            raise ReservationSettled(request_id)
        video_id = new_video_id()
        snapshot = held_snapshot(
            video_id, request, self._clock(), remix_of[0] if remix_of else None
        )
        video = self._videos.record(
            video_id,
            principal.tester_id,
            principal.key_id,
            snapshot,
            upstream_id=None,
            video_seconds=cost.video_seconds,
            quota_periods=periods,
            quota_state="reserved",
        )
        details = {
            "model": request.model,
            "size": request.size,
            "seconds": request.seconds,
            "prompt": request.prompt,
        }
        if remix_of:
            details["remix_of"] = remix_of[1]
        approval = self._approvals.hold(
            "generation",
            principal.tester_id,
            principal.key_id,
            video_id,
            held_because,
            details,
            body,
            content_type,
        )
        self._usage.complete(request_id, outcome=HELD, status=200, video_id=video_id)
        return video, approval

    def observe(self, video_id: str, snapshot: dict[str, Any]) -> None:
        """Keep the latest object; settle or refund the reservation once, when it ends."""
        status = str(snapshot.get("status", "queued"))
        self._session.execute(
            update(Video).where(Video.id == video_id).values(snapshot=snapshot, status=status)
        )
        if status in TERMINAL_STATUSES:
            self._finish(video_id, refund=status == "failed")

    def _finish(self, video_id: str, *, refund: bool) -> None:
        # The conditional update makes settling happen once, however many polls race here.
        row = self._session.execute(
            update(Video)
            .where(Video.id == video_id, Video.quota_state == "reserved")
            .values(quota_state="refunded" if refund else "settled")
            .returning(Video.tester_id, Video.video_seconds, Video.quota_periods)
        ).first()
        if row is not None:
            cost = Cost(generations=1, video_seconds=row.video_seconds)
            self._quotas.give_back(row.tester_id, row.quota_periods, cost, refund=refund)

    def deleted(self, video_id: str, *, ran: bool) -> None:
        """A deleted video frees its job slot if it was still running; one deleted while held
        never ran, so its whole cost comes back."""
        self._videos.mark_deleted(video_id)
        self._finish(video_id, refund=not ran)

    def rejected(self, approval: Approval) -> None:
        """An approver said no: the video fails with the reason, and the quota comes back."""
        video = self._session.get(Video, approval.video_id)
        if video is None:
            return
        reason = approval.decision_reason or "Rejected by a reviewer."
        snapshot = failed_snapshot(video.snapshot, "rejected_by_reviewer", reason, self._clock())
        self.observe(video.id, snapshot)

    def submitted(
        self, video_id: str, upstream_snapshot: dict[str, Any], request_id: str | None = None
    ) -> bool:
        """An approved generation reached the backend under its own id.

        Returns False when the tester deleted the video while it was being submitted (its
        quota was already given back), or when the reconciler settled the submission without
        this job: the caller must delete the backend's copy rather than let it run uncharged
        and unseen. ``request_id`` names the submission's lease.
        """
        video = self._session.get(Video, video_id, with_for_update=True)
        if request_id is not None and not self.release(request_id):
            # The reconciler got there first; the job is ours only if it adopted this one.
            return video is not None and video.upstream_id == str(upstream_snapshot["id"])
        if video is None or video.deleted_at is not None:
            return False
        remixed_from = video.snapshot.get("remixed_from_video_id")
        self._session.execute(
            update(Video)
            .where(Video.id == video_id)
            .values(upstream_id=str(upstream_snapshot["id"]))
        )
        self.observe(video_id, present(upstream_snapshot, video_id, remixed_from))
        return True

    def submission_failed(self, video_id: str, message: str, request_id: str | None = None) -> None:
        """The backend refused an approved generation: the video fails and its quota comes
        back (unless the reconciler already settled the submission)."""
        if request_id is not None and not self.release(request_id):
            return
        video = self._session.get(Video, video_id)
        if video is not None:
            snapshot = failed_snapshot(video.snapshot, "upstream_error", message, self._clock())
            self.observe(video_id, snapshot)


def present(upstream: dict[str, Any], video_id: str, remixed_from: str | None) -> dict[str, Any]:
    """The backend's object as the tester sees it: under the gateway's id."""
    body = dict(upstream)
    body["id"] = video_id
    if remixed_from is not None:
        body["remixed_from_video_id"] = remixed_from
    return body
