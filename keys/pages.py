"""Keyset pages of a listing ordered by ``(created_at, id)``: stable while rows are added."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from keys.errors import NotFound

T = TypeVar("T")


def keyset_page(
    session: Session,
    query: Select[T],
    model: Any,
    after: str | None,
    limit: int | None,
    what: str,
) -> tuple[list[T], bool]:
    """Rows of ``query`` after the row with id ``after`` (``limit`` at most; None: all), and
    whether more follow. Raises NotFound for an ``after`` that names no row."""
    if after is not None:
        anchor = session.execute(
            select(model.created_at).where(model.id == after)
        ).scalar_one_or_none()
        if anchor is None:
            raise NotFound(f"no {what} {after} to page after", param="after")
        query = query.where(tuple_(model.created_at, model.id) > tuple_(anchor, after))
    query = query.order_by(model.created_at, model.id)
    if limit is None:
        return list(session.scalars(query)), False
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
