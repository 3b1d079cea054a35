"""Reusing the hot read's row on PostgreSQL (keys/commit_notices.py, keys/db.py).

Every process listens for commit notices; a row is reused until a notice arrives, for at most
``REUSE_SECONDS``, and never while the listening connection is down. A write that can take
access away waits ``REUSE_SECONDS`` after its commit, so it is in force everywhere when it
returns even if a notice is late. These tests run on the real PostgreSQL server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Table, create_engine, text
from sqlalchemy.sql import visitors

import keys.commit_notices
import keys.db
from keys.access.gate import CHECK_STATEMENT, hot_read
from keys.access.lifecycle import IssuedKey
from keys.commit_notices import CommitNotices
from keys.db import Base, Database, normalise_url
from keys.errors import InvalidKey, KeyRejected
from keys.store import Store
from tests.helpers import count_fetches

pytestmark = pytest.mark.postgres

LIVE_TIMEOUT = 10.0


@pytest.fixture
def database_url(postgres_database: str) -> Iterator[str]:
    """The session's PostgreSQL database (this module runs on PostgreSQL only), emptied after."""
    yield postgres_database
    engine = create_engine(normalise_url(postgres_database))
    with engine.begin() as connection:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture
def notices(store: Store) -> CommitNotices:
    found = store.database.commit_notices
    assert found is not None
    assert found.wait_until_live(LIVE_TIMEOUT), "the listener never came up"
    return found


@pytest.fixture
def elsewhere(store: Store) -> Iterator[Store]:
    """A second Database on the same PostgreSQL database: its own pool and its own listener,
    as another worker or another host has (tests/integration/test_revocation_propagation.py
    runs the real processes)."""
    other = Database(store.database.engine.url.render_as_string(hide_password=False))
    try:
        yield Store(
            other,
            store.digester,
            store.key_format,
            store.token_format,
            store.clock,
            store.audit_signer,
            store.checkpoint_policy,
        )
    finally:
        other.dispose()


