"""The CLI's remote mode: role tokens through ``/admin/v1``, no database, no root secret.

The gateway is served over real TCP (werkzeug in a thread); the CLI runs with neither the
database URL nor the root secret in its environment, so everything it shows came through
the admin API, with the server enforcing the token's role.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import update
from werkzeug.serving import make_server

from gateway.cli.remote import EXIT_NOT_ALLOWED, EXIT_UNREACHABLE
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.models import AuditEntry
from keys.records.usage import UsageRecord
from keys.store import Store
from tests.helpers import Cli, free_port

pytestmark = pytest.mark.both_databases

Run = Callable[..., Result]
# Remote mode must not lean on these: they are unset for every remote run.
NO_LOCAL_ACCESS = {"DRAWBRIDGE_DATABASE_URL": None, "DRAWBRIDGE_ROOT_SECRET": None}


@pytest.fixture
def server(app: Any) -> Iterator[str]:
    """The gateway on 127.0.0.1 over TCP, for the length of one test."""
    http = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(5)


@pytest.fixture
def remote(cli: Cli, server: str) -> Run:
    """``remote(token, *args)``: the CLI as an auditor or approver runs it, from afar."""

    def invoke(token: IssuedToken | str, *args: str, ok: bool = True) -> Result:
        secret = token if isinstance(token, str) else token.secret
        env = {**NO_LOCAL_ACCESS, "DRAWBRIDGE_SERVER": server, "DRAWBRIDGE_TOKEN": secret}
        result = cli(*args, env=env, code=None)
        assert secret not in result.output
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def _usage(store: Store, key: IssuedKey, count: int) -> None:
    with store.transaction() as tx:
        for _ in range(count):
            tx.usage.record(
                UsageRecord(
                    at=store.clock(),
                    request_id=f"req_{uuid.uuid4().hex}",
                    method="GET",
                    route="/v1/videos",
                    status=200,
                    outcome="ok",
                    tester_id=key.key.tester_id,
                    key_id=key.key.id,
                )
            )


def _held_share(store: Store, key: IssuedKey) -> str:
    with store.transaction() as tx:
        return tx.approvals.hold(
            "share", key.key.tester_id, key.key.id, "video_remote1", "sharing needs approval"
        ).id


def test_an_auditor_runs_the_usage_report_remotely(
    remote: Run, cli: Cli, auditor: IssuedToken, store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key()
    _usage(store, key, 3)

    rows = json.loads(remote(auditor, "usage", "report", "--json").output)

    assert [(row["tester_id"], row["requests"]) for row in rows] == [(key.key.tester_id, 3)]
    # The same rows as the operator's local report: one presenter, two transports.
    assert rows == json.loads(cli("usage", "report", "--json").output)
    table = remote(auditor, "usage", "report").output
    assert key.key.tester_id in table and "REQUESTS" in table


def test_an_auditor_verifies_the_audit_trail_remotely(
    remote: Run, cli: Cli, auditor: IssuedToken, store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    for _ in range(3):
        make_key()
    expected = cli("audit", "verify", "--json").output

    verified = json.loads(remote(auditor, "audit", "verify", "--json").output)

    assert verified == json.loads(expected)
    assert verified["ok"] and verified["entries"] >= 6 and verified["key_id"]
    assert remote(auditor, "audit", "verify").output.startswith(
        f"OK: {verified['entries']} entries, "
    )

    # Verified on the auditor's side: an entry rewritten in the database is caught.
    with store.transaction() as tx:
        tx.session.execute(
            update(AuditEntry).where(AuditEntry.seq == 2).values(reason="nothing to see")
        )
    broken = remote(auditor, "audit", "verify", ok=False)
    assert broken.exit_code == 1 and "audit trail broken at seq 2" in broken.output


def test_an_approver_approves_remotely(
    remote: Run, approver: IssuedToken, store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    approval_id = _held_share(store, make_key())

    pending = json.loads(remote(approver, "approvals", "list", "--json").output)
    assert [row["id"] for row in pending] == [approval_id]

    decided = json.loads(
        remote(approver, "approvals", "approve", approval_id, "--reason", "fine", "--json").output
    )

    assert decided["status"] == "approved"
    with store.read() as tx:
        approval = tx.approvals.get(approval_id)
        assert approval.status == "approved"
        assert approval.decided_by == f"approver:{approver.token.id}:Reviewer"
    again = remote(approver, "approvals", "approve", approval_id, ok=False)
    assert again.exit_code == 1 and "(already_decided)" in again.output


def test_an_auditor_is_refused_a_write(
    remote: Run, auditor: IssuedToken, store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key()
    approval_id = _held_share(store, key)

    revoke = remote(auditor, "keys", "revoke", key.key.id, "--reason", "curious", ok=False)
    approve = remote(auditor, "approvals", "approve", approval_id, ok=False)
    lockdown = remote(auditor, "lockdown", "on", "--reason", "drill", ok=False)

    for result in (revoke, approve, lockdown):
        assert result.exit_code == EXIT_NOT_ALLOWED, result.output
        assert "your token has the role auditor" in result.output
        assert "(permission_denied)" in result.output
    with store.read() as tx:
        assert tx.keys.get(key.key.id).status == "active"
        assert tx.approvals.get(approval_id).status == "pending"
    # Reads are the auditor's to make.
    assert json.loads(remote(auditor, "keys", "show", key.key.id, "--json").output)["id"] == (
        key.key.id
    )


def test_an_admin_manages_keys_and_the_kill_switch_remotely(
    remote: Run, make_token: Callable[..., IssuedToken], make_key: Callable[..., IssuedKey]
) -> None:
    admin = make_token("admin", "Ops")
    key = make_key()

    listed = json.loads(remote(admin, "keys", "list", "--json").output)
    assert [row["id"] for row in listed] == [key.key.id]
    suspended = json.loads(
        remote(admin, "keys", "suspend", key.key.id, "--reason", "check", "--json").output
    )
    assert suspended["status"] == "suspended"
    remote(admin, "keys", "resume", key.key.id)
    rotated = remote(admin, "keys", "rotate", key.key.id, "--grace", "1h").output
    assert f"The old key {key.key.id} works until" in rotated
    assert json.loads(remote(admin, "lockdown", "on", "--reason", "drill", "--json").output)[
        "lockdown"
    ]
    assert remote(admin, "lockdown", "status").output.startswith("ON (drill, by admin:")
    remote(admin, "lockdown", "off")
    assert remote(admin, "lockdown", "status", "--json").output.count('"lockdown": false') == 1


def test_the_token_comes_from_a_file_and_is_required(
    cli: Cli, server: str, auditor: IssuedToken, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(auditor.secret + "\n")
    env = {**NO_LOCAL_ACCESS, "DRAWBRIDGE_TOKEN": None}

    ok = cli(
        *("--server", server, "--token-file", str(token_file), "testers", "list", "--json"),
        env=env,
        code=None,
    )
    missing = cli("--server", server, "testers", "list", env=env, code=None)

    assert ok.exit_code == 0 and json.loads(ok.output) == []
    assert missing.exit_code == 2 and "--server needs a token" in missing.output


def test_local_only_commands_say_so_and_a_dead_server_is_exit_4(
    cli: Cli, remote: Run, auditor: IssuedToken
) -> None:
    local_only = remote(auditor, "tokens", "list", ok=False)
    assert local_only.exit_code == 2 and "does not run with --server" in local_only.output

    env = {
        **NO_LOCAL_ACCESS,
        "DRAWBRIDGE_SERVER": f"http://127.0.0.1:{free_port()}",
        "DRAWBRIDGE_TOKEN": auditor.secret,
    }
    dead = cli("keys", "list", env=env, code=None)
    assert dead.exit_code == EXIT_UNREACHABLE and "cannot reach" in dead.output
    assert auditor.secret not in dead.output


def test_remote_export_streams_the_same_csv(
    remote: Run,
    cli: Cli,
    auditor: IssuedToken,
    store: Store,
    make_key: Callable[..., IssuedKey],
    tmp_path: Path,
) -> None:
    _usage(store, make_key(), 5)
    out = tmp_path / "usage.csv"

    result = remote(auditor, "usage", "export", "-o", str(out), "--json", "--progress")

    assert json.loads(result.stdout) == {"events": 5, "output": str(out), "format": "csv"}
    assert "exported 5 events" in result.stderr  # the progress line
    assert out.read_text() == cli("usage", "export").output
