"""Who is calling: tester keys on ``/v1``, admin tokens on ``/admin/v1``.

Keys are accepted in ``Authorization: Bearer`` only. A key in a URL ends up in browser
history, proxy logs and referrers, so the request is refused rather than served.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import g, request

from gateway.errors import ApiError
from gateway.state import current_state
from gateway.upstream import VIDEO_ID
from keys.admin_tokens import Operator
from keys.errors import HoneytokenUsed, InvalidKey, KeyRejected
from keys.gate import VideoRef
from keys.lifecycle import Principal, needs_touch

P = ParamSpec("P")
R = TypeVar("R")

_KEY_PARAMETER_NAMES = frozenset(
    {"api_key", "api-key", "apikey", "key", "access_token", "token", "authorization", "bearer"}
)


def refuse_secrets_in_query() -> None:
    """Raises ApiError when the query string carries anything that looks like a credential."""
    if not request.query_string:
        return
    state = current_state()
    formats = (state.store.key_format, state.store.token_format)
    for name, value in request.args.items(multi=True):
        named_like_key = name.lower() in _KEY_PARAMETER_NAMES
        if named_like_key or any(f.pattern.search(value) for f in formats):
            raise ApiError(
                400,
                "API keys are accepted only in the Authorization header, never in the URL. "
                "A key that was sent in a URL may have been logged; rotate it.",
                "api_key_in_query",
                param=name,
            )


def bearer_secret() -> str:
    """The credential of ``Authorization: Bearer <credential>``. Raises ApiError (401)."""
    header = request.headers.get("Authorization")
    if not header:
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            "missing_api_key",
        )
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise ApiError(401, "Use 'Authorization: Bearer YOUR_KEY'.", "invalid_api_key")
    return credential.strip()


def authenticate_tester() -> Principal:
    """Verify the caller's tester key and count the request against its rate limits.

    Raises ApiError (400, 401, 429) or domain errors (401, 503 during a lockdown). A client
    that fails authentication too often is refused before its key is even looked at; a key
    that trips an anomaly rule is suspended and refused (gateway/anomalies.py).
    """
    refuse_secrets_in_query()
    state = current_state()
    client_ip = request.remote_addr or "unknown"
    state.limits.refuse_blocked_client(client_ip)
    video_id = (request.view_args or {}).get("video_id")
    try:
        secret = bearer_secret()
        principal, g.video = state.store.check_key(
            secret, video_id if video_id and VIDEO_ID.fullmatch(video_id) else None
        )
    except (ApiError, InvalidKey, KeyRejected) as exc:
        g.attempted_key_id = getattr(exc, "key_id", None)
        state.limits.record_auth_failure(client_ip)
        if isinstance(exc, HoneytokenUsed):
            state.anomalies.honeytoken_used(exc, client_ip)
        raise
    # Anomaly rules count every verified attempt, also those the rate limit refuses next.
    g.attempted_key_id = principal.key_id
    state.anomalies.watch(principal, client_ip)
    # Before the rate limit: a request refused for being one too many in flight costs
    # the key nothing.
    g.bulkhead_slot = state.bulkhead.enter(principal.key_id)
    g.rate_limit = state.limits.admit_key(principal.key_id, principal.policy)
    if needs_touch(principal.last_used_at, state.store.clock()):
        with state.store.transaction() as tx:
            tx.keys.touch(principal.key_id)
    return principal


def require_tester(view: Callable[P, R]) -> Callable[P, R]:
    """Run the view only for a valid tester key; the principal is ``g.principal``."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.principal = authenticate_tester()
        return view(*args, **kwargs)

    return wrapper


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal


def requested_video(video_id: str) -> VideoRef:
    """The caller's video named in the URL, read with the key (``authenticate_tester``).

    Raises ApiError 404 for a video that does not exist, was deleted, or is someone else's:
    the three are indistinguishable on purpose.
    """
    video: VideoRef | None = g.get("video")
    if video is None or video.id != video_id or not video.visible_to(g.principal.tester_id):
        raise ApiError(404, f"No video found with id '{video_id[:64]}'.", "not_found")
    return video


def authenticate_operator() -> Operator:
    """Verify an admin token. Raises ApiError or domain errors (401)."""
    refuse_secrets_in_query()
    secret = bearer_secret()
    with current_state().store.read() as tx:
        return tx.tokens.verify(secret)


def require_role(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the view only for an admin token of one of ``roles``; sets ``g.operator``."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            operator = authenticate_operator()
            if operator.role not in roles:
                raise ApiError(
                    403,
                    f"This action needs the role {' or '.join(roles)}; "
                    f"your token has the role {operator.role}.",
                    "permission_denied",
                )
            g.operator = operator
            return view(*args, **kwargs)

        return wrapper

    return decorate


def current_operator() -> Operator:
    operator: Operator = g.operator
    return operator
