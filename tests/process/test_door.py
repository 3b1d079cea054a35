"""The door (gateway/process/door.py): the worker's event loop refuses a blocked address.

The real worker class on real TCP connections, with a thread pool that takes requests and
runs none of them, as when every thread is busy: what the door answers is answered all the
same, and what it must not answer reaches the pool with its bytes unread. What the door
writes is compared with what a pool thread (``GatewayWorker.handle``) writes for the same
request on the same worker, byte for byte but for ``Date``, generated request ids and the
block's seconds to reset.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import selectors
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn

from gateway.process.door import refusals_of
from gateway.process.worker import DOOR_ANSWERS_PER_TURN, GatewayWorker
from gateway.state import GatewayState
from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import IssuedKey
from tests.helpers import bearer

pytestmark = pytest.mark.parametrize(
    "settings_overrides", [{"auth_failures_per_minute": 3, "trusted_proxies": 1}]
)

FLOODER, NEIGHBOUR = "198.51.100.7", "198.51.100.8"
MADE_UP = KeyFormat("drwb")
# Headers that differ by nature: the time, and the block's seconds to reset (both answers
# come within the same second; the reset may still tick between them).
TICKING = ("date", "retry-after", "x-ratelimit-reset")


class BusyPool:
    """Every thread busy: takes what is submitted and runs none of it."""

    def __init__(self) -> None:
        self.taken: list[Any] = []

    def submit(self, function: Callable[..., Any], conn: Any) -> Any:
        self.taken.append(conn)

        class Pending:
            def add_done_callback(self, callback: Callable[..., Any]) -> None:
                pass

        return Pending()


@pytest.fixture
def worker(app: Flask) -> Iterator[GatewayWorker]:
    cfg = Config()
    cfg.set("threads", 2)
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, Logger(cfg))
    worker.wsgi = app
    worker.tpool = BusyPool()
    worker.poller = selectors.DefaultSelector()
    worker.method_queue.init()
    yield worker
    worker.poller.close()
    worker.method_queue.close()
    worker.tmp.close()


@pytest.fixture
def connect(worker: GatewayWorker) -> Iterator[Callable[[], socket.socket]]:
    """A client connection the worker holds kept alive, as after a first request."""
    listener = socket.create_server(("127.0.0.1", 0))
    clients: list[socket.socket] = []

    def connect() -> socket.socket:
        client = socket.create_connection(listener.getsockname())
        client.settimeout(10)
        accepted, address = listener.accept()
        conn = TConn(worker.cfg, accepted, address, listener.getsockname())
        conn.init()
        keep_alive(worker, conn)
        worker.nr_conns += 1
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
    listener.close()


def keep_alive(worker: GatewayWorker, conn: TConn) -> None:
    """What gthread's ``finish_request`` does with a connection kept alive."""
    conn.sock.setblocking(False)
    conn.set_timeout()
    worker.keepalived_conns.append(conn)
    worker.poller.register(
        conn.sock, selectors.EVENT_READ, functools.partial(worker.on_client_socket_readable, conn)
    )


def conn_of(worker: GatewayWorker, client: socket.socket) -> TConn:
    port = client.getsockname()[1]
    for conn in [*worker.keepalived_conns, *worker.tpool.taken]:
        if conn.client[1] == port:
            return conn
    raise AssertionError("no such connection")