def _count_waits(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    waits: list[None] = []
    wait = database._wait_out_reuse

    def counted() -> None:
        waits.append(None)
        wait()

    monkeypatch.setattr(database, "_wait_out_reuse", counted)
    return waits


def _settled(notices: CommitNotices, quiet: float = 0.3) -> Any:
    """The generation once the notices of earlier commits have all arrived (it stayed the
    same for ``quiet`` seconds)."""
    seen, since = notices.current(), time.monotonic()
    deadline = since + LIVE_TIMEOUT
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the notices never settled"
        time.sleep(0.02)
        now = notices.current()
        if now != seen or now is None:
            seen, since = now, time.monotonic()
    return seen


def _until(condition: Callable[[], bool], timeout: float = LIVE_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_found_row_is_reused_until_a_commit_notice_arrives(
    store: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A long bound, so that only the notice can end the reuse here.
    monkeypatch.setattr(keys.db, "REUSE_SECONDS", 30.0)
    key = make_key()
    _settled(notices)
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    for _ in range(3):
        store.check_key(key.secret)
    assert len(fetched) == 1
    before = notices.current()
    # An access-neutral write (a new video) sends a notice and does not wait.
    with store.transaction() as tx:
        tx.videos.record("video_notice1", key.key.tester_id, key.key.id, {"id": "video_notice1"})
    assert _until(lambda: notices.current() != before), "no notice arrived"
    store.check_key(key.secret)
    assert len(fetched) == 2
    store.check_key(key.secret)
    assert len(fetched) == 2


def test_a_commit_through_another_database_is_noticed(
    store: Store,
    elsewhere: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keys.db, "REUSE_SECONDS", 30.0)
    key = make_key()
    before = _settled(notices)
    with elsewhere.transaction() as tx:
        tx.keys.touch(key.key.id)
    assert _until(lambda: notices.current() != before), "the other database's commit was missed"
    # A read-only transaction and a write to a table the hot read does not read: no notice.
    settled = _settled(notices)
    with elsewhere.read() as tx:
        tx.keys.get(key.key.id)
    with elsewhere.transaction() as tx:
        tx.tokens.create("quiet token", "auditor", "test:setup")
    time.sleep(0.3)
    assert notices.current() == settled


def test_a_revoke_is_in_force_when_it_returns_even_if_the_notice_is_late(
    store: Store,
    elsewhere: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = make_key()
    _settled(notices)
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    store.check_key(key.secret)
    # This process stops hearing notices but believes it is live: the worst case of a
    # notice still in flight to another host.
    monkeypatch.setattr(notices, "_renew", lambda: None)
    store.check_key(key.secret)
    assert len(fetched) == 1, "the row was not being reused"
    with elsewhere.transaction() as tx:
        tx.keys.revoke(key.key.id, "admin", reason="leaked")
    with pytest.raises(KeyRejected) as rejected:
        store.check_key(key.secret)
    assert rejected.value.code == "key_revoked"


def test_lockdown_is_in_force_when_it_returns_even_if_the_notice_is_late(
    store: Store,
    elsewhere: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = make_key()
    _settled(notices)
    store.check_key(key.secret)
    monkeypatch.setattr(notices, "_renew", lambda: None)
    with elsewhere.transaction() as tx:
        tx.lockdown.set_lockdown(True, "admin", "drill")
    with pytest.raises(Exception, match="locked down"):
        store.check_key(key.secret)


def test_every_table_the_hot_read_reads_is_a_hot_table() -> None:
    """A table the hot read joins but no write announces would leave a stale row reused on
    other hosts (a proof key bound, yet the bare string still admitted)."""
    read = {
        element.name for element in visitors.iterate(CHECK_STATEMENT) if isinstance(element, Table)
    }
    assert read == keys.db.HOT_TABLES


def test_a_proof_key_bind_is_in_force_when_it_returns_even_if_the_notice_is_late(
    store: Store,
    elsewhere: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = make_key()
    _settled(notices)
    store.check_key(key.secret)
    monkeypatch.setattr(notices, "_renew", lambda: None)
    public_key = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with elsewhere.transaction() as tx:
        tx.proof_keys.bind(key.key.id, public_key, "admin")
    principal, _ = store.check_key(key.secret)
    assert principal.proof_key is not None, "the binding was not in force when bind returned"
    with elsewhere.transaction() as tx:
        tx.proof_keys.unbind_key(key.key.id, "admin")
    assert store.check_key(key.secret)[0].proof_key is None


def test_writes_that_can_take_access_away_wait_and_others_do_not(
    store: Store, make_key: Callable[..., IssuedKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = _count_waits(store.database, monkeypatch)
    key = make_key()  # a new tester and a new key: nothing was found before
    with store.transaction() as tx:
        tx.keys.touch(key.key.id)
        tx.videos.record("video_wait1", key.key.tester_id, key.key.id, {"id": "video_wait1"})
        tx.tokens.create("a token", "admin", "test:setup")
    assert waits == []
    with store.transaction() as tx:
        tx.keys.suspend(key.key.id, "admin", reason="looking into it")
    assert len(waits) == 1
    with store.transaction() as tx:
        tx.lockdown.set_lockdown(True, "admin", "drill")
    assert len(waits) == 2
    # A change still pending in the session when the block ends (flushed by the commit).
    with store.transaction() as tx:
        tx.keys.get(key.key.id).status = "revoked"
    assert len(waits) == 3
    waits.clear()
    # Hand-written SQL that changes anything counts as taking access away.
    with store.transaction() as tx:
        tx.session.execute(text("UPDATE testers SET name = name"))
    assert len(waits) == 1
    # A rolled-back change waits for nothing.
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.lockdown.set_lockdown(False, "admin", "never mind")
        raise RuntimeError("roll back")
    assert len(waits) == 1


def test_nothing_is_reused_while_the_listener_is_down(
    store: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keys.db, "REUSE_SECONDS", 30.0)
    key = make_key()
    _settled(notices)
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    store.check_key(key.secret)
    store.check_key(key.secret)
    assert len(fetched) == 1
    backend_pid = notices._connection.info.backend_pid
    with store.database.engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_pid})
    assert _until(lambda: notices.current() is None, 5.0), "the lost listener was not noticed"
    for _ in range(3):
        store.check_key(key.secret)
    assert len(fetched) == 4
    # It reconnects by itself; rows read before or during the outage are not reused after.
    assert _until(lambda: notices.current() is not None), "the listener did not come back"
    store.check_key(key.secret)
    store.check_key(key.secret)
    assert len(fetched) == 5


def test_not_found_is_never_reused(
    store: Store,
    elsewhere: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keys.db, "REUSE_SECONDS", 30.0)
    key = make_key()
    _settled(notices)
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    unknown = store.key_format.generate()
    for _ in range(3):
        with pytest.raises(InvalidKey):
            store.check_key(unknown)
    assert len(fetched) == 3
    # A key found without the video the request names is not reused either: a video
    # recorded on another host a moment ago is found at once, notice or not.
    monkeypatch.setattr(notices, "_renew", lambda: None)
    _, video = store.check_key(key.secret, "video_later1")
    assert video is None
    with elsewhere.transaction() as tx:
        tx.videos.record("video_later1", key.key.tester_id, key.key.id, {"id": "video_later1"})
    _, video = store.check_key(key.secret, "video_later1")
    assert video is not None and video.visible_to(key.key.tester_id)


def test_a_listener_that_stops_answering_is_not_trusted(
    store: Store,
    notices: CommitNotices,
    make_key: Callable[..., IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A half-open connection looks live to its thread; only its heartbeats tell. Past three
    # missed heartbeats nothing is reused, even though no error was seen.
    monkeypatch.setattr(keys.db, "REUSE_SECONDS", 30.0)
    key = make_key()
    _settled(notices)
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    store.check_key(key.secret)
    store.check_key(key.secret)
    assert len(fetched) == 1
    monkeypatch.setattr(keys.commit_notices, "HEARTBEAT_SECONDS", 0.0)
    assert notices.current() is None
    store.check_key(key.secret)
    store.check_key(key.secret)
    assert len(fetched) == 3


def test_a_cold_write_to_a_hot_table_is_refused_and_rolled_back(
    store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    """``Database.cold_write`` sends no notice: it is for tables the hot read never reads
    (a proof's nonce). One that changes a hot table is rolled back, not committed unheard."""
    key = make_key()
    with store.database.cold_write() as connection:
        connection.execute(text("SELECT 1"))
    with pytest.raises(RuntimeError, match="hot read"), store.database.cold_write() as connection:
        connection.execute(
            keys.db.Base.metadata.tables["api_keys"]
            .update()
            .where(keys.db.Base.metadata.tables["api_keys"].c.id == key.key.id)
            .values(status="revoked")
        )
    with store.read() as tx:
        assert tx.keys.get(key.key.id).status == "active"
