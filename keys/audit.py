"""The audit trail: an append-only, hash-chained record of every admin, approver and system
action.

Each entry's hash is SHA-256 over the previous entry's hash and a canonical JSON encoding of
the entry, so editing, deleting, reordering or inserting a row breaks the chain at that row.
Appends are serialized (SQLite's write lock; a transaction-scoped advisory lock on
PostgreSQL) so concurrent workers can never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from keys.models import AuditEntry

GENESIS_HASH = "0" * 64
# Any constant works; it only has to be the same in every process.
_APPEND_LOCK_ID = 0x0D2A_B21D


def canonical_entry(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    reason: str | None,
    details: dict[str, Any],
) -> bytes:
    """The bytes an entry's hash covers (documented in docs/audit.md for offline checks)."""
    body = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
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


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify_entries(entries: Iterable[AuditEntry]) -> Verification:
    """Walk the chain in order; report the first entry that does not fit."""
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    for entry in entries:
        if entry.seq != expected_seq:
            return Verification(False, count, expected_seq, "missing or reordered entry")
        if entry.prev_hash != prev_hash:
            return Verification(False, count, entry.seq, "does not link to the previous entry")
        if entry.hash != entry_hash(entry):
            return Verification(False, count, entry.seq, "contents do not match their hash")
        prev_hash, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    return Verification(True, count)


class AuditTrail:
    """Appends to and reads the chain inside the caller's transaction."""

    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Add an entry at the head of the chain."""
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
        self._session.flush()
        return entry

    def entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries in chain order."""
        query = select(AuditEntry).where(AuditEntry.seq > after_seq).order_by(AuditEntry.seq)
        if limit is not None:
            query = query.limit(limit)
        return list(self._session.scalars(query))

    def verify(self) -> Verification:
        """Check the whole stored chain."""
        return verify_entries(
            self._session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).yield_per(1000)
        )
