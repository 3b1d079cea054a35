"""The key lifecycle, on SQLite and PostgreSQL: issue, verify, rotate, suspend, revoke."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from keys.access.lifecycle import IssuedKey, effective_status
from keys.errors import Conflict, InvalidInput, InvalidKey, KeyRejected, NotFound
from keys.models import ApiKey, AuditEntry, Tester
from keys.store import Store
from tests.helpers import FakeClock

pytestmark = pytest.mark.both_databases

MakeKey = Callable[..., IssuedKey]


def verify(store: Store, secret: str) -> str:
    with store.read() as tx:
        return tx.keys.verify(secret).key_id


def rejection(store: Store, secret: str) -> str:
    with pytest.raises(KeyRejected) as caught:
        verify(store, secret)
    return caught.value.code


def test_issue_returns_the_secret_once_and_stores_only_a_digest(
    store: Store, make_key: MakeKey
) -> None:
    issued = make_key(metadata={"purpose": "red team"})
    assert issued.secret.startswith("drwb_")
    with store.read() as tx:
        row = tx.session.get(ApiKey, issued.key.id)
        assert row is not None
        assert issued.secret not in (row.digest, row.hint)
        assert row.digest == store.digester.digest(issued.secret)
        assert row.hint == f"drwb_...{issued.secret[-4:]}"
        assert row.key_metadata == {"purpose": "red team"}
        assert row.created_by == "test:setup"


def test_verify_returns_the_principal(store: Store, make_key: MakeKey) -> None:
    issued = make_key()
    with store.read() as tx:
        principal = tx.keys.verify(issued.secret)
    assert (principal.key_id, principal.tester_id) == (issued.key.id, issued.key.tester_id)
    assert principal.cohort == "default"


def test_unknown_and_malformed_keys_are_invalid(store: Store, make_key: MakeKey) -> None:
    make_key()
    other = store.key_format.generate()
    for candidate in (other, other[:-1] + ("A" if other[-1] != "A" else "B"), "sk-123", ""):
        with pytest.raises(InvalidKey), store.read() as tx:
            tx.keys.verify(candidate)


def test_issue_refuses_unknown_testers_past_expiry_and_bad_metadata(
    store: Store, make_key: MakeKey, clock: FakeClock, make_tester: Callable[..., Tester]
) -> None:
    with pytest.raises(NotFound), store.transaction() as tx:
        tx.keys.issue("tst_nobody", "test")
    tester = make_tester()
    for bad in (
        {"expires_at": clock() - timedelta(seconds=1)},
        {"metadata": {"x": 1}},
        {"metadata": {str(i): "v" for i in range(21)}},
        {"metadata": {"": "v"}},
    ):
        with pytest.raises(InvalidInput), store.transaction() as tx:
            tx.keys.issue(tester.id, "test", **bad)


def test_revoked_key_is_refused_with_reason_actor_and_time(
    store: Store, make_key: MakeKey, clock: FakeClock
) -> None:
    issued = make_key()
    with store.transaction() as tx:
        tx.keys.revoke(issued.key.id, "admin:alice", "posted on a forum")
    assert rejection(store, issued.secret) == "key_revoked"
    with store.read() as tx:
        key = tx.keys.get(issued.key.id)
    assert (key.status, key.revoked_by, key.revoked_reason) == (
        "revoked",
        "admin:alice",
        "posted on a forum",
    )
    assert key.revoked_at == clock()


def test_revoke_needs_a_reason_and_happens_once(store: Store, make_key: MakeKey) -> None:
    issued = make_key()
    with pytest.raises(InvalidInput), store.transaction() as tx:
        tx.keys.revoke(issued.key.id, "admin", "   ")
    assert verify(store, issued.secret) == issued.key.id
    with store.transaction() as tx:
        tx.keys.revoke(issued.key.id, "admin", "leak")
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.keys.revoke(issued.key.id, "admin", "again")
    with store.read() as tx:
        assert tx.keys.get(issued.key.id).revoked_reason == "leak"


def test_rotation_keeps_the_old_secret_until_grace_ends(
    store: Store, make_key: MakeKey, clock: FakeClock
) -> None:
    old = make_key(metadata={"team": "blue"})
    with store.transaction() as tx:
        new = tx.keys.rotate(old.key.id, "admin", timedelta(hours=1))
    assert new.secret != old.secret
    assert verify(store, new.secret) == new.key.id
    assert verify(store, old.secret) == old.key.id
    clock.advance(minutes=59)
    assert verify(store, old.secret) == old.key.id
    clock.advance(minutes=1)
    assert rejection(store, old.secret) == "key_rotated"
    assert verify(store, new.secret) == new.key.id
    with store.read() as tx:
        old_row, new_row = tx.keys.get(old.key.id), tx.keys.get(new.key.id)
    assert old_row.replaced_by_id == new_row.id and new_row.rotated_from_id == old_row.id
    assert new_row.key_metadata == {"team": "blue"}


def test_rotation_with_zero_grace_refuses_the_old_secret_at_once(
    store: Store, make_key: MakeKey
) -> None:
    old = make_key()
    with store.transaction() as tx:
        tx.keys.rotate(old.key.id, "admin", timedelta(0))
    assert rejection(store, old.secret) == "key_rotated"


def test_rotation_refuses_bad_grace_and_non_active_keys(store: Store, make_key: MakeKey) -> None:
    issued = make_key()
    for grace in (timedelta(seconds=-1), timedelta(days=31)):
        with pytest.raises(InvalidInput), store.transaction() as tx:
            tx.keys.rotate(issued.key.id, "admin", grace)
    with store.transaction() as tx:
        tx.keys.rotate(issued.key.id, "admin", timedelta(hours=1))
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.keys.rotate(issued.key.id, "admin", timedelta(hours=1))


def test_expired_key_is_refused(store: Store, make_key: MakeKey, clock: FakeClock) -> None:
    issued = make_key(expires_at=clock() + timedelta(days=1))
    assert verify(store, issued.secret) == issued.key.id
    clock.advance(days=1)
    assert rejection(store, issued.secret) == "key_expired"
    with store.read() as tx:
        assert effective_status(tx.keys.get(issued.key.id), clock()) == "expired"


def test_suspend_and_resume(store: Store, make_key: MakeKey) -> None:
    issued = make_key()
    with store.transaction() as tx:
        tx.keys.suspend(issued.key.id, "admin", "odd traffic")
    assert rejection(store, issued.secret) == "key_suspended"
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.keys.suspend(issued.key.id, "admin", "again")
    with store.transaction() as tx:
        tx.keys.resume(issued.key.id, "admin")
    assert verify(store, issued.secret) == issued.key.id
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.keys.resume(issued.key.id, "admin")


def test_revoked_key_cannot_be_resumed(store: Store, make_key: MakeKey) -> None:
    issued = make_key()
    with store.transaction() as tx:
        tx.keys.suspend(issued.key.id, "admin", "check")
        tx.keys.revoke(issued.key.id, "admin", "confirmed leak")
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.keys.resume(issued.key.id, "admin")
    assert rejection(store, issued.secret) == "key_revoked"


def test_revoke_every_key_of_a_tester_leaves_others_alone(
    store: Store, make_key: MakeKey, make_tester: Callable[..., Tester]
) -> None:
    tester = make_tester()
    first = make_key(tester.id)
    second = make_key(tester.id)
    bystander = make_key()
    with store.transaction() as tx:
        tx.keys.revoke(first.key.id, "admin", "earlier")
        revoked = tx.keys.revoke_all_for_tester(tester.id, "admin", "tester left")
    assert revoked == [second.key.id]
    assert rejection(store, first.secret) == rejection(store, second.secret) == "key_revoked"
    assert verify(store, bystander.secret) == bystander.key.id


def test_touch_records_last_use_at_most_once_a_minute(
    store: Store, make_key: MakeKey, clock: FakeClock
) -> None:
    issued = make_key()
    with store.transaction() as tx:
        tx.keys.touch(issued.key.id)
    first = clock()
    clock.advance(seconds=30)
    with store.transaction() as tx:
        tx.keys.touch(issued.key.id)
    with store.read() as tx:
        assert tx.keys.get(issued.key.id).last_used_at == first
    clock.advance(seconds=31)
    with store.transaction() as tx:
        tx.keys.touch(issued.key.id)
    with store.read() as tx:
        assert tx.keys.get(issued.key.id).last_used_at == clock()


def test_every_action_is_in_the_audit_trail_with_its_actor(store: Store, make_key: MakeKey) -> None:
    issued = make_key()
    with store.transaction() as tx:
        successor = tx.keys.rotate(issued.key.id, "admin:bob", timedelta(hours=1))
        tx.keys.suspend(successor.key.id, "admin:bob", "review")
        tx.keys.resume(successor.key.id, "admin:bob")
        tx.keys.revoke(successor.key.id, "admin:carol", "leaked")
    with store.read() as tx:
        entries = tx.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        assert tx.audit.verify().ok
    actions = [(entry.action, entry.actor) for entry in entries]
    assert actions[-5:] == [
        ("key.issue", "test:setup"),
        ("key.rotate", "admin:bob"),
        ("key.suspend", "admin:bob"),
        ("key.resume", "admin:bob"),
        ("key.revoke", "admin:carol"),
    ]
    assert entries[-1].reason == "leaked"
