"""Reusing the hot read's row until the next commit (keys/commit_stamp.py, keys/db.py).

On a SQLite file, ``check_key`` reuses the row it read while nothing has been committed to
the database since, for at most ``REUSE_SECONDS``. These tests hold that reuse to what the
hot path promises: every committed change is seen by the very next check, wherever it was
committed; a write that bypasses ``keys.db`` is seen within the bound; "not found" is never
reused. PostgreSQL's counterpart, commit notices, is tested in tests/domain/test_commit_notices.py.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keys.db
from keys.access.gate import hot_read
from keys.access.lifecycle import IssuedKey
from keys.commit_stamp import CommitStamp
from keys.db import REUSE_SECONDS, Database
from keys.errors import InvalidKey, KeyRejected
from keys.migrate import upgrade
from keys.store import Store
from tests.helpers import count_fetches


def _issue_with_video(store: Store, make_key: Callable[..., IssuedKey]) -> tuple[IssuedKey, str]:
    key = make_key()
    with store.transaction() as tx:
        video = tx.videos.record(
            "video_reuse1", key.key.tester_id, key.key.id, {"id": "video_reuse1"}, video_seconds=4
        )
    return key, video.id


def test_a_found_row_is_reused_until_anything_commits(
    store: Store,
    make_key: Callable[..., IssuedKey],
    make_tester: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, video_id = _issue_with_video(store, make_key)
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    for _ in range(3):
        store.check_key(key.secret, video_id)
    assert len(fetched) == 1
    # A commit that has nothing to do with this key still ends the reuse: the stamp says
    # "something changed", not what.
    make_tester()
    store.check_key(key.secret, video_id)
    assert len(fetched) == 2
    # Other parameters (another video, none) are other rows.
    store.check_key(key.secret)
    assert len(fetched) == 3


def test_a_commit_through_another_database_object_is_seen_at_once(
    store: Store, make_key: Callable[..., IssuedKey], database_url: str
) -> None:
    # A second Database maps the stamp on its own, exactly as another gunicorn worker or the
    # CLI does (tests/integration/test_revocation_propagation.py runs the real processes).
    key = make_key()
    store.check_key(key.secret)
    store.check_key(key.secret)
    other = Database(database_url)
    elsewhere = Store(
        other,
        store.digester,
        store.key_format,
        store.token_format,
        store.clock,
        store.audit_signer,
        store.checkpoint_policy,
    )
    try:
        with elsewhere.transaction() as tx:
            tx.keys.revoke(key.key.id, "admin", reason="leaked")
    finally:
        other.dispose()
    with pytest.raises(KeyRejected) as rejected:
        store.check_key(key.secret)
    assert rejected.value.code == "key_revoked"


def test_a_write_that_bypasses_keys_db_is_seen_within_the_reuse_bound(
    store: Store, make_key: Callable[..., IssuedKey], database_url: str
) -> None:
    key = make_key()
    store.check_key(key.secret)
    # A hand edit: no stamp renewed.
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE api_keys SET status = 'revoked' WHERE id = ?", (key.key.id,))
    time.sleep(REUSE_SECONDS * 1.2)
    with pytest.raises(KeyRejected):
        store.check_key(key.secret)


def test_not_found_is_never_reused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = count_fetches(hot_read(store.database), monkeypatch)
    unknown = store.key_format.generate()
    for _ in range(3):
        with pytest.raises(InvalidKey):
            store.check_key(unknown)
    assert len(fetched) == 3


def test_each_reuse_hands_out_its_own_converted_values(
    store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    key, video_id = _issue_with_video(store, make_key)
    _, first = store.check_key(key.secret, video_id)
    _, second = store.check_key(key.secret, video_id)
    assert first is not None and second is not None
    assert first.snapshot == second.snapshot
    assert first.snapshot is not second.snapshot


def test_reused_rows_are_bounded(
    store: Store, make_key: Callable[..., IssuedKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys.db, "REUSE_MAX_ROWS", 2)
    secrets_ = [make_key().secret for _ in range(5)]
    for secret in secrets_:
        store.check_key(secret)
        assert len(hot_read(store.database)._reused) <= 2


@pytest.mark.both_databases
def test_each_database_has_the_change_signal_of_its_kind(
    store: Store, make_key: Callable[..., IssuedKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key()
    database = store.database
    if database.dialect == "postgresql":
        # Other hosts may write PostgreSQL: commit notices (tests/domain/test_commit_notices.py).
        assert database.commit_stamp is None and database.commit_notices is not None
        assert database.change_signal is database.commit_notices
        # Until this process listens, nothing is reused.
        fetched = count_fetches(hot_read(store.database), monkeypatch)
        store.check_key(key.secret)
        store.check_key(key.secret)
        assert len(fetched) == 2
    else:
        assert database.commit_stamp is not None and database.commit_notices is None
        assert database.change_signal is database.commit_stamp
        fetched = count_fetches(hot_read(store.database), monkeypatch)
        store.check_key(key.secret)
        store.check_key(key.secret)
        assert len(fetched) == 1
    in_memory = Database("sqlite://")
    assert in_memory.change_signal is None
    in_memory.dispose()


def test_two_mappings_of_a_stamp_see_each_others_renewals(tmp_path: Path) -> None:
    database = tmp_path / "some.db"
    database.touch(mode=0o600)
    first, second = CommitStamp(database), CommitStamp(database)
    seen = {first.current()}
    for _ in range(20):
        second.renew()
        assert first.current() not in seen
        seen.add(first.current())
        first.renew()
        assert second.current() == first.current()
    assert (tmp_path / "some.db-stamp").stat().st_mode & 0o777 == 0o600
    first.close()
    second.close()


def test_a_stamp_that_cannot_be_mapped_turns_reuse_off(tmp_path: Path) -> None:
    missing_directory = tmp_path / "nowhere" / "some.db"
    assert CommitStamp.for_database(str(missing_directory)) is None


def test_a_migration_renews_the_stamp(store: Store) -> None:
    stamp = store.database.commit_stamp
    assert stamp is not None
    before = stamp.current()
    upgrade(store.database.engine)
    assert stamp.current() != before
