"""Rate limits and transparency: per-key limits with OpenAI's headers, the per-IP limit on
failed authentication (client IPs only from trusted proxies), ``/v1/me``, and bad input that
is refused before anything is reserved."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.limits.policies import MAX_PROMPT_CHARS
from keys.models import Tester
from keys.store import Store
from tests.flows import FakeBackend, admin_call, create_video, ledger, ok, set_overrides
from tests.helpers import FakeClock, assert_error, bearer

RESET = re.compile(r"^(\d+m)?\d+s$")


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


def me(client: Any, key: IssuedKey, **kwargs: Any) -> Any:
    return client.get("/v1/me", headers=bearer(key.secret), **kwargs)


def reset_seconds(text: str) -> int:
    match = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
    assert match, text
    return int(match.group(1) or 0) * 60 + int(match.group(2))


# -- per-key limits --------------------------------------------------------------------


def test_successful_responses_carry_the_rate_limit_headers(
    client: Any, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_minute=5)

    first, second = me(client, key), me(client, key)

    for response, remaining in ((first, "4"), (second, "3")):
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "5"
        assert response.headers["x-ratelimit-remaining-requests"] == remaining
        assert 0 < reset_seconds(response.headers["x-ratelimit-reset-requests"]) <= 60
        assert "Retry-After" not in response.headers


def test_a_rate_limited_request_is_429_with_retry_after_and_ratelimit_headers(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_minute=2)
    ok(me(client, key))
    ok(create_video(client, key))

    refused = create_video(client, key)

    error = assert_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert "2 requests per" in error["message"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.headers["retry-after-ms"] == str(retry_after * 1000)
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert reset_seconds(refused.headers["x-ratelimit-reset-requests"]) == retry_after
    # Refused before policy and quota: the refused create reserved nothing.
    assert len(upstream.creates) == 1
    assert ledger(store, tester.id)["generations_per_day"] == 1


def test_the_daily_request_limit_tells_a_longer_wait(
    client: Any, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_day=1)
    ok(me(client, key))

    refused = me(client, key)

    assert_error(refused, 429, "rate_limit_exceeded")
    assert 60 < int(refused.headers["Retry-After"]) <= 86_400
    assert refused.headers["x-ratelimit-limit-requests"] == "1"


def test_a_zero_limit_refuses_every_request(
    client: Any, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_minute=0)
    refused = me(client, key)
    assert_error(refused, 429, "rate_limit_exceeded")
    assert refused.headers["x-ratelimit-limit-requests"] == "0"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # No window will let a request through sooner: the client is told to wait a whole one.
    assert refused.headers["Retry-After"] == "60"
    set_overrides(store, tester.id, requests_per_minute=10, requests_per_day=0)
    refused = me(client, key)
    assert_error(refused, 429, "rate_limit_exceeded")
    assert refused.headers["Retry-After"] == "86400"


def test_limits_are_per_key(
    client: Any, store: Store, make_key: Callable[..., IssuedKey], tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_minute=1)
    second_key = make_key(tester.id)
    ok(me(client, key))
    assert_error(me(client, key), 429, "rate_limit_exceeded")
    ok(me(client, second_key))


def test_a_rate_limited_request_is_counted_under_its_key_not_stored_as_an_event(
    client: Any, app: Any, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_minute=1)
    ok(me(client, key))
    for _ in range(3):
        assert_error(me(client, key), 429, "rate_limit_exceeded")

    app.extensions["drawbridge"].usage.flush()
    with store.read() as tx:
        from sqlalchemy import select

        from keys.models import UsageEvent, UsageRefusal

        events = list(tx.session.scalars(select(UsageEvent).order_by(UsageEvent.id)))
        counted = list(tx.session.scalars(select(UsageRefusal)))
    assert [(e.key_id, e.status, e.error_code) for e in events] == [(key.key.id, 200, None)]
    assert [(r.key_id, r.status, r.error_code, r.requests) for r in counted] == [
        (key.key.id, 429, "rate_limit_exceeded", 3)
    ]


# -- failed authentication per client IP -----------------------------------------------

BAD_KEY = "drwb_" + "A" * 40


def attempt(client: Any, secret: str, address: str = "127.0.0.1", **headers: str) -> Any:
    return client.get(
        "/v1/me",
        headers={"Authorization": f"Bearer {secret}", **headers},
        environ_base={"REMOTE_ADDR": address},
    )


@pytest.mark.parametrize("settings_overrides", [{"auth_failures_per_minute": 3}])
def test_too_many_failed_attempts_block_the_client_address(client: Any, key: IssuedKey) -> None:
    for secret in (BAD_KEY, "not-a-key", key.secret + "x"):
        assert attempt(client, secret).status_code == 401

    blocked = attempt(client, key.secret)  # even a valid key, from this address

    error = assert_error(blocked, 429, "too_many_failed_attempts")
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert blocked.headers["retry-after-ms"] == str(int(blocked.headers["Retry-After"]) * 1000)
    assert blocked.headers["x-ratelimit-limit-requests"] == "3"
    assert blocked.headers["x-ratelimit-remaining-requests"] == "0"
    assert "failed authentication" in error["message"]
    # Another address is not affected, and successes never count as failures.
    for _ in range(5):
        ok(attempt(client, key.secret, address="192.0.2.10"))


@pytest.mark.parametrize("settings_overrides", [{"auth_failures_per_minute": 2}])
def test_a_missing_key_counts_as_a_failed_attempt(client: Any, key: IssuedKey) -> None:
    for _ in range(2):
        assert client.get("/v1/me").status_code == 401
    assert_error(attempt(client, key.secret), 429, "too_many_failed_attempts")


@pytest.mark.parametrize("settings_overrides", [{"auth_failures_per_minute": 3}])
def test_without_trusted_proxies_a_spoofed_forwarded_for_changes_nothing(
    client: Any, key: IssuedKey
) -> None:
    for spoof in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        response = attempt(client, BAD_KEY, **{"X-Forwarded-For": spoof})
        assert response.status_code == 401

    # A fresh forwarded address does not escape the block: the peer address is what counts.
    spoofed = attempt(client, key.secret, **{"X-Forwarded-For": "198.51.100.99"})
    assert_error(spoofed, 429, "too_many_failed_attempts")
    ok(attempt(client, key.secret, address="192.0.2.10", **{"X-Forwarded-For": "198.51.100.1"}))


@pytest.mark.parametrize(
    "settings_overrides", [{"auth_failures_per_minute": 3, "trusted_proxies": 1}]
)
def test_with_one_trusted_proxy_the_forwarded_address_is_the_client(
    client: Any, app: Any, store: Store, key: IssuedKey
) -> None:
    proxy = "10.0.0.5"
    for _ in range(3):
        response = attempt(client, BAD_KEY, proxy, **{"X-Forwarded-For": "198.51.100.7"})
        assert response.status_code == 401

    blocked = attempt(client, key.secret, proxy, **{"X-Forwarded-For": "198.51.100.7"})
    assert_error(blocked, 429, "too_many_failed_attempts")
    # A client putting a fake first entry before the proxy's own is still itself.
    chained = attempt(
        client, key.secret, proxy, **{"X-Forwarded-For": "203.0.113.50, 198.51.100.7"}
    )
    assert_error(chained, 429, "too_many_failed_attempts")
    # Other clients behind the same proxy are not blocked.
    ok(attempt(client, key.secret, proxy, **{"X-Forwarded-For": "198.51.100.8"}))

    app.extensions["drawbridge"].usage.flush()
    with store.read() as tx:
        from sqlalchemy import select

        from keys.models import UsageEvent, UsageRefusal

        addresses = {e.client_ip for e in tx.session.scalars(select(UsageEvent))}
        counted = {
            (r.error_code, r.status, r.client_ip): r.requests
            for r in tx.session.scalars(select(UsageRefusal))
        }
    assert addresses == {"198.51.100.8"}
    # Refusals without a known key are counted, without their address.
    assert counted == {("invalid_api_key", 401, ""): 3, ("too_many_failed_attempts", 429, ""): 2}


# -- /v1/me ----------------------------------------------------------------------------


def test_me_shows_key_cohort_limits_and_quotas(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(
        store,
        tester.id,
        generations_per_day=5,
        video_seconds_per_day=60,
        concurrent_jobs=3,
        models=["sora-2"],
        requests_per_minute=30,
    )
    ok(create_video(client, key, seconds="8"))

    body = ok(me(client, key))

    assert body["key"]["id"] == key.key.id and body["key"]["hint"] == key.key.hint
    assert body["key"]["status"] == "active" and "expires_at" in body["key"]
    assert body["tester"] == {"id": tester.id, "name": tester.name, "cohort": "default"}
    assert body["limits"]["requests_per_minute"] == 30
    assert body["limits"]["models"] == ["sora-2"]
    quotas = {q["metric"]: q for q in body["quotas"]}
    assert quotas["generations_per_day"] == {
        "metric": "generations_per_day",
        "limit": 5,
        "used": 1,
        "remaining": 4,
        "resets_at": "2026-11-28T00:00:00Z",
    }
    assert quotas["video_seconds_per_day"]["remaining"] == 52
    assert quotas["video_seconds_per_month"]["resets_at"] == "2026-12-01T00:00:00Z"
    assert quotas["concurrent_jobs"]["used"] == 1
    assert quotas["concurrent_jobs"]["resets_at"] is None
    assert key.secret not in str(body)


def test_me_shows_pending_requests_and_decisions_with_reasons(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    make_token: Callable[..., IssuedToken],
    clock: FakeClock,
) -> None:
    approver = make_token("approver", "Reviewer")
    set_overrides(
        store,
        tester.id,
        prompt_rules=[{"pattern": "castle", "action": "hold", "reason": "Castles are reviewed."}],
    )
    first = ok(create_video(client, key, "a castle at dawn"))
    clock.advance(seconds=1)
    second = ok(create_video(client, key, "a castle at dusk"))
    with store.read() as tx:
        pending = {a.video_id: a.id for a in tx.approvals.list(tester_id=tester.id)}
    ok(
        admin_call(
            client,
            approver,
            "POST",
            f"/approvals/{pending[first['id']]}/reject",
            {"reason": "Looks like a real castle."},
        )
    )

    requests_ = ok(me(client, key))["requests"]

    by_video = {r["video_id"]: r for r in requests_}
    assert by_video[first["id"]]["status"] == "rejected"
    assert by_video[first["id"]]["decision_reason"] == "Looks like a real castle."
    assert by_video[first["id"]]["held_because"] == "Castles are reviewed."
    assert by_video[second["id"]]["status"] == "pending"
    assert by_video[second["id"]]["kind"] == "generation"
    # Testers see reasons, not who asked or decided.
    assert all("decided_by" not in r and "tester_id" not in r for r in requests_)


# -- bad input -------------------------------------------------------------------------


BAD_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"model": "sora-3"}, "model", "invalid_value"),
    ({"model": ["sora-2"]}, "model", "invalid_value"),
    ({"size": "640x480"}, "size", "invalid_value"),
    ({"size": 720}, "size", "invalid_value"),
    ({"seconds": "5"}, "seconds", "invalid_value"),
    ({"seconds": -4}, "seconds", "invalid_value"),
    ({"seconds": "-4"}, "seconds", "invalid_value"),
    ({"seconds": 10**9}, "seconds", "invalid_value"),
    ({"seconds": 10**100}, "seconds", "invalid_value"),
    ({"seconds": "abc"}, "seconds", "invalid_value"),
    ({"seconds": 4.0}, "seconds", "invalid_value"),
    ({"seconds": True}, "seconds", "invalid_value"),
    ({"seconds": "٤"}, "seconds", "invalid_value"),  # Arabic-Indic four: isdigit(), not ASCII
    ({"prompt": None}, "prompt", "missing_required_parameter"),
    ({"prompt": ""}, "prompt", "missing_required_parameter"),
    ({"prompt": "   "}, "prompt", "missing_required_parameter"),
    ({"prompt": 42}, "prompt", "missing_required_parameter"),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "invalid_value"),
]


def test_bad_input_is_400_naming_the_param_and_reserves_nothing(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    for fields, param, code in BAD_INPUT:
        payload = {"prompt": "a kite", **fields}
        if fields.get("prompt", "") is None:
            del payload["prompt"]

        response = client.post("/v1/videos", json=payload, headers=bearer(key.secret))

        error = assert_error(response, 400, code, param)
        assert error["type"] == "invalid_request_error", fields
    assert upstream.creates == []
    assert ledger(store, tester.id) == {}
    with store.read() as tx:
        assert tx.videos.page(tester.id).videos == []


def test_bad_multipart_input_is_refused_too(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    response = client.post(
        "/v1/videos",
        data={"prompt": "a kite", "seconds": "-4"},
        headers=bearer(key.secret),
        content_type="multipart/form-data",
    )
    assert_error(response, 400, "invalid_value", "seconds")
    response = client.post(
        "/v1/videos",
        data={"seconds": "4"},
        headers=bearer(key.secret),
        content_type="multipart/form-data",
    )
    assert_error(response, 400, "missing_required_parameter", "prompt")
    assert upstream.creates == [] and ledger(store, tester.id) == {}


def test_a_value_outside_the_cohort_policy_is_403_and_reserves_nothing(
    client: Any, upstream: FakeBackend, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, seconds=[4], sizes=["720x1280"])

    assert_error(create_video(client, key, seconds="12"), 403, "policy_violation", "seconds")
    assert_error(create_video(client, key, size="1280x720"), 403, "policy_violation", "size")

    assert upstream.creates == [] and ledger(store, tester.id) == {}


def test_me_never_hides_a_pending_request_behind_old_decisions(
    client: Any,
    upstream: FakeBackend,
    store: Store,
    tester: Tester,
    key: IssuedKey,
    clock: FakeClock,
) -> None:
    with store.transaction() as tx:
        for n in range(120):
            clock.advance(seconds=1)
            old = tx.approvals.hold("download", tester.id, key.key.id, f"video_old{n}", "review")
            tx.approvals.decide(old.id, n % 2 == 0, "approver:test", f"decision {n}")
    set_overrides(store, tester.id, hold_generations=True)
    clock.advance(seconds=1)
    held = ok(create_video(client, key))

    requests_ = ok(me(client, key))["requests"]

    pending = [r for r in requests_ if r["status"] == "pending"]
    assert [r["video_id"] for r in pending] == [held["id"]]
    # The latest decisions are the ones shown, still oldest first.
    reasons = [r["decision_reason"] for r in requests_ if r["status"] != "pending"]
    assert reasons[-1] == "decision 119"
    assert reasons == sorted(reasons, key=lambda text: int(text.split()[1]))


# -- the windows' counting on Redis and in process -------------------------------------


@pytest.mark.parametrize(("per_minute", "per_day"), [(3, 10), (10, 2), (0, 10), (5, 0)], ids=str)
def test_redis_counts_every_window_as_the_process_memory_does(
    redis_url: str, per_minute: int, per_day: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis counts all of a key's windows in one round trip (a script); the answers are
    those of the in-process storage, request by request, and so are the counters left."""
    import redis
    from flask import Flask
    from limits.storage import RedisStorage

    from gateway.admission.limits import MEMORY_STORAGE_URI, RateLimits
    from keys.errors import RateLimited
    from keys.limits.policies import Policy

    def one_call_per_window(*_args: Any) -> None:
        raise AssertionError("a window was counted with a round trip of its own")

    monkeypatch.setattr(RedisStorage, "incr", one_call_per_window)
    monkeypatch.setattr(RedisStorage, "get_expiry", one_call_per_window)
    policy = Policy(requests_per_minute=per_minute, requests_per_day=per_day)
    answers: dict[str, list[tuple[str, int, int]]] = {}
    storages: dict[str, Any] = {}
    for name, uri in (("memory", MEMORY_STORAGE_URI), ("redis", redis_url)):
        limits = RateLimits(uri, auth_failures_per_minute=10)
        limits.init_app(Flask(f"limits-{name}"))
        storages[name] = limits._limiter.storage
        seen = []
        for _ in range(12):
            try:
                state = limits.admit_key("key_windows", policy)
                seen.append(("admitted", state.limit, state.remaining))
            except RateLimited as exc:
                seen.append(("refused", exc.limit, exc.remaining))
        answers[name] = seen
    assert answers["redis"] == answers["memory"]
    assert ("refused", 0, 0) in answers["memory"] or min(per_minute, per_day) > 0
    # The counters left behind: the same windows, the same counts, each expiring.
    memory = storages["memory"].storage
    assert memory or per_minute == 0, "nothing was counted"
    client = redis.Redis.from_url(redis_url)
    try:
        for key, count in memory.items():
            stored = f"{storages['redis'].prefixed_key(key)}"
            assert int(client.get(stored) or 0) == count, key
            assert 0 < client.ttl(stored) <= (60 if "minute" in key else 86_400)
        assert len(list(client.scan_iter("*key_windows*"))) == len(memory)
    finally:
        client.close()


