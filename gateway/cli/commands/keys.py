"""Tester API keys: ``drawbridge keys ...``, the blast-radius ``keys report`` among them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from gateway.cli.base import (
    admin,
    cli_actor,
    domain_errors,
    emit,
    json_option,
    main,
    pretty,
    table,
    transaction,
)
from gateway.presenters import key_view
from keys.durations import parse_duration, parse_time, parse_timestamp
from keys.store import Transaction

# -- keys ------------------------------------------------------------------------------


@main.group("keys")
def keys_group() -> None:
    """Tester API keys."""


def _expiry(tx: Transaction, expires_in: str | None, expires_at: str | None) -> datetime | None:
    if expires_in and expires_at:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    if expires_in:
        return tx.clock() + parse_duration(expires_in, "expires_in")
    if expires_at:
        return parse_timestamp(expires_at, "expires_at")
    return None


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    metadata = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.UsageError(f"--meta takes NAME=VALUE, not {pair!r}")
        metadata[name] = value
    return metadata


@keys_group.command("issue")
@click.argument("tester_id")
@click.option("--expires-in", default=None, help="e.g. 30d")
@click.option("--expires-at", default=None, help="ISO 8601 time with zone")
@click.option("--meta", multiple=True, help="NAME=VALUE, repeatable")
@click.option(
    "--honeytoken",
    is_flag=True,
    help="A key only to be watched: any use is refused as unknown, suspends it and alerts",
)
@json_option
@click.pass_context
def keys_issue(
    ctx: click.Context,
    tester_id: str,
    expires_in: str | None,
    expires_at: str | None,
    meta: tuple[str, ...],
    honeytoken: bool,
    as_json: bool,
) -> None:
    """Issue a key to a tester; the secret is printed once."""
    with domain_errors(), transaction(ctx) as tx:
        issued = tx.keys.issue(
            tester_id,
            cli_actor(),
            _expiry(tx, expires_in, expires_at),
            _metadata(meta),
            honeytoken=honeytoken,
        )
        view = {**key_view(issued.key, tx.clock()), "secret": issued.secret}
    emit(view, as_json, lambda v: f"{pretty(v)}\n\nThe secret is shown once; hand it over now.")


@keys_group.command("list")
@click.option("--tester", "tester_id", default=None)
@json_option
@click.pass_context
def keys_list(ctx: click.Context, tester_id: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    with domain_errors():
        rows = admin(ctx).list_keys(tester_id)
    emit(
        rows,
        as_json,
        lambda r: table(r, ["id", "tester_id", "hint", "status", "expires_at", "last_used_at"]),
    )


@keys_group.command("show")
@click.argument("key_id")
@json_option
@click.pass_context
def keys_show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show one key."""
    with domain_errors():
        view = admin(ctx).show_key(key_id)
    emit(view, as_json, pretty)


def _rotated(view: dict[str, Any]) -> str:
    grace_until = view.get("rotated_from_grace_until")
    old = view.get("rotated_from")
    ends = (
        f"The old key {old} works until {grace_until} (its grace ends then)."
        if grace_until
        else f"The old key {old} stopped working now (no grace)."
    )
    return f"{pretty(view)}\n\n{ends}\nThe secret is shown once; hand it over now."


@keys_group.command("rotate")
@click.argument("key_id")
@click.option("--grace", default="24h", show_default=True, help="How long the old secret works")
@json_option
@click.pass_context
def keys_rotate(ctx: click.Context, key_id: str, grace: str, as_json: bool) -> None:
    """Rotate a key: a new secret now, the old one until the grace period ends."""
    with domain_errors():
        view = admin(ctx).rotate_key(key_id, parse_duration(grace, "grace"))
    emit(view, as_json, _rotated)


@keys_group.command("revoke")
@click.argument("key_id", required=False)
@click.option("--tester", "tester_id", default=None, help="Every key of this tester")
@click.option("--cohort", default=None, help="Every key of this cohort")
@click.option(
    "--issued-before",
    default=None,
    help="Every key issued before this time: ISO 8601, a date, or a span ago (30d)",
)
@click.option("--reason", required=True)
@json_option
@click.pass_context
def keys_revoke(
    ctx: click.Context,
    key_id: str | None,
    tester_id: str | None,
    cohort: str | None,
    issued_before: str | None,
    reason: str,
    as_json: bool,
) -> None:
    """Revoke a key; or every key of a tester; or of a cohort and/or issued before a time."""
    bulk = bool(cohort or issued_before)
    if sum((bool(key_id), bool(tester_id), bulk)) != 1:
        raise click.UsageError("give a KEY_ID, --tester, or --cohort/--issued-before")
    with domain_errors():
        plane = admin(ctx)
        if tester_id:
            revoked = plane.revoke_tester_keys(tester_id, reason)
        elif bulk:
            before = (
                parse_time(issued_before, "issued_before", datetime.now(UTC))
                if issued_before
                else None
            )
            revoked = plane.revoke_matching(reason, cohort, before)
        else:
            revoked = plane.revoke_key(str(key_id), reason)
    emit(
        {"revoked": revoked},
        as_json,
        lambda v: "revoked " + (", ".join(v["revoked"]) or "nothing (no live keys)"),
    )


@keys_group.command("suspend")
@click.argument("key_id")
@click.option("--reason", required=True)
@json_option
@click.pass_context
def keys_suspend(ctx: click.Context, key_id: str, reason: str, as_json: bool) -> None:
    """Suspend a key until resumed."""
    with domain_errors():
        view = admin(ctx).suspend_key(key_id, reason)
    emit(view, as_json, lambda v: f"suspended {v['id']}")


