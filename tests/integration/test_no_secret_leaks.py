"""No secret leaks, checked on the live processes after a scenario that exercises them.

Raw tester keys, admin tokens and the master credential must appear nowhere after their
creation: not upstream (except the master, in its own header), not in the database, not in
the gateway's or the simulator's logs, not in any response except the one that issues them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
import pytest
import requests
from sqlalchemy import create_engine, text

from keys.access.keyformat import DEFAULT_KEY_PREFIX, KeyFormat
from keys.db import normalise_url
from tests.integration.live import (
    LiveGateway,
    LiveSimulator,
    error_of,
    http_session,
    sdk_error_code,
)

pytestmark = pytest.mark.integration

TESTER_ORGANIZATION = "org-tester-private-organization"
TESTER_PROJECT = "proj_tester-private-project"
# What the gateway may send upstream: a fresh header set (gateway/upstream/client.py).
UPSTREAM_HEADERS = {
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "authorization",
    "x-request-id",
    "content-type",
    "content-length",
}


@dataclass
class Captured:
    """One response the scenario received: headers and body, as bytes."""

    label: str  # method and path: no query string, so no secret in a failure message
    status: int
    headers: bytes
    body: bytes
    request_id: str | None
    issues: str | None = None  # the secret this response legitimately hands out, once


class Collector:
    """Keeps every response of the scenario, from requests and from the SDK's httpx2."""

    def __init__(self) -> None:
        self.responses: list[Captured] = []
        self.sessions: list[requests.Session] = []

    def _add(self, method: str, url: str, status: int, headers: Any, body: bytes) -> None:
        header_text = "\n".join(f"{name}: {value}" for name, value in headers.items())
        self.responses.append(
            Captured(
                f"{method} {urlsplit(url).path}",
                status,
                header_text.encode(),
                body,
                headers.get("x-request-id"),
            )
        )

    def requests_hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        assert request.method is not None and request.url is not None
        self._add(
            request.method, request.url, response.status_code, response.headers, response.content
        )

    def httpx_hook(self, response: httpx2.Response) -> None:
        response.read()
        request = response.request
        self._add(
            request.method,
            str(request.url),
            response.status_code,
            response.headers,
            response.content,
        )

    def session(self) -> requests.Session:
        session = http_session()
        session.hooks["response"].append(self.requests_hook)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def issuing(self, secret: str) -> None:
        """Mark the last response as the one that hands out ``secret``."""
        self.responses[-1].issues = secret


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    yield collector
    collector.close()


