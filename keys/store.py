"""The domain's front door: one object that opens transactions and hands out services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from sqlalchemy.orm import Session

from keys.admin_tokens import AdminTokenService
from keys.audit import AuditTrail
from keys.db import Database
from keys.digests import SecretDigester
from keys.keyformat import KeyFormat
from keys.lifecycle import KeyService
from keys.testers import TesterService
from keys.videos import VideoLedger


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Transaction:
    """Services bound to one database transaction."""

    session: Session
    digester: SecretDigester
    key_format: KeyFormat
    token_format: KeyFormat
    clock: Callable[[], datetime]

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.session, self.clock)

    @cached_property
    def testers(self) -> TesterService:
        return TesterService(self.session, self.audit, self.clock)

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self.session, self.audit, self.digester, self.key_format, self.clock)

    @cached_property
    def tokens(self) -> AdminTokenService:
        return AdminTokenService(
            self.session, self.audit, self.digester, self.token_format, self.clock
        )

    @cached_property
    def videos(self) -> VideoLedger:
        return VideoLedger(self.session, self.clock)


class Store:
    def __init__(
        self,
        database: Database,
        digester: SecretDigester,
        key_format: KeyFormat,
        token_format: KeyFormat,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.digester = digester
        self.key_format = key_format
        self.token_format = token_format
        self.clock = clock

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        """Services in one transaction; committed when the block ends without error."""
        with self.database.session(write=write) as session:
            yield Transaction(
                session, self.digester, self.key_format, self.token_format, self.clock
            )

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction (takes no write lock on SQLite)."""
        return self.transaction(write=False)
