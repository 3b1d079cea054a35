"""The kill switch: ``drawbridge lockdown on|off|status``."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.base import admin, cell, domain_errors, emit, json_option, main


@main.group()
def lockdown() -> None:
    """The global kill switch: refuse all tester traffic, keep the admin planes working."""


def _lockdown_line(view: dict[str, Any]) -> str:
    if not view["lockdown"]:
        return "lockdown off: tester traffic is served"
    return f"lockdown ON: all tester traffic is refused ({view['reason']}, by {view['changed_by']})"


@lockdown.command("on")
@click.option("--reason", required=True)
@json_option
@click.pass_context
def lockdown_on(ctx: click.Context, reason: str, as_json: bool) -> None:
    """Refuse all tester traffic (503 lockdown) on every worker and instance."""
    with domain_errors():
        view = admin(ctx).set_lockdown(True, reason)
    emit(view, as_json, _lockdown_line)


@lockdown.command("off")
@click.option("--reason", default=None)
@json_option
@click.pass_context
def lockdown_off(ctx: click.Context, reason: str | None, as_json: bool) -> None:
    """Let tester traffic through again."""
    with domain_errors():
        view = admin(ctx).set_lockdown(False, reason)
    emit(view, as_json, _lockdown_line)


@lockdown.command("status")
@json_option
@click.pass_context
def lockdown_status(ctx: click.Context, as_json: bool) -> None:
    """Whether the kill switch is raised, why, and by whom."""
    with domain_errors():
        view = admin(ctx).lockdown_state()
    emit(view, as_json, _status_line)


def _status_line(view: dict[str, Any]) -> str:
    state = "ON" if view["lockdown"] else "off"
    if not view["changed_by"]:
        return state
    reason, at = cell(view["reason"]), cell(view["changed_at"])
    return f"{state} ({reason}, by {view['changed_by']} at {at})"
