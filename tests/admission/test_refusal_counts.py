"""The day after the leak: refusals before admission are counted per day, key and code
(``usage_refusals``), never a usage event each, and the reports still count them exactly;
a tester whose key has verified is not locked out by a flood of bad keys from the same
address (a NAT, a proxy), while a guessed or revoked key stays blocked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import IssuedKey
from keys.models import Tester, UsageDaily, UsageEvent, UsageRefusal
from keys.records.usage import UsageBuffer
from keys.records.usage_reports import UsageReports
from keys.store import Store
from tests.flows import set_overrides
from tests.helpers import assert_error, bearer

pytestmark = pytest.mark.both_databases

MADE_UP = KeyFormat("drwb")


def me(client: Any, headers: dict[str, str], address: str = "127.0.0.1", **extra: str) -> Any:
    return client.get("/v1/me", headers={**headers, **extra}, environ_base={"REMOTE_ADDR": address})


def events(store: Store) -> list[tuple[str | None, int, str | None]]:
    with store.read() as tx:
        return [
            (e.key_id, e.status, e.error_code)
            for e in tx.session.scalars(select(UsageEvent).order_by(UsageEvent.id))
        ]


def counted(store: Store) -> dict[tuple[str, str, int], int]:
    with store.read() as tx:
        rows = tx.session.execute(
            select(
                UsageRefusal.key_id,
                UsageRefusal.error_code,
                UsageRefusal.status,
                func.sum(UsageRefusal.requests),
            ).group_by(UsageRefusal.key_id, UsageRefusal.error_code, UsageRefusal.status)
        ).all()
    return {(key_id, code, status): int(total) for key_id, code, status, total in rows}


def refusal_rows(store: Store) -> int:
    with store.read() as tx:
        return int(tx.session.execute(select(func.count()).select_from(UsageRefusal)).scalar_one())


def revoke(store: Store, key: IssuedKey) -> None:
    with store.transaction() as tx:
        tx.keys.revoke(key.key.id, "test", "published in a gist")


# -- counted, not stored ------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"auth_failures_per_minute": 10_000}])
def test_each_kind_of_refusal_is_counted_exactly_and_adds_no_row_per_request(
    client: Any,
    app: Any,
    store: Store,
    key: IssuedKey,
    make_key: Callable[..., IssuedKey],
    make_tester: Callable[..., Tester],
) -> None:
    leaked = make_key()
    revoke(store, leaked)
    limited = make_key(make_tester().id)
    set_overrides(store, limited.key.tester_id, requests_per_minute=1)
    assert me(client, bearer(limited.secret)).status_code == 200
    usage = app.extensions["drawbridge"].usage

    def flood(times: int) -> None:
        for _ in range(times):
            assert_error(me(client, {}), 401, "missing_api_key")
            assert_error(me(client, bearer(MADE_UP.generate())), 401, "invalid_api_key")
            assert_error(me(client, bearer(leaked.secret)), 401, "key_revoked")
            assert_error(me(client, bearer(limited.secret)), 429, "rate_limit_exceeded")
        assert me(client, bearer(key.secret)).status_code == 200

    flood(5)
    usage.flush()
    rows_after_first_flood = refusal_rows(store)
    flood(20)
    usage.flush()

    # Only the admitted requests are events...
    assert events(store) == [(limited.key.id, 200, None)] + [(key.key.id, 200, None)] * 2
    # ...the refusals are exact counts, in as many rows after 100 refusals as after 20.
    assert counted(store) == {
        ("", "missing_api_key", 401): 25,
        ("", "invalid_api_key", 401): 25,
        (leaked.key.id, "key_revoked", 401): 25,
        (limited.key.id, "rate_limit_exceeded", 429): 25,
    }
    assert refusal_rows(store) == rows_after_first_flood == 4

    today = store.clock().astimezone(UTC).date()
    with store.read() as tx:
        reports = UsageReports(tx.session, store.clock)
        daily = reports.daily(today, today)
        assert daily == reports.daily_from_events(today, today)
        keyless = tx.session.get(UsageDaily, (today, "", ""))
        by_key = {
            (row["key_id"], row["error_code"]): row["requests"]
            for row in reports.refusals(today, today)
        }
    assert keyless is not None and (keyless.requests, keyless.rejections) == (100, 100)
    assert by_key == {
        (None, "missing_api_key"): 25,
        (None, "invalid_api_key"): 25,
        (leaked.key.id, "key_revoked"): 25,
        (limited.key.id, "rate_limit_exceeded"): 25,
    }


def test_a_refusal_with_an_admitted_key_keeps_its_event(
    client: Any, app: Any, store: Store, key: IssuedKey, make_key: Callable[..., IssuedKey]
) -> None:
    """An auditor reads these one by one: a key used on an object it does not own, and a
    honeytoken (refused like an unknown key, but each use is evidence)."""
    honeytoken = make_key(honeytoken=True)
    assert client.get("/v1/videos/video_nope", headers=bearer(key.secret)).status_code == 404
    assert_error(me(client, bearer(honeytoken.secret)), 401, "invalid_api_key")
    app.extensions["drawbridge"].usage.flush()

    assert events(store) == [
        (key.key.id, 404, "not_found"),
        (honeytoken.key.id, 401, "invalid_api_key"),
    ]
    assert counted(store) == {}


def test_refusals_counted_by_several_workers_add_up_exactly(store: Store) -> None:
    """Each gunicorn worker has its own buffer; their flushes add to the same rows."""
    workers = [UsageBuffer(store, interval=3600) for _ in range(3)]
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def count(buffer: UsageBuffer, offset: int) -> None:
        for n in range(500):
            at = start + timedelta(seconds=offset + n)
            buffer.count_refusal(at, None, "invalid_api_key", 401, "GET", "/v1/me", "10.0.0.1")
            buffer.count_refusal(at, "key_1", "key_revoked", 401, "GET", "/v1/me", "10.0.0.2")

    threads = [
        threading.Thread(target=count, args=(buffer, 1000 * n)) for n, buffer in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for buffer in workers:
        assert buffer.pending() == 2
        assert buffer.flush() == 0  # no events: counts
        assert buffer.pending() == 0

    with store.read() as tx:
        rows = {
            (row.key_id, row.client_ip): (row.requests, row.first_at, row.last_at)
            for row in tx.session.scalars(select(UsageRefusal))
        }
    last = start + timedelta(seconds=2499)
    assert rows == {
        # A refusal without a known key keeps no address: made-up keys from many addresses
        # stay one row.
        ("", ""): (1500, start, last),
        ("key_1", "10.0.0.2"): (1500, start, last),
    }


# -- the address block and a tester behind the same address ------------------------------

BEHIND_PROXY = {"auth_failures_per_minute": 3, "trusted_proxies": 1}
PROXY, NAT = "10.0.0.5", "198.51.100.7"


def via_nat(client: Any, headers: dict[str, str]) -> Any:
    return me(client, headers, PROXY, **{"X-Forwarded-For": NAT})


@pytest.mark.parametrize("settings_overrides", [BEHIND_PROXY])
def test_a_flood_of_bad_keys_does_not_lock_out_a_verified_key_behind_the_same_address(
    client: Any, key: IssuedKey
) -> None:
    assert via_nat(client, bearer(key.secret)).status_code == 200
    for _ in range(3):
        assert_error(via_nat(client, bearer(MADE_UP.generate())), 401, "invalid_api_key")

    # The address is blocked for what the database would be asked: guesses, no key...
    assert_error(via_nat(client, bearer(MADE_UP.generate())), 429, "too_many_failed_attempts")
    assert_error(via_nat(client, {}), 429, "too_many_failed_attempts")
    # ...but the tester whose key verified here goes on.
    for _ in range(5):
        assert via_nat(client, bearer(key.secret)).status_code == 200


@pytest.mark.parametrize("settings_overrides", [BEHIND_PROXY])
def test_a_key_not_yet_verified_here_is_blocked_with_its_address(
    client: Any, key: IssuedKey
) -> None:
    for _ in range(3):
        assert_error(via_nat(client, bearer(MADE_UP.generate())), 401, "invalid_api_key")

    assert_error(via_nat(client, bearer(key.secret)), 429, "too_many_failed_attempts")


@pytest.mark.parametrize("settings_overrides", [BEHIND_PROXY])
def test_a_revoked_key_loses_its_pass_through_the_block(
    client: Any, store: Store, key: IssuedKey
) -> None:
    assert via_nat(client, bearer(key.secret)).status_code == 200
    for _ in range(3):
        assert_error(via_nat(client, bearer(MADE_UP.generate())), 401, "invalid_api_key")
    revoke(store, key)

    # Revocation holds at once (the key is checked in full), and from then on the key is
    # refused with its address, without a database lookup.
    assert_error(via_nat(client, bearer(key.secret)), 401, "key_revoked")
    assert_error(via_nat(client, bearer(key.secret)), 429, "too_many_failed_attempts")


def test_a_verified_key_is_not_made_to_ask_whether_its_address_is_blocked(
    client: Any, state: Any, key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The block never refuses a verified key, so its requests need not read the address's
    # failure count (on Redis, a round trip per request); a key not verified yet does.
    asked: list[str] = []
    limits = state.limits
    ask = limits._with_strategy
    monkeypatch.setattr(limits, "_with_strategy", lambda count: asked.append("asked") or ask(count))

    assert me(client, bearer(key.secret)).status_code == 200
    assert asked == ["asked"]
    for _ in range(3):
        assert me(client, bearer(key.secret)).status_code == 200
    assert asked == ["asked"]
