"""Signed audit checkpoints: made every N entries, verified by signature and hash; exports
verified offline; entries cut off the end found against an earlier export."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from gateway.settings import SettingsError, load_settings
from gateway.state import build_store
from keys.access.admin_tokens import IssuedToken
from keys.access.vault import Vault, new_root_secret
from keys.models import AuditCheckpoint, AuditEntry
from keys.records.audit import (
    GENESIS_HASH,
    AuditTrail,
    ChainLink,
    SignedCheckpoint,
    canonical_entry,
    canonical_time,
    chain_hash,
    checkpoint_message,
    verify_entries,
)
from keys.records.audit_export import verify_export
from keys.records.audit_signing import AUDIT_SIGNING_PURPOSE, AuditSigner, AuditVerifier
from keys.store import Store
from tests.helpers import TEST_ROOT_SECRET, Cli, FakeClock, bearer

pytestmark = pytest.mark.both_databases

EVERY = 5
DOCS = Path(__file__).parents[2] / "docs" / "audit.md"
# No database and no root secret, so any use of either fails the command.
OFFLINE = {"DRAWBRIDGE_DATABASE_URL": "sqlite:////nonexistent/db", "DRAWBRIDGE_ROOT_SECRET": None}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"audit_checkpoint_every": EVERY}


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream in batches of 3, so exports and verification cross batch boundaries while
    reading entries and checkpoints side by side."""
    monkeypatch.setattr("keys.records.audit._STREAM_BATCH", 3)


def append(store: Store, count: int, start: int = 1) -> None:
    for number in range(start, start + count):
        with store.transaction() as tx:
            tx.audit.append("admin:alice", "key.revoke", f"key_{number}", reason=f"r{number}")


def checkpoint_seqs(store: Store) -> list[int]:
    with store.read() as tx:
        return [checkpoint.seq for checkpoint in tx.audit.checkpoints()]


def verify(store: Store) -> tuple[bool, int | None]:
    with store.read() as tx:
        result = tx.audit.verify()
    return result.ok, result.first_bad_seq


@pytest.fixture
def trail(store: Store) -> Store:
    """Twelve entries: checkpoints at 5 and 10, entries 11 and 12 not yet covered."""
    append(store, 12)
    return store


@pytest.fixture
def export(trail: Store, cli: Cli, tmp_path: Path) -> Path:
    directory = tmp_path / "export"
    output = cli("audit", "export", str(directory)).output
    assert "exported 12 entries and 2 checkpoints" in output
    return directory


# -- making and checking checkpoints ---------------------------------------------------


def test_checkpoints_appear_every_n_entries_and_verify(trail: Store) -> None:
    assert checkpoint_seqs(trail) == [5, 10]
    with trail.read() as tx:
        result = tx.audit.verify()
        entries = {entry.seq: entry.hash for entry in tx.audit.entries()}
        checkpoints = tx.audit.checkpoints()
    assert (result.ok, result.entries, result.checkpoints, result.covered_seq) == (
        True,
        12,
        2,
        10,
    )
    public = AuditVerifier.from_pem(trail.audit_signer.public_key_pem())  # type: ignore[union-attr]
    for checkpoint in checkpoints:
        assert checkpoint.hash == entries[checkpoint.seq]
        assert checkpoint.key_id == public.key_id
        assert public.verify(checkpoint.message(), checkpoint.signature)


def test_a_checkpoint_is_due_once_the_last_is_old(store: Store, clock: FakeClock) -> None:
    append(store, 2)
    assert checkpoint_seqs(store) == []
    clock.advance(seconds=299)
    append(store, 1, start=3)
    assert checkpoint_seqs(store) == []
    clock.advance(seconds=1)  # 300 s after the start of the trail, before any checkpoint
    append(store, 1, start=4)
    assert checkpoint_seqs(store) == [4]
    append(store, 1, start=5)
    assert checkpoint_seqs(store) == [4, 5]  # every N still holds
    clock.advance(seconds=300)
    append(store, 1, start=6)
    assert checkpoint_seqs(store) == [4, 5, 6]
    assert verify(store) == (True, None)


def test_the_signing_key_comes_from_the_root_secret(store: Store) -> None:
    expected = AuditSigner(Vault(TEST_ROOT_SECRET).derive(AUDIT_SIGNING_PURPOSE))
    assert store.audit_signer is not None and store.audit_signer.key_id == expected.key_id
    other = AuditSigner(Vault(new_root_secret()).derive(AUDIT_SIGNING_PURPOSE))
    assert other.key_id != expected.key_id
    assert re.fullmatch(r"[0-9a-f]{16}", expected.key_id)
    assert "PRIVATE" not in repr(expected) and "BEGIN" not in repr(expected)


