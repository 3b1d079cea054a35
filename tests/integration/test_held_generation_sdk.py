"""The official openai SDK, unmodified, against held generations and rate limits on the live
gateway: ``create_and_poll`` simply waits while an approver decides, and the SDK's retry
honours the gateway's ``Retry-After``."""

from __future__ import annotations

import contextlib
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import openai._base_client
import pytest

from tests.integration.conftest import SIM_CONTENT_BYTES
from tests.integration.fleet import gateway_fleet, query
from tests.integration.live import LiveGateway, LiveSimulator, TesterKey, wait_for

pytestmark = pytest.mark.integration

HOLD_RULE = {
    "pattern": "(?i)\\bsenator\\b",
    "action": "hold",
    "reason": "Prompts about elected officials are reviewed before they run.",
}
HELD_PROMPT = "a senator feeding pigeons in the rain"


@pytest.fixture
def approver_token(live_gateway: LiveGateway) -> str:
    token = live_gateway.admin_ok(
        "POST", "/tokens", json={"name": "integration approver", "role": "approver"}
    )
    live_gateway.issued_secrets.append(token["secret"])
    secret: str = token["secret"]
    return secret


@pytest.fixture
def held_tester(live_gateway: LiveGateway, make_tester_key: Callable[..., TesterKey]) -> TesterKey:
    key = make_tester_key()
    live_gateway.admin_ok(
        "PUT", f"/testers/{key.tester_id}/policy", json={"prompt_rules": [HOLD_RULE]}
    )
    return key


class PollInBackground:
    """``client.videos.create_and_poll`` running in a thread, as a tester's script would."""

    def __init__(self, client: openai.OpenAI, prompt: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(client, prompt), daemon=True)
        self._thread.start()

    def _run(self, client: openai.OpenAI, prompt: str) -> None:
        try:
            self.result = client.videos.create_and_poll(
                prompt=prompt, seconds="4", poll_interval_ms=200
            )
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 20.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "create_and_poll is still polling"
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def pending_request(live_gateway: LiveGateway, token: str, tester_id: str) -> dict[str, Any]:
    """The tester's pending generation, once the SDK's create has reached the gateway."""
    found: list[dict[str, Any]] = []

    def appeared() -> bool:
        response = live_gateway.admin(
            "GET", f"/approvals?status=pending&tester_id={tester_id}", token=token
        )
        assert response.status_code == 200, response.text
        found[:] = response.json()["data"]
        return bool(found)

    wait_for(appeared, 10, "the held generation to reach the approval queue")
    (request,) = found
    return request


