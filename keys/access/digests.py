"""Keyed digests of secrets: what the database keeps instead of a key."""

from __future__ import annotations

import hashlib
import hmac


class SecretDigester:
    """HMAC-SHA256 under a server-side pepper.

    A stolen database without the pepper gives no way to test guesses offline; the digest is
    also the lookup index, so verification costs one indexed read.
    """

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("the key pepper must be at least 32 bytes")
        self._pepper = pepper

    def digest(self, secret: str) -> str:
        """The hex HMAC-SHA256 of a secret."""
        return hmac.new(self._pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()

    def matches(self, secret: str, stored_digest: str) -> bool:
        """Constant-time comparison of a secret with a stored digest."""
        return hmac.compare_digest(self.digest(secret), stored_digest)

    def __repr__(self) -> str:
        return "SecretDigester(pepper=<redacted>)"
