"""Engines and transactions: the one way the domain talks to its database.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE`` so writers queue for the lock up front instead of
failing when a read transaction tries to upgrade. PostgreSQL runs through psycopg 3.

The hot read (keys/access/gate.py) reuses its row until the database says something changed: on a
SQLite file through a shared commit stamp (keys/commit_stamp.py), on PostgreSQL through
commit notices (keys/commit_notices.py) together with a write wait: a write transaction that
can take access away returns only once every row read before its commit is too old to be
reused (``REUSE_SECONDS``).
"""

from __future__ import annotations

import operator
import time
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Select,
    bindparam,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.expression import TextClause
from sqlalchemy.types import TypeDecorator

from keys.commit_notices import NOTIFY_SQL, CommitNotices
from keys.commit_stamp import CommitStamp

SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long a reused hot-read row may be trusted at most, timed from before its query was
# sent. On SQLite: for changes the commit stamp cannot see (a hand-edited database, a writer
# killed right after its commit). On PostgreSQL it is also how long a write that can take
# access away waits after its commit, so that it is in force on every host when it returns.
REUSE_SECONDS = 0.1
# Added to the write wait: hosts' monotonic clocks may run at rates a few hundred parts per
# million apart (NTP slewing), i.e. well under a millisecond of REUSE_SECONDS.
WAIT_MARGIN_SECONDS = 0.005
# Rows kept for reuse per statement and process; past that, all are forgotten at once.
REUSE_MAX_ROWS = 4096

# The tables the hot read (keys/access/gate.py) reads. A PostgreSQL transaction that writes one of
# them sends a commit notice; unless every such write is access-neutral, it also waits out
# REUSE_SECONDS after its commit.
HOT_TABLES = frozenset(
    {
        "api_keys",
        "testers",
        "cohort_policies",
        "policy_overrides",
        "program_state",
        "proof_keys",
        "videos",
    }
)
# Writes that can only grant access, never take it away, send a notice but need not wait:
# a new key or tester is a row no request found before (and "not found" is never reused);
# a video row admits no one and refuses no one (the key does, and a tester only ever sees
# their own videos; a video recorded a moment ago is never missed, see keys/access/gate.py); and a
# statement run with ACCESS_NEUTRAL (recording when a key was last used).
ACCESS_NEUTRAL_INSERTS = frozenset({"api_keys", "testers", "videos"})
ACCESS_NEUTRAL_TABLES = frozenset({"videos"})
ACCESS_NEUTRAL = {"drawbridge_access_neutral": True}
_HOT_WRITE = "drawbridge_hot_write"
_NOTICE_ONLY, _NOTICE_AND_WAIT = 1, 2


class ChangeSignal(Protocol):
    """What a reused row is filed under: a stamp or generation, None when nothing may be
    reused now."""

    def current(self) -> Any: ...


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine configured for the gateway's access pattern on SQLite or PostgreSQL."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        options: dict[str, Any] = {}
        if make_url(url).database not in (None, "", ":memory:"):
            # A file database gets the configured pool, as PostgreSQL does: SQLAlchemy's
            # default of five is fewer than a worker's request threads, and a connection
            # opened past the pool costs a file open, four PRAGMAs and a cold page cache.
            options = {"pool_size": pool_size, "max_overflow": pool_size}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **options)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it would cost a round trip on every checkout of the hot path. A connection
    # that died with the server fails its request with a 503 (fail closed; clients retry)
    # and is replaced together with every connection pooled before it; recycling bounds how
    # long an idle connection is trusted.
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=300)
    _track_hot_writes(engine)
    return engine


