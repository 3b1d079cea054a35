"""What auditors read from the usage log: filtered pages, streamed exports, per-tester daily
totals, a key's blast radius, and retention.

Pages and exports are in time order, ``(at, id)``, which the ``(tester_id, at)``,
``(key_id, at)`` and ``(at)`` indexes serve directly (SQLite and PostgreSQL both keep the
row id with the index entry); the keyset cursor is the last event's id. Daily totals come
from ``usage_daily`` (keys/records/usage.py keeps it in step with the events), so the report reads
days x testers rows whatever the number of events; ``daily_from_events`` computes the same
from the raw events, for tests and as the benchmark's baseline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Date, Select, case, cast, delete, func, select, tuple_
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from keys.durations import parse_time
from keys.errors import InvalidInput, NotFound, ProofInvalid, ProofReplayed, ProofRequired
from keys.models import (
    ApiKey,
    Approval,
    ProofKey,
    Tester,
    UsageDaily,
    UsageEvent,
    UsageRefusal,
    Video,
)
from keys.records.usage import COUNTS, OUTCOMES, REFUNDED, REFUSED

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_DAILY_DAYS = 366
DEFAULT_DAILY_DAYS = 30
EXPORT_BATCH = 1000
PRUNE_BATCH = 5000
# A blast-radius report lists this many client IPs, user agents and videos at most (with
# the full counts beside them): an attacker with 100,000 addresses must not make it huge.
REPORT_TOP = 200

FILTERS = ("tester_id", "key_id", "cohort", "route", "status", "outcome", "since", "until")
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_COHORT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ROUTE = re.compile(r"[ -~]{1,64}")
_STATUS = re.compile(r"[1-5](?:\d\d|xx)")

# Refusals of a request that carried the key's right string but no valid proof of
# possession: on a bound key, whoever sent it holds the string only (a leak).
PROOF_REFUSALS = (ProofRequired.code, ProofInvalid.code, ProofReplayed.code)

EVENT_COLUMNS = tuple(column.name for column in UsageEvent.__table__.columns)


def parse_day(text: str, param: str, now: datetime) -> date:
    """The UTC day of a time in any form ``parse_time`` takes: a date (``2026-11-27``), an
    ISO 8601 time with a zone, or a span ago (``1d``, ``7d``). Raises InvalidInput."""
    return parse_time(text, param, now).date()


@dataclass(frozen=True)
class UsageFilter:
    """Which events: every field is optional; ``until`` is exclusive."""

    tester_id: str | None = None
    key_id: str | None = None
    cohort: str | None = None
    route: str | None = None
    status: str | None = None  # "404" or a class, "4xx"
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str | None], now: datetime) -> UsageFilter:
        """From text values (query parameters, CLI options). Raises InvalidInput."""
        values = {name: value for name, value in params.items() if value not in (None, "")}
        for name, pattern, what in (
            ("tester_id", _ID, "a tester id"),
            ("key_id", _ID, "a key id"),
            ("cohort", _COHORT, "a cohort name"),
            ("route", _ROUTE, "a route such as /v1/videos"),
            ("status", _STATUS, "an HTTP status such as 429, or a class such as 4xx"),
        ):
            value = values.get(name)
            if value is not None and not pattern.fullmatch(value):
                raise InvalidInput(f"{name} must be {what}", param=name)
        outcome = values.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}", param="outcome")
        since = parse_time(str(values["since"]), "since", now) if "since" in values else None
        until = parse_time(str(values["until"]), "until", now) if "until" in values else None
        if since is not None and until is not None and until < since:
            raise InvalidInput("until is before since", param="until")
        return cls(
            tester_id=values.get("tester_id"),
            key_id=values.get("key_id"),
            cohort=values.get("cohort"),
            route=values.get("route"),
            status=values.get("status"),
            outcome=outcome,
            since=since,
            until=until,
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.tester_id is not None:
            conditions.append(UsageEvent.tester_id == self.tester_id)
        if self.key_id is not None:
            conditions.append(UsageEvent.key_id == self.key_id)
        if self.cohort is not None:
            conditions.append(UsageEvent.cohort == self.cohort)
        if self.route is not None:
            conditions.append(UsageEvent.route == self.route)
        if self.status is not None:
            if self.status.endswith("xx"):
                low = int(self.status[0]) * 100
                conditions += [UsageEvent.status >= low, UsageEvent.status < low + 100]
            else:
                conditions.append(UsageEvent.status == int(self.status))
        if self.outcome is not None:
            conditions.append(UsageEvent.outcome == self.outcome)
        if self.since is not None:
            conditions.append(UsageEvent.at >= self.since)
        if self.until is not None:
            conditions.append(UsageEvent.at < self.until)
        return conditions


class DailyRow(NamedTuple):
    """One tester's totals for one UTC day (a tuple: reports make many of them)."""

    day: date
    tester_id: str | None
    requests: int = 0
    generations: int = 0
    video_seconds: int = 0
    rejections: int = 0
    failures: int = 0
    approvals_approved: int = 0
    approvals_rejected: int = 0