def test_bad_checkpoint_settings_are_refused() -> None:
    for values in ({"audit_checkpoint_every": 0}, {"audit_checkpoint_seconds": -1}):
        settings = load_settings(environ={}, **values)
        with pytest.raises(SettingsError, match="audit checkpoints"):
            build_store(settings, Vault(TEST_ROOT_SECRET))


@pytest.mark.parametrize(
    ("claimed", "problem"),
    [
        ("forger", "checkpoint signed by key {forger}, not by {ours}"),
        ("ours", "checkpoint signature does not verify"),
    ],
)
def test_a_checkpoint_signed_by_another_key_is_found(
    trail: Store, claimed: str, problem: str
) -> None:
    forger = AuditSigner(b"\x07" * 32)
    ours = trail.audit_signer.key_id  # type: ignore[union-attr]
    key_id = forger.key_id if claimed == "forger" else ours
    with trail.transaction() as tx:
        checkpoint = tx.session.get(AuditCheckpoint, 5)
        assert checkpoint is not None
        message = checkpoint_message(5, checkpoint.hash, canonical_time(checkpoint.at), key_id)
        checkpoint.signature, checkpoint.key_id = forger.sign(message), key_id
    with trail.read() as tx:
        result = tx.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert result.problem == problem.format(forger=forger.key_id, ours=ours)


def test_a_checkpoint_with_another_hash_is_found(trail: Store) -> None:
    with trail.transaction() as tx:
        tx.session.execute(
            update(AuditCheckpoint).where(AuditCheckpoint.seq == 10).values(hash="a" * 64)
        )
    assert verify(trail) == (False, 10)


def test_a_rewritten_chain_is_found_by_the_first_checkpoint_after_the_edit(trail: Store) -> None:
    # The attacker edits entry 3 and recomputes every hash after it: the chain alone is
    # consistent again, but the signed checkpoint at 5 still names the old hash.
    with trail.transaction() as tx:
        entries = list(tx.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
        entries[2].reason = "nothing to see"
        prev = entries[1].hash
        for entry in entries[2:]:
            canonical = canonical_entry(
                entry.seq,
                entry.at,
                entry.actor,
                entry.action,
                entry.target,
                entry.reason,
                entry.details,
            )
            entry.prev_hash, entry.hash = prev, "~" + str(entry.seq)  # unique while flushing
            tx.session.flush()
            entry.hash = prev = chain_hash(entry.prev_hash, canonical)
    with trail.read() as tx:
        assert verify_entries(tx.audit.entries()).ok
        result = tx.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "signed checkpoint" in (result.problem or "")


def test_deleting_entries_but_not_their_checkpoint_is_found(trail: Store) -> None:
    with trail.transaction() as tx:
        tx.session.execute(delete(AuditEntry).where(AuditEntry.seq > 8))
    assert verify(trail) == (False, 10)


def test_checkpoints_without_a_key_to_check_them_fail(trail: Store) -> None:
    with trail.read() as tx:
        unsigned = AuditTrail(tx.session, trail.clock)
        result = unsigned.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)


# -- truncation, against an earlier export ---------------------------------------------


def truncate(store: Store, keep: int) -> None:
    """Cut entries off the end, with the checkpoints that would give it away."""
    with store.transaction() as tx:
        tx.session.execute(delete(AuditEntry).where(AuditEntry.seq > keep))
        tx.session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq > keep))


def test_truncation_is_caught_against_an_earlier_export_only(
    export: Path, trail: Store, cli: Cli
) -> None:
    assert "matches all 3 anchors" in cli("audit", "verify", "--against", str(export)).output
    truncate(trail, keep=8)

    assert "OK: 8 entries, 1 checkpoint verified" in cli("audit", "verify").output
    result = cli("audit", "verify", "--against", str(export), code=1)
    assert "broken at seq 10:" in result.output and "ends at seq 8" in result.output
    checkpoint_file = export / "checkpoints.jsonl"
    result = cli("audit", "verify", "--against", str(checkpoint_file), code=1)
    assert "broken at seq 10:" in result.output


