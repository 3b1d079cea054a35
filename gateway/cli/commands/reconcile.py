"""`drawbridge reconcile`: settle or refund reservations whose lease ran out."""

from __future__ import annotations

import click

from gateway.cli.base import Context, cli_actor, domain_errors, emit, main, table
from gateway.upstream.client import UpstreamError
from gateway.upstream.reconciler import UpstreamBackend
from keys.generations.reconcile import Reconciler, ReconcileReport


def _render(report: ReconcileReport) -> str:
    data = report.as_dict()
    head = (
        f"{'would reconcile' if report.dry_run else 'reconciled'} {data['expired']} expired "
        f"reservation(s): {data['adopted']} adopted, {data['refunded']} refunded, "
        f"{data['deferred']} deferred; {data['cancelled']} orphan job(s) cancelled"
    )
    if not report.actions:
        return head
    columns = ["action", "request_id", "tester_id", "upstream_id", "video_id"]
    return head + "\n" + table(data["actions"], columns)


@main.command()
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Adopt or refund reservations past their lease (docs/reconcile.md).

    Safe while gateways run and sweep on their own, and from several hosts at once."""
    context: Context = ctx.obj
    with domain_errors():
        state = context.gateway_state()
        try:
            reconciler = Reconciler(state.store, UpstreamBackend(state.upstream), actor=cli_actor())
            report = reconciler.run(dry_run=dry_run)
        except UpstreamError as exc:
            raise click.ClickException(f"the generation backend: {exc.message}") from None
        finally:
            state.upstream.close()
    emit(report.as_dict(), as_json, lambda _: _render(report))
