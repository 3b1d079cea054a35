"""Under gunicorn, a blocked address gets the same bytes with the fast path on and off.

tests/http/test_fast_refusal.py compares everything the two paths produce in process; this
compares what a client receives from the real server (gunicorn's framing, ``RAW_URI`` with
its encoded tricks, keep-alive, HEAD), from two gateways on one database, one with
``fast_refusals`` off. Left out: ``Date``, generated request ids, and the block's seconds to
reset, which may tick between the two requests (compared to within a second).
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest

from keys.access.keyformat import KeyFormat
from tests.helpers import free_port
from tests.integration.live import LiveGateway, LiveSimulator, start_gateway

MADE_UP = KeyFormat("drwb")
FLOODER = "198.51.100.7"
TICKING = {"retry-after": 1, "retry-after-ms": 1000, "x-ratelimit-reset-requests": 1}


@pytest.fixture(scope="module")
def gateways(
    simulator: LiveSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveGateway]]:
    tmp = tmp_path_factory.mktemp("fast-refusal")
    database_url = f"sqlite:///{tmp / 'drawbridge.db'}"
    started: dict[str, LiveGateway] = {}
    try:
        for name, fast in (("flask", "false"), ("fast", "true")):
            port = free_port()
            gateway = LiveGateway.before(
                simulator,
                database_url,
                port,
                tmp / f"{name}.log",
                DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE="3",
                DRAWBRIDGE_TRUSTED_PROXIES="1",
                DRAWBRIDGE_FAST_REFUSALS=fast,
            )
            if not started:
                gateway.cli("db", "upgrade")
            gateway.process = start_gateway(gateway, port, tmp, workers=1, threads=2)
            started[name] = gateway
        yield started
    finally:
        for gateway in started.values():
            if gateway.process is not None:
                gateway.process.stop()


def connect(gateway: LiveGateway) -> http.client.HTTPConnection:
    port = int(gateway.base.rsplit(":", 1)[1])
    return http.client.HTTPConnection("127.0.0.1", port, timeout=15)


def send(
    gateway: LiveGateway,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes = b"",
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """One request with ``target`` sent exactly as written (no client-side encoding), on a
    new connection or on ``connection`` (kept alive)."""
    own = connection is None
    connection = connection or connect(gateway)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {"X-Forwarded-For": FLOODER, **headers}.items():
            connection.putheader(name, value)
        if body:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.reason, response.getheaders(), response.read()
    finally:
        if own:
            connection.close()


def block(gateway: LiveGateway) -> None:
    """Fail sign-in from the flooder's address until the worker answers with the block."""
    for _ in range(10):
        status, _, _, body = send(
            gateway, "GET", "/v1/me", {"Authorization": f"Bearer {MADE_UP.generate()}"}
        )
        if status == 429 and b"too_many_failed_attempts" in body:
            return
    raise AssertionError("the address was not blocked")


def comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = []
    for name, value in headers:
        if name.lower() == "date":
            continue
        if name.lower() == "x-request-id" and value.startswith("req_"):
            value = "<generated>"
        if name.lower() in TICKING:
            value = "<ticks>"
        kept.append((name, value))
    return kept


def seconds_of(name: str, value: str) -> int:
    if name.lower() == "x-ratelimit-reset-requests":
        minutes, _, seconds = value.removesuffix("s").rpartition("m")
        return int(minutes or 0) * 60 + int(seconds)
    return int(value)


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/v1/videos/video_1", {}, b""),
    ("GET", "/v1/videos/video_1", {"Authorization": f"Bearer {MADE_UP.generate()}"}, b""),
    ("GET", "/v1/me", {"Authorization": "Basic eDp5", "X-Request-Id": "trace-7"}, b""),
    ("POST", "/v1/videos", {"Content-Type": "application/json"}, b'{"prompt": "a cat"}'),
    ("DELETE", "/v1/videos/video_1", {"X-Request-Id": "bad id"}, b""),
    ("HEAD", "/v1/videos/video_1", {}, b""),
    ("GET", "/v1/videos/a%2f..%2fb", {}, b""),
    ("GET", "/v1/videos?api_key=x", {}, b""),
    ("GET", "/v1/nothing", {}, b""),
]


@pytest.mark.parametrize("kept_alive", [False, True], ids=["new connection", "kept alive"])
@pytest.mark.parametrize(("method", "target", "headers", "body"), CASES)
def test_a_blocked_address_gets_the_same_answer_from_both_paths(
    gateways: dict[str, LiveGateway],
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    kept_alive: bool,
) -> None:
    """On a kept-alive connection, the fast gateway's worker answers in its event loop
    (gateway/process/door.py) what it answers at all; on a new one, a pool thread does."""
    answers: dict[str, Any] = {}
    for name, gateway in gateways.items():
        block(gateway)
        connection = connect(gateway) if kept_alive else None
        try:
            if connection is not None:  # a first request makes the connection a kept-alive one
                assert send(gateway, "GET", "/v1/me", {}, connection=connection)[0] == 429
            answers[name] = send(gateway, method, target, headers, body, connection=connection)
        finally:
            if connection is not None:
                connection.close()
    (status, reason, flask_headers, flask_body) = answers["flask"]
    (fast_status, fast_reason, fast_headers, fast_body) = answers["fast"]
    assert (fast_status, fast_reason, fast_body) == (status, reason, flask_body)
    assert comparable(fast_headers) == comparable(flask_headers)
    for (name, fast_value), (_, flask_value) in zip(
        [h for h in fast_headers if h[0].lower() != "date"],
        [h for h in flask_headers if h[0].lower() != "date"],
        strict=True,
    ):
        if name.lower() in TICKING:
            gap = abs(seconds_of(name, fast_value) - seconds_of(name, flask_value))
            assert gap <= TICKING[name.lower()], name
