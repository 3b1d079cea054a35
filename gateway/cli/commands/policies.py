"""Cohort policies and per-tester overrides: ``drawbridge policies ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gateway.cli.base import cli_actor, domain_errors, emit, json_option, main, transaction
from keys.limits.policies import PolicyError, load_policy_file, load_policy_text


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
