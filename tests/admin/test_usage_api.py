"""The usage log and the auditor plane: request ids, billable events written with the
reservation, the daily totals kept in step with the events, filters, keyset pages, streamed
exports, a key's blast radius, retention, bad input, and read-only auditors."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.orm import Session

from gateway.state import GatewayState
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.db import normalise_url
from keys.migrate import upgrade
from keys.models import AuditEntry, QuotaUsage, UsageDaily, UsageEvent, Video
from keys.records.usage import UsageBuffer, UsageLog, UsageRecord
from keys.records.usage_reports import UsageReports
from keys.store import Store
from tests.flows import FakeBackend, admin_call, create_video, ok
from tests.helpers import Cli, FakeClock, assert_error, bearer

USAGE = "/usage"
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


def record(store: Store, at: datetime, **fields: Any) -> str:
    """Write one event as the gateway would (through UsageLog); returns its request id."""
    request_id = fields.pop("request_id", None) or f"req_{uuid.uuid4().hex}"
    values: dict[str, Any] = {
        "method": "GET",
        "route": "/v1/videos",
        "status": 200,
        "outcome": "ok",
        **fields,
    }
    with store.transaction() as tx:
        tx.usage.record(UsageRecord(at=at, request_id=request_id, **values))
    return request_id


def event_id(store: Store, request_id: str) -> int:
    with store.read() as tx:
        return tx.session.execute(
            select(UsageEvent.id).where(UsageEvent.request_id == request_id)
        ).scalar_one()


def listing(client: Any, token: IssuedToken, query: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(admin_call(client, token, "GET", f"{USAGE}?{query}"))
    return body


T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


# -- request ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/v1/me", 401),
        ("GET", "/v1/videos", 401),
        ("GET", "/nowhere", 404),
        ("DELETE", "/healthz", 405),
        ("GET", "/v1//videos", 400),
        ("GET", "/admin/v1/usage", 401),
        ("GET", "/admin/v1/openapi.json", 200),
    ],
)
def test_every_response_carries_a_fresh_request_id(
    client: Any, method: str, path: str, status: int
) -> None:
    first = client.open(path, method=method)
    second = client.open(path, method=method)

    assert first.status_code == status
    assert REQUEST_ID.fullmatch(first.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


def test_the_request_id_is_the_usage_events(
    client: Any, make_key: Callable[..., IssuedKey], state: GatewayState
) -> None:
    key = make_key()
    response = client.get("/v1/me", headers=bearer(key.secret))
    state.usage.flush()

    with state.store.read() as tx:
        event = tx.session.scalars(
            select(UsageEvent).where(UsageEvent.request_id == response.headers["X-Request-Id"])
        ).one()
    assert (event.key_id, event.route, event.status) == (key.key.id, "/v1/me", 200)


# -- billable events and the reservation -------------------------------------------------


@pytest.mark.both_databases
def test_a_billable_event_is_written_in_the_reservations_transaction(
    client: Any,
    upstream: FakeBackend,
    make_key: Callable[..., IssuedKey],
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = make_key()

    def broken(self: UsageLog, record: UsageRecord) -> None:
        raise RuntimeError("the event cannot be written")

    monkeypatch.setattr(UsageLog, "record", broken)
    assert create_video(client, key).status_code == 500
    with store.read() as tx:
        # Without its event, the reservation did not happen either.
        used = tx.session.scalars(
            select(QuotaUsage.used).where(QuotaUsage.tester_id == key.key.tester_id)
        ).all()
        assert set(used) <= {0}
        assert tx.session.scalar(select(func.count()).select_from(Video)) == 0
    assert upstream.creates == []

    monkeypatch.undo()
    response = create_video(client, key)
    assert response.status_code == 200
    with store.read() as tx:
        event = tx.session.scalars(
            select(UsageEvent).where(UsageEvent.request_id == response.headers["X-Request-Id"])
        ).one()
        # Visible without any flush: it was committed with the reservation.
        assert (event.outcome, event.status, event.generations) == ("created", 200, 1)
        assert event.video_id == response.get_json()["id"]


@pytest.mark.both_databases
def test_a_refunded_generation_is_not_counted_in_the_daily_totals(
    client: Any, upstream: FakeBackend, make_key: Callable[..., IssuedKey], store: Store
) -> None:
    key = make_key()
    upstream.failures.append(500)
    assert create_video(client, key).status_code == 502
    assert create_video(client, key).status_code == 200

    with store.read() as tx:
        [row] = tx.usage_reports.daily(date(2026, 11, 27), date(2026, 11, 27), key.key.tester_id)
    assert (row.requests, row.generations, row.failures) == (2, 1, 1)


# -- daily totals ------------------------------------------------------------------------


def _random_events(store: Store, rng: random.Random, count: int) -> None:
    testers = [None, "tst_a", "tst_b", "tst_c"]
    outcomes = ["ok", "refused", "failed", "admitted"]
    buffer = UsageBuffer(store, interval=3600)
    for n in range(count):
        tester = rng.choice(testers)
        status = rng.choice([200, 200, 401, 403, 429, 502, 503])
        fields = {
            "tester_id": tester,
            "cohort": rng.choice(["default", "beta"]) if tester else None,
            "key_id": f"key_{tester}" if tester else None,
            "status": status,
            "outcome": rng.choice(outcomes),
            "generations": rng.choice([0, 1]),
            "video_seconds": rng.choice([0, 4, 8]),
        }
        at = T0 + timedelta(hours=rng.randrange(0, 24 * 6), seconds=n)
        if n % 3 == 0:
            buffer.add(
                UsageRecord(at=at, request_id=f"req_buf{n}", method="GET", route="/x", **fields)
            )
            continue
        request_id = record(store, at, request_id=f"req_log{n}", **fields)
        if n % 4 == 1:
            with store.transaction() as tx:
                tx.usage.complete(
                    request_id,
                    outcome=rng.choice(["created", "refunded", "held"]),
                    status=rng.choice([200, 400, 502]),
                )
    buffer.flush()


def _decide(store: Store, clock: FakeClock, key: IssuedKey, approve: bool, at: datetime) -> None:
    clock.now = at
    with store.transaction() as tx:
        approval = tx.approvals.hold(
            "generation", key.key.tester_id, key.key.id, f"video_{uuid.uuid4().hex}", "rule"
        )
        tx.approvals.decide(approval.id, approve, "approver:test", None if approve else "no")


@pytest.mark.both_databases
def test_daily_totals_equal_a_recount_of_the_raw_events(
    store: Store,
    clock: FakeClock,
    make_tester: Callable[..., Any],
    make_key: Callable[..., IssuedKey],
) -> None:
    _random_events(store, random.Random(7), 400)
    testers = [make_tester(), make_tester(cohort="beta")]
    keys = [make_key(tester.id) for tester in testers]
    _decide(store, clock, keys[0], True, T0 + timedelta(days=1, hours=3))
    _decide(store, clock, keys[0], False, T0 + timedelta(days=1, hours=4))
    _decide(store, clock, keys[1], True, T0 + timedelta(days=2))

    first, last = date(2026, 11, 19), date(2026, 11, 27)
    with store.read() as tx:
        reports = tx.usage_reports
        for tester_id, cohort in [
            (None, None),
            ("tst_a", None),
            (None, "beta"),
            ("tst_b", "default"),
        ]:
            assert reports.daily(first, last, tester_id, cohort) == reports.daily_from_events(
                first, last, tester_id, cohort
            )
        rows = reports.daily(first, last)
    assert sum(row.requests for row in rows) == 400
    decided = {
        (row.day, row.tester_id): (row.approvals_approved, row.approvals_rejected)
        for row in rows
        if row.tester_id in {t.id for t in testers}
    }
    assert decided == {
        (date(2026, 11, 21), testers[0].id): (1, 1),
        (date(2026, 11, 22), testers[1].id): (1, 0),
    }


@pytest.mark.both_databases
def test_daily_report_counts_each_kind_of_request(
    client: Any, auditor: IssuedToken, store: Store
) -> None:
    day = datetime(2026, 11, 26, 23, 59, tzinfo=UTC)
    record(
        store,
        day,
        tester_id="tst_1",
        cohort="default",
        generations=1,
        video_seconds=8,
        outcome="created",
    )
    record(store, day, tester_id="tst_1", cohort="default", status=429, outcome="refused")
    record(store, day, tester_id="tst_1", cohort="default", status=503, outcome="failed")
    record(store, day + timedelta(minutes=2), tester_id="tst_1", cohort="default")
    record(store, day, status=401, outcome="refused")  # no valid key: no tester

    body = ok(
        admin_call(client, auditor, "GET", f"{USAGE}/daily?since=2026-11-26&until=2026-11-27")
    )

    assert (body["since"], body["until"]) == ("2026-11-26", "2026-11-27")
    rows = {(row["day"], row["tester_id"]): row for row in body["data"]}
    assert rows[("2026-11-26", "tst_1")] == {
        "day": "2026-11-26",
        "tester_id": "tst_1",
        "requests": 3,
        "generations": 1,
        "video_seconds": 8,
        "rejections": 1,
        "failures": 1,
        "approvals_approved": 0,
        "approvals_rejected": 0,
    }
    assert rows[("2026-11-27", "tst_1")]["requests"] == 1
    assert rows[("2026-11-26", None)]["rejections"] == 1
    only = ok(admin_call(client, auditor, "GET", f"{USAGE}/daily?since=2026-11-01&tester_id=tst_1"))
    assert {row["tester_id"] for row in only["data"]} == {"tst_1"}


@pytest.fixture
def database_at_0003(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database migrated to the revision before the daily totals existed."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        yield url
        return
    server: str = request.getfixturevalue("postgres_server")
    admin_engine = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
    name = f"drawbridge_test_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


@pytest.mark.both_databases
def test_the_migration_fills_the_daily_totals_from_existing_events(database_at_0003: str) -> None:
    engine = create_engine(normalise_url(database_at_0003))
    try:
        upgrade(engine, "0003")
        rng = random.Random(3)
        rows = [
            {
                "at": T0 + timedelta(hours=rng.randrange(0, 72)),
                "request_id": f"req_old{n}",
                "tester_id": rng.choice([None, "tst_a", "tst_b"]),
                "cohort": "default",
                "method": "POST",
                "route": "/v1/videos",
                "status": rng.choice([0, 200, 429, 502]),
                "outcome": rng.choice(["ok", "refunded", "created"]),
                "generations": 1,
                "video_seconds": 4,
            }
            for n in range(120)
        ]
        with engine.begin() as connection:
            connection.execute(insert(UsageEvent.__table__), rows)
        upgrade(engine)
        with Session(engine) as session:
            reports = UsageReports(session, lambda: T0)
            first, last = date(2026, 11, 19), date(2026, 11, 24)
            assert reports.daily(first, last) == reports.daily_from_events(first, last)
            assert sum(row.requests for row in reports.daily(first, last)) == 120
    finally:
        engine.dispose()


# -- events: filters and pages -----------------------------------------------------------


@pytest.fixture
def seeded(store: Store) -> dict[str, str]:
    """Six events of two testers, ids by name."""
    names = {
        "a_create": record(
            store,
            T0,
            tester_id="tst_a",
            key_id="key_a1",
            cohort="beta",
            method="POST",
            status=200,
            outcome="created",
            generations=1,
            video_seconds=8,
        ),
        "a_quota": record(
            store,
            T0 + timedelta(minutes=1),
            tester_id="tst_a",
            key_id="key_a1",
            cohort="beta",
            method="POST",
            status=429,
            outcome="refused",
            error_code="quota_exceeded",
        ),
        "a_me": record(
            store,
            T0 + timedelta(minutes=2),
            tester_id="tst_a",
            key_id="key_a2",
            cohort="beta",
            route="/v1/me",
        ),
        "b_list": record(
            store, T0 + timedelta(hours=1), tester_id="tst_b", key_id="key_b1", cohort="default"
        ),
        "b_fail": record(
            store,
            T0 + timedelta(hours=2),
            tester_id="tst_b",
            key_id="key_b1",
            cohort="default",
            status=502,
            outcome="failed",
        ),
        "revoked": record(
            store,
            T0 + timedelta(days=1),
            key_id="key_a1",
            status=401,
            outcome="refused",
            error_code="key_revoked",
        ),
    }
    return names


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["a_create", "a_quota", "a_me", "b_list", "b_fail", "revoked"]),
        ("tester_id=tst_a", ["a_create", "a_quota", "a_me"]),
        ("key_id=key_a1", ["a_create", "a_quota", "revoked"]),
        ("cohort=default", ["b_list", "b_fail"]),
        ("route=/v1/me", ["a_me"]),
        ("status=429", ["a_quota"]),
        ("status=4xx", ["a_quota", "revoked"]),
        ("outcome=failed", ["b_fail"]),
        ("since=2026-11-20T10:30:00Z", ["b_list", "b_fail", "revoked"]),
        ("until=2026-11-20T11:00:00%2B00:00", ["a_create", "a_quota", "a_me"]),
        ("since=2026-11-20T11:00:00Z&until=2026-11-20T12:00:00Z", ["b_list"]),
        ("since=2026-11-21", ["revoked"]),
        ("since=8d&status=2xx&tester_id=tst_b", ["b_list"]),
        ("tester_id=tst_nobody", []),
    ],
)
def test_usage_filters(
    client: Any,
    auditor: IssuedToken,
    store: Store,
    seeded: dict[str, str],
    query: str,
    expected: list[str],
) -> None:
    body = listing(client, auditor, query)

    by_request = {value: name for name, value in seeded.items()}
    assert [by_request[event["request_id"]] for event in body["data"]] == expected
    assert body["has_more"] is False and body["next_after"] is None


@pytest.mark.both_databases
def test_events_are_whole(client: Any, auditor: IssuedToken, seeded: dict[str, str]) -> None:
    [event] = listing(client, auditor, "status=429")["data"]

    assert event["at"] == "2026-11-20T10:01:00Z"
    assert {
        k: event[k] for k in ("tester_id", "key_id", "cohort", "method", "route", "error_code")
    } == {
        "tester_id": "tst_a",
        "key_id": "key_a1",
        "cohort": "beta",
        "method": "POST",
        "route": "/v1/videos",
        "error_code": "quota_exceeded",
    }
    assert set(event) >= {
        "id",
        "request_id",
        "latency_ms",
        "upstream_latency_ms",
        "client_ip",
        "user_agent",
        "video_id",
        "generations",
        "video_seconds",
        "outcome",
        "status",
    }


@pytest.mark.both_databases
def test_keyset_pages_walk_every_event_once_in_time_order(
    client: Any, auditor: IssuedToken, store: Store
) -> None:
    rng = random.Random(11)
    # Ties on ``at`` included: the id breaks them.
    written = [record(store, T0 + timedelta(seconds=rng.randrange(0, 5))) for _ in range(23)]
    seen: list[dict[str, Any]] = []
    query = "limit=5"
    pages = 0
    while True:
        body = listing(client, auditor, query)
        pages += 1
        seen += body["data"]
        if not body["has_more"]:
            break
        assert body["next_after"] == body["data"][-1]["id"]
        query = f"limit=5&after={body['next_after']}"
    assert pages == 5
    assert sorted(e["request_id"] for e in seen) == sorted(written)
    assert [(e["at"], e["id"]) for e in seen] == sorted((e["at"], e["id"]) for e in seen)
    assert len({e["id"] for e in seen}) == 23


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code", "param"),
    [
        ("?since=yesterday", "invalid_value", "since"),
        ("?since=2026-11-20T10:00:00", "invalid_value", "since"),  # no zone
        ("?until=2026-13-01", "invalid_value", "until"),
        ("?since=999999w", "invalid_value", "since"),
        ("?until=9999-12-31T23:59:59-05:00", "invalid_value", "until"),
        ("?since=0001-01-01T00:00:00%2B05:00", "invalid_value", "since"),
        ("?since=2026-11-20&until=2026-11-19", "invalid_value", "until"),
        ("?limit=0", "invalid_value", "limit"),
        ("?limit=1001", "invalid_value", "limit"),
        ("?limit=99999999999999999999999999999", "invalid_value", "limit"),
        ("?limit=-5", "invalid_value", "limit"),
        ("?limit=%C2%B2", "invalid_value", "limit"),
        ("?after=-1", "invalid_value", "after"),
        ("?after=424242", "invalid_value", "after"),
        ("?status=abc", "invalid_value", "status"),
        ("?status=600", "invalid_value", "status"),
        ("?outcome=great", "invalid_value", "outcome"),
        ("?tester_id=a%20b", "invalid_value", "tester_id"),
        ("?cohort=BETA", "invalid_value", "cohort"),
        ("?route=%0a", "invalid_value", "route"),
        ("?tester=tst_a", "unknown_parameter", "tester"),
        ("?tester_id=a&tester_id=b", "invalid_value", "tester_id"),
        ("/daily?since=11/20/2026", "invalid_value", "since"),
        ("/daily?since=2026-11-20&until=2026-11-01", "invalid_value", "until"),
        ("/daily?since=2024-01-01&until=2026-01-01", "invalid_value", "until"),
        ("/daily?format=csv", "unknown_parameter", "format"),
        ("/export?format=xml", "invalid_value", "format"),
        ("/export?since=2026-11-20&until=2026-11-19", "invalid_value", "until"),
        ("/export?limit=10", "unknown_parameter", "limit"),
        ("/export?after=424242", "invalid_value", "after"),
    ],
)
def test_bad_input_is_a_400_in_the_one_error_shape(
    client: Any, auditor: IssuedToken, path: str, code: str, param: str
) -> None:
    assert_error(admin_call(client, auditor, "GET", USAGE + path), 400, code, param)


def test_a_key_in_a_usage_query_is_refused(
    client: Any, auditor: IssuedToken, make_key: Callable[..., IssuedKey]
) -> None:
    secret = make_key().secret
    assert_error(
        admin_call(client, auditor, "GET", f"{USAGE}?user_agent={secret}"),
        400,
        "api_key_in_query",
        "user_agent",
    )


def test_only_admins_and_auditors_read_usage(
    client: Any, make_token: Callable[..., IssuedToken], make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key()
    approver = make_token("approver")
    for path in (USAGE, f"{USAGE}/daily", f"{USAGE}/export", f"/keys/{key.key.id}/report"):
        assert_error(admin_call(client, approver, "GET", path), 403, "permission_denied")
        response = client.get(f"/admin/v1{path}", headers=bearer(key.secret))
        assert response.status_code == 401
        assert admin_call(client, make_token("admin"), "GET", path).status_code == 200
        assert admin_call(client, make_token("auditor"), "GET", path).status_code == 200


@pytest.mark.both_databases
def test_auditors_cannot_write_and_nothing_changes(
    client: Any, auditor: IssuedToken, make_key: Callable[..., IssuedKey], store: Store
) -> None:
    key = make_key()
    with store.read() as tx:
        trail_before = tx.session.scalar(select(func.count()).select_from(AuditEntry))

    for method, path, payload in [
        ("POST", f"/keys/{key.key.id}/revoke", {"reason": "auditor tries"}),
        ("POST", f"/keys/{key.key.id}/suspend", {"reason": "auditor tries"}),
        ("POST", f"/testers/{key.key.tester_id}/revoke-keys", {"reason": "auditor tries"}),
        ("POST", f"/testers/{key.key.tester_id}/keys", {}),
        ("POST", "/lockdown", {"lockdown": True, "reason": "auditor tries"}),
        ("POST", "/tokens", {"name": "mine", "role": "admin"}),
        ("PUT", "/cohorts/default/policy", {}),
    ]:
        assert_error(admin_call(client, auditor, method, path, payload), 403, "permission_denied")
    for method in ("POST", "PUT", "DELETE"):
        for path in (USAGE, f"{USAGE}/daily", f"{USAGE}/export", f"/keys/{key.key.id}/report"):
            assert_error(admin_call(client, auditor, method, path, {}), 405, "method_not_allowed")

    with store.read() as tx:
        assert tx.keys.get(key.key.id).status == "active"
        assert len(tx.keys.list(key.key.tester_id)) == 1
        assert not tx.lockdown.state().lockdown
        assert tx.session.scalar(select(func.count()).select_from(AuditEntry)) == trail_before


# -- export --------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_export_streams_csv_and_jsonl_with_the_filters(
    client: Any,
    auditor: IssuedToken,
    store: Store,
    seeded: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keys.records.usage_reports

    monkeypatch.setattr(keys.records.usage_reports, "EXPORT_BATCH", 2)  # several batches
    record(store, T0 + timedelta(days=2), tester_id="tst_a", user_agent='=HYPERLINK("http://evil")')

    response = client.get(
        f"/admin/v1{USAGE}/export?tester_id=tst_a", headers=bearer(auditor.secret), buffered=False
    )
    assert response.status_code == 200
    assert response.is_streamed
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="usage-\d{8}T\d{6}Z\.csv"', response.headers["Content-Disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    paged = listing(client, auditor, "tester_id=tst_a")["data"]
    assert [row["request_id"] for row in rows] == [event["request_id"] for event in paged]
    assert rows[-1]["user_agent"] == '\'=HYPERLINK("http://evil")'  # no formula in a spreadsheet
    assert rows[0]["tester_id"] == "tst_a" and rows[0]["video_seconds"] == "8"

    response = client.get(
        f"/admin/v1{USAGE}/export?format=jsonl&key_id=key_a1", headers=bearer(auditor.secret)
    )
    assert response.headers["Content-Type"] == "application/jsonl; charset=utf-8"
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [line["request_id"] for line in lines] == [
        seeded["a_create"],
        seeded["a_quota"],
        seeded["revoked"],
    ]
    assert lines == listing(client, auditor, "key_id=key_a1")["data"]


def test_export_of_nothing_is_a_header(client: Any, auditor: IssuedToken) -> None:
    response = admin_call(client, auditor, "GET", f"{USAGE}/export")
    assert response.get_data(as_text=True).splitlines() == [
        "id,at,request_id,key_id,tester_id,cohort,method,route,video_id,status,outcome,"
        "error_code,generations,video_seconds,latency_ms,upstream_latency_ms,client_ip,user_agent"
    ]
    assert admin_call(client, auditor, "GET", f"{USAGE}/export?format=jsonl").get_data() == b""


# -- what a tester's client controls is cleaned ----------------------------------------------


def test_keys_in_user_agents_and_paths_never_reach_the_usage_log(
    client: Any, make_key: Callable[..., IssuedKey], state: GatewayState
) -> None:
    key = make_key()
    other = make_key()
    client.get("/v1/me", headers={**bearer(key.secret), "User-Agent": f"my-bot key={other.secret}"})
    client.get(f"/v1/videos/{other.secret}", headers=bearer(key.secret))
    client.get(f"/v1/videos/x_{other.secret}", headers=bearer(key.secret))
    state.usage.flush()

    with state.store.read() as tx:
        dump = json.dumps(
            [dict(row) for row in tx.session.execute(select(UsageEvent.__table__)).mappings()],
            default=str,
        )
    assert other.secret not in dump and key.secret not in dump
    assert "my-bot key=[REDACTED]" in dump
    with state.store.read() as tx:
        video_ids = tx.session.scalars(
            select(UsageEvent.video_id).where(UsageEvent.route == "/v1/videos/<video_id>")
        ).all()
    assert video_ids == ["[REDACTED]", "[REDACTED]"]


@pytest.mark.both_databases
def test_an_event_the_database_refuses_does_not_hold_back_the_others(store: Store) -> None:
    buffer = UsageBuffer(store, interval=3600)
    at = T0
    for request_id in ("req_one", "req_dup", "req_dup", "req_two"):
        buffer.add(
            UsageRecord(
                at=at,
                request_id=request_id,
                method="GET",
                route="/v1/me",
                status=200,
                outcome="ok",
                user_agent="x" * 1000,
            )
        )

    assert buffer.flush() == 3
    assert buffer.pending() == 0
    with store.read() as tx:
        agents = tx.session.scalars(select(UsageEvent.user_agent)).all()
        assert len(agents) == 3 and {len(agent or "") for agent in agents} == {300}
        assert tx.session.scalar(select(func.sum(UsageDaily.requests))) == 3


# -- blast radius ------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_blast_radius_of_a_leaked_key(
    client: Any,
    upstream: FakeBackend,
    admin: IssuedToken,
    auditor: IssuedToken,
    make_key: Callable[..., IssuedKey],
    state: GatewayState,
    clock: FakeClock,
) -> None:
    key = make_key()
    bystander = make_key(key.key.tester_id)
    start = clock.now

    def as_client(ip: str, agent: str) -> dict[str, Any]:
        return {
            "environ_base": {"REMOTE_ADDR": ip},
            "headers": {**bearer(key.secret), "User-Agent": agent},
        }

    client.get("/v1/me", **as_client("198.51.100.1", "old-sdk/0.1"))
    clock.advance(hours=1)
    since = clock.now
    created = [
        client.post(
            "/v1/videos", json={"prompt": "kite"}, **as_client("10.0.0.1", "sdk/1.0")
        ).get_json()["id"]
        for _ in range(2)
    ]
    clock.advance(minutes=1)
    client.get("/v1/videos", **as_client("203.0.113.7", "curl/8.5"))
    client.get("/v1/videos/video_nope", **as_client("203.0.113.7", "curl/8.5"))
    client.get("/v1/me", headers=bearer(bystander.secret))
    clock.advance(minutes=1)
    ok(admin_call(client, admin, "POST", f"/keys/{key.key.id}/revoke", {"reason": "leaked"}))
    clock.advance(minutes=1)
    for _ in range(3):
        assert (
            client.get("/v1/me", **as_client("203.0.113.99", "python-requests/2")).status_code
            == 401
        )
    state.usage.flush()

    path = f"/keys/{key.key.id}/report?since={since.isoformat().replace('+00:00', 'Z')}"
    report = ok(admin_call(client, auditor, "GET", path))

    assert report["object"] == "key.report"
    assert (report["key_id"], report["tester_id"]) == (key.key.id, key.key.tester_id)
    assert report["requests"] == 7  # the earlier /v1/me is before ``since``
    assert report["first_seen"] == "2026-11-27T13:00:00Z"
    assert report["last_seen"] == "2026-11-27T13:03:00Z"
    assert report["generations"] == 2
    assert report["video_seconds"] == sum(v.video_seconds for v in _videos(state.store, created))
    assert report["videos_created"] == 2
    assert [video["id"] for video in report["videos"]] == created
    assert report["outcomes"] == {"created": 2, "ok": 1, "refused": 4}
    routes = {(r["route"], r["method"], r["status"]): r["count"] for r in report["by_route"]}
    assert routes == {
        ("/v1/videos", "POST", 200): 2,
        ("/v1/videos", "GET", 200): 1,
        ("/v1/videos/<video_id>", "GET", 404): 1,
        ("/v1/me", "GET", 401): 3,
    }
    assert report["distinct_client_ips"] == 3
    assert [(ip["client_ip"], ip["count"]) for ip in report["client_ips"]] == [
        ("203.0.113.99", 3),
        ("10.0.0.1", 2),
        ("203.0.113.7", 2),
    ]
    # The refusals after the revocation are counted per day (usage_refusals), with their
    # route and address but without a user agent.
    assert {ua["user_agent"]: ua["count"] for ua in report["user_agents"]} == {
        "sdk/1.0": 2,
        "curl/8.5": 2,
    }
    assert [(r["error_code"], r["status"], r["requests"]) for r in report["refusals_by_day"]] == [
        ("key_revoked", 401, 3)
    ]
    assert report["revoked_at"] == "2026-11-27T13:02:00Z"
    assert report["refused_after_revocation"] == 3
    assert report["refused_after_revocation_ips"][0]["client_ip"] == "203.0.113.99"

    whole = ok(admin_call(client, auditor, "GET", f"/keys/{key.key.id}/report"))
    assert whole["since"] == start.isoformat().replace("+00:00", "Z")
    assert whole["requests"] == 8 and whole["distinct_client_ips"] == 4


def _videos(store: Store, ids: list[str]) -> list[Video]:
    with store.read() as tx:
        return list(tx.session.scalars(select(Video).where(Video.id.in_(ids))))


def test_blast_radius_bad_input(
    client: Any, auditor: IssuedToken, make_key: Callable[..., IssuedKey]
) -> None:
    key_id = make_key().key.id
    assert_error(
        admin_call(client, auditor, "GET", "/keys/key_nobody/report"), 404, "not_found", "key_id"
    )
    assert_error(
        admin_call(client, auditor, "GET", f"/keys/{key_id}/report?since=soon"),
        400,
        "invalid_value",
        "since",
    )
    assert_error(
        admin_call(
            client, auditor, "GET", f"/keys/{key_id}/report?since=2026-11-27&until=2026-11-01"
        ),
        400,
        "invalid_value",
        "until",
    )
    assert_error(
        admin_call(client, auditor, "GET", f"/keys/{key_id}/report?from=1d"),
        400,
        "unknown_parameter",
        "from",
    )


# -- the CLI -----------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_usage_report_export_and_key_report_from_the_cli(
    cli: Cli,
    store: Store,
    seeded: dict[str, str],
    tmp_path: Path,
    make_key: Callable[..., IssuedKey],
) -> None:
    report = json.loads(
        cli("usage", "report", "--since", "2026-11-20", "--until", "2026-11-21", "--json").output
    )
    assert {(row["day"], row["tester_id"], row["requests"]) for row in report} == {
        ("2026-11-20", "tst_a", 3),
        ("2026-11-20", "tst_b", 2),
        ("2026-11-21", None, 1),
    }
    table = cli(
        "usage", "report", "--since", "2026-11-20", "--until", "2026-11-27", "--tester", "tst_b"
    ).output
    assert "tst_b" in table and "tst_a" not in table

    exported = cli(
        "usage", "export", "--format", "jsonl", "--tester", "tst_a", "--status", "2xx"
    ).output
    assert [json.loads(line)["request_id"] for line in exported.splitlines()] == [
        seeded["a_create"],
        seeded["a_me"],
    ]
    target = tmp_path / "usage.csv"
    result = cli("usage", "export", "--output", str(target), "--since", "2026-11-20T11:00:00Z")
    assert "exported 3 events" in result.output
    assert len(target.read_text().splitlines()) == 4

    bad = cli("usage", "export", "--since", "2026-11-20", "--until", "2026-11-01", code=None)
    assert bad.exit_code == 1 and "until is before since (invalid_value)" in bad.output

    key = make_key()
    text_report = cli("keys", "report", key.key.id, "--since", "30d").output
    assert f"key {key.key.id}" in text_report and "requests: 0" in text_report
    as_json = json.loads(
        cli(
            "keys", "report", key.key.id, "--since", "2026-11-01", "--until", "2026-12-31", "--json"
        ).output
    )
    assert as_json["key_id"] == key.key.id and as_json["requests"] == 0
    missing = cli("keys", "report", "key_nobody", code=None)
    assert missing.exit_code == 1 and "not_found" in missing.output


@pytest.mark.both_databases
def test_prune_deletes_old_events_in_batches_keeps_totals_and_records_it(
    cli: Cli, store: Store
) -> None:
    now = datetime.now(UTC)
    old = [
        record(store, now - timedelta(days=500, minutes=n), tester_id="tst_old") for n in range(7)
    ]
    kept = [record(store, now - timedelta(days=10), tester_id="tst_old")]
    with store.read() as tx:
        totals_before = tx.session.scalar(select(func.sum(UsageDaily.requests)))

    assert "would delete 7 usage events" in cli("usage", "prune", "--dry-run").output
    output = cli("usage", "prune", "--batch-size", "3").output

    assert "deleted 7 usage events" in output
    with store.read() as tx:
        left = set(tx.session.scalars(select(UsageEvent.request_id)))
        assert left == set(kept) and not left & set(old)
        assert tx.session.scalar(select(func.sum(UsageDaily.requests))) == totals_before
        entry = tx.session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
        assert entry is not None and entry.action == "usage.prune"
        assert entry.details["deleted"] == 7
    assert "OK" in cli("audit", "verify").output
    assert "deleted 0" in cli("usage", "prune", "--older-than", "400d").output


def test_gunicorns_worker_exit_hook_writes_the_batch(store: Store) -> None:
    from gateway.process.server import DEFAULT_OPTIONS, flush_on_worker_exit

    assert DEFAULT_OPTIONS["worker_exit"] is flush_on_worker_exit
    buffer = UsageBuffer(store, interval=3600)
    buffer.add(
        UsageRecord(
            at=T0, request_id="req_last", method="GET", route="/v1/me", status=200, outcome="ok"
        )
    )

    flush_on_worker_exit(None, None)

    assert buffer.pending() == 0
    assert event_id(store, "req_last") > 0


def test_workers_leave_ctrl_c_to_the_master() -> None:
    import signal

    from gateway.process.server import DEFAULT_OPTIONS, ignore_terminal_interrupt

    assert DEFAULT_OPTIONS["post_worker_init"] is ignore_terminal_interrupt
    previous = signal.getsignal(signal.SIGINT)
    try:
        ignore_terminal_interrupt(None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
