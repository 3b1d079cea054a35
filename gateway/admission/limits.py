"""Rate limits: per key (from the tester's policy) and per client IP on failed
authentication, with flask-limiter's storage (in process embedded, Redis in production).

The limits are checked explicitly after the key is verified, because they depend on the
key's policy; flask-limiter supplies the storage and the fixed-window strategy. A refusal
is ``keys.errors.RateLimited`` with the window that refused; gateway/http/errors.py makes it a
429 with ``Retry-After`` and OpenAI's ``x-ratelimit-*-requests`` headers, so the ``openai``
SDK backs off correctly.

When Redis cannot be reached the counters fall back to this process's memory (a
``RedisOutage`` shared with the anomaly counters decides when to try Redis again): a
tester keeps being limited, at most ``limit x processes`` until Redis is back, and no request
fails because of Redis. Key state never lives in Redis, so a revocation holds either way.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, TypeVar

from flask import Flask, Response
from flask_limiter import Limiter
from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter, RateLimiter
from redis import RedisError

from gateway.admission.rate_storage import LazyMemoryStorage
from keys.errors import RateLimited
from keys.limits.counters import RedisOutage
from keys.limits.policies import Policy

MEMORY_STORAGE_URI = "drawbridge-memory://"
# Redis calls on the request path give up quickly: a Redis that hangs costs one request this
# long (per process and REDIS_RETRY_SECONDS), then the process counts in memory.
REDIS_TIMEOUT_SECONDS = 0.5
_REDIS_FAILURES = (RedisError, OSError, StorageError)

T = TypeVar("T")


@lru_cache(maxsize=1024)
def _per_minute(amount: int) -> RateLimitItem:
    return RateLimitItemPerMinute(max(amount, 1))


@lru_cache(maxsize=1024)
def _per_day(amount: int) -> RateLimitItem:
    return RateLimitItemPerDay(max(amount, 1))


@dataclass(frozen=True)
class LimitState:
    """The tightest window after this request, for the response headers."""

    limit: int
    remaining: int
    reset_in: float


def _reset_text(seconds: float) -> str:
    """OpenAI's duration format for ``x-ratelimit-reset-requests`` (``1m30s``, ``6s``)."""
    whole = max(math.ceil(seconds), 0)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def rate_limit_headers(state: LimitState, *, refused: bool) -> dict[str, str]:
    headers = {
        "x-ratelimit-limit-requests": str(state.limit),
        "x-ratelimit-remaining-requests": str(max(state.remaining, 0)),
        "x-ratelimit-reset-requests": _reset_text(state.reset_in),
    }
    if refused:
        wait = max(math.ceil(state.reset_in), 1)
        headers["Retry-After"] = str(wait)
        headers["retry-after-ms"] = str(wait * 1000)
    return headers


VERIFIED_KEYS_REMEMBERED = 10_000
BLOCKS_REMEMBERED = 10_000


class VerifiedKeys:
    """The keys this process has verified and not seen refused since, by a salted digest
    kept in memory only (never the secret, never stored).

    The address block (``refuse_blocked_client``) spares the database from guessed keys; it
    need not stand between a tester and a key that has verified here, even when a flood of
    bad keys comes from the tester's own address (a NAT, a proxy). A key refused for any
    reason (revoked, suspended, a failed proof) is forgotten, so that refusal keeps its
    block. Remembering a key admits nothing: the key is verified in full on every request.
    """

    def __init__(self, capacity: int = VERIFIED_KEYS_REMEMBERED) -> None:
        self._capacity = capacity
        self._salt = secrets.token_bytes(32)
        self._digests: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def _digest(self, secret: str) -> bytes:
        return hashlib.blake2b(secret.encode(), key=self._salt, digest_size=16).digest()

    def remember(self, secret: str) -> None:
        digest = self._digest(secret)
        if digest in self._digests:
            return
        with self._lock:
            while len(self._digests) >= self._capacity:
                self._digests.pop(next(iter(self._digests)))
            self._digests[digest] = None

    def forget(self, secret: str) -> None:
        with self._lock:
            self._digests.pop(self._digest(secret), None)

    def holds(self, secret: str | None) -> bool:
        return secret is not None and self._digest(secret) in self._digests

    def clear(self) -> None:
        with self._lock:
            self._digests.clear()


