"""The bulkhead: how many requests of one key a worker process serves at once.

A tester whose upstream hangs, or who opens many slow downloads, would otherwise hold every
thread of a worker and starve everybody else. Each key gets at most ``max_inflight_per_key``
requests in flight per worker process; one more is refused at once with 429
``too_many_concurrent_requests`` (and ``x-should-retry: true``, so the openai SDK retries it
after ``Retry-After``).

The count is per process on purpose: what the bulkhead protects is a worker's thread pool,
and a per-process count bounds exactly that (a key holds at most ``max_inflight_per_key`` of
each worker's ``threads``), with no network round trip on the hot path and nothing to leak
in a shared store when a worker dies. Across ``workers`` processes a key can have up to
``workers * max_inflight_per_key`` requests in flight. docs/isolation.md.

Admission takes the slot (gateway/services/admission.py); gateway/app.py gives it back when
the request's work is done.
"""

from __future__ import annotations

import threading

from keys.errors import TooManyInFlight

# How long a refused client should wait: in-flight requests of a healthy upstream end in
# well under a second, and a hung one is cut by the upstream read timeout.
RETRY_AFTER_SECONDS = 1


class Slot:
    """One admitted request; ``release`` gives the place back, once, however often called."""

    __slots__ = ("_bulkhead", "_key_id")

    def __init__(self, bulkhead: Bulkhead, key_id: str) -> None:
        self._bulkhead: Bulkhead | None = bulkhead
        self._key_id = key_id

    def release(self) -> None:
        bulkhead, self._bulkhead = self._bulkhead, None
        if bulkhead is not None:
            bulkhead._leave(self._key_id)


class Bulkhead:
    """Per-key in-flight counts of this process, capped at ``limit`` (0: no cap)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("max_inflight_per_key must be 0 (no cap) or positive")
        self.limit = limit
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, key_id: str) -> Slot:
        """Admit one request of ``key_id``. Raises TooManyInFlight when the key is at its cap."""
        with self._lock:
            count = self._inflight.get(key_id, 0)
            if self.limit and count >= self.limit:
                refused = True
            else:
                self._inflight[key_id] = count + 1
                refused = False
        if refused:
            raise TooManyInFlight(
                f"Too many concurrent requests: at most {self.limit} of this key's requests "
                "may be in progress at once. Retry when one of them has finished.",
                RETRY_AFTER_SECONDS,
            )
        return Slot(self, key_id)

    def _leave(self, key_id: str) -> None:
        with self._lock:
            count = self._inflight.get(key_id, 0) - 1
            if count > 0:
                self._inflight[key_id] = count
            else:
                self._inflight.pop(key_id, None)

    def inflight(self, key_id: str) -> int:
        """Requests of ``key_id`` in progress in this process now."""
        with self._lock:
            return self._inflight.get(key_id, 0)
