"""Admin, approver and auditor tokens: ``drawbridge tokens ...``."""

from __future__ import annotations

import click

from gateway.cli.base import cli_actor, domain_errors, emit, main, pretty, table, transaction
from gateway.presenters import token_view
from keys.access.roles import ROLES
from keys.durations import parse_duration


@main.group()
def tokens() -> None:
    """Admin, approver and auditor tokens."""


@tokens.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--expires-in", default=None, help="e.g. 30d")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokens_create(
    ctx: click.Context, name: str, role: str, expires_in: str | None, as_json: bool
) -> None:
    """Create a token; its secret is printed once."""
    with domain_errors(), transaction(ctx) as tx:
        expires_at = tx.clock() + parse_duration(expires_in, "expires_in") if expires_in else None
        issued = tx.tokens.create(name, role, cli_actor(), expires_at=expires_at)
        view = {**token_view(issued.token), "secret": issued.secret}
    emit(view, as_json, lambda v: f"{pretty(v)}\n\nThe secret is shown once; store it now.")


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        rows = [token_view(token) for token in tx.tokens.list()]
    emit(rows, as_json, lambda r: table(r, ["id", "name", "role", "hint", "revoked_at"]))


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--reason", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: str, reason: str, as_json: bool) -> None:
    """Revoke a token."""
    with domain_errors(), transaction(ctx) as tx:
        view = token_view(tx.tokens.revoke(token_id, cli_actor(), reason))
    emit(view, as_json, lambda v: f"revoked {v['id']}")