@dataclass
class KeyReport:
    """Everything one key did in a window: what an incident write-up needs."""

    key_id: str
    tester_id: str
    since: datetime
    until: datetime
    requests: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    generations: int = 0
    video_seconds: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    by_route: list[dict[str, Any]] = field(default_factory=list)
    distinct_client_ips: int = 0
    client_ips: list[dict[str, Any]] = field(default_factory=list)
    distinct_user_agents: int = 0
    user_agents: list[dict[str, Any]] = field(default_factory=list)
    videos_created: int = 0
    videos: list[dict[str, Any]] = field(default_factory=list)
    revoked_at: datetime | None = None
    # Requests refused with this key after it was revoked: who still holds it.
    refused_after_revocation: int = 0
    refused_after_revocation_ips: list[dict[str, Any]] = field(default_factory=list)
    proof_bound: bool = False
    """A proof key is bound to the key now: its string alone is refused."""
    # Requests with the key's string refused for their proof of possession, by code, and
    # where they came from: on a bound key, senders that hold the string but not the key.
    refused_proofs: dict[str, int] = field(default_factory=dict)
    refused_proof_ips: list[dict[str, Any]] = field(default_factory=list)
    # Refusals before admission are counted per UTC day (usage_refusals), not stored as
    # events: those of the days the window touches, by day, code and status. They are in
    # ``requests`` and ``outcomes["refused"]`` too.
    refusals_by_day: list[dict[str, Any]] = field(default_factory=list)


