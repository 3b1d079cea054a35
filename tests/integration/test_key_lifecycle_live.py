"""Key lifecycle against the live gateway: admin API calls over HTTP, tester calls with the
openai SDK, two gunicorn workers that must agree on every key's state at once."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import openai
import pytest
import requests

from tests.integration.live import (
    LiveGateway,
    TesterKey,
    access_lines,
    child_pids,
    error_of,
    sdk_error_code,
    sleep_until,
    wait_for,
)

pytestmark = pytest.mark.integration

_ACCESS_LINE = re.compile(r'gunicorn-access pid=<(\d+)> "GET (\S+)" (\d+)')


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def refusal_code(client: openai.OpenAI) -> str | None:
    """The code of the 401 the SDK raises for a refused key."""
    with pytest.raises(openai.AuthenticationError) as caught:
        client.videos.list()
    assert caught.value.status_code == 401
    return sdk_error_code(caught.value)


def works(client: openai.OpenAI) -> bool:
    """The key is accepted: a listing comes back (the SDK raises on anything else)."""
    return isinstance(client.videos.list().data, list)


def me(gateway: LiveGateway, secret: str) -> requests.Response:
    return gateway.tester_get("/me", secret)


def test_revoked_key_is_refused_by_every_worker_on_its_next_request(
    live_gateway: LiveGateway, tester_key: TesterKey
) -> None:
    client = live_gateway.openai_client(tester_key.secret)
    assert works(client)

    revoked = live_gateway.admin_ok(
        "POST", f"/keys/{tester_key.key_id}/revoke", json={"reason": "posted in a public gist"}
    )
    assert revoked["status"] == "revoked"
    assert revoked["revoked"]["reason"] == "posted in a public gist"
    assert tester_key.secret not in str(revoked)

    # The very next request, on the SDK's kept-alive connection, is refused.
    assert refusal_code(client) == "key_revoked"

    # Every worker refuses it: fresh connections, many at once, on paths the access log
    # tells apart, until each worker is seen answering (and each answer is a refusal).
    process = live_gateway.process
    assert process is not None
    workers = child_pids(process.pid)
    assert len(workers) == 2, f"expected 2 gunicorn workers, found {workers}"
    probe = f"video_revoked{secrets.token_hex(4)}"
    answered: dict[str, int] = {}

    def hit(n: int) -> requests.Response:
        return live_gateway.tester_get(f"/videos/{probe}_{n}", tester_key.secret)

    def pids_seen() -> set[int]:
        for pid, path, status in _ACCESS_LINE.findall("\n".join(access_lines(process.log_text()))):
            if f"/{probe}_" in path:
                assert status == "401", (path, status)
                answered[path] = int(pid)
        return set(answered.values())

    def all_logged(count: int) -> Callable[[], bool]:
        def check() -> bool:
            pids_seen()
            return len(answered) == count

        return check

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent < 320 and pids_seen() != workers:
            for response in pool.map(hit, range(sent, sent + 16)):
                assert response.status_code == 401, response.text
                assert error_of(response)["code"] == "key_revoked"
            sent += 16
            # A worker writes its access line once the response is out: wait for the batch.
            wait_for(all_logged(sent), 5, "the probes' access log lines")
    assert pids_seen() == workers, f"only workers {pids_seen()} answered; {workers} are up"


def test_rotated_and_expiring_keys_stop_working_at_their_deadline(
    live_gateway: LiveGateway, make_tester_key: Callable[..., TesterKey]
) -> None:
    """Both deadlines run at once (grace 2 s, expiry 2 s): one wait covers the two."""
    rotating = make_tester_key()
    expiring = make_tester_key(expires_in=2)
    old_client = live_gateway.openai_client(rotating.secret)
    expiring_client = live_gateway.openai_client(expiring.secret)
    assert works(old_client)

    rotated = live_gateway.admin_ok(
        "POST", f"/keys/{rotating.key_id}/rotate", json={"grace_seconds": 2}
    )
    assert rotated["rotated_from"] == rotating.key_id and rotated["status"] == "active"
    assert rotated["secret"] != rotating.secret
    new_client = live_gateway.openai_client(rotated["secret"])

    # Right after the rotation both secrets work; the expiring key works until it expires.
    assert works(old_client)
    assert works(new_client)
    assert works(expiring_client)
    old_view = live_gateway.admin_ok("GET", f"/keys/{rotating.key_id}")
    assert old_view["status"] == "rotated" and old_view["replaced_by"] == rotated["id"]
    expires_at = me(live_gateway, expiring.secret).json()["key"]["expires_at"]
    assert expires_at is not None

    sleep_until(max(timestamp(old_view["grace_until"]), timestamp(expires_at)) + 0.05)
    assert refusal_code(old_client) == "key_rotated"
    assert works(new_client)
    assert me(live_gateway, rotated["secret"]).json()["key"]["id"] == rotated["id"]
    assert refusal_code(expiring_client) == "key_expired"
    assert live_gateway.admin_ok("GET", f"/keys/{expiring.key_id}")["status"] == "expired"


def test_suspended_key_is_refused_until_resumed(
    live_gateway: LiveGateway, tester_key: TesterKey
) -> None:
    client = live_gateway.openai_client(tester_key.secret)
    assert works(client)

    suspended = live_gateway.admin_ok(
        "POST", f"/keys/{tester_key.key_id}/suspend", json={"reason": "unusual traffic"}
    )
    assert suspended["status"] == "suspended"
    assert refusal_code(client) == "key_suspended"
    assert error_of(me(live_gateway, tester_key.secret))["code"] == "key_suspended"

    resumed = live_gateway.admin_ok("POST", f"/keys/{tester_key.key_id}/resume", json={})
    assert resumed["status"] == "active"
    assert works(client)


def test_me_shows_hint_and_status_never_the_secret(
    live_gateway: LiveGateway, tester_key: TesterKey
) -> None:
    response = me(live_gateway, tester_key.secret)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "me"
    assert body["key"]["id"] == tester_key.key_id
    assert body["key"]["hint"] == tester_key.hint
    assert body["key"]["hint"].endswith(tester_key.secret[-4:])
    assert body["key"]["status"] == "active"
    assert body["tester"]["id"] == tester_key.tester_id
    assert tester_key.secret not in response.text
    assert tester_key.secret[len("drwb_") : -4] not in response.text
    assert all(tester_key.secret not in value for value in response.headers.values())

    # The admin plane's listing of the tester's keys agrees, without the secret either.
    listed = live_gateway.admin("GET", "/keys", params={"tester_id": tester_key.tester_id})
    assert [key["hint"] for key in listed.json()["data"]] == [tester_key.hint]
    assert tester_key.secret not in listed.text
