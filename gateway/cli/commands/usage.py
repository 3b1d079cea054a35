"""Usage events: ``drawbridge usage report|export|prune``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import IO

import click

from gateway.cli.base import (
    Context,
    admin,
    cli_actor,
    domain_errors,
    emit,
    json_option,
    main,
    plural,
    table,
)
from gateway.cli.progress import Progress, progress_option
from gateway.presenters import FORMATS
from keys.durations import describe, parse_duration
from keys.errors import InvalidInput
from keys.records.usage_reports import PRUNE_BATCH


@main.group("usage")
def usage_group() -> None:
    """Usage events: daily report, export, retention."""


@usage_group.command("report")
@click.option(
    "--since",
    default=None,
    help="First UTC day: a date, an ISO 8601 time or a span ago (7d) (default: 29 days ago)",
)
@click.option("--until", default=None, help="Last UTC day, inclusive; same forms (default: today)")
@click.option("--tester", "tester_id", default=None)
@click.option("--cohort", default=None)
@json_option
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
    with domain_errors():
        rows = admin(ctx).daily_usage(since, until, tester_id, cohort)
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
@progress_option
@json_option
@click.pass_context
def usage_export(
    ctx: click.Context,
    /,
    format: str,
    output: str,
    progress: bool | None,
    as_json: bool,
    **filters: str | None,
) -> None:
    """Stream usage events as CSV or JSON Lines, oldest first (memory stays flat).

    With --json and --output FILE, a summary of the export is printed as JSON."""
    if as_json and output == "-":
        raise click.UsageError("--json needs --output FILE: standard output is the export")
    meter = Progress(progress)
    with domain_errors():
        chunks = admin(ctx).export_usage(filters, format)
        if output == "-":
            events = _write(sys.stdout, chunks, format, meter)
        else:
            with open(output, "w", encoding="utf-8", newline="") as stream:
                events = _write(stream, chunks, format, meter)
    meter.update(f"exported {plural(events, 'event')}", final=True)
    if output != "-":
        summary = {"events": events, "output": output, "format": format}
        emit(summary, as_json, lambda s: f"exported {plural(events, 'event')} to {output}")


def _write(stream: IO[str], chunks: Iterator[str], format: str, meter: Progress) -> int:
    """Write the export; returns how many events it holds."""
    lines = 0
    for chunk in chunks:
        stream.write(chunk)
        lines += chunk.count("\n")
        meter.update(f"exported {plural(max(lines - (format == 'csv'), 0), 'event')} so far")
    stream.flush()
    # A CSV export starts with its header line.
    return max(lines - 1, 0) if format == "csv" else lines


@usage_group.command("prune")
@click.option(
    "--older-than",
    "older_than",
    default=None,
    help="A duration with its unit, e.g. 400d (default: the usage_retention_days setting)",
)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=PRUNE_BATCH)
@click.option("--dry-run", is_flag=True, help="Only count what would go")
@progress_option
@json_option
@click.pass_context
def usage_prune(
    ctx: click.Context,
    older_than: str | None,
    batch_size: int,
    dry_run: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
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
                count = tx.usage_reports.count_before(before)
            emit(
                {"would_delete": count, "before": before.isoformat()},
                as_json,
                lambda _: f"would delete {plural(count, 'usage event')}",
            )
            return
        meter = Progress(progress)
        deleted = 0
        while True:
            # One transaction per batch: writers never wait long for the lock.
            with store.transaction() as tx:
                done = tx.usage_reports.prune_batch(before, batch_size)
            deleted += done
            meter.update(f"deleted {plural(deleted, 'usage event')} so far")
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
    emit(
        {"deleted": deleted, "before": before.isoformat()},
        as_json,
        lambda _: f"deleted {plural(deleted, 'usage event')} older than {before.isoformat()}",
    )
