"""The usage log: one event per tester request, and the daily totals kept beside it.

A request refused before any key was admitted (no key, an unknown, revoked or suspended key,
an address blocked for failed sign-ins, a key past its rate limit, ...) is not an event: it
is counted in ``usage_refusals`` per (UTC day, key, error code, status, and the client
address when the key is known), so a flood of them grows the database by a bounded number
of rows, not a row per request (docs/usage.md, "Refusals"). The buffer adds them up in
memory and its flusher upserts them, with their share of ``usage_daily``, in one batch.

Billable events (a creation that reserves quota) are inserted in the reservation's own
transaction, so an admitted request always has its event, whatever happens to the worker
afterwards. Every other event goes through a per-process buffer flushed at least every
second and when the process exits gracefully (``flush_buffers``: at interpreter exit, and
from gunicorn's ``worker_exit`` hook, gateway/process/server.py).

Every write here also adds the event's contribution to ``usage_daily`` in the same
transaction, so the per-tester daily report (keys/records/usage_reports.py) never has to scan the
events and can never disagree with them. This module is the only writer of both tables.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlalchemy import String, func, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from keys.db import PreparedInsert
from keys.models import UsageDaily, UsageEvent, UsageRefusal
from keys.process import current_pid

log = logging.getLogger("drawbridge.usage")

FLUSH_INTERVAL_SECONDS = 1.0
MAX_BUFFERED = 50_000
# How a request ended (a usage event's outcome). An answer is ok (below 400), refused (4xx,
# or turned away before any answer) or failed (5xx). A creation is admitted before its
# upstream call, then created, refunded (the backend refused it: nothing is charged) or held
# for an approver.
OK, REFUSED, FAILED = "ok", "refused", "failed"
ADMITTED, CREATED, REFUNDED, HELD = "admitted", "created", "refunded", "held"
OUTCOMES = (OK, REFUSED, FAILED, ADMITTED, CREATED, REFUNDED, HELD)
COUNTS = ("requests", "generations", "video_seconds", "rejections", "failures")

# Widths of the event's text columns: a value is cut to fit rather than have the database
# refuse the whole batch it travels in (PostgreSQL enforces lengths, SQLite does not).
_WIDTHS = {
    column.name: column.type.length
    for column in UsageEvent.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


@dataclass
class UsageRecord:
    at: datetime
    request_id: str
    method: str
    route: str
    status: int
    outcome: str
    key_id: str | None = None
    tester_id: str | None = None
    cohort: str | None = None
    video_id: str | None = None
    error_code: str | None = None
    generations: int = 0
    video_seconds: int = 0
    latency_ms: float | None = None
    upstream_latency_ms: float | None = None
    client_ip: str | None = None
    user_agent: str | None = None


_TALLIED = ("at", "tester_id", "cohort", "status", "outcome", "generations", "video_seconds")
_RECORD_FIELDS = frozenset(field.name for field in fields(UsageRecord))


def _row(record: UsageRecord) -> dict[str, Any]:
    # vars(), not dataclasses.asdict(): every field is a plain value, and asdict's deep copy
    # cost more than the insert (it runs for every request).
    row = dict(vars(record))
    for name, width in _WIDTHS.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > width:
            row[name] = value[:width]
    return row


DailyKey = tuple[date, str, str]
# (UTC day, key id or '', error code or '', status, method, route, client address or '')
RefusalKey = tuple[date, str, str, int, str, str, str]


def tally(event: Mapping[str, Any]) -> tuple[DailyKey, dict[str, int]]:
    """What one event adds to ``usage_daily``: its (UTC day, tester, cohort) and counts.

    Generations and video-seconds count unless the creation was refunded at once (the backend
    refused it); 4xx answers and refusals are rejections; 5xx answers are failures.
    """
    at: datetime = event["at"]
    status, outcome = int(event["status"]), str(event["outcome"])
    charged = outcome != REFUNDED
    key = (at.astimezone(UTC).date(), event["tester_id"] or "", event["cohort"] or "")
    return key, {
        "requests": 1,
        "generations": int(event["generations"] or 0) if charged else 0,
        "video_seconds": int(event["video_seconds"] or 0) if charged else 0,
        "rejections": int(400 <= status < 500 or outcome == REFUSED),
        "failures": int(status >= 500),
    }


# Built once per dialect: this runs with every billable request.
_UPSERTS: dict[str, Any] = {}
_INSERT_EVENT = insert(UsageEvent).execution_options(render_nulls=True)
# The flusher's batch: every record field, in one call (keys/db.py).
_INSERT_EVENTS = PreparedInsert(
    UsageEvent.__table__, tuple(field.name for field in fields(UsageRecord))
)


class DailyTotals:
    """Adds and subtracts event contributions to ``usage_daily`` (an upsert per row)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, changes: Mapping[DailyKey, Mapping[str, int]]) -> None:
        rows = [
            {"day": day, "tester_id": tester_id, "cohort": cohort, **counts}
            for (day, tester_id, cohort), counts in sorted(changes.items())
            if any(counts.values())
        ]
        if not rows:
            return
        # Sorted rows: two flushes that touch the same rows lock them in the same order, so
        # they queue instead of deadlocking.
        self._session.execute(self._upsert(), rows)

    def _upsert(self) -> Any:
        dialect = self._session.get_bind().dialect.name
        if dialect not in _UPSERTS:
            _UPSERTS[dialect] = self._build_upsert(dialect)
        return _UPSERTS[dialect]

    @staticmethod
    def _build_upsert(dialect: str) -> Any:
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement: Any = postgresql.insert(UsageDaily)
        else:
            from sqlalchemy.dialects import sqlite

            statement = sqlite.insert(UsageDaily)
        return statement.on_conflict_do_update(
            index_elements=["day", "tester_id", "cohort"],
            set_={name: getattr(UsageDaily, name) + statement.excluded[name] for name in COUNTS},
        )


