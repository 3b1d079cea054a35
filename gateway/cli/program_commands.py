"""Program-wide controls: the kill switch and cohort policies."""

from __future__ import annotations

import json

import click

from gateway.cli.base import cli_actor, domain_errors, emit, main, transaction
from keys.policies import PolicyError, load_policy_file


@main.group()
def lockdown() -> None:
    """The global kill switch: refuse all tester traffic, keep the admin planes working."""


@lockdown.command("on")
@click.option("--reason", required=True)
@click.pass_context
def lockdown_on(ctx: click.Context, reason: str) -> None:
    """Refuse all tester traffic (503 lockdown) on every worker and instance."""
    with domain_errors(), transaction(ctx) as tx:
        tx.program.set_lockdown(True, cli_actor(), reason)
    click.echo("lockdown ON: all tester traffic is refused")


@lockdown.command("off")
@click.option("--reason", default=None)
@click.pass_context
def lockdown_off(ctx: click.Context, reason: str | None) -> None:
    """Let tester traffic through again."""
    with domain_errors(), transaction(ctx) as tx:
        tx.program.set_lockdown(False, cli_actor(), reason)
    click.echo("lockdown off: tester traffic resumes")


@lockdown.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def lockdown_status(ctx: click.Context, as_json: bool) -> None:
    """Whether the kill switch is raised, why, and by whom."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        state = tx.program.state()
        view = {
            "lockdown": bool(state.lockdown),
            "reason": state.lockdown_reason,
            "changed_by": state.lockdown_by,
        }
    emit(
        view,
        as_json,
        lambda v: (
            ("ON" if v["lockdown"] else "off")
            + (f" ({v['reason']}, by {v['changed_by']})" if v["changed_by"] else "")
        ),
    )


@main.group()
def policies() -> None:
    """Cohort policies and per-tester overrides."""


@policies.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def policies_apply(ctx: click.Context, path: str) -> None:
    """Validate a policies file (config/policies.toml) and store every cohort in it."""
    try:
        loaded = load_policy_file(path)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    with domain_errors(), transaction(ctx) as tx:
        for cohort, policy in loaded.cohorts.items():
            changed = tx.policies.set_policy(cohort, policy, cli_actor())
            click.echo(f"{cohort}: {'updated' if changed else 'unchanged'}")


@policies.command("show")
@click.argument("cohort", required=False)
@click.option("--tester", "tester_id", default=None, help="A tester's effective policy")
@click.option("--json", "as_json", is_flag=True)
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
@click.pass_context
def policies_override(ctx: click.Context, tester_id: str, pairs: tuple[str, ...]) -> None:
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
        tx.policies.set_overrides(tester_id, overrides, cli_actor())
    click.echo(f"{tester_id}: overrides set ({', '.join(sorted(overrides))})")


@policies.command("clear-override")
@click.argument("tester_id")
@click.pass_context
def policies_clear_override(ctx: click.Context, tester_id: str) -> None:
    """Remove a tester's overrides."""
    with domain_errors(), transaction(ctx) as tx:
        tx.testers.get(tester_id)
        tx.policies.clear_overrides(tester_id, cli_actor())
    click.echo(f"{tester_id}: overrides cleared")
