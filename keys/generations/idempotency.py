"""Idempotency keys: a create or remix repeated with the same ``Idempotency-Key`` gets the
first one's video, never a second generation or a second charge.

A key is scoped to the tester key that sent it and kept for ``IDEMPOTENCY_TTL``. The first
request claims it (one row, committed before the backend is called, so a concurrent repeat
finds it); the claim then ends ``done`` with the video, ``failed`` with an error whose
outcome upstream is unknown (replayed: a second try could start a second generation), or is
released when nothing was created (so the client may try again with the same key). Only a
digest of the client's value is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keys.db import insert_ignoring_duplicates
from keys.models import IdempotencyRecord

IDEMPOTENCY_TTL = timedelta(hours=24)
ABANDONED = {
    "status": 409,
    "code": "idempotency_key_abandoned",
    "message": "The first request with this Idempotency-Key never finished.",
}


def digest_of(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """The state of an idempotency key as one request finds it."""

    # "claimed" (this request is the first), "in_flight", "done" or "failed".
    status: str
    same_request: bool
    video_id: str | None = None
    error: dict[str, Any] | None = None


class IdempotencyKeys:
    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    def claim(
        self,
        key_id: str,
        idempotency_key: str,
        fingerprint: str,
        request_id: str,
        abandoned_after: timedelta,
    ) -> Claim:
        """Claim ``idempotency_key`` for this request, or report what an earlier one made of it.

        ``same_request`` is False when the earlier request with this key had another body. A
        claim still in flight after ``abandoned_after`` (longer than any request may run)
        was abandoned by a process that died: it turns ``failed``, outcome unknown.
        """
        now = self._clock()
        digest = digest_of(idempotency_key)
        name = (IdempotencyRecord.key_id == key_id) & (IdempotencyRecord.key_digest == digest)
        # An expired key is as good as new: this tester key's expired rows are dropped first
        # (the primary key's prefix finds them).
        self._session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.key_id == key_id, IdempotencyRecord.expires_at <= now
            )
        )
        # ON CONFLICT DO NOTHING waits for a concurrent claim of the same key to commit, and
        # the SELECT that follows then sees that claim's row (PostgreSQL reads committed; on
        # SQLite the writers are serialized by BEGIN IMMEDIATE).
        insert_ignoring_duplicates(
            self._session,
            IdempotencyRecord.__table__,
            {
                "key_id": key_id,
                "key_digest": digest,
                "fingerprint": fingerprint,
                "request_id": request_id,
                "status": "in_flight",
                "video_id": None,
                "error": None,
                "created_at": now,
                "expires_at": now + IDEMPOTENCY_TTL,
            },
        )
        row = self._session.execute(
            select(IdempotencyRecord).where(name).execution_options(populate_existing=True)
        ).scalar_one()
        if row.request_id == request_id:
            return Claim("claimed", same_request=True)
        if row.status == "in_flight" and row.created_at <= now - abandoned_after:
            row.status, row.error = "failed", ABANDONED
        return Claim(row.status, row.fingerprint == fingerprint, row.video_id, row.error)

    def done(self, key_id: str, idempotency_key: str, video_id: str) -> None:
        """The claimed request made ``video_id``: repeats get it."""
        row = self._row(key_id, idempotency_key)
        if row is not None:
            row.status, row.video_id = "done", video_id

    def failed(self, key_id: str, idempotency_key: str, error: dict[str, Any]) -> None:
        """The claimed request failed in a way that may have started a generation anyway:
        repeats get the same failure."""
        row = self._row(key_id, idempotency_key)
        if row is not None:
            row.status, row.error = "failed", error

    def release(self, key_id: str, idempotency_key: str) -> None:
        """The claimed request made nothing: the key is free again."""
        self._session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.key_id == key_id,
                IdempotencyRecord.key_digest == digest_of(idempotency_key),
            )
        )

    def _row(self, key_id: str, idempotency_key: str) -> IdempotencyRecord | None:
        return self._session.get(IdempotencyRecord, (key_id, digest_of(idempotency_key)))