def test_cutting_the_unsigned_tail_is_caught_by_the_exported_head(
    export: Path, trail: Store, cli: Cli
) -> None:
    truncate(trail, keep=11)
    assert cli("audit", "verify").output.startswith("OK: 11 entries, 2 checkpoints verified")
    result = cli("audit", "verify", "--against", str(export), code=1)
    assert "broken at seq 12:" in result.output and "exported head entry" in result.output


def test_a_rewrite_after_the_export_is_caught_against_it(
    export: Path, trail: Store, cli: Cli
) -> None:
    truncate(trail, keep=8)
    append(trail, 4, start=100)  # the same seqs again, other contents
    assert "OK: 12 entries, 2 checkpoints verified" in cli("audit", "verify").output
    result = cli("audit", "verify", "--against", str(export), code=1)
    assert "broken at seq 10:" in result.output and "differs" in result.output


def test_a_forged_checkpoint_file_is_refused_as_an_anchor(
    export: Path, trail: Store, cli: Cli, tmp_path: Path
) -> None:
    forged = SignedCheckpoint(12, "b" * 64, canonical_time(trail.clock()), "0" * 16, "0" * 128)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps({"object": "list", "data": [forged.as_record()]}))
    result = cli("audit", "verify", "--against", str(path), code=1)
    assert "not signed by key" in result.output


def test_api_listing_saved_as_a_file_serves_as_an_anchor(
    trail: Store, client: Any, auditor: IssuedToken, cli: Cli, tmp_path: Path
) -> None:
    listing = client.get("/admin/v1/audit/checkpoints", headers=bearer(auditor.secret))
    path = tmp_path / "checkpoints.json"
    path.write_bytes(listing.get_data())
    cli("audit", "verify", "--against", str(path))
    truncate(trail, keep=9)
    assert "broken at seq 10:" in cli("audit", "verify", "--against", str(path), code=1).output


# -- exports, verified offline ---------------------------------------------------------


def test_export_round_trip_verifies_offline(export: Path, trail: Store, cli: Cli) -> None:
    assert sorted(p.name for p in export.iterdir()) == [
        "README.txt",
        "checkpoints.jsonl",
        "entries.jsonl",
        "public_key.pem",
    ]
    lines = (export / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == [
        *("seq", "at", "actor", "action", "target", "reason", "details", "prev_hash", "hash")
    ]
    assert first["prev_hash"] == GENESIS_HASH and len(lines) == 12
    assert ChainLink(**first).computed_hash() == first["hash"]
    key_id = trail.audit_signer.key_id  # type: ignore[union-attr]
    assert key_id in (export / "README.txt").read_text()

    output = cli("audit", "verify-export", str(export), env=OFFLINE).output
    assert output.startswith("OK: 12 entries, 2 checkpoints verified")
    assert f"signing key id: {key_id}" in output and "entries 11-12 are not yet covered" in output
    pinned = cli(
        "audit", "verify-export", str(export), "--public-key", str(export / "public_key.pem")
    )
    assert "OK: 12 entries, 2 checkpoints verified" in pinned.output
    assert "out of band" not in pinned.output


def test_export_refuses_a_directory_in_use(export: Path, cli: Cli) -> None:
    assert "not an empty directory" in cli("audit", "export", str(export), code=1).output


def test_an_edited_line_of_the_export_is_found_at_its_seq(export: Path, cli: Cli) -> None:
    path = export / "entries.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[3])
    record["reason"] = "nothing to see"
    lines[3] = json.dumps(record) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    result = cli("audit", "verify-export", str(export), code=1, env=OFFLINE)
    assert "export broken at seq 4: contents do not match their hash" in result.output


def test_a_malformed_or_missing_line_is_found(export: Path) -> None:
    path = export / "entries.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([*lines[:6], '{"seq": 7, "seq": 7}\n', *lines[7:]]), encoding="utf-8")
    result = verify_export(export)
    assert (result.ok, result.first_bad_seq) == (False, 7)
    path.write_text("".join(lines[:6] + lines[7:]), encoding="utf-8")
    result = verify_export(export)
    assert (result.ok, result.first_bad_seq, result.problem) == (
        False,
        7,
        "missing or reordered entry",
    )


def test_a_swapped_public_key_fails(export: Path, cli: Cli, tmp_path: Path) -> None:
    genuine = tmp_path / "genuine.pem"
    genuine.write_bytes((export / "public_key.pem").read_bytes())
    forger = AuditSigner(b"\x09" * 32)
    (export / "public_key.pem").write_text(forger.public_key_pem())
    result = cli("audit", "verify-export", str(export), code=1, env=OFFLINE)
    assert "broken at seq 5: checkpoint signed by key" in result.output

    # Re-signing every checkpoint with the swapped key makes the folder self-consistent:
    # only a key obtained out of band tells it apart.
    path = export / "checkpoints.jsonl"
    resigned = []
    for line in path.read_text().splitlines():
        checkpoint = SignedCheckpoint(**{**json.loads(line), "key_id": forger.key_id})
        signature = forger.sign(checkpoint.message())
        resigned.append(json.dumps({**checkpoint.as_record(), "signature": signature}))
    path.write_text("\n".join(resigned) + "\n")
    assert "out of band" in cli("audit", "verify-export", str(export), env=OFFLINE).output
    result = cli(
        "audit", "verify-export", str(export), "--public-key", str(genuine), code=1, env=OFFLINE
    )
    assert "not the trusted key" in result.output


def test_the_documented_standalone_check_agrees(export: Path, tmp_path: Path) -> None:
    snippet = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert snippet is not None
    script = tmp_path / "check.py"
    script.write_text(snippet.group(1))
    key = str(export / "public_key.pem")

    def check() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(script), str(export), key]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    good = check()
    assert good.returncode == 0 and good.stdout.startswith("OK: 12 entries, 2 checkpoints")
    path = export / "entries.jsonl"
    path.write_text(path.read_text(encoding="utf-8").replace('"r4"', '"r44"'), encoding="utf-8")
    assert "seq 4:" in check().stderr


