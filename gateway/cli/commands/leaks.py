"""Leaked keys: ``drawbridge leaks scan PATH... | -``.

Exit status as grep's: 0 when no key was found, 1 when keys were found, 2 on errors (an
unreadable path, a database that fails); errors win over findings.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gateway.cli.base import Context, cli_actor, emit, main, table
from gateway.settings import Settings, SettingsError, root_secret_of
from keys.access.keyformat import KeyFormat
from keys.access.vault import VaultError
from keys.errors import DomainError
from keys.leaks.leaked_keys import (
    Finding,
    KnownKey,
    LeakedSecret,
    Progress,
    files_under,
    scan_file,
    scan_stream,
)

EXIT_FOUND = 1
EXIT_ERROR = 2
STDIN = "-"
STDIN_ORIGIN = "<stdin>"
# Below this, a scan is over before a progress bar would be worth drawing.
_PROGRESS_MIN_BYTES = 64 * 1024 * 1024
_MB = 1_000_000


class ScanError(click.ClickException):
    """A failure that ends the command with status 2, like grep's."""

    exit_code = EXIT_ERROR


@dataclass
class _Scan:
    findings: list[Finding] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def read(self, count: int) -> None:
        self.bytes += count

    def failed(self, path: str, exc: OSError) -> None:
        self.errors.append({"path": path, "error": exc.strerror or type(exc).__name__})


@dataclass
class _Lookup:
    known: dict[str, KnownKey | None] = field(default_factory=dict)
    revoked_now: set[str] = field(default_factory=set)
    kept_now: set[str] = field(default_factory=set)
    """Live proof-bound keys left in force (setting proof_revoke_leaked = false)."""
    checked: bool = False
    note: str | None = None
    failed: bool = False


@main.group("leaks")
def leaks_group() -> None:
    """Find leaked keys and shut them off."""


