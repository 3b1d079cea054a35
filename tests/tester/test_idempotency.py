"""``Idempotency-Key`` on creates and remixes: a repeat gets the first video, never a second
backend call or a second charge; a reused key with another request is refused."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses
from sqlalchemy import func, select

from keys.access.lifecycle import IssuedKey
from keys.models import IdempotencyRecord, UsageEvent
from keys.store import Store
from tests.helpers import UPSTREAM_URL, FakeClock, bearer

pytestmark = pytest.mark.both_databases

VIDEOS = f"{UPSTREAM_URL}/videos"


@pytest.fixture
def key(make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key()


def video(video_id: str, status: str = "queued") -> dict[str, Any]:
    return {"id": video_id, "object": "video", "status": status, "model": "sora-2"}


def post_create(
    client: Any, key: IssuedKey, idempotency_key: str | None, prompt: str = "a lighthouse"
) -> Any:
    headers = bearer(key.secret)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return client.post(
        "/v1/videos", json={"model": "sora-2", "prompt": prompt, "seconds": "4"}, headers=headers
    )


def upstream_creates(upstream: responses.RequestsMock) -> int:
    return sum(
        1 for call in upstream.calls if call.request.method == "POST" and call.request.url == VIDEOS
    )


def charges(store: Store, tester_id: str) -> int:
    with store.read() as tx:
        return int(
            tx.session.scalar(
                select(func.count()).where(
                    UsageEvent.tester_id == tester_id,
                    UsageEvent.generations > 0,
                    UsageEvent.outcome != "refunded",
                )
            )
            or 0
        )


def error_code(response: Any) -> str:
    code: str = response.get_json()["error"]["code"]
    return code


def test_a_repeat_gets_the_same_video_without_a_second_create_or_charge(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey, store: Store
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_first"))
    upstream.add(responses.POST, VIDEOS, json=video("video_second"))
    first = post_create(client, key, "order-42")
    again = post_create(client, key, "order-42")
    assert first.status_code == again.status_code == 200, again.get_data(as_text=True)
    assert first.get_json()["id"] == again.get_json()["id"] == "video_first"
    assert upstream_creates(upstream) == 1
    assert charges(store, key.key.tester_id) == 1
    # Without the header every create is a new one.
    assert post_create(client, key, None).get_json()["id"] == "video_second"
    assert charges(store, key.key.tester_id) == 2


def test_the_same_key_with_another_request_is_refused(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_first"))
    assert post_create(client, key, "order-43").status_code == 200
    other = post_create(client, key, "order-43", prompt="a different prompt")
    assert other.status_code == 409
    assert error_code(other) == "idempotency_key_reused"
    assert other.headers["x-should-retry"] == "false"
    assert upstream_creates(upstream) == 1


def test_a_multipart_repeat_with_a_new_boundary_is_the_same_request(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_form"))
    answers = []
    for boundary in ("boundary-one", "boundary-two"):
        body = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="prompt"\r\n\r\nwaves\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="input_reference"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n\x89PNG-bytes\r\n"
            f"--{boundary}--\r\n"
        ).encode("latin-1")
        answers.append(
            client.post(
                "/v1/videos",
                data=body,
                content_type=f"multipart/form-data; boundary={boundary}",
                headers={**bearer(key.secret), "Idempotency-Key": "form-1"},
            )
        )
    assert [a.status_code for a in answers] == [200, 200], answers[1].get_data(as_text=True)
    assert answers[0].get_json()["id"] == answers[1].get_json()["id"] == "video_form"
    assert upstream_creates(upstream) == 1
    # The reference file was still forwarded whole after it was read for the fingerprint.
    assert b"\x89PNG-bytes" in upstream.calls[0].request.body


def test_a_create_that_made_nothing_frees_its_key(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey, store: Store
) -> None:
    upstream.add(
        responses.POST,
        VIDEOS,
        status=400,
        json={"error": {"message": "no", "type": "invalid_request_error", "code": "bad"}},
    )
    upstream.add(responses.POST, VIDEOS, json=video("video_after"))
    assert post_create(client, key, "order-44").status_code == 400
    retried = post_create(client, key, "order-44")
    assert retried.status_code == 200 and retried.get_json()["id"] == "video_after"
    assert upstream_creates(upstream) == 2
    assert charges(store, key.key.tester_id) == 1


def test_a_timed_out_create_is_replayed_not_sent_again(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey
) -> None:
    upstream.add(responses.POST, VIDEOS, body=requests.ReadTimeout())
    upstream.add(responses.POST, VIDEOS, json=video("video_second"))
    first = post_create(client, key, "order-45")
    assert first.status_code == 504 and first.headers["x-should-retry"] == "true"
    # The backend may have started that one: the same key cannot start another.
    again = post_create(client, key, "order-45")
    assert again.status_code == 504 and error_code(again) == "upstream_timeout"
    assert again.headers["x-should-retry"] == "false"
    assert upstream_creates(upstream) == 1
    assert post_create(client, key, "order-45-b").get_json()["id"] == "video_second"


def test_keys_are_per_tester_key_and_expire_after_a_day(
    client: Any,
    upstream: responses.RequestsMock,
    key: IssuedKey,
    make_key: Callable[..., IssuedKey],
    clock: FakeClock,
    store: Store,
) -> None:
    for n in range(3):
        upstream.add(responses.POST, VIDEOS, json=video(f"video_{n}"))
    assert post_create(client, key, "shared").get_json()["id"] == "video_0"
    assert post_create(client, make_key(), "shared").get_json()["id"] == "video_1"
    clock.advance(hours=23, minutes=59)
    assert post_create(client, key, "shared").get_json()["id"] == "video_0"
    clock.advance(minutes=1)
    assert post_create(client, key, "shared").get_json()["id"] == "video_2"
    with store.read() as tx:
        stored = tx.session.scalars(select(IdempotencyRecord)).all()
    # Only digests of the client's value are kept.
    assert stored and all(
        row.key_digest != "shared" and len(row.key_digest) == 64 for row in stored
    )


def test_a_remix_repeat_gets_the_same_remix(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_source", "completed"))
    assert post_create(client, key, None).status_code == 200
    remix_url = f"{VIDEOS}/video_source/remix"
    upstream.add(responses.POST, remix_url, json=video("video_remix"))
    upstream.add(responses.POST, remix_url, json=video("video_remix_two"))
    headers = {**bearer(key.secret), "Idempotency-Key": "remix-1"}
    answers = [
        client.post("/v1/videos/video_source/remix", json={"prompt": "at night"}, headers=headers)
        for _ in range(2)
    ]
    assert [a.get_json()["id"] for a in answers] == ["video_remix", "video_remix"]
    assert sum(1 for call in upstream.calls if call.request.url == remix_url) == 1


@pytest.mark.parametrize("value", ["", "x" * 256, "naïve", "tab\there"])
def test_an_unusable_key_is_refused(client: Any, key: IssuedKey, value: str) -> None:
    answer = client.post(
        "/v1/videos",
        json={"prompt": "p"},
        headers={**bearer(key.secret), "Idempotency-Key": value.encode().decode("latin-1")},
    )
    assert answer.status_code == 400 and error_code(answer) == "invalid_idempotency_key"


def test_a_repeat_while_the_first_runs_is_told_to_come_back(
    app: Any, upstream: responses.RequestsMock, key: IssuedKey, store: Store
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_create(_request: Any) -> tuple[int, dict[str, str], str]:
        entered.set()
        release.wait(10)
        return 200, {}, '{"id": "video_slow", "object": "video", "status": "queued"}'

    upstream.add_callback(responses.POST, VIDEOS, callback=slow_create)
    first: list[Any] = []
    runner = threading.Thread(
        target=lambda: first.append(post_create(app.test_client(), key, "slow-1"))
    )
    runner.start()
    try:
        assert entered.wait(10)
        during = post_create(app.test_client(), key, "slow-1")
        assert during.status_code == 409 and error_code(during) == "idempotency_key_in_flight"
        assert during.headers["Retry-After"] == "1"
        assert during.headers["x-should-retry"] == "true"
    finally:
        release.set()
        runner.join(10)
    assert first[0].status_code == 200
    after = post_create(app.test_client(), key, "slow-1")
    assert after.get_json()["id"] == "video_slow"
    assert upstream_creates(upstream) == 1
    assert charges(store, key.key.tester_id) == 1


def test_a_claim_whose_process_died_is_abandoned_not_in_flight_forever(
    client: Any, upstream: responses.RequestsMock, key: IssuedKey, store: Store, clock: FakeClock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_never"))
    # The claim a worker took just before it was killed, for the request sent again below.
    post_create(client, key, "died-1")
    with store.transaction() as tx:
        row = tx.session.scalars(select(IdempotencyRecord)).one()
        row.status, row.video_id = "in_flight", None
    assert error_code(post_create(client, key, "died-1")) == "idempotency_key_in_flight"
    clock.advance(minutes=11)  # ten upstream deadlines of 5 s are long gone
    abandoned = post_create(client, key, "died-1")
    assert abandoned.status_code == 409
    assert error_code(abandoned) == "idempotency_key_abandoned"
    assert abandoned.headers["x-should-retry"] == "false"
    assert error_code(post_create(client, key, "died-1")) == "idempotency_key_abandoned"
    assert upstream_creates(upstream) == 1
