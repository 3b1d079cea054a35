"""The audit trail: an append-only, hash-chained record of every admin, approver and system
action, with signed checkpoints that make it verifiable from outside.

Each entry's hash is SHA-256 over the previous entry's hash and a canonical JSON encoding of
the entry, so editing, deleting, reordering or inserting a row breaks the chain at that row.
Appends are serialized (SQLite's write lock; a transaction-scoped advisory lock on
PostgreSQL) so concurrent workers can never fork the chain.

The chain alone only proves internal consistency: whoever can write the table can rewrite
every hash after an edit. So every ``CheckpointPolicy.every`` entries, or when the last
checkpoint is ``CheckpointPolicy.seconds`` old, the append also stores a checkpoint: the
chain's hash at that seq, signed with an Ed25519 key derived from the root secret
(keys/records/audit_signing.py). A rewrite then contradicts a signature nobody without the root
secret can redo, and a copy of the checkpoints held outside (an export) also exposes
entries cut off the end. The byte-exact encodings are documented in docs/audit.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from keys.models import AuditCheckpoint, AuditEntry
from keys.records.audit_signing import AuditSigner, AuditVerifier

GENESIS_HASH = "0" * 64
CHECKPOINT_DOMAIN = "drawbridge-audit-checkpoint/v1"
# Any constant works; it only has to be the same in every process.
_APPEND_LOCK_ID = 0x0D2A_B21D
_STREAM_BATCH = 1000


def canonical_time(at: datetime) -> str:
    """A timestamp as the encodings carry it: UTC, microseconds, ``+00:00``."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_entry(
    seq: int,
    at: datetime | str,
    actor: str,
    action: str,
    target: str,
    reason: str | None,
    details: dict[str, Any],
) -> bytes:
    """The bytes an entry's hash covers (documented in docs/audit.md for offline checks).

    ``at`` is a datetime, or the text ``canonical_time`` made of one."""
    body = {
        "seq": seq,
        "at": at if isinstance(at, str) else canonical_time(at),
        "actor": actor,
        "action": action,
        "target": target,
        "reason": reason,
        "details": details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """SHA-256 of the previous hash and the entry's canonical bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical).hexdigest()


def entry_hash(entry: AuditEntry) -> str:
    """Recompute the hash a stored entry should have."""
    canonical = canonical_entry(
        entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.reason, entry.details
    )
    return chain_hash(entry.prev_hash, canonical)


def checkpoint_message(seq: int, hash: str, at: str, key_id: str) -> bytes:
    """The bytes a checkpoint's signature covers (documented in docs/audit.md)."""
    lines = (CHECKPOINT_DOMAIN, f"seq={seq}", f"hash={hash}", f"at={at}", f"key_id={key_id}")
    return "".join(line + "\n" for line in lines).encode()


@dataclass(frozen=True)
class ChainLink:
    """An entry as verification sees it, ``at`` already in its canonical text. The same
    fields, in this order, are a line of an export's entries.jsonl."""

    seq: int
    at: str
    actor: str
    action: str
    target: str
    reason: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, entry: AuditEntry) -> ChainLink:
        return cls(
            entry.seq,
            canonical_time(entry.at),
            entry.actor,
            entry.action,
            entry.target,
            entry.reason,
            entry.details,
            entry.prev_hash,
            entry.hash,
        )

    def computed_hash(self) -> str:
        canonical = canonical_entry(
            self.seq, self.at, self.actor, self.action, self.target, self.reason, self.details
        )
        return chain_hash(self.prev_hash, canonical)

    def as_record(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as it travels: a line of checkpoints.jsonl, an item of the admin API."""

    seq: int
    hash: str
    at: str
    key_id: str
    signature: str

    @classmethod
    def of(cls, checkpoint: AuditCheckpoint) -> SignedCheckpoint:
        return cls(
            checkpoint.seq,
            checkpoint.hash,
            canonical_time(checkpoint.at),
            checkpoint.key_id,
            checkpoint.signature,
        )

    def message(self) -> bytes:
        return checkpoint_message(self.seq, self.hash, self.at, self.key_id)

    def as_record(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(frozen=True)
class Anchor:
    """A hash the chain must have at ``seq``, known from outside the database (an earlier
    export). ``source`` says where it came from, for the report."""

    seq: int
    hash: str
    source: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoints: int = 0
    # The seq of the last verified checkpoint: entries after it are vouched for by the
    # chain alone, until the next checkpoint signs them.
    covered_seq: int = 0
    anchors: int = 0
    # The public key checkpoints were checked with.
    key_id: str | None = None


def _signature_problem(checkpoint: SignedCheckpoint, verifier: AuditVerifier | None) -> str | None:
    if verifier is None:
        return "no public key to check the checkpoint's signature with"
    if checkpoint.key_id != verifier.key_id:
        return f"checkpoint signed by key {checkpoint.key_id}, not by {verifier.key_id}"
    if not verifier.verify(checkpoint.message(), checkpoint.signature):
        return "checkpoint signature does not verify"
    return None


def verify_chain(
    links: Iterable[ChainLink],
    checkpoints: Iterable[SignedCheckpoint] = (),
    verifier: AuditVerifier | None = None,
    anchors: Iterable[Anchor] = (),
) -> Verification:
    """Walk the chain in seq order, checking each checkpoint (ascending seq) and anchor as the
    walk reaches its seq; report the first seq that does not fit. Memory stays flat."""
    pending_checkpoints = iter(checkpoints)
    pending_anchors = iter(sorted(anchors, key=lambda anchor: anchor.seq))
    checkpoint = next(pending_checkpoints, None)
    anchor = next(pending_anchors, None)
    expected_seq, prev_hash = 1, GENESIS_HASH
    count = signed = covered = anchored = 0

    key_id = verifier.key_id if verifier is not None else None

    def failed(seq: int, problem: str) -> Verification:
        return Verification(False, count, seq, problem, signed, covered, anchored, key_id)

    for link in links:
        if link.seq != expected_seq:
            return failed(expected_seq, "missing or reordered entry")
        if link.prev_hash != prev_hash:
            return failed(link.seq, "does not link to the previous entry")
        if link.hash != link.computed_hash():
            return failed(link.seq, "contents do not match their hash")
        count += 1
        while checkpoint is not None and checkpoint.seq <= link.seq:
            if checkpoint.seq != link.seq:
                return failed(checkpoint.seq, "checkpoint out of seq order or duplicated")
            problem = _signature_problem(checkpoint, verifier)
            if problem is None and checkpoint.hash != link.hash:
                problem = "the chain's hash differs from the signed checkpoint: rewritten"
            if problem is not None:
                return failed(checkpoint.seq, problem)
            signed, covered = signed + 1, checkpoint.seq
            checkpoint = next(pending_checkpoints, None)
        while anchor is not None and anchor.seq <= link.seq:
            if anchor.seq != link.seq or anchor.hash != link.hash:
                return failed(anchor.seq, f"the chain's hash differs from the {anchor.source}")
            anchored += 1
            anchor = next(pending_anchors, None)
        prev_hash, expected_seq = link.hash, expected_seq + 1

    head = expected_seq - 1
    if checkpoint is not None:
        problem = _signature_problem(checkpoint, verifier) or (
            f"a signed checkpoint exists for seq {checkpoint.seq} but the chain ends at seq "
            f"{head}: entries were removed"
        )
        return failed(checkpoint.seq, problem)
    if anchor is not None:
        return failed(
            anchor.seq,
            f"the chain ends at seq {head}, before the {anchor.source} at seq {anchor.seq}: "
            "entries were removed",
        )
    return Verification(True, count, None, None, signed, covered, anchored, key_id)


def verify_entries(entries: Iterable[AuditEntry]) -> Verification:
    """Walk the chain alone (no checkpoints) in order; report the first entry that does not
    fit."""
    return verify_chain(ChainLink.of(entry) for entry in entries)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When an append also signs a checkpoint: every ``every`` seqs, and whenever the last
    checkpoint is ``seconds`` old (checked at append time; no background job)."""

    every: int = 100
    seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"audit checkpoints: every must be at least 1, not {self.every}")
        if self.seconds < 0:
            raise ValueError(f"audit checkpoints: seconds must be 0 or more, not {self.seconds}")


