"""Serving the gateway under gunicorn: ``drawbridge serve``."""

from __future__ import annotations

import runpy

import click

from gateway.cli.base import Context, domain_errors, main
from gateway.observability.logs import install_redaction
from gateway.observability.metrics import prepare_spool_dir
from gateway.settings import load_settings
from gateway.state import build_state
from keys.errors import DatabaseUnreachable
from keys.migrate import require_current_schema


def per_worker_counters_warning(workers: int) -> str:
    """Why several workers want Redis: what each worker would otherwise count alone."""
    return (
        f"warning: {workers} workers and no redis_url: rate limits and anomaly counters are "
        f"kept in each worker process, so each worker allows a key its full rate (up to "
        f"{workers}x the limit in all) and sees only its share of a key's traffic. Quotas stay "
        "exact (they live in the database). Set redis_url (DRAWBRIDGE_REDIS_URL) to share "
        "them, or serve with --workers 1."
    )


def _configured_workers(gunicorn_config: str | None) -> int:
    """The worker count gunicorn will use when --workers is not given."""
    from gateway.process.server import DEFAULT_OPTIONS

    if gunicorn_config:
        configured = runpy.run_path(gunicorn_config).get("workers")
        if isinstance(configured, int):
            return configured
    workers: int = DEFAULT_OPTIONS["workers"]
    return workers


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
    """Serve the gateway under gunicorn.

    gunicorn's threads read requests themselves, so slow clients hold them: on any address
    clients you do not control can reach, put the front proxy of config/nginx.conf in front
    (it buffers slow clients) and set trusted_proxies = 1. See docs/isolation.md.
    """
    # Only the commands that serve load the app factory and its blueprints.
    from gateway.app import create_app
    from gateway.process.server import serve as run

    context: Context = ctx.obj
    with domain_errors():
        settings = context.settings
        # Fail fast on bad settings or an unmigrated database here, not in every worker.
        try:
            require_current_schema(settings.database_url)
        except DatabaseUnreachable as exc:
            click.echo(f"warning: {exc.message}; serving anyway (see /readyz)", err=True)
        state = build_state(settings)
        state.store.database.dispose()
        # gunicorn's master logs too: its lines are redacted for these prefixes and credential.
        install_redaction(state)
        # Before the workers fork: they share it to answer /metrics for all of them.
        prepare_spool_dir(settings)
    processes = workers or _configured_workers(gunicorn_config)
    if processes > 1 and not settings.redis_url:
        click.echo(per_worker_counters_warning(processes), err=True)
    run(
        lambda: create_app(load_settings(context.config_file)),
        bind=bind,
        workers=workers,
        threads=threads,
        config=gunicorn_config,
    )
