"""Approvers' decisions: record one and carry it out.

Approving a held generation submits it to the backend on the tester's behalf; rejecting
fails it with the reason the tester sees; a share or download decision is recorded (a
share gets its link's lifetime from the tester's cohort). The approver plane, the console
and the CLI all decide through ``decide``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gateway.presenters import approval_view
from gateway.services.generations import lease_submission, submit_approved

if TYPE_CHECKING:
    from gateway.state import GatewayState


def decide(
    state: GatewayState,
    approval_id: str,
    approve: bool,
    actor: str,
    reason: str | None,
    request_id: str,
) -> dict[str, Any]:
    """Record a decision and carry it out; returns the approval as the API shows it, with
    the submitted ``video`` (or None) for an approved generation.

    Raises NotFound, InvalidInput (a rejection without a reason), Conflict (decided before).
    """
    store = state.store
    with store.transaction() as tx:
        pending = tx.approvals.get(approval_id)
        valid_for = None
        if pending.kind == "share":
            policy, _ = tx.policies.for_tester(pending.tester_id)
            valid_for = timedelta(seconds=policy.share_link_seconds)
        approval = tx.approvals.decide(approval_id, approve, actor, reason, valid_for)
        if approval.kind == "generation" and not approve:
            tx.generations.rejected(approval)
        if approval.kind == "generation" and approve:
            lease_submission(state, tx, approval)
    view = approval_view(approval)
    if approval.kind == "generation" and approve:
        view["video"] = submit_approved(state, approval, request_id)
    return view
