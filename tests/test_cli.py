"""The drawbridge CLI: the same domain actions as the admin API, with --json listings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from keys.store import Store
from tests.helpers import TEST_ROOT_SECRET

pytestmark = pytest.mark.both_databases

Run = Callable[..., Result]


@pytest.fixture
def run(database_url: str) -> Run:
    runner = CliRunner()
    env = {"DRAWBRIDGE_DATABASE_URL": database_url, "DRAWBRIDGE_ROOT_SECRET": TEST_ROOT_SECRET}

    def invoke(*args: str, ok: bool = True, stdin: str | None = None) -> Result:
        result = runner.invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def as_json(result: Result) -> Any:
    return json.loads(result.output)


def test_tester_key_lifecycle_through_the_cli(run: Run, store: Store) -> None:
    tester = as_json(run("testers", "add", "Grace", "--email", "grace@example.com", "--json"))
    issued = as_json(
        run("keys", "issue", tester["id"], "--expires-in", "30d", "--meta", "team=red", "--json")
    )
    assert issued["secret"].startswith("drwb_") and issued["metadata"] == {"team": "red"}
    with store.read() as tx:
        assert tx.keys.verify(issued["secret"]).key_id == issued["id"]

    listed = as_json(run("keys", "list", "--tester", tester["id"], "--json"))
    assert [key["id"] for key in listed] == [issued["id"]]
    assert issued["secret"] not in json.dumps(listed)
    shown = run("keys", "show", issued["id"]).output
    assert issued["id"] in shown and issued["secret"] not in shown

    rotated = as_json(run("keys", "rotate", issued["id"], "--grace", "0", "--json"))
    assert rotated["rotated_from"] == issued["id"]
    run("keys", "suspend", rotated["id"], "--reason", "checking")
    run("keys", "resume", rotated["id"])
    run("keys", "revoke", rotated["id"], "--reason", "leaked in a gist")
    final = as_json(run("keys", "show", rotated["id"], "--json"))
    assert final["status"] == "revoked"
    assert final["revoked"]["reason"] == "leaked in a gist"
    assert final["revoked"]["by"].startswith("cli:")


def test_revoke_every_key_of_a_tester(run: Run) -> None:
    tester = as_json(run("testers", "add", "Lin", "--email", "lin@example.com", "--json"))
    ids = {as_json(run("keys", "issue", tester["id"], "--json"))["id"] for _ in range(2)}
    output = run("keys", "revoke", "--tester", tester["id"], "--reason", "left program").output
    assert all(key_id in output for key_id in ids)


def test_errors_are_one_line_and_exit_1(run: Run) -> None:
    result = run("keys", "revoke", "key_missing", "--reason", "x", ok=False)
    assert result.exit_code == 1 and "no key key_missing (not_found)" in result.output
    result = run("testers", "add", "X", "--email", "not-an-email", ok=False)
    assert result.exit_code == 1 and "invalid_value" in result.output
    result = run("keys", "revoke", "--reason", "x", ok=False)
    assert result.exit_code == 2


def test_tokens_and_listings(run: Run) -> None:
    token = as_json(run("tokens", "create", "--name", "ops", "--role", "auditor", "--json"))
    assert token["secret"].startswith("drwbadm_")
    listed = as_json(run("tokens", "list", "--json"))
    assert [t["role"] for t in listed] == ["auditor"] and token["secret"] not in json.dumps(listed)
    run("tokens", "revoke", token["id"], "--reason", "rotation")
    assert as_json(run("tokens", "list", "--json"))[0]["revoked_at"]
    assert "ops" in run("tokens", "list").output
    assert as_json(run("testers", "list", "--json")) == []


def test_audit_verify_and_db_upgrade(run: Run) -> None:
    run("testers", "add", "Ola", "--email", "ola@example.com")
    assert "OK: 1 entry, 0 checkpoints verified" in run("audit", "verify").output
    assert "is current" in run("db", "upgrade").output


def test_secrets_encrypt_round_trips(run: Run, store: Store) -> None:
    token = run("secrets", "encrypt", stdin="sk-master-credential\n").output.strip()
    assert "sk-master-credential" not in token
    from keys.vault import Vault

    assert Vault(TEST_ROOT_SECRET).decrypt(token) == "sk-master-credential"
    assert len(run("secrets", "new-root").output.strip()) >= 43