class RateLimits:
    STORE = "rate_limits"

    def __init__(
        self,
        storage_uri: str,
        auth_failures_per_minute: int,
        outage: RedisOutage | None = None,
    ) -> None:
        shared = storage_uri.startswith(("redis://", "rediss://", "redis+"))
        timeouts: dict[str, Any] = {
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        }
        self._limiter = Limiter(
            key_func=lambda: "",
            storage_uri=storage_uri,
            storage_options=timeouts if shared else {},
            strategy="fixed-window",
            default_limits=[],
            headers_enabled=False,
            key_prefix="drawbridge",
        )
        self._auth_failures = RateLimitItemPerMinute(max(auth_failures_per_minute, 1))
        # Only a shared (Redis) storage can be unreachable; in-process storage never falls back.
        self.outage = (outage or RedisOutage()) if shared else None
        self._local = LazyMemoryStorage()
        self._local_strategy = FixedWindowRateLimiter(self._local)
        self.verified_keys = VerifiedKeys()
        self._blocked_until: dict[str, float] = {}
        # When the last block this process has seen ends (it only grows: a block forgotten
        # early leaves it later than need be, never earlier).
        self._blocks_end = 0.0

    def init_app(self, app: Flask) -> None:
        self._limiter.init_app(app)
        # Every limit is checked explicitly, once the key (and so its policy) is known. The
        # extension's own per-request hooks would find nothing to do, at a cost measured in
        # tens of microseconds per request: they are taken off again.
        limiter = self._limiter
        hook_lists: list[Any] = [
            app.before_request_funcs,
            app.after_request_funcs,
            app.teardown_request_funcs,
        ]
        for hooks in hook_lists:
            hooks[None] = [hook for hook in hooks.get(None, []) if not _belongs_to(hook, limiter)]

    def admit_key(self, key_id: str, policy: Policy) -> LimitState:
        """Count one request against the key's limits. Raises RateLimited when over."""
        windows: list[tuple[RateLimitItem, int]] = [
            (_per_minute(policy.requests_per_minute), policy.requests_per_minute),
            (_per_day(policy.requests_per_day), policy.requests_per_day),
        ]
        counted = self._with_storage(lambda storage: _count(storage, windows, key_id))
        for (item, allowed), (state, admitted) in zip(windows, counted, strict=False):
            if not admitted:
                raise RateLimited(
                    f"Rate limit reached: {allowed} requests per {item.GRANULARITY.name} "
                    "for this key. Retry after the reset.",
                    limit=state.limit,
                    remaining=state.remaining,
                    reset_in=state.reset_in,
                )
        return min((state for state, _ in counted), key=lambda state: state.remaining)

    def refuse_blocked_client(
        self, client_ip: str, secret: str | None = None, *, memory_only: bool = False
    ) -> None:
        """Raises RateLimited when this client has failed authentication too often, unless
        ``secret`` is a key this process has verified and not seen refused since
        (``verified_keys``): a tester behind the address of a flood keeps working.

        ``memory_only``: refuse only on a block this process holds, never asking the storage
        (the worker's event loop, which must not wait on Redis; gateway/process/door.py)."""
        if self.verified_keys.holds(secret):
            # The block never refuses a verified key, so whether the address is blocked need
            # not be asked (on Redis: a round trip fewer on every request of a good key).
            return
        item = self._auth_failures
        # A block lasts until its window resets, whatever happens meanwhile: once seen, this
        # process refuses the address without asking the storage again (a flood's refusals
        # then cost no round trip to Redis).
        reset_time: float | None = self._blocked_until.get(client_ip)
        if reset_time is None or reset_time <= time.time():
            if memory_only:
                return
            reset_time = self._with_strategy(
                lambda strategy: (
                    None
                    if strategy.test(item, "auth-failure", client_ip)
                    else strategy.get_window_stats(item, "auth-failure", client_ip).reset_time
                )
            )
            self._remember_block(client_ip, reset_time)
        if reset_time is not None:
            raise RateLimited(
                "Too many failed authentication attempts from your address; retry later.",
                code="too_many_failed_attempts",
                limit=item.amount,
                remaining=0,
                reset_in=reset_time - time.time(),
            )

    def holds_blocks(self) -> bool:
        """Whether this process may hold an address blocked now: while it holds none, the
        worker's event loop looks at no request (gateway/process/door.py)."""
        return self._blocks_end > time.time()

    def held_blocked(self, client_ip: str) -> bool:
        """Whether this process holds ``client_ip`` blocked in memory now (no storage read):
        the fast path's question (gateway/fast_refusal.py) before it answers without Flask."""
        reset_time = self._blocked_until.get(client_ip)
        return reset_time is not None and reset_time > time.time()

    def _remember_block(self, client_ip: str, reset_time: float | None) -> None:
        blocked = self._blocked_until
        if reset_time is None:
            blocked.pop(client_ip, None)
            return
        if len(blocked) >= BLOCKS_REMEMBERED:
            blocked.clear()  # forgotten blocks are read from the storage again
        blocked[client_ip] = reset_time
        self._blocks_end = max(self._blocks_end, reset_time)

    def record_auth_failure(self, client_ip: str) -> None:
        item = self._auth_failures
        self._with_strategy(lambda strategy: strategy.hit(item, "auth-failure", client_ip))

    def redis_status(self) -> str | None:
        """Redis for ``/readyz``: "ok", or why the counters are in process memory now; None
        without Redis.

        Asks Redis (one read) rather than trusting the last request: a probe also sees a
        Redis that came back while no traffic flowed, and ends the outage for it.
        """
        outage = self.outage
        if outage is None:
            return None
        try:
            self._limiter.storage.get("drawbridge/readyz")
        except _REDIS_FAILURES as exc:
            outage.failed(self.STORE, exc)
            return (
                f"unavailable: {type(exc).__name__} (rate limits and anomaly counters "
                "count in process memory)"
            )
        outage.succeeded()
        return "ok"

    def reset(self) -> None:
        """Forget every counter and verified key (tests)."""
        self.verified_keys.clear()
        self._blocked_until.clear()
        self._local.reset()
        self._limiter.reset()

    def _with_storage(self, count: Callable[[Storage], T]) -> T:
        """``count(storage)`` on the shared storage, or on this process's memory while
        Redis is unreachable."""
        outage = self.outage
        if outage is None:
            return count(self._limiter.storage)
        if outage.in_use():
            try:
                result = count(self._limiter.storage)
            except _REDIS_FAILURES as exc:
                outage.failed(self.STORE, exc)
            else:
                outage.succeeded()
                return result
        outage.served_from_memory(self.STORE)
        return count(self._local)

    def _with_strategy(self, count: Callable[[RateLimiter], T]) -> T:
        """The same, for the fixed-window strategy over either storage."""
        return self._with_storage(
            lambda storage: count(
                self._local_strategy if storage is self._local else self._limiter.limiter
            )
        )


