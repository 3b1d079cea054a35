"""Approvers' decisions on held generations, share requests and downloads."""

from __future__ import annotations

import click

from gateway.cli.base import admin, domain_errors, emit, json_option, main, pretty, table


@main.group()
def approvals() -> None:
    """Held requests and their decisions."""


@approvals.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "rejected"]),
    default="pending",
    show_default=True,
)
@click.option("--kind", type=click.Choice(["generation", "share", "download"]), default=None)
@click.option("--tester", "tester_id", default=None)
@json_option
@click.pass_context
def approvals_list(
    ctx: click.Context, status: str, kind: str | None, tester_id: str | None, as_json: bool
) -> None:
    """List requests, oldest first."""
    with domain_errors():
        rows = admin(ctx).list_approvals(status, kind, tester_id)
    emit(
        rows,
        as_json,
        lambda r: table(r, ["id", "kind", "status", "tester_id", "video_id", "held_because"]),
    )


def _decide(
    ctx: click.Context, approval_id: str, approve: bool, reason: str | None, as_json: bool
) -> None:
    with domain_errors():
        view = admin(ctx).decide(approval_id, approve, reason)
    emit(view, as_json, pretty)


@approvals.command("approve")
@click.argument("approval_id")
@click.option("--reason", default=None)
@json_option
@click.pass_context
def approvals_approve(
    ctx: click.Context, approval_id: str, reason: str | None, as_json: bool
) -> None:
    """Approve; a held generation is submitted to the backend at once."""
    _decide(ctx, approval_id, True, reason, as_json)


@approvals.command("reject")
@click.argument("approval_id")
@click.option("--reason", required=True, help="The tester sees it")
@json_option
@click.pass_context
def approvals_reject(ctx: click.Context, approval_id: str, reason: str, as_json: bool) -> None:
    """Reject with a reason."""
    _decide(ctx, approval_id, False, reason, as_json)
