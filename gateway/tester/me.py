"""``/v1/me``: everything a tester may know about their own access — key, limits, what is
left of each quota and when it resets, and every held request with its decision — plus
self-service revocation and rotation for a tester who exposed their own key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, jsonify

from gateway.http.auth import current_principal, require_tester, require_tester_before_proof
from gateway.http.current import current_state
from gateway.http.inputs import json_body, optional_string
from gateway.presenters import approval_view, iso, key_view, proof_key_view
from keys.approvals.decisions import MAX_LIST
from keys.durations import parse_duration
from keys.errors import Forbidden, InvalidInput
from keys.models import Approval
from keys.store import Transaction

bp = Blueprint("me", __name__, url_prefix="/v1")

MAX_SELF_GRACE = timedelta(hours=24)


def requests_of(tx: Transaction, tester_id: str) -> list[Approval]:
    """A tester's held requests, oldest first: every pending one, and the latest decisions
    (a long history must not push what is still waiting out of view)."""
    pending = tx.approvals.list("pending", tester_id=tester_id, limit=MAX_LIST)
    recent = tx.approvals.list(tester_id=tester_id, limit=100, newest_first=True)
    return sorted(
        pending + [a for a in recent if a.status != "pending"],
        key=lambda a: (a.created_at, a.id),
    )


@bp.get("/me")
@require_tester_before_proof
def me() -> Response:
    principal = current_principal()
    store = current_state().store
    policy = principal.policy
    with store.read() as tx:
        key = tx.keys.get(principal.key_id)
        tester = tx.testers.get(principal.tester_id)
        quotas = tx.quotas.status(principal.tester_id, policy)
        approvals = requests_of(tx, principal.tester_id)
        proof_key = tx.proof_keys.in_force(principal.key_id)
        body: dict[str, Any] = {
            "object": "me",
            "key": key_view(key, store.clock()),
            "proof_key": proof_key_view(proof_key) if proof_key is not None else None,
            "tester": {"id": tester.id, "name": tester.name, "cohort": tester.cohort},
            "limits": {
                "requests_per_minute": policy.requests_per_minute,
                "requests_per_day": policy.requests_per_day,
                "models": list(policy.models),
                "sizes": list(policy.sizes),
                "seconds": list(policy.seconds),
                "generations_held_for_review": policy.hold_generations,
                "downloads_need_approval": policy.content_requires_approval,
                "sharing": policy.sharing,
                "proof_required": policy.require_proof,
            },
            "quotas": [
                {
                    "metric": quota.metric,
                    "limit": quota.limit,
                    "used": quota.used,
                    "remaining": quota.remaining,
                    "resets_at": iso(quota.resets_at),
                }
                for quota in quotas
            ],
            "requests": [approval_view(approval, for_tester=True) for approval in approvals],
        }
    return jsonify(body)


@bp.post("/me/revoke")
@require_tester_before_proof
def revoke_own_key() -> Response:
    """Revoke the calling key at once (e.g. after pasting it somewhere public)."""
    principal = current_principal()
    reason = optional_string(json_body(), "reason") or "revoked by its holder"
    store = current_state().store
    with store.transaction() as tx:
        key = tx.keys.revoke(principal.key_id, f"tester:{principal.tester_id}", reason)
        return jsonify(key_view(key, store.clock()))


@bp.post("/me/rotate")
@require_tester
def rotate_own_key() -> tuple[Response, int]:
    """Replace the calling key; the old one stops at once unless a short grace is asked."""
    principal = current_principal()
    grace = json_body().get("grace_seconds", 0)
    if isinstance(grace, bool) or not isinstance(grace, int):
        raise InvalidInput("grace_seconds must be a non-negative integer", param="grace_seconds")
    store = current_state().store
    with store.transaction() as tx:
        issued = tx.keys.rotate(
            principal.key_id,
            f"tester:{principal.tester_id}",
            parse_duration(grace, "grace_seconds", maximum=MAX_SELF_GRACE),
        )
        view = key_view(issued.key, store.clock())
    view["secret"] = issued.secret
    return jsonify(view), 201


@bp.get("/me/proof-keys")
@require_tester_before_proof
def list_proof_keys() -> Response:
    """The tester's proof keys in force, on any of their API keys."""
    principal = current_principal()
    with current_state().store.read() as tx:
        rows = tx.proof_keys.list_for_tester(principal.tester_id)
        return jsonify({"object": "list", "data": [proof_key_view(row) for row in rows]})


@bp.post("/me/proof-keys")
@require_tester_before_proof
def bind_proof_key() -> tuple[Response, int]:
    """Bind a public key to the calling API key. From the response on, the key string alone
    is refused: every request must be signed with the private key.

    ``replace: true`` swaps the key bound now for another, in one step; the request is then
    signed with the one bound now, as every request of a bound key is.
    """
    principal = current_principal()
    body = json_body()
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidInput("replace must be true or false", param="replace")
    with current_state().store.transaction() as tx:
        row = tx.proof_keys.bind(
            principal.key_id,
            body.get("public_key"),
            f"tester:{principal.tester_id}",
            tester_id=principal.tester_id,
            replace=replace,
        )
        return jsonify(proof_key_view(row)), 201


@bp.delete("/me/proof-keys/<proof_key_id>")
@require_tester
def unbind_proof_key(proof_key_id: str) -> Response:
    """Unbind one of the tester's proof keys. Only a request that proved possession may: an
    unbound key string (perhaps a leaked one) must not undo another key's protection."""
    principal = current_principal()
    if principal.proof_key is None:
        raise Forbidden(
            "Unbinding a proof key needs a request signed with a proof key; this API key has "
            "none bound. Ask an admin (`drawbridge keys unbind`).",
            code="proof_required_to_unbind",
        )
    with current_state().store.transaction() as tx:
        row = tx.proof_keys.unbind(
            proof_key_id, f"tester:{principal.tester_id}", tester_id=principal.tester_id
        )
        return jsonify(proof_key_view(row))
