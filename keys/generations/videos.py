"""Ownership of upstream videos.

Upstream, every object belongs to the one master credential. The ledger is what makes a video
one tester's: a video that is not in the caller's ledger does not exist for the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from keys.errors import InvalidInput, NotFound
from keys.models import Video

TERMINAL_STATUSES = frozenset({"completed", "failed"})
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class VideoPage:
    videos: list[Video]
    has_more: bool


class VideoLedger:
    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    def record(
        self,
        video_id: str,
        tester_id: str,
        key_id: str,
        snapshot: dict[str, Any],
        *,
        upstream_id: str | None = "",
        video_seconds: int = 0,
        quota_periods: dict[str, str] | None = None,
        quota_state: str = "none",
    ) -> Video:
        """Make a video the tester's. ``upstream_id`` defaults to ``video_id``; None means
        the video is held and has no upstream counterpart yet."""
        video = Video(
            id=video_id,
            tester_id=tester_id,
            key_id=key_id,
            created_at=self._clock(),
            created_seq=time.time_ns(),
            status=str(snapshot.get("status", "queued")),
            snapshot=snapshot,
            upstream_id=video_id if upstream_id == "" else upstream_id,
            video_seconds=video_seconds,
            quota_periods=quota_periods or {},
            quota_state=quota_state,
        )
        self._session.add(video)
        self._session.flush()
        return video

    def owned(self, video_id: str, tester_id: str) -> Video:
        """The caller's live video. Raises NotFound for anyone else's, or a deleted one."""
        video = self._session.get(Video, video_id)
        if video is None or video.tester_id != tester_id or video.deleted_at is not None:
            raise NotFound(f"No video found with id '{video_id}'.")
        return video

    def upstream_id(self, video_id: str, tester_id: str) -> str | None:
        """The backend's id of the caller's live video (None while it is held).

        Raises NotFound for anyone else's video, or a deleted one. One indexed read: this is
        on the proxy's hot path.
        """
        row = self._session.execute(
            select(Video.tester_id, Video.upstream_id).where(
                Video.id == video_id, Video.deleted_at.is_(None)
            )
        ).first()
        if row is None or row.tester_id != tester_id:
            raise NotFound(f"No video found with id '{video_id}'.")
        upstream_id: str | None = row.upstream_id
        return upstream_id

    def running(self, tester_id: str, limit: int = 20) -> list[Video]:
        """The tester's videos still holding a job slot that the backend is working on."""
        return list(
            self._session.scalars(
                select(Video)
                .where(
                    Video.tester_id == tester_id,
                    Video.quota_state == "reserved",
                    Video.upstream_id.is_not(None),
                    Video.deleted_at.is_(None),
                )
                .order_by(Video.created_seq)
                .limit(limit)
            )
        )

    def mark_deleted(self, video_id: str) -> None:
        self._session.execute(
            update(Video).where(Video.id == video_id).values(deleted_at=self._clock())
        )

    def page(
        self, tester_id: str, after: str | None = None, limit: int = 20, order: str = "desc"
    ) -> VideoPage:
        """One keyset page of the tester's videos. Raises InvalidInput."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}", param="limit")
        if order not in ("asc", "desc"):
            raise InvalidInput("order must be 'asc' or 'desc'", param="order")
        query = select(Video).where(Video.tester_id == tester_id, Video.deleted_at.is_(None))
        if after is not None:
            cursor = self._session.get(Video, after)
            if cursor is None or cursor.tester_id != tester_id:
                raise InvalidInput(f"No video found with id '{after}'.", param="after")
            seq, vid = cursor.created_seq, cursor.id
            if order == "desc":
                query = query.where(
                    or_(Video.created_seq < seq, and_(Video.created_seq == seq, Video.id < vid))
                )
            else:
                query = query.where(
                    or_(Video.created_seq > seq, and_(Video.created_seq == seq, Video.id > vid))
                )
        if order == "desc":
            query = query.order_by(Video.created_seq.desc(), Video.id.desc())
        else:
            query = query.order_by(Video.created_seq, Video.id)
        rows = list(self._session.scalars(query.limit(limit + 1)))
        return VideoPage(rows[:limit], has_more=len(rows) > limit)
