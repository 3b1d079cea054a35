"""Shared pieces of the CLI: the `drawbridge` group, settings context, output helpers.

Nothing heavy is imported at module level (flask, sqlalchemy, the app factory): the command
modules load when a command runs, so ``drawbridge --help`` answers in a fraction of a second.
"""

from __future__ import annotations

import getpass
import importlib
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gateway.cli.exits import EXIT_NOT_ALLOWED, EXIT_UNREACHABLE
from keys.errors import DomainError

if TYPE_CHECKING:
    from gateway.cli.admin import Admin
    from gateway.settings import Settings
    from gateway.state import GatewayState
    from keys.store import Store

# The command modules, imported on first use; each attaches its commands to ``main``.
COMMAND_MODULES = (
    "approvals",
    "audit",
    "db",
    "demo",
    "doctor",
    "examples",
    "keys",
    "leaks",
    "lockdown",
    "policies",
    "provenance",
    "reconcile",
    "secrets",
    "serve",
    "simulator",
    "testers",
    "tokens",
    "usage",
)
# What `drawbridge --help` lists without importing the modules above (a test keeps this
# equal to the commands' own first help lines).
COMMAND_SUMMARIES = {
    "approvals": "Held requests and their decisions.",
    "audit": "The audit trail.",
    "db": "Database schema.",
    "examples": "Example settings, cohort policies, gunicorn and nginx configs, systemd units.",
    "doctor": "Check a deployment and say how to fix what is wrong.",
    "demo": "Run the whole product on one machine: SQLite, the simulator, one gateway.",
    "keys": "Tester API keys.",
    "leaks": "Find leaked keys and shut them off.",
    "lockdown": "The global kill switch: refuse all tester traffic, keep the admin planes working.",
    "policies": "Cohort policies and per-tester overrides.",
    "provenance": "Signed C2PA manifests on delivered videos: identify a file, the signing "
    "certificates.",
    "reconcile": "Adopt or refund reservations past their lease (docs/reconcile.md).",
    "secrets": "Server-side secrets.",
    "serve": "Serve the gateway under gunicorn.",
    "simulator": "Serve the built-in video backend simulator.",
    "testers": "Testers.",
    "tokens": "Admin, approver and auditor tokens.",
    "usage": "Usage events: daily report, export, retention.",
}


def load_commands() -> None:
    """Import every command module (idempotent)."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"gateway.cli.commands.{name}")


class LazyGroup(click.Group):
    """The top-level group: lists commands from ``COMMAND_SUMMARIES``, loads them on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_SUMMARIES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            load_commands()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(name, help=COMMAND_SUMMARIES[name])
            rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def cli_actor() -> str:
    """How a CLI user appears in records."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(
        self, config_file: str | None, server: str | None = None, token: str | None = None
    ) -> None:
        self.config_file = config_file
        self.server = server
        self._token = token
        self._store: Store | None = None

    def admin(self) -> Admin:
        """The admin actions: on the server with ``--server``, else on the database here."""
        if self.server:
            if not self._token:
                raise click.UsageError(
                    "--server needs a token: DRAWBRIDGE_TOKEN, --token-file or --token"
                )
            from gateway.cli.remote import AdminClient, RemoteAdmin

            return RemoteAdmin(AdminClient(self.server, self._token))
        from gateway.cli.admin import LocalAdmin

        return LocalAdmin(self, cli_actor())

    @property
    def settings(self) -> Settings:
        from gateway.settings import load_settings

        return load_settings(self.config_file)

    @property
    def store(self) -> Store:
        if self.server:
            raise click.UsageError(
                "this command needs the database and root secret; it does not run with --server"
            )
        if self._store is None:
            from gateway.settings import root_secret_of
            from gateway.state import build_store
            from keys.access.vault import Vault
            from keys.migrate import require_current_schema

            settings = self.settings
            # A missing or unmigrated database: one line naming the fix, not a traceback.
            require_current_schema(settings.database_url)
            self._store = build_store(settings, Vault(root_secret_of(settings)))
        return self._store

    def gateway_state(self) -> GatewayState:
        """The whole gateway (upstream client included), for actions that call upstream."""
        from gateway.state import build_state

        return build_state(self.settings)


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn expected failures into one clear line and exit status 1."""
    from gateway.cli.remote import RemoteError
    from gateway.settings import SettingsError
    from keys.access.vault import VaultError

    try:
        yield
    except DomainError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
    except (SettingsError, VaultError) as exc:
        raise click.ClickException(str(exc)) from None
    except RemoteError as exc:
        failure = _REMOTE_FAILURES.get(exc.exit_code, click.ClickException)
        raise failure(f"{exc.message} ({exc.code})") from None


class NotAllowed(click.ClickException):
    """The server refused the token or its role (401, 403): exit status 3."""

    exit_code = EXIT_NOT_ALLOWED


class Unreachable(click.ClickException):
    """The server is out of reach or failing (5xx): exit status 4."""

    exit_code = EXIT_UNREACHABLE


_REMOTE_FAILURES: dict[int, type[click.ClickException]] = {
    EXIT_NOT_ALLOWED: NotAllowed,
    EXIT_UNREACHABLE: Unreachable,
}


def admin(ctx: click.Context) -> Admin:
    context: Context = ctx.obj
    return context.admin()


def json_option(command: F) -> F:
    """``--json``: the command's result as JSON on stdout, for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


def transaction(ctx: click.Context, *, write: bool = True) -> Any:
    context: Context = ctx.obj
    return context.store.transaction(write=write)


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render(data))


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``1 checkpoint``, ``2 checkpoints``, ``0 entries`` (with ``plural_noun``)."""
    return f"{count} {noun if count == 1 else (plural_noun or noun + 's')}"


def cell(value: Any) -> str:
    """A value as a person reads it: ``-`` for nothing, never a Python repr."""
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{name}={cell(item)}" for name, item in value.items())
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[cell(row.get(column)) for column in columns] for row in rows]
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
    return "\n".join(f"{name}: {cell(value)}" for name, value in data.items() if value is not None)


@click.group(cls=LazyGroup)
@click.version_option(package_name="drawbridge", prog_name="drawbridge")
@click.option(
    "--config",
    "config_file",
    envvar="DRAWBRIDGE_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML settings file (default: DRAWBRIDGE_CONFIG).",
)
@click.option(
    "--server",
    envvar="DRAWBRIDGE_SERVER",
    default=None,
    metavar="URL",
    help="Run through this gateway's admin API with a role token instead of the database "
    "(default: DRAWBRIDGE_SERVER).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file holding the admin, approver or auditor token for --server.",
)
@click.option(
    "--token",
    envvar="DRAWBRIDGE_TOKEN",
    default=None,
    show_envvar=True,
    help="The token for --server. Prefer DRAWBRIDGE_TOKEN or --token-file: a command line "
    "is visible to other users and kept in shell history.",
)
@click.pass_context
def main(
    ctx: click.Context,
    config_file: str | None,
    server: str | None,
    token_file: Path | None,
    token: str | None,
) -> None:
    """Drawbridge: personal keys, limits and leak response for an early-access API."""
    if token_file is not None:
        from gateway.cli.remote import RemoteError, read_token_file

        try:
            token = read_token_file(token_file)
        except RemoteError as exc:
            raise click.UsageError(exc.message) from None
    ctx.obj = Context(config_file, server, token)
