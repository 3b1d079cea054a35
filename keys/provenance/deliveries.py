"""The forensic index: one row per video that left the gateway, found again by download id
(from a manifest) or by hash (a file whose manifest was stripped)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from keys.models import Delivery

MAX_MATCHES = 50


class DeliveryIndex:
    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    def record(self, **fields: Any) -> Delivery:
        """Add a delivery's row (the caller's fields are Delivery's columns)."""
        row = Delivery(**fields)
        self._session.add(row)
        self._session.flush()
        return row

    def get(self, download_id: str) -> Delivery | None:
        return self._session.get(Delivery, download_id)

    def by_hash(self, sha256: str, media_sha256: str | None) -> tuple[str | None, list[Delivery]]:
        """Deliveries whose bytes these are: as delivered (one download), as the backend
        made them, or with the same media data (any download of that video). Returns which
        hash matched ("delivered", "original", "media") and the rows, newest first."""
        delivered = list(
            self._session.scalars(
                select(Delivery).where(Delivery.delivered_sha256 == sha256).limit(MAX_MATCHES)
            )
        )
        if delivered:
            return "delivered", delivered
        original = self._newest(Delivery.original_sha256 == sha256)
        if original:
            return "original", original
        if media_sha256 is not None:
            media = self._newest(Delivery.media_sha256 == media_sha256)
            if media:
                return "media", media
        return None, []

    def of_video(self, video_id: str) -> list[Delivery]:
        return self._newest(Delivery.video_id == video_id)

    def _newest(self, *where: Any) -> list[Delivery]:
        return list(
            self._session.scalars(
                select(Delivery).where(or_(*where)).order_by(Delivery.at.desc()).limit(MAX_MATCHES)
            )
        )
