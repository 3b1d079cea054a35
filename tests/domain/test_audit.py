"""The hash-chained audit trail: any edit, deletion, reordering or insertion is found."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
from sqlalchemy import delete, text, update

from keys.models import AuditEntry
from keys.records.audit import GENESIS_HASH, entry_hash
from keys.store import Store

pytestmark = pytest.mark.both_databases


@pytest.fixture
def trail(store: Store) -> Store:
    with store.transaction() as tx:
        for number in range(1, 7):
            tx.audit.append("admin:alice", "key.revoke", f"key_{number}", reason=f"reason {number}")
    return store


def verify(store: Store) -> tuple[bool, int | None]:
    with store.read() as tx:
        result = tx.audit.verify()
    return result.ok, result.first_bad_seq


def tamper(store: Store, statement: object) -> None:
    with store.transaction() as tx:
        tx.session.execute(statement)  # type: ignore[call-overload]


def test_untouched_trail_verifies(trail: Store) -> None:
    assert verify(trail) == (True, None)
    with trail.read() as tx:
        entries = tx.audit.entries()
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(entries))
    assert all(entry.hash == entry_hash(entry) for entry in entries)


def test_edited_reason_is_found_at_its_seq(trail: Store) -> None:
    tamper(trail, update(AuditEntry).where(AuditEntry.seq == 4).values(reason="nothing to see"))
    assert verify(trail) == (False, 4)


def test_edited_actor_with_recomputed_hash_breaks_the_next_link(trail: Store) -> None:
    with trail.transaction() as tx:
        entry = tx.session.get(AuditEntry, 3)
        assert entry is not None
        entry.actor = "admin:mallory"
        entry.hash = entry_hash(entry)
    assert verify(trail) == (False, 4)


def test_deleted_row_is_found(trail: Store) -> None:
    tamper(trail, delete(AuditEntry).where(AuditEntry.seq == 2))
    assert verify(trail) == (False, 2)


def test_reordered_rows_are_found(trail: Store) -> None:
    # Swap the contents of 2 and 3 (hashes included), keeping the sequence numbers.
    with trail.transaction() as tx:
        two, three = tx.session.get(AuditEntry, 2), tx.session.get(AuditEntry, 3)
        assert two is not None and three is not None
        fields = ("at", "actor", "action", "target", "reason", "details", "prev_hash")
        values = (
            {name: getattr(two, name) for name in fields},
            {name: getattr(three, name) for name in fields},
        )
        hashes = two.hash, three.hash
        two.hash, three.hash = "x" * 64, "y" * 64
        tx.session.flush()
        for name in fields:
            setattr(two, name, values[1][name])
            setattr(three, name, values[0][name])
        two.hash, three.hash = hashes[1], hashes[0]
    assert verify(trail) == (False, 2)


def test_inserted_row_is_found(trail: Store) -> None:
    tamper(trail, update(AuditEntry).values(seq=AuditEntry.seq + 100).where(AuditEntry.seq >= 4))
    tamper(trail, update(AuditEntry).values(seq=AuditEntry.seq - 99).where(AuditEntry.seq >= 100))
    with trail.transaction() as tx:
        tx.session.execute(
            text(
                "INSERT INTO audit_entries (seq, at, actor, action, target, reason, details, "
                "prev_hash, hash) SELECT 4, at, actor, 'key.issue', 'key_x', NULL, details, "
                "hash, :h FROM audit_entries WHERE seq = 3"
            ),
            {"h": "f" * 64},
        )
    assert verify(trail) == (False, 4)


def test_appends_continue_the_chain(trail: Store, make_key: Callable[..., object]) -> None:
    make_key()
    assert verify(trail) == (True, None)
