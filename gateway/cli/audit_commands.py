"""The audit trail: verify it, export it, verify an export offline."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.base import (
    domain_errors,
    main,
    transaction,
)
from keys.audit import Verification
from keys.audit_export import (
    ExportError,
    read_anchors,
    read_public_key,
    verify_export,
    write_export,
)

# -- audit -----------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit trail."""


def _report(result: Verification, what: str) -> None:
    """Print the outcome; raise (exit 1) naming the first bad seq."""
    if not result.ok:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        raise click.ClickException(f"{what} broken{where}: {result.problem}")
    click.echo(f"OK: {result.entries} entries, {result.checkpoints} checkpoints verified")
    if result.key_id is not None:
        click.echo(f"signing key id: {result.key_id}")
    if result.covered_seq < result.entries:
        click.echo(
            f"note: entries {result.covered_seq + 1}-{result.entries} are not yet covered by a "
            "signed checkpoint; only the hash chain vouches for them"
        )


@audit.command("verify")
@click.option(
    "--against",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="An earlier export directory or checkpoint file the trail must still contain.",
)
@click.pass_context
def audit_verify(ctx: click.Context, against: Path | None) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 at the first bad seq."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        signer = tx.audit.signer
        try:
            anchors = read_anchors(against, signer.verifier if signer else None) if against else []
        except ExportError as exc:
            raise click.ClickException(str(exc)) from None
        result = tx.audit.verify(anchors)
    _report(result, "audit trail")
    if against is not None:
        click.echo(f"matches all {result.anchors} anchors of {against}")


@audit.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def audit_export(ctx: click.Context, directory: Path) -> None:
    """Write the trail, its checkpoints and public key to DIRECTORY for offline checks."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        try:
            summary = write_export(tx.audit, directory, tx.clock())
        except (ExportError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"exported {summary.entries} entries and {summary.checkpoints} checkpoints to "
        f"{directory} (signing key id {summary.key_id})"
    )


@audit.command("verify-export")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The signing public key (PEM) obtained out of band; the export's copy must match.",
)
def audit_verify_export(directory: Path, public_key: Path | None) -> None:
    """Check an export offline, with its files only (no database, no root secret)."""
    try:
        trusted = read_public_key(public_key) if public_key else None
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    _report(verify_export(directory, trusted), "export")
    if trusted is None:
        click.echo(
            "note: checked with the export's own public_key.pem; pass --public-key with a copy "
            "obtained out of band, or compare the key id, to rule out a re-signed export"
        )
