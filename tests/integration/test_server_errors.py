"""Requests gunicorn refuses before the application sees them (a request line it cannot
parse, a URL over limit_request_line, too many or too large header fields) are answered in
the OpenAI error shape, not gunicorn's HTML page, and echo nothing the client sent.

Raw sockets, because HTTP clients will not send such requests."""

from __future__ import annotations

import json
import socket

import pytest

from tests.integration.live import LiveGateway

pytestmark = pytest.mark.integration

SECRET_LOOKING = "drwb_NotARealKeyButLooksLikeOne0123456"


def raw_exchange(gateway: LiveGateway, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the status, headers and body of the answer."""
    port = int(gateway.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


CASES = {
    "bad request line": (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
    "request line over limit_request_line": (
        f"GET /v1/me?note={'x' * 5000}&k={SECRET_LOOKING} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        414,
        "url_too_long",
    ),
    "too many header fields": (
        b"GET /v1/me HTTP/1.1\r\nHost: x\r\n"
        + b"".join(f"X-Field-{i}: {i}\r\n".encode() for i in range(120))
        + b"\r\n",
        431,
        "headers_too_large",
    ),
    "header field over limit_request_field_size": (
        f"GET /v1/me HTTP/1.1\r\nHost: x\r\nX-Big: {'y' * 9000}\r\n\r\n".encode(),
        431,
        "headers_too_large",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gunicorn_refusals_come_in_the_error_shape(live_gateway: LiveGateway, case: str) -> None:
    request, status, code = CASES[case]
    answered, headers, body = raw_exchange(live_gateway, request)
    assert answered == status, body
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == code
    assert payload["error"]["type"] == "invalid_request_error"
    # Nothing the client sent comes back (gunicorn's page echoes the request line).
    assert b"xxxxx" not in body and SECRET_LOOKING.encode() not in body
    assert b"<html" not in body.lower()
