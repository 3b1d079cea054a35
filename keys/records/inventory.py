"""Counts of what the program holds, for gauges read at scrape time."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keys.models import ApiKey


def key_counts(session: Session) -> dict[str, int]:
    """Tester keys by stored status (``revoked``, ``suspended``, ``rotated``, ``active``)."""
    rows = session.execute(select(ApiKey.status, func.count()).group_by(ApiKey.status))
    return {str(status): int(count) for status, count in rows}
