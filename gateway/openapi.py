"""The admin API's OpenAPI 3.1 description, served at ``/admin/v1/openapi.json``."""

from __future__ import annotations

from functools import cache
from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_REASON = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
}
_EXPIRY = {
    "expires_at": {"type": "string", "format": "date-time"},
    "expires_in": {"type": ["integer", "string"], "description": "seconds, or 12h, 30d, ..."},
}

# path, method, summary, roles, request body schema (None: no body), success status
_OPERATIONS: list[tuple[str, str, str, str, dict[str, Any] | None, int]] = [
    ("/whoami", "get", "The calling token", "any", None, 200),
    ("/testers", "get", "List testers", "admin, auditor", None, 200),
    (
        "/testers",
        "post",
        "Add a tester",
        "admin",
        {
            "type": "object",
            "required": ["name", "email"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "email": {"type": "string", "format": "email"},
                "cohort": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                "create_cohort": {
                    "type": "boolean",
                    "description": "Accept a cohort that does not exist yet (else 400 "
                    "unknown_cohort).",
                },
            },
        },
        201,
    ),
    ("/testers/{tester_id}", "get", "Show a tester and their keys", "admin, auditor", None, 200),
    (
        "/testers/{tester_id}/keys",
        "post",
        "Issue a key (the secret is in this response only)",
        "admin",
        {
            "type": "object",
            "properties": {
                **_EXPIRY,
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "honeytoken": {
                    "type": "boolean",
                    "description": "A key only to be watched: any use is refused as an "
                    "unknown key, suspends it and alerts",
                },
            },
        },
        201,
    ),
    (
        "/testers/{tester_id}/revoke-keys",
        "post",
        "Revoke every key of a tester",
        "admin",
        _REASON,
        200,
    ),
    ("/keys", "get", "List keys (never their secrets)", "admin, auditor", None, 200),
    ("/keys/{key_id}", "get", "Show a key", "admin, auditor", None, 200),
    (
        "/keys/{key_id}/rotate",
        "post",
        "Rotate a key; the old secret works until the grace period ends",
        "admin",
        {
            "type": "object",
            "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": 2592000}},
        },
        201,
    ),
    ("/keys/{key_id}/revoke", "post", "Revoke a key", "admin", _REASON, 200),
    ("/keys/{key_id}/suspend", "post", "Suspend a key", "admin", _REASON, 200),
    (
        "/keys/{key_id}/resume",
        "post",
        "Resume a suspended key",
        "admin",
        {"type": "object", "properties": {"reason": {"type": "string"}}},
        200,
    ),
    ("/tokens", "get", "List admin tokens", "admin", None, 200),
    (
        "/tokens",
        "post",
        "Create an admin token (the secret is in this response only)",
        "admin",
        {
            "type": "object",
            "required": ["name", "role"],
            "properties": {
                "name": {"type": "string"},
                "role": {"enum": ["admin", "approver", "auditor"]},
                **_EXPIRY,
            },
        },
        201,
    ),
    ("/tokens/{token_id}/revoke", "post", "Revoke an admin token", "admin", _REASON, 200),
    ("/audit", "get", "Audit trail entries in chain order", "admin, auditor", None, 200),
    (
        "/keys/revoke",
        "post",
        "Revoke every live key of a cohort and/or issued before a time",
        "admin",
        {
            "type": "object",
            "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "minLength": 1},
                "cohort": {"type": "string"},
                "issued_before": {"type": "string", "format": "date-time"},
            },
        },
        200,
    ),
    ("/lockdown", "get", "The kill switch's state", "any", None, 200),
    (
        "/lockdown",
        "post",
        "Raise or lower the kill switch (all tester traffic refused with 503 lockdown)",
        "admin",
        {
            "type": "object",
            "required": ["lockdown"],
            "properties": {"lockdown": {"type": "boolean"}, "reason": {"type": "string"}},
        },
        200,
    ),
    ("/cohorts", "get", "Every cohort's policy", "any", None, 200),
    (
        "/cohorts/{cohort}/policy",
        "put",
        "Replace a cohort's policy (see config/policies.toml for the fields)",
        "admin",
        {"type": "object"},
        200,
    ),
    (
        "/testers/{tester_id}/policy",
        "get",
        "A tester's effective policy and overrides",
        "admin, auditor",
        None,
        200,
    ),
    (
        "/testers/{tester_id}/policy",
        "put",
        "Replace a tester's policy overrides",
        "admin",
        {"type": "object"},
        200,
    ),
    (
        "/testers/{tester_id}/policy",
        "delete",
        "Remove a tester's policy overrides",
        "admin",
        None,
        200,
    ),
    (
        "/approvals",
        "get",
        "Held requests (?status=pending&kind=generation|share|download)",
        "admin, approver, auditor",
        None,
        200,
    ),
    ("/approvals/{approval_id}", "get", "One held request", "admin, approver, auditor", None, 200),
    (
        "/approvals/{approval_id}/approve",
        "post",
        "Approve; a held generation is then submitted on the tester's behalf",
        "admin, approver",
        {"type": "object", "properties": {"reason": {"type": "string"}}},
        200,
    ),
    (
        "/approvals/{approval_id}/reject",
        "post",
        "Reject with a reason the tester sees",
        "admin, approver",
        _REASON,
        200,
    ),
    (
        "/audit/checkpoints",
        "get",
        "Signed audit checkpoints in seq order (docs/audit.md)",
        "admin, auditor",
        None,
        200,
    ),
    (
        "/audit/public-key",
        "get",
        "The Ed25519 public key that signs audit checkpoints, and its key id",
        "admin, auditor",
        None,
        200,
    ),
    (
        "/usage",
        "get",
        "Usage events in time order, filtered; keyset pages (after = the last event's id)",
        "admin, auditor",
        None,
        200,
    ),
    (
        "/usage/daily",
        "get",
        "Per-tester totals per UTC day: requests, generations, video-seconds, rejections, "
        "failures, approvers' decisions",
        "admin, auditor",
        None,
        200,
    ),
    (
        "/usage/export",
        "get",
        "Stream the filtered usage events as CSV or JSON Lines",
        "admin, auditor",
        None,
        200,
    ),
    (
        "/keys/{key_id}/report",
        "get",
        "Blast radius: everything a key did in a window (requests, client IPs, user agents, "
        "generations, videos, refused attempts after revocation)",
        "admin, auditor",
        None,
        200,
    ),
]


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_TIME = "ISO 8601 time with a zone, a UTC date (2026-11-27) or a span ago (24h, 7d)"
_USAGE_FILTERS = [
    _query("tester_id", "Only this tester's events"),
    _query("key_id", "Only this key's events (refused attempts included)"),
    _query("cohort", "Only events of testers in this cohort at the time"),
    _query("route", "Route template, e.g. /v1/videos/<video_id>"),
    _query("status", "An HTTP status (429) or a class (4xx)", pattern="^[1-5]([0-9][0-9]|xx)$"),
    _query(
        "outcome",
        "How the request ended",
        enum=["ok", "refused", "failed", "admitted", "created", "refunded", "held"],
    ),
    _query("since", f"From this time (inclusive): {_TIME}"),
    _query("until", f"Up to this time (exclusive): {_TIME}"),
    _query("after", "The id of the last event of the previous page", type="integer", minimum=0),
]
# Query parameters of the operations that take them (unknown ones are refused with 400).
_QUERY_PARAMETERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/usage", "get"): [
        *_USAGE_FILTERS,
        _query("limit", "Page size", type="integer", minimum=1, maximum=1000, default=100),
    ],
    ("/usage/export", "get"): [
        *_USAGE_FILTERS,
        _query("format", "Export format", enum=["csv", "jsonl"], default="csv"),
    ],
    ("/usage/daily", "get"): [
        _query("since", "First UTC day (default: 29 days before until)", format="date"),
        _query("until", "Last UTC day, inclusive (default: today); at most 366 days"),
        _query("tester_id", "Only this tester"),
        _query("cohort", "Only this cohort"),
    ],
    ("/keys/{key_id}/report", "get"): [
        _query("since", f"From this time (default: the key's creation): {_TIME}"),
        _query("until", f"Up to this time (default: now): {_TIME}"),
    ],
}


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, roles, body, status in _OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "description": f"Roles: {roles}.",
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in ("tester_id", "key_id", "token_id", "cohort", "approval_id")
                if f"{{{name}}}" in path
            ]
            + _QUERY_PARAMETERS.get((path, method), []),
            "responses": {
                str(status): {"description": "OK", "content": {"application/json": {}}},
                **{
                    str(code): {
                        "description": text,
                        "content": {"application/json": {"schema": _ERROR}},
                    }
                    for code, text in (
                        (400, "Invalid input"),
                        (401, "Missing or invalid admin token"),
                        (403, "Role not allowed"),
                        (404, "Not found"),
                        (409, "Conflict with the object's state"),
                    )
                },
            },
        }
        if body is not None:
            operation["requestBody"] = {
                "required": "required" in body,
                "content": {"application/json": {"schema": body}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Drawbridge admin API", "version": "1"},
        "servers": [{"url": "/admin/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "param", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    }
