"""Domain exceptions. Each carries a stable ``code``; the HTTP edge decides the status.

DomainError
├── NotFound            an object does not exist, or is not the caller's to see
├── InvalidInput        a value the domain refuses (``param`` names it)
├── Conflict            the action does not fit the object's state (resume a revoked key)
├── InvalidKey          malformed, badly checksummed or unknown secret
│   └── HoneytokenUsed  a honeytoken key: refused like an unknown one, and watched
└── KeyRejected         a known key that may not be used now (revoked, expired, ...)
"""

from __future__ import annotations


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


class InvalidKey(DomainError):
    code = "invalid_api_key"


class HoneytokenUsed(InvalidKey):
    """A honeytoken key was presented. It is refused exactly like an unknown key (the caller
    learns nothing); the gateway suspends it and raises the alarm."""

    def __init__(self, key_id: str, tester_id: str, hint: str, status: str) -> None:
        super().__init__("Incorrect API key provided.")
        self.key_id = key_id
        self.tester_id = tester_id
        self.hint = hint
        self.status = status


class KeyRejected(DomainError):
    """A known key refused; ``code`` is one of key_revoked, key_rotated, key_expired,
    key_suspended, tester_suspended."""

    code = "key_revoked"
    #: The refused key's id, so the refusal can be logged against it (never the secret).
    key_id: str | None = None
