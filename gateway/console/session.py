"""Console sessions: a signed cookie that names a verified admin token or tester key by id.

The cookie never holds a secret. It carries the credential's id, a random session id and
the time of the last request, signed with a key derived from the vault, so it cannot be
forged or extended by the browser. The credential itself is checked again on every request
(``gateway/console/access.py``): revoking a token or key logs its sessions out at once.
Forms carry a CSRF token derived from the session id; SameSite=Strict is the second wall.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from keys.models import ApiKey, Tester

SESSION_PURPOSE = "drawbridge/console-session/v1"
COOKIE = "drawbridge_console"
COOKIE_PATH = "/console"
# A console left alone this long signs out; an admin's browser is a target worth guarding.
IDLE_LIMIT = timedelta(minutes=15)
# However busy, a session is signed in again after this long.
ABSOLUTE_LIMIT = timedelta(hours=12)
KINDS = ("anonymous", "operator", "tester")


@dataclass(frozen=True)
class ConsoleSession:
    """Who the browser says it is: ``kind`` and the credential's id (never its secret)."""

    kind: str
    subject: str
    sid: str
    started: int
    seen: int
    notice: str = ""

    @property
    def signed_in(self) -> bool:
        return self.kind != "anonymous"


def anonymous(now: datetime) -> ConsoleSession:
    """A fresh session for a visitor who has not signed in (it still has a CSRF token)."""
    stamp = int(now.timestamp())
    return ConsoleSession("anonymous", "", secrets.token_urlsafe(18), stamp, stamp)


def signed_in(kind: str, subject: str, now: datetime) -> ConsoleSession:
    """A new session (a new session id: nothing of the anonymous one carries over)."""
    return replace(anonymous(now), kind=kind, subject=subject)


class SessionCodec:
    """Signs and reads session cookies, and derives their CSRF tokens."""

    def __init__(self, key: bytes) -> None:
        self._serializer = URLSafeSerializer(key, salt="console-session")
        self._csrf_key = hashlib.sha256(b"csrf" + key).digest()

    def dumps(self, session: ConsoleSession) -> str:
        return str(
            self._serializer.dumps(
                [
                    session.kind,
                    session.subject,
                    session.sid,
                    session.started,
                    session.seen,
                    session.notice,
                ]
            )
        )

    def loads(self, value: str | None, now: datetime) -> ConsoleSession | None:
        """The session of a cookie, or None when it is missing, forged, malformed or idle."""
        if not value:
            return None
        try:
            fields: Any = self._serializer.loads(value)
        except BadSignature:
            return None
        if not isinstance(fields, list) or len(fields) != 6:
            return None
        kind, subject, sid, started, seen, notice = fields
        if kind not in KINDS or not all(isinstance(v, str) for v in (subject, sid, notice)):
            return None
        if not isinstance(started, int) or not isinstance(seen, int):
            return None
        stamp = now.timestamp()
        if stamp - seen > IDLE_LIMIT.total_seconds():
            return None
        if stamp - started > ABSOLUTE_LIMIT.total_seconds():
            return None
        return ConsoleSession(kind, subject, sid, started, seen, notice)

    def csrf_token(self, session: ConsoleSession) -> str:
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: ConsoleSession, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), token or "")


@dataclass(frozen=True)
class TesterSession:
    """A tester signed in with one of their keys (checked again on this request)."""

    key: ApiKey
    tester: Tester
