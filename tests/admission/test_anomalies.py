"""Anomaly detection: each rule suspends a key (never revokes it), with thresholds from the
cohort policy; honeytokens are refused like unknown keys; the webhook gets the alert; the
tester's other keys keep working; the counters behave the same in process and in Redis."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from gateway.admission.alerts import QUEUE_SIZE, AlertSender
from gateway.admission.anomalies import AnomalyWatch
from gateway.app import create_app
from gateway.client import new_proof_key
from gateway.settings import Settings, SettingsError, load_settings
from gateway.state import GatewayState, build_state
from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import IssuedKey
from keys.leaks.anomalies import ANOMALY_ACTOR, BASELINE_DECAY, baseline
from keys.limits.counters import (
    BASELINE_MINUTES,
    Counters,
    CountersUnavailable,
    FallbackCounters,
    KeyActivity,
    MemoryCounters,
    RedisCounters,
)
from keys.limits.policies import Policy, PolicyError, load_policy_file, policy_from_mapping
from keys.models import Tester
from keys.store import Store
from tests.helpers import Cli, FakeClock, bearer
from tests.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def settings_overrides(webhook: WebhookReceiver) -> dict[str, Any]:
    return {"alert_webhook_urls": [webhook.url], "alert_timeout_seconds": 2.0}


def use(client: FlaskClient, secret: str, ip: str = "127.0.0.1") -> Any:
    return client.get("/v1/me", headers=bearer(secret), environ_base={"REMOTE_ADDR": ip})


def code_of(response: Any) -> str | None:
    body = response.get_json()
    return body["error"]["code"] if response.status_code >= 400 else None


def set_policy(store: Store, cohort: str, **values: Any) -> None:
    with store.transaction() as tx:
        tx.policies.set_policy(cohort, Policy(**values), "test:setup")


def key_row(store: Store, key_id: str) -> Any:
    with store.read() as tx:
        return tx.keys.get(key_id)


def detector_entries(store: Store) -> list[Any]:
    with store.read() as tx:
        return [e for e in tx.audit.entries() if e.actor == ANOMALY_ACTOR]


def assert_no_secret(alert: dict[str, Any], *secrets: str) -> None:
    raw = json.dumps(alert)
    for secret in secrets:
        assert secret not in raw and secret.split("_", 1)[1][:20] not in raw


# -- policy ----------------------------------------------------------------------------


def test_policy_defaults_are_the_documented_default_cohort() -> None:
    documented = load_policy_file(ROOT / "config" / "policies.toml").cohorts["default"]
    assert documented == Policy()
    assert (Policy().anomaly_window_seconds, Policy().anomaly_max_client_ips) == (600, 20)
    text = (ROOT / "config" / "policies.toml").read_text()
    for name in ("anomaly_window_seconds", "anomaly_max_client_ips", "anomaly_rate_factor"):
        assert name in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("anomaly_window_seconds", 10),
        ("anomaly_window_seconds", 86_401),
        ("anomaly_max_client_ips", -1),
        ("anomaly_max_client_ips", True),
        ("anomaly_rate_factor", 2.5),
        ("anomaly_rate_floor", 0),
    ],
)
def test_policy_refuses_bad_anomaly_thresholds(name: str, value: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_mapping({name: value})
    assert caught.value.field == name


def test_baseline_is_an_exponentially_weighted_mean_of_earlier_minutes() -> None:
    assert baseline((0,) * BASELINE_MINUTES) == 0
    assert baseline((12,) * BASELINE_MINUTES) == pytest.approx(12)
    # The newest minute weighs most.
    assert baseline((10,) + (0,) * 29) > baseline((0,) * 29 + (10,))
    assert baseline((10,) + (0,) * 29) / baseline((0, 10) + (0,) * 28) == pytest.approx(
        1 / BASELINE_DECAY
    )


# -- counters, in process and in Redis -------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest) -> Iterator[Counters]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    shared = RedisCounters.from_url(request.getfixturevalue("redis_url"))
    yield shared
    shared.close()


def test_distinct_client_ips_in_a_sliding_window(counters: Counters) -> None:
    t0 = 1_800_000_000.0
    assert counters.record("key_a", "10.0.0.1", t0, 300).client_ips == 1
    assert counters.record("key_a", "10.0.0.1", t0 + 1, 300).client_ips == 1
    assert counters.record("key_a", "10.0.0.2", t0 + 100, 300).client_ips == 2
    assert counters.record("key_a", "10.0.0.3", t0 + 250, 300).client_ips == 3
    assert counters.record("key_b", "10.0.0.9", t0 + 250, 300).client_ips == 1
    # 10.0.0.1 was last seen at t0 + 1: out of the window at t0 + 301.
    assert counters.record("key_a", "10.0.0.2", t0 + 301, 300).client_ips == 2
    # Seen again: counted again.
    assert counters.record("key_a", "10.0.0.1", t0 + 302, 300).client_ips == 3


def test_requests_per_minute_and_earlier_minutes(counters: Counters) -> None:
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a minute
    for offset in (0, 10, 59):
        activity = counters.record("key_a", "10.0.0.1", t0 + offset, 600)
    assert activity == KeyActivity(client_ips=1, this_minute=3)
    for offset in (60, 61):
        activity = counters.record("key_a", "10.0.0.1", t0 + offset, 600)
    assert activity.this_minute == 2
    earlier = counters.earlier_minutes("key_a", t0 + 180)
    assert len(earlier) == BASELINE_MINUTES
    assert earlier[:4] == (0, 2, 3, 0)
    assert counters.earlier_minutes("key_unknown", t0) == (0,) * BASELINE_MINUTES


def test_claims_are_granted_once_per_period(counters: Counters) -> None:
    now = time.time()
    assert counters.claim("honeytoken:key_a", 1, now) is True
    assert counters.claim("honeytoken:key_a", 1, now) is False
    assert counters.claim("honeytoken:key_b", 1, now) is True
    if isinstance(counters, RedisCounters):
        time.sleep(1.1)  # Redis expires claims on its own clock
    assert counters.claim("honeytoken:key_a", 1, now + 1.1) is True


def test_redis_counters_take_one_round_trip_per_request(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = RedisCounters.from_url(redis_url)
    shared.record("key_a", "10.0.0.1", time.time(), 600)  # connect outside the count
    sent = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    activity = shared.record("key_a", "10.0.0.2", time.time(), 600)
    assert len(sent) == 1 and activity.client_ips == 2
    shared.close()


def test_redis_counters_report_unavailable_redis() -> None:
    gone = RedisCounters.from_url("redis://127.0.0.1:1/0", timeout=0.2)
    with pytest.raises(CountersUnavailable):
        gone.record("key_a", "10.0.0.1", time.time(), 600)
    with pytest.raises(CountersUnavailable):
        gone.claim("x", 1, time.time())


# -- the rules, through the gateway ----------------------------------------------------


def test_many_client_ips_suspend_the_key_and_alert(
    client: FlaskClient,
    store: Store,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    webhook: WebhookReceiver,
    state: GatewayState,
) -> None:
    tester = make_tester()
    abused, other = make_key(tester.id), make_key(tester.id)
    for n in range(1, 21):
        assert use(client, abused.secret, f"203.0.113.{n}").status_code == 200
    tripped = use(client, abused.secret, "203.0.113.21")
    assert tripped.status_code == 401 and code_of(tripped) == "key_suspended"
    # Suspended everywhere, for every address, from now on; the tester's other key works.
    assert code_of(use(client, abused.secret, "203.0.113.1")) == "key_suspended"
    assert use(client, other.secret, "203.0.113.21").status_code == 200

    key = key_row(store, abused.key.id)
    assert key.status == "suspended" and key.suspended_by == ANOMALY_ACTOR
    assert "client_ips" in key.suspended_reason
    assert "21 distinct client IPs within 600 s (limit 20)" in key.suspended_reason
    assert key_row(store, other.key.id).status == "active"
    entries = detector_entries(store)
    assert [e.action for e in entries] == ["key.suspend", "anomaly.detected"]
    assert entries[1].details["client_ips"] == 21 and entries[1].details["action"] == "suspended"

    (alert,) = webhook.wait_for(1)
    assert alert["rule"] == "client_ips" and alert["action"] == "suspended"
    assert alert["key_id"] == abused.key.id and alert["key_hint"] == abused.key.hint
    assert alert["tester_id"] == tester.id and alert["client_ip"] == "203.0.113.21"
    assert abused.key.id in alert["text"] and "21 distinct client IPs" in alert["text"]
    assert_no_secret(alert, abused.secret, other.secret)
    # An admin resumes the key; it works again (from a known address).
    with store.transaction() as tx:
        tx.keys.resume(abused.key.id, "test:admin", "tester confirmed")
    state.anomalies.counters.reset()
    assert use(client, abused.secret, "203.0.113.1").status_code == 200


def test_client_ip_threshold_comes_from_the_cohort_policy(
    client: FlaskClient,
    store: Store,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
) -> None:
    set_policy(store, "tight", anomaly_max_client_ips=3)
    set_policy(store, "untracked", anomaly_max_client_ips=0)
    tight = make_key(make_tester(cohort="tight").id)
    untracked = make_key(make_tester(cohort="untracked").id)
    for n in range(1, 4):
        assert use(client, tight.secret, f"198.51.100.{n}").status_code == 200
    assert code_of(use(client, tight.secret, "198.51.100.4")) == "key_suspended"
    for n in range(1, 31):
        assert use(client, untracked.secret, f"198.51.100.{n}").status_code == 200


def test_a_burst_far_above_the_keys_baseline_suspends_it(
    client: FlaskClient,
    store: Store,
    clock: FakeClock,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    webhook: WebhookReceiver,
) -> None:
    set_policy(store, "steady", anomaly_rate_factor=3, anomaly_rate_floor=5)
    issued = make_key(make_tester(cohort="steady").id)
    # Ten minutes at 4 requests a minute make the baseline.
    for _ in range(10):
        for _ in range(4):
            assert use(client, issued.secret).status_code == 200
        clock.advance(minutes=1)
    usual = baseline((4,) * 10 + (0,) * (BASELINE_MINUTES - 10))
    trips_at = next(n for n in range(1, 1000) if n > 5 and n > 3 * usual)
    assert trips_at > 6  # the baseline, not the floor, decides here
    for _ in range(trips_at - 1):
        assert use(client, issued.secret).status_code == 200
    tripped = use(client, issued.secret)
    assert code_of(tripped) == "key_suspended"
    key = key_row(store, issued.key.id)
    assert key.suspended_by == ANOMALY_ACTOR and "anomaly rate" in key.suspended_reason
    (alert,) = webhook.wait_for(1)
    assert alert["rule"] == "rate" and alert["requests_this_minute"] == trips_at
    assert alert["baseline_per_minute"] == round(usual, 2) and alert["floor"] == 5
    assert_no_secret(alert, issued.secret)


def test_a_new_key_is_held_to_the_floor_and_429s_still_count(
    client: FlaskClient,
    store: Store,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
) -> None:
    set_policy(store, "fresh", anomaly_rate_factor=3, anomaly_rate_floor=5, requests_per_minute=2)
    issued = make_key(make_tester(cohort="fresh").id)
    codes = [code_of(use(client, issued.secret)) for _ in range(6)]
    # Two admitted, three refused by the rate limit, the sixth attempt trips the floor.
    assert codes == [None, None] + ["rate_limit_exceeded"] * 3 + ["key_suspended"]


def test_rate_rule_can_be_switched_off(
    client: FlaskClient,
    store: Store,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
) -> None:
    set_policy(store, "bulk", anomaly_rate_factor=0, anomaly_rate_floor=1)
    issued = make_key(make_tester(cohort="bulk").id)
    assert all(use(client, issued.secret).status_code == 200 for _ in range(20))


def test_a_rotated_key_in_grace_loses_its_grace_instead(
    client: FlaskClient,
    store: Store,
    clock: FakeClock,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
) -> None:
    from datetime import timedelta

    set_policy(store, "rotating", anomaly_max_client_ips=2)
    old = make_key(make_tester(cohort="rotating").id)
    with store.transaction() as tx:
        new = tx.keys.rotate(old.key.id, "test:admin", timedelta(hours=1))
    assert use(client, old.secret, "192.0.2.1").status_code == 200
    assert use(client, old.secret, "192.0.2.2").status_code == 200
    assert code_of(use(client, old.secret, "192.0.2.3")) == "key_rotated"
    assert key_row(store, old.key.id).grace_until == clock()
    assert use(client, new.secret, "192.0.2.3").status_code == 200
    assert [e.action for e in detector_entries(store)] == ["key.end_grace", "anomaly.detected"]


# -- honeytokens -----------------------------------------------------------------------


def test_a_honeytoken_is_refused_like_an_unknown_key_suspended_and_alerted(
    client: FlaskClient,
    store: Store,
    clock: FakeClock,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    make_token: Callable[..., Any],
    webhook: WebhookReceiver,
) -> None:
    tester = make_tester()
    admin = make_token("admin")
    issued = client.post(
        f"/admin/v1/testers/{tester.id}/keys",
        headers=bearer(admin.secret),
        json={"honeytoken": True},
    )
    assert issued.status_code == 201, issued.get_json()
    honey = issued.get_json()
    assert honey["metadata"] == {"honeytoken": "true"} and honey["status"] == "active"
    real = make_key(tester.id)

    unknown = use(client, KeyFormat("drwb").generate(), "192.0.2.50")
    used = use(client, honey["secret"], "192.0.2.50")
    assert used.status_code == unknown.status_code == 401
    assert used.get_json() == unknown.get_json()
    assert used.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]

    key = key_row(store, honey["id"])
    assert key.status == "suspended" and key.suspended_by == ANOMALY_ACTOR
    assert "honeytoken" in key.suspended_reason
    (alert,) = webhook.wait_for(1)
    assert alert["rule"] == "honeytoken" and alert["key_id"] == honey["id"]
    assert alert["client_ip"] == "192.0.2.50" and alert["key_hint"] == honey["hint"]
    assert alert["proof_bound"] is False
    assert_no_secret(alert, honey["secret"])

    # Still refused as unknown once suspended (a suspended code would give it away), and
    # no alert storm: the next alert for it comes after a few minutes at the earliest.
    again = use(client, honey["secret"], "192.0.2.51")
    assert again.get_json() == unknown.get_json()
    time.sleep(0.3)
    assert len(webhook.alerts) == 1
    clock.advance(minutes=6)
    use(client, honey["secret"], "192.0.2.52")
    alerts = webhook.wait_for(2)
    assert alerts[1]["action"] == "already_stopped" and alerts[1]["client_ip"] == "192.0.2.52"
    # The tester's real key is untouched.
    assert use(client, real.secret).status_code == 200
    assert [e.action for e in detector_entries(store)] == [
        "key.suspend",
        "anomaly.detected",
        "anomaly.detected",
    ]


def test_a_proof_bound_honeytoken_says_so_in_its_alert_and_audit_entry(
    client: FlaskClient,
    store: Store,
    make_key: Callable[..., IssuedKey],
    webhook: WebhookReceiver,
    tmp_path: Path,
) -> None:
    honey = make_key(honeytoken=True)
    with store.transaction() as tx:
        tx.proof_keys.bind(honey.key.id, new_proof_key(tmp_path / "honey.pem"), "test:setup")
    assert use(client, honey.secret, "192.0.2.60").status_code == 401
    (alert,) = webhook.wait_for(1)
    assert alert["rule"] == "honeytoken" and alert["proof_bound"] is True
    assert "proof-bound: its string alone could not have been used" in alert["text"]
    assert key_row(store, honey.key.id).status == "suspended"  # stopped all the same
    (entry,) = [e for e in detector_entries(store) if e.action == "anomaly.detected"]
    assert entry.details["proof_bound"] is True


def test_cli_issues_honeytokens(cli: Cli, store: Store) -> None:
    tester = json.loads(
        cli("testers", "add", "Honey", "--email", "honey@example.com", "--json").output
    )
    key = json.loads(cli("keys", "issue", tester["id"], "--honeytoken", "--json").output)
    assert key["metadata"] == {"honeytoken": "true"}
    with store.read() as tx:
        issue = [e for e in tx.audit.entries() if e.action == "key.issue"][-1]
    assert issue.details["honeytoken"] is True


def test_admin_api_refuses_a_non_boolean_honeytoken(
    client: FlaskClient, make_tester: Callable[..., Tester], make_token: Callable[..., Any]
) -> None:
    admin = make_token("admin")
    answer = client.post(
        f"/admin/v1/testers/{make_tester().id}/keys",
        headers=bearer(admin.secret),
        json={"honeytoken": "yes"},
    )
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "honeytoken"


# -- across workers and instances: Redis -----------------------------------------------


def test_redis_counters_see_a_key_across_instances(
    settings: Settings,
    redis_url: str,
    clock: FakeClock,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    store: Store,
    webhook: WebhookReceiver,
) -> None:
    shared = dataclasses.replace(settings, redis_url=redis_url)
    instances: list[GatewayState] = []
    apps: list[Flask] = []
    try:
        for _ in range(2):
            instance = build_state(shared)
            instance.store.clock = clock
            instances.append(instance)
            apps.append(create_app(state=instance))
        assert all(isinstance(i.anomalies.counters, FallbackCounters) for i in instances)
        clients = [app.test_client() for app in apps]
        tester = make_tester()
        abused, other = make_key(tester.id), make_key(tester.id)
        # Each instance sees only 10 or 11 of the addresses; together they see 21.
        for n in range(1, 21):
            answer = use(clients[n % 2], abused.secret, f"203.0.113.{n}")
            assert answer.status_code == 200
        assert code_of(use(clients[1], abused.secret, "203.0.113.21")) == "key_suspended"
        assert code_of(use(clients[0], abused.secret, "203.0.113.1")) == "key_suspended"
        assert use(clients[0], other.secret).status_code == 200
        assert webhook.wait_for(1)[0]["key_id"] == abused.key.id
        assert key_row(store, abused.key.id).suspended_by == ANOMALY_ACTOR
    finally:
        for instance in instances:
            instance.anomalies.close()
            instance.upstream.close()
            instance.store.database.dispose()


class _DownCounters(MemoryCounters):
    def record(self, key_id: str, client_ip: str, now: float, window_seconds: int) -> KeyActivity:
        raise CountersUnavailable("redis: ConnectionError")


def test_detection_is_skipped_not_fatal_when_counters_are_down(
    store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    issued = make_key()
    with store.read() as tx:
        principal = tx.keys.verify(issued.secret)
    watch = AnomalyWatch(_DownCounters(), AlertSender(()), store)
    for n in range(50):
        watch.watch(principal, f"10.1.0.{n}")
    assert key_row(store, issued.key.id).status == "active"


def test_memory_detection_costs_microseconds(
    store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    issued = make_key()
    with store.read() as tx:
        principal = tx.keys.verify(issued.secret)
    # A key that may send this much (the rate rule would suspend it at 301 a minute).
    principal = dataclasses.replace(
        principal, policy=dataclasses.replace(principal.policy, anomaly_rate_factor=0)
    )
    watch = AnomalyWatch(MemoryCounters(), AlertSender(()), store)
    started = time.perf_counter()
    for n in range(2000):
        watch.watch(principal, f"10.2.{n % 4}.1")
    per_request = (time.perf_counter() - started) / 2000
    assert per_request < 200e-6, f"{per_request * 1e6:.1f} µs per request"


# -- alerts ------------------------------------------------------------------------------


def test_a_slow_webhook_never_delays_a_request_and_is_not_retried() -> None:
    with WebhookReceiver(status=500, delay=1.0) as slow:
        sender = AlertSender([slow.url], timeout=0.3)
        started = time.perf_counter()
        assert sender.send({"text": "one"}) is True
        assert time.perf_counter() - started < 0.05
        assert sender.flush(timeout=5)
        time.sleep(1.0)
        assert len(slow.bodies) == 1
        sender.close()


def test_a_full_alert_queue_drops_instead_of_growing() -> None:
    with WebhookReceiver(delay=0.5) as slow:
        sender = AlertSender([slow.url], timeout=0.2)
        results = [sender.send({"text": f"alert {n}"}) for n in range(QUEUE_SIZE + 10)]
    assert results.count(False) >= 9
    assert sender.flush(timeout=30)
    sender.close()


def test_alert_settings_are_checked_and_read_from_the_environment(settings: Settings) -> None:
    env = {"DRAWBRIDGE_ALERT_WEBHOOK_URLS": "https://hooks.example/a, http://127.0.0.1:9/b"}
    loaded = load_settings(environ=env)
    assert loaded.alert_webhook_urls == ("https://hooks.example/a", "http://127.0.0.1:9/b")
    with pytest.raises(SettingsError, match="alert_webhook_urls"):
        build_state(dataclasses.replace(settings, alert_webhook_urls=("ftp://x/y",)))
