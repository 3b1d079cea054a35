"""Leak response on a live deployment: two gateway instances x two workers on PostgreSQL and
Redis, behind one (simulated) trusted proxy, with an alert webhook.

* one key used from 50 client IPs is suspended automatically, across instances, within the
  policy's window; the webhook gets the alert; the tester's other key keeps working;
* lockdown through the admin API refuses all tester traffic on every instance at once while
  the admin API still answers; lifting it lets traffic through again;
* a tester revokes and rotates their own key through /v1/me with the official SDK's client,
  and the change holds on the other instance at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
import requests

from bench.revocation import PropagationStack, lockdown_trial
from keys.leaks.anomalies import ANOMALY_ACTOR
from keys.limits.policies import Policy
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.redis]

HTTP_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(
    postgres_server: str, fleet_redis_server: str, webhook: WebhookReceiver
) -> Iterator[PropagationStack]:
    url = fleet_redis_server
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    with PropagationStack(
        postgres_server,
        url,
        instances=2,
        workers=2,
        threads=4,
        extra_env={
            "DRAWBRIDGE_TRUSTED_PROXIES": "1",
            "DRAWBRIDGE_ALERT_WEBHOOK_URLS": webhook.url,
            "DRAWBRIDGE_ALERT_TIMEOUT_SECONDS": "2",
        },
    ) as stack:
        yield stack


def as_tester(base: str, path: str, secret: str, client_ip: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {secret}"}
    if client_ip:
        headers["X-Forwarded-For"] = client_ip
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"{base}/v1{path}", headers=headers, timeout=HTTP_TIMEOUT)


def code_of(response: Any) -> str | None:
    return response.json()["error"]["code"] if response.status_code >= 400 else None


def test_a_key_used_from_50_addresses_is_suspended_and_alerted(
    stack: PropagationStack, webhook: WebhookReceiver
) -> None:
    tester = stack.new_tester()
    abused, other = stack.new_key(tester), stack.new_key(tester)
    started = time.monotonic()
    outcomes = []
    for n in range(1, 51):
        # Alternate instances: only the shared (Redis) counters see all the addresses.
        answer = as_tester(stack.urls[n % 2], "/me", abused["secret"], f"198.51.100.{n}")
        outcomes.append(code_of(answer))
    elapsed = time.monotonic() - started
    limit = Policy().anomaly_max_client_ips
    assert outcomes[:limit] == [None] * limit, outcomes
    assert outcomes[limit:] == ["key_suspended"] * (50 - limit), outcomes
    assert elapsed < Policy().anomaly_window_seconds

    key = stack.admin_ok("GET", f"/keys/{abused['id']}", instance=1)
    assert key["status"] == "suspended" and key["suspended"]["by"] == ANOMALY_ACTOR
    assert f"{limit + 1} distinct client IPs" in key["suspended"]["reason"]

    alerts = [a for a in webhook.wait_for(1) if a["key_id"] == abused["id"]]
    assert len(alerts) == 1, webhook.alerts
    (alert,) = alerts
    assert alert["rule"] == "client_ips" and alert["action"] == "suspended"
    assert alert["key_hint"] == abused["hint"] and alert["tester_id"] == tester
    assert abused["id"] in alert["text"]
    raw = b"".join(webhook.bodies).decode()
    assert abused["secret"] not in raw and other["secret"] not in raw

    # The tester's other key works, on both instances, even from an address of the abuse.
    for base in stack.urls:
        assert as_tester(base, "/me", other["secret"], "198.51.100.50").status_code == 200
    audit = stack.admin_ok("GET", "/audit?limit=1000")["data"]
    recorded = [e for e in audit if e["target"] == abused["id"] and e["actor"] == ANOMALY_ACTOR]
    assert [e["action"] for e in recorded] == ["key.suspend", "anomaly.detected"]


def test_lockdown_refuses_all_tester_traffic_everywhere_while_admins_work(
    stack: PropagationStack,
) -> None:
    tester = stack.new_tester()
    key = stack.new_key(tester)
    # Under load: a hammering client on both instances, lockdown on through instance 1.
    trial = lockdown_trial(stack, action_instance=1, clients_per_instance=2)
    report = [(o.instance, o.admitted, o.refused, o.other) for o in trial.instances]
    assert trial.violations == 0 and trial.admitted_after_return == 0, report
    assert trial.admin_api_during_lockdown == [200, 200]
    for outcome in trial.instances:
        assert outcome.refused > 0 and outcome.first_admit_after_lift is not None, report

    # Step by step: every instance refuses at once, the admin planes answer, then it lifts.
    called = time.monotonic()
    stack.admin_ok("POST", "/lockdown", json={"lockdown": True, "reason": "incident drill"})
    returned = time.monotonic()
    try:
        for base in stack.urls:
            sent = time.monotonic()
            refused = as_tester(base, "/me", key["secret"])
            assert sent - returned < 0.1
            assert refused.status_code == 503 and code_of(refused) == "lockdown"
            assert refused.headers["Retry-After"]
        for instance in range(len(stack.urls)):
            state = stack.admin_ok("GET", "/lockdown", instance=instance)
            assert state["lockdown"] is True and state["reason"] == "incident drill"
            assert stack.admin_ok("GET", "/whoami", instance=instance)["role"] == "admin"
    finally:
        stack.admin_ok("POST", "/lockdown", json={"lockdown": False, "reason": "drill over"})
    for base in stack.urls:
        assert as_tester(base, "/me", key["secret"]).status_code == 200
    assert returned - called < 5


def sdk(stack: PropagationStack, instance: int, secret: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.urls[instance]}/v1",
        api_key=secret,
        max_retries=0,
        timeout=HTTP_TIMEOUT,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


def test_self_service_rotate_and_revoke_hold_on_every_instance(stack: PropagationStack) -> None:
    tester = stack.new_tester()
    key = stack.new_key(tester)
    with sdk(stack, 0, key["secret"]) as client:
        rotated = client.post("/me/rotate", cast_to=dict, body={"grace_seconds": 0})
    assert rotated["rotated_from"] == key["id"] and rotated["secret"] != key["secret"]

    # The old secret is refused on the other instance at once; the new one works there.
    with (
        sdk(stack, 1, key["secret"]) as old_client,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        old_client.get("/me", cast_to=dict)
    assert refused.value.code == "key_rotated"
    with sdk(stack, 1, rotated["secret"]) as new_client:
        me = new_client.get("/me", cast_to=dict)
        assert me["key"]["id"] == rotated["id"]
        revoked = new_client.post(
            "/me/revoke", cast_to=dict, body={"reason": "pasted into a public gist"}
        )
    assert revoked["status"] == "revoked"
    assert revoked["revoked"]["by"] == f"tester:{tester}"
    assert rotated["secret"] not in json.dumps(revoked)

    with (
        sdk(stack, 0, rotated["secret"]) as client,
        pytest.raises(openai.AuthenticationError) as gone,
    ):
        client.get("/me", cast_to=dict)
    assert gone.value.code == "key_revoked"
    audit = stack.admin_ok("GET", "/audit?limit=1000")["data"]
    actions = [
        (e["action"], e["actor"]) for e in audit if e["target"] in (key["id"], rotated["id"])
    ]
    assert ("key.rotate", f"tester:{tester}") in actions
    assert ("key.revoke", f"tester:{tester}") in actions
