"""Per-key activity counters for anomaly detection, shared by every worker and instance.

``Counters.record`` counts one request of a key and answers, in one step, what the rules
look at on every request: the distinct client IPs seen within a sliding window and this
minute's request count. The counts of the minutes before (the key's baseline) are read only
when a rule needs them. ``MemoryCounters`` keeps everything in the process (the embedded
default, one worker); ``RedisCounters`` keeps it in Redis, one pipelined round trip per
request, so that a key used through many workers and instances is counted once.

Counters hold key ids and client IPs, never secrets. They are not key state: losing them
loses detection history, never a revocation. So when Redis cannot be reached,
``FallbackCounters`` counts in the process's memory instead (each worker sees only its own
requests until Redis is back) rather than stopping detection or refusing the request; the
``RedisOutage`` it shares with the rate limits says when to try Redis again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

# How many complete minutes before the current one make up a key's baseline.
BASELINE_MINUTES = 30
REDIS_PREFIX = "drawbridge:anomaly"
# After Redis failed, how long this process counts in memory before it tries Redis again: a
# dead Redis costs one failed attempt a second per process, not one per request.
REDIS_RETRY_SECONDS = 1.0
_WARN_EVERY_SECONDS = 60.0

log = logging.getLogger("drawbridge.redis")


class CountersUnavailable(Exception):
    """The shared counters cannot be reached; detection is skipped for this request."""


@dataclass(frozen=True)
class KeyActivity:
    """One key's activity as of the request just counted (included in both numbers)."""

    client_ips: int
    this_minute: int


class Counters(Protocol):
    def record(self, key_id: str, client_ip: str, now: float, window_seconds: int) -> KeyActivity:
        """Count one request of ``key_id`` from ``client_ip`` at ``now`` (epoch seconds)."""

    def earlier_minutes(self, key_id: str, now: float) -> tuple[int, ...]:
        """Request counts of the BASELINE_MINUTES complete minutes before ``now``'s minute,
        newest first."""

    def claim(self, name: str, seconds: int, now: float) -> bool:
        """True for the first claim of ``name`` within ``seconds`` across all processes."""

    def reset(self) -> None:
        """Forget everything (tests)."""


