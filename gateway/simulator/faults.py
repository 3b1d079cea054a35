"""Fault injection: the faults a test asks for on /_sim/faults, and what they do to a request."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from flask import Response, request

from gateway.simulator.errors import ApiError

HANG_SECONDS = 300.0


@dataclass(frozen=True)
class Faults:
    """Faults injected into /v1 requests whose path starts with `path_prefix`."""

    latency_ms: int = 0
    status: int | None = None
    status_count: int | None = None  # None: every request gets `status` until cleared
    hang: bool = False
    reset: bool = False
    redirect: str | None = None
    oversize_bytes: int | None = None
    lie: bool = False
    path_prefix: str = "/v1"

    def applies_to(self, path: str) -> bool:
        """Whether a request for `path` is subject to these faults."""
        return path.startswith(self.path_prefix)


def _int_within(low: int, high: int) -> Callable[[object], bool]:
    """A check accepting integers (not booleans) in low..high."""
    return lambda value: type(value) is int and low <= value <= high


def _is_bool(value: object) -> bool:
    """A check accepting JSON booleans."""
    return isinstance(value, bool)


def _is_path(value: object) -> bool:
    """A check accepting absolute URL paths."""
    return isinstance(value, str) and value.startswith("/")


def _is_text(value: object) -> bool:
    """A check accepting non-empty strings."""
    return isinstance(value, str) and bool(value)


_FAULT_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "latency_ms": (_int_within(0, 600_000), "an integer from 0 to 600000"),
    "status": (_int_within(100, 599), "an HTTP status code"),
    "status_count": (_int_within(1, 1_000_000), "a positive integer"),
    "hang": (_is_bool, "a boolean"),
    "reset": (_is_bool, "a boolean"),
    "redirect": (_is_text, "a non-empty URL"),
    "oversize_bytes": (_int_within(0, 1 << 40), "a non-negative integer"),
    "lie": (_is_bool, "a boolean"),
    "path_prefix": (_is_path, "a path starting with '/'"),
}


def parse_faults(raw: object) -> Faults:
    """Validate a POST /_sim/faults body."""
    if not isinstance(raw, dict):
        raise ApiError(400, "Faults must be a JSON object.", code="invalid_type")
    for name, value in raw.items():
        if name not in _FAULT_CHECKS:
            raise ApiError(400, f"Unknown fault: {name!r}.", param=name, code="unknown_parameter")
        check, expected = _FAULT_CHECKS[name]
        if not check(value):
            raise ApiError(400, f"{name} must be {expected}.", param=name, code="invalid_value")
    if "status_count" in raw and "status" not in raw:
        raise ApiError(
            400, "status_count needs status.", param="status_count", code="invalid_value"
        )
    return Faults(**raw)


class FaultInjector:
    """The faults in force, shared by all threads, and their effect on a request."""

    def __init__(self) -> None:
        """Start with no faults: a healthy upstream."""
        self._lock = threading.Lock()
        self._faults = Faults()
        # Set (and replaced) whenever faults change, so hung requests give up their thread.
        self._release = threading.Event()

    def current(self) -> Faults:
        """A consistent snapshot of the faults."""
        with self._lock:
            return self._faults

    def replace(self, faults: Faults) -> None:
        """Install new faults and wake any request hung by the old ones."""
        with self._lock:
            self._faults = faults
            released, self._release = self._release, threading.Event()
        released.set()

    def inject(self, faults: Faults) -> Response | None:
        """Apply the request-level faults; None lets the request through."""
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.hang:
            self._hang()
        if faults.reset:
            return _drop_connection()
        if faults.redirect:
            return Response(status=302, headers={"Location": faults.redirect})
        if faults.lie:
            return Response("<html>oops</html>", status=200, mimetype="text/html")
        status = self._take_status(request.path)
        if status is not None:
            raise ApiError(
                status, f"Simulated upstream failure ({status}).", code="simulated_fault"
            )
        return None

    def _hang(self) -> None:
        """Hold the request for HANG_SECONDS, or until the faults change."""
        with self._lock:
            # Re-checked under the lock: faults cleared since our snapshot mean no hang at all.
            if not self._faults.hang:
                return
            release = self._release
        release.wait(HANG_SECONDS)

    def _take_status(self, path: str) -> int | None:
        """The injected status for this request, counting it against status_count."""
        with self._lock:
            faults = self._faults
            if faults.status is None or not faults.applies_to(path):
                return None
            if faults.status_count is not None:
                left = faults.status_count - 1
                self._faults = replace(
                    faults, status=faults.status if left else None, status_count=left or None
                )
            return faults.status


def _drop_connection() -> Response:
    """Cut the client's TCP connection so it gets no response at all.

    Both werkzeug's dev server (`werkzeug.socket`) and gunicorn (`gunicorn.socket`) expose the
    client socket in the WSGI environ. We shut it down rather than close it: the descriptor
    stays owned by the server, so it can't be reused by another thread's connection while the
    server still holds the number. SO_LINGER 0 turns the server's final close() into an RST.
    The server then fails to write the returned response with EPIPE, which both treat as a
    client that went away: nothing is sent and nothing is logged as an error.
    """
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        # No socket (Flask's test client): surface the same failure as an exception.
        raise ConnectionResetError(errno.ECONNRESET, "simulated connection reset")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the client is already gone, which is the outcome we wanted
    # Never delivered: the server's failed write of it is what ends the request quietly.
    # 444 is nginx's "closed without response", so access logs say what happened.
    return Response(status=444)
