"""Provenance: ``drawbridge provenance identify|certificates|rotate`` (docs/provenance.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gateway.cli.base import (
    Context,
    admin,
    cli_actor,
    domain_errors,
    emit,
    json_option,
    main,
    transaction,
)
from gateway.settings import root_secret_of
from keys.access.vault import Vault


@main.group()
def provenance() -> None:
    """Signed C2PA manifests on delivered videos: identify a file, the signing certificates."""


def _identification_text(found: dict[str, Any]) -> str:
    lines = [
        f"verdict: {found['verdict']}",
        f"manifest: {found['manifest']}"
        + (f" ({', '.join(found['failures'])})" if found["failures"] else ""),
        f"matched by: {found['matched_by'] or '-'}",
        f"sha256: {found['sha256']}",
    ]
    for delivery in found["deliveries"]:
        who = delivery["downloading_key_id"] or delivery["share_link_id"] or delivery["recipient"]
        lines.append(
            f"- download {delivery['download_id']} at {delivery['downloaded_at']} via "
            f"{delivery['route']} to {who}: video {delivery['video_id']}, tester "
            f"{delivery['tester_id']}, key {delivery['key_id']}, approval "
            f"{delivery['approval_id'] or '-'}, audit seq {delivery['audit_seq']}"
        )
    return "\n".join(lines)


@provenance.command("identify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def provenance_identify(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Say whose FILE is: its manifest (valid, invalid, absent) and the delivery it came from,
    by manifest or by hash. The lookup is recorded in the audit trail."""
    with domain_errors():
        found = admin(ctx).identify_video(file)
    emit(found, as_json, _identification_text)


@provenance.command("certificates")
@json_option
@click.pass_context
def provenance_certificates(ctx: click.Context, as_json: bool) -> None:
    """Print the roots (PEM) that validate this deployment's manifests."""
    with domain_errors():
        found = admin(ctx).provenance_certificates()
    emit(found, as_json, lambda view: "".join(view["trust_anchors"]).rstrip())


@provenance.command("rotate")
@click.option("--new-root", is_flag=True, help="Make a new root CA too (the old stays trusted).")
@json_option
@click.pass_context
def provenance_rotate(ctx: click.Context, new_root: bool, as_json: bool) -> None:
    """Issue a new signing certificate; it signs from the next delivery on, everywhere."""
    context: Context = ctx.obj
    with domain_errors():
        vault = Vault(root_secret_of(context.settings))
        with transaction(ctx) as tx:
            row = tx.provenance_signers.rotate(vault, cli_actor(), new_root=new_root)
            view = {"generation": row.generation, "key_id": row.key_id, "new_root": new_root}
    emit(
        view,
        as_json,
        lambda v: f"generation {v['generation']} signs now (key id {v['key_id']})",
    )
