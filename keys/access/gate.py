"""The hot path's one read: everything a tester request needs from storage.

One statement returns the key, its tester, the policy in force, the kill switch and, when
the request names a video, that video's owner and backend id. It runs as a ``PreparedRead``
(``keys.db``): compiled once, on a pooled connection, in autocommit (a single statement reads
a consistent snapshot on its own). This runs on every request, and a session's or even a
``Connection``'s bookkeeping costs several times the query. A row found is reused until
the database signals a change (``keys/commit_stamp.py`` on a SQLite file,
``keys/commit_notices.py`` on PostgreSQL), at most ``keys.db.REUSE_SECONDS``; "not found",
and a key found without the video the request names, are always read again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import bindparam

from keys.access.digests import SecretDigester
from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import VERIFY_STATEMENT, Principal, principal_of
from keys.db import Database, PreparedRead
from keys.errors import InvalidKey
from keys.models import Video

_VIDEO_COLUMNS = {
    "video_id": Video.id,
    "video_tester_id": Video.tester_id,
    "video_upstream_id": Video.upstream_id,
    "video_status": Video.status,
    "video_snapshot": Video.snapshot,
    "video_seconds": Video.video_seconds,
    "video_deleted_at": Video.deleted_at,
}
CHECK_STATEMENT = VERIFY_STATEMENT.add_columns(
    *(column.label(label) for label, column in _VIDEO_COLUMNS.items())
).outerjoin(Video, Video.id == bindparam("video_id"))


@dataclass(frozen=True)
class VideoRef:
    """What the proxy needs to know about a video named in a request."""

    id: str
    tester_id: str
    upstream_id: str | None
    status: str
    snapshot: Mapping[str, Any]
    """The video as last answered to the tester; read-only (the hot read's row may be shared
    with other requests: ``dict(snapshot)`` for a copy to change)."""
    video_seconds: int
    deleted_at: datetime | None

    def visible_to(self, tester_id: str) -> bool:
        return self.tester_id == tester_id and self.deleted_at is None


def hot_read(database: Database) -> PreparedRead:
    """The check as a ``PreparedRead`` of ``database``: a row found is reused until a commit,
    except one that lacks the video the request names."""
    return database.prepared(CHECK_STATEMENT, reuse_until_commit=True, found_only=("video_id",))


def check_key(
    database: Database,
    secret: str,
    digester: SecretDigester,
    key_format: KeyFormat,
    now: datetime,
    video_id: str | None = None,
) -> tuple[Principal, VideoRef | None]:
    """Verify a secret and look up the video the request names, in one statement.

    Raises what ``keys.access.lifecycle.verify_secret`` raises; a malformed secret never reaches
    the database.
    """
    if not key_format.is_well_formed(secret):
        raise InvalidKey("Malformed API key.")
    digest = digester.digest(secret)
    row = hot_read(database).first(digest=digest, video_id=video_id)
    principal = principal_of(row, digest, now)
    video = None
    if row is not None and row.video_id is not None:
        video = VideoRef(
            row.video_id,
            row.video_tester_id,
            row.video_upstream_id,
            row.video_status,
            MappingProxyType(row.video_snapshot),
            row.video_seconds,
            row.video_deleted_at,
        )
    return principal, video
