"""The ``drawbridge`` command. Each action calls the same domain method as the admin API."""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from gateway.app import build_state, build_store, create_app
from gateway.inputs import parse_duration, parse_timestamp
from gateway.settings import Settings, SettingsError, load_settings, root_secret_of
from gateway.views import key_view, tester_view, token_view
from keys.errors import DomainError
from keys.migrate import upgrade
from keys.store import Store, Transaction
from keys.vault import Vault, VaultError, new_root_secret


def cli_actor() -> str:
    """How a CLI user appears in records."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


class Context:
    def __init__(self, config_file: str | None) -> None:
        self.config_file = config_file
        self._store: Store | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.config_file)

    @property
    def store(self) -> Store:
        if self._store is None:
            settings = self.settings
            self._store = build_store(settings, Vault(root_secret_of(settings)))
        return self._store


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn expected failures into one clear line and exit status 1."""
    try:
        yield
    except DomainError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
    except (SettingsError, VaultError) as exc:
        raise click.ClickException(str(exc)) from None


def transaction(ctx: click.Context, *, write: bool = True) -> Any:
    context: Context = ctx.obj
    return context.store.transaction(write=write)


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render(data))


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [
        [str(row.get(column) if row.get(column) is not None else "-") for column in columns]
        for row in rows
    ]
    widths = [
        max(len(column), *(len(cell[i]) for cell in cells)) for i, column in enumerate(columns)
    ]
    lines = [
        "  ".join(
            column.upper().ljust(width) for column, width in zip(columns, widths, strict=True)
        )
    ]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    return "\n".join(lines)


