"""A content download ends at ``upstream_download_deadline``, however slowly the backend
sends: a backend trickling a byte at a time never lets a read time out, so only the
deadline frees the thread. Against a real socket, since the point is a blocked read."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.settings import Secret
from gateway.upstream.client import DownloadCut, UpstreamClient

DEADLINE = 1.0
TRICKLE_SECONDS = 20.0  # the backend would go on this long; the download must not


@pytest.fixture
def trickling_backend() -> Iterator[str]:
    """A backend that announces 1 MB of content, then sends one byte every 50 ms."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 1000000\r\n\r\n"
            )
            started = time.monotonic()
            while not stop.is_set() and time.monotonic() - started < TRICKLE_SECONDS:
                try:
                    connection.sendall(b"x")
                except OSError:
                    return
                stop.wait(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_a_trickling_download_is_cut_at_its_deadline(trickling_backend: str) -> None:
    client = UpstreamClient(
        trickling_backend, Secret("sk-test"), read_timeout=5.0, download_deadline=DEADLINE
    )
    cut = threading.Event()
    started = time.monotonic()
    status, headers, chunks = client.open_stream(
        "videos/video_1/content", request_id="req_1", params={}, on_deadline=cut.set
    )
    assert status == 200 and headers["Content-Length"] == "1000000"
    received = 0
    with pytest.raises(DownloadCut):
        for chunk in chunks:
            received += len(chunk)
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + 2.0, elapsed
    assert cut.is_set()  # the client's side was cut too
    assert received < 1_000_000
    client.close()


def test_a_finished_download_is_not_cut_later() -> None:
    """The deadline's timer ends with the download: firing later would cut the client's
    kept-alive connection in the middle of its next request."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            time.sleep(1.5)  # the connection stays open while the test watches

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = UpstreamClient(
        f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
        Secret("sk-test"),
        download_deadline=0.3,
    )
    cut = threading.Event()
    _, _, chunks = client.open_stream(
        "videos/video_1/content", request_id="req_1", params={}, on_deadline=cut.set
    )
    assert b"".join(chunks) == b"hello"
    assert not cut.wait(0.8)
    client.close()
    listener.close()
    thread.join(timeout=5)
