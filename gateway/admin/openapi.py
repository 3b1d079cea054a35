"""The admin API's OpenAPI 3.1 description, served at ``/admin/v1/openapi.json``.

The document is the contract: ``tests/integration/test_openapi_conformance.py`` runs
schemathesis against a live gateway with it, and the admin plane refuses every query
parameter an operation does not declare here (``gateway/admin/plane.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from keys.access.roles import ADMIN, ANY_ROLE, APPROVAL_DECIDERS, RECORD_READERS, ROLES
from keys.limits.policies import (
    ANOMALY_FIELDS,
    KNOWN_MODELS,
    KNOWN_SECONDS,
    KNOWN_SIZES,
    LIMIT_FIELDS,
    MAX_LIMIT,
    RULE_ACTIONS,
    SHARING_MODES,
)
from keys.records.usage import OUTCOMES

# Limits on text the admin plane accepts; gateway/admin/plane.py enforces the same values.
MAX_REASON = 2000
# A revocation's reason is clipped to MAX_REASON, never refused for its length (only the
# request size limit bounds it): a revocation is carried out whatever its free text holds.
REVOCATION_REASON_BYTES = 1_000_000
MAX_NAME = 200
MAX_EMAIL = 320
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_CURSOR = 10**18 - 1
COHORT_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
# White space as Python's str.strip() sees it, spelled out: ``\s`` differs between Python's
# regular expressions and the ECMA ones that OpenAPI tools use (U+001C-U+001F).
_SPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# White space around the address is dropped (" Ada@Example.com " is ada@example.com).
# What the domain refuses in text it stores as given (keys/text.py: names, emails, policy
# strings, metadata): control characters and non-characters. (Unpaired surrogates too, which
# no JSON Schema pattern can name portably: a JSON string with one is refused all the same.)
_UNSAFE = r"\x00-\x1f\x7f-\x9f\ufffe\uffff"
# White space that is not a control character (stripped around names and addresses).
_SAFE_SPACE = r" \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL_PATTERN = (
    f"^[{_SAFE_SPACE}]*[^@{_SPACE}{_UNSAFE}]+@[^@{_SPACE}{_UNSAFE}]+"
    f"\\.[^@{_SPACE}{_UNSAFE}]+[{_SAFE_SPACE}]*$"
)
# Stored text: no unsafe character; and not blank.
SAFE_TEXT = f"^[^{_UNSAFE}]*$"
SAFE_NOT_BLANK = f"^[^{_UNSAFE}]*[^{_UNSAFE}{_SPACE}][^{_UNSAFE}]*$"
# Not blank: at least one character that is not white space.
NOT_BLANK = f"[^{_SPACE}]"
ID_PATTERNS = {
    "tester_id": "^tst_[0-9A-Za-z_-]{1,64}$",
    "key_id": "^key_[0-9A-Za-z_-]{1,64}$",
    "token_id": "^adm_[0-9A-Za-z_-]{1,64}$",
    "approval_id": "^apr_[0-9A-Za-z_-]{1,64}$",
    "cohort": COHORT_PATTERN,
}
# The kind prefix of each id, as the routes' converters match it (gateway/admin/plane.py).
ID_KINDS = {"tester_id": "tst", "key_id": "key", "token_id": "adm", "approval_id": "apr"}
AFTER_PATTERN = "^[a-z]{3}_[0-9A-Za-z_-]{1,64}$"
# Up to ~270 years: an expiry far beyond any program, still a valid timestamp.
DURATION_PATTERN = r"^([1-9][0-9]{0,4}[smhd]?|[1-9][0-9]{0,3}w)$"
MAX_EXPIRES_IN = 999_999_999
SPAN_OR_TIME = (
    "ISO 8601 time with a zone (2026-11-27T09:00:00Z), a UTC date (2026-11-27) or a span ago "
    "(90m, 24h, 7d, 2w)"
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TIME = {"type": "string", "format": "date-time"}


def _text(max_length: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": NOT_BLANK,
        **extra,
    }


_REASON_TEXT = _text(MAX_REASON, description="Why; recorded in the audit trail")
_REASON = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": _REASON_TEXT},
}
_OPTIONAL_REASON = {"type": "object", "properties": {"reason": _REASON_TEXT}}
_REVOCATION_REASON_TEXT = _text(
    REVOCATION_REASON_BYTES,
    description=f"Why; recorded in the audit trail, clipped to {MAX_REASON} characters "
    "(a revocation is never refused for its reason's length)",
)
_REVOCATION_REASON = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": _REVOCATION_REASON_TEXT},
}
_EXPIRY = {
    "expires_at": {**_TIME, "description": "When it stops working"},
    "expires_in": {
        "type": ["integer", "string"],
        "minimum": 1,
        "maximum": MAX_EXPIRES_IN,
        "pattern": DURATION_PATTERN,
        "description": "Seconds from now, or 90s, 15m, 12h, 30d, 2w",
    },
}
_ONE_EXPIRY = {"not": {"required": ["expires_at", "expires_in"]}}

_POLICY_PROPERTIES: dict[str, Any] = {
    **{name: {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT} for name in LIMIT_FIELDS},
    **{
        name: {"type": "integer", "minimum": low, "maximum": high}
        for name, (low, high) in ANOMALY_FIELDS.items()
    },
    "models": {"type": "array", "minItems": 1, "items": {"enum": list(KNOWN_MODELS)}},
    "sizes": {"type": "array", "minItems": 1, "items": {"enum": list(KNOWN_SIZES)}},
    "seconds": {"type": "array", "minItems": 1, "items": {"enum": list(KNOWN_SECONDS)}},
    "prompt_rules": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["pattern", "action", "reason"],
            "additionalProperties": False,
            "properties": {
                # A plain word or phrase here; any Python regular expression is accepted.
                "pattern": {"type": "string", "pattern": "^[a-z ]{1,40}$"},
                "action": {"enum": list(RULE_ACTIONS)},
                "reason": {"type": "string", "maxLength": 500, "pattern": SAFE_NOT_BLANK},
            },
        },
    },
    "hold_generations": {"type": "boolean"},
    "content_requires_approval": {"type": "boolean"},
    "sharing": {"enum": list(SHARING_MODES)},
}
_POLICY_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": _POLICY_PROPERTIES,
}


@dataclass(frozen=True)
class Operation:
    """One admin API operation: what the document says about it."""

    path: str
    method: str
    operation_id: str
    tag: str
    summary: str
    roles: tuple[str, ...]
    response: dict[str, Any]
    body: dict[str, Any] | None = None
    status: int = 200
    query: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = ()
    content: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A file upload (the body is the file, or a multipart form with a ``file`` part).
    upload: bool = False


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema} if "enum" not in schema else schema,
    }


def _pages(after_what: str) -> tuple[dict[str, Any], ...]:
    return (
        _query(
            "limit", "Page size", type="integer", minimum=1, maximum=MAX_PAGE, default=DEFAULT_PAGE
        ),
        _query(
            "after", f"The id of the last {after_what} of the previous page", pattern=AFTER_PATTERN
        ),
    )


# A span ago, a date, or a time with a zone (the values are checked further by the server).
_WINDOW_TIME = {
    "type": "string",
    "pattern": r"^([0-9]{1,6}[mhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?)$",
}
# The same in a request body, where every value the schema allows must be accepted: real
# dates and times, and spans short enough to be in range (at most 3650 days).
_PAST_TIME = {
    "anyOf": [
        _TIME,
        {"type": "string", "format": "date"},
        {
            "type": "string",
            "pattern": r"^([0-9]{1,6}s|[0-9]{1,5}m|[0-9]{1,4}h|[0-9]{1,3}d|[0-9]{1,2}w)$",
        },
    ],
    "description": SPAN_OR_TIME,
}
_USAGE_FILTERS = (
    _query("tester_id", "Only this tester's events", pattern="^[A-Za-z0-9_-]{1,32}$"),
    _query(
        "key_id",
        "Only this key's events (refused attempts included)",
        pattern="^[A-Za-z0-9_-]{1,32}$",
    ),
    _query("cohort", "Only events of testers in this cohort at the time", pattern=COHORT_PATTERN),
    _query("route", "Route template, e.g. /v1/videos/<video_id>", pattern="^[ -~]{1,64}$"),
    _query("status", "An HTTP status (429) or a class (4xx)", pattern="^[1-5]([0-9][0-9]|xx)$"),
    _query("outcome", "How the request ended", enum=list(OUTCOMES)),
    _query("since", f"From this time (inclusive): {SPAN_OR_TIME}", **_WINDOW_TIME),
    _query("until", f"Up to this time (exclusive): {SPAN_OR_TIME}", **_WINDOW_TIME),
    _query(
        "after",
        "The id of the last event of the previous page",
        type="integer",
        minimum=0,
        maximum=MAX_CURSOR,
    ),
)
_AUDIT_PAGE = (
    _query(
        "after_seq",
        "The seq of the last item of the previous page",
        type="integer",
        minimum=0,
        maximum=MAX_CURSOR,
    ),
    _query("limit", "Page size", type="integer", minimum=1, maximum=MAX_PAGE, default=100),
)

_WRITE_ERRORS = (404, 409)
_OPERATIONS: tuple[Operation, ...] = (
    Operation("/whoami", "get", "whoami", "tokens", "The calling token", ANY_ROLE, _ref("Whoami")),
    Operation(
        "/testers",
        "get",
        "listTesters",
        "testers",
        "List testers, oldest first (keyset pages)",
        RECORD_READERS,
        _ref("TesterList"),
        query=(_query("cohort", "Only this cohort", pattern=COHORT_PATTERN), *_pages("tester")),
        errors=(404,),
    ),
    Operation(
        "/testers",
        "post",
        "addTester",
        "testers",
        "Add a tester",
        (ADMIN,),
        _ref("Tester"),
        body={
            "type": "object",
            "required": ["name", "email"],
            "properties": {
                "name": _text(MAX_NAME, pattern=SAFE_NOT_BLANK),
                "email": {"type": "string", "maxLength": MAX_EMAIL, "pattern": EMAIL_PATTERN},
                "cohort": {"type": "string", "pattern": COHORT_PATTERN},
                "create_cohort": {
                    "type": "boolean",
                    "description": "Accept a cohort that does not exist yet (else 400 "
                    "unknown_cohort).",
                },
            },
        },
        status=201,
        errors=(409,),
    ),
    Operation(
        "/testers/{tester_id}",
        "get",
        "getTester",
        "testers",
        "Show a tester and their keys",
        RECORD_READERS,
        _ref("TesterWithKeys"),
        errors=(404,),
    ),
    Operation(
        "/testers/{tester_id}/keys",
        "post",
        "issueKey",
        "keys",
        "Issue a key (the secret is in this response only)",
        (ADMIN,),
        _ref("IssuedKey"),
        body={
            "type": "object",
            "properties": {
                **_EXPIRY,
                "metadata": {
                    "type": "object",
                    "maxProperties": 20,
                    "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": SAFE_NOT_BLANK},
                    "additionalProperties": {
                        "type": "string",
                        "maxLength": 500,
                        "pattern": SAFE_TEXT,
                    },
                },
                "honeytoken": {
                    "type": "boolean",
                    "description": "A key only to be watched: any use is refused as an "
                    "unknown key, suspends it and alerts",
                },
            },
            **_ONE_EXPIRY,
        },
        status=201,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/testers/{tester_id}/revoke-keys",
        "post",
        "revokeTesterKeys",
        "keys",
        "Revoke every key of a tester",
        (ADMIN,),
        _ref("Revoked"),
        body=_REVOCATION_REASON,
        errors=(404,),
    ),
    Operation(
        "/keys",
        "get",
        "listKeys",
        "keys",
        "List keys, oldest first, never their secrets (keyset pages)",
        RECORD_READERS,
        _ref("KeyList"),
        query=(
            _query("tester_id", "Only this tester's keys", pattern=ID_PATTERNS["tester_id"]),
            *_pages("key"),
        ),
        errors=(404,),
    ),
    Operation(
        "/keys/{key_id}",
        "get",
        "getKey",
        "keys",
        "Show a key",
        RECORD_READERS,
        _ref("ApiKey"),
        errors=(404,),
    ),
    Operation(
        "/keys/{key_id}/rotate",
        "post",
        "rotateKey",
        "keys",
        "Rotate a key; the old secret works until the grace period ends (grace_until)",
        (ADMIN,),
        _ref("IssuedKey"),
        body={
            "type": "object",
            "properties": {
                "grace_seconds": {"type": "integer", "minimum": 0, "maximum": 2_592_000}
            },
        },
        status=201,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/keys/{key_id}/revoke",
        "post",
        "revokeKey",
        "keys",
        "Revoke a key",
        (ADMIN,),
        _ref("ApiKey"),
        body=_REVOCATION_REASON,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/keys/{key_id}/suspend",
        "post",
        "suspendKey",
        "keys",
        "Suspend a key",
        (ADMIN,),
        _ref("ApiKey"),
        body=_REASON,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/keys/{key_id}/resume",
        "post",
        "resumeKey",
        "keys",
        "Resume a suspended key",
        (ADMIN,),
        _ref("ApiKey"),
        body=_OPTIONAL_REASON,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/keys/{key_id}/proof-key",
        "post",
        "bindProofKey",
        "keys",
        "Bind a public key to a key: from then on every request must be signed with it",
        (ADMIN,),
        _ref("ProofKey"),
        status=201,
        body={
            "type": "object",
            "required": ["public_key"],
            "properties": {
                "public_key": {
                    "type": "string",
                    "maxLength": 1024,
                    "description": "Ed25519 or P-256 public key, PEM (SubjectPublicKeyInfo)",
                },
                "replace": {"type": "boolean", "description": "Swap the key bound now"},
            },
        },
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/keys/{key_id}/proof-key",
        "delete",
        "unbindProofKey",
        "keys",
        "Remove the proof key bound to a key",
        (ADMIN,),
        _ref("ProofKey"),
        errors=(404,),
    ),
    Operation(
        "/tokens",
        "get",
        "listTokens",
        "tokens",
        "List admin tokens, oldest first (keyset pages)",
        (ADMIN,),
        _ref("TokenList"),
        query=_pages("token"),
        errors=(404,),
    ),
    Operation(
        "/tokens",
        "post",
        "createToken",
        "tokens",
        "Create an admin token (the secret is in this response only)",
        (ADMIN,),
        _ref("IssuedToken"),
        body={
            "type": "object",
            "required": ["name", "role"],
            "properties": {
                "name": _text(MAX_NAME, pattern=SAFE_NOT_BLANK),
                "role": {"enum": list(ROLES)},
                **_EXPIRY,
            },
            **_ONE_EXPIRY,
        },
        status=201,
    ),
    Operation(
        "/tokens/{token_id}/revoke",
        "post",
        "revokeToken",
        "tokens",
        "Revoke an admin token",
        (ADMIN,),
        _ref("AdminToken"),
        body=_REASON,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/audit",
        "get",
        "listAuditEntries",
        "audit",
        "Audit trail entries in chain order",
        RECORD_READERS,
        _ref("AuditEntryList"),
        query=_AUDIT_PAGE,
    ),
    Operation(
        "/keys/revoke",
        "post",
        "revokeKeysInBulk",
        "keys",
        "Revoke every live key of a cohort and/or issued before a time",
        (ADMIN,),
        _ref("Revoked"),
        body={
            "type": "object",
            "required": ["reason"],
            "properties": {
                "reason": _REVOCATION_REASON_TEXT,
                "cohort": {"type": "string", "pattern": COHORT_PATTERN},
                "issued_before": _PAST_TIME,
            },
            "anyOf": [{"required": ["cohort"]}, {"required": ["issued_before"]}],
        },
    ),
    Operation(
        "/lockdown",
        "get",
        "getLockdown",
        "program",
        "The kill switch's state",
        ANY_ROLE,
        _ref("Lockdown"),
    ),
    Operation(
        "/lockdown",
        "post",
        "setLockdown",
        "program",
        "Raise (a reason is required) or lower the kill switch; while raised all tester "
        "traffic is refused with 503 lockdown",
        (ADMIN,),
        _ref("Lockdown"),
        body={
            "type": "object",
            "required": ["lockdown"],
            "properties": {"lockdown": {"type": "boolean"}, "reason": _REASON_TEXT},
            "if": {"properties": {"lockdown": {"const": True}}},
            "then": {"required": ["reason"]},
        },
    ),
    Operation(
        "/doctor",
        "get",
        "doctor",
        "program",
        "Check this deployment (database, root secret, clock, Redis, backend credential, "
        "proxies, /metrics, audit signing); each finding says how to fix it. The request "
        "itself shows how requests reach the gateway: send it through the front proxy",
        (ADMIN,),
        _ref("Doctor"),
    ),
    Operation(
        "/cohorts",
        "get",
        "listCohortPolicies",
        "policies",
        "Every cohort's policy",
        ANY_ROLE,
        _ref("CohortPolicyList"),
    ),
    Operation(
        "/cohorts/{cohort}/policy",
        "put",
        "setCohortPolicy",
        "policies",
        "Replace a cohort's policy (see config/policies.toml for the fields)",
        (ADMIN,),
        _ref("CohortPolicy"),
        body=_POLICY_BODY,
    ),
    Operation(
        "/testers/{tester_id}/policy",
        "get",
        "getTesterPolicy",
        "policies",
        "A tester's effective policy and overrides",
        RECORD_READERS,
        _ref("TesterPolicy"),
        errors=(404,),
    ),
    Operation(
        "/testers/{tester_id}/policy",
        "put",
        "setTesterPolicy",
        "policies",
        "Replace a tester's policy overrides",
        (ADMIN,),
        _ref("TesterPolicy"),
        body=_POLICY_BODY,
        errors=(404,),
    ),
    Operation(
        "/testers/{tester_id}/policy",
        "delete",
        "clearTesterPolicy",
        "policies",
        "Remove a tester's policy overrides",
        (ADMIN,),
        _ref("TesterOverrides"),
        errors=(404,),
    ),
    Operation(
        "/approvals",
        "get",
        "listApprovals",
        "approvals",
        "Held requests, oldest first",
        ANY_ROLE,
        _ref("ApprovalList"),
        query=(
            _query(
                "status", "Only requests in this state", enum=["pending", "approved", "rejected"]
            ),
            _query("kind", "Only this kind", enum=["generation", "share", "download"]),
            _query("tester_id", "Only this tester's requests", pattern=ID_PATTERNS["tester_id"]),
            _query(
                "limit", "At most this many", type="integer", minimum=1, maximum=500, default=100
            ),
        ),
    ),
    Operation(
        "/approvals/{approval_id}",
        "get",
        "getApproval",
        "approvals",
        "One held request",
        ANY_ROLE,
        _ref("Approval"),
        errors=(404,),
    ),
    Operation(
        "/approvals/{approval_id}/approve",
        "post",
        "approveRequest",
        "approvals",
        "Approve; a held generation is then submitted on the tester's behalf",
        APPROVAL_DECIDERS,
        _ref("Approval"),
        body=_OPTIONAL_REASON,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/approvals/{approval_id}/reject",
        "post",
        "rejectRequest",
        "approvals",
        "Reject with a reason the tester sees",
        APPROVAL_DECIDERS,
        _ref("Approval"),
        body=_REASON,
        errors=_WRITE_ERRORS,
    ),
    Operation(
        "/audit/checkpoints",
        "get",
        "listAuditCheckpoints",
        "audit",
        "Signed audit checkpoints in seq order (docs/audit.md)",
        RECORD_READERS,
        _ref("CheckpointList"),
        query=_AUDIT_PAGE,
    ),
    Operation(
        "/audit/public-key",
        "get",
        "getAuditPublicKey",
        "audit",
        "The Ed25519 public key that signs audit checkpoints, and its key id",
        RECORD_READERS,
        _ref("AuditPublicKey"),
        errors=(404,),
    ),
    Operation(
        "/provenance/identify",
        "post",
        "identifyVideo",
        "provenance",
        "Identify a video file: its C2PA manifest (valid, invalid, absent) and the delivery "
        "it came from, by manifest or by hash; the lookup is audited (docs/provenance.md)",
        RECORD_READERS,
        _ref("Identification"),
        upload=True,
        errors=(413,),
    ),
    Operation(
        "/provenance/certificates",
        "get",
        "listProvenanceCertificates",
        "provenance",
        "The deployment's C2PA signing certificates and roots (PEM), newest last",
        RECORD_READERS,
        {"type": "object"},
    ),
    Operation(
        "/usage",
        "get",
        "listUsageEvents",
        "usage",
        "Usage events in time order, filtered; keyset pages (after = the last event's id)",
        RECORD_READERS,
        _ref("UsageEventList"),
        query=(
            *_USAGE_FILTERS,
            _query("limit", "Page size", type="integer", minimum=1, maximum=MAX_PAGE, default=100),
        ),
    ),
    Operation(
        "/usage/daily",
        "get",
        "getDailyUsage",
        "usage",
        "Per-tester totals per UTC day: requests, generations, video-seconds, rejections, "
        "failures, approvers' decisions",
        RECORD_READERS,
        _ref("DailyUsage"),
        query=(
            _query(
                "since",
                f"First UTC day (default: 29 days before until), the day of: {SPAN_OR_TIME}",
                **_WINDOW_TIME,
            ),
            _query(
                "until",
                "Last UTC day, inclusive (default: today); at most 366 days; same forms",
                **_WINDOW_TIME,
            ),
            _query("tester_id", "Only this tester", pattern="^[A-Za-z0-9_-]{1,32}$"),
            _query("cohort", "Only this cohort", pattern=COHORT_PATTERN),
        ),
    ),
    Operation(
        "/usage/refusals",
        "get",
        "getUsageRefusals",
        "usage",
        "Requests refused before a key was admitted (no key, unknown, revoked or rate-limited "
        "key, blocked address): counted per UTC day, key, error code and status, not stored "
        "as events",
        RECORD_READERS,
        _ref("UsageRefusals"),
        query=(
            _query(
                "since",
                f"First UTC day (default: 29 days before until), the day of: {SPAN_OR_TIME}",
                **_WINDOW_TIME,
            ),
            _query(
                "until",
                "Last UTC day, inclusive (default: today); at most 366 days; same forms",
                **_WINDOW_TIME,
            ),
            _query("key_id", "Only this key", pattern="^[A-Za-z0-9_-]{1,32}$"),
        ),
    ),
    Operation(
        "/usage/export",
        "get",
        "exportUsage",
        "usage",
        "Stream the filtered usage events as CSV or JSON Lines",
        RECORD_READERS,
        {"type": "string"},
        query=(
            *_USAGE_FILTERS,
            _query("format", "Export format", enum=["csv", "jsonl"], default="csv"),
        ),
        content={
            "text/csv": {"schema": {"type": "string"}},
            "application/jsonl": {"schema": {"type": "string"}},
        },
    ),
    Operation(
        "/keys/{key_id}/report",
        "get",
        "getKeyReport",
        "usage",
        "Blast radius: everything a key did in a window (requests, client IPs, user agents, "
        "generations, videos, refused attempts after revocation)",
        RECORD_READERS,
        _ref("KeyReport"),
        query=(
            _query(
                "since",
                f"From this time (default: the key's creation): {SPAN_OR_TIME}",
                **_WINDOW_TIME,
            ),
            _query("until", f"Up to this time (default: now): {SPAN_OR_TIME}", **_WINDOW_TIME),
        ),
        errors=(404,),
    ),
)

_TAGS = [
    {"name": "testers", "description": "People in the program"},
    {"name": "keys", "description": "Tester API keys: issue, rotate, suspend, revoke"},
    {"name": "tokens", "description": "Admin, approver and auditor tokens"},
    {"name": "approvals", "description": "Held generations, shares and downloads"},
    {"name": "policies", "description": "Cohort policies and per-tester overrides"},
    {"name": "program", "description": "The kill switch and the deployment's own check"},
    {"name": "usage", "description": "Usage events, daily totals, exports, key reports"},
    {"name": "audit", "description": "The hash-chained audit trail and its signed checkpoints"},
    {"name": "provenance", "description": "Whose a video file is: its C2PA manifest or hashes"},
]

_ERROR_TEXT = {
    400: "Invalid input, an unknown query parameter (unknown_parameter) or a tricky path "
    "(invalid_path)",
    401: "Missing or invalid admin token",
    403: "Role not allowed",
    404: "Not found",
    409: "Conflict with the object's state",
    413: "The upload is larger than the gateway accepts",
    429: "Too many requests; retry after Retry-After seconds",
    503: "The key store is unreachable; retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERROR_TEXT[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _roles_text(roles: tuple[str, ...]) -> str:
    return "any" if roles == ANY_ROLE else ", ".join(roles)


def _operation(op: Operation) -> dict[str, Any]:
    path_parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": pattern},
        }
        for name, pattern in ID_PATTERNS.items()
        if f"{{{name}}}" in op.path
    ]
    errors = {400, 401, 403, 429, 503, *op.errors}
    if path_parameters:
        errors.add(404)
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": f"Roles: {_roles_text(op.roles)}.",
        "parameters": path_parameters + list(op.query),
        "responses": {
            str(op.status): {
                "description": "OK" if op.status == 200 else "Created",
                "content": op.content or {"application/json": {"schema": op.response}},
            },
            **{str(status): _error_response(status) for status in sorted(errors)},
        },
    }
    if op.upload:
        binary = {"type": "string", "format": "binary"}
        operation["requestBody"] = {
            "required": True,
            "content": {
                "video/mp4": {"schema": binary},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": binary},
                    }
                },
            },
        }
    if op.body is not None:
        operation["requestBody"] = {
            "required": "required" in op.body,
            "content": {"application/json": {"schema": op.body}},
        }
    return operation


def declared_query_parameters(path: str, method: str) -> dict[str, dict[str, Any]]:
    """The query parameters an operation takes, each with its schema (none for a path and
    method the document does not describe)."""
    return _declared_query().get((path, method.lower()), {})


@cache
def _declared_query() -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    declared = {
        (op.path, op.method): {p["name"]: p["schema"] for p in op.query} for op in _OPERATIONS
    }
    for (path, method), parameters in list(declared.items()):
        if method == "get":
            declared[(path, "head")] = parameters
    return declared


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _list_of(item: str, *, paged: bool = False, **extra: Any) -> dict[str, Any]:
    schema = _object(
        ["object", "data"],
        object={"const": "list"},
        data={"type": "array", "items": _ref(item)},
        **extra,
    )
    if paged:
        schema["required"] = ["object", "data", "has_more"]
        schema["properties"]["has_more"] = {"type": "boolean"}
    return schema


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_DECISION = {
    "type": ["object", "null"],
    "properties": {"at": _NULLABLE_TIME, "by": _NULLABLE_STRING, "reason": _NULLABLE_STRING},
}
_KEY_PROPERTIES = {
    "id": _STRING,
    "object": {"const": "api_key"},
    "tester_id": _STRING,
    "hint": _STRING,
    "status": {"enum": ["active", "rotated", "suspended", "revoked", "expired"]},
    "created_at": _TIME,
    "created_by": _STRING,
    "expires_at": _NULLABLE_TIME,
    "last_used_at": _NULLABLE_TIME,
    "metadata": {"type": "object", "additionalProperties": _STRING},
    "rotated_from": _NULLABLE_STRING,
    "replaced_by": _NULLABLE_STRING,
    "grace_until": {**_NULLABLE_TIME, "description": "Until when a rotated key still works"},
    "suspended": _DECISION,
    "revoked": _DECISION,
}
_KEY_REQUIRED = ["id", "object", "tester_id", "hint", "status", "created_at"]
_TESTER_PROPERTIES = {
    "id": _STRING,
    "object": {"const": "tester"},
    "name": _STRING,
    "email": _STRING,
    "cohort": _STRING,
    "status": _STRING,
    "created_at": _TIME,
    "created_by": _STRING,
}
_TOKEN_PROPERTIES = {
    "id": _STRING,
    "object": {"const": "admin_token"},
    "name": _STRING,
    "role": {"enum": list(ROLES)},
    "hint": _STRING,
    "created_at": _TIME,
    "created_by": _STRING,
    "expires_at": _NULLABLE_TIME,
    "revoked_at": _NULLABLE_TIME,
}
_POLICY_OUT = {"type": "object", "description": "Every setting of the policy in force"}

_SCHEMAS: dict[str, Any] = {
    "Error": _object(
        ["error"],
        error={
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": _STRING,
                "type": _STRING,
                "param": _NULLABLE_STRING,
                "code": _STRING,
            },
        },
    ),
    "Whoami": _object(["id", "name", "role"], id=_STRING, name=_STRING, role=_STRING),
    "Tester": _object(["id", "object", "name", "email", "cohort", "status"], **_TESTER_PROPERTIES),
    "TesterWithKeys": _object(
        ["id", "object", "keys"],
        **_TESTER_PROPERTIES,
        keys={"type": "array", "items": _ref("ApiKey")},
    ),
    "TesterList": _list_of("Tester", paged=True),
    "ApiKey": _object(_KEY_REQUIRED, **_KEY_PROPERTIES),
    "ProofKey": _object(
        ["id", "object", "key_id", "tester_id", "algorithm", "thumbprint", "public_key"],
        id=_STRING,
        object={"const": "proof_key"},
        key_id=_STRING,
        tester_id=_STRING,
        algorithm={"enum": ["ed25519", "ecdsa-p256-sha256"]},
        thumbprint={**_STRING, "description": "RFC 7638 JWK thumbprint: the signatures' keyid"},
        public_key=_STRING,
        created_at=_TIME,
        created_by=_STRING,
        removed_at=_NULLABLE_TIME,
        removed_by=_NULLABLE_STRING,
    ),
    "IssuedKey": _object(
        [*_KEY_REQUIRED, "secret"],
        **_KEY_PROPERTIES,
        secret=_STRING,
        rotated_from_grace_until={
            **_NULLABLE_TIME,
            "description": "After a rotation: when the old key's grace ends",
        },
    ),
    "KeyList": _list_of("ApiKey", paged=True),
    "Revoked": _object(
        ["revoked"],
        tester_id=_STRING,
        revoked={"type": "array", "items": _STRING, "description": "Ids of the revoked keys"},
    ),
    "AdminToken": _object(["id", "object", "name", "role"], **_TOKEN_PROPERTIES),
    "IssuedToken": _object(
        ["id", "object", "name", "role", "secret"], **_TOKEN_PROPERTIES, secret=_STRING
    ),
    "TokenList": _list_of("AdminToken", paged=True),
    "AuditEntry": _object(
        ["seq", "at", "actor", "action", "target", "prev_hash", "hash"],
        seq={"type": "integer", "minimum": 1},
        at=_TIME,
        actor=_STRING,
        action=_STRING,
        target=_STRING,
        reason=_NULLABLE_STRING,
        details={"type": "object"},
        prev_hash=_STRING,
        hash=_STRING,
    ),
    "AuditEntryList": _list_of("AuditEntry", paged=True),
    "Checkpoint": _object(
        ["seq", "hash", "at", "key_id", "signature"],
        seq={"type": "integer", "minimum": 1},
        hash=_STRING,
        at=_STRING,
        key_id=_STRING,
        signature=_STRING,
    ),
    "CheckpointList": _list_of("Checkpoint", paged=True),
    "AuditPublicKey": _object(
        ["object", "algorithm", "key_id", "public_key_pem"],
        object={"const": "audit.public_key"},
        algorithm={"const": "Ed25519"},
        key_id=_STRING,
        public_key_pem=_STRING,
    ),
    "Doctor": _object(
        ["object", "ok", "findings"],
        object={"const": "doctor"},
        ok={"type": "boolean", "description": "No finding failed (warnings allowed)"},
        findings={
            "type": "array",
            "items": _object(
                ["name", "status", "detail", "fix"],
                name=_STRING,
                status={"enum": ["ok", "warn", "fail"]},
                detail=_STRING,
                fix=_NULLABLE_STRING,
            ),
        },
    ),
    "Lockdown": _object(
        ["object", "lockdown"],
        object={"const": "lockdown"},
        lockdown={"type": "boolean"},
        reason=_NULLABLE_STRING,
        changed_by=_NULLABLE_STRING,
        changed_at=_NULLABLE_TIME,
    ),
    "CohortPolicy": _object(
        ["cohort", "policy"], cohort=_STRING, policy=_POLICY_OUT, changed={"type": "boolean"}
    ),
    "CohortPolicyList": _list_of("CohortPolicy"),
    "TesterPolicy": _object(
        ["tester_id", "overrides", "policy"],
        tester_id=_STRING,
        overrides={"type": "object"},
        policy=_POLICY_OUT,
    ),
    "TesterOverrides": _object(
        ["tester_id", "overrides"], tester_id=_STRING, overrides={"type": "object"}
    ),
    "Approval": _object(
        ["id", "object", "kind", "status"],
        id=_STRING,
        object={"const": "approval"},
        kind={"enum": ["generation", "share", "download"]},
        status={"enum": ["pending", "approved", "rejected"]},
        video_id=_NULLABLE_STRING,
        held_because=_NULLABLE_STRING,
        created_at=_TIME,
        decided_at=_NULLABLE_TIME,
        decision_reason=_NULLABLE_STRING,
        expires_at=_NULLABLE_TIME,
        tester_id=_NULLABLE_STRING,
        key_id=_NULLABLE_STRING,
        request={"type": ["object", "null"]},
        decided_by=_NULLABLE_STRING,
        video={"type": ["object", "null"], "description": "The submitted generation"},
    ),
    "ApprovalList": _list_of("Approval"),
    "UsageEvent": _object(["id", "at"], id={"type": "integer"}, at=_TIME),
    "UsageEventList": _list_of("UsageEvent", paged=True, next_after={"type": ["integer", "null"]}),
    "DailyRow": _object(
        ["day", "tester_id", "requests"],
        day={"type": "string", "format": "date"},
        tester_id=_NULLABLE_STRING,
        requests=_COUNT,
        generations=_COUNT,
        video_seconds=_COUNT,
        rejections=_COUNT,
        failures=_COUNT,
        approvals_approved=_COUNT,
        approvals_rejected=_COUNT,
    ),
    "DailyUsage": _list_of(
        "DailyRow",
        since={"type": "string", "format": "date"},
        until={"type": "string", "format": "date"},
    ),
    "UsageRefusalRow": _object(
        ["object", "day", "key_id", "error_code", "status", "requests"],
        object={"const": "usage.refusals"},
        day={"type": "string", "format": "date"},
        key_id=_NULLABLE_STRING,
        error_code=_NULLABLE_STRING,
        status={"type": "integer"},
        requests=_COUNT,
        first_seen=_NULLABLE_TIME,
        last_seen=_NULLABLE_TIME,
    ),
    "UsageRefusals": _list_of(
        "UsageRefusalRow",
        since={"type": "string", "format": "date"},
        until={"type": "string", "format": "date"},
    ),
    "Identification": _object(
        ["object", "verdict", "manifest", "matched_by", "sha256", "deliveries"],
        object={"const": "provenance.identification"},
        verdict={"enum": ["identified", "unknown"]},
        manifest={"enum": ["valid", "invalid", "absent"]},
        matched_by={"enum": ["manifest", "delivered_hash", "original_hash", "media_hash", None]},
        sha256=_STRING,
        size=_COUNT,
        failures={"type": "array", "items": _STRING},
        deliveries={"type": "array", "items": {"type": "object"}},
        audit_seq={"type": ["integer", "null"]},
    ),
    "KeyReport": _object(
        ["object", "key_id", "tester_id", "since", "until", "requests"],
        object={"const": "key.report"},
        key_id=_STRING,
        tester_id=_STRING,
        since=_TIME,
        until=_TIME,
        requests=_COUNT,
        revoked_at=_NULLABLE_TIME,
        refused_after_revocation=_COUNT,
        proof_bound={"type": "boolean"},
        refused_proofs={
            "type": "object",
            "description": "Requests with the key's string refused for their proof of "
            "possession, by code (proof_required, proof_invalid, proof_replayed).",
            "additionalProperties": _COUNT,
        },
        refused_proof_ips={"type": "array", "items": {"type": "object"}},
        refusals_by_day={"type": "array", "items": {"type": "object"}},
    ),
}


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in _OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Drawbridge admin API", "version": "1"},
        "servers": [{"url": "/admin/v1"}],
        "security": [{"bearer": []}],
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
    }
