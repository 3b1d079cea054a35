"""Testers: ``drawbridge testers ...``."""

from __future__ import annotations

import click

from gateway.cli.base import admin, cli_actor, domain_errors, emit, main, pretty, table, transaction
from gateway.presenters import tester_view
from keys.limits.cohorts import DEFAULT_COHORT


@main.group()
def testers() -> None:
    """Testers."""


@testers.command("add")
@click.argument("name")
@click.option("--email", required=True)
@click.option("--cohort", default=DEFAULT_COHORT, show_default=True)
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
