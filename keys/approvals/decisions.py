"""Requests held for an approver: generations a rule held, share requests, and content
downloads in cohorts that require approval. Every decision records actor, time and reason;
a request is decided once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys.access.lifecycle import refusal
from keys.errors import Conflict, InvalidInput, NotFound
from keys.ids import new_id
from keys.leaks.lockdown import PROGRAM_ROW
from keys.models import ApiKey, Approval, ProgramState, Tester
from keys.records.audit import AuditTrail
from keys.text import clean_text

KINDS = ("generation", "share", "download")
STATUSES = ("pending", "approved", "rejected")
MAX_LIST = 500


class ApprovalService:
    def __init__(self, session: Session, audit: AuditTrail, clock: Callable[[], datetime]):
        self._session = session
        self._audit = audit
        self._clock = clock

    def hold(
        self,
        kind: str,
        tester_id: str,
        key_id: str,
        video_id: str,
        held_because: str,
        request: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Approval:
        """Open a pending request."""
        approval = Approval(
            id=new_id("apr"),
            kind=kind,
            status="pending",
            tester_id=tester_id,
            key_id=key_id,
            video_id=video_id,
            held_because=held_because,
            request=request or {},
            body=body,
            content_type=content_type,
            created_at=self._clock(),
        )
        self._session.add(approval)
        self._session.flush()
        self._audit.append(
            f"tester:{tester_id}",
            f"approval.request.{kind}",
            approval.id,
            held_because,
            details={"video_id": video_id, "key_id": key_id},
        )
        return approval

    def _refuse_if_requester_stopped(self, approval: Approval, now: datetime) -> None:
        program = self._session.get(ProgramState, PROGRAM_ROW)
        if program is not None and program.lockdown:
            raise Conflict(
                "The program is locked down; nothing held can be approved until it is lifted.",
                code="lockdown",
            )
        key = self._session.get(ApiKey, approval.key_id)
        tester = self._session.get(Tester, approval.tester_id)
        # The same rule that decides whether the key may call the API decides here.
        code = (
            refusal(key.status, key.expires_at, key.grace_until, tester.status, now)
            if key is not None and tester is not None
            else "key_revoked"
        )
        if code is not None:
            raise Conflict(
                f"The key that made this request ({approval.key_id}) can no longer be used "
                f"({code}); reject the request instead.",
                code="requester_not_active",
            )

    def latest(self, video_id: str, kind: str) -> Approval | None:
        """The newest request of this kind for a video."""
        return self._session.scalars(
            select(Approval)
            .where(Approval.video_id == video_id, Approval.kind == kind)
            .order_by(Approval.created_at.desc(), Approval.id.desc())
            .limit(1)
        ).first()

    def get(self, approval_id: str) -> Approval:
        """Raises NotFound."""
        approval = self._session.get(Approval, approval_id)
        if approval is None:
            raise NotFound(f"no approval request {approval_id}")
        return approval

    def list(
        self,
        status: str | None = None,
        kind: str | None = None,
        tester_id: str | None = None,
        limit: int = 100,
        *,
        newest_first: bool = False,
    ) -> list[Approval]:
        """Requests, oldest first (the queue order) unless ``newest_first``.

        Raises InvalidInput."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", param="status")
        if kind is not None and kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", param="kind")
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}", param="limit")
        order = (
            (Approval.created_at.desc(), Approval.id.desc())
            if newest_first
            else (Approval.created_at, Approval.id)
        )
        query = select(Approval).order_by(*order).limit(limit)
        if status:
            query = query.where(Approval.status == status)
        if kind:
            query = query.where(Approval.kind == kind)
        if tester_id:
            query = query.where(Approval.tester_id == tester_id)
        return list(self._session.scalars(query))

    def decide(
        self,
        approval_id: str,
        approve: bool,
        actor: str,
        reason: str | None,
        valid_for: timedelta | None = None,
    ) -> Approval:
        """Approve or reject a pending request, once. A rejection needs a reason.

        Raises NotFound, InvalidInput, Conflict (already decided; or an approval for a key
        that has since been revoked, suspended or expired, or during a lockdown: a leaked
        key's held requests must not run because an approver clicked through the queue).
        """
        # Cleaned, not refused: a decision is never lost to a stray control character.
        reason = clean_text(reason or "", 2000) or None
        if not approve and not reason:
            raise InvalidInput("a rejection needs a reason (the tester sees it)", param="reason")
        approval = self._session.get(Approval, approval_id, with_for_update=True)
        if approval is None:
            raise NotFound(f"no approval request {approval_id}")
        if approval.status != "pending":
            raise Conflict(
                f"{approval_id} was already {approval.status} by {approval.decided_by}",
                code="already_decided",
            )
        now = self._clock()
        if approve:
            self._refuse_if_requester_stopped(approval, now)
        approval.status = "approved" if approve else "rejected"
        approval.decided_at, approval.decided_by, approval.decision_reason = now, actor, reason
        if approve and valid_for is not None:
            approval.expires_at = now + valid_for
        self._session.flush()
        self._audit.append(
            actor,
            f"approval.{approval.status}",
            approval.id,
            reason,
            details={
                "kind": approval.kind,
                "video_id": approval.video_id,
                "tester_id": approval.tester_id,
            },
        )
        return approval
