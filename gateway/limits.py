"""Rate limits: per key (from the tester's policy) and per client IP on failed
authentication, with flask-limiter's storage (in process embedded, Redis in production).

The limits are checked explicitly after the key is verified, because they depend on the
key's policy; flask-limiter supplies the storage, the fixed-window strategy and its
``RateLimitExceeded`` semantics, and the 429s carry ``Retry-After`` and OpenAI's
``x-ratelimit-*-requests`` headers so the ``openai`` SDK backs off correctly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from flask import Flask, Response
from flask_limiter import Limiter
from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute

from gateway import rate_storage  # noqa: F401  (registers drawbridge-memory://)
from gateway.errors import ApiError
from keys.policies import Policy

MEMORY_STORAGE_URI = "drawbridge-memory://"


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


class RateLimits:
    def __init__(self, storage_uri: str, auth_failures_per_minute: int) -> None:
        self._limiter = Limiter(
            key_func=lambda: "",
            storage_uri=storage_uri,
            strategy="fixed-window",
            default_limits=[],
            headers_enabled=False,
            key_prefix="drawbridge",
        )
        self._auth_failures = RateLimitItemPerMinute(max(auth_failures_per_minute, 1))

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
        """Count one request against the key's limits. Raises ApiError 429 when over."""
        windows: list[tuple[RateLimitItem, int]] = [
            (_per_minute(policy.requests_per_minute), policy.requests_per_minute),
            (_per_day(policy.requests_per_day), policy.requests_per_day),
        ]
        storage = self._limiter.storage
        tightest: LimitState | None = None
        for item, allowed in windows:
            if allowed <= 0:
                # A limit of 0 pauses the key: nothing remains, and no window will reset it
                # sooner than one whole window from now.
                state = LimitState(0, 0, float(item.get_expiry()))
                admitted = False
            else:
                # The fixed-window strategy's hit and window stats, in two storage calls
                # instead of four (each one a round trip with Redis).
                key = item.key_for("key", key_id)
                count = storage.incr(key, item.get_expiry())
                state = LimitState(allowed, allowed - count, storage.get_expiry(key) - time.time())
                admitted = count <= allowed
            if not admitted:
                raise ApiError(
                    429,
                    f"Rate limit reached: {allowed} requests per {item.GRANULARITY.name} "
                    "for this key. Retry after the reset.",
                    "rate_limit_exceeded",
                    headers=rate_limit_headers(state, refused=True),
                )
            if tightest is None or state.remaining < tightest.remaining:
                tightest = state
        assert tightest is not None
        return tightest

    def refuse_blocked_client(self, client_ip: str) -> None:
        """Raises ApiError 429 when this client has failed authentication too often."""
        strategy = self._limiter.limiter
        if not strategy.test(self._auth_failures, "auth-failure", client_ip):
            stats = strategy.get_window_stats(self._auth_failures, "auth-failure", client_ip)
            state = LimitState(self._auth_failures.amount, 0, stats.reset_time - time.time())
            raise ApiError(
                429,
                "Too many failed authentication attempts from your address; retry later.",
                "too_many_failed_attempts",
                headers=rate_limit_headers(state, refused=True),
            )

    def record_auth_failure(self, client_ip: str) -> None:
        self._limiter.limiter.hit(self._auth_failures, "auth-failure", client_ip)

    def reset(self) -> None:
        """Forget every counter (tests)."""
        self._limiter.reset()


def _belongs_to(hook: Any, limiter: Limiter) -> bool:
    """Whether a registered hook is one of the extension's (a bound method, or a partial)."""
    if isinstance(hook, partial):
        return limiter in hook.args
    return getattr(hook, "__self__", None) is limiter


def add_headers(response: Response, state: LimitState | None) -> None:
    if state is not None:
        for name, value in rate_limit_headers(state, refused=False).items():
            response.headers.setdefault(name, value)
