"""``/v1/me``: what a tester may know about their own key."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from gateway.auth import current_principal, require_tester
from gateway.state import current_state
from gateway.views import key_view

bp = Blueprint("me", __name__, url_prefix="/v1")


@bp.get("/me")
@require_tester
def me() -> Response:
    principal = current_principal()
    store = current_state().store
    with store.read() as tx:
        key = tx.keys.get(principal.key_id)
        tester = tx.testers.get(principal.tester_id)
        return jsonify(
            {
                "object": "me",
                "key": key_view(key, store.clock()),
                "tester": {"id": tester.id, "name": tester.name, "cohort": tester.cohort},
            }
        )
