"""``/readyz`` during a rolling upgrade (docs/deploy.md): a database behind this code is not
ready (the migrations have not run), one ahead of it is (a newer release migrated it, and its
migrations only add; this instance serves until it is replaced)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from keys.migrate import head_revision
from keys.store import Store


def set_revision(store: Store, revision: str) -> None:
    with store.database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


@pytest.mark.both_databases
def test_a_schema_ahead_of_the_code_is_ready_and_said(client: Any, store: Store) -> None:
    head = head_revision()
    set_revision(store, "9999_from_a_newer_release")
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert body["checks"]["schema"] == "ok"
        assert body["detail"]["schema"].startswith(
            f"at 9999_from_a_newer_release, ahead of this code's {head}"
        )
    finally:
        set_revision(store, str(head))


@pytest.mark.both_databases
def test_a_schema_behind_the_code_is_not_ready(client: Any, store: Store) -> None:
    head = head_revision()
    set_revision(store, "0007")
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.get_json()["checks"]["schema"] == f"at 0007, expected {head}"
    finally:
        set_revision(store, str(head))
