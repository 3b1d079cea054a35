"""Does the generation backend accept the gateway's own credential?

A backend that answers 401/403 to the master credential fails every tester request with a
502 that says nothing about the cause (it is not the tester's business). Operators learn it
here: an ERROR in the log at most once a minute per process, a metric
(``drawbridge_upstream_auth_failures_total``) and the ``upstream_auth`` detail of
``/readyz``. Readiness does not fail on it: every instance shares the one credential, so
taking them all out of the load balancer would only hide the cause behind the balancer's
own errors and take the admin API down with them.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

log = logging.getLogger("drawbridge.upstream")

LOG_EVERY_SECONDS = 60.0


class UpstreamAuthWatch:
    """The last verdict of the backend on the gateway's credential, in this process."""

    def __init__(self, log_every: float = LOG_EVERY_SECONDS) -> None:
        self._log_every = log_every
        self._lock = threading.Lock()
        self._failing_since: datetime | None = None
        self._last_status = 0
        self._checked = False
        self._logged_at: float | None = None

    def refused(self, status: int) -> None:
        """The backend answered ``status`` (401 or 403) to the gateway's credential."""
        now = time.monotonic()
        with self._lock:
            self._checked = True
            self._last_status = status
            if self._failing_since is None:
                self._failing_since = datetime.now(UTC)
            since = self._failing_since
            due = self._logged_at is None or now - self._logged_at >= self._log_every
            if due:
                self._logged_at = now
        if due:
            log.error(
                "the generation backend refuses the gateway's credential (HTTP %d, failing "
                "since %s): every generation request fails with upstream_error. Check "
                "upstream.api_key_encrypted / DRAWBRIDGE_UPSTREAM_API_KEY and "
                "upstream.url. (Logged at most every %d s.)",
                status,
                _iso(since),
                int(self._log_every),
            )

    def accepted(self) -> None:
        """The backend answered without refusing the credential."""
        if self._checked and self._failing_since is None:
            return  # the common case: nothing to change, no lock taken
        with self._lock:
            self._checked = True
            if self._failing_since is not None:
                log.warning(
                    "the generation backend accepts the gateway's credential again (it "
                    "refused it since %s)",
                    _iso(self._failing_since),
                )
                self._failing_since = None

    def describe(self) -> str:
        """For /readyz: ``ok``, ``not checked yet`` or ``failing since <time> (HTTP n)``."""
        with self._lock:
            if self._failing_since is not None:
                return f"failing since {_iso(self._failing_since)} (HTTP {self._last_status})"
            return "ok" if self._checked else "not checked yet"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