_REFUSAL_UPSERTS: dict[str, Any] = {}


def _refusal_upsert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect not in _REFUSAL_UPSERTS:
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement: Any = postgresql.insert(UsageRefusal)
        else:
            from sqlalchemy.dialects import sqlite

            statement = sqlite.insert(UsageRefusal)
        table = UsageRefusal.__table__.c
        _REFUSAL_UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=[
                "day",
                "key_id",
                "error_code",
                "status",
                "method",
                "route",
                "client_ip",
            ],
            set_={
                "requests": table.requests + statement.excluded.requests,
                "first_at": func.least(table.first_at, statement.excluded.first_at)
                if dialect == "postgresql"
                else func.min(table.first_at, statement.excluded.first_at),
                "last_at": func.greatest(table.last_at, statement.excluded.last_at)
                if dialect == "postgresql"
                else func.max(table.last_at, statement.excluded.last_at),
            },
        )
    return _REFUSAL_UPSERTS[dialect]


@dataclass
class RefusalCount:
    """Refusals of one ``RefusalKey`` since the last flush."""

    requests: int
    first_at: datetime
    last_at: datetime


def write_refusals(session: Session, counts: Mapping[RefusalKey, RefusalCount]) -> None:
    """Add counted refusals to ``usage_refusals`` and their share of ``usage_daily`` (the
    requests and rejections of the day's keyless row, '' tester and cohort)."""
    if not counts:
        return
    ordered = sorted(counts.items())
    session.execute(
        _refusal_upsert(session),
        [
            {
                "day": day,
                "key_id": key_id,
                "error_code": code,
                "status": status,
                "method": method,
                "route": route,
                "client_ip": client_ip,
                "requests": count.requests,
                "first_at": count.first_at,
                "last_at": count.last_at,
            }
            for (day, key_id, code, status, method, route, client_ip), count in ordered
        ],
    )
    daily: dict[DailyKey, dict[str, int]] = {}
    for (day, _, _, status, _, _, _), count in ordered:
        into = daily.setdefault((day, "", ""), dict.fromkeys(COUNTS, 0))
        into["requests"] += count.requests
        into["rejections"] += count.requests if 400 <= status < 500 else 0
        into["failures"] += count.requests if status >= 500 else 0
    DailyTotals(session).add(daily)


def totals_of(events: Iterable[Mapping[str, Any]]) -> dict[DailyKey, dict[str, int]]:
    """The ``usage_daily`` changes for a batch of new events."""
    changes: dict[DailyKey, dict[str, int]] = {}
    for event in events:
        key, counts = tally(event)
        into = changes.setdefault(key, dict.fromkeys(COUNTS, 0))
        for name, value in counts.items():
            into[name] += value
    return changes


