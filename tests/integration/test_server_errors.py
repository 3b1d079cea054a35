"""Requests gunicorn refuses before the application sees them (a request line it cannot
parse, a URL over limit_request_line, too many or too large header fields) are answered in
the OpenAI error shape, not gunicorn's HTML page, and echo nothing the client sent.

Raw sockets, because HTTP clients will not send such requests."""

from __future__ import annotations

import json
import socket

import pytest

from tests.integration.live import LiveGateway, TesterKey

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
    # Like every error of the gateway (README): sending it again cannot help.
    assert headers["x-should-retry"] == "false"
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == code
    assert payload["error"]["type"] == "invalid_request_error"
    # Nothing the client sent comes back (gunicorn's page echoes the request line).
    assert b"xxxxx" not in body and SECRET_LOOKING.encode() not in body
    assert b"<html" not in body.lower()


# -- bodies that break off or cannot be parsed --------------------------------------------
#
# A body the gateway cannot read whole is the client's mistake: 400 ``bad_request`` in the
# error shape, never a 500, and nothing is charged (no video, no quota reservation).

BODY = b'{"prompt":"hi"}'  # 15 bytes: a whole JSON document, so only the framing is wrong


def send(
    gateway: LiveGateway, head: bytes, body: bytes, *, close_write: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and body as they are, shutting the write side after them when
    ``close_write`` (the client's EOF); the status, headers and body of the answer."""
    port = int(gateway.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head + body)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head_bytes, _, answer = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, answer


def create_head(key: TesterKey, framing: str, content_type: str = "application/json") -> bytes:
    return (
        "POST /v1/videos HTTP/1.1\r\n"
        "Host: gateway\r\n"
        f"Authorization: Bearer {key.secret}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"{framing}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()


def assert_bad_request(answered: int, headers: dict[str, str], body: bytes) -> None:
    assert answered == 400, body
    assert headers["content-type"] == "application/json"
    assert headers["x-should-retry"] == "false"
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == "bad_request"
    assert payload["error"]["type"] == "invalid_request_error"


def assert_nothing_charged(gateway: LiveGateway, key: TesterKey) -> None:
    """The key's tester has no video and no quota used (a reservation counts as used)."""
    videos = gateway.tester_get("/videos", key.secret)
    assert videos.status_code == 200, videos.text
    assert videos.json()["data"] == []
    me = gateway.tester_get("/me", key.secret)
    assert me.status_code == 200, me.text
    quotas = me.json()["quotas"]
    assert quotas, "the default policy has quotas: without one this proves nothing"
    assert [quota["used"] for quota in quotas] == [0] * len(quotas)


# Chunked bodies gunicorn's reader refuses as the application reads them. ``close_write``:
# the client sends EOF after them (a chunk that promised more than came).
CHUNKED_CASES = {
    "chunk size that is not hex": (b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", False),
    "control byte in a chunk extension": (b"f;ext=\x01\r\n" + BODY + b"\r\n0\r\n\r\n", False),
    "chunk longer than declared": (b"5\r\n" + BODY + b"\r\n0\r\n\r\n", False),
    "chunk shorter than declared, then EOF": (b"64\r\n" + BODY, True),
    "chunk size past 64 bits, then EOF": (b"1" + b"0" * 20 + b"\r\n" + BODY, True),
    "no last chunk, then EOF": (b"f\r\n" + BODY + b"\r\n", True),
}


@pytest.mark.parametrize("case", sorted(CHUNKED_CASES))
def test_a_broken_chunked_body_is_a_400_and_charges_nothing(
    live_gateway: LiveGateway, tester_key: TesterKey, case: str
) -> None:
    body, close_write = CHUNKED_CASES[case]
    head = create_head(tester_key, "Transfer-Encoding: chunked")
    assert_bad_request(*send(live_gateway, head, body, close_write=close_write))
    assert_nothing_charged(live_gateway, tester_key)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", BODY),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi',
        ),
    ],
    ids=["json", "multipart"],
)
def test_a_body_shorter_than_its_content_length_is_a_400_and_charges_nothing(
    live_gateway: LiveGateway, tester_key: TesterKey, content_type: str, body: bytes
) -> None:
    head = create_head(tester_key, f"Content-Length: {len(body) + 85}", content_type)
    assert_bad_request(*send(live_gateway, head, body, close_write=True))
    assert_nothing_charged(live_gateway, tester_key)


def test_the_same_body_whole_is_charged(live_gateway: LiveGateway, tester_key: TesterKey) -> None:
    """The control: the 15 bytes with their true length create a video."""
    head = create_head(tester_key, f"Content-Length: {len(BODY)}")
    answered, _, body = send(live_gateway, head, BODY)
    assert answered == 200, body
    assert json.loads(body)["object"] == "video"
