"""Database schema and server-side secrets."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from gateway.cli.base import (
    Context,
    domain_errors,
    main,
)
from gateway.settings import root_secret_of
from keys.db import Database
from keys.migrate import display_url, upgrade
from keys.vault import Vault, new_root_secret

# -- database and secrets --------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
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
    if done.changed:
        click.echo(f"migrated {display_url(url)} from {done.before or 'empty'} to {done.after}")
    else:
        click.echo(f"{display_url(url)} is already at {done.after}")


@main.group()
def secrets() -> None:
    """Server-side secrets."""


@secrets.command("new-root")
def secrets_new_root() -> None:
    """Print a fresh root secret (store it as DRAWBRIDGE_ROOT_SECRET or in root_secret_file)."""
    click.echo(new_root_secret())


@secrets.command("encrypt")
@click.pass_context
def secrets_encrypt(ctx: click.Context) -> None:
    """Encrypt a credential read from stdin, for upstream.api_key_encrypted."""
    context: Context = ctx.obj
    with domain_errors():
        vault = Vault(root_secret_of(context.settings))
    plaintext = sys.stdin.readline().strip()
    if not plaintext:
        raise click.ClickException("nothing to encrypt on stdin")
    click.echo(vault.encrypt(plaintext))


# -- example files ---------------------------------------------------------------------

EXAMPLES = {
    "drawbridge.toml": "every setting, documented (use with --config or DRAWBRIDGE_CONFIG)",
    "policies.toml": "cohort policies (`drawbridge policies apply FILE`)",
    "gunicorn.conf.py": "gunicorn settings (`drawbridge serve --gunicorn-config FILE`)",
}


def examples_dir() -> Path:
    """The example files shipped in the package (the repository's config/ folder)."""
    return Path(__file__).resolve().parent.parent / "examples"


@main.command()
@click.option(
    "--copy-to",
    type=click.Path(file_okay=False),
    default=None,
    help="Copy them into this folder (files already there are kept).",
)
def examples(copy_to: str | None) -> None:
    """Where the example settings, cohort policies and gunicorn config are."""
    folder = examples_dir()
    if copy_to is None:
        click.echo(f"Example files, installed with Drawbridge in {folder}:")
        for name, purpose in EXAMPLES.items():
            click.echo(f"  {folder / name}\n      {purpose}")
        click.echo("Copy them with `drawbridge examples --copy-to DIR` and edit the copies.")
        return
    target = Path(copy_to)
    target.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLES:
        destination = target / name
        if destination.exists():
            click.echo(f"kept {destination} (exists)")
            continue
        shutil.copyfile(folder / name, destination)
        click.echo(f"wrote {destination}")