@leaks_group.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--revoke", is_flag=True, help="Revoke the live keys found (reason 'leaked').")
@click.option("--offline", is_flag=True, help="Do not look the keys up in the database.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: for long scans when stderr is a terminal).",
)
@click.pass_context
def leaks_scan(
    ctx: click.Context,
    paths: tuple[str, ...],
    revoke: bool,
    offline: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Find Drawbridge keys in files, folders (recursively) or stdin (-).

    Only strings whose checksum verifies count, so random text never matches. Each key is
    looked up in the database (key id, tester, status) and shown masked, never whole. Exit
    status: 0 none found, 1 keys found, 2 errors.
    """
    if revoke and offline:
        raise click.UsageError("--revoke needs the database; drop --offline")
    context: Context = ctx.obj
    try:
        settings = context.settings
        key_format = KeyFormat(settings.key_prefix)
    except (SettingsError, ValueError) as exc:
        raise ScanError(str(exc)) from None

    scan = _scan(paths, key_format, progress)
    lookup = _Lookup(note="not looked up (--offline)" if offline else None)
    if scan.findings and not offline:
        lookup = _look_up(context, settings, scan.findings, revoke)

    rows = [_row(finding, key_format, lookup) for finding in scan.findings]
    if as_json:
        emit(_document(rows, scan, lookup), True, str)
    else:
        if rows:
            click.echo(table([_text_row(row) for row in rows], _TEXT_COLUMNS))
        click.echo(_summary(scan, lookup), err=True)
    for error in scan.errors:
        click.echo(f"error: {error['path']}: {error['error']}", err=True)
    if scan.errors or lookup.failed:
        ctx.exit(EXIT_ERROR)
    ctx.exit(EXIT_FOUND if scan.findings else 0)


# -- scanning --------------------------------------------------------------------------


def _targets(paths: Sequence[str], scan: _Scan) -> list[str]:
    """Files to read, in order, each once; STDIN for ``-``."""
    targets: list[str] = []
    seen: set[str] = set()
    for path in paths:
        if path == STDIN:
            candidates = [STDIN]
        elif not os.path.lexists(path):
            scan.failed(path, FileNotFoundError(2, "No such file or directory"))
            continue
        else:
            candidates = [str(file) for file in files_under(path, on_error=scan.failed)]
        for candidate in candidates:
            identity = candidate if candidate == STDIN else os.path.realpath(candidate)
            if identity not in seen:
                seen.add(identity)
                targets.append(candidate)
    return targets


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _scan(paths: Sequence[str], key_format: KeyFormat, progress: bool | None) -> _Scan:
    scan = _Scan()
    started, cpu_started = time.perf_counter(), time.process_time()
    targets = _targets(paths, scan)
    total = sum(_size(target) for target in targets if target != STDIN)
    show = (
        progress if progress is not None else (sys.stderr.isatty() and total >= _PROGRESS_MIN_BYTES)
    )
    with _progress_bar(total if show else 0) as advance:

        def read_file_bytes(count: int) -> None:
            scan.read(count)
            if advance is not None:
                advance(count)

        for target in targets:
            try:
                if target == STDIN:
                    found = scan_stream(
                        sys.stdin.buffer, key_format, STDIN_ORIGIN, progress=scan.read
                    )
                else:
                    found = scan_file(target, key_format, progress=read_file_bytes)
                scan.findings.extend(found)
                scan.files += 1
            except OSError as exc:
                scan.failed(target, exc)
    scan.seconds = time.perf_counter() - started
    scan.cpu_seconds = time.process_time() - cpu_started
    return scan


@contextmanager
def _progress_bar(total: int) -> Iterator[Progress | None]:
    if total <= 0:
        yield None
        return
    # Not a terminal (--progress into a file or pipe): click prints the label once.
    with click.progressbar(length=total, label="scanning", file=sys.stderr) as bar:
        yield bar.update


# -- looking up and revoking -----------------------------------------------------------


def _database_note(settings: Settings) -> str | None:
    """Why the keys cannot be looked up, or None when a database is configured."""
    try:
        root_secret_of(settings)
    except SettingsError as exc:
        return str(exc)
    url = make_url(settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    # Connecting would create an empty file, then fail on the missing tables.
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():
        return f"no database at {file}"
    return None


def _look_up(
    context: Context, settings: Settings, findings: Sequence[Finding], revoke: bool
) -> _Lookup:
    note = _database_note(settings)
    if note is not None:
        if revoke:
            raise ScanError(f"cannot revoke: {note}")
        return _Lookup(note=f"not looked up: {note}")
    sources: dict[str, str] = {}
    for finding in findings:
        sources.setdefault(finding.secret, _source(finding.origin))
    secrets = list(sources)
    lookup = _Lookup(checked=True)
    try:
        with context.store.transaction(write=revoke) as tx:
            lookup.known = dict(zip(secrets, tx.leaks.identify(secrets), strict=True))
            if revoke:
                live = [s for s, key in lookup.known.items() if key and key.status != "revoked"]
                report = tx.leaks.report(
                    [LeakedSecret(secret, source=sources[secret]) for secret in live],
                    cli_actor(),
                    revoke_bound=settings.proof_revoke_leaked,
                )
                outcomes = list(zip(live, report.outcomes, strict=True))
                lookup.revoked_now = {s for s, o in outcomes if o.status == "revoked"}
                lookup.kept_now = {s for s, o in outcomes if o.status == "kept"}
    except (SQLAlchemyError, DomainError, SettingsError, VaultError) as exc:
        return _Lookup(note=f"database lookup failed: {_brief(exc)}", failed=True)
    return lookup


def _source(origin: str) -> str:
    return "stdin" if origin == STDIN_ORIGIN else os.path.abspath(origin)


def _brief(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


# -- output ----------------------------------------------------------------------------

_TEXT_COLUMNS = ["location", "key", "key_id", "tester", "status", "proof_bound"]


def _row(finding: Finding, key_format: KeyFormat, lookup: _Lookup) -> dict[str, Any]:
    known = lookup.known.get(finding.secret)
    if not lookup.checked:
        status = "not_checked"
    elif known is None:
        status = "unknown"
    elif finding.secret in lookup.revoked_now:
        status = "revoked"
    else:
        status = known.status
    return {
        "location": finding.location,
        "path": finding.origin,
        "line": finding.line,
        "column": finding.column,
        "offset": finding.offset,
        "key": key_format.hint(finding.secret),
        "key_id": known.key_id if known else None,
        "tester_id": known.tester_id if known else None,
        "tester_name": known.tester_name if known else None,
        "status": status,
        "revoked_now": finding.secret in lookup.revoked_now,
        # A proof key was bound: the leaked string alone could not have been used.
        "proof_bound": known.proof_bound if known else None,
        "kept_now": finding.secret in lookup.kept_now,
    }


def _text_row(row: dict[str, Any]) -> dict[str, Any]:
    tester = row["tester_id"] and f"{row['tester_id']} ({row['tester_name']})"
    status = row["status"] + (" (revoked now)" if row["revoked_now"] else "")
    if row["kept_now"]:
        status += " (kept: proof-bound)"
    bound = {True: "yes", False: "no", None: "-"}[row["proof_bound"]]
    return {**row, "tester": tester or "-", "status": status, "proof_bound": bound}


def _document(rows: list[dict[str, Any]], scan: _Scan, lookup: _Lookup) -> dict[str, Any]:
    return {
        "findings": rows,
        "scanned": {
            "files": scan.files,
            "bytes": scan.bytes,
            "seconds": round(scan.seconds, 4),
            "cpu_seconds": round(scan.cpu_seconds, 4),
        },
        "looked_up": lookup.checked,
        "note": lookup.note,
        "revoked": sorted({row["key_id"] for row in rows if row["revoked_now"]}),
        "kept_proof_bound": sorted({row["key_id"] for row in rows if row["kept_now"]}),
        "errors": scan.errors,
    }


def _summary(scan: _Scan, lookup: _Lookup) -> str:
    rate = scan.bytes / _MB / scan.seconds if scan.seconds > 0 else 0.0
    scanned = (
        f"{scan.files} file(s), {scan.bytes / _MB:.1f} MB in {scan.seconds:.2f} s ({rate:.0f} MB/s)"
    )
    if not scan.findings:
        return f"no keys found in {scanned}"
    secrets = {finding.secret for finding in scan.findings}
    lines = [f"{len(scan.findings)} finding(s) of {len(secrets)} distinct key(s) in {scanned}"]
    if lookup.checked:
        ours = {s: k for s, k in lookup.known.items() if k is not None}
        live = sum(
            1 for s, k in ours.items() if k.status != "revoked" and s not in lookup.revoked_now
        )
        lines.append(f"{len(ours)} issued by this gateway, {live} still live")
        bound = sum(1 for k in ours.values() if k.proof_bound)
        if bound:
            lines.append(f"{bound} proof-bound: the leaked string alone could not have been used")
        if lookup.revoked_now:
            lines.append(f"revoked now: {len(lookup.revoked_now)}")
        if lookup.kept_now:
            lines.append(f"kept (proof-bound, proof_revoke_leaked = false): {len(lookup.kept_now)}")
    if lookup.note:
        lines.append(lookup.note)
    return "\n".join(lines)
