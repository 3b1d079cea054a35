"""The audit trail: verify it, export it, verify an export offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from gateway.cli.base import (
    admin,
    domain_errors,
    emit,
    json_option,
    main,
    plural,
    transaction,
)
from gateway.cli.progress import Progress, progress_option
from keys.records.audit import Verification
from keys.records.audit_export import (
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


def _verification_view(result: Verification) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "entries": result.entries,
        "checkpoints": result.checkpoints,
        "covered_seq": result.covered_seq,
        "anchors": result.anchors,
        "key_id": result.key_id,
        "first_bad_seq": result.first_bad_seq,
        "problem": result.problem,
    }


def _report(result: Verification, what: str, as_json: bool = False) -> None:
    """Print the outcome; raise (exit 1) naming the first bad seq."""
    if as_json:
        click.echo(json.dumps(_verification_view(result), indent=2))
        if not result.ok:
            raise SystemExit(1)
        return
    if not result.ok:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        raise click.ClickException(f"{what} broken{where}: {result.problem}")
    click.echo(
        f"OK: {plural(result.entries, 'entry', 'entries')}, "
        f"{plural(result.checkpoints, 'checkpoint')} verified"
    )
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
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, against: Path | None, as_json: bool) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 at the first bad seq.

    With --server, the trail, its checkpoints and the public key are fetched through the
    admin API and verified here, as ``audit verify-export`` does."""
    with domain_errors():
        try:
            result = admin(ctx).verify_audit(against, read_anchors)
        except ExportError as exc:
            raise click.ClickException(str(exc)) from None
    _report(result, "audit trail", as_json)
    if against is not None and not as_json:
        click.echo(f"matches all {plural(result.anchors, 'anchor')} of {against}")


@audit.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@progress_option
@json_option
@click.pass_context
def audit_export(ctx: click.Context, directory: Path, progress: bool | None, as_json: bool) -> None:
    """Write the trail, its checkpoints and public key to DIRECTORY for offline checks."""
    with domain_errors(), transaction(ctx, write=False) as tx:
        try:
            meter = Progress(progress)
            summary = write_export(
                tx.audit,
                directory,
                tx.clock(),
                lambda done: meter.update(f"exported {plural(done, 'entry', 'entries')} so far"),
            )
        except (ExportError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    view = {
        "directory": str(directory),
        "entries": summary.entries,
        "checkpoints": summary.checkpoints,
        "key_id": summary.key_id,
    }
    emit(
        view,
        as_json,
        lambda v: (
            f"exported {plural(v['entries'], 'entry', 'entries')} and "
            f"{plural(v['checkpoints'], 'checkpoint')} to {directory} "
            f"(signing key id {v['key_id']})"
        ),
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
@json_option
def audit_verify_export(directory: Path, public_key: Path | None, as_json: bool) -> None:
    """Check an export offline, with its files only (no database, no root secret)."""
    try:
        trusted = read_public_key(public_key) if public_key else None
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    _report(verify_export(directory, trusted), "export", as_json)
    if trusted is None and not as_json:
        click.echo(
            "note: checked with the export's own public_key.pem; pass --public-key with a copy "
            "obtained out of band, or compare the key id, to rule out a re-signed export"
        )
