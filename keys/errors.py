"""Domain exceptions, all of them. Each carries a stable ``code``; the HTTP edge
(gateway/http/errors.py) decides the status, from a table keyed by these classes.

DomainError
├── NotFound               an object does not exist, or is not the caller's to see
├── InvalidInput           a value the domain refuses (``param`` names it)
│   └── UnknownCohort      a cohort with neither a policy nor a tester
├── Conflict               the action does not fit the object's state (resume a revoked key)
├── NotReady               the object exists but cannot do that yet (a held video's content)
├── Forbidden              the caller may not do this (a role, a cohort policy, a review)
├── InvalidKey             malformed, badly checksummed or unknown secret
│   ├── HoneytokenUsed     a honeytoken key: refused like an unknown one, and watched
│   ├── ProofRequired      a key bound to a proof key (or whose policy needs one) came bare
│   ├── ProofInvalid       a proof that is malformed, stale, by another key or for another request
│   └── ProofReplayed      a valid proof seen before: captured and sent again
├── KeyRejected            a known key that may not be used now (revoked, expired, ...)
├── Lockdown               the kill switch is on: tester traffic is refused program-wide
├── Refused                not now; ``retry_after`` seconds say when the same request can pass
│   ├── QuotaExceeded      a quota of the key's cohort is used up
│   ├── RateLimited        too many requests per minute or day (or failed sign-ins per minute)
│   └── TooManyInFlight    too many of the key's requests are still running
├── InvalidShareLink       a share link that is forged, revoked or unknown
├── ShareLinkExpired       a genuine share link past its time
├── SchemaNotCurrent       the database is missing or behind the code's migrations
└── DatabaseUnreachable    the database did not answer, so its schema could not be checked
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Protocol

_LISTED_COHORTS = 20


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class NotFound(DomainError):
    code = "not_found"


class InvalidInput(DomainError):
    code = "invalid_value"


class Conflict(DomainError):
    code = "conflict"


class NotReady(DomainError):
    """The object exists but cannot do this yet: a held video has no content before an
    approver's decision."""

    code = "not_ready"


class Forbidden(DomainError):
    """The caller is known but may not do this: its role, its cohort's policy, or a
    reviewer's decision says no."""

    code = "permission_denied"


class InvalidKey(DomainError):
    code = "invalid_api_key"


class ProofRequired(InvalidKey):
    """A key that must prove possession of its proof key came without a signature."""

    code = "proof_required"


class ProofInvalid(InvalidKey):
    """The signature is malformed, stale, made with another key, or for another request."""

    code = "proof_invalid"


class ProofReplayed(InvalidKey):
    """A valid signature seen before: someone captured it and sent it again."""

    code = "proof_replayed"


class HoneytokenUsed(InvalidKey):
    """A honeytoken key was presented. It is refused exactly like an unknown key (the caller
    learns nothing); the gateway suspends it and raises the alarm."""

    def __init__(
        self, key_id: str, tester_id: str, hint: str, status: str, proof_bound: bool = False
    ) -> None:
        super().__init__("Incorrect API key provided.")
        self.key_id = key_id
        self.tester_id = tester_id
        self.hint = hint
        self.status = status
        self.proof_bound = proof_bound


class KeyRejected(DomainError):
    """A known key refused; ``code`` is one of key_revoked, key_rotated, key_expired,
    key_suspended, tester_suspended."""

    code = "key_revoked"
    #: The refused key's id, so the refusal can be logged against it (never the secret).
    key_id: str | None = None


class UnknownCohort(InvalidInput):
    """A cohort that has neither a policy nor a tester."""

    code = "unknown_cohort"

    def __init__(self, cohort: str, known: list[str]) -> None:
        shown = ", ".join(known[:_LISTED_COHORTS]) + (
            ", ..." if len(known) > _LISTED_COHORTS else ""
        )
        super().__init__(
            f"no cohort '{cohort}' (known: {shown}); check the spelling, store its policy "
            "first, or create it with the default policy (--create-cohort on the CLI, "
            '"create_cohort": true in the admin API)',
            param="cohort",
        )
        self.known = known


class Lockdown(DomainError):
    """Tester traffic is refused program-wide."""

    code = "lockdown"


class Refused(DomainError):
    """The request is refused for now (a rate limit, the bulkhead, a quota);
    ``retry_after`` is how many seconds until the same request can succeed."""

    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, retry_after: int, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.retry_after = retry_after


# How long a client is asked to wait when every job slot is taken: long enough for a short
# video to finish, short enough for the openai SDK's retry to honour it.
JOB_SLOT_RETRY_SECONDS = 10


class Quota(Protocol):
    """What a refusal says of the quota that refused (keys/limits/quotas.py ``Quota``)."""

    @property
    def metric(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def amount(self) -> int: ...
    @property
    def resets_at(self) -> datetime | None: ...


class QuotaExceeded(Refused):
    code = "quota_exceeded"

    def __init__(self, quota: Quota, used: int, now: datetime | None = None) -> None:
        when = (
            f"It resets at {quota.resets_at.isoformat().replace('+00:00', 'Z')}"
            if quota.resets_at
            else "A slot frees up when one of your running videos finishes"
        )
        # Seconds until a retry can succeed, by the clock that decided (for Retry-After).
        retry_after = JOB_SLOT_RETRY_SECONDS
        if quota.resets_at is not None and now is not None:
            retry_after = max(math.ceil((quota.resets_at - now).total_seconds()), 1)
        super().__init__(
            f"Quota exceeded: {quota.metric.replace('_', ' ')} is {quota.limit} and "
            f"{used} is used; this request needs {quota.amount}. {when}.",
            retry_after,
            param=quota.metric,
        )
        self.quota = quota
        self.used = used


class RateLimited(Refused):
    """Too many requests in the window: the key's per-minute or per-day limit, or a client
    address's failed sign-ins. ``limit``, ``remaining`` and ``reset_in`` (seconds) describe
    the window that refused."""

    def __init__(
        self, message: str, *, code: str | None = None, limit: int, remaining: int, reset_in: float
    ) -> None:
        super().__init__(message, max(math.ceil(reset_in), 1), code=code)
        self.limit = limit
        self.remaining = remaining
        self.reset_in = reset_in


class TooManyInFlight(Refused):
    """The key already has as many requests running on this worker as it may."""

    code = "too_many_concurrent_requests"


class InvalidShareLink(DomainError):
    code = "invalid_share_link"


class ShareLinkExpired(DomainError):
    code = "share_link_expired"


class SchemaNotCurrent(DomainError):
    """The database is missing or its schema is behind the code's."""

    code = "schema_not_current"


class DatabaseUnreachable(DomainError):
    """The database did not answer, so its schema could not be checked."""

    code = "database_unavailable"
