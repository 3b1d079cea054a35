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
]


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, roles, body, status in _OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "description": f"Roles: {roles}.",
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in ("tester_id", "key_id", "token_id")
                if f"{{{name}}}" in path
            ],
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
