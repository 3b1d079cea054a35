"""JSON views of domain objects. Secrets have no field here to appear in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keys.lifecycle import effective_status
from keys.models import AdminToken, ApiKey, Approval, ProgramState, Tester


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def key_view(key: ApiKey, now: datetime) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "tester_id": key.tester_id,
        "hint": key.hint,
        "status": effective_status(key, now),
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "metadata": key.key_metadata,
        "rotated_from": key.rotated_from_id,
        "replaced_by": key.replaced_by_id,
        "grace_until": iso(key.grace_until),
        "suspended": (
            {"at": iso(key.suspended_at), "by": key.suspended_by, "reason": key.suspended_reason}
            if key.status == "suspended"
            else None
        ),
        "revoked": (
            {"at": iso(key.revoked_at), "by": key.revoked_by, "reason": key.revoked_reason}
            if key.status == "revoked"
            else None
        ),
    }


def rotation_view(old: ApiKey, new: ApiKey, secret: str, now: datetime) -> dict[str, Any]:
    """A rotation's result: the successor (with its secret, shown once) and when the old
    key's grace ends."""
    return {
        **key_view(new, now),
        "secret": secret,
        "rotated_from_grace_until": iso(old.grace_until),
    }


def tester_view(tester: Tester) -> dict[str, Any]:
    return {
        "id": tester.id,
        "object": "tester",
        "name": tester.name,
        "email": tester.email,
        "cohort": tester.cohort,
        "status": tester.status,
        "created_at": iso(tester.created_at),
        "created_by": tester.created_by,
    }


def token_view(token: AdminToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "object": "admin_token",
        "name": token.name,
        "role": token.role,
        "hint": token.hint,
        "created_at": iso(token.created_at),
        "created_by": token.created_by,
        "expires_at": iso(token.expires_at),
        "revoked_at": iso(token.revoked_at),
    }


def approval_view(approval: Approval, *, for_tester: bool = False) -> dict[str, Any]:
    """A held request. Testers see the reason it was held and the decision with its reason;
    approvers also see who asked and what."""
    view: dict[str, Any] = {
        "id": approval.id,
        "object": "approval",
        "kind": approval.kind,
        "status": approval.status,
        "video_id": approval.video_id,
        "held_because": approval.held_because,
        "created_at": iso(approval.created_at),
        "decided_at": iso(approval.decided_at),
        "decision_reason": approval.decision_reason,
        "expires_at": iso(approval.expires_at),
    }
    if not for_tester:
        view.update(
            tester_id=approval.tester_id,
            key_id=approval.key_id,
            request=approval.request,
            decided_by=approval.decided_by,
        )
    return view


def lockdown_view(state: ProgramState) -> dict[str, Any]:
    return {
        "object": "lockdown",
        "lockdown": bool(state.lockdown),
        "reason": state.lockdown_reason,
        "changed_by": state.lockdown_by,
        "changed_at": iso(state.lockdown_at),
    }
