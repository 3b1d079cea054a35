"""Testers and admin tokens."""

from __future__ import annotations

import click

from gateway.cli.base import (
    admin,
    cli_actor,
    domain_errors,
    emit,
    main,
    pretty,
    table,
    transaction,
)
from gateway.presenters import tester_view, token_view
from keys.durations import parse_duration

# -- tokens ----------------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """Admin, approver and auditor tokens."""


@tokens.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["admin", "approver", "auditor"]), required=True)
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


# -- testers ---------------------------------------------------------------------------


@main.group()
def testers() -> None:
    """Testers."""


@testers.command("add")
@click.argument("name")
@click.option("--email", required=True)
@click.option("--cohort", default="default", show_default=True)
@click.option(
    "--create-cohort",
    is_flag=True,
    help="Create the cohort (with the default policy) if it does not exist yet.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def testers_add(
    ctx: click.Context, name: str, email: str, cohort: str, create_cohort: bool, as_json: bool
) -> None:
    """Add a tester (to an existing cohort, unless --create-cohort)."""
    with domain_errors(), transaction(ctx) as tx:
        tester = tx.testers.add(
            name, email, cli_actor(), cohort=cohort, create_cohort=create_cohort
        )
        view = tester_view(tester)
    emit(view, as_json, pretty)


@testers.command("list")
@click.option("--cohort", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def testers_list(ctx: click.Context, cohort: str | None, as_json: bool) -> None:
    """List testers."""
    with domain_errors():
        rows = admin(ctx).list_testers(cohort)
    emit(rows, as_json, lambda r: table(r, ["id", "name", "email", "cohort", "status"]))