@pytest.mark.parametrize(("per_minute", "per_day"), [(3, 10), (10, 2), (5, 0)], ids=str)
def test_the_process_memory_counts_every_window_as_the_storage_calls_do(
    per_minute: int, per_day: int
) -> None:
    """In process, a key's windows are counted in one step (``count_windows``); the answers
    and the counters left are those of limits' own storage calls (incr, then get_expiry),
    also once a window has expired."""
    from limits import RateLimitItemPerDay, RateLimitItemPerMinute

    from gateway.admission.limits import _count_in
    from gateway.admission.rate_storage import LazyMemoryStorage

    windows = [
        (RateLimitItemPerMinute(max(per_minute, 1)), per_minute),
        (RateLimitItemPerDay(max(per_day, 1)), per_day),
    ]
    open_windows = [(item, allowed) for item, allowed in windows if allowed > 0]
    one_step, calls = LazyMemoryStorage(), LazyMemoryStorage()

    def answers() -> tuple[list[int], list[int]]:
        stepped = one_step.count_windows(
            [
                (item.key_for("key", "k"), item.get_expiry(), allowed)
                for item, allowed in open_windows
            ]
        )
        called = _count_in(calls, open_windows, "k")
        assert all(0 < left <= 86_400 for _, left in stepped + called)
        return [count for count, _ in stepped], [count for count, _ in called]

    for _ in range(12):
        stepped, called = answers()
        assert stepped == called
    assert dict(one_step.storage) == dict(calls.storage)
    # An expired window starts again from one in both.
    for storage in (one_step, calls):
        for key in storage.expirations:
            storage.expirations[key] = 0.0
    stepped, called = answers()
    assert stepped == called == [1] * len(stepped)
