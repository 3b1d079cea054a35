"""Database schema and server-side secrets."""

from __future__ import annotations

import sys

import click

from gateway.cli.base import (
    Context,
    domain_errors,
    main,
)
from gateway.settings import root_secret_of
from keys.migrate import upgrade
from keys.vault import Vault, new_root_secret

# -- database and secrets --------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the configured database to the current schema."""
    context: Context = ctx.obj
    with domain_errors():
        engine = context.store.database.engine
        upgrade(engine)
        click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is current")


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
