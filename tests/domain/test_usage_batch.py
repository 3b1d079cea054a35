"""The usage flusher's batch insert (keys.db.PreparedInsert): the driver's executemany on
SQLite, ``COPY ... FROM STDIN`` on PostgreSQL. Whatever path a batch takes, it stores what
a Core INSERT would, raises SQLAlchemy's errors, and gives up a connection the database
dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from keys.db import HOT_TABLES, Database, PreparedInsert
from keys.models import Base, UsageEvent
from keys.records.usage import _INSERT_EVENTS, UsageBuffer, UsageRecord, _row
from keys.store import Store

CEST = timezone(timedelta(hours=2))

# What a client controls ends up in these columns: COPY's text format must not read a tab,
# a newline, a backslash or its NULL marker in them as anything but characters.
HOSTILE = 'tab\there\nnewline \\N backslash\\ quote\' "dq" \x7f é 🎬'


def _records(prefix: str) -> list[UsageRecord]:
    at = datetime(2026, 12, 7, 23, 30, 15, 123456, tzinfo=CEST)
    return [
        UsageRecord(
            at=at,
            request_id=f"{prefix}_full",
            method="GET",
            route="/v1/videos/<video_id>",
            status=200,
            outcome="ok",
            key_id="key_1",
            tester_id="tst_1",
            cohort="artists",
            video_id="video_abc",
            error_code=None,
            generations=1,
            video_seconds=8,
            latency_ms=12.34,
            upstream_latency_ms=0.5,
            client_ip="2001:db8::1",
            user_agent=HOSTILE,
        ),
        UsageRecord(
            at=at + timedelta(microseconds=1),
            request_id=f"{prefix}_bare",
            method="OTHER",
            route="(unmatched)",
            status=401,
            outcome="refused",
            user_agent="",
        ),
        UsageRecord(
            at=datetime(2026, 12, 8, 0, 0, tzinfo=UTC),
            request_id=f"{prefix}_null",
            method="DELETE",
            route="/v1/videos/<video_id>",
            status=503,
            outcome="failed",
            error_code="upstream_unavailable",
            user_agent="\\N",
        ),
    ]


def _stored(store: Store, prefix: str) -> list[dict[str, Any]]:
    with store.read() as tx:
        events = tx.session.scalars(
            select(UsageEvent)
            .where(UsageEvent.request_id.like(f"{prefix}_%"))
            .order_by(UsageEvent.at)
        ).all()
        return [
            {
                column.name: getattr(event, column.name)
                for column in UsageEvent.__table__.columns
                if column.name not in ("id", "request_id")
            }
            for event in events
        ]


@pytest.mark.both_databases
def test_a_batch_stores_exactly_what_a_core_insert_stores(store: Store) -> None:
    with store.transaction() as tx:
        _INSERT_EVENTS.execute(tx.session.connection(), [_row(r) for r in _records("batch")])
    with store.transaction() as tx:
        statement = insert(UsageEvent).execution_options(render_nulls=True)
        tx.session.execute(statement, [_row(r) for r in _records("core")])

    stored = _stored(store, "batch")
    assert stored == _stored(store, "core")
    assert [event["user_agent"] for event in stored] == [HOSTILE, "", "\\N"]
    assert stored[0]["at"] == datetime(2026, 12, 7, 21, 30, 15, 123456, tzinfo=UTC)
    assert stored[1]["key_id"] is None and stored[1]["latency_ms"] is None


@pytest.mark.both_databases
def test_a_batch_runs_in_the_callers_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        _INSERT_EVENTS.execute(tx.session.connection(), [_row(r) for r in _records("undone")])
        raise RuntimeError("the caller gives up")
    assert _stored(store, "undone") == []


@pytest.mark.both_databases
def test_a_duplicate_raises_sqlalchemys_integrity_error(store: Store) -> None:
    rows = [_row(r) for r in _records("dup")]
    with pytest.raises(IntegrityError), store.transaction() as tx:
        _INSERT_EVENTS.execute(tx.session.connection(), [*rows, rows[0]])
    assert _stored(store, "dup") == []


@pytest.mark.both_databases
def test_the_flusher_keeps_the_good_events_of_a_batch_the_database_refuses(
    store: Store,
) -> None:
    records = _records("flush")
    with store.transaction() as tx:
        _INSERT_EVENTS.execute(tx.session.connection(), [_row(records[0])])
    buffer = UsageBuffer(store, interval=3600)
    for record in records:  # the first one again: its request id is taken
        buffer.add(record)
    assert buffer.flush() == 2
    assert len(_stored(store, "flush")) == 3
    assert buffer.pending() == 0


def test_a_server_restart_costs_one_failed_batch_not_one_per_pooled_connection(
    postgres_database: str,
) -> None:
    database = Database(postgres_database, pool_size=3)
    killer = create_engine(database.engine.url, isolation_level="AUTOCOMMIT")
    try:
        pooled = [database.engine.connect() for _ in range(3)]
        pids = [c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for c in pooled]
        for connection in pooled:
            connection.close()
        with killer.connect() as other:  # as a restart does to every one of them
            for pid in pids:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised, database.engine.begin() as connection:
            _INSERT_EVENTS.execute(connection, [_row(r) for r in _records("dropped")])
        assert raised.value.connection_invalidated
        # The next batch gets a live connection: the dead one and the others pooled with it
        # were retired together, as a Core statement's failure retires them.
        with database.engine.begin() as connection:
            _INSERT_EVENTS.execute(connection, [_row(r) for r in _records("after")])
            written = connection.execute(
                select(UsageEvent.request_id).where(UsageEvent.request_id.like("after_%"))
            ).all()
        assert len(written) == 3
    finally:
        killer.dispose()
        database.dispose()


def test_the_hot_reads_tables_are_never_batched_past_the_commit_notices() -> None:
    for name in HOT_TABLES:
        with pytest.raises(ValueError, match="hot read"):
            PreparedInsert(Base.metadata.tables[name], ("id",))


def test_another_postgresql_driver_gets_the_core_statement() -> None:
    """COPY is psycopg's: a URL that names another driver (``postgresql+pg8000://``) gets
    the multi-row Core INSERT, which every driver runs."""
    from sqlalchemy.dialects.postgresql.pg8000 import PGDialect_pg8000

    class Recorder:
        dialect = PGDialect_pg8000()
        executed: list[tuple[Any, Any]] = []

        def execute(self, statement: Any, rows: Any) -> None:
            self.executed.append((statement, rows))

    rows = [_row(record) for record in _records("pg8000")]
    recorder = Recorder()
    _INSERT_EVENTS.execute(recorder, rows)  # type: ignore[arg-type]
    ((statement, given),) = recorder.executed
    assert statement.is_insert and given == rows
