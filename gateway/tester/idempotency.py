"""``Idempotency-Key`` on creates and remixes: a repeated request gets the first one's video.

The key is the client's (any printable text up to 255 characters), scoped to the tester key
that sends it, kept 24 hours (``keys.generations.idempotency``). A repeat with the same key
and the same request gets the same video, without a second backend call or charge; with
another request, 409 ``idempotency_key_reused``; while the first is still running, 409
``idempotency_key_in_flight`` with ``Retry-After: 1`` (and ``x-should-retry: true``, so the
openai SDK comes back for the video); once it has been in flight for ten upstream
deadlines its process died, and repeats get 409 ``idempotency_key_abandoned``. The
request's identity is what it asks for (the JSON object, or the form fields and a digest of
each file), not its bytes: a multipart body sent again has a new boundary.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import request

from gateway.http.auth import current_principal
from gateway.http.current import current_context, current_state
from gateway.http.errors import ApiError
from gateway.upstream.client import UpstreamError
from keys.generations.idempotency import Claim

log = logging.getLogger("drawbridge.idempotency")

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
# The failures after which the backend may have started a generation all the same: the key
# keeps the failure, so a repeat cannot start a second one.
_OUTCOME_UNKNOWN = frozenset({"upstream_timeout"})


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key``, or None. Raises ApiError 400 for an unusable one."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    if not (0 < len(value) <= MAX_KEY_CHARS and value.isascii() and value.isprintable()):
        raise ApiError(
            400,
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters.",
            "invalid_idempotency_key",
            param=HEADER,
        )
    return value


def request_fingerprint() -> str:
    """A digest of what the request asks for: path, and JSON object or form fields and files."""
    parts: dict[str, Any] = {"path": request.path}
    payload = request.get_json(silent=True) if request.is_json else None
    if payload is not None:
        parts["json"] = payload
    else:
        parts["form"] = sorted(request.form.items(multi=True))
        files = []
        for name, upload in sorted(request.files.items(multi=True), key=lambda item: item[0]):
            content = upload.stream.read()
            upload.stream.seek(0)  # the body is read again when it is forwarded
            files.append(
                [name, upload.filename, upload.mimetype, hashlib.sha256(content).hexdigest()]
            )
        parts["files"] = files
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def once_per_key(create: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``create`` (returns the video object) once per idempotency key; without one, run it.

    Raises ApiError 409 for a key reused with another request or still in flight, and
    replays a failure whose outcome upstream is unknown.
    """
    key = idempotency_key()
    if key is None:
        return create()
    principal = current_principal()
    store = current_state().store
    # A create makes a few upstream calls (a look at running jobs, then the create), each
    # within the upstream deadline: a claim ten deadlines old belongs to a process that died.
    abandoned_after = timedelta(seconds=10 * current_state().settings.upstream_deadline)
    with store.transaction() as tx:
        claim = tx.idempotency.claim(
            principal.key_id,
            key,
            request_fingerprint(),
            current_context().request_id,
            abandoned_after,
        )
    if claim.status != "claimed":
        return _replay(claim)
    try:
        video = create()
    except UpstreamError as exc:
        _settle_failure(key, exc)
        raise
    except BaseException:
        _settle_failure(key, None)
        raise
    with store.transaction() as tx:
        tx.idempotency.done(principal.key_id, key, str(video["id"]))
    return video


def _settle_failure(key: str, exc: UpstreamError | None) -> None:
    key_id = current_principal().key_id
    try:
        with current_state().store.transaction() as tx:
            if exc is not None and exc.code in _OUTCOME_UNKNOWN:
                error = {"status": exc.status, "code": exc.code, "message": exc.message}
                tx.idempotency.failed(key_id, key, error)
            else:
                tx.idempotency.release(key_id, key)
    except Exception as failure:
        # The request's own failure is what the client must hear about; the key stays in
        # flight until it expires.
        log.error("could not settle an idempotency key of %s: %s", key_id, failure)


def _replay(claim: Claim) -> dict[str, Any]:
    if not claim.same_request:
        raise ApiError(
            409,
            f"This {HEADER} was used with a different request; use a new key for a new one.",
            "idempotency_key_reused",
            param=HEADER,
        )
    if claim.status == "in_flight":
        raise ApiError(
            409,
            f"A request with this {HEADER} is still in progress; retry shortly for its result.",
            "idempotency_key_in_flight",
            param=HEADER,
            headers={"Retry-After": "1"},
            should_retry=True,
        )
    if claim.status == "failed" and claim.error is not None:
        raise ApiError(
            int(claim.error["status"]),
            f"{claim.error['message']} The first request with this {HEADER} failed this way "
            "and may still have started a generation; use a new key to try again.",
            str(claim.error["code"]),
            should_retry=False,
        )
    with current_state().store.read() as tx:
        video = tx.videos.owned(str(claim.video_id), current_principal().tester_id)
        return dict(video.snapshot)