def _count(
    storage: Storage, windows: list[tuple[RateLimitItem, int]], key_id: str
) -> list[tuple[LimitState, bool]]:
    """Count a request in each window, up to the first that refuses it: (state, admitted)."""
    counted: list[tuple[LimitState, bool]] = []
    open_windows = []
    for item, allowed in windows:
        if allowed <= 0:
            break
        open_windows.append((item, allowed))
    if isinstance(storage, RedisStorage):
        counts = _count_in_redis(storage, open_windows, key_id)
    elif isinstance(storage, LazyMemoryStorage):
        counts = storage.count_windows(
            [
                (_window_key(item, key_id), item.get_expiry(), allowed)
                for item, allowed in open_windows
            ]
        )
    else:
        counts = _count_in(storage, open_windows, key_id)
    for (_item, allowed), (count, expires_in) in zip(open_windows, counts, strict=False):
        counted.append((LimitState(allowed, allowed - count, expires_in), count <= allowed))
    if len(counts) == len(open_windows) < len(windows) and all(ok for _, ok in counted):
        # A limit of 0 pauses the key: nothing remains, and no window will reset it
        # sooner than one whole window from now.
        item = windows[len(open_windows)][0]
        counted.append((LimitState(0, 0, float(item.get_expiry())), False))
    return counted


