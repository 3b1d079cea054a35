"""The reconciler at the edge: the backend seen through the upstream client, and the sweep
each gateway worker runs in the background (keys/generations/reconcile.py does the work)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from gateway.upstream.client import UpstreamClient, UpstreamError, video_path
from keys.errors import NotFound
from keys.generations.reconcile import Reconciler, ReconcileReport
from keys.process import current_pid, unique_hex
from keys.store import Store

log = logging.getLogger("drawbridge.reconcile")

PAGE_SIZE = 100
# A bound on one listing, so a backend that pages forever cannot hold a run forever.
MAX_PAGES = 1000


class UpstreamBackend:
    """The generation backend as the reconciler needs it: list recent jobs, cancel one."""

    def __init__(self, upstream: UpstreamClient) -> None:
        self._upstream = upstream

    def videos_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        """Newest first, page by page, until the jobs are older than ``since``."""
        after: str | None = None
        for _ in range(MAX_PAGES):
            params = {"limit": str(PAGE_SIZE), "order": "desc"}
            if after:
                params["after"] = after
            page = self._upstream.call_json(
                "GET", "videos", request_id=_request_id(), params=params
            ).body
            data = [item for item in page.get("data") or [] if isinstance(item, dict)]
            for item in data:
                created_at = item.get("created_at")
                if isinstance(created_at, int | float) and created_at < since.timestamp():
                    return
                yield item
            if not page.get("has_more") or not data:
                return
            after = str(data[-1].get("id"))

    def cancel(self, upstream_id: str) -> None:
        try:
            path = video_path(upstream_id)
        except NotFound:
            return  # an id the backend listed but could never be asked about: nothing to cancel
        try:
            self._upstream.call_json("DELETE", path, request_id=_request_id())
        except UpstreamError as exc:
            if exc.status != 404:
                raise


def _request_id() -> str:
    return "req_reconcile_" + unique_hex()[:20]


class ReconcileSweep:
    """Runs the reconciler every ``interval`` seconds (+-50% jitter, so the workers of a
    fleet do not sweep in step) on a daemon thread of each worker process."""

    def __init__(self, store: Store, upstream: UpstreamClient, interval: float) -> None:
        self._reconciler = Reconciler(store, UpstreamBackend(upstream))
        self._interval = interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start this process's sweeper (a forked gunicorn worker starts its own)."""
        if self._interval <= 0 or (self._thread is not None and self._pid == current_pid()):
            return
        with self._lock:
            if self._thread is None or self._pid != current_pid():
                self._pid = current_pid()
                self._thread = threading.Thread(
                    target=self._run, name="reconcile-sweep", daemon=True
                )
                self._thread.start()

    def wake(self) -> None:
        """Sweep now: a reservation was just left to the reconciler."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End this process's sweeper after the run in progress, if any."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None and self._pid == current_pid():
            self._thread.join(timeout)

    def run_once(self) -> ReconcileReport:
        report = self._reconciler.run()
        for action in report.actions:
            log.info(
                "reconciled: %s request=%s tester=%s upstream=%s",
                action.action,
                action.request_id,
                action.tester_id,
                action.upstream_id,
            )
        return report

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval * random.uniform(0.5, 1.5))
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.run_once()
            except Exception:  # the sweeper must outlive any one failed run
                log.exception("reconcile run failed")
