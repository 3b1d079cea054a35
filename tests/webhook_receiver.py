"""A webhook endpoint on 127.0.0.1 for alert tests: a real HTTP server in a thread that
keeps every POST it receives (raw bytes and parsed JSON)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.status = status
        self.delay = delay
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._arrived:
                    receiver.bodies.append(body)
                    receiver._arrived.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/drawbridge"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for body in self.bodies]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The alerts once at least ``count`` arrived. Raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.bodies) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} alerts within {timeout}s, got {len(self.bodies)}"
                    )
                self._arrived.wait(left)
        return self.alerts
