"""A kept-alive connection the backend closes as a request goes out on it (its keep-alive
timeout running out at that moment): a GET is sent again on a new connection, a POST never is.

The backend here is a raw socket server that answers the first request of its first
connection, then reads the second request on that connection and closes it unanswered: the
race forced, every time. Later connections are answered normally.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from gateway.settings import Secret
from gateway.upstream.client import UpstreamClient, UpstreamError

BODY = b'{"id": "video_1", "object": "video"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(BODY), BODY)
)


@dataclass
class DroppingBackend:
    """Requests seen, by connection (request lines)."""

    url: str
    connections: list[list[str]] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)


def _read_request(conn: socket.socket) -> str | None:
    """One request's head (no body is sent by these tests' GETs; a POST's body is read by
    its Content-Length). None when the connection closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head.split(b"\r\n", 1)[0].decode()


def _serve(listener: socket.socket, backend: DroppingBackend) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        seen: list[str] = []
        backend.connections.append(seen)
        backend.sockets.append(conn)
        first_connection = len(backend.connections) == 1
        with conn:
            while (line := _read_request(conn)) is not None:
                seen.append(line)
                if first_connection and len(seen) == 2:
                    break  # closed under the second request, unanswered
                conn.sendall(ANSWER)


@pytest.fixture
def dropping() -> Iterator[DroppingBackend]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served = DroppingBackend(f"http://127.0.0.1:{port}/v1")
    thread = threading.Thread(target=_serve, args=(listener, served), daemon=True)
    thread.start()
    yield served
    for sock in [listener, *served.sockets]:  # wakes the accept or a read
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


def client_of(backend: DroppingBackend) -> UpstreamClient:
    return UpstreamClient(backend.url, Secret("sk-test"), read_timeout=5, deadline=10)


def test_a_get_on_a_connection_dropped_under_it_is_sent_again_on_a_new_one(
    dropping: DroppingBackend,
) -> None:
    client = client_of(dropping)
    try:
        first = client.call_json("GET", "videos/video_1", request_id="req_1")
        again = client.call_json("GET", "videos/video_1", request_id="req_2")
    finally:
        client.close()
    assert first.body["id"] == again.body["id"] == "video_1"
    get = "GET /v1/videos/video_1 HTTP/1.1"
    assert dropping.connections == [[get, get], [get]]


def test_a_post_on_a_connection_dropped_under_it_is_never_sent_again(
    dropping: DroppingBackend,
) -> None:
    client = client_of(dropping)
    try:
        client.call_json("GET", "videos/video_1", request_id="req_1")
        with pytest.raises(UpstreamError) as refused:
            client.call_json(
                "POST",
                "videos",
                request_id="req_2",
                body=b'{"prompt": "a heron"}',
                content_type="application/json",
            )
    finally:
        client.close()
    assert (refused.value.status, refused.value.code) == (502, "upstream_error")
    assert dropping.connections == [["GET /v1/videos/video_1 HTTP/1.1", "POST /v1/videos HTTP/1.1"]]