@keys_group.command("resume")
@click.argument("key_id")
@click.option("--reason", default=None)
@json_option
@click.pass_context
def keys_resume(ctx: click.Context, key_id: str, reason: str | None, as_json: bool) -> None:
    """Resume a suspended key."""
    with domain_errors():
        view = admin(ctx).resume_key(key_id, reason)
    emit(view, as_json, lambda v: f"resumed {v['id']}")


@keys_group.command("report")
@click.argument("key_id")
@click.option("--since", default=None, help="ISO time, date, or span ago (default: key creation)")
@click.option("--until", default=None, help="Same forms (default: now)")
@json_option
@click.pass_context
def keys_report(
    ctx: click.Context, key_id: str, since: str | None, until: str | None, as_json: bool
) -> None:
    """Blast radius: everything a key did since a time, for the incident write-up."""
    with domain_errors():
        view = admin(ctx).key_report(key_id, since, until)
    emit(view, as_json, _render_key_report)


def _render_key_report(view: dict[str, Any]) -> str:
    lines = [
        f"key {view['key_id']} (tester {view['tester_id']}) from {view['since']} "
        f"until {view['until']}",
        f"requests: {view['requests']} (first {view['first_seen'] or '-'}, "
        f"last {view['last_seen'] or '-'})",
        f"outcomes: {', '.join(f'{k} {v}' for k, v in view['outcomes'].items()) or '-'}",
        f"generations: {view['generations']}, video-seconds: {view['video_seconds']}, "
        f"videos created: {view['videos_created']}",
    ]
    if view["revoked_at"]:
        lines.append(
            f"revoked at {view['revoked_at']}; refused attempts since: "
            f"{view['refused_after_revocation']}"
        )
    proofs = view["refused_proofs"]
    lines.append(
        f"proof key bound: {'yes' if view['proof_bound'] else 'no'}; refused proofs: "
        + ", ".join(f"{code} {count}" for code, count in proofs.items())
    )
    sections = [
        ("requests by route", view["by_route"], ["route", "method", "status", "count"]),
        (
            f"client IPs ({view['distinct_client_ips']} distinct)",
            view["client_ips"],
            ["client_ip", "count", "first_seen", "last_seen"],
        ),
        (
            f"user agents ({view['distinct_user_agents']} distinct)",
            view["user_agents"],
            ["user_agent", "count", "first_seen", "last_seen"],
        ),
        ("videos", view["videos"], ["id", "created_at", "status", "video_seconds", "deleted_at"]),
    ]
    if any(proofs.values()):
        sections.append(
            (
                "refused proofs (the string without the proof key), by client IP",
                view["refused_proof_ips"],
                ["client_ip", "count", "first_seen", "last_seen"],
            )
        )
    if view.get("refusals_by_day"):
        sections.append(
            (
                "refusals before admission, counted per day",
                view["refusals_by_day"],
                ["day", "error_code", "status", "requests", "first_seen", "last_seen"],
            )
        )
    if view["revoked_at"]:
        sections.append(
            (
                "refused after revocation, by client IP",
                view["refused_after_revocation_ips"],
                ["client_ip", "count", "first_seen", "last_seen"],
            )
        )
    for title, rows, columns in sections:
        lines += ["", f"{title}:", table(rows, columns)]
    return "\n".join(lines)


# -- proof of possession ---------------------------------------------------------------


@keys_group.command("new-proof-key")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--algorithm",
    type=click.Choice(["ed25519", "p256"]),
    default="ed25519",
    show_default=True,
)
@json_option
def keys_new_proof_key(path: str, algorithm: str, as_json: bool) -> None:
    """For testers: make a proof key pair on this machine.

    The private key goes to PATH (mode 0600; an existing file is never overwritten) and
    stays there. The public key is printed: bind it to your API key (POST /v1/me/proof-keys,
    or ask an admin: `drawbridge keys bind KEY_ID --public-key FILE`).
    """
    from gateway.client import new_proof_key
    from keys.access.proof_keys import ECDSA_P256, ED25519, parse_public_key

    try:
        public = new_proof_key(path, ED25519 if algorithm == "ed25519" else ECDSA_P256)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; a proof key is never overwritten") from None
    parsed = parse_public_key(public)
    if as_json:
        view = {
            "path": path,
            "algorithm": parsed.algorithm,
            "thumbprint": parsed.thumbprint,
            "public_key": parsed.pem,
        }
        emit(view, True, pretty)
        return
    click.echo(public, nl=False)
    click.echo(
        f"\nPrivate key written to {path} (keep it there; never share it).\n"
        f"Thumbprint (keyid): {parsed.thumbprint}\n"
        "Bind the public key above to your API key; see docs/proof-of-possession.md.",
        err=True,
    )


@keys_group.command("bind")
@click.argument("key_id")
@click.option(
    "--public-key",
    "public_key_file",
    type=click.File("r"),
    required=True,
    help="The tester's public key, PEM ('-' for stdin)",
)
@click.option("--replace", is_flag=True, help="Swap the proof key bound now for this one")
@json_option
@click.pass_context
def keys_bind(
    ctx: click.Context, key_id: str, public_key_file: Any, replace: bool, as_json: bool
) -> None:
    """Bind a public key to a key: from then on its string alone is refused."""
    with domain_errors():
        view = admin(ctx).bind_proof_key(key_id, public_key_file.read(2048), replace)
    emit(
        view,
        as_json,
        lambda v: f"bound {v['id']} ({v['algorithm']}, {v['thumbprint']}) to {key_id}",
    )


@keys_group.command("unbind")
@click.argument("key_id")
@json_option
@click.pass_context
def keys_unbind(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Remove the proof key bound to a key."""
    with domain_errors():
        view = admin(ctx).unbind_proof_key(key_id)
    emit(view, as_json, lambda v: f"unbound {v['id']} from {key_id}")
