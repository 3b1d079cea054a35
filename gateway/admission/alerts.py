"""Alerts to webhooks (Slack-compatible JSON), sent from one background thread per process.

A request never waits for a webhook: alerts go into a bounded queue and one daemon thread
posts each to every configured URL with a timeout, once. A failed post is logged, not
retried, and when the queue is full new alerts are dropped and logged: an attack that trips
the detector thousands of times must not turn into thousands of threads or a retry storm.
Alerts carry key ids and hints, never secrets (``keys.leaks.anomalies.Anomaly.alert``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger("drawbridge.alerts")

QUEUE_SIZE = 100


def checked_webhook_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """The URLs, each an absolute http(s) URL. Raises ValueError naming a bad one."""
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"alert_webhook_urls: {url!r} is not an http(s) URL")
    return tuple(urls)


class AlertSender:
    def __init__(self, urls: Sequence[str], timeout: float = 3.0) -> None:
        self.urls = checked_webhook_urls(urls)
        self._timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def send(self, alert: dict[str, Any]) -> bool:
        """Queue an alert for every webhook; False when there are none or the queue is full."""
        if not self.urls:
            log.warning("alert (no webhook configured): %s", alert.get("text"))
            return False
        self._ensure_thread()
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.error("alert dropped, the alert queue is full: %s", alert.get("text"))
            return False
        return True

    def _ensure_thread(self) -> None:
        # Started on first use, inside the worker process: a thread started before gunicorn
        # forks would not exist in the workers.
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="drawbridge-alerts", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        with requests.Session() as session:
            # No proxy variables or netrc: alerts go where the settings say, nowhere else.
            session.trust_env = False
            while True:
                alert = self._queue.get()
                try:
                    if alert is None:
                        return
                    for url in self.urls:
                        self._post(session, url, alert)
                finally:
                    self._queue.task_done()

    def _post(self, session: requests.Session, url: str, alert: dict[str, Any]) -> None:
        target = urlsplit(url).netloc
        try:
            response = session.post(url, json=alert, timeout=self._timeout, allow_redirects=False)
        except requests.RequestException as exc:
            log.error("alert to %s failed: %s", target, type(exc).__name__)
            return
        if response.status_code >= 300:
            log.error("alert to %s answered %s", target, response.status_code)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued alerts are sent (tests, shutdown); False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self) -> None:
        """Stop the thread after the queued alerts."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put(None, timeout=1)
            except queue.Full:
                return
            self._thread.join(self._timeout * len(self.urls) + 1)
