"""The drawbridge CLI: the same domain actions as the admin API, with --json listings."""

from __future__ import annotations

import json
import re
from typing import Any

import click
import pytest
from click.testing import Result

from gateway.cli import main
from keys.store import Store
from tests.helpers import TEST_ROOT_SECRET, Cli

pytestmark = pytest.mark.both_databases


def as_json(result: Result) -> Any:
    return json.loads(result.output)


def test_tester_key_lifecycle_through_the_cli(cli: Cli, store: Store) -> None:
    tester = as_json(cli("testers", "add", "Grace", "--email", "grace@example.com", "--json"))
    issued = as_json(
        cli("keys", "issue", tester["id"], "--expires-in", "30d", "--meta", "team=red", "--json")
    )
    assert issued["secret"].startswith("drwb_") and issued["metadata"] == {"team": "red"}
    with store.read() as tx:
        assert tx.keys.verify(issued["secret"]).key_id == issued["id"]

    listed = as_json(cli("keys", "list", "--tester", tester["id"], "--json"))
    assert [key["id"] for key in listed] == [issued["id"]]
    assert issued["secret"] not in json.dumps(listed)
    shown = cli("keys", "show", issued["id"]).output
    assert issued["id"] in shown and issued["secret"] not in shown

    rotated = as_json(cli("keys", "rotate", issued["id"], "--grace", "0", "--json"))
    assert rotated["rotated_from"] == issued["id"]
    cli("keys", "suspend", rotated["id"], "--reason", "checking")
    cli("keys", "resume", rotated["id"])
    cli("keys", "revoke", rotated["id"], "--reason", "leaked in a gist")
    final = as_json(cli("keys", "show", rotated["id"], "--json"))
    assert final["status"] == "revoked"
    assert final["revoked"]["reason"] == "leaked in a gist"
    assert final["revoked"]["by"].startswith("cli:")


def test_revoke_every_key_of_a_tester(cli: Cli) -> None:
    tester = as_json(cli("testers", "add", "Lin", "--email", "lin@example.com", "--json"))
    ids = {as_json(cli("keys", "issue", tester["id"], "--json"))["id"] for _ in range(2)}
    output = cli("keys", "revoke", "--tester", tester["id"], "--reason", "left program").output
    assert all(key_id in output for key_id in ids)


def test_errors_are_one_line_and_exit_1(cli: Cli) -> None:
    result = cli("keys", "revoke", "key_missing", "--reason", "x", code=None)
    assert result.exit_code == 1 and "no key key_missing (not_found)" in result.output
    result = cli("testers", "add", "X", "--email", "not-an-email", code=None)
    assert result.exit_code == 1 and "invalid_value" in result.output
    result = cli("keys", "revoke", "--reason", "x", code=None)
    assert result.exit_code == 2


def test_tokens_and_listings(cli: Cli) -> None:
    token = as_json(cli("tokens", "create", "--name", "ops", "--role", "auditor", "--json"))
    assert token["secret"].startswith("drwbadm_")
    listed = as_json(cli("tokens", "list", "--json"))
    assert [t["role"] for t in listed] == ["auditor"] and token["secret"] not in json.dumps(listed)
    cli("tokens", "revoke", token["id"], "--reason", "rotation")
    assert as_json(cli("tokens", "list", "--json"))[0]["revoked_at"]
    assert "ops" in cli("tokens", "list").output
    assert as_json(cli("testers", "list", "--json")) == []


def test_audit_verify_and_db_upgrade(cli: Cli) -> None:
    cli("testers", "add", "Ola", "--email", "ola@example.com")
    assert "OK: 1 entry, 0 checkpoints verified" in cli("audit", "verify").output
    assert "is already at" in cli("db", "upgrade").output


def test_secrets_encrypt_round_trips(cli: Cli, store: Store) -> None:
    token = cli("secrets", "encrypt", stdin="sk-master-credential\n").output.strip()
    assert "sk-master-credential" not in token
    from keys.access.vault import Vault

    assert Vault(TEST_ROOT_SECRET).decrypt(token) == "sk-master-credential"
    assert len(cli("secrets", "new-root").output.strip()) >= 43


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


# Servers run until stopped: there is no result to print as JSON.
SERVERS = {("serve",), ("simulator",), ("demo",)}