def test_documented_test_vectors_match_the_code() -> None:
    from datetime import UTC, datetime

    docs = DOCS.read_text(encoding="utf-8")
    signer = AuditSigner(bytes(range(32)))
    at = datetime(2026, 11, 27, 12, 0, 0, 250000, tzinfo=UTC)
    details = {"tester_id": "tst_42", "count": 2}
    reason = 'leaked in a gist \u2014 "urgent"'
    canonical = canonical_entry(1, at, "admin:alice", "key.revoke", "key_7Hq2", reason, details)
    digest = chain_hash(GENESIS_HASH, canonical)
    message = checkpoint_message(1, digest, canonical_time(at), signer.key_id)
    for value in (
        signer.key_id,
        signer.public_key_pem().splitlines()[1],
        canonical.decode(),
        digest,
        message.decode().replace("\n", "\\n"),
        signer.sign(message),
    ):
        assert value in docs


# -- concurrency -----------------------------------------------------------------------


def test_concurrent_appends_make_one_chain_that_verifies(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            for step in range(25):
                with store.transaction() as tx:
                    tx.audit.append(f"worker:{number}", "test.append", f"item_{number}_{step}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with store.read() as tx:
        result = tx.audit.verify()
        seqs = [entry.seq for entry in tx.audit.entries()]
    assert seqs == list(range(1, 101))
    assert (result.ok, result.entries, result.checkpoints) == (True, 100, 100 // EVERY)
    assert checkpoint_seqs(store) == list(range(EVERY, 101, EVERY))


# -- admin API -------------------------------------------------------------------------


def test_api_lists_checkpoints_and_the_public_key(
    trail: Store, client: Any, auditor: IssuedToken, make_token: Callable[..., IssuedToken]
) -> None:
    # Creating the token appended to the trail too: 13 entries by now.
    headers = bearer(auditor.secret)
    key = client.get("/admin/v1/audit/public-key", headers=headers).get_json()
    verifier = AuditVerifier.from_pem(key["public_key_pem"])
    assert key["algorithm"] == "Ed25519" and key["key_id"] == verifier.key_id

    first = client.get("/admin/v1/audit/checkpoints?limit=1", headers=headers).get_json()
    assert first["has_more"] is True and [c["seq"] for c in first["data"]] == [5]
    rest = client.get("/admin/v1/audit/checkpoints?after_seq=5", headers=headers).get_json()
    assert rest["has_more"] is False and [c["seq"] for c in rest["data"]] == [10]
    for record in first["data"] + rest["data"]:
        assert verifier.verify(SignedCheckpoint(**record).message(), record["signature"])

    approver = bearer(make_token("approver").secret)
    for path in ("/admin/v1/audit/checkpoints", "/admin/v1/audit/public-key"):
        assert client.get(path, headers=approver).status_code == 403
        assert client.get(path).status_code == 401
    bad = client.get("/admin/v1/audit/checkpoints?limit=0", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "limit"
