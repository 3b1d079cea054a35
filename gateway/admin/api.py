"""The admin API (``/admin/v1``): keys, testers and tokens for admins; reads for auditors.

Each handler parses input, calls one domain service method, and renders the result; the same
methods back the CLI.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Response, jsonify, request

from gateway.admin.openapi import (
    COHORT_PATTERN,
    DURATION_PATTERN,
    EMAIL_PATTERN,
    MAX_EMAIL,
    MAX_EXPIRES_IN,
    MAX_NAME,
    MAX_REASON,
    REVOCATION_REASON_BYTES,
    openapi_document,
)
from gateway.admin.plane import (
    admin_blueprint,
    body,
    flag,
    page_size,
    query_value,
    query_values,
    text,
)
from gateway.admin.usage import time_window
from gateway.http.auth import current_operator, require_role
from gateway.http.current import current_state
from gateway.http.errors import ApiError
from gateway.presenters import (
    iso,
    key_report_view,
    key_view,
    lockdown_view,
    proof_key_view,
    rotation_view,
    tester_view,
    token_view,
)
from gateway.services.doctor import (
    Arrival,
    Deployment,
    examine,
    exit_status,
    workers_from_environment,
)
from keys.access.lifecycle import MAX_ROTATION_GRACE
from keys.access.roles import ADMIN, ANY_ROLE, RECORD_READERS
from keys.access.testers import COHORT_NAME
from keys.durations import parse_duration, parse_time, parse_timestamp
from keys.errors import InvalidInput
from keys.limits.policies import PolicyError, policy_from_mapping

bp = admin_blueprint("admin", __name__, "/admin/v1")


def _listing(items: list[dict[str, Any]]) -> Response:
    return jsonify({"object": "list", "data": items})


def _page(items: list[dict[str, Any]], has_more: bool) -> Response:
    """A keyset page: pass the last item's id as ``?after=`` for the next one."""
    return jsonify(
        {
            "object": "list",
            "data": items,
            "has_more": has_more,
            "next_after": items[-1]["id"] if has_more else None,
        }
    )


def reason(payload: dict[str, Any], *, required: bool = True) -> str | None:
    """The ``reason`` of a decision: text of at most MAX_REASON characters. Raises
    InvalidInput."""
    return text(payload, "reason", required=required, max_length=MAX_REASON)


def revocation_reason(payload: dict[str, Any]) -> str:
    """The ``reason`` of a revocation: required, but never refused for its length or what it
    holds. A revocation is carried out whatever its free text says; the domain clips the text
    to MAX_REASON characters and cleans it before it is stored. Raises InvalidInput (missing,
    blank or not a string)."""
    return str(text(payload, "reason", required=True, max_length=REVOCATION_REASON_BYTES))


def _expiry(payload: dict[str, Any], now: datetime) -> datetime | None:
    if "expires_at" in payload and "expires_in" in payload:
        raise InvalidInput("give expires_at or expires_in, not both", param="expires_at")
    if "expires_at" in payload:
        value = payload["expires_at"]
        if not isinstance(value, str):
            raise InvalidInput("expires_at must be an ISO 8601 time", param="expires_at")
        return parse_timestamp(value, "expires_at")
    if "expires_in" in payload:
        value = payload["expires_in"]
        in_range = (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_EXPIRES_IN
        )
        if not in_range and not (isinstance(value, str) and re.match(DURATION_PATTERN, value)):
            raise InvalidInput(
                "expires_in must be seconds or a duration such as 12h or 30d", param="expires_in"
            )
        return now + parse_duration(value, "expires_in")
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
@require_role(*RECORD_READERS)
def list_testers() -> Response:
    """``?cohort&limit&after``, oldest first."""
    with current_state().store.read() as tx:
        testers, has_more = tx.testers.page(
            query_value("cohort"), query_value("after"), page_size()
        )
        return _page([tester_view(tester) for tester in testers], has_more)


