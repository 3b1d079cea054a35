"""Public identifiers of domain objects: a kind prefix and 16 random base62 characters."""

from __future__ import annotations

import secrets

from keys.access.keyformat import BASE62


def new_id(kind: str) -> str:
    """A new identifier such as ``key_4fJ8...``; never secret, safe to log."""
    return f"{kind}_" + "".join(secrets.choice(BASE62) for _ in range(16))
