"""Redis stopped under a gateway: every request is still answered, rate limits and anomaly
counters count in process memory (logged, counted in ``/metrics``, shown by ``/readyz``),
key state is untouched, and Redis is used again as soon as it is back.

The Redis here is a private ``redis-server`` that the test kills and restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from gateway.admission.limits import RateLimits
from keys.access.lifecycle import IssuedKey
from keys.limits.counters import FallbackCounters, MemoryCounters, RedisCounters, RedisOutage
from keys.limits.policies import Policy
from keys.models import Tester
from keys.store import Store
from tests.flows import set_overrides
from tests.helpers import bearer
from tests.private_services import PrivateRedis

pytestmark = [pytest.mark.fault, pytest.mark.redis]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(private_redis: PrivateRedis) -> dict[str, Any]:
    return {"redis_url": private_redis.url}


def shared_names(server: PrivateRedis) -> list[bytes]:
    client = redis.Redis.from_url(server.url)
    try:
        return sorted(client.scan_iter(match="drawbridge*"))
    finally:
        client.close()


def metric(client: Any, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_requests_are_served_while_redis_is_down_and_it_is_used_again_after(
    client: Any,
    private_redis: PrivateRedis,
    make_key: Callable[..., IssuedKey],
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, revoked = make_key(), make_key()
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    assert shared_names(private_redis), "the counters were not in Redis to begin with"
    assert client.get("/readyz").get_json()["checks"]["redis"] == "ok"

    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="drawbridge.redis"):
        answers = [client.get("/v1/me", headers=bearer(key.secret)) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    # The warning is logged once, not per request.
    warnings = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(warnings) == 1
    # Key state never depends on Redis: a revocation holds at once, a bad key is a 401.
    with store.transaction() as tx:
        tx.keys.revoke(revoked.key.id, "test:setup", "leaked")
    refused = client.get("/v1/me", headers=bearer(revoked.secret))
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "key_revoked"
    assert client.get("/v1/me", headers=bearer("drwb_not-a-key")).status_code == 401
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["redis"].startswith("unavailable: ConnectionError")
    assert metric(client, 'drawbridge_redis_fallback_total{store="rate_limits"}') >= 20
    assert metric(client, 'drawbridge_redis_fallback_total{store="anomaly_counters"}') >= 20
    assert metric(client, "drawbridge_redis_up") == 0

    private_redis.start()
    assert client.get("/readyz").get_json()["checks"]["redis"] == "ok"
    assert metric(client, "drawbridge_redis_up") == 1
    assert shared_names(private_redis) == []
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    # Counting goes to Redis again: the restarted (empty) server has the key's counters.
    assert any(b"key" in name or b"anomaly" in name for name in shared_names(private_redis))


def test_rate_limits_still_hold_per_process_while_redis_is_down(
    client: Any, private_redis: PrivateRedis, tester: Tester, make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key(tester.id)
    set_overrides(
        client.application.extensions["drawbridge"].store, tester.id, requests_per_minute=3
    )
    private_redis.stop()
    codes = [client.get("/v1/me", headers=bearer(key.secret)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = client.get("/v1/me", headers=bearer(key.secret))
    assert refused.headers["x-should-retry"] == "true"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_an_outage_tries_redis_again_after_its_pause(private_redis: PrivateRedis) -> None:
    outage = RedisOutage(retry_seconds=0.2)
    limits = RateLimits(private_redis.url, 10, outage)
    limits.init_app(Flask("limits-only"))
    counters = FallbackCounters(RedisCounters.from_url(private_redis.url), outage, MemoryCounters())
    policy = Policy(requests_per_minute=100)
    try:
        limits.admit_key("key_a", policy)
        private_redis.stop()
        started = time.perf_counter()
        for n in range(50):
            limits.admit_key("key_a", policy)
            counters.record("key_a", f"10.0.0.{n}", time.time(), 600)
        # One failed attempt (connection refused), then memory until the pause is over:
        # a dead Redis does not cost a round trip per request.
        assert time.perf_counter() - started < 1.0
        assert not outage.up
        assert outage.fallbacks == {"rate_limits": 50, "anomaly_counters": 50}
        private_redis.start()
        time.sleep(0.25)
        limits.admit_key("key_a", policy)
        assert outage.up
        assert counters.record("key_a", "10.9.9.9", time.time(), 600).client_ips == 1
    finally:
        counters.close()
