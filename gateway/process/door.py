"""The door: a blocked address's refusals answered by the worker's event loop.

gunicorn's gthread worker hands every request to its thread pool: the event loop sees a
kept-alive connection turn readable, queues it, a pool thread wakes, parses the request,
calls the application, writes the answer and queues the connection back to the loop, which
wakes again to poll it. For a refusal that hand-off costs more than the refusal itself
(measured: about 360 us of worker CPU for a WSGI app that returns a constant, against the
~1,400 us of an authorised request), and a flood's refusals fill the queue the good tester's
request waits in (docs/benchmarks.md, "the door").

So while this process holds an address blocked (``RateLimits.holds_blocks``), the event
loop first peeks at a readable kept-alive connection and answers there and then what the
application's fast path (``FastRefusals.at_the_door``, gateway/fast_refusal.py) refuses:
no thread is woken, and the connection never leaves the poller. Everything it answers goes
through gunicorn's own parser, environ and response writer, so the bytes are the ones a pool
thread would have written; ``tests/process/test_door.py`` compares them.

The door only refuses; it never admits. It hands a request to the thread pool, untouched
(only peeked at, nothing read), unless all of these hold:

* the whole request is there and nothing else (no body, nothing pipelined behind it), it is
  HTTP/1.1 with no ``Expect``, ``Upgrade``, ``Transfer-Encoding`` or non-zero
  ``Content-Length``, it asks for no ``Connection: close``, and gunicorn's parser takes it;
* its key is not one this process verified (``VerifiedKeys``, the block's exemption), a
  question answered before anything is parsed, so a good tester behind the flood's address
  loses a ``recv`` and a digest at most;
* the fast path refuses it, from memory (never a storage read in the event loop);
* the worker is alive, not about to reach ``max_requests``, keeps connections alive, and
  the connection is plain (no TLS, no HTTP/2).

The worker (gateway/process/worker.py) asks this module after every other event of a turn
of its loop, and for ``DOOR_ANSWERS_PER_TURN`` refusals at most: the rest of a flood waits,
readable, for the next turn, with the head peeked at kept on its connection until the door
answers it or a thread takes the connection (``forget_peeked``). An answer the socket does
not take at once (a client that stopped reading) closes the connection rather than wait: the
loop never blocks on one client.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from datetime import datetime
from typing import Any

from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from gateway.http.door import EXTENSION, DoorRefusals

log = logging.getLogger("drawbridge")

# A request head longer than this is the thread pool's (gunicorn's limits are larger).
PEEK_BYTES = 16 * 1024
_AUTHORIZATION = re.compile(rb"\r\nauthorization:[ \t]*([^\r\n]*)", re.IGNORECASE)
# Headers that make a request more than its head, or change what the connection is.
_NOT_AT_THE_DOOR = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS"})
# The connection's attribute holding the head peeked at while the request waits its turn.
_PEEKED = "drawbridge_door_peeked"


class CapturedSocket:
    """Stands in for a client's socket while gunicorn writes to it: what it writes is kept,
    to be rewritten (the worker's own error pages) or sent without blocking (the door)."""

    def __init__(self) -> None:
        self.written = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # non-blocking already: gunicorn writes straight away

    def sendall(self, data: bytes) -> None:
        self.written += data


def refusals_of(application: Any) -> DoorRefusals | None:
    """The door's questions of a worker's application, if it is the gateway with them."""
    extensions = getattr(application, "extensions", None)
    found = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
    return found if isinstance(found, DoorRefusals) else None


def waiting_refusal(worker: Any, conn: Any, refusals: DoorRefusals) -> bytes | None:
    """The head of the request waiting on kept-alive ``conn`` if the door may answer it
    (peeked at, nothing read), else None: the thread pool's."""
    cfg = worker.cfg
    if (
        conn.is_http2
        or conn.parser is None
        or cfg.is_ssl
        or not cfg.keepalive
        or not worker.alive
        or worker.nr + 1 >= worker.max_requests
    ):
        return None
    # Peeked at in an earlier turn and left for a later one: nothing has read the socket
    # since (the worker forgets it when the connection goes to a thread, forget_peeked).
    waiting: bytes | None = getattr(conn, _PEEKED, None)
    if waiting is not None:
        return waiting
    try:
        head: bytes = conn.sock.recv(PEEK_BYTES, socket.MSG_PEEK)
    except OSError:  # nothing there after all (BlockingIOError), or the peer is gone
        return None
    if not head.endswith(b"\r\n\r\n") or head.find(b"\r\n\r\n") != len(head) - 4:
        return None  # not all here yet, or a body or another request behind it
    presented = _AUTHORIZATION.search(head)
    try:
        spared = refusals.spared(presented[1].decode("latin-1") if presented else None)
    except Exception:  # never the event loop's end: the pool thread's path decides
        log.exception("the door could not look at a request; it goes to a thread")
        return None
    if spared:
        return None
    setattr(conn, _PEEKED, head)
    return head


def forget_peeked(conn: Any) -> None:
    """Before anything reads ``conn``: what the door peeked at is no longer its request."""
    setattr(conn, _PEEKED, None)


def answer_at_the_door(worker: Any, conn: Any, refusals: DoorRefusals, head: bytes) -> bool:
    """True when the request ``head`` on ``conn`` was refused here (the connection kept,
    or closed); False when the application declined it: the thread pool's, nothing read."""
    forget_peeked(conn)
    cfg = worker.cfg
    parser = RequestParser(cfg, [head], conn.client)
    parser.req_count = conn.parser.req_count  # a kept-alive connection's next request
    try:
        request = next(parser)
    except Exception:
        return False  # gunicorn's parse in a pool thread answers what is wrong with it
    if request.version != (1, 1) or request.should_close() or parser.unreader.buf.getvalue():
        return False
    for name, value in request.headers:
        if name in _NOT_AT_THE_DOOR or (name == "CONTENT-LENGTH" and value.strip() != "0"):
            return False
    capture = CapturedSocket()
    started = datetime.now()
    try:
        response, environ = wsgi.create(request, capture, conn.client, conn.server, cfg)
        environ["wsgi.multithread"] = True
        body = refusals.answer(environ, response.start_response)
    except Exception:  # never the event loop's end: the pool thread's path decides
        log.exception("the door could not look at a request; it goes to a thread")
        return False
    if body is None:
        return False
    # Answered: from here on the request is the door's, whatever happens.
    worker.nr += 1
    conn.parser.req_count += 1
    sent = -1
    try:
        cfg.pre_request(worker, request)
        for chunk in body:
            response.write(chunk)
        response.close()
        worker.log.access(response, request, environ, datetime.now() - started)
        cfg.post_request(worker, request, environ, response)
    except Exception:
        log.exception("the door could not answer a refused request; its connection is closed")
    else:
        try:
            taken = len(conn.sock.recv(len(head)))  # the request, read now it is answered
            sent = conn.sock.send(capture.written) if taken == len(head) else -1
        except OSError:  # a client that stopped reading (a full buffer), or gone
            pass
    if sent == len(capture.written) and not response.should_close():
        conn.set_timeout()
        worker.keepalived_conns.remove(conn)  # kept in expiry order: it moves to the end
        worker.keepalived_conns.append(conn)
    else:
        _close(worker, conn)
    return True


def _close(worker: Any, conn: Any) -> None:
    with contextlib.suppress(KeyError, ValueError, OSError):  # unregistered already
        worker.poller.unregister(conn.sock)
    worker.keepalived_conns.remove(conn)
    worker.nr_conns -= 1
    conn.close()


__all__ = [
    "CapturedSocket",
    "answer_at_the_door",
    "forget_peeked",
    "refusals_of",
    "waiting_refusal",
]
