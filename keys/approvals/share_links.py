"""Signed, expiring public links to an approved share: ``/s/<token>``.

The token carries the share's id and expiry and an HMAC-SHA256 tag under a key derived from
the root secret, so it cannot be forged or extended; the database is still consulted on use,
so a share can be withdrawn before its link expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from keys.errors import InvalidShareLink, ShareLinkExpired

TAG_BYTES = 20
SHARE_LINK_PURPOSE = "drawbridge/share-links/v1"


@dataclass(frozen=True)
class ShareLink:
    approval_id: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ShareLinkSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:TAG_BYTES]

    def token(self, approval_id: str, expires_at: datetime) -> str:
        payload = f"{approval_id}.{int(expires_at.timestamp())}".encode()
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def verify(self, token: str, now: datetime) -> ShareLink:
        """Raises InvalidShareLink (forged, tampered, malformed) or ShareLinkExpired."""
        try:
            payload_text, tag_text = token.split(".")
            payload, tag = _unb64(payload_text), _unb64(tag_text)
            approval_id, expires_text = payload.decode("ascii").rsplit(".", 1)
            expires_at = datetime.fromtimestamp(int(expires_text), UTC)
        except (ValueError, UnicodeDecodeError):
            raise InvalidShareLink("This share link is not valid.") from None
        # One token per link: base64's spare bits (the last character can change without
        # changing the bytes) must not yield a second, equally valid spelling.
        if _b64(payload) != payload_text or _b64(tag) != tag_text:
            raise InvalidShareLink("This share link is not valid.")
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise InvalidShareLink("This share link is not valid.")
        if now >= expires_at:
            raise ShareLinkExpired("This share link has expired.")
        return ShareLink(approval_id, expires_at)
