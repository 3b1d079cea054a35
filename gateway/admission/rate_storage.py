"""An in-process rate-limit storage for the embedded default.

``limits``' own ``memory://`` storage expires counters from a timer thread that it starts
again whenever the last one has finished: with requests more than 10 ms apart that is a new
thread per request (measured: 0.3-1.7 ms each). This one drops expired counters when they
are read and sweeps the rest at most once a minute, with no thread at all. Selected by the
URI ``drawbridge-memory://``; Redis replaces it in production.
"""

from __future__ import annotations

import threading
import time

from limits.storage import MemoryStorage

SWEEP_INTERVAL_SECONDS = 60.0


class LazyMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = ["drawbridge-memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._sweep_lock = threading.Lock()
        self._windows_lock = threading.Lock()
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self.get(key)
        self._sweep_now_and_then()
        with self.locks[key]:
            self.storage[key] += amount
            if self.storage[key] == amount:
                self.expirations[key] = time.time() + expiry
        return self.storage.get(key, 0)

    def count_windows(self, windows: list[tuple[str, int, int]]) -> list[tuple[int, float]]:
        """One request counted in each window (key, expiry seconds, requests allowed), up to
        the first that refuses it: (count, seconds until the window resets) per window.

        What ``incr`` then ``get_expiry`` give per window, in one step under one lock
        instead of four wrapped storage calls and a lock per key (this runs for every
        authorised request). The windows are the keys' per-request windows only, which
        nothing else here counts."""
        self._sweep_now_and_then()
        storage, expirations = self.storage, self.expirations
        counts: list[tuple[int, float]] = []
        with self._windows_lock:
            now = time.time()
            for key, expiry, allowed in windows:
                expires = expirations.get(key, 0)
                if expires <= now:
                    expires = expirations[key] = now + expiry
                    storage[key] = count = 1
                else:
                    storage[key] = count = storage[key] + 1
                counts.append((count, expires - now))
                if count > allowed:
                    break
        return counts

    def decr(self, key: str, amount: int = 1) -> int:
        self.get(key)
        with self.locks[key]:
            self.storage[key] = max(self.storage[key] - amount, 0)
        return self.storage.get(key, 0)

    def _sweep_now_and_then(self) -> None:
        if time.monotonic() < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            # Under the windows' lock: a window ``count_windows`` renews meanwhile is not
            # dropped with the stale expiry read here.
            with self._windows_lock:
                now = time.time()
                for key, expires in list(self.expirations.items()):
                    if expires <= now:
                        self.storage.pop(key, None)
                        self.expirations.pop(key, None)
                        self.locks.pop(key, None)
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
        finally:
            self._sweep_lock.release()
