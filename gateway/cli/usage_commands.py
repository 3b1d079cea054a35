"""Usage: daily report, export, retention; and a key's blast-radius report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import IO, Any

import click

from gateway.cli.base import Context, cli_actor, domain_errors, emit, main, table, transaction
from gateway.cli.key_commands import keys_group
from gateway.usage_views import FORMATS, daily_view, export_chunks, key_report_view
from keys.durations import describe, parse_duration
from keys.errors import InvalidInput
from keys.usage_reports import PRUNE_BATCH, UsageFilter, parse_time


@main.group("usage")
def usage_group() -> None:
    """Usage events: daily report, export, retention."""


@usage_group.command("report")
@click.option("--since", default=None, help="First UTC day, YYYY-MM-DD (default: 29 days ago)")
@click.option("--until", default=None, help="Last UTC day, inclusive (default: today)")
@click.option("--tester", "tester_id", default=None)
@click.option("--cohort", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def usage_report(
    ctx: click.Context,
    since: str | None,
    until: str | None,
    tester_id: str | None,
    cohort: str | None,
    as_json: bool,
) -> None:
    """Per-tester totals per day: requests, generations, video-seconds, rejections, failures,
    approvers' decisions."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        first, last = tx.usage_reports.daily_range(since, until)
        rows = [daily_view(row) for row in tx.usage_reports.daily(first, last, tester_id, cohort)]
    columns = [
        "day",
        "tester_id",
        "requests",
        "generations",
        "video_seconds",
        "rejections",
        "failures",
        "approvals_approved",
        "approvals_rejected",
    ]
    emit(rows, as_json, lambda r: table(r, columns))


_FILTER_OPTIONS = [
    click.option("--tester", "tester_id", default=None),
    click.option("--key", "key_id", default=None),
    click.option("--cohort", default=None),
    click.option("--route", default=None, help="e.g. /v1/videos"),
    click.option("--status", default=None, help="e.g. 429 or 4xx"),
    click.option("--outcome", default=None),
    click.option("--since", default=None, help="ISO 8601 time, date, or a span ago (24h, 7d)"),
    click.option("--until", default=None, help="Exclusive; same forms as --since"),
]


def _with_filters(function: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_FILTER_OPTIONS):
        function = option(function)
    return function


@usage_group.command("export")
@click.option("--format", "format", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File to write (default: standard output)",
)
@_with_filters
@click.pass_context
def usage_export(ctx: click.Context, /, format: str, output: str, **filters: str | None) -> None:
    """Stream usage events as CSV or JSON Lines, oldest first (memory stays flat)."""
    context: Context = ctx.obj
    with domain_errors():
        store = context.store
        usage_filter = UsageFilter.parse(filters, store.clock())
        with store.read() as tx:
            count = 0

            def counted(events: Iterator[Any]) -> Iterator[Any]:
                nonlocal count
                for event in events:
                    count += 1
                    yield event

            chunks = export_chunks(counted(tx.usage_reports.stream(usage_filter)), format)
            if output == "-":
                _write(sys.stdout, chunks)
            else:
                with open(output, "w", encoding="utf-8", newline="") as stream:
                    _write(stream, chunks)
    if output != "-":
        click.echo(f"exported {count} events to {output}", err=True)


def _write(stream: IO[str], chunks: Iterator[str]) -> None:
    for chunk in chunks:
        stream.write(chunk)
    stream.flush()


@usage_group.command("prune")
@click.option(
    "--older-than",
    "older_than",
    default=None,
    help="A duration with its unit, e.g. 400d (default: the usage_retention_days setting)",
)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=PRUNE_BATCH)
@click.option("--dry-run", is_flag=True, help="Only count what would go")
@click.pass_context
def usage_prune(ctx: click.Context, older_than: str | None, batch_size: int, dry_run: bool) -> None:
    """Delete usage events past the retention, in batches (the audit trail is never pruned;
    daily totals stay)."""
    context: Context = ctx.obj
    with domain_errors():
        keep = (
            parse_duration(older_than, "older_than", require_unit=True)
            if older_than is not None
            else timedelta(days=context.settings.usage_retention_days)
        )
        if keep <= timedelta(0):
            raise InvalidInput("older_than must be more than 0", param="older_than")
        store = context.store
        before = store.clock() - keep
        if dry_run:
            with store.read() as tx:
                click.echo(f"would delete {tx.usage_reports.count_before(before)} events")
            return
        deleted = 0
        while True:
            # One transaction per batch: writers never wait long for the lock.
            with store.transaction() as tx:
                done = tx.usage_reports.prune_batch(before, batch_size)
            deleted += done
            if done < batch_size:
                break
        if deleted:
            with store.transaction() as tx:
                tx.audit.append(
                    cli_actor(),
                    "usage.prune",
                    "usage_events",
                    f"retention {describe(keep)}",
                    details={"before": before.isoformat(), "deleted": deleted},
                )
    click.echo(f"deleted {deleted} usage events older than {before.isoformat()}")


@keys_group.command("report")
@click.argument("key_id")
@click.option("--since", default=None, help="ISO time, date, or span ago (default: key creation)")
@click.option("--until", default=None, help="Same forms (default: now)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_report(
    ctx: click.Context, key_id: str, since: str | None, until: str | None, as_json: bool
) -> None:
    """Blast radius: everything a key did since a time, for the incident write-up."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        now = tx.clock()
        start = parse_time(since, "since", now) if since else None
        end = parse_time(until, "until", now) if until else None
        view = key_report_view(tx.usage_reports.key_report(key_id, start, end))
    emit(view, as_json, _render_key_report)


def _render_key_report(view: dict[str, Any]) -> str:
    lines = [
        f"key {view['key_id']} (tester {view['tester_id']}) from {view['since']} "
        f"until {view['until']}",
        f"requests: {view['requests']} (first {view['first_seen'] or '-'}, "
        f"last {view['last_seen'] or '-'})",
        f"outcomes: {', '.join(f'{k} {v}' for k, v in view['outcomes'].items()) or '-'}",
        f"generations: {view['generations']}, video-seconds: {view['video_seconds']}, "
        f"videos created: {view['videos_created']}",
    ]
    if view["revoked_at"]:
        lines.append(
            f"revoked at {view['revoked_at']}; refused attempts since: "
            f"{view['refused_after_revocation']}"
        )
    sections = [
        ("requests by route", view["by_route"], ["route", "method", "status", "count"]),
        (
            f"client IPs ({view['distinct_client_ips']} distinct)",
            view["client_ips"],
            ["client_ip", "count", "first_seen", "last_seen"],
        ),
        (
            f"user agents ({view['distinct_user_agents']} distinct)",
            view["user_agents"],
            ["user_agent", "count", "first_seen", "last_seen"],
        ),
        ("videos", view["videos"], ["id", "created_at", "status", "video_seconds", "deleted_at"]),
    ]
    if view["revoked_at"]:
        sections.append(
            (
                "refused after revocation, by client IP",
                view["refused_after_revocation_ips"],
                ["client_ip", "count", "first_seen", "last_seen"],
            )
        )
    for title, rows, columns in sections:
        lines += ["", f"{title}:", table(rows, columns)]
    return "\n".join(lines)
