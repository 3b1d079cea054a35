"""Server-side secrets: ``drawbridge secrets new-root|encrypt``."""

from __future__ import annotations

import sys

import click

from gateway.cli.base import Context, domain_errors, emit, main
from gateway.settings import root_secret_of
from keys.access.vault import Vault, new_root_secret


@main.group()
def secrets() -> None:
    """Server-side secrets."""


@secrets.command("new-root")
@click.option("--json", "as_json", is_flag=True)
def secrets_new_root(as_json: bool) -> None:
    """Print a fresh root secret (store it as DRAWBRIDGE_ROOT_SECRET or in root_secret_file)."""
    emit({"root_secret": new_root_secret()}, as_json, lambda v: str(v["root_secret"]))


@secrets.command("encrypt")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def secrets_encrypt(ctx: click.Context, as_json: bool) -> None:
    """Encrypt a credential read from stdin, for upstream.api_key_encrypted."""
    context: Context = ctx.obj
    with domain_errors():
        vault = Vault(root_secret_of(context.settings))
    plaintext = sys.stdin.readline().strip()
    if not plaintext:
        raise click.ClickException("nothing to encrypt on stdin")
    emit({"encrypted": vault.encrypt(plaintext)}, as_json, lambda v: str(v["encrypted"]))