def test_every_command_takes_json() -> None:
    missing = [
        " ".join(path)
        for path in _commands(main)
        if path not in SERVERS
        and "--json" not in {opt for param in _command(path).params for opt in param.opts}
    ]

    assert missing == []


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_version(cli: Cli) -> None:
    output = cli("--version").output

    assert output.startswith("drawbridge, version ") and output.strip()[-1].isdigit()


def test_human_output_has_no_python_reprs(cli: Cli) -> None:
    tester = as_json(cli("testers", "add", "Ines", "--email", "ines@example.com", "--json"))
    key = as_json(cli("keys", "issue", tester["id"], "--json"))
    cli("keys", "suspend", key["id"], "--reason", "checking")

    outputs = [
        cli("keys", "show", key["id"]).output,
        cli("keys", "list").output,
        cli("lockdown", "status").output,
        cli("approvals", "list").output,
    ]

    for output in outputs:
        assert not re.search(r"\bNone\b|\{'|\['|\bTrue\b|\bFalse\b", output), output
    shown = outputs[0]
    assert "suspended: at=" in shown and "reason=checking" in shown
    assert "metadata" not in shown or "metadata: -" in shown


def test_action_commands_print_json_on_request(cli: Cli) -> None:
    tester = as_json(cli("testers", "add", "Jo", "--email", "jo@example.com", "--json"))
    key = as_json(cli("keys", "issue", tester["id"], "--json"))

    suspended = as_json(cli("keys", "suspend", key["id"], "--reason", "x", "--json"))
    revoked = as_json(cli("keys", "revoke", key["id"], "--reason", "x", "--json"))
    lockdown = as_json(cli("lockdown", "on", "--reason", "drill", "--json"))
    verified = as_json(cli("audit", "verify", "--json"))

    assert suspended["status"] == "suspended" and revoked == {"revoked": [key["id"]]}
    assert lockdown["lockdown"] is True and lockdown["reason"] == "drill"
    assert verified["ok"] is True and verified["entries"] == 5
    assert as_json(cli("lockdown", "off", "--json"))["lockdown"] is False


def test_rotate_says_when_the_old_keys_grace_ends(cli: Cli) -> None:
    tester = as_json(cli("testers", "add", "Kai", "--email", "kai@example.com", "--json"))
    key = as_json(cli("keys", "issue", tester["id"], "--json"))

    output = cli("keys", "rotate", key["id"], "--grace", "2h").output

    shown = as_json(cli("keys", "show", key["id"], "--json"))
    assert f"The old key {key['id']} works until {shown['grace_until']}" in output


def test_policies_apply_reads_stdin(cli: Cli) -> None:
    policies = '[cohorts.press]\ngenerations_per_day = 3\nmodels = ["sora-2"]\n'

    result = cli("policies", "apply", "-", "--json", stdin=policies)

    assert as_json(result) == [{"cohort": "press", "changed": True}]
    shown = as_json(cli("policies", "show", "press", "--json"))
    assert shown["policy"]["generations_per_day"] == 3
    bad = cli("policies", "apply", "-", stdin="[cohorts.press]\nbogus = 1\n", code=None)
    assert bad.exit_code == 1 and "<stdin>:" in bad.output


def test_singular_and_plural(cli: Cli) -> None:
    cli("testers", "add", "Lu", "--email", "lu@example.com")

    assert "OK: 1 entry, 0 checkpoints verified" in cli("audit", "verify").output
    assert "would delete 0 usage events" in cli("usage", "prune", "--dry-run").output


def test_prune_reports_progress_on_stderr_when_asked(cli: Cli) -> None:
    result = cli("usage", "prune", "--progress")

    assert "deleted 0 usage events so far" in result.stderr
    assert "so far" not in result.stdout
    assert "so far" not in cli("usage", "prune").stderr


def test_audit_export_reports_progress_on_stderr_when_asked(
    cli: Cli, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keys.records.audit_export.PROGRESS_EVERY", 1)
    cli("testers", "add", "Mo", "--email", "mo@example.com")

    result = cli("audit", "export", str(tmp_path / "export"), "--progress", "--json")

    assert "exported 1 entry so far" in result.stderr
    assert json.loads(result.stdout) == {
        "directory": str(tmp_path / "export"),
        "entries": 1,
        "checkpoints": 0,
        "key_id": as_json(cli("audit", "verify", "--json"))["key_id"],
    }