def decide(
    live_gateway: LiveGateway, token: str, approval_id: str, verb: str, reason: str
) -> dict[str, Any]:
    response = live_gateway.admin(
        "POST", f"/approvals/{approval_id}/{verb}", token=token, json={"reason": reason}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_and_poll_returns_completed_after_approval(
    live_gateway: LiveGateway, held_tester: TesterKey, approver_token: str
) -> None:
    client = live_gateway.openai_client(held_tester.secret)
    waiting = PollInBackground(client, HELD_PROMPT)

    request = pending_request(live_gateway, approver_token, held_tester.tester_id)
    assert request["held_because"] == HOLD_RULE["reason"]
    assert request["request"]["prompt"] == HELD_PROMPT
    # While the approver thinks, the SDK keeps polling an ordinary queued video.
    time.sleep(0.5)
    assert waiting.running
    held = client.videos.retrieve(request["video_id"])
    assert held.status == "queued" and held.prompt == HELD_PROMPT

    decided = decide(live_gateway, approver_token, request["id"], "approve", "harmless")
    assert decided["status"] == "approved" and decided["decided_by"].startswith("approver:")

    video = waiting.join()
    assert video.status == "completed", video
    assert video.id == request["video_id"]  # the gateway's id, mapped to the backend's
    assert video.prompt == HELD_PROMPT and video.progress == 100
    assert len(client.videos.download_content(video.id).read()) > SIM_CONTENT_BYTES


def test_create_and_poll_returns_failed_with_the_reason_after_rejection(
    live_gateway: LiveGateway, held_tester: TesterKey, approver_token: str
) -> None:
    client = live_gateway.openai_client(held_tester.secret)
    waiting = PollInBackground(client, HELD_PROMPT)
    request = pending_request(live_gateway, approver_token, held_tester.tester_id)
    reason = "We do not depict real politicians in this program."

    decide(live_gateway, approver_token, request["id"], "reject", reason)

    video = waiting.join()
    assert video.status == "failed", video
    assert video.id == request["video_id"]
    assert video.error is not None
    assert video.error.code == "rejected_by_reviewer" and video.error.message == reason
    me = live_gateway.tester_get("/me", held_tester.secret).json()
    (shown,) = [r for r in me["requests"] if r["id"] == request["id"]]
    assert (shown["status"], shown["decision_reason"]) == ("rejected", reason)
    quotas = {q["metric"]: q for q in me["quotas"]}
    assert quotas["generations_per_day"]["used"] == 0  # the rejection refunded it
    assert quotas["concurrent_jobs"]["used"] == 0


def test_only_approvers_decide_and_only_once(
    live_gateway: LiveGateway, held_tester: TesterKey, approver_token: str
) -> None:
    client = live_gateway.openai_client(held_tester.secret)
    video = client.videos.create(prompt=HELD_PROMPT)
    assert video.status == "queued"
    request = pending_request(live_gateway, approver_token, held_tester.tester_id)
    auditor = live_gateway.admin_ok("POST", "/tokens", json={"name": "aud", "role": "auditor"})
    live_gateway.issued_secrets.append(auditor["secret"])

    refused = live_gateway.admin(
        "POST",
        f"/approvals/{request['id']}/approve",
        token=auditor["secret"],
        json={"reason": "x"},
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    decide(live_gateway, approver_token, request["id"], "reject", "no")
    twice = live_gateway.admin(
        "POST", f"/approvals/{request['id']}/approve", token=approver_token, json={}
    )
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_decided"
    assert client.videos.retrieve(video.id).status == "failed"


# -- the SDK's retry against real 429s --------------------------------------------------


@pytest.fixture(scope="module")
def limited_gateway(
    simulator: LiveSimulator, tmp_path_factory: pytest.TempPathFactory, fleet_redis_server: str
) -> Iterator[LiveGateway]:
    """A gateway whose rate-limit counters live in Redis (the production setting), so its
    two workers share them and a limit of 2 per minute is exactly 2."""
    tmp = tmp_path_factory.mktemp("limited")
    with gateway_fleet(
        simulator, tmp, f"sqlite:///{tmp / 'drawbridge.db'}", instances=1, workers=2,
        DRAWBRIDGE_REDIS_URL=fleet_redis_server,
    ) as (gateway,):  # fmt: skip
        yield gateway


class RecordedSleeps:
    """Stands in for the ``time`` module inside the SDK: records the waits it asks for and
    calls ``during_wait`` instead of sleeping for a minute."""

    def __init__(self, during_wait: Callable[[int], None] | None = None) -> None:
        self.waits: list[float] = []
        self._during_wait = during_wait

    def module(self) -> types.SimpleNamespace:
        def sleep(seconds: float) -> None:
            self.waits.append(seconds)
            if self._during_wait:
                self._during_wait(len(self.waits))

        return types.SimpleNamespace(**{**vars(time), "sleep": sleep})


@contextlib.contextmanager
def sdk_sleeps(recorder: RecordedSleeps) -> Iterator[RecordedSleeps]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openai._base_client, "time", recorder.module())
        yield recorder


def limited_key(gateway: LiveGateway, per_minute: int) -> TesterKey:
    key = gateway.new_tester_key()
    gateway.admin_ok(
        "PUT", f"/testers/{key.tester_id}/policy", json={"requests_per_minute": per_minute}
    )
    return key


def sdk_client(gateway: LiveGateway, key: TesterKey, seen: list[httpx2.Response]) -> openai.OpenAI:
    def record(response: httpx2.Response) -> None:
        seen.append(response)

    client = gateway.openai_client(key.secret, event_hooks={"response": [record]})
    return client.with_options(max_retries=2)


def rate_limited_events(gateway: LiveGateway, key: TesterKey) -> int:
    """The key's 429s in the usage log: refused before admission, they are counted per day
    (usage_refusals), not stored as events (docs/usage.md)."""
    rows = query(
        gateway.database_url,
        "SELECT COALESCE(SUM(requests), 0) FROM usage_refusals"
        " WHERE key_id = :key AND status = 429",
        key=key.key_id,
    )
    return int(rows[0][0])


def test_the_sdk_retries_429s_after_the_wait_the_gateway_asks_for(
    limited_gateway: LiveGateway,
) -> None:
    key = limited_key(limited_gateway, per_minute=2)
    for _ in range(2):
        assert limited_gateway.tester_get("/me", key.secret).status_code == 200
    seen: list[httpx2.Response] = []
    client = sdk_client(limited_gateway, key, seen)
    started = time.monotonic()

    with sdk_sleeps(RecordedSleeps()) as sleeps, pytest.raises(openai.RateLimitError) as caught:
        client.videos.list()

    assert time.monotonic() - started < 10
    assert caught.value.code == "rate_limit_exceeded"
    # Three attempts (the first and max_retries=2 more), each refused with the headers...
    assert [r.status_code for r in seen] == [429, 429, 429]
    asked = [int(r.headers["retry-after-ms"]) / 1000 for r in seen]
    for response in seen:
        assert int(response.headers["retry-after-ms"]) == 1000 * int(
            response.headers["retry-after"]
        )
        assert response.headers["x-ratelimit-limit-requests"] == "2"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert [r.request.headers["x-stainless-retry-count"] for r in seen] == ["0", "1", "2"]
    # ...and between them the SDK waited exactly as long as the gateway asked (about the rest
    # of the minute), not its own short backoff.
    assert sleeps.waits == asked[:2]
    assert all(5 < wait <= 60 for wait in sleeps.waits)
    # The gateway's usage log counts the three refusals under the key.
    wait_for(lambda: rate_limited_events(limited_gateway, key) == 3, 10, "usage events")


def test_the_sdk_retry_succeeds_once_the_limit_allows(limited_gateway: LiveGateway) -> None:
    key = limited_key(limited_gateway, per_minute=2)
    for _ in range(2):
        assert limited_gateway.tester_get("/me", key.secret).status_code == 200
    seen: list[httpx2.Response] = []
    client = sdk_client(limited_gateway, key, seen)

    def raise_the_limit(_: int) -> None:
        # The program owner lifts the limit while the SDK waits; the retry gets through.
        limited_gateway.admin_ok(
            "PUT", f"/testers/{key.tester_id}/policy", json={"requests_per_minute": 100}
        )

    with sdk_sleeps(RecordedSleeps(raise_the_limit)) as sleeps:
        page = client.videos.list()

    assert page.data == []
    assert [r.status_code for r in seen] == [429, 200]
    assert sleeps.waits == [int(seen[0].headers["retry-after-ms"]) / 1000]
    assert seen[1].request.headers["x-stainless-retry-count"] == "1"


def test_a_quota_429_far_from_its_reset_is_not_retried(limited_gateway: LiveGateway) -> None:
    """Retry-After beyond the SDK's two minutes: it gives up at once instead of hammering."""
    key = limited_gateway.new_tester_key()
    limited_gateway.admin_ok(
        "PUT", f"/testers/{key.tester_id}/policy", json={"video_seconds_per_month": 0}
    )
    seen: list[httpx2.Response] = []
    client = sdk_client(limited_gateway, key, seen)

    with sdk_sleeps(RecordedSleeps()) as sleeps, pytest.raises(openai.RateLimitError) as caught:
        client.videos.create(prompt="nothing left today")

    assert caught.value.code == "quota_exceeded"
    if int(seen[0].headers["retry-after"]) <= 120:
        pytest.skip("run in the last two minutes of a month: the quota resets too soon")
    assert [r.status_code for r in seen] == [429]
    assert seen[0].json()["error"]["param"] == "video_seconds_per_month"
    assert sleeps.waits == []