@lru_cache(maxsize=4096)
def _window_key(item: RateLimitItem, key_id: str) -> str:
    """The storage key of ``key_id``'s window ``item`` (limits' own naming), made once."""
    return item.key_for("key", key_id)


def _count_in(
    storage: Storage, windows: list[tuple[RateLimitItem, int]], key_id: str
) -> list[tuple[int, float]]:
    """The fixed-window strategy's hit and window stats, in two storage calls per window
    instead of four: (count, seconds until the window resets), up to the first refusal."""
    counts = []
    for item, allowed in windows:
        key = item.key_for("key", key_id)
        count = storage.incr(key, item.get_expiry())
        counts.append((count, storage.get_expiry(key) - time.time()))
        if count > allowed:
            break
    return counts


# The same as ``_count_in`` on Redis, every window in one round trip (the storage's own calls
# would be two per window), on the keys and with the expiry rule of limits' own storage.
_ADMIT_SCRIPT = b"""
local counts = {}
for index, key in ipairs(KEYS) do
  local current = redis.call('incrby', key, 1)
  if current == 1 then
    redis.call('expire', key, ARGV[2 * index - 1])
  end
  counts[#counts + 1] = current
  counts[#counts + 1] = redis.call('ttl', key)
  if current > tonumber(ARGV[2 * index]) then
    break
  end
end
return counts
"""
_admit_scripts: weakref.WeakKeyDictionary[RedisStorage, Any] = weakref.WeakKeyDictionary()


def _count_in_redis(
    storage: RedisStorage, windows: list[tuple[RateLimitItem, int]], key_id: str
) -> list[tuple[int, float]]:
    if not windows:
        return []
    script = _admit_scripts.get(storage)
    if script is None:
        script = storage.get_connection().register_script(_ADMIT_SCRIPT)
        _admit_scripts[storage] = script
    keys = [storage.prefixed_key(item.key_for("key", key_id)) for item, _ in windows]
    arguments = [value for item, allowed in windows for value in (item.get_expiry(), allowed)]
    flat = script(keys, arguments)
    return [(int(flat[i]), float(max(int(flat[i + 1]), 0))) for i in range(0, len(flat), 2)]


def _belongs_to(hook: Any, limiter: Limiter) -> bool:
    """Whether a registered hook is one of the extension's (a bound method, or a partial)."""
    if isinstance(hook, partial):
        return limiter in hook.args
    return getattr(hook, "__self__", None) is limiter


def add_headers(response: Response, state: LimitState | None) -> None:
    """The key's rate-limit headers, unless the response already has its own (a 429's)."""
    if state is None:
        return
    headers = response.headers
    # One pass over the response's few headers: werkzeug's lookup of a missing name
    # raises and catches an HTTP exception, at a cost measured in microseconds per miss.
    present = {name.lower() for name, _ in headers.items()}
    for name, value in rate_limit_headers(state, refused=False).items():
        if name not in present:
            headers.add(name, value)