def _utc_day(column: Any, dialect: str) -> Any:
    """The UTC date of a timestamp column, as SQL."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS...' text (keys/db.py UTCDateTime).
    return func.substr(column, 1, 10)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


class UsageReports:
    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    @property
    def _dialect(self) -> str:
        return self._session.get_bind().dialect.name

    # -- events ------------------------------------------------------------------------

    def _events(self, usage_filter: UsageFilter, after: int | None) -> Select[Any]:
        query = select(*UsageEvent.__table__.columns).where(*usage_filter.conditions())
        if after is not None:
            anchor = self._session.execute(
                select(UsageEvent.at).where(UsageEvent.id == after)
            ).scalar_one_or_none()
            if anchor is None:
                raise InvalidInput(
                    "after must be the id of an event from a previous page", param="after"
                )
            query = query.where(tuple_(UsageEvent.at, UsageEvent.id) > tuple_(anchor, after))
        return query.order_by(UsageEvent.at, UsageEvent.id)

    def page(
        self, usage_filter: UsageFilter, after: int | None = None, limit: int = DEFAULT_PAGE
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` events after the event ``after``, and whether more follow.

        Raises InvalidInput (a limit out of range, an unknown cursor)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", param="limit")
        rows = self._session.execute(self._events(usage_filter, after).limit(limit + 1))
        events = [dict(row) for row in rows.mappings()]
        return events[:limit], len(events) > limit

    def stream(
        self, usage_filter: UsageFilter, after: int | None = None, batch: int | None = None
    ) -> Iterator[RowMapping]:
        """Every matching event, read ``batch`` rows at a time (a server-side cursor on
        PostgreSQL): memory stays flat however many there are. Raises InvalidInput."""
        query = self._events(usage_filter, after).execution_options(yield_per=batch or EXPORT_BATCH)
        # Core execution: an export of millions of rows needs no ORM bookkeeping per row.
        yield from self._session.connection().execute(query).mappings()

    # -- daily totals ------------------------------------------------------------------

    def daily_range(
        self, since: str | None, until: str | None, today: date | None = None
    ) -> tuple[date, date]:
        """The inclusive day range of a daily report from text (default: the last 30 days).

        Raises InvalidInput (malformed, backwards, longer than MAX_DAILY_DAYS)."""
        today = today or self._clock().astimezone(UTC).date()
        now = self._clock()
        last = parse_day(until, "until", now) if until else today
        first = (
            parse_day(since, "since", now)
            if since
            else last - timedelta(days=DEFAULT_DAILY_DAYS - 1)
        )
        if last < first:
            raise InvalidInput("until is before since", param="until")
        if (last - first).days >= MAX_DAILY_DAYS:
            raise InvalidInput(
                f"a daily report covers at most {MAX_DAILY_DAYS} days", param="until"
            )
        return first, last

    def daily(
        self,
        first: date,
        last: date,
        tester_id: str | None = None,
        cohort: str | None = None,
    ) -> list[DailyRow]:
        """Per-tester totals for each UTC day from ``first`` to ``last`` (inclusive), with the
        approvers' decisions on the tester's held requests. Rows without a tester are
        requests that presented no valid key."""
        _check_daily_filters(tester_id, cohort)
        query = (
            select(
                UsageDaily.day,
                UsageDaily.tester_id,
                *(_total(getattr(UsageDaily, name)) for name in COUNTS),
            )
            .where(UsageDaily.day >= first, UsageDaily.day <= last)
            .group_by(UsageDaily.day, UsageDaily.tester_id)
        )
        if tester_id is not None:
            query = query.where(UsageDaily.tester_id == tester_id)
        if cohort is not None:
            query = query.where(UsageDaily.cohort == cohort)
        # Core, not ORM, execution and plain tuples: a year of a big program is 100,000 rows.
        result = self._session.connection().execute(query)
        rows = {(row[0], row[1]): tuple(row[2:]) for row in result}
        return self._with_approvals(rows, first, last, tester_id, cohort)

    def daily_from_events(
        self,
        first: date,
        last: date,
        tester_id: str | None = None,
        cohort: str | None = None,
    ) -> list[DailyRow]:
        """The same report computed from the raw events (slow: it reads every event)."""
        _check_daily_filters(tester_id, cohort)
        day = _utc_day(UsageEvent.at, self._dialect)
        # One expression object in SELECT and GROUP BY: PostgreSQL must see the same text.
        who = func.coalesce(UsageEvent.tester_id, "")
        charged = UsageEvent.outcome != REFUNDED
        query = (
            select(
                day.label("day"),
                who.label("tester_id"),
                cast(func.count(), BigInteger),
                _total(_when(charged, UsageEvent.generations)),
                _total(_when(charged, UsageEvent.video_seconds)),
                _total(
                    _when(
                        ((UsageEvent.status >= 400) & (UsageEvent.status < 500))
                        | (UsageEvent.outcome == REFUSED),
                        1,
                    )
                ),
                _total(_when(UsageEvent.status >= 500, 1)),
            )
            .where(UsageEvent.at >= _midnight(first), UsageEvent.at < _midnight(last, 1))
            .group_by(day, who)
        )
        if tester_id is not None:
            query = query.where(UsageEvent.tester_id == tester_id)
        if cohort is not None:
            query = query.where(UsageEvent.cohort == cohort)
        rows = {(_as_date(row[0]), row[1]): tuple(row[2:]) for row in self._session.execute(query)}
        if tester_id is None and cohort is None:
            # Refusals before admission are counted, not events: no tester, no cohort.
            for day, status, count in self._session.execute(
                select(UsageRefusal.day, UsageRefusal.status, _total(UsageRefusal.requests))
                .where(UsageRefusal.day >= first, UsageRefusal.day <= last)
                .group_by(UsageRefusal.day, UsageRefusal.status)
            ):
                key = (_as_date(day), "")
                totals = list(rows.get(key, (0,) * len(COUNTS)))
                totals[0] += count
                totals[3] += count if 400 <= status < 500 else 0
                totals[4] += count if status >= 500 else 0
                rows[key] = tuple(totals)
        return self._with_approvals(rows, first, last, tester_id, cohort)

    def refusals(self, first: date, last: date, key_id: str | None = None) -> list[dict[str, Any]]:
        """Refusals before admission counted for each UTC day from ``first`` to ``last``,
        by key ('' for none), error code and status (client addresses summed)."""
        if key_id is not None and not _ID.fullmatch(key_id):
            raise InvalidInput("key_id must be a key id", param="key_id")
        query = (
            select(
                UsageRefusal.day,
                UsageRefusal.key_id,
                UsageRefusal.error_code,
                UsageRefusal.status,
                _total(UsageRefusal.requests),
                func.min(UsageRefusal.first_at),
                func.max(UsageRefusal.last_at),
            )
            .where(UsageRefusal.day >= first, UsageRefusal.day <= last)
            .group_by(
                UsageRefusal.day, UsageRefusal.key_id, UsageRefusal.error_code, UsageRefusal.status
            )
            .order_by(
                UsageRefusal.day, UsageRefusal.key_id, UsageRefusal.error_code, UsageRefusal.status
            )
        )
        if key_id is not None:
            query = query.where(UsageRefusal.key_id == key_id)
        return [
            {
                "day": _as_date(day),
                "key_id": key or None,
                "error_code": code or None,
                "status": status,
                "requests": int(count),
                "first_seen": first_seen,
                "last_seen": last_seen,
            }
            for day, key, code, status, count, first_seen, last_seen in self._session.execute(query)
        ]

    def _with_approvals(
        self,
        rows: dict[tuple[date, str], tuple[int, ...]],
        first: date,
        last: date,
        tester_id: str | None,
        cohort: str | None,
    ) -> list[DailyRow]:
        day = _utc_day(Approval.decided_at, self._dialect)
        query = (
            select(day.label("day"), Approval.tester_id, Approval.status, func.count())
            .where(
                Approval.decided_at >= _midnight(first), Approval.decided_at < _midnight(last, 1)
            )
            .group_by(day, Approval.tester_id, Approval.status)
        )
        if tester_id is not None:
            query = query.where(Approval.tester_id == tester_id)
        if cohort is not None:
            # Approvals carry no cohort: the tester's current one stands in.
            query = query.join(Tester, Tester.id == Approval.tester_id).where(
                Tester.cohort == cohort
            )
        decisions: dict[tuple[date, str], list[int]] = {}
        for when, who, status, count in self._session.connection().execute(query):
            into = decisions.setdefault((_as_date(when), who), [0, 0])
            if status in ("approved", "rejected"):
                into[status == "rejected"] += int(count)
        nothing, undecided = (0,) * len(COUNTS), (0, 0)
        return [
            DailyRow(
                key[0], key[1] or None, *rows.get(key, nothing), *decisions.get(key, undecided)
            )
            for key in sorted(rows.keys() | decisions.keys())
        ]

    # -- one key's blast radius --------------------------------------------------------

    def key_report(self, key_id: str, since: datetime | None, until: datetime | None) -> KeyReport:
        """Everything the key did from ``since`` (default: its creation) until ``until``
        (default: now). Raises NotFound, InvalidInput (a backwards range)."""
        key = self._session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no key {key_id}", param="key_id")
        since = since or key.created_at
        # Without an ``until`` nothing is cut off, not even what arrives during the report.
        end = until or datetime.max.replace(tzinfo=UTC)
        if until is not None and until < since:
            raise InvalidInput("until is before since", param="until")
        report = KeyReport(
            key.id, key.tester_id, since, until or self._clock(), revoked_at=key.revoked_at
        )
        window = (UsageEvent.key_id == key_id, UsageEvent.at >= since, UsageEvent.at < end)
        charged = UsageEvent.outcome != REFUNDED
        totals = self._session.execute(
            select(
                func.count(),
                func.min(UsageEvent.at),
                func.max(UsageEvent.at),
                func.coalesce(func.sum(_when(charged, UsageEvent.generations)), 0),
                func.coalesce(func.sum(_when(charged, UsageEvent.video_seconds)), 0),
            ).where(*window)
        ).one()
        report.requests, report.first_seen, report.last_seen = totals[0], totals[1], totals[2]
        report.generations, report.video_seconds = int(totals[3]), int(totals[4])
        report.outcomes = dict(
            self._session.execute(
                select(UsageEvent.outcome, func.count())
                .where(*window)
                .group_by(UsageEvent.outcome)
                .order_by(UsageEvent.outcome)
            ).all()
        )
        report.by_route = [
            {"route": route, "method": method, "status": status, "count": count}
            for route, method, status, count in self._session.execute(
                select(UsageEvent.route, UsageEvent.method, UsageEvent.status, func.count())
                .where(*window)
                .group_by(UsageEvent.route, UsageEvent.method, UsageEvent.status)
                .order_by(func.count().desc(), UsageEvent.route, UsageEvent.status)
                .limit(REPORT_TOP)
            )
        ]
        report.distinct_client_ips, report.client_ips = self._top(
            UsageEvent.client_ip, "client_ip", window
        )
        report.distinct_user_agents, report.user_agents = self._top(
            UsageEvent.user_agent, "user_agent", window
        )
        videos = (Video.tester_id == key.tester_id, Video.key_id == key_id)
        videos_window = (*videos, Video.created_at >= since, Video.created_at < end)
        report.videos_created = self._session.execute(
            select(func.count()).select_from(Video).where(*videos_window)
        ).scalar_one()
        report.videos = [
            {
                "id": video.id,
                "created_at": video.created_at,
                "status": video.status,
                "video_seconds": video.video_seconds,
                "deleted_at": video.deleted_at,
            }
            for video in self._session.scalars(
                select(Video).where(*videos_window).order_by(Video.created_seq).limit(REPORT_TOP)
            )
        ]
        report.proof_bound = (
            self._session.execute(
                select(ProofKey.id).where(ProofKey.key_id == key_id, ProofKey.removed_at.is_(None))
            ).first()
            is not None
        )
        proofs = (*window, UsageEvent.error_code.in_(PROOF_REFUSALS))
        counted = self._session.execute(
            select(UsageEvent.error_code, func.count())
            .where(*proofs)
            .group_by(UsageEvent.error_code)
        )
        report.refused_proofs = dict.fromkeys(PROOF_REFUSALS, 0)
        for code, count in counted:
            report.refused_proofs[str(code)] = int(count)
        _, report.refused_proof_ips = self._top(UsageEvent.client_ip, "client_ip", proofs)
        if key.revoked_at is not None:
            refused = (
                UsageEvent.key_id == key_id,
                UsageEvent.at >= max(key.revoked_at, since),
                UsageEvent.at < end,
                UsageEvent.outcome == REFUSED,
            )
            report.refused_after_revocation = self._session.execute(
                select(func.count()).where(*refused)
            ).scalar_one()
            _, report.refused_after_revocation_ips = self._top(
                UsageEvent.client_ip, "client_ip", refused
            )
        self._add_counted_refusals(report, window)
        return report

    def _add_counted_refusals(self, report: KeyReport, window: tuple[Any, ...]) -> None:
        """Fold in the key's refusals counted per day (usage_refusals) on the days of the
        window: requests, outcomes, routes, client addresses, refusals after revocation.
        (A counted refusal keeps no user agent.)"""
        first = report.since.astimezone(UTC).date()
        last = report.until.astimezone(UTC).date()
        rows = self._session.execute(
            select(
                UsageRefusal.day,
                UsageRefusal.error_code,
                UsageRefusal.status,
                UsageRefusal.method,
                UsageRefusal.route,
                UsageRefusal.client_ip,
                UsageRefusal.requests,
                UsageRefusal.first_at,
                UsageRefusal.last_at,
            ).where(
                UsageRefusal.key_id == report.key_id,
                UsageRefusal.day >= first,
                UsageRefusal.day <= last,
            )
        ).all()
        if not rows:
            return
        by_day: dict[tuple[date, str, int], list[Any]] = {}
        routes = {(r["route"], r["method"], r["status"]): r["count"] for r in report.by_route}
        addresses: dict[str, dict[str, Any]] = {}
        revoked: dict[str, dict[str, Any]] = {}
        proofs: dict[str, dict[str, Any]] = {}
        for day, code, status, method, route, client_ip, count, first_at, last_at in rows:
            count = int(count)
            report.requests += count
            report.outcomes[REFUSED] = report.outcomes.get(REFUSED, 0) + count
            report.first_seen = min(report.first_seen or first_at, first_at)
            report.last_seen = max(report.last_seen or last_at, last_at)
            into = by_day.setdefault((_as_date(day), code, status), [0, first_at, last_at])
            into[0] += count
            into[1], into[2] = min(into[1], first_at), max(into[2], last_at)
            routes[(route, method, status)] = routes.get((route, method, status), 0) + count
            targets = [addresses]
            # A key refused as revoked was refused after its revocation, by definition.
            if code == "key_revoked" and report.revoked_at is not None:
                report.refused_after_revocation += count
                targets.append(revoked)
            # The key's string without its proof key: who holds a leaked string.
            if code in PROOF_REFUSALS:
                report.refused_proofs[code] = report.refused_proofs.get(code, 0) + count
                targets.append(proofs)
            for target in targets:
                seen = target.setdefault(
                    client_ip, {"count": 0, "first_seen": first_at, "last_seen": last_at}
                )
                seen["count"] += count
                seen["first_seen"] = min(seen["first_seen"], first_at)
                seen["last_seen"] = max(seen["last_seen"], last_at)
        report.refusals_by_day = [
            {
                "day": day,
                "error_code": code or None,
                "status": status,
                "requests": count,
                "first_seen": first_at,
                "last_seen": last_at,
            }
            for (day, code, status), (count, first_at, last_at) in sorted(by_day.items())
        ][:REPORT_TOP]
        report.by_route = [
            {"route": route, "method": method, "status": status, "count": count}
            for (route, method, status), count in sorted(
                routes.items(), key=lambda item: (-item[1], item[0][0], item[0][2])
            )
        ][:REPORT_TOP]
        known = [ip for ip in addresses if ip]
        if known:
            also_in_events = self._session.execute(
                select(func.count(func.distinct(UsageEvent.client_ip))).where(
                    *window, UsageEvent.client_ip.in_(known)
                )
            ).scalar_one()
            report.distinct_client_ips += len(known) - int(also_in_events)
        report.client_ips = _merged(report.client_ips, addresses)
        report.refused_after_revocation_ips = _merged(report.refused_after_revocation_ips, revoked)
        report.refused_proof_ips = _merged(report.refused_proof_ips, proofs)

    def _top(
        self, column: Any, name: str, conditions: tuple[ColumnElement[bool], ...]
    ) -> tuple[int, list[dict[str, Any]]]:
        """How many distinct values, and the most frequent with counts and first/last seen."""
        distinct = self._session.execute(
            select(func.count(func.distinct(column))).where(*conditions)
        ).scalar_one()
        rows = self._session.execute(
            select(column, func.count(), func.min(UsageEvent.at), func.max(UsageEvent.at))
            .where(*conditions)
            .group_by(column)
            .order_by(func.count().desc(), column)
            .limit(REPORT_TOP)
        )
        return int(distinct), [
            {name: value, "count": count, "first_seen": first, "last_seen": last}
            for value, count, first, last in rows
        ]

    # -- retention ---------------------------------------------------------------------

    def prune_batch(self, before: datetime, batch: int = PRUNE_BATCH) -> int:
        """Delete up to ``batch`` of the oldest events older than ``before``; returns how
        many. The daily totals stay: they hold no addresses or user agents."""
        oldest = (
            select(UsageEvent.id)
            .where(UsageEvent.at < before)
            .order_by(UsageEvent.at)
            .limit(batch)
            .scalar_subquery()
        )
        result = self._session.execute(
            delete(UsageEvent).where(UsageEvent.id.in_(oldest)),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def count_before(self, before: datetime) -> int:
        return self._session.execute(
            select(func.count()).select_from(UsageEvent).where(UsageEvent.at < before)
        ).scalar_one()


def _merged(top: list[dict[str, Any]], counted: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A top-addresses list with counted refusals added (their '' address left out)."""
    by_ip = {row["client_ip"]: dict(row) for row in top}
    for client_ip, seen in counted.items():
        if not client_ip:
            continue
        into = by_ip.get(client_ip)
        if into is None:
            by_ip[client_ip] = {"client_ip": client_ip, **seen}
            continue
        into["count"] += seen["count"]
        into["first_seen"] = min(into["first_seen"], seen["first_seen"])
        into["last_seen"] = max(into["last_seen"], seen["last_seen"])
    return sorted(by_ip.values(), key=lambda row: (-row["count"], str(row["client_ip"])))[
        :REPORT_TOP
    ]


def _total(column: Any) -> Any:
    # An integer on every backend (PostgreSQL's SUM of a BIGINT is NUMERIC).
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


def _when(condition: ColumnElement[bool], value: Any) -> Any:
    return case((condition, value), else_=0)


def _midnight(day: date, plus_days: int = 0) -> datetime:
    return datetime.combine(day + timedelta(days=plus_days), datetime.min.time(), UTC)


def _check_daily_filters(tester_id: str | None, cohort: str | None) -> None:
    if tester_id is not None and not _ID.fullmatch(tester_id):
        raise InvalidInput("tester_id must be a tester id", param="tester_id")
    if cohort is not None and not _COHORT.fullmatch(cohort):
        raise InvalidInput("cohort must be a cohort name", param="cohort")


__all__ = [
    "EVENT_COLUMNS",
    "FILTERS",
    "MAX_PAGE",
    "DailyRow",
    "KeyReport",
    "UsageFilter",
    "UsageReports",
    "parse_day",
    "parse_time",
]