@bp.post("/testers")
@require_role(ADMIN)
def add_tester() -> tuple[Response, int]:
    """An unknown cohort is refused unless ``"create_cohort": true`` (then it gets the
    default policy)."""
    payload = body()
    create_cohort = payload.get("create_cohort", False)
    if not isinstance(create_cohort, bool):
        raise InvalidInput("create_cohort must be true or false", param="create_cohort")
    with current_state().store.transaction() as tx:
        tester = tx.testers.add(
            str(text(payload, "name", required=True, max_length=MAX_NAME)),
            str(text(payload, "email", required=True, max_length=MAX_EMAIL, pattern=EMAIL_PATTERN)),
            actor=current_operator().actor,
            cohort=text(payload, "cohort", max_length=64, pattern=COHORT_PATTERN) or "default",
            create_cohort=create_cohort,
        )
        return jsonify(tester_view(tester)), 201


@bp.get('/testers/<id("tst"):tester_id>')
@require_role(*RECORD_READERS)
def show_tester(tester_id: str) -> Response:
    store = current_state().store
    with store.read() as tx:
        view = tester_view(tx.testers.get(tester_id))
        view["keys"] = [key_view(key, store.clock()) for key in tx.keys.list(tester_id)]
        return jsonify(view)


@bp.post('/testers/<id("tst"):tester_id>/keys')
@require_role(ADMIN)
def issue_key(tester_id: str) -> tuple[Response, int]:
    payload = body()
    store = current_state().store
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object of strings", param="metadata")
    honeytoken = bool(flag(payload, "honeytoken"))
    with store.transaction() as tx:
        issued = tx.keys.issue(
            tester_id,
            actor=current_operator().actor,
            expires_at=_expiry(payload, store.clock()),
            metadata=metadata,
            honeytoken=honeytoken,
        )
        view = key_view(issued.key, store.clock())
    view["secret"] = issued.secret
    return jsonify(view), 201


@bp.post('/testers/<id("tst"):tester_id>/revoke-keys')
@require_role(ADMIN)
def revoke_tester_keys(tester_id: str) -> Response:
    payload = body()
    with current_state().store.transaction() as tx:
        revoked = tx.keys.revoke_all_for_tester(
            tester_id, current_operator().actor, revocation_reason(payload)
        )
    return jsonify({"tester_id": tester_id, "revoked": revoked})


# -- keys ------------------------------------------------------------------------------


@bp.get("/keys")
@require_role(*RECORD_READERS)
def list_keys() -> Response:
    """``?tester_id&limit&after``, oldest first."""
    store = current_state().store
    with store.read() as tx:
        keys, has_more = tx.keys.page(query_value("tester_id"), query_value("after"), page_size())
        return _page([key_view(key, store.clock()) for key in keys], has_more)


@bp.get('/keys/<id("key"):key_id>')
@require_role(*RECORD_READERS)
def show_key(key_id: str) -> Response:
    store = current_state().store
    with store.read() as tx:
        return jsonify(key_view(tx.keys.get(key_id), store.clock()))


@bp.get('/keys/<id("key"):key_id>/report')
@require_role(*RECORD_READERS)
def key_report(key_id: str) -> Response:
    """Blast radius: everything the key did ``?since=`` (default: its creation) ``&until=``."""
    store = current_state().store
    since, until = time_window(query_values(), store.clock())
    with store.read() as tx:
        report = tx.usage_reports.key_report(key_id, since, until)
    return jsonify(key_report_view(report))


@bp.post('/keys/<id("key"):key_id>/rotate')
@require_role(ADMIN)
def rotate_key(key_id: str) -> tuple[Response, int]:
    payload = body()
    state = current_state()
    grace_value = payload.get("grace_seconds", state.settings.rotation_grace_seconds)
    if not isinstance(grace_value, int) or isinstance(grace_value, bool):
        raise InvalidInput("grace_seconds must be an integer", param="grace_seconds")
    grace = parse_duration(grace_value, "grace_seconds", maximum=MAX_ROTATION_GRACE)
    with state.store.transaction() as tx:
        issued = tx.keys.rotate(key_id, current_operator().actor, grace)
        old = tx.keys.get(key_id)
        view = rotation_view(old, issued.key, issued.secret, state.store.clock())
    return jsonify(view), 201


