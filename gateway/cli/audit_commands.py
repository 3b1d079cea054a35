"""The audit trail."""

from __future__ import annotations

import click

from gateway.cli.base import (
    domain_errors,
    main,
    transaction,
)

# -- audit -----------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Check the hash chain; exit 1 at the first bad entry."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        result = tx.audit.verify()
    if result.ok:
        click.echo(f"OK: {result.entries} entries verified")
    else:
        raise click.ClickException(
            f"audit trail broken at seq {result.first_bad_seq}: {result.problem}"
        )
