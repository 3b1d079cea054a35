"""The last /v1 requests the simulator received, kept so tests can see what reached it."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from typing import Any

from flask import Request

REQUEST_LOG_SIZE = 200


def _redact_authorization(value: str, api_key: str | None) -> str:
    """Say whether the caller sent the master key without ever echoing a credential."""
    if api_key is not None and hmac.compare_digest(value, f"Bearer {api_key}"):
        return "master"
    return "other:" + hashlib.sha256(value.encode()).hexdigest()[:12]


class RequestLog:
    """The last REQUEST_LOG_SIZE requests, oldest first, shared by all threads."""

    def __init__(self, api_key: str | None) -> None:
        """Start empty; `api_key` is the master key, recognised (never stored) in headers."""
        self._api_key = api_key
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    def record(self, request: Request) -> None:
        """Remember the request, with its Authorization header redacted."""
        headers = dict(request.headers.items())
        if "Authorization" in headers:
            headers["Authorization"] = _redact_authorization(
                headers["Authorization"], self._api_key
            )
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.args.to_dict(),
            "headers": headers,
        }
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        """The recorded requests, oldest first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._entries.clear()