def _key_action(key_id: str, action: str) -> Response:
    payload = body()
    store = current_state().store
    actor = current_operator().actor
    with store.transaction() as tx:
        if action == "revoke":
            key = tx.keys.revoke(key_id, actor, revocation_reason(payload))
        elif action == "suspend":
            key = tx.keys.suspend(key_id, actor, str(reason(payload)))
        else:
            key = tx.keys.resume(key_id, actor, reason(payload, required=False))
        return jsonify(key_view(key, store.clock()))


@bp.post('/keys/<id("key"):key_id>/revoke')
@require_role(ADMIN)
def revoke_key(key_id: str) -> Response:
    return _key_action(key_id, "revoke")


@bp.post('/keys/<id("key"):key_id>/suspend')
@require_role(ADMIN)
def suspend_key(key_id: str) -> Response:
    return _key_action(key_id, "suspend")


@bp.post('/keys/<id("key"):key_id>/resume')
@require_role(ADMIN)
def resume_key(key_id: str) -> Response:
    return _key_action(key_id, "resume")


@bp.post('/keys/<id("key"):key_id>/proof-key')
@require_role(ADMIN)
def bind_proof_key(key_id: str) -> tuple[Response, int]:
    """Bind a tester's public key (PEM) to their API key; ``replace`` swaps one in force."""
    payload = body()
    replace = payload.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidInput("replace must be true or false", param="replace")
    with current_state().store.transaction() as tx:
        row = tx.proof_keys.bind(
            key_id, payload.get("public_key"), current_operator().actor, replace=replace
        )
        return jsonify(proof_key_view(row)), 201


@bp.delete('/keys/<id("key"):key_id>/proof-key')
@require_role(ADMIN)
def unbind_proof_key(key_id: str) -> Response:
    """Remove the proof key in force on an API key (it works with the string alone again,
    unless its policy requires a proof)."""
    with current_state().store.transaction() as tx:
        return jsonify(proof_key_view(tx.proof_keys.unbind_key(key_id, current_operator().actor)))


# -- admin tokens ----------------------------------------------------------------------


@bp.get("/tokens")
@require_role(ADMIN)
def list_tokens() -> Response:
    """``?limit&after``, oldest first."""
    with current_state().store.read() as tx:
        tokens, has_more = tx.tokens.page(query_value("after"), page_size())
        return _page([token_view(token) for token in tokens], has_more)


@bp.post("/tokens")
@require_role(ADMIN)
def create_token() -> tuple[Response, int]:
    payload = body()
    store = current_state().store
    with store.transaction() as tx:
        issued = tx.tokens.create(
            str(text(payload, "name", required=True, max_length=MAX_NAME)),
            str(text(payload, "role", required=True, max_length=20)),
            current_operator().actor,
            expires_at=_expiry(payload, store.clock()),
        )
        view = token_view(issued.token)
    view["secret"] = issued.secret
    return jsonify(view), 201


@bp.post('/tokens/<id("adm"):token_id>/revoke')
@require_role(ADMIN)
def revoke_token(token_id: str) -> Response:
    payload = body()
    with current_state().store.transaction() as tx:
        token = tx.tokens.revoke(token_id, current_operator().actor, str(reason(payload)))
        return jsonify(token_view(token))


# -- audit trail -----------------------------------------------------------------------


def _audit_page() -> tuple[int, int]:
    """``after_seq`` and ``limit`` of a page of the audit trail (checked by the plane)."""
    return int(query_value("after_seq") or 0), page_size()


@bp.get("/audit")
@require_role(*RECORD_READERS)
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
@require_role(*RECORD_READERS)
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
@require_role(*RECORD_READERS)
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
@require_role(ADMIN)
def revoke_keys_in_bulk() -> Response:
    """Revoke every live key of a cohort and/or issued before a time."""
    payload = body()
    issued_before = text(payload, "issued_before", max_length=40)
    with current_state().store.transaction() as tx:
        revoked = tx.keys.revoke_matching(
            current_operator().actor,
            revocation_reason(payload),
            cohort=text(payload, "cohort", max_length=64, pattern=COHORT_PATTERN),
            issued_before=(
                parse_time(issued_before, "issued_before", tx.clock()) if issued_before else None
            ),
        )
    return jsonify({"revoked": revoked})


