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
    query_int,
    required_string,
)
from gateway.openapi import openapi_document
from gateway.state import current_state
from gateway.usage_api import query_params, time_window
from gateway.usage_views import key_report_view
from gateway.views import iso, key_view, tester_view, token_view
from keys.durations import parse_duration, parse_timestamp
from keys.errors import InvalidInput
from keys.lifecycle import MAX_ROTATION_GRACE
from keys.policies import PolicyError, policy_from_mapping
from keys.testers import COHORT_NAME

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
    honeytoken = payload.get("honeytoken", False)
    if not isinstance(honeytoken, bool):
        raise InvalidInput("honeytoken must be true or false", param="honeytoken")
    with store.transaction() as tx:
        issued = tx.keys.issue(
            tester_id,
            actor=current_operator().actor,
            expires_at=_expiry(payload, store.clock()),
            metadata=metadata if metadata is not None else {},
            honeytoken=honeytoken,
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


@bp.get("/keys/<key_id>/report")
@require_role(*READERS)
def key_report(key_id: str) -> Response:
    """Blast radius: everything the key did ``?since=`` (default: its creation) ``&until=``."""
    store = current_state().store
    since, until = time_window(query_params(("since", "until")), store.clock())
    with store.read() as tx:
        report = tx.usage_reports.key_report(key_id, since, until)
    return jsonify(key_report_view(report))


@bp.post("/keys/<key_id>/rotate")
@require_role(*ADMIN)
def rotate_key(key_id: str) -> tuple[Response, int]:
    payload = json_body()
    state = current_state()
    grace_value = payload.get("grace_seconds", state.settings.rotation_grace_seconds)
    if not isinstance(grace_value, int) or isinstance(grace_value, bool):
        raise InvalidInput("grace_seconds must be an integer", param="grace_seconds")
    grace = parse_duration(grace_value, "grace_seconds", maximum=MAX_ROTATION_GRACE)
    with state.store.transaction() as tx:
        issued = tx.keys.rotate(key_id, current_operator().actor, grace)
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


def _audit_page() -> tuple[int, int]:
    """``after_seq`` and ``limit`` of a page of the audit trail. Raises ApiError (400)."""
    after = query_int("after_seq") or 0
    limit = query_int("limit", 100, maximum=MAX_AUDIT_PAGE)
    if limit is None or limit < 1:
        raise ApiError(
            400, f"limit must be between 1 and {MAX_AUDIT_PAGE}", "invalid_value", param="limit"
        )
    return after, limit


@bp.get("/audit")
@require_role(*READERS)
def audit_entries() -> Response:
    after, limit = _audit_page()
    with current_state().store.read() as tx:
        entries = tx.audit.entries(after_seq=after, limit=limit + 1)
    page = entries[:limit]
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


@bp.get("/audit/checkpoints")
@require_role(*READERS)
def audit_checkpoints() -> Response:
    """Signed checkpoints, each the same object as a line of an export's checkpoints.jsonl."""
    after, limit = _audit_page()
    with current_state().store.read() as tx:
        checkpoints = tx.audit.checkpoints(after_seq=after, limit=limit + 1)
    page = checkpoints[:limit]
    return jsonify(
        {
            "object": "list",
            "data": [checkpoint.as_record() for checkpoint in page],
            "has_more": len(checkpoints) > len(page),
        }
    )


@bp.get("/audit/public-key")
@require_role(*READERS)
def audit_public_key() -> Response:
    signer = current_state().store.audit_signer
    if signer is None:
        raise ApiError(404, "audit checkpoints are not signed here", "not_found")
    return jsonify(
        {
            "object": "audit.public_key",
            "algorithm": "Ed25519",
            "key_id": signer.key_id,
            "public_key_pem": signer.public_key_pem(),
        }
    )


# -- bulk revocation and the kill switch -----------------------------------------------


@bp.post("/keys/revoke")
@require_role(*ADMIN)
def revoke_keys_in_bulk() -> Response:
    """Revoke every live key of a cohort and/or issued before a time."""
    payload = json_body()
    issued_before = payload.get("issued_before")
    with current_state().store.transaction() as tx:
        revoked = tx.keys.revoke_matching(
            current_operator().actor,
            required_string(payload, "reason"),
            cohort=optional_string(payload, "cohort"),
            issued_before=(
                parse_timestamp(issued_before, "issued_before") if issued_before else None
            ),
        )
    return jsonify({"revoked": revoked})


def _lockdown_view(state: Any) -> dict[str, Any]:
    return {
        "object": "lockdown",
        "lockdown": bool(state.lockdown),
        "reason": state.lockdown_reason,
        "changed_by": state.lockdown_by,
        "changed_at": iso(state.lockdown_at),
    }


@bp.get("/lockdown")
@require_role(*ANY_ROLE)
def lockdown_state() -> Response:
    with current_state().store.read() as tx:
        return jsonify(_lockdown_view(tx.program.state()))


@bp.post("/lockdown")
@require_role(*ADMIN)
def set_lockdown() -> Response:
    """``{"lockdown": true, "reason": "..."}`` refuses all tester traffic at once."""
    payload = json_body()
    on = payload.get("lockdown")
    if not isinstance(on, bool):
        raise InvalidInput("lockdown must be true or false", param="lockdown")
    with current_state().store.transaction() as tx:
        state = tx.program.set_lockdown(
            on, current_operator().actor, optional_string(payload, "reason")
        )
        return jsonify(_lockdown_view(state))


# -- policies --------------------------------------------------------------------------


@bp.get("/cohorts")
@require_role(*ANY_ROLE)
def list_cohort_policies() -> Response:
    with current_state().store.read() as tx:
        cohorts = tx.policies.cohorts()
    return _listing(
        [{"cohort": name, "policy": policy.to_json()} for name, policy in cohorts.items()]
    )


@bp.put("/cohorts/<cohort>/policy")
@require_role(*ADMIN)
def set_cohort_policy(cohort: str) -> Response:
    """Replace a cohort's policy; in force on every worker with the next request."""
    if not COHORT_NAME.fullmatch(cohort):
        raise InvalidInput("cohort must be lowercase letters, digits, - or _", param="cohort")
    try:
        policy = policy_from_mapping(json_body())
    except PolicyError as exc:
        raise InvalidInput(str(exc), param=exc.field) from None
    with current_state().store.transaction() as tx:
        changed = tx.policies.set_policy(cohort, policy, current_operator().actor)
    return jsonify({"cohort": cohort, "policy": policy.to_json(), "changed": changed})


@bp.get("/testers/<tester_id>/policy")
@require_role(*READERS)
def tester_policy(tester_id: str) -> Response:
    with current_state().store.read() as tx:
        policy, overrides = tx.policies.for_tester(tester_id)
    return jsonify({"tester_id": tester_id, "overrides": overrides, "policy": policy.to_json()})


@bp.put("/testers/<tester_id>/policy")
@require_role(*ADMIN)
def set_tester_policy(tester_id: str) -> Response:
    """Replace a tester's overrides on top of their cohort's policy."""
    overrides = json_body()
    with current_state().store.transaction() as tx:
        policy = tx.policies.set_overrides(tester_id, overrides, current_operator().actor)
    return jsonify({"tester_id": tester_id, "overrides": overrides, "policy": policy.to_json()})


@bp.delete("/testers/<tester_id>/policy")
@require_role(*ADMIN)
def clear_tester_policy(tester_id: str) -> Response:
    with current_state().store.transaction() as tx:
        tx.testers.get(tester_id)
        tx.policies.clear_overrides(tester_id, current_operator().actor)
    return jsonify({"tester_id": tester_id, "overrides": {}})
