"""The gunicorn worker the gateway runs on: gthread, with its own errors in OpenAI's shape
and a flood's refusals answered in its event loop (gateway/process/door.py).

gunicorn answers requests it cannot parse (a bad request line, a URL longer than
``limit_request_line``, too many or too large header fields) itself, before the application
sees them, with an HTML page that echoes the offending line. This worker lets gunicorn decide
the status exactly as before and writes the answer as ``{"error": {...}}`` instead, without
echoing anything the client sent (a request line can hold a key in its query string).
"""

from __future__ import annotations

import errno
import functools
import json
import re
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from gateway.http.door import DoorRefusals
from gateway.http.errors import ApiError, error_body
from gateway.process.door import (
    CapturedSocket,
    answer_at_the_door,
    forget_peeked,
    refusals_of,
    waiting_refusal,
)

# The door's share of the event loop while an address is blocked: so many refusals per turn
# at most, after every other event of the turn (the rest wait, readable, for the next turn),
# and after a turn that answered any while a pool thread holds a request, a pause that
# leaves the GIL to that thread. Measured with bench.flood (docs/benchmarks.md, "the door"):
# a loop that answers all it can keeps the good tester's request waiting, for the loop and
# for the GIL; 2 a turn without a pause cost more CPU per refusal for the same p99.
DOOR_ANSWERS_PER_TURN = 4
DOOR_STEPS_ASIDE_SECONDS = 0.0005
_UNSET: Any = object()

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")

# What each status gunicorn writes means to a client of this API.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("The request could not be parsed as HTTP.", "bad_request"),
    403: ("The request was refused by the server.", "permission_denied"),
    414: ("The request line (method, URL and query string) is too long.", "url_too_long"),
    417: ("The Expect header's expectation cannot be met.", "expectation_failed"),
    431: ("The request's header fields are too many or too large.", "headers_too_large"),
    500: ("The gateway failed to handle the request.", "internal_error"),
    501: ("The request's transfer coding is not supported.", "unsupported_transfer_coding"),
}


def error_answer(status: int, reason: str) -> bytes:
    """The whole HTTP answer gunicorn's error ``status`` gets: JSON in the one error shape."""
    message, code = _ERRORS.get(status, ("The request could not be handled.", "http_error"))
    error = ApiError(status, message, code)
    body = json.dumps(error_body(error)).encode() + b"\n"
    # The error's own headers too (x-should-retry, like every other error of the gateway).
    extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers.items())
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "\r\n"
    )
    return head.encode("latin-1") + body


class GatewayWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering its own errors in the OpenAI error shape, and a
    blocked address's refusals in its event loop (gateway/process/door.py)."""

    _door: DoorRefusals | None = _UNSET

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        door = self._door
        if door is _UNSET:  # the application is loaded after the worker is made
            door = self._door = refusals_of(self.wsgi)
        if door is None or not door.armed():
            super().wait_for_and_dispatch_events(timeout)
            return
        try:
            events = self.poller.select(timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            return
        # Everything else first (a good tester's request to the pool, a finished request's
        # connection back to the poller), then the refusals.
        refusals: list[tuple[Any, bytes]] = []
        for key, _ in events:
            callback = key.data
            conn = self._kept_alive_conn(callback)
            head = waiting_refusal(self, conn, door) if conn is not None else None
            if head is None:
                callback(key.fileobj)
            else:
                refusals.append((conn, head))
        answered = 0
        for conn, head in refusals[:DOOR_ANSWERS_PER_TURN]:
            if answer_at_the_door(self, conn, door, head):
                answered += 1
            else:
                self.on_client_socket_readable(conn, conn.sock)
        if answered and self.nr_conns > len(self.keepalived_conns) + len(self.pending_conns):
            time.sleep(DOOR_STEPS_ASIDE_SECONDS)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        # To a thread, which reads the socket: a head the door peeked at is stale from now,
        # whether the door is armed or not (it may be armed again by the next request).
        forget_peeked(conn)
        super().on_client_socket_readable(conn, client)

    def _kept_alive_conn(self, callback: Any) -> Any:
        """The kept-alive connection a poller event is for (gthread registers them with
        ``partial(on_client_socket_readable, conn)``), else None."""
        if isinstance(callback, functools.partial) and (
            callback.func == self.on_client_socket_readable
        ):
            return callback.args[0]
        return None

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # gunicorn picks the status and logs; what it would write is captured and rewritten.
        capture = CapturedSocket()
        super().handle_error(req, capture, addr, exc)
        match = _STATUS_LINE.match(capture.written)
        answer = bytes(capture.written)
        if match is not None:
            answer = error_answer(int(match[1]), match[2].decode("latin-1"))
        try:
            util.write_nonblock(client, answer)
        except Exception:
            self.log.debug("Failed to send error message.")
