"""Tables of the domain. Secrets appear only as keyed digests and display hints."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from keys.db import Base, UTCDateTime


class Tester(Base):
    __tablename__ = "testers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    cohort: Mapped[str] = mapped_column(String(64), default="default")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class ApiKey(Base):
    """A tester's key. ``status`` is stored; expiry and the end of a grace period are read
    against the clock, so no job has to flip them."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tester_id: Mapped[str] = mapped_column(ForeignKey("testers.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    key_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    rotated_from_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    replaced_by_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    suspended_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class ProofKey(Base):
    """A tester's public key bound to one API key: with a binding, the key string alone is
    refused and every request must carry an RFC 9421 signature made with the private key,
    which never leaves the tester's machine (keys/access/proofs.py). At most one binding
    of a key is in force; removed ones stay for the record."""

    __tablename__ = "proof_keys"
    __table_args__ = (
        Index(
            "ux_proof_keys_in_force",
            "key_id",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    tester_id: Mapped[str] = mapped_column(ForeignKey("testers.id"), index=True)
    algorithm: Mapped[str] = mapped_column(String(32))
    public_key: Mapped[str] = mapped_column(Text)
    thumbprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ProofNonce(Base):
    """A proof's nonce, claimed once (keys/access/proof_replays.py): where Redis is not
    configured or not reachable, the database refuses a replayed proof on every worker and
    instance. Rows expire after twice the proof window and are swept as new ones arrive."""

    __tablename__ = "proof_nonces"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AdminToken(Base):
    """A credential for the admin, approver and auditor planes."""

    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Video(Base):
    """Ownership of an upstream object. Upstream, every video belongs to the one master
    credential; this row is what makes it one tester's. ``snapshot`` is the last object the
    upstream returned, so listing needs no upstream call for finished videos."""

    __tablename__ = "videos"
    __table_args__ = (
        Index("ix_videos_tester_created", "tester_id", "created_seq"),
        UniqueConstraint("upstream_id", name="uq_videos_upstream_id"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tester_id: Mapped[str] = mapped_column(ForeignKey("testers.id"))
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A strictly increasing order for keyset pagination: ``created_at`` can tie.
    created_seq: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The backend's id; differs from ``id`` for a held generation (None until approved).
    upstream_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # What the creation reserved, and whether it is still held, kept or given back.
    video_seconds: Mapped[int] = mapped_column(Integer, default=0)
    quota_periods: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    quota_state: Mapped[str] = mapped_column(String(16), default="none")


class AuditEntry(Base):
    """One link of the hash-chained audit trail."""

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(Base):
    """A signed statement "the chain's hash at ``seq`` was ``hash``"
    (keys/records/audit_signing.py).

    No foreign key to ``audit_entries``: a checkpoint whose entry is gone is evidence of a
    truncation, which verification reports instead of the database refusing the delete."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))


class ProgramState(Base):
    """One row: program-wide switches (the kill switch)."""

    __tablename__ = "program_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lockdown: Mapped[bool] = mapped_column(default=False)
    lockdown_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    lockdown_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lockdown_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CohortPolicy(Base):
    """A cohort's policy (limits, allowed values, prompt rules) as validated JSON."""

    __tablename__ = "cohort_policies"

    cohort: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))


class PolicyOverride(Base):
    """Per-tester changes on top of the cohort's policy."""

    __tablename__ = "policy_overrides"

    tester_id: Mapped[str] = mapped_column(ForeignKey("testers.id"), primary_key=True)
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))


