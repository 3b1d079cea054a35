"""The hot path's one read (keys/access/gate.py) and the PreparedRead it runs on (keys/db.py).

A PreparedRead bypasses SQLAlchemy's Connection for speed; these tests hold it to reading
exactly what a Connection would, failing as SQLAlchemy would, and leaving the pool's
connections as it found them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, event, select
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from keys.access.gate import CHECK_STATEMENT
from keys.access.lifecycle import IssuedKey
from keys.db import PreparedRead
from keys.errors import InvalidKey, KeyRejected
from keys.models import ApiKey, Video
from keys.process import current_pid, unique_hex
from keys.store import Store
from tests.helpers import FakeClock

pytestmark = pytest.mark.both_databases


def _issue_with_video(
    store: Store, make_key: Callable[..., IssuedKey]
) -> tuple[IssuedKey, str, str]:
    key = make_key()
    tester_id = key.key.tester_id
    with store.transaction() as tx:
        video = tx.videos.record(
            "video_hotread1", tester_id, key.key.id, {"id": "video_hotread1"}, video_seconds=4
        )
    return key, tester_id, video.id


def test_a_prepared_read_returns_what_a_connection_returns(
    store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    key, _, video_id = _issue_with_video(store, make_key)
    params = {"digest": store.digester.digest(key.secret), "video_id": video_id}
    with store.database.engine.connect() as connection:
        expected = connection.execute(CHECK_STATEMENT, params).one()

    row = store.database.prepared(CHECK_STATEMENT).first(**params)

    assert row is not None
    assert tuple(row) == tuple(expected)
    assert row._fields == tuple(expected._fields)
    # Converted as SQLAlchemy converts: aware datetimes, parsed JSON, booleans.
    assert row.expires_at is None or row.expires_at.tzinfo is not None
    assert isinstance(row.video_snapshot, dict) and isinstance(row.lockdown, bool | None)


def test_a_prepared_read_of_nothing_is_none(store: Store) -> None:
    read = store.database.prepared(CHECK_STATEMENT)
    assert read.first(digest="0" * 64, video_id=None) is None


def test_the_same_statement_is_compiled_once_per_database(store: Store) -> None:
    assert store.database.prepared(CHECK_STATEMENT) is store.database.prepared(CHECK_STATEMENT)


def test_statements_whose_parameters_need_conversion_are_refused(store: Store) -> None:
    at = bindparam("at", type_=ApiKey.expires_at.type)
    with_datetime = select(ApiKey.id).where(ApiKey.expires_at < at)
    with pytest.raises(ValueError, match="needs conversion"):
        PreparedRead(store.database, with_datetime)


def test_pooled_connections_come_back_as_they_went(
    store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    key, tester_id, _ = _issue_with_video(store, make_key)
    for _ in range(3):
        store.check_key(key.secret)
    # A transaction after the reads still commits and rolls back: no connection came back
    # in autocommit (PostgreSQL) or inside a transaction.
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.keys.suspend(key.key.id, "admin", reason="checking rollback")
        raise RuntimeError("roll back")
    principal, _ = store.check_key(key.secret)
    assert principal.tester_id == tester_id
    if store.database.dialect == "postgresql":
        with store.database.engine.connect() as connection:
            assert connection.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]


def test_a_driver_error_is_raised_as_sqlalchemys_and_the_connection_is_dropped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = PreparedRead(store.database, select(Video.id).where(Video.id == bindparam("id")))
    monkeypatch.setattr(read, "_sql", "SELECT no_such_column FROM videos")
    pool = store.database.engine.pool
    invalidated: list[Any] = []
    event.listen(pool, "invalidate", lambda *args: invalidated.append(args))
    with pytest.raises(DBAPIError) as caught:
        read.first(id="x")
    # SQLite calls a missing column an OperationalError, PostgreSQL a ProgrammingError.
    assert isinstance(caught.value, OperationalError | ProgrammingError)
    assert invalidated, "a connection in an unknown state must not go back to the pool"


def test_check_key_sees_every_committed_change_at_once(
    store: Store, make_key: Callable[..., IssuedKey], clock: FakeClock
) -> None:
    key = make_key(expires_at=clock() + timedelta(hours=1))
    store.check_key(key.secret)
    with store.transaction() as tx:
        tx.keys.revoke(key.key.id, "admin", reason="leaked")
    with pytest.raises(KeyRejected) as rejected:
        store.check_key(key.secret)
    assert rejected.value.code == "key_revoked"
    with pytest.raises(InvalidKey):
        store.check_key(store.key_format.generate())


def test_request_ids_stay_unique_when_someone_seeds_the_shared_generator() -> None:
    random.seed(7)
    first = [unique_hex() for _ in range(3)]
    random.seed(7)
    assert not set(first) & {unique_hex() for _ in range(3)}


def test_a_forked_child_knows_its_pid_and_draws_other_ids() -> None:
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(writer, f"{current_pid() == os.getpid()} {unique_hex()}".encode())
        os._exit(0)
    os.close(writer)
    same_pid, child_id = os.read(reader, 200).decode().split()
    os.close(reader)
    os.waitpid(child, 0)
    assert same_pid == "True"
    assert child_id != unique_hex()
