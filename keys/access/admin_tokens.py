"""Admin tokens: credentials for the admin, approver and auditor planes."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys.access.digests import SecretDigester
from keys.access.keyformat import KeyFormat
from keys.access.roles import ROLES
from keys.errors import Conflict, InvalidInput, InvalidKey, KeyRejected, NotFound
from keys.ids import new_id
from keys.models import AdminToken
from keys.pages import keyset_page
from keys.records.audit import AuditTrail
from keys.text import checked_text, clean_text


@dataclass(frozen=True)
class IssuedToken:
    secret: str
    token: AdminToken


@dataclass(frozen=True)
class Operator:
    """A verified admin token: who acts, and in which role."""

    token_id: str
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How this operator appears in records: role, token id and name."""
        return f"{self.role}:{self.token_id}:{self.name}"


class AdminTokenService:
    def __init__(
        self,
        session: Session,
        audit: AuditTrail,
        digester: SecretDigester,
        token_format: KeyFormat,
        clock: Callable[[], datetime],
    ) -> None:
        self._session = session
        self._audit = audit
        self._digester = digester
        self._format = token_format
        self._clock = clock

    def create(
        self, name: str, role: str, actor: str, expires_at: datetime | None = None
    ) -> IssuedToken:
        """Create a token; the secret is returned once. Raises InvalidInput."""
        name = checked_text(name, "name", 200)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}", param="role")
        if not name or len(name) > 200:
            raise InvalidInput("name must be 1-200 characters", param="name")
        if expires_at is not None and expires_at <= self._clock():
            raise InvalidInput("expires_at must be in the future", param="expires_at")
        secret = self._format.generate()
        token = AdminToken(
            id=new_id("adm"),
            name=name,
            role=role,
            digest=self._digester.digest(secret),
            hint=self._format.hint(secret),
            created_at=self._clock(),
            created_by=actor,
            expires_at=expires_at,
        )
        self._session.add(token)
        self._session.flush()
        self._audit.append(actor, "token.create", token.id, details={"role": role, "name": name})
        return IssuedToken(secret, token)

    def revoke(self, token_id: str, actor: str, reason: str) -> AdminToken:
        """Raises NotFound, Conflict (already revoked)."""
        token = self._session.get(AdminToken, token_id, with_for_update=True)
        if token is None:
            raise NotFound(f"no admin token {token_id}")
        if token.revoked_at is not None:
            raise Conflict(f"{token_id} is already revoked", code="token_state")
        token.revoked_at, token.revoked_by = self._clock(), actor
        self._session.flush()
        # Cleaned, never refused: the token is revoked whatever the reason holds.
        self._audit.append(actor, "token.revoke", token.id, clean_text(reason or "", 2000) or None)
        return token

    def list(self) -> list[AdminToken]:
        return self.page()[0]

    def page(
        self, after: str | None = None, limit: int | None = None
    ) -> tuple[builtins.list[AdminToken], bool]:
        """Tokens oldest first, after the token ``after``; and whether more follow.
        Raises NotFound (an unknown ``after``)."""
        return keyset_page(self._session, select(AdminToken), AdminToken, after, limit, "token")

    def verify(self, secret: str) -> Operator:
        """Raises InvalidKey (malformed or unknown), KeyRejected (revoked or expired)."""
        if not self._format.is_well_formed(secret):
            raise InvalidKey("Malformed admin token.", code="invalid_admin_token")
        token = self._session.scalars(
            select(AdminToken).where(AdminToken.digest == self._digester.digest(secret))
        ).first()
        if token is None or not self._digester.matches(secret, token.digest):
            raise InvalidKey("Unknown admin token.", code="invalid_admin_token")
        return self._usable(token)

    def operator(self, token_id: str) -> Operator:
        """The operator of a token verified earlier (a console session), checked again now.

        Raises InvalidKey (no such token), KeyRejected (revoked or expired since)."""
        token = self._session.get(AdminToken, token_id)
        if token is None:
            raise InvalidKey("Unknown admin token.", code="invalid_admin_token")
        return self._usable(token)

    def _usable(self, token: AdminToken) -> Operator:
        if token.revoked_at is not None:
            raise KeyRejected("This admin token has been revoked.", code="token_revoked")
        if token.expires_at is not None and self._clock() >= token.expires_at:
            raise KeyRejected("This admin token has expired.", code="token_expired")
        return Operator(token.id, token.name, token.role)
