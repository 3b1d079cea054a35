"""``x-should-retry``: ``true`` only where the same request, sent again soon, can succeed.

The openai SDK obeys the header before its own rules, which would retry every 409, 429 and
5xx and sleep up to two minutes on a ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses
from sqlalchemy.exc import OperationalError

from keys.access.lifecycle import IssuedKey
from keys.models import Tester
from keys.store import Store
from tests.flows import set_overrides
from tests.helpers import UPSTREAM_URL, bearer

VIDEOS = f"{UPSTREAM_URL}/videos"


def should_retry(response: Any) -> str:
    value: str = response.headers["x-should-retry"]
    return value


def test_a_lockdown_is_not_worth_retrying(client: Any, store: Store, key: IssuedKey) -> None:
    with store.transaction() as tx:
        tx.lockdown.set_lockdown(True, "admin:test", "drill")
    refused = client.get("/v1/me", headers=bearer(key.secret))
    assert refused.status_code == 503
    assert should_retry(refused) == "false"
    # Past the SDK's two-minute ceiling too, for clients that ignore x-should-retry.
    assert int(refused.headers["Retry-After"]) > 120


def test_a_short_rate_limit_wait_is_worth_retrying_a_daily_one_is_not(
    client: Any, store: Store, tester: Tester, key: IssuedKey
) -> None:
    set_overrides(store, tester.id, requests_per_minute=1)
    client.get("/v1/me", headers=bearer(key.secret))
    minute = client.get("/v1/me", headers=bearer(key.secret))
    assert minute.status_code == 429 and should_retry(minute) == "true"
    set_overrides(store, tester.id, requests_per_minute=100, requests_per_day=1)
    client.get("/v1/me", headers=bearer(key.secret))
    day = client.get("/v1/me", headers=bearer(key.secret))
    assert day.status_code == 429 and int(day.headers["Retry-After"]) > 60
    assert should_retry(day) == "false"


def test_an_exhausted_daily_quota_is_not_worth_retrying(
    client: Any, store: Store, tester: Tester, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    set_overrides(store, tester.id, generations_per_day=0)
    refused = client.post("/v1/videos", json={"prompt": "p"}, headers=bearer(key.secret))
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "quota_exceeded"
    assert should_retry(refused) == "false"


@pytest.mark.parametrize(
    ("upstream_answer", "status"),
    [({"status": 500, "body": b"x"}, 502), ({"body": requests.ReadTimeout()}, 504)],
)
def test_a_failing_backend_is_worth_retrying(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    upstream_answer: dict[str, Any],
    status: int,
) -> None:
    upstream.add(responses.POST, VIDEOS, **upstream_answer)
    answer = client.post("/v1/videos", json={"prompt": "p"}, headers=bearer(key.secret))
    assert answer.status_code == status
    assert should_retry(answer) == "true"


def test_an_unreachable_key_store_is_a_retryable_503(
    client: Any, store: Store, key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("down"))

    monkeypatch.setattr(type(store), "check_key", down)
    answer = client.get("/v1/me", headers=bearer(key.secret))
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "service_unavailable"
    assert answer.headers["Retry-After"] == "1"
    assert should_retry(answer) == "true"


def test_a_bug_is_not_retried(
    client: Any, store: Store, key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(type(store), "check_key", explode)
    answer = client.get("/v1/me", headers=bearer(key.secret))
    assert answer.status_code == 500
    assert should_retry(answer) == "false"
