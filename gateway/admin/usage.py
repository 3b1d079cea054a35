"""The auditor plane for usage: ``/admin/v1/usage`` (admins and auditors, read-only).

Events filtered and paged by keyset, per-tester daily totals, and streamed CSV / JSON Lines
exports. Every query parameter is checked (gateway/admin/plane.py): an unknown or repeated
one is a 400, so a typo (``?tester=``) never silently widens a report to everyone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Response, jsonify

from gateway.admin.plane import admin_blueprint, query_values
from gateway.http.auth import require_role
from gateway.http.current import current_state
from gateway.http.errors import ApiError
from gateway.presenters import (
    CONTENT_TYPES,
    FORMATS,
    daily_view,
    event_view,
    export_chunks,
    refusal_view,
)
from keys.access.roles import RECORD_READERS
from keys.records.usage_reports import DEFAULT_PAGE, MAX_PAGE, UsageFilter
from keys.store import Store

bp = admin_blueprint("usage", __name__, "/admin/v1/usage")


def _integer(params: dict[str, str], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, f"{name} must be a non-negative integer", "invalid_value", param=name)
    return int(value)


def time_window(params: dict[str, str], now: datetime) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` (ISO 8601, a date, or a span ago such as 24h). Raises
    InvalidInput (400) for malformed or backwards values."""
    window = UsageFilter.parse({"since": params.get("since"), "until": params.get("until")}, now)
    return window.since, window.until


@bp.get("")
@require_role(*RECORD_READERS)
def list_usage() -> Response:
    """``?tester_id&key_id&cohort&route&status&outcome&since&until&after&limit``."""
    params = query_values()
    limit = _integer(params, "limit", DEFAULT_PAGE)
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise ApiError(
            400, f"limit must be between 1 and {MAX_PAGE}", "invalid_value", param="limit"
        )
    after = _integer(params, "after", None)
    store = current_state().store
    usage_filter = UsageFilter.parse(params, store.clock())
    with store.read() as tx:
        events, has_more = tx.usage_reports.page(usage_filter, after, limit)
    return jsonify(
        {
            "object": "list",
            "data": [event_view(event) for event in events],
            "has_more": has_more,
            "next_after": events[-1]["id"] if has_more else None,
        }
    )


@bp.get("/daily")
@require_role(*RECORD_READERS)
def daily_usage() -> Response:
    """``?since=YYYY-MM-DD&until=YYYY-MM-DD&tester_id&cohort`` (UTC days, inclusive)."""
    params = query_values()
    with current_state().store.read() as tx:
        reports = tx.usage_reports
        first, last = reports.daily_range(params.get("since"), params.get("until"))
        rows = reports.daily(first, last, params.get("tester_id"), params.get("cohort"))
    return jsonify(
        {
            "object": "list",
            "since": first.isoformat(),
            "until": last.isoformat(),
            "data": [daily_view(row) for row in rows],
        }
    )


@bp.get("/refusals")
@require_role(*RECORD_READERS)
def refusal_counts() -> Response:
    """``?since&until&key_id`` (UTC days, inclusive, in the forms of ``/usage/daily``):
    refusals before admission, counted per UTC day, key, error code and status (they are
    not events; docs/usage.md)."""
    params = query_values()
    with current_state().store.read() as tx:
        reports = tx.usage_reports
        first, last = reports.daily_range(params.get("since"), params.get("until"))
        rows = reports.refusals(first, last, params.get("key_id"))
    return jsonify(
        {
            "object": "list",
            "since": first.isoformat(),
            "until": last.isoformat(),
            "data": [refusal_view(row) for row in rows],
        }
    )


def _export(
    store: Store, usage_filter: UsageFilter, after: int | None, format: str
) -> Iterator[str]:
    # The read transaction lives as long as the response streams, and ends (rolled back)
    # when the client goes away and the server closes this generator.
    with store.read() as tx:
        yield from export_chunks(tx.usage_reports.stream(usage_filter, after), format)


@bp.get("/export")
@require_role(*RECORD_READERS)
def export_usage() -> Response:
    """``?format=csv|jsonl`` and the filters of ``GET /usage``; streamed, memory stays flat."""
    params = query_values()
    format = params.get("format", "csv")
    if format not in FORMATS:
        raise ApiError(400, "format must be csv or jsonl", "invalid_value", param="format")
    after = _integer(params, "after", None)
    store = current_state().store
    now = store.clock()
    usage_filter = UsageFilter.parse(params, now)
    with store.read() as tx:
        tx.usage_reports.page(usage_filter, after, 1)  # a bad cursor is a 400, not a cut stream
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    headers: dict[str, Any] = {
        "Content-Disposition": f'attachment; filename="usage-{stamp}.{format}"',
        "Cache-Control": "no-store",
    }
    return Response(
        _export(store, usage_filter, after, format),
        content_type=CONTENT_TYPES[format],
        headers=headers,
    )


__all__ = ["bp", "time_window"]
