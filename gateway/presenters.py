"""How things look outside: JSON views of domain objects, and usage data as JSON, CSV and
JSON Lines. Shared by the admin and auditor APIs, the console and the CLI. Secrets have no
field here to appear in.

CSV cells that a spreadsheet would run as a formula (a user agent starting with ``=``) are
prefixed with ``'``: the user agent and the path come from clients.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from keys.access.lifecycle import effective_status
from keys.models import AdminToken, ApiKey, Approval, ProgramState, ProofKey, Tester
from keys.records.usage_reports import EVENT_COLUMNS, DailyRow, KeyReport

FORMATS = ("csv", "jsonl")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
_CHUNK_CHARS = 64 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_AT = EVENT_COLUMNS.index("at")
# Text a client chose (ids and codes are the gateway's own; client_ip is parsed on the way in).
_CLIENT_TEXT = [EVENT_COLUMNS.index(name) for name in ("route", "video_id", "user_agent")]


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def key_view(key: ApiKey, now: datetime) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "tester_id": key.tester_id,
        "hint": key.hint,
        "status": effective_status(key, now),
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "metadata": key.key_metadata,
        "rotated_from": key.rotated_from_id,
        "replaced_by": key.replaced_by_id,
        "grace_until": iso(key.grace_until),
        "suspended": (
            {"at": iso(key.suspended_at), "by": key.suspended_by, "reason": key.suspended_reason}
            if key.status == "suspended"
            else None
        ),
        "revoked": (
            {"at": iso(key.revoked_at), "by": key.revoked_by, "reason": key.revoked_reason}
            if key.status == "revoked"
            else None
        ),
    }


def rotation_view(old: ApiKey, new: ApiKey, secret: str, now: datetime) -> dict[str, Any]:
    """A rotation's result: the successor (with its secret, shown once) and when the old
    key's grace ends."""
    return {
        **key_view(new, now),
        "secret": secret,
        "rotated_from_grace_until": iso(old.grace_until),
    }


def tester_view(tester: Tester) -> dict[str, Any]:
    return {
        "id": tester.id,
        "object": "tester",
        "name": tester.name,
        "email": tester.email,
        "cohort": tester.cohort,
        "status": tester.status,
        "created_at": iso(tester.created_at),
        "created_by": tester.created_by,
    }


def token_view(token: AdminToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "object": "admin_token",
        "name": token.name,
        "role": token.role,
        "hint": token.hint,
        "created_at": iso(token.created_at),
        "created_by": token.created_by,
        "expires_at": iso(token.expires_at),
        "revoked_at": iso(token.revoked_at),
    }


def approval_view(approval: Approval, *, for_tester: bool = False) -> dict[str, Any]:
    """A held request. Testers see the reason it was held and the decision with its reason;
    approvers also see who asked and what."""
    view: dict[str, Any] = {
        "id": approval.id,
        "object": "approval",
        "kind": approval.kind,
        "status": approval.status,
        "video_id": approval.video_id,
        "held_because": approval.held_because,
        "created_at": iso(approval.created_at),
        "decided_at": iso(approval.decided_at),
        "decision_reason": approval.decision_reason,
        "expires_at": iso(approval.expires_at),
    }
    if not for_tester:
        view.update(
            tester_id=approval.tester_id,
            key_id=approval.key_id,
            request=approval.request,
            decided_by=approval.decided_by,
        )
    return view


def lockdown_view(state: ProgramState) -> dict[str, Any]:
    return {
        "object": "lockdown",
        "lockdown": bool(state.lockdown),
        "reason": state.lockdown_reason,
        "changed_by": state.lockdown_by,
        "changed_at": iso(state.lockdown_at),
    }


# -- usage reports and exports --------------------------------------------------------


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
        refused_proof_ips=times(report.refused_proof_ips),
        refusals_by_day=[
            {**row, "day": row["day"].isoformat()} for row in times(report.refusals_by_day)
        ],
    )
    return view


def refusal_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One day's count of refusals before admission (usage_refusals) as JSON."""
    return {
        "object": "usage.refusals",
        "day": row["day"].isoformat(),
        "key_id": row["key_id"],
        "error_code": row["error_code"],
        "status": row["status"],
        "requests": row["requests"],
        "first_seen": iso(row["first_seen"]),
        "last_seen": iso(row["last_seen"]),
    }


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


def proof_key_view(row: ProofKey) -> dict[str, Any]:
    """A binding as the API shows it: the public key and its thumbprint, never a secret."""
    return {
        "object": "proof_key",
        "id": row.id,
        "key_id": row.key_id,
        "tester_id": row.tester_id,
        "algorithm": row.algorithm,
        "thumbprint": row.thumbprint,
        "public_key": row.public_key,
        "created_at": iso(row.created_at),
        "created_by": row.created_by,
        "removed_at": iso(row.removed_at),
        "removed_by": row.removed_by,
    }
