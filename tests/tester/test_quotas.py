"""Quotas: reserve -> settle -> refund in the domain's units, the 429 that says when a quota
resets, refunds for every way a generation can fail, and exactness under concurrency on
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from sqlalchemy import func, select
from urllib3.exceptions import MaxRetryError, NewConnectionError

from gateway.state import GatewayState
from gateway.upstream.reconciler import UpstreamBackend
from keys.access.lifecycle import IssuedKey, Principal
from keys.errors import QuotaExceeded
from keys.generations.reconcile import Reconciler
from keys.limits.policies import Policy
from keys.limits.quotas import METRIC_ORDER, Cost, quotas_for
from keys.models import Tester, UsageEvent, Video
from keys.store import Store
from tests.flows import (
    VIDEOS,
    FakeBackend,
    create_video,
    ledger,
    ok,
    quota_state,
    retrieve,
    set_overrides,
)
from tests.helpers import FakeClock, assert_error, bearer

pytestmark = pytest.mark.both_databases

ZERO = {
    "generations_per_day": 0,
    "video_seconds_per_day": 0,
    "video_seconds_per_month": 0,
    "concurrent_jobs": 0,
}


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


def billable_events(store: Store, tester_id: str) -> list[UsageEvent]:
    with store.read() as tx:
        return list(
            tx.session.scalars(
                select(UsageEvent).where(
                    UsageEvent.tester_id == tester_id, UsageEvent.generations > 0
                )
            )
        )


# -- the arithmetic --------------------------------------------------------------------


def test_reserve_settle_and_refund_arithmetic(store: Store, tester: Tester) -> None:
    policy = Policy()
    with store.transaction() as tx:
        periods = tx.quotas.reserve(tester.id, policy, Cost(1, 8))
    assert periods == {
        "generations_per_day": "d:2026-11-27",
        "video_seconds_per_day": "d:2026-11-27",
        "video_seconds_per_month": "m:2026-11",
        "concurrent_jobs": "",
    }
    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 8,
        "video_seconds_per_month": 8,
        "concurrent_jobs": 1,
    }
    with store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 12))
        tx.quotas.give_back(tester.id, periods, Cost(1, 8), refund=False)  # settled
    assert ledger(store, tester.id) == {
        "generations_per_day": 2,
        "video_seconds_per_day": 20,
        "video_seconds_per_month": 20,
        "concurrent_jobs": 1,
    }
    with store.transaction() as tx:
        tx.quotas.give_back(tester.id, periods, Cost(1, 12), refund=True)
    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 8,
        "video_seconds_per_month": 8,
        "concurrent_jobs": 0,
    }
    # Giving back more than is used never goes below zero.
    with store.transaction() as tx:
        tx.quotas.give_back(tester.id, periods, Cost(1, 12), refund=True)
    assert ledger(store, tester.id)["concurrent_jobs"] == 0
    assert ledger(store, tester.id)["video_seconds_per_day"] == 8


def test_give_back_locks_rows_in_the_order_reserve_does() -> None:
    """PostgreSQL deadlocks a refund against a concurrent reservation if the two lock the
    tester's quota rows in different orders (see the concurrency tests below)."""
    reserved = [q.metric for q in quotas_for(Policy(), Cost(1, 4), datetime.now(UTC))]
    assert tuple(reserved) == METRIC_ORDER


def test_a_refused_reservation_takes_nothing(store: Store, tester: Tester) -> None:
    policy = Policy(video_seconds_per_day=10)
    with store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 8))
    before = ledger(store, tester.id)

    # generations_per_day is reserved first, then video_seconds_per_day refuses: the whole
    # transaction rolls back, so the generation is not taken either.
    with pytest.raises(QuotaExceeded) as caught, store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 4))
    assert caught.value.quota.metric == "video_seconds_per_day"
    assert (caught.value.quota.limit, caught.value.used) == (10, 8)
    assert ledger(store, tester.id) == before


