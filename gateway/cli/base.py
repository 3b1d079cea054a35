"""Shared pieces of the CLI: the `drawbridge` group, settings context, output helpers."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from gateway.app import build_state, build_store
from gateway.settings import Settings, SettingsError, load_settings, root_secret_of
from gateway.state import GatewayState
from keys.errors import DomainError
from keys.store import Store
from keys.vault import Vault, VaultError


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

    def gateway_state(self) -> GatewayState:
        """The whole gateway (upstream client included), for actions that call upstream."""
        return build_state(self.settings)


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