def _track_hot_writes(engine: Engine) -> None:
    """Note, per transaction, whether it wrote a table the hot read reads, and whether it
    could have taken access away (``Database.session`` then sends a notice and waits)."""

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.info.pop(_HOT_WRITE, None)

    @event.listens_for(engine, "after_cursor_execute")
    def _after_execute(
        connection: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        kind = _hot_write_kind(statement, context)
        if kind > connection.info.get(_HOT_WRITE, 0):
            connection.info[_HOT_WRITE] = kind


def _hot_write_kind(statement: str, context: Any) -> int:
    """0 for anything that changes no hot table, else _NOTICE_ONLY or _NOTICE_AND_WAIT."""
    compiled = getattr(context, "compiled", None)
    dml = getattr(compiled, "statement", None)
    if context is None or compiled is None or isinstance(dml, TextClause):
        # Hand-written SQL: a change to any table counts as one that can take access away.
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        return _NOTICE_AND_WAIT if verb in ("INSERT", "UPDATE", "DELETE", "MERGE") else 0
    if not (context.isinsert or context.isupdate or context.isdelete):
        return 0
    table = getattr(getattr(dml, "table", None), "name", None)
    if table is not None and table not in HOT_TABLES:
        return 0
    if (
        table in ACCESS_NEUTRAL_TABLES
        or (context.isinsert and table in ACCESS_NEUTRAL_INSERTS)
        or context.execution_options.get("drawbridge_access_neutral")
    ):
        return _NOTICE_ONLY
    return _NOTICE_AND_WAIT


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so we can say BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # sqlite_begin=None: a single-statement read that needs no transaction around it.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode is not None:
            connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Owns the engine and hands out sessions scoped to one transaction."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        writer = self._writer_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(writer, expire_on_commit=False)
        self._prepared: dict[tuple[int, bool, tuple[str, ...]], PreparedRead] = {}
        path = make_url(self.engine.url).database if self.dialect == "sqlite" else None
        self.commit_stamp = CommitStamp.for_database(path) if path and path != ":memory:" else None
        self.commit_notices = (
            CommitNotices(self._listening_connection) if self.dialect == "postgresql" else None
        )

    @property
    def change_signal(self) -> ChangeSignal | None:
        """What the hot read's reuse follows on this database, if anything."""
        return self.commit_stamp or self.commit_notices

    def _listening_connection(self) -> Any:
        """A new DBAPI connection outside the pool, for the commit notices' listener."""
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        return self.engine.dialect.loaded_dbapi.connect(*cargs, **cparams)

    def prepared(
        self,
        statement: Select[Any],
        *,
        reuse_until_commit: bool = False,
        found_only: tuple[str, ...] = (),
    ) -> PreparedRead:
        """``statement`` as a ``PreparedRead`` on this database, compiled on first use.

        With ``reuse_until_commit``, a row found is reused until the database signals a
        change (a commit stamp on SQLite, commit notices on PostgreSQL; see
        ``PreparedRead``). For module-level statements only: they are remembered by identity.
        """
        name = (id(statement), reuse_until_commit, found_only)
        read = self._prepared.get(name)
        if read is None:
            read = PreparedRead(
                self,
                statement,
                stamp=self.change_signal if reuse_until_commit else None,
                found_only=found_only,
            )
            read = self._prepared.setdefault(name, read)
        return read

    @contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        factory = self._writers if write else self._readers
        hot_write = 0
        try:
            with factory() as session:
                with session.begin():
                    yield session
                    if write and self.commit_notices is not None:
                        hot_write = self._announce(session)
                if hot_write == _NOTICE_AND_WAIT:
                    self._wait_out_reuse()
        finally:
            # After the commit (or whatever ended it): from here on, no process reuses a
            # row read before this transaction's changes were visible.
            if write and self.commit_stamp is not None:
                self.commit_stamp.renew()

    @contextmanager
    def cold_write(self) -> Iterator[Connection]:
        """A connection in one write transaction, for statements that change none of
        HOT_TABLES (a proof's nonce, claimed on every signed request): no ORM session, no
        commit notice and, on SQLite, no new commit stamp, so the hot read goes on reusing
        its rows. Committed on success, rolled back on error."""
        with self._writer_engine.begin() as connection:
            yield connection
            if connection.info.get(_HOT_WRITE):
                # Tracked on PostgreSQL: a hot table written here would be reused stale
                # elsewhere. Rolled back (the block raises) rather than committed unannounced.
                raise RuntimeError("cold_write changed a table the hot read reads")

    def _wait_out_reuse(self) -> None:
        """After a commit that can take access away: return only when no process, on any
        host, can still reuse a row read before it. Notices usually end that reuse within
        milliseconds, but they arrive after the commit, not before this call returns;
        the bound is what holds everywhere: a row is reused for at most REUSE_SECONDS
        from before its query was sent, and its query was sent before this commit."""
        time.sleep(REUSE_SECONDS + WAIT_MARGIN_SECONDS)

    def _announce(self, session: Session) -> int:
        """Before the commit: send the commit notice if this transaction wrote a hot table
        (PostgreSQL delivers it once the commit is durable). Returns what was written."""
        # Changes still pending in the session are written now, so that they are counted.
        session.flush()
        connection = session.connection()
        hot_write: int = connection.info.get(_HOT_WRITE, 0)
        if hot_write:
            session.execute(text(NOTIFY_SQL))
        return hot_write

    def dispose(self) -> None:
        """Close pooled connections (after fork, or at shutdown) and stop listening."""
        if self.commit_notices is not None:
            self.commit_notices.close()
        self.engine.dispose()


class PreparedRead:
    """One SELECT, compiled once, run on a pooled DBAPI connection: for the statement that
    runs on every request (keys/access/gate.py).

    A SQLAlchemy ``Connection`` spends several times the query's own cost on per-execution
    bookkeeping (measured on SQLite: 150 us against 20 us), and on PostgreSQL its implicit
    transaction adds a BEGIN and a ROLLBACK round trip around a single statement that reads
    a consistent snapshot on its own. Here the statement runs in autocommit on a connection
    from the engine's own pool, and values come back through SQLAlchemy's own result
    conversions for the dialect, so a row reads exactly as it would through a ``Connection``.
    Errors are raised as SQLAlchemy's (``OperationalError`` and friends, also when no
    connection can be opened), and a connection the driver reports as lost is dropped from
    the pool with every connection pooled before it.

    Parameters must be values the driver takes as they are (text, integers): a statement
    whose parameters need conversion is refused when it is prepared.

    Given a change signal (a SQLite commit stamp, keys/commit_stamp.py, or PostgreSQL commit
    notices, keys/commit_notices.py), a row found is reused, for the same parameters, while
    the signal is unchanged and for at most ``REUSE_SECONDS``: no change since it was read,
    no driver call now. A signal that says None (notices may be missed) reuses nothing. A
    reused row is the converted row itself, not converted again (its JSON parsed once per
    read, not once per request): its values are shared by every caller and are read, never
    changed (keys/access/gate.py hands them on as read-only mappings). "Not found" is never
    reused: a key issued a moment ago works at once, and made-up keys cannot fill memory.
    Nor is a row that lacks what a parameter in ``found_only`` asked for (a column of the
    same name is NULL although the parameter is set): a video recorded a moment ago is found
    at once too.
    """

    def __init__(
        self,
        database: Database,
        statement: Select[Any],
        *,
        stamp: ChangeSignal | None = None,
        found_only: tuple[str, ...] = (),
    ) -> None:
        engine = database.engine
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        for name, bind in compiled.binds.items():
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name!r} needs conversion; not for PreparedRead")
        self._engine = engine
        self._dialect = dialect
        self._sql = str(compiled)
        self._defaults = dict(compiled.params)
        self._positions = compiled.positiontup
        self._autocommit = dialect.name == "postgresql"
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        columns = list(statement.selected_columns)
        self._row: Any = namedtuple("_Row", [column.key for column in columns])  # type: ignore[misc]
        self._processors = [
            (index, processor)
            for index, column in enumerate(columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
        ]
        self._stamp = stamp
        names = [column.key for column in columns]
        self._found_only = [(name, names.index(name)) for name in found_only]
        self._reused: dict[tuple[Any, ...], tuple[Any, float, Any]] = {}

    def first(self, **values: Any) -> Any | None:
        """The first row (attributes named as the statement's columns), or None."""
        params: Any = {**self._defaults, **values}
        if self._positions is not None:
            params = [params[name] for name in self._positions]
        if self._stamp is None:
            return self._convert(self._fetch(params))
        return self._fetch_or_reuse(values, params, self._stamp)

    def _convert(self, raw: tuple[Any, ...] | None) -> Any | None:
        """The driver's values as the statement's column types give them (the dialect's
        result processors: timestamps, JSON)."""
        if raw is None:
            return None
        converted = list(raw)
        for index, processor in self._processors:
            converted[index] = processor(converted[index])
        return self._row._make(converted)

    def _fetch_or_reuse(self, values: dict[str, Any], params: Any, stamp: ChangeSignal) -> Any:
        # The stamp is read before the query: a commit that lands after this point renews
        # it, so the row is filed under a stamp that no longer matches. The time is taken
        # before the query too, so a row is never trusted past REUSE_SECONDS from a moment
        # before its snapshot (what the PostgreSQL write wait counts on).
        seen, now = stamp.current(), time.monotonic()
        if seen is None:
            return self._convert(self._fetch(params))
        name = tuple(params) if isinstance(params, list) else tuple(sorted(params.items()))
        kept = self._reused.get(name)
        if kept is not None and kept[0] == seen and now - kept[1] < REUSE_SECONDS:
            return kept[2]
        raw = self._fetch(params)
        row = self._convert(raw)
        if raw is not None and all(
            raw[index] is not None or values.get(param) is None for param, index in self._found_only
        ):
            if len(self._reused) >= REUSE_MAX_ROWS:
                self._reused.clear()
            self._reused[name] = (seen, now, row)
        return row

    def _fetch(self, params: Any) -> tuple[Any, ...] | None:
        try:
            connection = self._engine.raw_connection()
        except self._dbapi_error as exc:
            # A connection that could not be opened (the server is down): the driver's error
            # comes straight from the pool, unwrapped, unlike a Connection's.
            raise DBAPIError.instance(
                self._sql, params, exc, self._dbapi_error, hide_parameters=True
            ) from exc
        dbapi_connection: Any = connection.dbapi_connection
        reusable = False
        try:
            if self._autocommit:
                dbapi_connection.autocommit = True
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(self._sql, params)
                raw = cursor.fetchone()
            finally:
                cursor.close()
            if self._autocommit:
                dbapi_connection.autocommit = False
            reusable = True
        except self._dbapi_error as exc:
            error: Any = exc
            if self._dialect.is_disconnect(error, dbapi_connection, None):
                # The server went away: every pooled connection opened before now is as dead
                # as this one. Retire them all, as a Connection does, so that requests after
                # the server's return open fresh ones instead of failing one by one.
                self._engine.pool._invalidate(connection, exc, _checkin=False)
            raise DBAPIError.instance(
                self._sql, params, exc, self._dbapi_error, hide_parameters=True
            ) from exc
        finally:
            # A connection left in autocommit, or in an unknown state, is never pooled again.
            if not reusable:
                connection.invalidate()
            connection.close()
        return None if raw is None else tuple(raw)


class PreparedInsert:
    """Many rows into one table in the caller's transaction, in one driver call, prepared
    once per dialect: for the batch that every request adds to (keys/records/usage.py).

    A Core ``Connection.execute(insert, rows)`` builds a parameter dictionary per row and runs
    every value through its type's conversion, one Python call at a time (on SQLite, 13 us a
    row of which the driver's insert is about 4; on PostgreSQL, 31-47 us a row as one
    multi-row INSERT). Here each column's conversion (SQLAlchemy's own bind processor for
    the dialect, so a value is stored exactly as through a ``Connection``) is looked up once
    and the rows go to the driver as tuples:

    * on SQLite, to the driver's ``executemany`` of the compiled INSERT;
    * on PostgreSQL, to ``COPY ... FROM STDIN`` (psycopg's ``Cursor.copy``: the values are
      adapted in C and the server parses no statement per row; 7-14 us a row). psycopg's
      ``executemany`` would be a statement per row, slower than the Core INSERT.

    Errors are still SQLAlchemy's (``IntegrityError``, ``DataError`` and friends), and a
    connection the database dropped is invalidated as a Core statement's would be. Every
    column named is given for every row: None is stored as NULL, no column default applies.
    Other dialects and drivers run the Core statement.

    A COPY runs past SQLAlchemy's cursor events, so no commit notice would follow it: the
    hot read's tables (``HOT_TABLES``) are refused.
    """

    def __init__(self, table: Any, columns: tuple[str, ...]) -> None:
        if table.name in HOT_TABLES:
            raise ValueError(f"{table.name}: the hot read's tables are written through Core")
        self._table = table
        self._columns = columns
        self._prepared: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}
        self._core = insert(table).execution_options(render_nulls=True)

    def _prepare(self, dialect: Dialect) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The statement for ``dialect`` and its columns in order, each with its bind
        processor (None where the driver takes the value as it is)."""
        if dialect.name == "postgresql":
            quote = dialect.identifier_preparer.quote
            sql = (
                f"COPY {dialect.identifier_preparer.format_table(self._table)} "
                f"({', '.join(quote(name) for name in self._columns)}) FROM STDIN"
            )
            order = self._columns
        else:
            statement = insert(self._table).values(
                {name: bindparam(name, type_=self._table.c[name].type) for name in self._columns}
            )
            compiled = statement.compile(dialect=dialect)
            sql = str(compiled)
            if compiled.positiontup is None:
                raise ValueError(f"{dialect.name}: a positional paramstyle is expected")
            order = tuple(compiled.positiontup)
            if sorted(order) != sorted(self._columns):
                raise ValueError(f"INSERT parameters {order} are not the columns {self._columns}")
        return sql, tuple(
            (name, self._table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in order
        )

    def execute(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (each a mapping of every column named) in one driver call."""
        if not rows:
            return
        dialect = connection.dialect
        if dialect.name != "sqlite" and (dialect.name, dialect.driver) != ("postgresql", "psycopg"):
            connection.execute(self._core, rows)
            return
        prepared = self._prepared.get(dialect.name)
        if prepared is None:
            prepared = self._prepared.setdefault(dialect.name, self._prepare(dialect))
        sql, columns = prepared
        values = operator.itemgetter(*(name for name, _ in columns))
        converted = [(index, convert) for index, (_, convert) in enumerate(columns) if convert]
        parameters: list[tuple[Any, ...]] = []
        for row in rows:
            given = values(row)
            if converted:
                given = list(given)
                for index, convert in converted:
                    value = given[index]
                    if value is not None:
                        given[index] = convert(value)
            parameters.append(tuple(given))
        if dialect.name == "sqlite":
            connection.exec_driver_sql(sql, parameters)
        else:
            _copy_rows(connection, sql, parameters)


def _copy_rows(connection: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``COPY ... FROM STDIN`` of ``rows`` on the connection's psycopg connection, in its
    transaction; the driver's errors raised as SQLAlchemy's, as ``Connection.execute``
    would."""
    dialect = connection.dialect
    psycopg_connection: Any = connection.connection.driver_connection
    errors = dialect.loaded_dbapi.Error
    try:
        with psycopg_connection.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except errors as exc:
        dropped = dialect.is_disconnect(exc, connection.connection.dbapi_connection, None)
        if dropped:
            # As a Connection does: every pooled connection opened before now is as dead
            # as this one (keys.db.PreparedRead does the same).
            connection.engine.pool._invalidate(connection.connection, exc, _checkin=False)
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, errors, connection_invalidated=dropped, dialect=dialect
        ) from exc


def insert_ignoring_duplicates(session: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, on SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
