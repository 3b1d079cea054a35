"""The admin API (``/admin/v1``): keys, testers and tokens for admins; reads for auditors.

Each handler parses input, calls one domain service method, and renders the result; the same
methods back the CLI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from gateway.auth import current_operator, require_role
from gateway.errors import ApiError
from gateway.inputs import (
    json_body,
    optional_string,
    parse_duration,
    parse_timestamp,
    required_string,
)
from gateway.openapi import openapi_document
from gateway.state import current_state
from gateway.views import iso, key_view, tester_view, token_view
from keys.errors import InvalidInput

bp = Blueprint("admin", __name__, url_prefix="/admin/v1")

ADMIN = ("admin",)
READERS = ("admin", "auditor")
ANY_ROLE = ("admin", "approver", "auditor")
MAX_AUDIT_PAGE = 1000


def _listing(items: list[dict[str, Any]]) -> Response:
    return jsonify({"object": "list", "data": items})


def _expiry(payload: dict[str, Any], now: datetime) -> datetime | None:
    if payload.get("expires_at") is not None and payload.get("expires_in") is not None:
        raise InvalidInput("give expires_at or expires_in, not both", param="expires_at")
    if payload.get("expires_at") is not None:
        return parse_timestamp(payload["expires_at"], "expires_at")
    if payload.get("expires_in") is not None:
        return now + parse_duration(payload["expires_in"], "expires_in")
    return None


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@bp.get("/whoami")
@require_role(*ANY_ROLE)
def whoami() -> Response:
    operator = current_operator()
    return jsonify({"id": operator.token_id, "name": operator.name, "role": operator.role})


# -- testers ---------------------------------------------------------------------------


@bp.get("/testers")
@require_role(*READERS)
def list_testers() -> Response:
    with current_state().store.read() as tx:
        testers = tx.testers.list(cohort=request.args.get("cohort"))
        return _listing([tester_view(tester) for tester in testers])


@bp.post("/testers")
@require_role(*ADMIN)
def add_tester() -> tuple[Response, int]:
    payload = json_body()
    with current_state().store.transaction() as tx:
        tester = tx.testers.add(
            required_string(payload, "name"),
            required_string(payload, "email"),
            actor=current_operator().actor,
            cohort=optional_string(payload, "cohort") or "default",
        )
        return jsonify(tester_view(tester)), 201


@bp.get("/testers/<tester_id>")
@require_role(*READERS)
def show_tester(tester_id: str) -> Response:
    store = current_state().store
    with store.read() as tx:
        view = tester_view(tx.testers.get(tester_id))
        view["keys"] = [key_view(key, store.clock()) for key in tx.keys.list(tester_id)]
        return jsonify(view)


@bp.post("/testers/<tester_id>/keys")
@require_role(*ADMIN)
def issue_key(tester_id: str) -> tuple[Response, int]:
    payload = json_body()
    store = current_state().store
    metadata = payload.get("metadata")
    with store.transaction() as tx:
        issued = tx.keys.issue(
            tester_id,
            actor=current_operator().actor,
            expires_at=_expiry(payload, store.clock()),
            metadata=metadata if metadata is not None else {},
        )
        view = key_view(issued.key, store.clock())
    view["secret"] = issued.secret
    return jsonify(view), 201


@bp.post("/testers/<tester_id>/revoke-keys")
@require_role(*ADMIN)
def revoke_tester_keys(tester_id: str) -> Response:
    payload = json_body()
    with current_state().store.transaction() as tx:
        revoked = tx.keys.revoke_all_for_tester(
            tester_id, current_operator().actor, required_string(payload, "reason")
        )
    return jsonify({"tester_id": tester_id, "revoked": revoked})


# -- keys ------------------------------------------------------------------------------


@bp.get("/keys")
@require_role(*READERS)
def list_keys() -> Response:
    store = current_state().store
    with store.read() as tx:
        keys = tx.keys.list(tester_id=request.args.get("tester_id"))
        return _listing([key_view(key, store.clock()) for key in keys])


@bp.get("/keys/<key_id>")
@require_role(*READERS)
def show_key(key_id: str) -> Response:
    store = current_state().store
    with store.read() as tx:
        return jsonify(key_view(tx.keys.get(key_id), store.clock()))


@bp.post("/keys/<key_id>/rotate")
@require_role(*ADMIN)
def rotate_key(key_id: str) -> tuple[Response, int]:
    payload = json_body()
    state = current_state()
    grace_value = payload.get("grace_seconds", state.settings.rotation_grace_seconds)
    if not isinstance(grace_value, int) or isinstance(grace_value, bool):
        raise InvalidInput("grace_seconds must be an integer", param="grace_seconds")
    with state.store.transaction() as tx:
        issued = tx.keys.rotate(
            key_id, current_operator().actor, parse_duration(grace_value, "grace_seconds")
        )
        view = key_view(issued.key, state.store.clock())
    view["secret"] = issued.secret
    return jsonify(view), 201


def _key_action(key_id: str, action: str) -> Response:
    payload = json_body()
    store = current_state().store
    actor = current_operator().actor
    with store.transaction() as tx:
        if action == "revoke":
            key = tx.keys.revoke(key_id, actor, required_string(payload, "reason"))
        elif action == "suspend":
            key = tx.keys.suspend(key_id, actor, required_string(payload, "reason"))
        else:
            key = tx.keys.resume(key_id, actor, optional_string(payload, "reason"))
        return jsonify(key_view(key, store.clock()))


@bp.post("/keys/<key_id>/revoke")
@require_role(*ADMIN)
def revoke_key(key_id: str) -> Response:
    return _key_action(key_id, "revoke")


@bp.post("/keys/<key_id>/suspend")
@require_role(*ADMIN)
def suspend_key(key_id: str) -> Response:
    return _key_action(key_id, "suspend")


@bp.post("/keys/<key_id>/resume")
@require_role(*ADMIN)
def resume_key(key_id: str) -> Response:
    return _key_action(key_id, "resume")


# -- admin tokens ----------------------------------------------------------------------


@bp.get("/tokens")
@require_role(*ADMIN)
def list_tokens() -> Response:
    with current_state().store.read() as tx:
        return _listing([token_view(token) for token in tx.tokens.list()])


@bp.post("/tokens")
@require_role(*ADMIN)
def create_token() -> tuple[Response, int]:
    payload = json_body()
    store = current_state().store
    with store.transaction() as tx:
        issued = tx.tokens.create(
            required_string(payload, "name"),
            required_string(payload, "role"),
            current_operator().actor,
            expires_at=_expiry(payload, store.clock()),
        )
        view = token_view(issued.token)
    view["secret"] = issued.secret
    return jsonify(view), 201


@bp.post("/tokens/<token_id>/revoke")
@require_role(*ADMIN)
def revoke_token(token_id: str) -> Response:
    payload = json_body()
    with current_state().store.transaction() as tx:
        token = tx.tokens.revoke(
            token_id, current_operator().actor, required_string(payload, "reason")
        )
        return jsonify(token_view(token))


# -- audit trail -----------------------------------------------------------------------


@bp.get("/audit")
@require_role(*READERS)
def audit_entries() -> Response:
    after, limit = request.args.get("after_seq", "0"), request.args.get("limit", "100")
    if not after.isdigit():
        raise ApiError(
            400, "after_seq must be a non-negative integer", "invalid_value", param="after_seq"
        )
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_AUDIT_PAGE:
        raise ApiError(
            400, f"limit must be between 1 and {MAX_AUDIT_PAGE}", "invalid_value", param="limit"
        )
    with current_state().store.read() as tx:
        entries = tx.audit.entries(after_seq=int(after), limit=int(limit) + 1)
    page = entries[: int(limit)]
    return jsonify(
        {
            "object": "list",
            "data": [
                {
                    "seq": entry.seq,
                    "at": iso(entry.at),
                    "actor": entry.actor,
                    "action": entry.action,
                    "target": entry.target,
                    "reason": entry.reason,
                    "details": entry.details,
                    "prev_hash": entry.prev_hash,
                    "hash": entry.hash,
                }
                for entry in page
            ],
            "has_more": len(entries) > len(page),
        }
    )