def test_quotas_reset_with_their_period(store: Store, tester: Tester, clock: FakeClock) -> None:
    policy = Policy(generations_per_day=1, video_seconds_per_month=8, concurrent_jobs=5)
    with store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 4))
    with pytest.raises(QuotaExceeded), store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 4))

    clock.now = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)  # a new UTC day
    with store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 4))
    with pytest.raises(QuotaExceeded) as caught, store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 4))
    assert caught.value.quota.metric == "generations_per_day"

    clock.now = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)  # the month's seconds are spent
    with pytest.raises(QuotaExceeded) as caught, store.transaction() as tx:
        tx.quotas.reserve(tester.id, policy, Cost(1, 4))
    assert caught.value.quota.metric == "video_seconds_per_month"
    assert caught.value.quota.resets_at == datetime(2026, 12, 1, tzinfo=UTC)

    with store.read() as tx:
        status = {s.metric: s for s in tx.quotas.status(tester.id, policy)}
    assert status["generations_per_day"].used == 0
    assert status["generations_per_day"].resets_at == datetime(2026, 11, 30, tzinfo=UTC)
    assert status["video_seconds_per_month"].remaining == 0
    assert status["concurrent_jobs"].used == 2 and status["concurrent_jobs"].resets_at is None


# -- the 429 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fields", "metric", "retry_after", "when"),
    [
        ({"generations_per_day": 0}, {}, "generations_per_day", 43_200, "2026-11-28T00:00:00Z"),
        ({"video_seconds_per_day": 8}, {"seconds": "12"}, "video_seconds_per_day", 43_200, None),
        (
            {"video_seconds_per_month": 4},
            {"seconds": "8"},
            "video_seconds_per_month",
            3 * 86_400 + 43_200,  # until 2026-12-01T00:00Z
            "2026-12-01T00:00:00Z",
        ),
    ],
)
def test_an_exhausted_quota_is_429_saying_when_it_resets(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    overrides: dict[str, int],
    fields: dict[str, str],
    metric: str,
    retry_after: int,
    when: str | None,
) -> None:
    set_overrides(store, tester.id, **overrides)

    response = create_video(client, key, **fields)

    error = assert_error(response, 429, "quota_exceeded", metric)
    assert error["type"] == "rate_limit_error"
    assert metric.replace("_", " ") in error["message"]
    assert "resets at" in error["message"]
    if when:
        assert when in error["message"]
    assert response.headers["Retry-After"] == str(retry_after)
    # The per-key rate-limit headers are on quota 429s too.
    assert response.headers["x-ratelimit-limit-requests"] == "60"
    assert upstream.creates == []
    assert ledger(store, tester.id) == {} or set(ledger(store, tester.id).values()) == {0}
    assert billable_events(store, tester.id) == []


def test_a_full_set_of_job_slots_is_429_with_a_retry_after(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, concurrent_jobs=1)
    ok(create_video(client, key))

    response = create_video(client, key)

    error = assert_error(response, 429, "quota_exceeded", "concurrent_jobs")
    assert "slot frees up" in error["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 120
    assert len(upstream.creates) == 1
    assert ledger(store, tester.id)["generations_per_day"] == 1


# -- refunds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (500, 502, "upstream_error"),
        (503, 502, "upstream_error"),
        (400, 400, None),
        # Failures before anything was sent: the backend cannot have made the job.
        (requests.exceptions.ConnectTimeout(), 504, "upstream_timeout"),
        (requests.exceptions.SSLError("bad cert"), 502, "upstream_error"),
        (
            requests.exceptions.ConnectionError(
                MaxRetryError(None, VIDEOS, NewConnectionError(None, "refused"))  # type: ignore[arg-type]
            ),
            502,
            "upstream_error",
        ),
    ],
)
def test_an_upstream_failure_refunds_everything(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    failure: int | Exception,
    status: int,
    code: str | None,
) -> None:
    set_overrides(store, tester.id, generations_per_day=1, concurrent_jobs=1)
    upstream.failures.append(failure)

    response = create_video(client, key, seconds="8")

    assert response.status_code == status, response.get_data(as_text=True)
    if code:
        assert response.get_json()["error"]["code"] == code
    assert ledger(store, tester.id) == ZERO
    (event,) = billable_events(store, tester.id)
    assert (event.outcome, event.status) == ("refunded", status)
    # The refund is real: the one generation of the day is still there to spend.
    ok(create_video(client, key, seconds="8"))
    assert ledger(store, tester.id)["generations_per_day"] == 1


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (requests.exceptions.ReadTimeout(), 504, "upstream_timeout"),
        (requests.exceptions.ConnectionError("reset by peer"), 502, "upstream_error"),
        (requests.exceptions.ChunkedEncodingError("cut"), 502, "upstream_error"),
    ],
)
def test_a_lost_answer_is_refunded_by_the_reconciler(
    client: Any,
    state: GatewayState,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    failure: Exception,
    status: int,
    code: str,
) -> None:
    set_overrides(store, tester.id, generations_per_day=1, concurrent_jobs=1)
    upstream.failures.append(failure)

    assert_error(create_video(client, key, seconds="8"), status, code)

    # The backend may have made the job: nothing is decided until the reconciler looks.
    assert ledger(store, tester.id)["generations_per_day"] == 1
    report = Reconciler(store, UpstreamBackend(state.upstream)).run()
    assert [action.action for action in report.actions] == ["refunded"]
    assert ledger(store, tester.id) == ZERO
    (event,) = billable_events(store, tester.id)
    assert (event.outcome, event.status) == ("refunded", status)
    ok(create_video(client, key, seconds="8"))


