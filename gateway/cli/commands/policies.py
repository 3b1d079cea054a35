"""Program-wide controls: the kill switch and cohort policies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.base import (
    admin,
    cell,
    cli_actor,
    domain_errors,
    emit,
    json_option,
    main,
    transaction,
)
from keys.policies import PolicyError, load_policy_file, load_policy_text


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


@main.group()
def policies() -> None:
    """Cohort policies and per-tester overrides."""


@policies.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@json_option
@click.pass_context
def policies_apply(ctx: click.Context, path: str, as_json: bool) -> None:
    """Validate a policies file (config/policies.toml; - reads stdin) and store every cohort
    in it."""
    try:
        if path == "-":
            loaded = load_policy_text(sys.stdin.read(), Path("<stdin>"))
        else:
            loaded = load_policy_file(path)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    with domain_errors(), transaction(ctx) as tx:
        changes = {
            cohort: tx.policies.set_policy(cohort, policy, cli_actor())
            for cohort, policy in loaded.cohorts.items()
        }
    emit(
        [{"cohort": cohort, "changed": changed} for cohort, changed in changes.items()],
        as_json,
        lambda rows: "\n".join(
            f"{row['cohort']}: {'updated' if row['changed'] else 'unchanged'}" for row in rows
        ),
    )


@policies.command("show")
@click.argument("cohort", required=False)
@click.option("--tester", "tester_id", default=None, help="A tester's effective policy")
@json_option
@click.pass_context
def policies_show(
    ctx: click.Context, cohort: str | None, tester_id: str | None, as_json: bool
) -> None:
    """Show cohort policies, one cohort's, or a tester's effective policy."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        if tester_id:
            policy, overrides = tx.policies.for_tester(tester_id)
            data = {"tester_id": tester_id, "overrides": overrides, "policy": policy.to_json()}
        elif cohort:
            data = {"cohort": cohort, "policy": tx.policies.policy(cohort).to_json()}
        else:
            data = {name: p.to_json() for name, p in tx.policies.cohorts().items()}
    emit(data, as_json, lambda d: json.dumps(d, indent=2))


@policies.command("override")
@click.argument("tester_id")
@click.option(
    "--set",
    "pairs",
    multiple=True,
    required=True,
    help="NAME=VALUE with VALUE in JSON (e.g. generations_per_day=5)",
)
@json_option
@click.pass_context
def policies_override(
    ctx: click.Context, tester_id: str, pairs: tuple[str, ...], as_json: bool
) -> None:
    """Replace a tester's overrides on top of their cohort's policy."""
    overrides = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.UsageError(f"--set takes NAME=VALUE, not {pair!r}")
        try:
            overrides[name] = json.loads(raw)
        except ValueError:
            overrides[name] = raw
    with domain_errors(), transaction(ctx) as tx:
        policy = tx.policies.set_overrides(tester_id, overrides, cli_actor())
    emit(
        {"tester_id": tester_id, "overrides": overrides, "policy": policy.to_json()},
        as_json,
        lambda v: f"{tester_id}: overrides set ({', '.join(sorted(overrides))})",
    )


@policies.command("clear-override")
@click.argument("tester_id")
@json_option
@click.pass_context
def policies_clear_override(ctx: click.Context, tester_id: str, as_json: bool) -> None:
    """Remove a tester's overrides."""
    with domain_errors(), transaction(ctx) as tx:
        tx.testers.get(tester_id)
        tx.policies.clear_overrides(tester_id, cli_actor())
    emit(
        {"tester_id": tester_id, "overrides": {}},
        as_json,
        lambda v: f"{tester_id}: overrides cleared",
    )
