"""Remembering proofs' nonces, so that a captured proof is refused on every worker and
instance (keys/access/proofs.py claims each one).

``ReplayGuard`` claims a nonce in Redis (one ``SET NX EX``) when Redis is configured and
reachable. Where it is not configured, or while it is unreachable, the claim goes to the
database instead (an insert into ``proof_nonces`` that the primary key lets succeed once),
which every worker and instance shares as well: no configuration and no outage makes a
replay within the window pass, at the cost of one small write per signed request while
Redis is out. Were the database down too, the key check before it has already failed
closed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from keys.db import Database
from keys.limits.counters import CountersUnavailable, RedisCounters, RedisOutage
from keys.models import ProofNonce

SWEEP_EVERY_SECONDS = 60.0
_CLAIM = insert(ProofNonce)


class DatabaseReplayClaims:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._next_sweep = 0.0

    def claim(self, name: str, seconds: int, now: float) -> bool:
        at = datetime.fromtimestamp(now, UTC)
        expires = at + timedelta(seconds=seconds)
        self._sweep_now_and_then(at)
        # This runs on every signed request: one Core insert, outside the ORM, and no table
        # the hot read reads (``cold_write``), so the next request's key check is not sent
        # back to the database.
        try:
            with self._database.cold_write() as connection:
                connection.execute(_CLAIM, {"name": name, "expires_at": expires})
            return True
        except IntegrityError:
            pass
        # Taken: by a replay, or by a claim that expired and was not swept yet.
        with self._database.cold_write() as connection:
            renewed = connection.execute(
                update(ProofNonce)
                .where(ProofNonce.name == name, ProofNonce.expires_at <= at)
                .values(expires_at=expires)
            )
            return bool(renewed.rowcount)

    def _sweep_now_and_then(self, at: datetime) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
        with self._database.cold_write() as connection:
            connection.execute(delete(ProofNonce).where(ProofNonce.expires_at <= at))


class ReplayGuard:
    """Claims in Redis when it is configured and up, else in the database."""

    STORE = "proof_nonces"

    def __init__(
        self,
        database: DatabaseReplayClaims,
        redis: RedisCounters | None = None,
        outage: RedisOutage | None = None,
    ) -> None:
        self.database = database
        self.redis = redis
        self.outage = outage or RedisOutage()

    def claim(self, name: str, seconds: int, now: float) -> bool:
        if self.redis is not None and self.outage.in_use():
            try:
                claimed = self.redis.claim(name, seconds, now)
            except CountersUnavailable as exc:
                self.outage.failed(self.STORE, exc.__cause__ or exc)
            else:
                self.outage.succeeded()
                return claimed
        return self.database.claim(name, seconds, now)