class QuotaUsage(Base):
    """What a tester has used of one quota in one period ('' for no period, e.g. concurrent
    jobs). Reservations are conditional updates of ``used``, so no race can overspend."""

    __tablename__ = "quota_usage"

    tester_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageEvent(Base):
    """One tester request. Billable ones are written in the quota reservation's
    transaction; the rest are batched."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_tester_at", "tester_id", "at"),
        Index("ix_usage_key_at", "key_id", "at"),
        Index("ix_usage_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tester_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cohort: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(64))
    video_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    generations: Mapped[int] = mapped_column(Integer, default=0)
    video_seconds: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(nullable=True)
    upstream_latency_ms: Mapped[float | None] = mapped_column(nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)


class UsageDaily(Base):
    """Per-day, per-tester totals of ``usage_events``, changed in the same transaction as the
    events they count (keys/records/usage.py), so a daily report reads days x testers rows
    instead of every event. ``tester_id`` and ``cohort`` are '' for requests without a valid key."""

    __tablename__ = "usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tester_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cohort: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    generations: Mapped[int] = mapped_column(BigInteger, default=0)
    video_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    rejections: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageRefusal(Base):
    """Requests refused before a key was admitted (no key, an unknown or revoked key, a
    blocked address, a rate limit, ...), counted per UTC day instead of one usage event each:
    a flood of them grows this table by a row per (day, key, code, status, route, address),
    never per request (keys/records/usage.py). ``key_id`` is '' when no known key was
    presented, and ``client_ip`` is kept only with a known key (who still holds a revoked
    key), else ''."""

    __tablename__ = "usage_refusals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    error_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(8), primary_key=True)
    route: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Approval(Base):
    """A request held for an approver: a generation, a share, or a content download."""

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_status_created", "status", "created_at"),
        # The daily usage report counts decisions per day.
        Index("ix_approvals_decided_at", "decided_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    tester_id: Mapped[str] = mapped_column(ForeignKey("testers.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(32))
    video_id: Mapped[str] = mapped_column(String(128), index=True)
    held_because: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdempotencyRecord(Base):
    """A create or remix sent with an ``Idempotency-Key``: what it asked for and what came of
    it, so that a repeat gets the same video instead of a second generation (24 hours)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # SHA-256 of the client's header value: any text a client chose, stored at fixed size.
    key_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(40))
    # in_flight, done (video_id is set) or failed (error: a failure whose outcome upstream is
    # unknown, replayed to repeats).
    status: Mapped[str] = mapped_column(String(16))
    video_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Reservation(Base):
    """A creation whose quota is reserved while its upstream call is in flight.

    The row lives from the reservation until the outcome is recorded (a video row takes the
    quota over, or the quota is refunded). One left behind past ``lease_until`` means its
    worker died or lost its answer: the reconciler (keys/generations/reconcile.py) finds the
    upstream job by ``intent`` and adopts it, or refunds. ``video_id`` is set for the
    submission of an approved held video, whose quota the video row already carries.
    """

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_lease_until", "lease_until"),)

    request_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tester_id: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(32))
    video_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)
    # Which reconciler run holds the row past its lease (None: nobody).
    claimed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    generations: Mapped[int] = mapped_column(Integer, default=0)
    video_seconds: Mapped[int] = mapped_column(Integer, default=0)
    quota_periods: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # What was sent upstream (model, size, seconds, prompt, remix_of): how its job is found.
    intent: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ProvenanceSigner(Base):
    """One generation of the deployment's C2PA signing identity: an X.509 root and the
    signing certificate it issued, private keys encrypted with the root secret's Fernet key.
    The newest generation signs; every root ever made stays trusted for verification."""

    __tablename__ = "provenance_signers"

    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    # First 16 hex digits of SHA-256 over the signing certificate's DER: names it in manifests.
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    root_cert_pem: Mapped[str] = mapped_column(Text)
    root_key_encrypted: Mapped[str] = mapped_column(Text)
    cert_pem: Mapped[str] = mapped_column(Text)
    key_encrypted: Mapped[str] = mapped_column(Text)


class Delivery(Base):
    """One video that left the gateway (a download, a share link's or a console preview):
    who received it, what its manifest says, and the hashes that find it again."""

    __tablename__ = "provenance_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(String(40))
    route: Mapped[str] = mapped_column(String(16))
    video_id: Mapped[str] = mapped_column(String(128), index=True)
    tester_id: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(32))
    cohort: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recipient: Mapped[str] = mapped_column(String(200))
    downloading_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    approval_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    share_link_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    audit_seq: Mapped[int] = mapped_column(Integer)
    signer_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # None when signed; else why the bytes went out unchanged (docs/provenance.md).
    unsigned_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delivered_bytes: Mapped[int] = mapped_column(BigInteger)
    delivered_sha256: Mapped[str] = mapped_column(String(64), index=True)
    original_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # SHA-256 over the MP4's media data (its mdat payloads), which signing never changes.
    media_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
