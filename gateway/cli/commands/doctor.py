"""Checking a deployment: ``drawbridge [--server URL] doctor``."""

from __future__ import annotations

import runpy
from typing import Any

import click

from gateway.cli.base import Context, domain_errors, json_option, main
from gateway.services.doctor import FAIL, WARN, Deployment, Finding, examine, exit_status

_MARKS = {"ok": "ok  ", WARN: "WARN", FAIL: "FAIL"}


def _gunicorn_option(config: str | None, name: str) -> Any:
    """What gunicorn will use for ``name``: the config file's value, else the default."""
    from gateway.process.server import DEFAULT_OPTIONS

    if config:
        value = runpy.run_path(config).get(name)
        if value is not None:
            return value
    return DEFAULT_OPTIONS[name]


def local_deployment(
    context: Context, bind: str | None, workers: int | None, gunicorn_config: str | None
) -> Deployment:
    """The deployment this host serves: its settings, database, root secret and backend."""
    from gateway.settings import SettingsError, root_secret_of
    from gateway.state import build_store, build_upstream
    from keys.access.vault import Vault, VaultError

    settings = context.settings
    deployment = Deployment(
        settings,
        bind or str(_gunicorn_option(gunicorn_config, "bind")),
        workers or int(_gunicorn_option(gunicorn_config, "workers")),
    )
    try:
        vault = Vault(root_secret_of(settings))
    except (SettingsError, VaultError) as exc:
        deployment.upstream_problem = f"not checked: no usable root secret ({exc})"
        return deployment
    deployment.store = build_store(settings, vault)
    try:
        deployment.upstream = build_upstream(settings, vault)
    except (SettingsError, VaultError) as exc:
        deployment.upstream_problem = str(exc)
    return deployment


def render(findings: list[Finding]) -> str:
    width = max(len(finding.name) for finding in findings)
    lines = []
    for finding in findings:
        lines.append(f"{_MARKS[finding.status]}  {finding.name.ljust(width)}  {finding.detail}")
        if finding.fix and finding.status != "ok":
            lines.append(f"{'':4}  {'':{width}}  fix: {finding.fix}")
    failed = sum(finding.status == FAIL for finding in findings)
    warned = sum(finding.status == WARN for finding in findings)
    lines.append(
        f"{len(findings)} checks: {failed} failed, {warned} warning{'s' if warned != 1 else ''}"
    )
    return "\n".join(lines)


@main.command()
@click.option("--bind", default=None, help="The gateway's host:port (default: gunicorn's).")
@click.option("--workers", type=int, default=None, help="Worker processes (default: gunicorn's).")
@click.option("--gunicorn-config", type=click.Path(exists=True, dir_okay=False), default=None)
@json_option
@click.pass_context
def doctor(
    ctx: click.Context,
    bind: str | None,
    workers: int | None,
    gunicorn_config: str | None,
    as_json: bool,
) -> None:
    """Check a deployment and say how to fix what is wrong.

    On the server it reads the settings, the database, Redis, the root secret file and the
    backend (listing videos: no generation is spent). With --server it asks the gateway
    (GET /admin/v1/doctor, admin role), which also sees how this very request reached it
    through the proxy. Exit status 0 when nothing failed (warnings included), 1 otherwise.
    """
    context: Context = ctx.obj
    with domain_errors():
        if context.server:
            from gateway.cli.remote import RemoteAdmin

            remote = context.admin()
            assert isinstance(remote, RemoteAdmin)
            findings = [Finding(**item) for item in remote.doctor()["findings"]]
        else:
            findings = examine(local_deployment(context, bind, workers, gunicorn_config))
    if as_json:
        import json

        status = exit_status(findings)
        document = {
            "object": "doctor",
            "ok": status == 0,
            "findings": [finding.as_dict() for finding in findings],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(render(findings))
    ctx.exit(exit_status(findings))