def test_a_job_whose_answer_was_lost_becomes_the_testers_video(
    client: Any,
    state: GatewayState,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
) -> None:
    upstream.lost_answers = 1

    assert_error(
        create_video(client, key, prompt="a lighthouse", seconds="8"), 504, "upstream_timeout"
    )

    report = Reconciler(store, UpstreamBackend(state.upstream)).run()
    (adopted,) = report.actions
    assert adopted.action == "adopted"
    page = ok(client.get("/v1/videos", headers=bearer(key.secret)))
    assert [item["id"] for item in page["data"]] == [adopted.upstream_id]
    assert ledger(store, tester.id)["generations_per_day"] == 1
    (event,) = billable_events(store, tester.id)
    assert (event.outcome, event.video_id) == ("created", adopted.upstream_id)


def test_a_failed_generation_refunds_when_it_is_retrieved(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    video = ok(create_video(client, key, seconds="12"))
    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 12,
        "video_seconds_per_month": 12,
        "concurrent_jobs": 1,
    }
    upstream.finish(video["id"], "failed")

    body = ok(retrieve(client, key, video["id"]))

    assert body["status"] == "failed"
    assert ledger(store, tester.id) == ZERO
    assert quota_state(store, video["id"]) == "refunded"
    # Polling a failed video again refunds nothing more.
    ok(retrieve(client, key, video["id"]))
    assert ledger(store, tester.id) == ZERO


def test_a_failed_generation_refunds_when_it_is_listed(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    failing = ok(create_video(client, key, seconds="4"))
    running = ok(create_video(client, key, seconds="8"))
    upstream.finish(failing["id"], "failed")

    page = ok(client.get("/v1/videos", headers=bearer(key.secret)))

    statuses = {item["id"]: item["status"] for item in page["data"]}
    assert statuses == {failing["id"]: "failed", running["id"]: "queued"}
    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 8,
        "video_seconds_per_month": 8,
        "concurrent_jobs": 1,
    }


def test_a_completed_generation_settles_keeping_its_cost(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    video = ok(create_video(client, key, seconds="8"))
    upstream.finish(video["id"])

    for _ in range(3):  # several polls settle once
        assert ok(retrieve(client, key, video["id"]))["status"] == "completed"

    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 8,
        "video_seconds_per_month": 8,
        "concurrent_jobs": 0,
    }
    assert quota_state(store, video["id"]) == "settled"
    (event,) = billable_events(store, tester.id)
    assert (event.outcome, event.generations, event.video_seconds) == ("created", 1, 8)


def test_deleting_a_running_video_frees_its_slot_but_keeps_its_cost(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, concurrent_jobs=1)
    video = ok(create_video(client, key, seconds="4"))

    ok(client.delete(f"/v1/videos/{video['id']}", headers=bearer(key.secret)))

    assert ledger(store, tester.id) == {
        "generations_per_day": 1,
        "video_seconds_per_day": 4,
        "video_seconds_per_month": 4,
        "concurrent_jobs": 0,
    }
    ok(create_video(client, key))  # the slot is free again


