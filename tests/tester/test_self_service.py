"""Self-service leak response: a tester revokes or rotates their own key through /v1/me."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from keys.access.lifecycle import IssuedKey
from keys.models import Tester
from keys.store import Store
from tests.helpers import bearer

pytestmark = pytest.mark.both_databases


def code_of(response: Any) -> str | None:
    return response.get_json()["error"]["code"] if response.status_code >= 400 else None


def test_a_tester_revokes_their_own_key_at_once(
    client: FlaskClient,
    store: Store,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
) -> None:
    tester = make_tester()
    leaked, other = make_key(tester.id), make_key(tester.id)
    answer = client.post(
        "/v1/me/revoke", headers=bearer(leaked.secret), json={"reason": "pasted in a gist"}
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["id"] == leaked.key.id and body["status"] == "revoked"
    assert body["revoked"]["by"] == f"tester:{tester.id}"
    assert body["revoked"]["reason"] == "pasted in a gist"
    assert leaked.secret not in answer.get_data(as_text=True)

    assert code_of(client.get("/v1/me", headers=bearer(leaked.secret))) == "key_revoked"
    assert code_of(client.post("/v1/me/revoke", headers=bearer(leaked.secret))) == ("key_revoked")
    assert client.get("/v1/me", headers=bearer(other.secret)).status_code == 200
    with store.read() as tx:
        entry = [e for e in tx.audit.entries() if e.action == "key.revoke"][-1]
    assert (entry.actor, entry.target) == (f"tester:{tester.id}", leaked.key.id)


def test_revoking_without_a_reason_records_a_default_one(
    client: FlaskClient, make_key: Callable[..., IssuedKey]
) -> None:
    issued = make_key()
    answer = client.post("/v1/me/revoke", headers=bearer(issued.secret))
    assert answer.status_code == 200
    assert answer.get_json()["revoked"]["reason"] == "revoked by its holder"


def test_a_tester_rotates_their_own_key(
    client: FlaskClient, store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    old = make_key()
    answer = client.post("/v1/me/rotate", headers=bearer(old.secret), json={})
    assert answer.status_code == 201, answer.get_json()
    new = answer.get_json()
    assert new["secret"].startswith("drwb_") and new["secret"] != old.secret
    assert new["rotated_from"] == old.key.id and new["status"] == "active"
    # No grace asked: the old secret stops at once, the new one works.
    assert code_of(client.get("/v1/me", headers=bearer(old.secret))) == "key_rotated"
    me = client.get("/v1/me", headers=bearer(new["secret"]))
    assert me.status_code == 200 and me.get_json()["key"]["id"] == new["id"]
    assert new["secret"] not in me.get_data(as_text=True)
    with store.read() as tx:
        assert tx.keys.get(old.key.id).replaced_by_id == new["id"]


def test_a_short_grace_keeps_the_old_secret_working_for_a_while(
    client: FlaskClient, clock: Any, make_key: Callable[..., IssuedKey]
) -> None:
    old = make_key()
    answer = client.post("/v1/me/rotate", headers=bearer(old.secret), json={"grace_seconds": 60})
    assert answer.status_code == 201
    assert client.get("/v1/me", headers=bearer(old.secret)).status_code == 200
    clock.advance(seconds=61)
    assert code_of(client.get("/v1/me", headers=bearer(old.secret))) == "key_rotated"


@pytest.mark.parametrize("grace", [-1, 86_401, "60", True, 1.5])
def test_self_rotation_grace_is_bounded(
    client: FlaskClient, make_key: Callable[..., IssuedKey], grace: Any
) -> None:
    issued = make_key()
    answer = client.post(
        "/v1/me/rotate", headers=bearer(issued.secret), json={"grace_seconds": grace}
    )
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "grace_seconds"
    assert client.get("/v1/me", headers=bearer(issued.secret)).status_code == 200