def pretty(data: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {value}" for name, value in data.items() if value is not None)


@click.group()
@click.option(
    "--config",
    "config_file",
    envvar="DRAWBRIDGE_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML settings file (default: DRAWBRIDGE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """Drawbridge: personal keys, limits and leak response for an early-access API."""
    ctx.obj = Context(config_file)


# -- serving ---------------------------------------------------------------------------


@main.command()
@click.option("--bind", default=None, help="host:port (default 127.0.0.1:8080)")
@click.option("--workers", type=int, default=None)
@click.option("--threads", type=int, default=None)
@click.option("--gunicorn-config", type=click.Path(exists=True, dir_okay=False), default=None)
@click.pass_context
def serve(
    ctx: click.Context,
    bind: str | None,
    workers: int | None,
    threads: int | None,
    gunicorn_config: str | None,
) -> None:
    """Serve the gateway under gunicorn."""
    from gateway.server import serve as run

    context: Context = ctx.obj
    with domain_errors():
        # Fail fast on bad settings here, not in every forked worker.
        build_state(context.settings).store.database.dispose()
    run(
        lambda: create_app(load_settings(context.config_file)),
        bind=bind,
        workers=workers,
        threads=threads,
        config=gunicorn_config,
    )


@main.command()
@click.option("--bind", default="127.0.0.1:8090", show_default=True)
@click.option(
    "--api-key",
    envvar="DRAWBRIDGE_SIM_API_KEY",
    default=None,
    help="Credential the simulator requires (default: none).",
)
@click.option("--job-seconds", type=float, default=None, help="Time a job takes.")
@click.option("--content-bytes", type=int, default=None, help="Size of a video's content.")
def simulator(
    bind: str, api_key: str | None, job_seconds: float | None, content_bytes: int | None
) -> None:
    """Serve the built-in video backend simulator."""
    from gateway.server import serve as run
    from gateway.simulator import SimulatorOptions, create_simulator_app

    options = SimulatorOptions.from_env(os.environ)
    overrides: dict[str, Any] = {
        "api_key": api_key,
        "job_seconds": job_seconds,
        "content_bytes": content_bytes,
    }
    options = dataclasses.replace(options, **{k: v for k, v in overrides.items() if v is not None})
    run(lambda: create_simulator_app(options), bind=bind, workers=1, threads=16)


@main.command()
@click.option(
    "--dir", "directory", default=".drawbridge", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--port", default=8080, show_default=True)
@click.option("--simulator-port", default=8090, show_default=True)
@click.option("--job-seconds", default=6.0, show_default=True)
def demo(directory: str, port: int, simulator_port: int, job_seconds: float) -> None:
    """Run the whole product on one machine: SQLite, the simulator, one gateway."""
    from gateway.demo import run_demo

    with domain_errors():
        run_demo(directory, port, simulator_port, job_seconds)


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
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: str, reason: str) -> None:
    """Revoke a token."""
    with domain_errors(), transaction(ctx) as tx:
        tx.tokens.revoke(token_id, cli_actor(), reason)
    click.echo(f"revoked {token_id}")


# -- testers ---------------------------------------------------------------------------


@main.group()
def testers() -> None:
    """Testers."""


@testers.command("add")
@click.argument("name")
@click.option("--email", required=True)
@click.option("--cohort", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def testers_add(ctx: click.Context, name: str, email: str, cohort: str, as_json: bool) -> None:
    """Add a tester."""
    with domain_errors(), transaction(ctx) as tx:
        view = tester_view(tx.testers.add(name, email, cli_actor(), cohort=cohort))
    emit(view, as_json, pretty)


@testers.command("list")
@click.option("--cohort", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def testers_list(ctx: click.Context, cohort: str | None, as_json: bool) -> None:
    """List testers."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        rows = [tester_view(tester) for tester in tx.testers.list(cohort=cohort)]
    emit(rows, as_json, lambda r: table(r, ["id", "name", "email", "cohort", "status"]))


# -- keys ------------------------------------------------------------------------------


@main.group("keys")
def keys_group() -> None:
    """Tester API keys."""


def _expiry(tx: Transaction, expires_in: str | None, expires_at: str | None) -> datetime | None:
    if expires_in and expires_at:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    if expires_in:
        return tx.clock() + parse_duration(expires_in, "expires_in")
    if expires_at:
        return parse_timestamp(expires_at, "expires_at")
    return None


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    metadata = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.UsageError(f"--meta takes NAME=VALUE, not {pair!r}")
        metadata[name] = value
    return metadata


@keys_group.command("issue")
@click.argument("tester_id")
@click.option("--expires-in", default=None, help="e.g. 30d")
@click.option("--expires-at", default=None, help="ISO 8601 time with zone")
@click.option("--meta", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_issue(
    ctx: click.Context,
    tester_id: str,
    expires_in: str | None,
    expires_at: str | None,
    meta: tuple[str, ...],
    as_json: bool,
) -> None:
    """Issue a key to a tester; the secret is printed once."""
    with domain_errors(), transaction(ctx) as tx:
        issued = tx.keys.issue(
            tester_id, cli_actor(), _expiry(tx, expires_in, expires_at), _metadata(meta)
        )
        view = {**key_view(issued.key, tx.clock()), "secret": issued.secret}
    emit(view, as_json, lambda v: f"{pretty(v)}\n\nThe secret is shown once; hand it over now.")


@keys_group.command("list")
@click.option("--tester", "tester_id", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, tester_id: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        rows = [key_view(key, tx.clock()) for key in tx.keys.list(tester_id=tester_id)]
    emit(
        rows,
        as_json,
        lambda r: table(r, ["id", "tester_id", "hint", "status", "expires_at", "last_used_at"]),
    )


@keys_group.command("show")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show one key."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        view = key_view(tx.keys.get(key_id), tx.clock())
    emit(view, as_json, pretty)


@keys_group.command("rotate")
@click.argument("key_id")
@click.option("--grace", default="24h", show_default=True, help="How long the old secret works")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_rotate(ctx: click.Context, key_id: str, grace: str, as_json: bool) -> None:
    """Rotate a key: a new secret now, the old one until the grace period ends."""
    with domain_errors(), transaction(ctx) as tx:
        issued = tx.keys.rotate(key_id, cli_actor(), parse_duration(grace, "grace"))
        view = {**key_view(issued.key, tx.clock()), "secret": issued.secret}
    emit(view, as_json, lambda v: f"{pretty(v)}\n\nThe secret is shown once; hand it over now.")


@keys_group.command("revoke")
@click.argument("key_id", required=False)
@click.option("--tester", "tester_id", default=None, help="Revoke every key of this tester")
@click.option("--reason", required=True)
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str | None, tester_id: str | None, reason: str) -> None:
    """Revoke a key, or with --tester every key of a tester."""
    if bool(key_id) == bool(tester_id):
        raise click.UsageError("give a KEY_ID or --tester, one of the two")
    with domain_errors(), transaction(ctx) as tx:
        if tester_id:
            revoked = tx.keys.revoke_all_for_tester(tester_id, cli_actor(), reason)
        else:
            revoked = [tx.keys.revoke(str(key_id), cli_actor(), reason).id]
    click.echo("revoked " + (", ".join(revoked) if revoked else "nothing (no live keys)"))


@keys_group.command("suspend")
@click.argument("key_id")
@click.option("--reason", required=True)
@click.pass_context
def keys_suspend(ctx: click.Context, key_id: str, reason: str) -> None:
    """Suspend a key until resumed."""
    with domain_errors(), transaction(ctx) as tx:
        tx.keys.suspend(key_id, cli_actor(), reason)
    click.echo(f"suspended {key_id}")


@keys_group.command("resume")
@click.argument("key_id")
@click.option("--reason", default=None)
@click.pass_context
def keys_resume(ctx: click.Context, key_id: str, reason: str | None) -> None:
    """Resume a suspended key."""
    with domain_errors(), transaction(ctx) as tx:
        tx.keys.resume(key_id, cli_actor(), reason)
    click.echo(f"resumed {key_id}")


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
