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
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self.get(key)
        self._sweep_now_and_then()
        with self.locks[key]:
            self.storage[key] += amount
            if self.storage[key] == amount:
                self.expirations[key] = time.time() + expiry
        return self.storage.get(key, 0)

    def decr(self, key: str, amount: int = 1) -> int:
        self.get(key)
        with self.locks[key]:
            self.storage[key] = max(self.storage[key] - amount, 0)
        return self.storage.get(key, 0)

    def _sweep_now_and_then(self) -> None:
        if time.monotonic() < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            now = time.time()
            for key, expires in list(self.expirations.items()):
                if expires <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
        finally:
            self._sweep_lock.release()
