"""The leak scanner (keys/leaks/leaked_keys.py) and ``drawbridge leaks scan``.

The scanner must find every key wherever it sits (JSON, URLs, code, chunk boundaries) and
nothing else: only candidates whose checksum verifies count.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.client import new_proof_key
from keys.access.keyformat import BASE62, DEFAULT_ADMIN_TOKEN_PREFIX, KeyFormat
from keys.access.lifecycle import IssuedKey
from keys.leaks.leaked_keys import (
    LeakedSecret,
    files_under,
    key_length,
    scan_bytes,
    scan_file,
    scan_path,
    scan_stream,
)
from keys.models import ApiKey, AuditEntry
from keys.store import Store
from tests.helpers import Cli

FORMAT = KeyFormat("drwb")
ADMIN = KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX)
KEY = FORMAT.generate()
OTHER = FORMAT.generate()


def secrets_in(data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [finding.secret for finding in scan_bytes(raw, FORMAT)]


def with_bad_checksum(secret: str) -> str:
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


# -- where keys hide -------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        '{"api_key": "%s"}',
        '{"config":{"keys":["%s"]}}',
        '{"log": "first line\\n%s\\tend"}',  # after an escaped newline in a JSON string
        "https://api.example.com/v1/videos?key=%s&limit=10",
        "https://example.com/cb?next=https%%3A%%2F%%2Fx%%3Fkey%%3D%s%%26a%%3D1",  # URL-encoded
        "client = OpenAI(api_key='%s')",
        'export DRAWBRIDGE_KEY="%s"',
        "const key = `%s`;",
        "Authorization: Bearer %s\r\n",
        "<key>%s</key>",
        "%s",
        "prefix%s",  # glued to text on the left
        "%sSUFFIX",  # and on the right: the checksum still says it is a key
        "key:%s,other:%s",
    ],
)
def test_keys_are_found_wherever_they_sit(template: str) -> None:
    count = template.count("%s")
    text = template % ((KEY, OTHER)[:count])
    assert secrets_in(text) == [KEY, OTHER][:count]


@given(st.text(alphabet=BASE62 + "_", max_size=60), st.text(alphabet=BASE62 + "_", max_size=60))
@settings(max_examples=300, deadline=None)
def test_a_key_is_found_whatever_it_is_glued_to(before: str, after: str) -> None:
    # e.g. "drwb_" + 30 characters right before a key: that near miss must not swallow the
    # start of the real key.
    found = scan_bytes(f"{before}{KEY}{after}".encode(), FORMAT)
    assert (KEY, len(before)) in [(f.secret, f.offset) for f in found]


def test_a_near_miss_right_before_a_key_does_not_hide_it() -> None:
    near_miss = "drwb_" + KEY[5:35]
    assert secrets_in(near_miss + KEY) == [KEY]


def test_strings_that_only_look_like_keys_are_not_findings() -> None:
    text = "\n".join(
        [
            with_bad_checksum(KEY),
            KEY[:-1],  # truncated
            KEY.replace("drwb_", "drwb-"),
            KEY.replace("drwb_", "DRWB_"),
            "drwb_" + "A" * 33,
            "drwb_" + "0" * 40,
            "drwb_",
        ]
    )
    assert secrets_in(text) == []


def test_admin_tokens_and_other_prefixes_do_not_collide() -> None:
    token = ADMIN.generate()  # drwbadm_...: "drwb" is its prefix's prefix
    foreign = KeyFormat("drwbx").generate()
    assert secrets_in(f"{token} {foreign}") == []
    assert [f.secret for f in scan_bytes(f"{KEY} {token}".encode(), ADMIN)] == [token]
    # No left boundary, on purpose (keys glued to text are leaks too): a family whose prefix
    # ends in ours is reported, and the database lookup then calls it "unknown".
    glued = KeyFormat("xdrwb").generate()
    assert secrets_in(glued) == [glued[1:]]


def test_location_is_line_column_and_offset() -> None:
    data = f"line one\n\n  x = '{KEY}'\n{OTHER}".encode()
    first, second = scan_bytes(data, FORMAT, origin="app.py")
    assert (first.line, first.column, first.offset) == (3, 8, data.index(KEY.encode()))
    assert first.location == "app.py:3:8"
    assert (second.line, second.column) == (4, 1)
    assert KEY not in repr(first)  # a finding never prints its secret by accident


def test_line_wrapped_keys_are_not_found() -> None:
    """A documented limit: a key split across lines is no longer one string."""
    assert secrets_in(f"{KEY[:20]}\n{KEY[20:]}") == []


# -- random text ----------------------------------------------------------------------

_NOISE = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet=BASE62 + "_ \n\"'=&?", max_size=200).map(str.encode),
    st.text(alphabet=BASE62, min_size=33, max_size=60).map(lambda s: f"drwb_{s}".encode()),
)


@given(st.lists(_NOISE, max_size=30))
@settings(max_examples=300, deadline=None)
def test_random_noise_gives_no_false_positives(parts: list[bytes]) -> None:
    assert secrets_in(b"".join(parts)) == []


def test_a_megabyte_of_near_misses_gives_no_false_positives() -> None:
    rng = random.Random(7)
    candidates = ["drwb_" + "".join(rng.choice(BASE62) for _ in range(33)) for _ in range(20_000)]
    assert secrets_in(" ".join(candidates)) == []


@given(
    st.lists(st.text(alphabet=BASE62 + " \n{}\"'=", max_size=80), min_size=1, max_size=20),
    st.data(),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_planted_keys_are_all_found_with_their_positions(
    fillers: list[str], data: st.DataObject
) -> None:
    planted = [FORMAT.generate() for _ in fillers]
    # A separator keeps a key from running into alphanumeric filler... which would still be
    # found; it is here so positions are easy to compute.
    text = "".join(f"{filler} {key}\n" for filler, key in zip(fillers, planted, strict=True))
    found = list(scan_bytes(text.encode(), FORMAT))
    assert [f.secret for f in found] == planted
    for finding in found:
        before = text[: finding.offset]
        assert finding.line == before.count("\n") + 1
        assert finding.column == len(before) - (before.rfind("\n") + 1) + 1
    chunk = data.draw(st.integers(min_value=1, max_value=64))
    streamed = list(scan_stream(io.BytesIO(text.encode()), FORMAT, chunk_size=chunk))
    assert streamed == found


# -- chunks -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_a_key_across_a_chunk_boundary_is_found_once(tmp_path: Path, chunk_size: int) -> None:
    size = 3 * 64
    for position in range(0, size - key_length(FORMAT)):
        data = bytearray(b"." * size)
        data[position : position + key_length(FORMAT)] = KEY.encode()
        path = tmp_path / "f.txt"
        path.write_bytes(bytes(data))
        mapped = list(scan_file(path, FORMAT, chunk_size=chunk_size))
        streamed = list(scan_stream(io.BytesIO(bytes(data)), FORMAT, chunk_size=chunk_size))
        assert [(f.secret, f.offset) for f in mapped] == [(KEY, position)], position
        assert [(f.secret, f.offset) for f in streamed] == [(KEY, position)], position


def test_adjacent_keys_over_many_chunks(tmp_path: Path) -> None:
    planted = [FORMAT.generate() for _ in range(50)]
    path = tmp_path / "keys.txt"
    path.write_text("\n".join(planted))
    seen: list[int] = []
    found = list(scan_file(path, FORMAT, chunk_size=100, progress=seen.append))
    assert [f.secret for f in found] == planted
    assert [f.line for f in found] == list(range(1, 51))
    assert sum(seen) == path.stat().st_size


def test_empty_files_and_pipes(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert list(scan_file(tmp_path / "empty", FORMAT)) == []
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as writer:  # blocks until the scanner opens the pipe
            writer.write(f"x {KEY}\n".encode())

    feeder = threading.Thread(target=feed)
    feeder.start()
    found = list(scan_file(fifo, FORMAT, chunk_size=8))  # not mappable: streamed
    feeder.join(timeout=10)
    assert [(f.secret, f.offset) for f in found] == [(KEY, 2)]


def test_folders_are_walked_sorted_without_following_links(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / "a.txt").write_text(KEY)
    (tmp_path / "b" / "deep" / "c.json").write_text(json.dumps({"k": OTHER}))
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "x.txt").write_text(FORMAT.generate())
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "loop").symlink_to(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)] == [
        "a.txt",
        "b/deep/c.json",
    ]
    assert [f.secret for f in scan_path(tmp_path, FORMAT)] == [KEY, OTHER]


# -- the domain half: identify and report -----------------------------------------------

MakeKey = Callable[..., IssuedKey]


@pytest.mark.both_databases
def test_report_revokes_live_keys_with_where_they_leaked(store: Store, make_key: MakeKey) -> None:
    live, rotated = make_key(), make_key()
    with store.transaction() as tx:
        successor = tx.keys.rotate(rotated.key.id, "test:setup")
    leaks = [
        LeakedSecret(live.secret, url="https://gist.example/1", source="gist"),
        LeakedSecret(rotated.secret, source="/srv/app/.env"),  # old secret, still in grace
        LeakedSecret(FORMAT.generate()),
        LeakedSecret("drwb_x"),
    ]
    with store.transaction() as tx:
        report = tx.leaks.report(leaks, "test:scanner")
    assert [o.status for o in report.outcomes] == ["revoked", "revoked", "unknown", "malformed"]
    assert report.revoked == [live.key.id, rotated.key.id]
    with store.read() as tx:
        row = tx.session.get(ApiKey, live.key.id)
        assert row is not None and row.status == "revoked"
        assert row.revoked_reason == "leaked (url: https://gist.example/1; source: gist)"
        assert tx.keys.get(successor.key.id).status == "active"  # a different secret
        known = tx.leaks.identify([live.secret, successor.secret, "nope"])
        entries = tx.session.scalars(
            select(AuditEntry).where(AuditEntry.actor == "test:scanner")
        ).all()
    assert [k.status if k else None for k in known] == ["revoked", "active", None]
    assert {e.target for e in entries} == {live.key.id, rotated.key.id}
    assert {e.details["source"] for e in entries} == {"gist", "/srv/app/.env"}


@pytest.mark.both_databases
def test_a_leak_report_also_revokes_successors_its_holder_rotated_to(
    store: Store, make_key: MakeKey
) -> None:
    leaked = make_key()
    with store.transaction() as tx:
        # Whoever holds the leaked secret rotates it through /v1/me (actor tester:...)...
        laundered = tx.keys.rotate(leaked.key.id, f"tester:{leaked.key.tester_id}", timedelta(0))
        # ...and an admin's rotation of that successor is no doing of the leak.
        admin_issued = tx.keys.rotate(laundered.key.id, "admin:ops", timedelta(0))

    with store.transaction() as tx:
        tx.leaks.report([LeakedSecret(leaked.secret, source="paste")], "test:scanner")

    with store.read() as tx:
        assert tx.keys.get(leaked.key.id).status == "revoked"
        assert tx.keys.get(laundered.key.id).status == "revoked"
        assert "successor of" in (tx.keys.get(laundered.key.id).revoked_reason or "")
        assert tx.keys.get(admin_issued.key.id).status == "active"


def bind_proof_key(store: Store, key: IssuedKey, directory: Path) -> None:
    public = new_proof_key(directory / f"{key.key.id}.pem")
    with store.transaction() as tx:
        tx.proof_keys.bind(key.key.id, public, "test:setup")


def leak_entries(store: Store, actor: str) -> dict[str, AuditEntry]:
    with store.read() as tx:
        entries = tx.session.scalars(select(AuditEntry).where(AuditEntry.actor == actor)).all()
        return {entry.target: entry for entry in entries}


@pytest.mark.both_databases
def test_a_leak_report_says_whether_the_key_was_proof_bound(
    store: Store, make_key: MakeKey, tmp_path: Path
) -> None:
    bound, bare = make_key(), make_key()
    bind_proof_key(store, bound, tmp_path)
    with store.transaction() as tx:
        report = tx.leaks.report(
            [LeakedSecret(bound.secret, source="paste"), LeakedSecret(bare.secret)], "test:scan"
        )
    # Bound or not, a found key is revoked by default.
    assert [(o.status, o.proof_bound) for o in report.outcomes] == [
        ("revoked", True),
        ("revoked", False),
    ]
    entries = leak_entries(store, "test:scan")
    assert entries[bound.key.id].action == entries[bare.key.id].action == "key.revoke"
    assert entries[bound.key.id].details["proof_bound"] is True
    assert entries[bare.key.id].details["proof_bound"] is False
    with store.read() as tx:
        known = tx.leaks.identify([bound.secret, bare.secret])
    assert [k.proof_bound for k in known if k] == [True, False]


@pytest.mark.both_databases
def test_a_leaked_bound_key_is_kept_when_the_setting_says_so(
    store: Store, make_key: MakeKey, tmp_path: Path
) -> None:
    bound, bare = make_key(), make_key()
    bind_proof_key(store, bound, tmp_path)
    leaks = [LeakedSecret(bound.secret, url="https://gist.example/9"), LeakedSecret(bare.secret)]
    with store.transaction() as tx:
        report = tx.leaks.report([*leaks, leaks[0]], "test:scan", revoke_bound=False)
    assert [(o.status, o.proof_bound) for o in report.outcomes] == [
        ("kept", True),
        ("revoked", False),
        ("kept", True),
    ]
    assert report.kept == [bound.key.id, bound.key.id] and report.revoked == [bare.key.id]
    assert all(o.issued_here for o in report.outcomes)
    with store.read() as tx:
        assert tx.keys.get(bound.key.id).status == "active"
        assert tx.keys.get(bare.key.id).status == "revoked"
    entry = leak_entries(store, "test:scan")[bound.key.id]
    assert entry.action == "key.leak_reported"
    assert entry.details == {
        "cause": "leak",
        "tester_id": bound.key.tester_id,
        "url": "https://gist.example/9",
        "source": None,
        "proof_bound": True,
        "revoked": False,
    }
    with store.read() as tx:
        recorded = tx.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "key.leak_reported")
        ).all()
    assert [e.target for e in recorded] == [bound.key.id]  # once, though reported twice


# -- the CLI ----------------------------------------------------------------------------

SCAN = ("leaks", "scan")


def findings(result: Result) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(result.stdout)["findings"]
    return rows


@pytest.fixture
def tree(tmp_path: Path, make_key: MakeKey) -> dict[str, Any]:
    live = make_key()
    unknown = FORMAT.generate()
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "settings.py").write_text(f"DEBUG = True\nAPI_KEY = '{live.secret}'\n")
    (root / "logs.json").write_text(json.dumps({"url": f"/v1/videos?key={unknown}"}))
    (root / "clean.txt").write_text("nothing here\n" * 100)
    return {"root": root, "live": live, "unknown": unknown}


@pytest.mark.both_databases
def test_scan_reports_keys_with_their_owner_and_exits_1(cli: Cli, tree: dict[str, Any]) -> None:
    live: IssuedKey = tree["live"]
    result = cli(*SCAN, str(tree["root"]), code=1)
    assert live.secret not in result.output and tree["unknown"] not in result.output
    assert "settings.py:2:12" in result.stdout
    assert live.key.id in result.stdout and live.key.tester_id in result.stdout
    assert FORMAT.hint(live.secret) in result.stdout and "unknown" in result.stdout
    assert "1 issued by this gateway, 1 still live" in result.stderr

    rows = findings(cli(*SCAN, "--json", str(tree["root"]), code=1))
    by_file = {Path(row["path"]).name: row for row in rows}
    assert set(by_file) == {"settings.py", "logs.json"}
    assert by_file["settings.py"] | {"path": None} == {
        "location": f"{tree['root']}/src/settings.py:2:12",
        "path": None,
        "line": 2,
        "column": 12,
        "offset": 24,
        "key": FORMAT.hint(live.secret),
        "key_id": live.key.id,
        "tester_id": live.key.tester_id,
        "tester_name": "Ada Tester",
        "status": "active",
        "revoked_now": False,
        "proof_bound": False,
        "kept_now": False,
    }
    assert by_file["logs.json"]["status"] == "unknown" and by_file["logs.json"]["key_id"] is None


@pytest.mark.both_databases
def test_revoke_shuts_off_the_live_keys_found(
    cli: Cli, tree: dict[str, Any], store: Store, make_key: MakeKey
) -> None:
    live: IssuedKey = tree["live"]
    already = make_key()
    with store.transaction() as tx:
        tx.keys.revoke(already.key.id, "test:setup", "earlier")
    (tree["root"] / "old.txt").write_text(already.secret)

    result = cli(*SCAN, "--revoke", "--json", str(tree["root"]), code=1)

    document = json.loads(result.stdout)
    assert document["revoked"] == [live.key.id]
    statuses = {row["key_id"]: (row["status"], row["revoked_now"]) for row in document["findings"]}
    assert statuses == {
        live.key.id: ("revoked", True),
        already.key.id: ("revoked", False),
        None: ("unknown", False),
    }
    with store.read() as tx:
        row = tx.keys.get(live.key.id)
        assert row.status == "revoked" and row.revoked_by.startswith("cli:")
        assert row.revoked_reason == f"leaked (source: {tree['root']}/src/settings.py)"
        assert tx.keys.get(already.key.id).revoked_reason == "earlier"
    again = findings(cli(*SCAN, "--json", str(tree["root"]), code=1))
    assert {row["status"] for row in again} == {"revoked", "unknown"}


@pytest.mark.both_databases
def test_scan_says_which_keys_were_proof_bound_and_may_keep_them(
    cli: Cli, tree: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    live: IssuedKey = tree["live"]
    bind_proof_key(store, live, tmp_path)
    result = cli(*SCAN, str(tree["root"]), code=1)
    assert result.stdout.splitlines()[0].split()[-1] == "PROOF_BOUND"
    (line,) = [line for line in result.stdout.splitlines() if live.key.id in line]
    assert line.split()[-2:] == ["active", "yes"]
    assert "1 proof-bound: the leaked string alone could not have been used" in result.stderr

    keep = {"DRAWBRIDGE_PROOF_REVOKE_LEAKED": "false"}
    result = cli(*SCAN, "--revoke", "--json", str(tree["root"]), code=1, env=keep)
    document = json.loads(result.stdout)
    assert document["revoked"] == [] and document["kept_proof_bound"] == [live.key.id]
    (row,) = [row for row in document["findings"] if row["key_id"] == live.key.id]
    assert (row["status"], row["proof_bound"], row["kept_now"]) == ("active", True, True)
    with store.read() as tx:
        assert tx.keys.get(live.key.id).status == "active"

    result = cli(*SCAN, "--revoke", str(tree["root"]), code=1)
    assert "revoked (revoked now)" in result.stdout and "revoked now: 1" in result.stderr
    with store.read() as tx:
        assert tx.keys.get(live.key.id).status == "revoked"


def test_stdin_and_exit_codes(cli: Cli, tree: dict[str, Any], tmp_path: Path) -> None:
    live: IssuedKey = tree["live"]
    rows = findings(cli(*SCAN, "--json", "-", stdin=f"noise {live.secret}\n".encode(), code=1))
    assert [(r["location"], r["key_id"]) for r in rows] == [("<stdin>:1:7", live.key.id)]
    assert cli(*SCAN, "-", stdin=b"nothing to see", code=0).stdout == ""
    assert cli(*SCAN, str(tree["root"] / "clean.txt"), code=0).stdout == ""
    assert "scanning" in cli(*SCAN, "--progress", str(tree["root"]), code=1).stderr
    assert "scanning" not in cli(*SCAN, str(tree["root"]), code=1).stderr  # not a terminal
    missing = cli(*SCAN, str(tmp_path / "missing"), str(tree["root"]), code=2)
    assert "missing: No such file or directory" in missing.stderr
    assert live.key.id in missing.stdout  # still reports what it found


def test_offline_and_unconfigured_scans_do_not_look_up(
    cli: Cli, tree: dict[str, Any], tmp_path: Path
) -> None:
    document = json.loads(cli(*SCAN, "--json", "--offline", str(tree["root"]), code=1).stdout)
    assert {row["status"] for row in document["findings"]} == {"not_checked"}
    assert document["looked_up"] is False and "--offline" in document["note"]
    clean = json.loads(cli(*SCAN, "--json", str(tree["root"] / "clean.txt"), code=0).stdout)
    assert clean["findings"] == [] and clean["note"] is None
    assert cli(*SCAN, "--offline", "--revoke", str(tree["root"]), code=2).exit_code == 2

    missing_db = f"sqlite:///{tmp_path / 'nowhere.db'}"
    result = cli(
        *SCAN, "--json", str(tree["root"]), code=1, env={"DRAWBRIDGE_DATABASE_URL": missing_db}
    )
    assert json.loads(result.stdout)["note"].startswith("not looked up: no database at")
    assert not (tmp_path / "nowhere.db").exists()  # a scan creates no empty database
    refused = cli(
        *SCAN, "--revoke", str(tree["root"]), code=2, env={"DRAWBRIDGE_DATABASE_URL": missing_db}
    )
    assert "cannot revoke" in refused.stderr


def test_the_prefix_comes_from_settings(cli: Cli, tmp_path: Path) -> None:
    custom = KeyFormat("acme")
    (tmp_path / "f.txt").write_text(f"{custom.generate()} {KEY}")
    rows = findings(
        cli(
            *SCAN,
            "--json",
            "--offline",
            str(tmp_path),
            code=1,
            env={"DRAWBRIDGE_KEY_PREFIX": "acme"},
        )
    )
    assert [row["key"][:5] for row in rows] == ["acme_"]