def test_deleting_a_finished_video_changes_no_quota(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    video = ok(create_video(client, key, seconds="4"))
    upstream.finish(video["id"])
    ok(retrieve(client, key, video["id"]))
    settled = ledger(store, tester.id)

    ok(client.delete(f"/v1/videos/{video['id']}", headers=bearer(key.secret)))

    assert ledger(store, tester.id) == settled


def test_a_finished_but_unpolled_video_frees_its_slot_on_the_next_create(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, concurrent_jobs=1)
    first = ok(create_video(client, key))
    upstream.finish(first["id"])  # nobody polls it

    second = ok(create_video(client, key))

    assert quota_state(store, first["id"]) == "settled"
    assert ledger(store, tester.id)["concurrent_jobs"] == 1
    # While the second one runs, a third is refused (after asking the backend once more).
    assert_error(create_video(client, key), 429, "quota_exceeded", "concurrent_jobs")
    assert quota_state(store, second["id"]) == "reserved"
    # ...and a failed one frees its slot *and* refunds on the same reconcile.
    upstream.finish(second["id"], "failed")
    ok(create_video(client, key))
    assert quota_state(store, second["id"]) == "refunded"
    assert ledger(store, tester.id)["generations_per_day"] == 2


# -- exactness under concurrency -------------------------------------------------------

THREADS = 20


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # One key racing from THREADS threads in one process: the bulkhead
    # (gateway/admission/bulkhead.py) would refuse most of them before the quota is reached;
    # it is not what is tested here.
    return {"max_inflight_per_key": 0}


def race(app: Any, secret: str, attempts: int, **fields: Any) -> list[Any]:
    """``attempts`` creates from THREADS threads at once, each with its own client."""
    barrier = threading.Barrier(THREADS)
    responses_: list[Any] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(count: int) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=10)
            for _ in range(count):
                response = client.post(
                    "/v1/videos", json={"prompt": "race", **fields}, headers=bearer(secret)
                )
                with lock:
                    responses_.append(response)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    per_thread = [
        attempts // THREADS + (1 if i < attempts % THREADS else 0) for i in range(THREADS)
    ]
    threads = [threading.Thread(target=worker, args=(n,)) for n in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(responses_) == attempts
    return responses_


def test_concurrent_creates_never_overspend(
    app: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, generations_per_day=7, concurrent_jobs=1000)

    results = race(app, key.secret, attempts=THREADS * 2, seconds="4")

    statuses = Counter(response.status_code for response in results)
    assert statuses == {200: 7, 429: THREADS * 2 - 7}, statuses
    for response in results:
        if response.status_code == 429:
            assert response.get_json()["error"]["param"] == "generations_per_day"
    assert ledger(store, tester.id) == {
        "generations_per_day": 7,
        "video_seconds_per_day": 28,
        "video_seconds_per_month": 28,
        "concurrent_jobs": 7,
    }
    assert len(upstream.creates) == 7
    assert len(billable_events(store, tester.id)) == 7
    with store.read() as tx:
        owned = tx.session.scalar(
            select(func.count()).select_from(Video).where(Video.tester_id == tester.id)
        )
    assert owned == 7


def test_concurrent_refunds_and_reservations_stay_exact(
    app: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    """Refunds (upstream failures) racing reservations: no deadlock, no lost refund."""
    set_overrides(store, tester.id, generations_per_day=1000, concurrent_jobs=1000)
    upstream.failures.extend([500] * 30)

    results = race(app, key.secret, attempts=60, seconds="4")

    statuses = Counter(response.status_code for response in results)
    assert statuses == {200: 30, 502: 30}, statuses
    assert ledger(store, tester.id) == {
        "generations_per_day": 30,
        "video_seconds_per_day": 120,
        "video_seconds_per_month": 120,
        "concurrent_jobs": 30,
    }


def test_usage_of_a_principal_is_recorded_with_the_reservation(
    store: Store, tester: Tester, key: IssuedKey
) -> None:
    """The domain's admit step writes the billable event in the same transaction."""
    from keys.records.usage import UsageRecord

    principal = Principal(key.key.id, tester.id, tester.cohort, key.key.hint, None, Policy(), {})
    event = UsageRecord(
        at=datetime(2026, 11, 27, tzinfo=UTC),
        request_id="req_unit_admit",
        method="POST",
        route="/v1/videos",
        status=0,
        outcome="admitted",
        key_id=key.key.id,
        tester_id=tester.id,
    )
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.generations.admit(principal, Cost(1, 4), event, {}, timedelta(seconds=120))
        raise RuntimeError("the worker dies before commit")
    assert ledger(store, tester.id) == {} or set(ledger(store, tester.id).values()) == {0}
    assert billable_events(store, tester.id) == []
