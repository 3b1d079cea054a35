"""The database schema: ``drawbridge db upgrade``."""

from __future__ import annotations

import click

from gateway.cli.base import Context, domain_errors, emit, main
from keys.db import Database
from keys.migrate import display_url, upgrade


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_upgrade(ctx: click.Context, as_json: bool) -> None:
    """Migrate the configured database to the current schema (creates a SQLite file)."""
    context: Context = ctx.obj
    with domain_errors():
        url = context.settings.database_url
        # Not context.store: that refuses a database that is not migrated yet.
        database = Database(url)
        try:
            done = upgrade(database.engine)
        finally:
            database.dispose()
    shown = display_url(url)
    emit(
        {"database": shown, "before": done.before, "after": done.after, "changed": done.changed},
        as_json,
        lambda _: (
            f"migrated {shown} from {done.before or 'empty'} to {done.after}"
            if done.changed
            else f"{shown} is already at {done.after}"
        ),
    )
