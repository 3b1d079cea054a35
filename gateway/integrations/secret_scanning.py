"""``POST /integrations/secret-scanning``: GitHub's secret scanning partner endpoint.

GitHub posts ``[{"token", "type", "url", "source"}, ...]`` when it finds strings matching
our key pattern in public places. Every live key among them is revoked within the request.

Order matters: headers, body size, signature over the raw bytes, then (only then) parsing,
then one transaction. Anything refused before the transaction changes nothing.

The answer never says whether a token was ours: with ``secret_scanning_feedback`` off (the
default) it is ``[]`` for any well-formed, signed report. With it on, GitHub gets its label
feedback (``true_positive`` for keys this gateway issued), which tells the signer, and only
the signer, which tokens were real. docs/leak-response.md weighs the two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import ceil
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.http.current import EXTENSION, current_state
from gateway.http.errors import ApiError
from gateway.http.inputs import parse_json
from gateway.integrations.github_signatures import (
    GitHubSigningKeys,
    RefreshThrottled,
    SignatureRejected,
    SigningKeysUnavailable,
)
from gateway.state import GatewayState
from keys.leaks.leaked_keys import LeakedSecret

log = logging.getLogger("drawbridge.secret_scanning")

bp = Blueprint("secret_scanning", __name__, url_prefix="/integrations")

ACTOR = "secret-scanning:github"
KEY_ID_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
SIGNING_KEYS_EXTENSION = "drawbridge.github_signing_keys"
_MAX_FIELD_CHARS = 4096


@bp.record_once
def _create_signing_keys(setup: BlueprintSetupState) -> None:
    state: GatewayState = setup.app.extensions[EXTENSION]
    setup.app.extensions[SIGNING_KEYS_EXTENSION] = GitHubSigningKeys(
        state.settings.secret_scanning_keys_url
    )


def signing_keys() -> GitHubSigningKeys:
    """This application's cache of GitHub's public keys."""
    keys: GitHubSigningKeys = current_app.extensions[SIGNING_KEYS_EXTENSION]
    return keys


@dataclass(frozen=True)
class _Record:
    token: str
    token_type: str | None
    url: str | None
    source: str | None


@bp.post("/secret-scanning")
def report_leaks() -> Response:
    """Revoke the live keys GitHub found in public; answer ``[]`` or label feedback."""
    settings = current_state().settings
    key_id = request.headers.get(KEY_ID_HEADER, "").strip()
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not key_id or not signature:
        raise ApiError(
            400,
            f"Signed requests only: {KEY_ID_HEADER} and {SIGNATURE_HEADER} are required.",
            "missing_signature",
        )
    payload = _raw_body(settings.secret_scanning_max_body_bytes)
    _verify(payload, key_id, signature)

    records = _parse(payload)
    store = current_state().store
    with store.transaction() as tx:
        report = tx.leaks.report(
            [LeakedSecret(r.token, url=r.url, source=r.source) for r in records],
            ACTOR,
            revoke_bound=settings.proof_revoke_leaked,
        )
    # Operators see what happened (key ids are not secrets); GitHub sees only the answer.
    log.info(
        "secret scanning report",
        extra={
            "tokens": len(records),
            "revoked": report.revoked,
            "kept_proof_bound": report.kept,
            "proof_bound": [o.key_id for o in report.outcomes if o.proof_bound],
        },
    )
    if not settings.secret_scanning_feedback:
        return jsonify([])
    return jsonify(
        [
            {
                "token_raw": record.token,
                "token_type": record.token_type,
                "label": "true_positive" if outcome.issued_here else "false_positive",
            }
            for record, outcome in zip(records, report.outcomes, strict=True)
        ]
    )


def _raw_body(limit: int) -> bytes:
    """The body exactly as sent (the signature covers these bytes). Raises ApiError (413)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    # A chunked body has no Content-Length to check up front. werkzeug stops reading it at
    # max_content_length *without* an error, so ask for one byte more and look.
    request.max_content_length = limit + 1
    try:
        payload = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    if len(payload) > limit:
        raise _too_large(limit)
    return payload


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"A secret scanning report may be at most {limit} bytes.", "request_too_large"
    )


def _verify(payload: bytes, key_id: str, signature: str) -> None:
    """Raises ApiError unless GitHub signed ``payload``."""
    try:
        signing_keys().verify(payload, key_id, signature)
    except SignatureRejected as exc:
        log.warning("secret scanning report refused: %s", exc)
        raise ApiError(403, "The request signature does not verify.", "invalid_signature") from None
    except RefreshThrottled as exc:
        raise ApiError(
            429,
            "Unknown signing key; GitHub's key list was fetched moments ago. Retry later.",
            "rate_limit_exceeded",
            headers={"Retry-After": str(max(1, ceil(exc.retry_after)))},
        ) from None
    except SigningKeysUnavailable as exc:
        log.error("cannot check a secret scanning report: %s", exc)
        raise ApiError(
            503,
            "GitHub's signing keys cannot be fetched now. Retry later.",
            "signing_keys_unavailable",
            headers={"Retry-After": "60"},
        ) from None


def _parse(payload: bytes) -> list[_Record]:
    """The report's records. Raises ApiError (400) for anything but a list of records."""
    try:
        document: Any = parse_json(payload)
    except ApiError:
        raise _malformed("The body is not JSON.") from None
    if not isinstance(document, list):
        raise _malformed("The body must be a JSON array of token records.")
    records = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise _malformed(f"Record {index} is not an object.")
        token = item.get("token")
        if not isinstance(token, str) or not token or len(token) > _MAX_FIELD_CHARS:
            raise _malformed(f"Record {index} has no token string.", param=f"[{index}].token")
        # Where the token was seen is free text: however long, and whatever it holds (NUL,
        # lone surrogates), the token is revoked; the domain cleans and clips it.
        fields = {}
        for name in ("type", "url", "source"):
            value = item.get(name)
            if value is not None and not isinstance(value, str):
                raise _malformed(
                    f"Record {index}: {name} must be a string.", param=f"[{index}].{name}"
                )
            fields[name] = value or None
        records.append(_Record(token, fields["type"], fields["url"], fields["source"]))
    return records


def _malformed(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_payload", param=param)
