"""Database schema and server-side secrets."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from gateway.cli.base import (
    Context,
    domain_errors,
    emit,
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


# -- example files ---------------------------------------------------------------------

EXAMPLES = {
    "drawbridge.toml": "every setting, documented (use with --config or DRAWBRIDGE_CONFIG)",
    "policies.toml": "cohort policies (`drawbridge policies apply FILE`)",
    "gunicorn.conf.py": "gunicorn settings (`drawbridge serve --gunicorn-config FILE`)",
    "nginx.conf": "a front proxy that buffers slow clients (docs/isolation.md)",
}


def examples_dir() -> Path:
    """The example files shipped in the package (the repository's config/ folder)."""
    return Path(__file__).resolve().parents[2] / "examples"


@main.command()
@click.option(
    "--copy-to",
    type=click.Path(file_okay=False),
    default=None,
    help="Copy them into this folder (files already there are kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def examples(copy_to: str | None, as_json: bool) -> None:
    """Where the example settings, cohort policies and gunicorn config are."""
    folder = examples_dir()
    if copy_to is None:
        files = [
            {"name": name, "path": str(folder / name), "purpose": purpose}
            for name, purpose in EXAMPLES.items()
        ]
        emit(
            {"folder": str(folder), "files": files},
            as_json,
            lambda _: "\n".join(
                [f"Example files, installed with Drawbridge in {folder}:"]
                + [f"  {f['path']}\n      {f['purpose']}" for f in files]
                + ["Copy them with `drawbridge examples --copy-to DIR` and edit the copies."]
            ),
        )
        return
    target = Path(copy_to)
    target.mkdir(parents=True, exist_ok=True)
    results = []
    for name in EXAMPLES:
        destination = target / name
        if destination.exists():
            results.append({"path": str(destination), "action": "kept"})
            continue
        shutil.copyfile(folder / name, destination)
        results.append({"path": str(destination), "action": "wrote"})
    emit(
        {"files": results},
        as_json,
        lambda _: "\n".join(
            f"kept {r['path']} (exists)" if r["action"] == "kept" else f"wrote {r['path']}"
            for r in results
        ),
    )