def test_no_secret_reaches_upstream_storage_logs_or_responses(
    live_gateway: LiveGateway, simulator: LiveSimulator, collector: Collector
) -> None:
    gateway = live_gateway
    web = collector.session()
    admin_headers = {"Authorization": f"Bearer {gateway.admin_token}"}
    simulator.clear_requests()

    def admin(method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else admin_headers
        return web.request(
            method, f"{gateway.base}/admin/v1{path}", headers=headers, timeout=15, **kwargs
        )

    def tester(method: str, path: str, secret: str | None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return web.request(
            method, f"{gateway.api_url}{path}", headers=headers, timeout=15, **kwargs
        )

    # -- issue: an admin token, a tester, keys through the API and the CLI --------------
    response = admin("POST", "/tokens", json={"name": "leak scenario", "role": "admin"})
    assert response.status_code == 201, response.text
    second_token = response.json()
    collector.issuing(second_token["secret"])
    response = admin("POST", "/tokens", json={"name": "to be revoked", "role": "auditor"})
    revoked_token = response.json()
    collector.issuing(revoked_token["secret"])

    tester_id = admin(
        "POST", "/testers", json={"name": "Leaky", "email": f"leaky-{uuid.uuid4().hex}@example.com"}
    ).json()["id"]
    response = admin(
        "POST", f"/testers/{tester_id}/keys", json={"metadata": {"purpose": "leak test"}}
    )
    key_a = response.json()
    collector.issuing(key_a["secret"])
    key_b = gateway.cli("keys", "issue", tester_id, "--json")  # CLI output: shown once, by design
    response = admin("POST", f"/testers/{tester_id}/keys", json={})
    key_c = response.json()
    collector.issuing(key_c["secret"])

    # -- use: the SDK with headers a tester's client may carry -------------------------
    client = gateway.openai_client(
        key_a["secret"],
        organization=TESTER_ORGANIZATION,
        project=TESTER_PROJECT,
        default_headers={
            "OpenAI-Organization": TESTER_ORGANIZATION,
            "OpenAI-Project": TESTER_PROJECT,
        },
        event_hooks={"response": [collector.httpx_hook]},
    )
    video = client.videos.create_and_poll(prompt="a lighthouse in fog")
    assert video.status == "completed"
    assert client.videos.download_content(video.id).read()
    assert any(v.id == video.id for v in client.videos.list().data)
    remix = client.videos.remix(video.id, prompt="the lighthouse at dawn")
    client.videos.delete(remix.id)
    assert tester("GET", "/me", key_b["secret"]).status_code == 200
    assert admin("GET", "/whoami", token=second_token["secret"]).status_code == 200

    # -- rotate and revoke --------------------------------------------------------------
    response = admin("POST", f"/keys/{key_b['id']}/rotate", json={"grace_seconds": 0})
    assert response.status_code == 201, response.text
    key_b2 = response.json()
    collector.issuing(key_b2["secret"])
    assert error_of(tester("GET", "/me", key_b["secret"]))["code"] == "key_rotated"
    assert tester("GET", "/videos", key_b2["secret"]).status_code == 200
    assert (
        admin("POST", f"/keys/{key_c['id']}/revoke", json={"reason": "leak drill"}).status_code
        == 200
    )
    assert error_of(tester("GET", "/videos", key_c["secret"]))["code"] == "key_revoked"
    assert (
        admin("POST", f"/tokens/{revoked_token['id']}/revoke", json={"reason": "drill"}).status_code
        == 200
    )
    assert error_of(admin("GET", "/keys", token=revoked_token["secret"]))["code"] == "token_revoked"

    # -- failing requests ---------------------------------------------------------------
    unknown_key = KeyFormat(DEFAULT_KEY_PREFIX).generate()  # well-formed, never issued
    garbage_key = "sk-proj-not-a-drawbridge-key-0123456789abcdefghij"
    assert error_of(tester("GET", "/videos", unknown_key))["code"] == "invalid_api_key"
    assert error_of(tester("GET", "/videos", garbage_key))["code"] == "invalid_api_key"
    assert error_of(admin("GET", "/keys", token=unknown_key))["code"] == "invalid_admin_token"
    with pytest.raises(openai.AuthenticationError):
        gateway.openai_client(
            unknown_key, event_hooks={"response": [collector.httpx_hook]}
        ).videos.list()

    # -- keys in the query string are refused, whatever the header says ------------------
    query_key = key_b2["secret"]
    for path, params, secret in [
        ("/videos", {"api_key": query_key}, query_key),
        ("/videos", {"api_key": query_key}, None),
        ("/me", {"key": query_key}, None),
        ("/videos", {"after": query_key}, query_key),  # key-shaped, under any name
    ]:
        response = tester("GET", path, secret, params=params)
        assert response.status_code == 400, response.text
        assert error_of(response)["code"] == "api_key_in_query"
    response = admin("GET", "/keys", params={"access_token": gateway.admin_token})
    assert response.status_code == 400 and error_of(response)["code"] == "api_key_in_query"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.list(extra_query={"api_key": key_a["secret"]})
    assert sdk_error_code(caught.value) == "api_key_in_query"

    # Readers of the audit trail and key listings see no secrets either.
    assert admin("GET", "/audit", params={"limit": "1000"}).status_code == 200
    assert admin("GET", "/keys").status_code == 200
    assert admin("GET", "/tokens").status_code == 200

    secrets = {
        "tester key A": key_a["secret"],
        "tester key B (CLI)": key_b["secret"],
        "tester key B rotated": key_b2["secret"],
        "tester key C (revoked)": key_c["secret"],
        "admin token (CLI)": gateway.admin_token,
        "admin token (API)": second_token["secret"],
        "admin token (revoked)": revoked_token["secret"],
        "unknown key": unknown_key,
        "garbage key": garbage_key,
        "master credential": simulator.master,
    }
    # And every secret the fixtures handed out so far in this session, to other tests too.
    for n, secret in enumerate(gateway.issued_secrets):
        if secret not in secrets.values():
            secrets[f"fixture secret {n}"] = secret

    # (a) Upstream saw the master credential only, and none of the tester's headers.
    recorded = simulator.recorded_requests()
    seen = {(entry["method"], entry["path"]) for entry in recorded}
    for expected in [
        ("POST", "/v1/videos"),
        ("GET", f"/v1/videos/{video.id}"),
        ("GET", f"/v1/videos/{video.id}/content"),
        ("POST", f"/v1/videos/{video.id}/remix"),
        ("DELETE", f"/v1/videos/{remix.id}"),
    ]:
        assert expected in seen, f"{expected} did not reach the simulator: {sorted(seen)}"
    for entry in recorded:
        headers = {name.lower(): value for name, value in entry["headers"].items()}
        assert headers.get("authorization") == "master", entry
        assert set(headers) <= UPSTREAM_HEADERS, f"unexpected headers upstream: {entry}"
        assert not any(name.startswith(("openai-", "x-stainless")) for name in headers), entry
        assert entry["query"].keys() <= {"variant"}, entry
    upstream_text = json.dumps(recorded)
    for leaked in (TESTER_ORGANIZATION, TESTER_PROJECT, *secrets.values()):
        assert leaked not in upstream_text, "a tester credential or header reached upstream"

    # (b) Nowhere at rest...
    if gateway.sqlite_path is not None:
        files = sorted(gateway.sqlite_path.parent.glob(gateway.sqlite_path.name + "*"))
        assert any(path.name.endswith("-wal") for path in files), files
        database = {f"database file {path.name}": path.read_bytes() for path in files}
    else:
        database = postgres_dump(gateway.database_url)
    # (the database we grep holds this scenario's rows: ids and hints, not secrets)
    stored = b"".join(database.values())
    for marker in (key_c["id"], key_b2["hint"], revoked_token["id"], video.id):
        assert marker.encode() in stored, f"{marker} not found in the database"

    # ...nor in the logs (each worker's writer thread is up to a tenth of a second behind:
    # wait until every request of this scenario is in)...
    request_ids = [c.request_id for c in collector.responses if c.request_id]
    deadline = time.monotonic() + 10
    while not all(rid.encode() in gateway.log_path.read_bytes() for rid in request_ids):
        assert time.monotonic() < deadline, "the gateway log never caught up"
        time.sleep(0.05)
    places: dict[str, bytes] = {
        **database,
        "gateway log": gateway.log_path.read_bytes(),
        "simulator log": simulator.log_path.read_bytes(),
    }
    # (the logs we grep really are the logs of this scenario)
    assert len(request_ids) == len(collector.responses), "a response without X-Request-Id"
    assert all(rid.encode() in places["gateway log"] for rid in request_ids)
    assert f"/v1/videos/{video.id}/content".encode() in places["simulator log"]

    # ...and in no response, except once in the response that issued it.
    for n, captured in enumerate(collector.responses):
        if captured.issues is not None:
            assert captured.body.count(captured.issues.encode()) == 1, captured.label
            assert captured.issues.encode() not in captured.headers, captured.label
            body = captured.body.replace(captured.issues.encode(), b"")
        else:
            body = captured.body
        where = f"response #{n} ({captured.status} to {captured.label})"
        places[f"{where} headers"] = captured.headers
        places[f"{where} body"] = body
    assert sum(1 for c in collector.responses if c.issues) == 5
    assert len(collector.responses) > 30, "the scenario should have seen many responses"

    leaks = [
        f"{name} found in {place}"
        for place, content in places.items()
        for name, secret in secrets.items()
        if secret.encode() in content
    ]
    assert not leaks, "\n".join(leaks)


def postgres_dump(database_url: str) -> dict[str, bytes]:
    """Every row of every table, as text."""
    engine = create_engine(normalise_url(database_url))
    dump: dict[str, bytes] = {}
    try:
        with engine.connect() as connection:
            tables = (
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
                .scalars()
                .all()
            )
            assert {"api_keys", "admin_tokens", "audit_entries", "videos"} <= set(tables)
            for table in tables:
                rows = (
                    connection.execute(text(f'SELECT CAST(t AS text) FROM "{table}" t'))  # noqa: S608
                    .scalars()
                    .all()
                )
                dump[f"table {table}"] = "\n".join(rows).encode()
    finally:
        engine.dispose()
    assert dump["table api_keys"], "the dump found no keys: is it the gateway's database?"
    return dump