@dataclass(frozen=True)
class TrailSnapshot:
    """The stored trail streamed in seq order. Checkpoints are queried before entries: on
    PostgreSQL each statement sees its own snapshot, and a checkpoint commits with its
    entry, so every checkpoint read here has its entry in the entries read here."""

    checkpoints: Iterator[SignedCheckpoint]
    entries: Iterator[ChainLink]


class AuditTrail:
    """Appends to and reads the chain inside the caller's transaction. Without a signer,
    appends store no checkpoints."""

    def __init__(
        self,
        session: Session,
        clock: Callable[[], datetime],
        signer: AuditSigner | None = None,
        policy: CheckpointPolicy | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self._signer = signer
        self._policy = policy or CheckpointPolicy()

    @property
    def signer(self) -> AuditSigner | None:
        return self._signer

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Add an entry at the head of the chain, and a signed checkpoint when one is due."""
        if self._session.get_bind().dialect.name == "postgresql":
            self._session.execute(
                text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _APPEND_LOCK_ID}
            )
        head = self._session.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        ).first()
        seq, prev_hash = (head.seq + 1, head.hash) if head else (1, GENESIS_HASH)
        at = self._clock()
        details = details or {}
        entry = AuditEntry(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            target=target,
            reason=reason,
            details=details,
            prev_hash=prev_hash,
            hash=chain_hash(
                prev_hash, canonical_entry(seq, at, actor, action, target, reason, details)
            ),
        )
        self._session.add(entry)
        if self._signer is not None and self._checkpoint_due(seq, at):
            self._session.add(self._sign(self._signer, seq, entry.hash, at))
        self._session.flush()
        return entry

    def _checkpoint_due(self, seq: int, at: datetime) -> bool:
        if seq % self._policy.every == 0:
            return True
        since = self._session.scalar(
            select(AuditCheckpoint.at).order_by(AuditCheckpoint.seq.desc()).limit(1)
        )
        if since is None:
            # Before the first checkpoint, age counts from the start of the trail: a trail
            # older than the checkpoints feature gets signed at its next append.
            since = self._session.scalar(select(AuditEntry.at).order_by(AuditEntry.seq).limit(1))
        return (at - (since or at)).total_seconds() >= self._policy.seconds

    @staticmethod
    def _sign(signer: AuditSigner, seq: int, hash: str, at: datetime) -> AuditCheckpoint:
        message = checkpoint_message(seq, hash, canonical_time(at), signer.key_id)
        return AuditCheckpoint(
            seq=seq, hash=hash, at=at, key_id=signer.key_id, signature=signer.sign(message)
        )

    def entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries in chain order."""
        query = select(AuditEntry).where(AuditEntry.seq > after_seq).order_by(AuditEntry.seq)
        if limit is not None:
            query = query.limit(limit)
        return list(self._session.scalars(query))

    def latest(self, limit: int, actions: Sequence[str] | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries (of ``actions``, when given), newest first."""
        query = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
        if actions is not None:
            query = query.where(AuditEntry.action.in_(actions))
        return list(self._session.scalars(query))

    def checkpoints(self, after_seq: int = 0, limit: int | None = None) -> list[SignedCheckpoint]:
        """Signed checkpoints in seq order."""
        query = (
            select(AuditCheckpoint)
            .where(AuditCheckpoint.seq > after_seq)
            .order_by(AuditCheckpoint.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        return [SignedCheckpoint.of(checkpoint) for checkpoint in self._session.scalars(query)]

    def snapshot(self) -> TrailSnapshot:
        """Stream checkpoints and entries (flat memory, ``yield_per``)."""
        checkpoints = self._session.scalars(
            select(AuditCheckpoint)
            .order_by(AuditCheckpoint.seq)
            .execution_options(yield_per=_STREAM_BATCH)
        )
        entries = self._session.scalars(
            select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=_STREAM_BATCH)
        )
        return TrailSnapshot(
            (SignedCheckpoint.of(checkpoint) for checkpoint in checkpoints),
            (ChainLink.of(entry) for entry in entries),
        )

    def verify(
        self, anchors: Iterable[Anchor] = (), verifier: AuditVerifier | None = None
    ) -> Verification:
        """Check the stored chain, every checkpoint's signature (with ``verifier``, by default
        the signer's public key) and hash, and the ``anchors`` known from outside."""
        if verifier is None and self._signer is not None:
            verifier = self._signer.verifier
        snapshot = self.snapshot()
        return verify_chain(snapshot.entries, snapshot.checkpoints, verifier, anchors)
