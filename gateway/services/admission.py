"""Admission: who is calling, and may this request go on.

For a tester request, the whole pipeline runs top to bottom in ``admit_tester``; every
refusal is a domain exception that gateway/http/errors.py turns into the error shape. Operators
(admin API tokens) pass through ``admit_operator``. Nothing here knows HTTP beyond the
values the edge hands in (gateway/http/auth.py reads them off the request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keys.access.admin_tokens import Operator
from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import Principal, needs_touch
from keys.access.proofs import ProofRules, SignedRequest, verify_proof
from keys.errors import (
    Forbidden,
    HoneytokenUsed,
    InvalidInput,
    InvalidKey,
    KeyRejected,
    ProofRequired,
)

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.state import GatewayState

# Query parameters named like a credential are refused whatever they hold.
_KEY_PARAMETER_NAMES = frozenset(
    {"api_key", "api-key", "apikey", "key", "access_token", "token", "authorization", "bearer"}
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a request presents for admission, as the edge read it."""

    authorization: str | None
    """The ``Authorization`` header, as sent."""
    client_ip: str
    query: tuple[tuple[str, str], ...] = ()
    """The query string's parameters (name, value), all of them."""
    video_id: str | None = None
    """The well-formed video id the URL names, read with the key in the same query."""
    signed_request: Callable[[], SignedRequest] | None = None
    """The request as its proof covers it; called only for a key with a proof key bound
    (it reads the body)."""
    before_proof: bool = False
    """The request is one a key may make before it has a proof key (its own status, binding
    one, revoking itself), even where the policy requires a proof."""


def admit_tester(state: GatewayState, attempt: Attempt, context: RequestContext) -> Principal:
    """Verify a tester key and count the request against its limits, in this order:

    1. no credential in the URL (a key there has been logged somewhere: refused outright);
    2. a client address that failed too often is refused before its key is looked at,
       unless the key is one this process verified and has not seen refused since (a
       tester behind the NAT or proxy address of a flood keeps working: docs/usage.md);
    3. the key is verified (with the kill switch and the named video, in one read); a
       failure counts against the client address, and a honeytoken raises the alarm;
    3a. a key with a proof key bound must carry a valid, unused signature made with it
       (keys/access/proofs.py); a failure counts against the client address and, past
       the policy's threshold, alerts. Where the policy requires a proof, a key without
       one may only bind one;
    4. anomaly rules count the verified attempt, also one the limits refuse next, and stop
       the key when it trips one;
    5. the key's place among its in-flight requests (refused here, the request costs the
       key nothing);
    6. the key's rate limits;
    7. ``last_used`` is written, at most once a minute per key.

    Fills in ``context`` as it learns (the usage event and the access log read it) and
    returns the principal. Raises InvalidInput, InvalidKey, KeyRejected, Lockdown,
    RateLimited or TooManyInFlight.
    """
    store = state.store
    refuse_secrets_in_query(attempt.query, (store.key_format, store.token_format))
    limits = state.limits
    secret = presented_credential(attempt.authorization)
    limits.refuse_blocked_client(attempt.client_ip, secret)
    try:
        secret = bearer_credential(attempt.authorization)
        principal, context.video = store.check_key(secret, attempt.video_id)
    except (InvalidKey, KeyRejected) as exc:
        context.attempted_key_id = getattr(exc, "key_id", None)
        if secret is not None:
            limits.verified_keys.forget(secret)
        limits.record_auth_failure(attempt.client_ip)
        if isinstance(exc, HoneytokenUsed):
            state.anomalies.honeytoken_used(exc, attempt.client_ip)
        raise
    context.attempted_key_id = principal.key_id
    try:
        check_possession(state, attempt, principal)
    except InvalidKey:
        limits.verified_keys.forget(secret)
        raise
    limits.verified_keys.remember(secret)
    state.anomalies.watch(principal, attempt.client_ip)
    context.bulkhead_slot = state.bulkhead.enter(principal.key_id)
    context.rate_limit = state.limits.admit_key(principal.key_id, principal.policy)
    if needs_touch(principal.last_used_at, store.clock()):
        with store.transaction() as tx:
            tx.keys.touch(principal.key_id)
    context.principal = principal
    return principal


def check_possession(state: GatewayState, attempt: Attempt, principal: Principal) -> None:
    """Step 3a of ``admit_tester``. Raises ProofRequired, ProofInvalid, ProofReplayed."""
    bound = principal.proof_key
    if bound is None:
        if principal.policy.require_proof and not attempt.before_proof:
            raise ProofRequired(
                "Your cohort requires proof of possession, and this API key has no proof key "
                "bound: make one (`drawbridge keys new-proof-key`) and bind it with "
                "POST /v1/me/proof-keys. See docs/proof-of-possession.md.",
            )
        return
    settings = state.settings
    try:
        if attempt.signed_request is None:
            raise ProofRequired("This API key is bound to a proof key; sign the request.")
        verify_proof(
            bound,
            attempt.signed_request(),
            ProofRules(settings.proof_window_seconds, settings.proof_skew_seconds),
            state.replays,
            state.store.clock().timestamp(),
        )
    except InvalidKey:
        # The string is right and the proof is not: whoever sends it holds the string only.
        state.limits.record_auth_failure(attempt.client_ip)
        state.anomalies.proof_failed(principal, attempt.client_ip)
        raise


def admit_operator(
    state: GatewayState, attempt: Attempt, roles: tuple[str, ...], context: RequestContext
) -> Operator:
    """Verify an admin, approver or auditor token holding one of ``roles``.

    Raises InvalidInput (a credential in the URL), InvalidKey or KeyRejected (401), or
    Forbidden (another role).
    """
    store = state.store
    refuse_secrets_in_query(attempt.query, (store.key_format, store.token_format))
    secret = bearer_credential(attempt.authorization)
    with store.read() as tx:
        operator = tx.tokens.verify(secret)
    if operator.role not in roles:
        raise Forbidden(
            f"This action needs the role {' or '.join(roles)}; "
            f"your token has the role {operator.role}."
        )
    context.operator = operator
    return operator


def refuse_secrets_in_query(
    query: Iterable[tuple[str, str]], formats: tuple[KeyFormat, ...]
) -> None:
    """Raises InvalidInput when the query string carries anything that looks like a
    credential: a parameter named like one, or a value shaped like a key or token."""
    for name, value in query:
        if name.lower() in _KEY_PARAMETER_NAMES or any(f.pattern.search(value) for f in formats):
            raise InvalidInput(
                "API keys are accepted only in the Authorization header, never in the URL. "
                "A key that was sent in a URL may have been logged; rotate it.",
                code="api_key_in_query",
                param=name,
            )


def presented_credential(authorization: str | None) -> str | None:
    """The Bearer credential, or None when there is none to speak of."""
    try:
        return bearer_credential(authorization)
    except InvalidKey:
        return None


def bearer_credential(authorization: str | None) -> str:
    """The credential of ``Authorization: Bearer <credential>``. Raises InvalidKey."""
    if not authorization:
        raise InvalidKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise InvalidKey("Use 'Authorization: Bearer YOUR_KEY'.")
    return credential.strip()
