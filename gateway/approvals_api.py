"""The approver plane: ``/admin/v1/approvals``. Approving a held generation submits it to
the backend on the tester's behalf; rejecting fails it with the reason the tester sees."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, g, jsonify

from gateway.admin_plane import admin_blueprint, body, page_size, query_value, text
from gateway.auth import current_operator, require_role
from gateway.generations import lease_submission, submit_approved
from gateway.openapi import MAX_REASON
from gateway.presenters import approval_view
from gateway.state import GatewayState, current_state
from keys.roles import ANY_ROLE, APPROVAL_DECIDERS

bp = admin_blueprint("approvals", __name__, "/admin/v1/approvals")
MAX_LISTED = 500


@bp.get("")
@require_role(*ANY_ROLE)
def list_approvals() -> Response:
    limit = page_size(maximum=MAX_LISTED)
    with current_state().store.read() as tx:
        approvals = tx.approvals.list(
            status=query_value("status"),
            kind=query_value("kind"),
            tester_id=query_value("tester_id"),
            limit=limit,
        )
        return jsonify({"object": "list", "data": [approval_view(a) for a in approvals]})


@bp.get('/<id("apr"):approval_id>')
@require_role(*ANY_ROLE)
def show_approval(approval_id: str) -> Response:
    with current_state().store.read() as tx:
        return jsonify(approval_view(tx.approvals.get(approval_id)))


def decide(
    state: GatewayState,
    approval_id: str,
    approve: bool,
    actor: str,
    reason: str | None,
    request_id: str,
) -> dict[str, Any]:
    """Record a decision and carry it out. Shared by the API and the CLI.

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


@bp.post('/<id("apr"):approval_id>/approve')
@require_role(*APPROVAL_DECIDERS)
def approve(approval_id: str) -> Response:
    reason = text(body(), "reason", max_length=MAX_REASON)
    return jsonify(
        decide(current_state(), approval_id, True, current_operator().actor, reason, g.request_id)
    )


@bp.post('/<id("apr"):approval_id>/reject')
@require_role(*APPROVAL_DECIDERS)
def reject(approval_id: str) -> Response:
    # Missing: the domain says why a rejection needs one (the tester sees it).
    reason = text(body(), "reason", max_length=MAX_REASON)
    return jsonify(
        decide(current_state(), approval_id, False, current_operator().actor, reason, g.request_id)
    )
