"""What auditors read: usage by tester and day (a chart, filters, CSV / JSON Lines export)
the audit trail with its verification status, and identifying a video file."""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, BinaryIO, cast

from flask import Response, request

from gateway.console.access import console_operator, for_roles, render
from gateway.console.blueprint import bp
from gateway.http.current import current_state
from gateway.presenters import CONTENT_TYPES, FORMATS, export_chunks
from gateway.services.provenance import identify_file
from keys.access.roles import RECORD_READERS
from keys.errors import InvalidInput
from keys.records.usage_reports import DailyRow, UsageFilter
from keys.store import Store

DAILY_FILTERS = ("since", "until", "tester_id", "cohort")
AUDIT_PAGE = 100


@dataclass(frozen=True)
class DayBar:
    """One day of the chart: requests, of which refused or failed."""

    day: date
    requests: int
    problems: int


def _filters() -> dict[str, str]:
    return {
        name: value.strip()
        for name in DAILY_FILTERS
        if (value := request.args.get(name)) and value.strip()
    }


def _bars(rows: list[DailyRow], first: date, last: date) -> list[DayBar]:
    requests: dict[date, int] = defaultdict(int)
    problems: dict[date, int] = defaultdict(int)
    for row in rows:
        requests[row.day] += row.requests
        problems[row.day] += row.rejections + row.failures
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [DayBar(day, requests[day], problems[day]) for day in days]


@bp.get("/usage")
@for_roles(*RECORD_READERS)
def usage() -> str:
    filters = _filters()
    with current_state().store.read() as tx:
        reports = tx.usage_reports
        first, last = reports.daily_range(filters.get("since"), filters.get("until"))
        rows = reports.daily(first, last, filters.get("tester_id"), filters.get("cohort"))
    rows = [row for row in rows if row.requests or row.approvals_approved or row.approvals_rejected]
    bars = _bars(rows, first, last)
    return render(
        "usage.html",
        filters=filters,
        since=first,
        until=last,
        rows=sorted(rows, key=lambda r: (r.day, r.tester_id or ""), reverse=True),
        bars=bars,
        peak=max([bar.requests for bar in bars] + [1]),
    )


def _export(store: Store, usage_filter: UsageFilter, format: str) -> Iterator[str]:
    # The read transaction lives as long as the response streams (as on the auditor API).
    with store.read() as tx:
        yield from export_chunks(tx.usage_reports.stream(usage_filter, None), format)


@bp.get("/usage/export")
@for_roles(*RECORD_READERS)
def export_usage() -> Response:
    """The events behind the report, with the page's filters (days are whole UTC days)."""
    format = request.args.get("format", "csv")
    if format not in FORMATS:
        raise InvalidInput("format must be csv or jsonl", param="format")
    filters = _filters()
    store = current_state().store
    now = store.clock()
    with store.read() as tx:
        first, last = tx.usage_reports.daily_range(filters.get("since"), filters.get("until"))
    usage_filter = UsageFilter.parse(
        {
            "tester_id": filters.get("tester_id"),
            "cohort": filters.get("cohort"),
            "since": first.isoformat(),
            "until": (last + timedelta(days=1)).isoformat(),
        },
        now,
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return Response(
        _export(store, usage_filter, format),
        content_type=CONTENT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="usage-{stamp}.{format}"'},
    )


@bp.get("/audit")
@for_roles(*RECORD_READERS)
def audit() -> str:
    return _audit_page()


def _audit_page(identification: dict[str, Any] | None = None) -> str:
    with current_state().store.read() as tx:
        verification = tx.audit.verify()
        entries = tx.audit.latest(AUDIT_PAGE)
    return render(
        "audit.html", verification=verification, entries=entries, identification=identification
    )


@bp.post("/audit/identify")
@for_roles(*RECORD_READERS)
def identify_video() -> str:
    """Whose an uploaded video is (the same lookup as the API's, audited alike). The form's
    file is bounded by max_request_bytes (the console reads the form before any view)."""
    part = request.files.get("file")
    if part is None or not part.filename:
        raise InvalidInput("choose a video file to identify", param="file")
    state = current_state()
    with tempfile.SpooledTemporaryFile(
        max_size=state.settings.provenance_spool_memory_bytes, mode="w+b"
    ) as upload:
        shutil.copyfileobj(part.stream, upload, 256 * 1024)
        upload.seek(0)
        found = identify_file(state.store, cast(BinaryIO, upload), console_operator().actor)
    return _audit_page(found.as_json())
