"""gunicorn's own log lines, on a live gateway: JSON, RFC 3339 UTC times, no raw secrets.

gunicorn answers some requests without ever calling the application — a header line with no
colon, a control byte in the request line — and quotes the offending bytes in its error log.
Those quotes go through the gateway's redaction (gateway/process/server.py ``GunicornLogger``).
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from http.client import HTTPResponse
from urllib.parse import urlsplit

import pytest

from tests.integration.live import LiveGateway, wait_for

pytestmark = pytest.mark.integration

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def send_raw(gateway: LiveGateway, request: bytes) -> bytes:
    """Send bytes as they are, and read the answer until the server closes the connection."""
    address = urlsplit(gateway.base)
    with socket.create_connection((address.hostname, address.port), timeout=15) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after an error
            answer += chunk
    return answer


def test_gunicorns_own_lines_are_json_and_never_hold_a_key(
    live_gateway: LiveGateway,
) -> None:
    gateway = live_gateway
    key = gateway.new_tester_key()
    gateway.issued_secrets.append(key.secret)
    secret = key.secret.encode()
    token = gateway.admin_token.encode()
    log_size = gateway.log_path.stat().st_size

    # A header line without its colon: gunicorn refuses it and quotes it in a warning.
    answer = send_raw(
        gateway,
        b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + secret + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # A control byte in the request line, next to a key in the query string.
    answer = send_raw(gateway, b"GET /v1/videos?k=" + secret + b"\x01x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # And an admin token the same way.
    answer = send_raw(
        gateway, b"GET /admin/v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization " + token + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]

    def warnings_written() -> bool:
        text = gateway.log_path.read_bytes()[log_size:].decode(errors="replace")
        return text.count("Invalid request from ip") >= 3

    wait_for(warnings_written, 10, "gunicorn's warnings in the gateway log")
    time.sleep(0.3)  # and whatever else the workers had queued
    written = gateway.log_path.read_bytes()[log_size:]
    assert secret not in written and token not in written
    assert b"[REDACTED]" in written  # the warnings were written, with the secret masked

    # Every line since is one JSON object with an RFC 3339 UTC time, gunicorn's included.
    records = [json.loads(line) for line in written.decode().splitlines() if line.strip()]
    assert {"gunicorn.error"} <= {record["logger"] for record in records}
    for record in records:
        assert RFC3339_UTC.fullmatch(record["time"]), record


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and (de-chunked) body of a raw HTTP/1.1 response."""

    class Received:
        def makefile(self, *args: object, **kwargs: object) -> io.BytesIO:
            return io.BytesIO(raw)

    response = HTTPResponse(Received())  # type: ignore[arg-type]
    response.begin()
    return response.status, response.read()


def test_a_chunked_body_over_the_limit_is_413_under_gunicorn(live_gateway: LiveGateway) -> None:
    """werkzeug would stop reading at ``max_request_bytes`` without a word; the client must
    hear 413, not a 400 about the truncated JSON."""
    gateway = live_gateway
    limit = 25 * 1024 * 1024  # the default max_request_bytes
    body = b'{"name": "' + b"a" * (limit - 20) + b'", "email": "big@example.com"}'
    assert len(body) > limit
    head = (
        b"POST /admin/v1/testers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + gateway.admin_token.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    step = 1024 * 1024
    chunks = [
        b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
        for i in range(0, len(body), step)
    ]
    status, answer = parse_response(send_raw(gateway, head + b"".join(chunks) + b"0\r\n\r\n"))
    assert status == 413, answer[:300]
    assert json.loads(answer)["error"]["code"] == "request_too_large"
