"""The domain's front door: one object that opens transactions and hands out services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from sqlalchemy.orm import Session

from keys.access.admin_tokens import AdminTokenService
from keys.access.digests import SecretDigester
from keys.access.gate import VideoRef, check_key
from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import KeyService, Principal
from keys.access.proof_keys import ProofKeyService
from keys.access.testers import TesterService
from keys.approvals.decisions import ApprovalService
from keys.db import Database
from keys.generations.idempotency import IdempotencyKeys
from keys.generations.ledger import GenerationService
from keys.generations.videos import VideoLedger
from keys.leaks.leaked_keys import LeakService
from keys.leaks.lockdown import LockdownSwitch
from keys.limits.cohorts import CohortPolicies
from keys.limits.quotas import QuotaService
from keys.provenance.deliveries import DeliveryIndex
from keys.provenance.identity import ProvenanceSigners
from keys.records.audit import AuditTrail, CheckpointPolicy
from keys.records.audit_signing import AuditSigner
from keys.records.usage import UsageLog
from keys.records.usage_reports import UsageReports


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
    audit_signer: AuditSigner | None = None
    checkpoint_policy: CheckpointPolicy | None = None

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.session, self.clock, self.audit_signer, self.checkpoint_policy)

    @cached_property
    def testers(self) -> TesterService:
        return TesterService(self.session, self.audit, self.clock)

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self.session, self.audit, self.digester, self.key_format, self.clock)

    @cached_property
    def proof_keys(self) -> ProofKeyService:
        return ProofKeyService(self.session, self.audit, self.clock)

    @cached_property
    def leaks(self) -> LeakService:
        return LeakService(self.session, self.audit, self.digester, self.key_format, self.clock)

    @cached_property
    def tokens(self) -> AdminTokenService:
        return AdminTokenService(
            self.session, self.audit, self.digester, self.token_format, self.clock
        )

    @cached_property
    def videos(self) -> VideoLedger:
        return VideoLedger(self.session, self.clock)

    @cached_property
    def quotas(self) -> QuotaService:
        return QuotaService(self.session, self.clock)

    @cached_property
    def policies(self) -> CohortPolicies:
        return CohortPolicies(self.session, self.audit, self.clock)

    @cached_property
    def lockdown(self) -> LockdownSwitch:
        return LockdownSwitch(self.session, self.audit, self.clock)

    @cached_property
    def usage(self) -> UsageLog:
        return UsageLog(self.session)

    @cached_property
    def usage_reports(self) -> UsageReports:
        return UsageReports(self.session, self.clock)

    @cached_property
    def approvals(self) -> ApprovalService:
        return ApprovalService(self.session, self.audit, self.clock)

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.session, self.clock)

    @cached_property
    def provenance_signers(self) -> ProvenanceSigners:
        return ProvenanceSigners(self.session, self.audit, self.clock)

    @cached_property
    def deliveries(self) -> DeliveryIndex:
        return DeliveryIndex(self.session, self.clock)

    @cached_property
    def generations(self) -> GenerationService:
        return GenerationService(
            self.session, self.clock, self.videos, self.quotas, self.approvals, self.usage
        )


class Store:
    def __init__(
        self,
        database: Database,
        digester: SecretDigester,
        key_format: KeyFormat,
        token_format: KeyFormat,
        clock: Callable[[], datetime] = utcnow,
        audit_signer: AuditSigner | None = None,
        checkpoint_policy: CheckpointPolicy | None = None,
    ) -> None:
        self.database = database
        self.digester = digester
        self.key_format = key_format
        self.token_format = token_format
        self.clock = clock
        # Signs audit checkpoints; without one, appends store none.
        self.audit_signer = audit_signer
        self.checkpoint_policy = checkpoint_policy

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        """Services in one transaction; committed when the block ends without error."""
        with self.database.session(write=write) as session:
            yield Transaction(
                session,
                self.digester,
                self.key_format,
                self.token_format,
                self.clock,
                self.audit_signer,
                self.checkpoint_policy,
            )

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction (takes no write lock on SQLite)."""
        return self.transaction(write=False)

    def check_key(
        self, secret: str, video_id: str | None = None
    ) -> tuple[Principal, VideoRef | None]:
        """The hot path's one read: the key's principal and the video the request names."""
        return check_key(
            self.database, secret, self.digester, self.key_format, self.clock(), video_id
        )
