"""Approvers' decisions on held generations, share requests and downloads."""

from __future__ import annotations

import uuid

import click

from gateway.approvals_api import decide
from gateway.cli.base import (
    Context,
    cli_actor,
    domain_errors,
    emit,
    main,
    pretty,
    table,
    transaction,
)
from gateway.views import approval_view


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
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def approvals_list(
    ctx: click.Context, status: str, kind: str | None, tester_id: str | None, as_json: bool
) -> None:
    """List requests, oldest first."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        rows = [approval_view(a) for a in tx.approvals.list(status, kind, tester_id, limit=500)]
    emit(
        rows,
        as_json,
        lambda r: table(r, ["id", "kind", "status", "tester_id", "video_id", "held_because"]),
    )


def _decide(
    ctx: click.Context, approval_id: str, approve: bool, reason: str | None, as_json: bool
) -> None:
    context: Context = ctx.obj
    with domain_errors():
        view = decide(
            context.gateway_state(),
            approval_id,
            approve,
            cli_actor(),
            reason,
            f"req_cli_{uuid.uuid4().hex}",
        )
    emit(view, as_json, pretty)


@approvals.command("approve")
@click.argument("approval_id")
@click.option("--reason", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def approvals_approve(
    ctx: click.Context, approval_id: str, reason: str | None, as_json: bool
) -> None:
    """Approve; a held generation is submitted to the backend at once."""
    _decide(ctx, approval_id, True, reason, as_json)


@approvals.command("reject")
@click.argument("approval_id")
@click.option("--reason", required=True, help="The tester sees it")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def approvals_reject(ctx: click.Context, approval_id: str, reason: str, as_json: bool) -> None:
    """Reject with a reason."""
    _decide(ctx, approval_id, False, reason, as_json)