class UsageLog:
    """Writes events inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._daily = DailyTotals(session)

    def record(self, record: UsageRecord) -> None:
        row = _row(record)
        self._session.execute(_INSERT_EVENT, row)
        self._daily.add(totals_of([row]))

    def complete(self, request_id: str, **values: object) -> None:
        """Fill in what became known after the event was first written."""
        unknown = set(values) - _RECORD_FIELDS
        if unknown:
            raise TypeError(f"not usage event fields: {sorted(unknown)}")
        columns = [getattr(UsageEvent, name) for name in _TALLIED]
        before = self._session.execute(
            select(*columns).where(UsageEvent.request_id == request_id)
        ).first()
        self._session.execute(
            update(UsageEvent)
            .where(UsageEvent.request_id == request_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if before is None:
            return
        old = dict(zip(_TALLIED, before, strict=True))
        key, was = tally(old)
        new_key, now = tally({**old, **values})
        assert new_key == key, "completing an event never moves it to another day or tester"
        self._daily.add({key: {name: now[name] - was[name] for name in COUNTS}})


_BUFFERS: weakref.WeakSet[UsageBuffer] = weakref.WeakSet()


def flush_buffers() -> int:
    """Flush every usage buffer of this process; returns how many events were written."""
    return sum(buffer.flush() for buffer in list(_BUFFERS))


# Also registered in the gunicorn master before it forks, so every worker inherits it.
atexit.register(flush_buffers)


class _InSession(Protocol):
    @property
    def session(self) -> Session: ...


class Transactions(Protocol):
    """What the buffer writes through: the store (keys/store.py), which holds this module's
    UsageLog, so the buffer names only the one method it calls."""

    def transaction(self) -> AbstractContextManager[_InSession]: ...


class UsageBuffer:
    """Batches non-billable events; one background flusher thread per process."""

    def __init__(self, store: Transactions, interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self._store = store
        self._interval = interval
        self._pending: list[UsageRecord] = []
        self._refusals: dict[RefusalKey, RefusalCount] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        _BUFFERS.add(self)

    def add(self, record: UsageRecord) -> None:
        with self._lock:
            if len(self._pending) >= MAX_BUFFERED:
                log.warning("usage buffer full; dropping the oldest event")
                self._pending.pop(0)
            self._pending.append(record)
            self._ensure_flusher()

    def count_refusal(
        self,
        at: datetime,
        key_id: str | None,
        error_code: str | None,
        status: int,
        method: str,
        route: str,
        client_ip: str | None,
    ) -> None:
        """Count a request refused before admission (no event). ``client_ip`` is kept only
        with a known key: a flood of made-up keys from many addresses stays a few rows."""
        key: RefusalKey = (
            at.astimezone(UTC).date(),
            key_id or "",
            (error_code or "")[:64],
            status,
            method[:8],
            route[:64],
            (client_ip or "")[:64] if key_id else "",
        )
        with self._lock:
            count = self._refusals.get(key)
            if count is None:
                if len(self._refusals) >= MAX_BUFFERED:
                    # Memory stays bounded; the counts are written at the next flush.
                    self._wake.set()
                self._refusals[key] = RefusalCount(1, at, at)
            else:
                count.requests += 1
                count.last_at = at
            self._ensure_flusher()

    def pending(self) -> int:
        """Events and refusal counters waiting for the next flush."""
        with self._lock:
            return len(self._pending) + len(self._refusals)

    def _ensure_flusher(self) -> None:
        # Started lazily so each forked gunicorn worker runs its own flusher.
        if self._thread is None or self._pid != current_pid():
            self._pid = current_pid()
            self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the flusher must outlive any one bad flush
                log.exception("usage flush failed")

    def flush(self) -> int:
        """Write everything buffered; returns how many events were written (refusals are
        counted, not events)."""
        with self._lock:
            batch, self._pending = self._pending, []
            refusals, self._refusals = self._refusals, {}
        if refusals:
            self._write_refusals(refusals)
        if not batch:
            return 0
        try:
            self._write([_row(record) for record in batch])
        except (IntegrityError, DataError):
            # One event the database refuses must not hold back the others forever.
            return self._write_one_by_one(batch)
        except Exception:
            self._keep(batch)
            return 0
        return len(batch)

    def _keep(self, batch: list[UsageRecord]) -> None:
        log.exception(
            "could not write %d usage events; keeping them for the next flush", len(batch)
        )
        with self._lock:
            self._pending = batch + self._pending

    def _write_refusals(self, refusals: dict[RefusalKey, RefusalCount]) -> None:
        try:
            with self._store.transaction() as tx:
                write_refusals(tx.session, refusals)
        except Exception:
            log.exception(
                "could not write %d refusal counters; keeping them for the next flush",
                len(refusals),
            )
            with self._lock:
                for key, count in refusals.items():
                    into = self._refusals.get(key)
                    if into is None:
                        self._refusals[key] = count
                    else:
                        into.requests += count.requests
                        into.first_at = min(into.first_at, count.first_at)
                        into.last_at = max(into.last_at, count.last_at)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._store.transaction() as tx:
            # On SQLite the driver's executemany, compiled once (a Core executemany costs a
            # quarter more per row, the ORM's bulk path more still); on PostgreSQL a COPY
            # (keys.db.PreparedInsert). This runs for every request the gateway serves.
            _INSERT_EVENTS.execute(tx.session.connection(), rows)
            DailyTotals(tx.session).add(totals_of(rows))

    def _write_one_by_one(self, batch: list[UsageRecord]) -> int:
        written = 0
        for index, record in enumerate(batch):
            try:
                self._write([_row(record)])
                written += 1
            except (IntegrityError, DataError) as exc:
                log.error(
                    "dropping usage event %s: the database refuses it (%s)",
                    record.request_id,
                    type(exc).__name__,
                )
            except Exception:
                self._keep(batch[index:])
                break
        return written