def minute_of(now: float) -> int:
    return int(now // 60)


class _KeyCounts:
    __slots__ = ("ips", "minutes")

    def __init__(self) -> None:
        # client IP -> last seen, oldest first, so expiry pops from the front.
        self.ips: OrderedDict[str, float] = OrderedDict()
        self.minutes: dict[int, int] = {}


class MemoryCounters:
    """Counters in this process: exact, a few microseconds, one worker's view only."""

    def __init__(self, max_keys: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _KeyCounts] = OrderedDict()
        self._claims: dict[str, float] = {}
        self._max_keys = max_keys

    def record(self, key_id: str, client_ip: str, now: float, window_seconds: int) -> KeyActivity:
        minute = minute_of(now)
        cutoff = now - window_seconds
        with self._lock:
            counts = self._keys.get(key_id)
            if counts is None:
                counts = self._keys[key_id] = _KeyCounts()
                if len(self._keys) > self._max_keys:
                    self._keys.popitem(last=False)  # the least recently used key
            else:
                self._keys.move_to_end(key_id)
            ips = counts.ips
            ips[client_ip] = now
            ips.move_to_end(client_ip)
            while ips and next(iter(ips.values())) <= cutoff:
                ips.popitem(last=False)
            minutes = counts.minutes
            this_minute = minutes[minute] = minutes.get(minute, 0) + 1
            if len(minutes) > BASELINE_MINUTES + 1:
                for old in [m for m in minutes if m < minute - BASELINE_MINUTES]:
                    del minutes[old]
            return KeyActivity(len(ips), this_minute)

    def earlier_minutes(self, key_id: str, now: float) -> tuple[int, ...]:
        minute = minute_of(now)
        with self._lock:
            counts = self._keys.get(key_id)
            minutes = counts.minutes if counts is not None else {}
            return tuple(minutes.get(minute - i, 0) for i in range(1, BASELINE_MINUTES + 1))

    def claim(self, name: str, seconds: int, now: float) -> bool:
        with self._lock:
            if self._claims.get(name, 0.0) > now:
                return False
            if len(self._claims) >= self._max_keys:
                self._claims = {k: until for k, until in self._claims.items() if until > now}
            self._claims[name] = now + seconds
            return True

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()
            self._claims.clear()


# How long a per-minute counter is kept: the baseline reads the minutes before this one.
_MINUTE_TTL = (BASELINE_MINUTES + 2) * 60
# RedisCounters.record as one script: one command and a two-number answer per request
# instead of a pipeline of six commands and six replies, each parsed by the client.
_RECORD_SCRIPT = b"""
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3])
local ips = redis.call('zcard', KEYS[1])
redis.call('expire', KEYS[1], ARGV[4])
local this_minute = redis.call('incr', KEYS[2])
redis.call('expire', KEYS[2], ARGV[5])
return {ips, this_minute}
"""


class RedisCounters:
    """Counters in Redis, shared by every worker and instance.

    Per key: a sorted set of client IPs scored by last use (a sliding window: members older
    than the window are dropped before counting) and one counter per minute, each expiring by
    itself. All names of one key share a hash tag, so they live on one Redis Cluster slot.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._record = client.register_script(_RECORD_SCRIPT)

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.5) -> RedisCounters:
        return cls(
            redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        )

    @staticmethod
    def _ips(key_id: str) -> str:
        return f"{REDIS_PREFIX}:{{{key_id}}}:ips"

    @staticmethod
    def _minute(key_id: str, minute: int) -> str:
        return f"{REDIS_PREFIX}:{{{key_id}}}:m:{minute}"

    def record(self, key_id: str, client_ip: str, now: float, window_seconds: int) -> KeyActivity:
        ips, minute = self._ips(key_id), self._minute(key_id, minute_of(now))
        arguments: list[str | float] = [
            client_ip,
            now,
            now - window_seconds,
            window_seconds + 60,
            _MINUTE_TTL,
        ]
        try:
            replies = self._record([ips, minute], arguments)
        except (redis.RedisError, OSError) as exc:
            raise CountersUnavailable(f"redis: {type(exc).__name__}") from exc
        return KeyActivity(int(replies[0]), int(replies[1]))

    def earlier_minutes(self, key_id: str, now: float) -> tuple[int, ...]:
        minute = minute_of(now)
        names = [self._minute(key_id, minute - i) for i in range(1, BASELINE_MINUTES + 1)]
        try:
            values = self._redis.mget(names)
        except (redis.RedisError, OSError) as exc:
            raise CountersUnavailable(f"redis: {type(exc).__name__}") from exc
        return tuple(int(value) if value is not None else 0 for value in values)

    def claim(self, name: str, seconds: int, now: float) -> bool:
        try:
            return bool(self._redis.set(f"{REDIS_PREFIX}:claim:{name}", 1, nx=True, ex=seconds))
        except (redis.RedisError, OSError) as exc:
            raise CountersUnavailable(f"redis: {type(exc).__name__}") from exc

    def reset(self) -> None:
        names = list(self._redis.scan_iter(match=f"{REDIS_PREFIX}:*", count=1000))
        if names:
            self._redis.delete(*names)

    def close(self) -> None:
        self._redis.close()


class RedisOutage:
    """One process's view of whether its shared Redis is usable, for every store that falls
    back to memory (rate limits, anomaly counters).

    After a failure, ``in_use()`` is False for ``retry_seconds``; the next call then tries
    Redis again, and a success ends the outage. Each request served from memory is counted
    (``fallbacks``) and reported to the listeners (the metrics); the warning is logged at
    most once a minute.
    """

    def __init__(self, retry_seconds: float = REDIS_RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self.fallbacks: dict[str, int] = {}
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._warned_at = -_WARN_EVERY_SECONDS
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    @property
    def up(self) -> bool:
        """Whether the last attempt to use Redis succeeded."""
        return self.last_error is None

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(store)`` for each request a store serves from memory."""
        self._listeners.append(listener)

    def in_use(self) -> bool:
        """Whether to try Redis now (always, unless it failed less than retry_seconds ago)."""
        return self.last_error is None or time.monotonic() >= self._retry_at

    def failed(self, store: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self.last_error = type(exc).__name__
            self._retry_at = now + self.retry_seconds
            warn = now - self._warned_at >= _WARN_EVERY_SECONDS
            if warn:
                self._warned_at = now
        if warn:
            log.warning(
                "redis unavailable (%s, from the %s): rate limits and anomaly counters count "
                "in this process's memory until it is back",
                type(exc).__name__,
                store,
            )

    def succeeded(self) -> None:
        if self.last_error is not None:
            with self._lock:
                was, self.last_error = self.last_error, None
                self._warned_at = -_WARN_EVERY_SECONDS
            if was is not None:
                log.warning("redis reachable again: counting in Redis")

    def served_from_memory(self, store: str) -> None:
        with self._lock:
            self.fallbacks[store] = self.fallbacks.get(store, 0) + 1
        for listener in self._listeners:
            listener(store)


class FallbackCounters:
    """Redis counters that fall back to this process's memory while Redis is unreachable.

    History counted in memory during an outage stays in memory: once Redis is back, rules
    see Redis's (older) counts again. Detection is weaker for the outage (one worker's view),
    never off.
    """

    STORE = "anomaly_counters"

    def __init__(self, shared: RedisCounters, outage: RedisOutage, local: MemoryCounters):
        self.shared = shared
        self.local = local
        self.outage = outage

    def record(self, key_id: str, client_ip: str, now: float, window_seconds: int) -> KeyActivity:
        if self.outage.in_use():
            try:
                activity = self.shared.record(key_id, client_ip, now, window_seconds)
            except CountersUnavailable as exc:
                self.outage.failed(self.STORE, exc.__cause__ or exc)
            else:
                self.outage.succeeded()
                return activity
        self.outage.served_from_memory(self.STORE)
        return self.local.record(key_id, client_ip, now, window_seconds)

    def earlier_minutes(self, key_id: str, now: float) -> tuple[int, ...]:
        if self.outage.in_use():
            try:
                return self.shared.earlier_minutes(key_id, now)
            except CountersUnavailable as exc:
                self.outage.failed(self.STORE, exc.__cause__ or exc)
        return self.local.earlier_minutes(key_id, now)

    def claim(self, name: str, seconds: int, now: float) -> bool:
        if self.outage.in_use():
            try:
                return self.shared.claim(name, seconds, now)
            except CountersUnavailable as exc:
                self.outage.failed(self.STORE, exc.__cause__ or exc)
        return self.local.claim(name, seconds, now)

    def reset(self) -> None:
        self.local.reset()
        self.shared.reset()

    def close(self) -> None:
        self.shared.close()
