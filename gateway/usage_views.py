"""Usage data as JSON objects, CSV and JSON Lines: shared by the auditor API and the CLI.

CSV cells that a spreadsheet would run as a formula (a user agent starting with ``=``) are
prefixed with ``'``: the user agent and the path come from clients.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from gateway.presenters import iso
from keys.usage_reports import EVENT_COLUMNS, DailyRow, KeyReport

FORMATS = ("csv", "jsonl")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
_CHUNK_CHARS = 64 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_AT = EVENT_COLUMNS.index("at")
# Text a client chose (ids and codes are the gateway's own; client_ip is parsed on the way in).
_CLIENT_TEXT = [EVENT_COLUMNS.index(name) for name in ("route", "video_id", "user_agent")]


def event_view(event: Mapping[Any, Any]) -> dict[str, Any]:
    """One usage event (a row of ``usage_events``) as JSON."""
    view = {name: event[name] for name in EVENT_COLUMNS}
    view["at"] = iso(event["at"])
    return view


def daily_view(row: DailyRow) -> dict[str, Any]:
    return {
        "day": row.day.isoformat(),
        "tester_id": row.tester_id,
        "requests": row.requests,
        "generations": row.generations,
        "video_seconds": row.video_seconds,
        "rejections": row.rejections,
        "failures": row.failures,
        "approvals_approved": row.approvals_approved,
        "approvals_rejected": row.approvals_rejected,
    }


def key_report_view(report: KeyReport) -> dict[str, Any]:
    """A blast-radius report as JSON (times in ISO 8601)."""

    def times(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                name: iso(value) if name.endswith(("_seen", "_at")) else value
                for name, value in item.items()
            }
            for item in items
        ]

    view = asdict(report)
    view.update(
        object="key.report",
        since=iso(report.since),
        until=iso(report.until),
        first_seen=iso(report.first_seen),
        last_seen=iso(report.last_seen),
        revoked_at=iso(report.revoked_at),
        client_ips=times(report.client_ips),
        user_agents=times(report.user_agents),
        videos=times(report.videos),
        refused_after_revocation_ips=times(report.refused_after_revocation_ips),
    )
    return view


def _csv_row(event: Mapping[Any, Any]) -> list[Any]:
    row = [event[name] for name in EVENT_COLUMNS]
    row[_AT] = iso(row[_AT])
    for index in _CLIENT_TEXT:
        value = row[index]
        if value is not None and value.startswith(_FORMULA_START):
            row[index] = "'" + value
    return row


def csv_chunks(events: Iterable[Mapping[Any, Any]]) -> Iterator[str]:
    """A header line, then one line per event, in chunks of about 64 KiB."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    for event in events:
        writer.writerow(_csv_row(event))
        if buffer.tell() >= _CHUNK_CHARS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_chunks(events: Iterable[Mapping[Any, Any]]) -> Iterator[str]:
    """One JSON object per line, in chunks of about 64 KiB."""
    lines: list[str] = []
    size = 0
    for event in events:
        line = json.dumps(event_view(event), separators=(",", ":")) + "\n"
        lines.append(line)
        size += len(line)
        if size >= _CHUNK_CHARS:
            yield "".join(lines)
            lines, size = [], 0
    yield "".join(lines)


def export_chunks(events: Iterable[Mapping[Any, Any]], format: str) -> Iterator[str]:
    return csv_chunks(events) if format == "csv" else jsonl_chunks(events)
