"""The approver plane: ``/admin/v1/approvals``, parse, decide (gateway/services/approvals.py)
and render."""

from __future__ import annotations

from flask import Response, jsonify

from gateway.admin.openapi import MAX_REASON
from gateway.admin.plane import admin_blueprint, body, page_size, query_value, text
from gateway.http.auth import current_operator, require_role
from gateway.http.current import current_context, current_state
from gateway.presenters import approval_view
from gateway.services.approvals import decide
from keys.access.roles import ANY_ROLE, APPROVAL_DECIDERS

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


@bp.post('/<id("apr"):approval_id>/approve')
@require_role(*APPROVAL_DECIDERS)
def approve(approval_id: str) -> Response:
    reason = text(body(), "reason", max_length=MAX_REASON)
    return jsonify(
        decide(
            current_state(),
            approval_id,
            True,
            current_operator().actor,
            reason,
            current_context().request_id,
        )
    )


@bp.post('/<id("apr"):approval_id>/reject')
@require_role(*APPROVAL_DECIDERS)
def reject(approval_id: str) -> Response:
    # Missing: the domain says why a rejection needs one (the tester sees it).
    reason = text(body(), "reason", max_length=MAX_REASON)
    return jsonify(
        decide(
            current_state(),
            approval_id,
            False,
            current_operator().actor,
            reason,
            current_context().request_id,
        )
    )