@bp.get("/lockdown")
@require_role(*ANY_ROLE)
def lockdown_state() -> Response:
    with current_state().store.read() as tx:
        return jsonify(lockdown_view(tx.lockdown.state()))


@bp.post("/lockdown")
@require_role(ADMIN)
def set_lockdown() -> Response:
    """``{"lockdown": true, "reason": "..."}`` refuses all tester traffic at once."""
    payload = body()
    on = bool(flag(payload, "lockdown", required=True))
    with current_state().store.transaction() as tx:
        state = tx.lockdown.set_lockdown(on, current_operator().actor, reason(payload, required=on))
        return jsonify(lockdown_view(state))


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
@require_role(ADMIN)
def set_cohort_policy(cohort: str) -> Response:
    """Replace a cohort's policy; in force on every worker with the next request."""
    if not COHORT_NAME.fullmatch(cohort):
        raise InvalidInput("cohort must be lowercase letters, digits, - or _", param="cohort")
    try:
        policy = policy_from_mapping(body())
    except PolicyError as exc:
        raise InvalidInput(str(exc), param=exc.field) from None
    with current_state().store.transaction() as tx:
        changed = tx.policies.set_policy(cohort, policy, current_operator().actor)
    return jsonify({"cohort": cohort, "policy": policy.to_json(), "changed": changed})


@bp.get('/testers/<id("tst"):tester_id>/policy')
@require_role(*RECORD_READERS)
def tester_policy(tester_id: str) -> Response:
    with current_state().store.read() as tx:
        policy, overrides = tx.policies.for_tester(tester_id)
    return jsonify({"tester_id": tester_id, "overrides": overrides, "policy": policy.to_json()})


@bp.put('/testers/<id("tst"):tester_id>/policy')
@require_role(ADMIN)
def set_tester_policy(tester_id: str) -> Response:
    """Replace a tester's overrides on top of their cohort's policy."""
    overrides = body()
    with current_state().store.transaction() as tx:
        policy = tx.policies.set_overrides(tester_id, overrides, current_operator().actor)
    return jsonify({"tester_id": tester_id, "overrides": overrides, "policy": policy.to_json()})


@bp.delete('/testers/<id("tst"):tester_id>/policy')
@require_role(ADMIN)
def clear_tester_policy(tester_id: str) -> Response:
    with current_state().store.transaction() as tx:
        tx.testers.get(tester_id)
        tx.policies.clear_overrides(tester_id, current_operator().actor)
    return jsonify({"tester_id": tester_id, "overrides": {}})


# -- the deployment's own check ---------------------------------------------------------


@bp.get("/doctor")
@require_role(ADMIN)
def doctor() -> Response:
    """``drawbridge doctor`` run by the gateway, with this request as a sample of how
    requests arrive (through the proxy, or not)."""
    state = current_state()
    environ = request.environ
    original = environ.get("werkzeug.proxy_fix.orig") or {}
    arrival = Arrival(
        peer=str(original.get("REMOTE_ADDR") or environ.get("REMOTE_ADDR") or "unknown"),
        forwarded_for=request.headers.get("X-Forwarded-For"),
    )
    # The address this connection came in on (under gunicorn, its listening socket's).
    connection = environ.get("gunicorn.socket")
    try:
        host, port = connection.getsockname()[:2]  # type: ignore[union-attr]
        bind = f"{host}:{port}"
    except (AttributeError, OSError, TypeError, ValueError):
        bind = f"{environ.get('SERVER_NAME', 'unknown')}:{environ.get('SERVER_PORT', '')}"
    findings = examine(
        Deployment(
            state.settings,
            bind,
            workers_from_environment(),
            store=state.store,
            upstream=state.upstream,
            arrival=arrival,
        )
    )
    return jsonify(
        {
            "object": "doctor",
            "ok": exit_status(findings) == 0,
            "findings": [finding.as_dict() for finding in findings],
        }
    )