def request(
    target: str = "/v1/videos/video_1",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: gateway.test"]
    lines += [
        f"{name}: {value}"
        for name, value in {"X-Forwarded-For": FLOODER, **(headers or {})}.items()
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_answer(client: socket.socket) -> tuple[str, list[tuple[str, str]], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536) or pytest.fail(f"closed after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines)]
    length = int(dict((n.lower(), v) for n, v in headers)["content-length"])
    while len(body) < length:
        body += client.recv(65536)
    return status, headers, body


def comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    def value(name: str, value: str) -> str:
        if name.lower().startswith(TICKING):
            return "<ticks>"
        if name.lower() == "x-request-id" and value.startswith("req_"):
            return "<generated>"
        return value

    return [(name, value(name, text)) for name, text in headers]


def block(app: Flask, state: GatewayState) -> None:
    while not state.limits.held_blocked(FLOODER):
        app.test_client().get(
            "/v1/me",
            headers={"X-Forwarded-For": FLOODER, **bearer(MADE_UP.generate())},
        )


def turn(worker: GatewayWorker) -> None:
    worker.wait_for_and_dispatch_events(timeout=5)


def sent_in_a_turn(
    worker: GatewayWorker, connect: Callable[[], socket.socket], sent: bytes
) -> socket.socket:
    """A kept-alive connection with ``sent`` on it, after one turn of the worker's loop."""
    client = connect()
    client.sendall(sent)
    turn(worker)
    return client


def still_waiting(conn: TConn, sent: bytes) -> bool:
    """The request is on the server's socket, unread."""
    waiting: bytes = conn.sock.recv(len(sent) + 1, socket.MSG_PEEK)
    return waiting == sent


# -- what the door answers -----------------------------------------------------------------


FLOOD = {
    "no key": request(),
    "a made-up key": request(headers=bearer(MADE_UP.generate())),
    "not Bearer": request("/v1/me", headers={"Authorization": "Basic eDp5"}),
    "its own request id": request("/v1/me", headers={"X-Request-Id": "trace-1"}),
    "a bad request id": request("/v1/me", headers={"X-Request-Id": "a b"}),
    "a delete": request(method="DELETE"),
    "a create, no body": request("/v1/videos", "POST", {"Content-Length": "0"}),
    "content": request("/v1/videos/video_1/content"),
}


@pytest.mark.parametrize("sent", FLOOD.values(), ids=FLOOD.keys())
def test_the_door_answers_what_a_pool_thread_would_with_every_thread_busy(
    app: Flask,
    state: GatewayState,
    worker: GatewayWorker,
    connect: Callable[[], socket.socket],
    sent: bytes,
) -> None:
    block(app, state)
    client = sent_in_a_turn(worker, connect, sent)
    at_the_door = read_answer(client)
    assert worker.tpool.taken == []
    assert at_the_door[0] == "HTTP/1.1 429 TOO MANY REQUESTS"
    assert b"too_many_failed_attempts" in at_the_door[2]

    # The same request on the same connection, taken by a pool thread instead.
    conn = conn_of(worker, client)
    worker.poller.unregister(conn.sock)
    worker.keepalived_conns.remove(conn)
    client.sendall(sent)
    assert worker.handle(conn) is True
    by_a_thread = read_answer(client)
    assert at_the_door[0] == by_a_thread[0]
    assert comparable(at_the_door[1]) == comparable(by_a_thread[1])
    assert at_the_door[2] == by_a_thread[2]


def test_a_connection_answered_at_the_door_stays_kept_alive(
    app: Flask, state: GatewayState, worker: GatewayWorker, connect: Callable[[], socket.socket]
) -> None:
    block(app, state)
    client = connect()
    for _ in range(3):
        client.sendall(FLOOD["no key"])
        turn(worker)
        assert read_answer(client)[0].startswith("HTTP/1.1 429")
    conn = conn_of(worker, client)
    assert worker.keepalived_conns[-1] is conn and worker.tpool.taken == []
    assert worker.nr == 3 and worker.nr_conns == 1
    assert conn.parser.req_count == 3  # the kept-alive connection's requests, counted on


def test_so_many_refusals_a_turn_and_the_rest_wait_readable(
    app: Flask, state: GatewayState, worker: GatewayWorker, connect: Callable[[], socket.socket]
) -> None:
    block(app, state)
    clients = [connect() for _ in range(DOOR_ANSWERS_PER_TURN + 2)]
    for client in clients:
        client.sendall(FLOOD["no key"])
    turn(worker)
    assert worker.nr == DOOR_ANSWERS_PER_TURN
    turn(worker)
    assert worker.nr == DOOR_ANSWERS_PER_TURN + 2
    for client in clients:
        assert read_answer(client)[0].startswith("HTTP/1.1 429")
    assert worker.tpool.taken == []


# -- what the door leaves to the pool, unread -------------------------------------------------


def test_a_verified_key_behind_the_flood_goes_to_the_pool_unread(
    app: Flask,
    state: GatewayState,
    worker: GatewayWorker,
    connect: Callable[[], socket.socket],
    key: IssuedKey,
) -> None:
    verified = app.test_client().get(
        "/v1/me", headers={"X-Forwarded-For": FLOODER, **bearer(key.secret)}
    )
    assert verified.status_code == 200
    block(app, state)
    flood, tester = connect(), connect()
    good = request("/v1/me", headers=bearer(key.secret))
    flood.sendall(FLOOD["no key"])
    tester.sendall(good)
    turn(worker)
    assert worker.tpool.taken == [conn_of(worker, tester)]
    assert still_waiting(conn_of(worker, tester), good)
    assert read_answer(flood)[0].startswith("HTTP/1.1 429")


NOT_AT_THE_DOOR = {
    "a body": request("/v1/videos", "POST", {"Content-Length": "19"}, b'{"prompt": "a cat"}'),
    "chunked": request("/v1/videos", "POST", {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n"),
    "expect": request("/v1/videos", "POST", {"Expect": "100-continue", "Content-Length": "0"}),
    "two pipelined": request() + request(),
    "half a head": request()[:-2],
    "HTTP/1.0": request(version="HTTP/1.0"),
    "connection close": request(headers={"Connection": "close"}),
    "upgrade": request(headers={"Connection": "Upgrade", "Upgrade": "h2c"}),
    "a query": request("/v1/videos?limit=2"),
    "a key in the query": request(f"/v1/videos?api_key={MADE_UP.generate()}"),
    "an encoded slash": request("/v1/videos/a%2f..%2fb"),
    "HEAD": request(method="HEAD"),
    "OPTIONS": request(method="OPTIONS"),
    "not a tester's route": request("/admin/v1/whoami"),
    "unknown route": request("/v1/nothing"),
    "a spoofed hop": request(headers={"X-Forwarded-For": f"{FLOODER}, {NEIGHBOUR}"}),
    "another address": request(headers={"X-Forwarded-For": NEIGHBOUR}),
    "not HTTP": b"GET /v1/videos/video_1 SPDY/3\r\n\r\n",
    "a header without a colon": b"GET /v1/me HTTP/1.1\r\nAuthorization Bearer x\r\n\r\n",
}


@pytest.mark.parametrize("sent", NOT_AT_THE_DOOR.values(), ids=NOT_AT_THE_DOOR.keys())
def test_what_the_door_must_not_answer_reaches_the_pool_unread(
    app: Flask,
    state: GatewayState,
    worker: GatewayWorker,
    connect: Callable[[], socket.socket],
    sent: bytes,
) -> None:
    block(app, state)
    client = sent_in_a_turn(worker, connect, sent)
    conn = conn_of(worker, client)
    assert worker.tpool.taken == [conn] and worker.nr == 0
    assert still_waiting(conn, sent)


def test_without_a_block_the_door_looks_at_nothing(
    worker: GatewayWorker, connect: Callable[[], socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.process.worker as worker_module

    looked: list[Any] = []
    monkeypatch.setattr(worker_module, "waiting_refusal", lambda *a: looked.append(a))
    client = sent_in_a_turn(worker, connect, FLOOD["no key"])
    assert worker.tpool.taken == [conn_of(worker, client)] and looked == []


def test_a_flooder_that_stops_reading_is_closed_not_waited_for(
    app: Flask, state: GatewayState, worker: GatewayWorker, connect: Callable[[], socket.socket]
) -> None:
    block(app, state)
    client = connect()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Each request sent at once, not held back until the answers before it are acknowledged.
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = conn_of(worker, client)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for _ in range(10_000):  # each answer ~400 bytes: the buffers fill long before
        client.sendall(FLOOD["no key"])
        turn(worker)
        if conn not in worker.keepalived_conns:
            break
    else:
        pytest.fail("the connection was never closed")
    assert worker.nr_conns == 0 and worker.tpool.taken == []
    assert conn.sock.fileno() == -1


def test_a_door_that_fails_leaves_the_request_to_the_pool_and_the_loop_running(
    app: Flask,
    state: GatewayState,
    worker: GatewayWorker,
    connect: Callable[[], socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block(app, state)
    door = worker._door = refusals_of(app)
    assert door is not None

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the fast path")

    for part in ("spared", "answer"):
        worker._door = dataclasses.replace(door, **{part: broken})
        client = connect()
        client.sendall(FLOOD["no key"])
        turn(worker)  # does not raise: the worker's loop goes on
        conn = conn_of(worker, client)
        assert worker.tpool.taken[-1] is conn and still_waiting(conn, FLOOD["no key"]), part
    assert worker.nr == 0


def test_once_the_block_lapses_the_door_looks_at_nothing(
    app: Flask,
    state: GatewayState,
    worker: GatewayWorker,
    connect: Callable[[], socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    block(app, state)
    assert state.limits.holds_blocks()
    later = time.time() + 61  # the block's window is a minute
    monkeypatch.setattr(time, "time", lambda: later)
    assert not state.limits.holds_blocks()
    client = sent_in_a_turn(worker, connect, FLOOD["no key"])
    conn = conn_of(worker, client)
    assert worker.tpool.taken == [conn] and still_waiting(conn, FLOOD["no key"])


def test_a_request_left_waiting_is_forgotten_once_a_thread_reads_its_connection(
    app: Flask,
    state: GatewayState,
    worker: GatewayWorker,
    connect: Callable[[], socket.socket],
    key: IssuedKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The door keeps the head it peeked at while a refusal waits its turn. If the block
    lapses meanwhile, a thread reads that request; the connection's next request, when
    the door is armed again, is a new one (here a good tester's, which the door must not
    answer as the old one)."""
    import time

    verified = app.test_client().get(
        "/v1/me", headers={"X-Forwarded-For": FLOODER, **bearer(key.secret)}
    )
    assert verified.status_code == 200
    block(app, state)
    clients = [connect() for _ in range(DOOR_ANSWERS_PER_TURN + 1)]
    for client in clients:
        client.sendall(FLOOD["no key"])
    turn(worker)
    (left,) = [client for client in clients if not _answered(client)]
    conn = conn_of(worker, left)

    later = time.time() + 61
    with monkeypatch.context() as lapsed:
        lapsed.setattr(time, "time", lambda: later)
        turn(worker)  # not armed: the waiting request goes to a thread
    assert worker.tpool.taken == [conn]
    worker.tpool.taken.clear()
    assert worker.handle(conn) is True  # the thread's work: it reads and answers it
    assert read_answer(left)[0].startswith("HTTP/1.1 ")
    keep_alive(worker, conn)

    good = request("/v1/me", headers=bearer(key.secret))
    left.sendall(good)
    turn(worker)  # armed again: the block has not lapsed in real time
    assert worker.tpool.taken == [conn] and still_waiting(conn, good)


def _answered(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        waiting = client.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        waiting = b""
    finally:
        client.setblocking(True)
        client.settimeout(10)
    return bool(waiting)
