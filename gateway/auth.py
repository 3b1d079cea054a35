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
from keys.admin_tokens import Operator
from keys.lifecycle import Principal, needs_touch

P = ParamSpec("P")
R = TypeVar("R")

_KEY_PARAMETER_NAMES = frozenset(
    {"api_key", "api-key", "apikey", "key", "access_token", "token", "authorization", "bearer"}
)


def refuse_secrets_in_query() -> None:
    """Raises ApiError when the query string carries anything that looks like a credential."""
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
    """Verify the caller's tester key. Raises ApiError or domain errors (401)."""
    refuse_secrets_in_query()
    secret = bearer_secret()
    store = current_state().store
    with store.read() as tx:
        principal = tx.keys.verify(secret)
    if needs_touch(principal.last_used_at, store.clock()):
        with store.transaction() as tx:
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
