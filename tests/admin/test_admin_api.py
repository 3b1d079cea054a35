"""The admin API: roles, testers, key lifecycle, tokens, the audit trail and its OpenAPI."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.limits.cohorts import known_cohorts
from keys.limits.policies import Policy
from keys.models import Tester
from keys.store import Store
from tests.helpers import FakeClock, assert_error, bearer

API = "/admin/v1"
THIRTY_DAYS = 30 * 86_400


def actor_of(token: IssuedToken) -> str:
    return f"{token.token.role}:{token.token.id}:{token.token.name}"


def call(client: Any, token: IssuedToken | str, method: str, path: str, json: Any = None) -> Any:
    secret = token if isinstance(token, str) else token.secret
    kwargs = {"json": json} if json is not None else {}
    return client.open(API + path, method=method, headers=bearer(secret), **kwargs)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def all_values(node: Any) -> list[Any]:
    """Every scalar anywhere in a JSON document (keys included)."""
    if isinstance(node, dict):
        return [*node.keys(), *(v for value in node.values() for v in all_values(value))]
    if isinstance(node, list):
        return [v for item in node for v in all_values(item)]
    return [node]


# -- roles -----------------------------------------------------------------------------


@pytest.fixture
def objects(
    make_key: Callable[..., IssuedKey], make_token: Callable[..., IssuedToken]
) -> dict[str, str]:
    key = make_key()
    return {
        "tester_id": key.key.tester_id,
        "key_id": key.key.id,
        "token_id": make_token("approver", "victim").token.id,
    }


READS = [
    ("GET", "/whoami"),
    ("GET", "/testers"),
    ("GET", "/testers/{tester_id}"),
    ("GET", "/keys"),
    ("GET", "/keys/{key_id}"),
    ("GET", "/audit"),
]
ADMIN_ONLY_READS = [("GET", "/tokens")]
WRITES = [
    ("POST", "/testers", {"name": "New", "email": "new@example.com"}),
    ("POST", "/testers/{tester_id}/keys", {}),
    ("POST", "/testers/{tester_id}/revoke-keys", {"reason": "r"}),
    ("POST", "/keys/{key_id}/rotate", {"grace_seconds": 60}),
    ("POST", "/keys/{key_id}/suspend", {"reason": "r"}),
    ("POST", "/keys/{key_id}/resume", {}),
    ("POST", "/keys/{key_id}/revoke", {"reason": "r"}),
    ("POST", "/tokens", {"name": "x", "role": "admin"}),
    ("POST", "/tokens/{token_id}/revoke", {"reason": "r"}),
]


def test_admin_and_auditor_read_testers_keys_and_audit(
    client: Any, admin: IssuedToken, auditor: IssuedToken, objects: dict[str, str]
) -> None:
    for method, path in READS:
        ok(call(client, admin, method, path.format(**objects)))
        ok(call(client, auditor, method, path.format(**objects)))
    for method, path in ADMIN_ONLY_READS:
        ok(call(client, admin, method, path.format(**objects)))


def test_auditor_may_not_write_or_see_tokens(
    client: Any, auditor: IssuedToken, objects: dict[str, str], store: Store
) -> None:
    with store.read() as tx:
        audit_before = len(tx.audit.entries())

    for method, path, body in [*WRITES, ("GET", "/tokens", None)]:
        response = call(client, auditor, method, path.format(**objects), body)
        assert response.status_code == 403, (method, path)
        assert_error(response, 403, "permission_denied")

    with store.read() as tx:
        assert len(tx.audit.entries()) == audit_before
        assert tx.keys.get(objects["key_id"]).status == "active"
        assert len(tx.testers.list()) == 1


def test_approver_is_refused_here(
    client: Any, approver: IssuedToken, objects: dict[str, str]
) -> None:
    reads = [(method, path, None) for method, path in READS[1:] + ADMIN_ONLY_READS]
    for method, path, body in reads + WRITES:
        response = call(client, approver, method, path.format(**objects), body)
        assert response.status_code == 403, (method, path)
        assert_error(response, 403, "permission_denied")


def test_every_role_may_ask_who_it_is(
    client: Any, admin: IssuedToken, auditor: IssuedToken, approver: IssuedToken
) -> None:
    for token in (admin, auditor, approver):
        assert ok(call(client, token, "GET", "/whoami")) == {
            "id": token.token.id,
            "name": token.token.name,
            "role": token.token.role,
        }


def test_revoked_unknown_or_missing_tokens_are_401(
    client: Any, admin: IssuedToken, store: Store, make_key: Callable[..., IssuedKey]
) -> None:
    with store.transaction() as tx:
        tx.tokens.revoke(admin.token.id, "test:setup", "left the team")
    unknown = store.token_format.generate()
    tester_key = make_key().secret

    for method, path, body in [("GET", "/testers", None), WRITES[0]]:
        assert_error(call(client, admin, method, path, body), 401, "token_revoked")
        assert_error(call(client, unknown, method, path, body), 401, "invalid_admin_token")
        assert_error(call(client, tester_key, method, path, body), 401, "invalid_admin_token")
        response = client.open(API + path, method=method, json=body)
        assert_error(response, 401, "missing_api_key")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- testers ---------------------------------------------------------------------------


def test_add_and_show_a_tester(client: Any, admin: IssuedToken) -> None:
    created = ok(
        call(
            client,
            admin,
            "POST",
            "/testers",
            {
                "name": " Grace ",
                "email": "Grace@Example.COM",
                "cohort": "wave-2",
                "create_cohort": True,
            },
        ),
        201,
    )

    assert created["name"] == "Grace"
    assert created["email"] == "grace@example.com"
    assert created["cohort"] == "wave-2"
    assert created["status"] == "active"
    assert created["created_by"] == actor_of(admin)
    shown = ok(call(client, admin, "GET", f"/testers/{created['id']}"))
    assert shown["id"] == created["id"]
    assert shown["keys"] == []
    listed = ok(call(client, admin, "GET", "/testers?cohort=wave-2"))
    assert [tester["id"] for tester in listed["data"]] == [created["id"]]
    assert ok(call(client, admin, "GET", "/testers?cohort=other"))["data"] == []


def test_cohort_defaults(client: Any, admin: IssuedToken) -> None:
    created = ok(
        call(client, admin, "POST", "/testers", {"name": "D", "email": "d@example.com"}), 201
    )

    assert created["cohort"] == "default"


def test_an_unknown_cohort_is_refused_unless_created(
    client: Any, admin: IssuedToken, store: Store
) -> None:
    ok(call(client, admin, "PUT", "/cohorts/wave-2/policy", {"models": ["sora-2"]}))
    typo = {"name": "T", "email": "t@example.com", "cohort": "wave2"}

    refused = call(client, admin, "POST", "/testers", typo)

    assert_error(refused, 400, "unknown_cohort", "cohort")
    error = refused.get_json()["error"]
    assert "no cohort 'wave2' (known: default, wave-2)" in error["message"]
    assert '"create_cohort": true' in error["message"]
    assert_error(
        call(client, admin, "POST", "/testers", {**typo, "create_cohort": "yes"}),
        400,
        "invalid_value",
        "create_cohort",
    )
    with store.read() as tx:
        assert tx.testers.list() == []
        assert set(tx.policies.cohorts()) == {"wave-2"}

    created = ok(call(client, admin, "POST", "/testers", {**typo, "create_cohort": True}), 201)

    assert created["cohort"] == "wave2"
    with store.read() as tx:
        assert known_cohorts(tx.session) == ["default", "wave-2", "wave2"]
        assert tx.policies.policy("wave2") == Policy()  # the default, until one is set
        added = [entry for entry in tx.audit.entries() if entry.action == "tester.add"]
        assert added[-1].details == {"cohort": "wave2", "new_cohort": True}
    # Now it exists: no flag needed for the next tester, nor for a cohort with testers only.
    again = {"name": "U", "email": "u@example.com", "cohort": "wave2"}
    assert ok(call(client, admin, "POST", "/testers", again), 201)["cohort"] == "wave2"


BAD_TESTERS = [
    ({"name": "X", "email": "not-an-email"}, "invalid_value", "email"),
    ({"name": "X", "email": "a@b"}, "invalid_value", "email"),
    ({"name": "X", "email": "two@@example.com"}, "invalid_value", "email"),
    ({"name": "X", "email": "sp ace@example.com"}, "invalid_value", "email"),
    ({"name": "X", "email": 42}, "invalid_value", "email"),
    ({"name": "X"}, "missing_required_parameter", "email"),
    ({"email": "x@example.com"}, "missing_required_parameter", "name"),
    ({"name": "   ", "email": "x@example.com"}, "missing_required_parameter", "name"),
    ({"name": "x" * 201, "email": "x@example.com"}, "invalid_value", "name"),
    ({"name": "X", "email": "x@example.com", "cohort": "Wave 2"}, "invalid_value", "cohort"),
    ({"name": "X", "email": "x@example.com", "cohort": "-lead"}, "invalid_value", "cohort"),
    ({"name": "X", "email": "x@example.com", "cohort": "c" * 65}, "invalid_value", "cohort"),
    ({"name": "X", "email": "x@example.com", "cohort": 7}, "invalid_value", "cohort"),
]


def test_add_tester_validation(client: Any, admin: IssuedToken, store: Store) -> None:
    for body, code, param in BAD_TESTERS:
        response = call(client, admin, "POST", "/testers", body)

        assert response.status_code == 400, body
        assert_error(response, 400, code, param)
    with store.read() as tx:
        assert tx.testers.list() == []


def test_duplicate_email_is_409(client: Any, admin: IssuedToken) -> None:
    ok(call(client, admin, "POST", "/testers", {"name": "A", "email": "a@example.com"}), 201)

    response = call(client, admin, "POST", "/testers", {"name": "B", "email": " A@EXAMPLE.com "})

    assert_error(response, 409, "tester_exists")


def test_unknown_tester_is_404(client: Any, admin: IssuedToken) -> None:
    assert_error(call(client, admin, "GET", "/testers/tst_nobody"), 404, "not_found")
    assert_error(call(client, admin, "POST", "/testers/tst_nobody/keys", {}), 404, "not_found")


# -- keys ------------------------------------------------------------------------------


def issue(client: Any, admin: IssuedToken, tester_id: str, body: Any = None) -> dict[str, Any]:
    issued: dict[str, Any] = ok(
        call(client, admin, "POST", f"/testers/{tester_id}/keys", body or {}), 201
    )
    return issued


def test_issue_returns_the_secret_once(
    client: Any, admin: IssuedToken, auditor: IssuedToken, tester: Tester
) -> None:
    issued = issue(client, admin, tester.id, {"metadata": {"team": "blue"}})
    secret = issued["secret"]

    assert re.fullmatch(r"drwb_[0-9A-Za-z]{33}", secret)
    assert issued["hint"] == f"drwb_...{secret[-4:]}"
    assert issued["status"] == "active"
    assert issued["metadata"] == {"team": "blue"}
    assert issued["created_by"] == actor_of(admin)
    # The secret works for the tester ...
    assert client.get("/v1/me", headers=bearer(secret)).status_code == 200
    # ... and is never shown again, to anyone, anywhere.
    for token in (admin, auditor):
        for path in (
            f"/keys/{issued['id']}",
            "/keys",
            f"/keys?tester_id={tester.id}",
            f"/testers/{tester.id}",
            "/audit",
        ):
            response = call(client, token, "GET", path)
            body = ok(response)
            assert secret not in all_values(body), path
            assert secret not in response.get_data(as_text=True), path
            assert secret[5:] not in response.get_data(as_text=True), path
            assert "secret" not in all_values(body), path


BAD_ISSUES = [
    ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"expires_in": "soon"}, "expires_in"),
    ({"expires_in": -5}, "expires_in"),
    ({"expires_in": 60, "expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"metadata": {str(i): "v" for i in range(21)}}, "metadata"),
    ({"metadata": {"": "v"}}, "metadata"),
    ({"metadata": []}, "metadata"),
    ({"metadata": ""}, "metadata"),
    ({"metadata": 0}, "metadata"),
]


def test_issue_validation(client: Any, admin: IssuedToken, tester: Tester) -> None:
    for body, param in BAD_ISSUES:
        response = call(client, admin, "POST", f"/testers/{tester.id}/keys", body)

        assert response.status_code == 400, body
        assert_error(response, 400, "invalid_value", param)
    assert ok(call(client, admin, "GET", f"/keys?tester_id={tester.id}"))["data"] == []


def test_issue_with_expiry(
    client: Any, admin: IssuedToken, tester: Tester, clock: FakeClock
) -> None:
    issued = issue(client, admin, tester.id, {"expires_in": "12h"})

    assert issued["expires_at"] == (clock() + timedelta(hours=12)).isoformat().replace(
        "+00:00", "Z"
    )
    clock.advance(hours=12)
    shown = ok(call(client, admin, "GET", f"/keys/{issued['id']}"))
    assert shown["status"] == "expired"
    assert client.get("/v1/me", headers=bearer(issued["secret"])).status_code == 401


def test_rotate_issues_a_successor_and_keeps_the_old_key_for_the_grace(
    client: Any, admin: IssuedToken, tester: Tester, clock: FakeClock
) -> None:
    old = issue(client, admin, tester.id)

    new = ok(call(client, admin, "POST", f"/keys/{old['id']}/rotate", {"grace_seconds": 600}), 201)

    assert new["secret"] != old["secret"]
    assert new["rotated_from"] == old["id"]
    shown_old = ok(call(client, admin, "GET", f"/keys/{old['id']}"))
    assert shown_old["status"] == "rotated"
    assert shown_old["replaced_by"] == new["id"]
    assert "secret" not in ok(call(client, admin, "GET", f"/keys/{new['id']}"))
    assert client.get("/v1/me", headers=bearer(old["secret"])).status_code == 200
    clock.advance(seconds=600)
    assert client.get("/v1/me", headers=bearer(old["secret"])).status_code == 401
    assert client.get("/v1/me", headers=bearer(new["secret"])).status_code == 200


def test_rotate_with_zero_grace_cuts_over_at_once(
    client: Any, admin: IssuedToken, tester: Tester
) -> None:
    old = issue(client, admin, tester.id)

    ok(call(client, admin, "POST", f"/keys/{old['id']}/rotate", {"grace_seconds": 0}), 201)

    response = client.get("/v1/me", headers=bearer(old["secret"]))
    assert response.get_json()["error"]["code"] == "key_rotated"


def test_rotate_maximum_grace_is_thirty_days(
    client: Any, admin: IssuedToken, tester: Tester
) -> None:
    old = issue(client, admin, tester.id)

    ok(
        call(client, admin, "POST", f"/keys/{old['id']}/rotate", {"grace_seconds": THIRTY_DAYS}),
        201,
    )


def test_rotate_grace_validation(client: Any, admin: IssuedToken, tester: Tester) -> None:
    old = issue(client, admin, tester.id)

    for grace in (-1, THIRTY_DAYS + 1, 10**12, 1.5, "3600", "12h", True, None, [60], {"s": 1}):
        response = call(
            client, admin, "POST", f"/keys/{old['id']}/rotate", {"grace_seconds": grace}
        )

        assert response.status_code == 400, grace
        assert_error(response, 400, "invalid_value", "grace_seconds")
    assert ok(call(client, admin, "GET", f"/keys/{old['id']}"))["status"] == "active"


def test_rotate_uses_the_default_grace(
    client: Any, admin: IssuedToken, tester: Tester, clock: FakeClock
) -> None:
    old = issue(client, admin, tester.id)

    ok(call(client, admin, "POST", f"/keys/{old['id']}/rotate"), 201)

    shown = ok(call(client, admin, "GET", f"/keys/{old['id']}"))
    assert shown["grace_until"] == (clock() + timedelta(days=1)).isoformat().replace("+00:00", "Z")


def test_rotating_a_rotated_key_is_409(client: Any, admin: IssuedToken, tester: Tester) -> None:
    old = issue(client, admin, tester.id)
    ok(call(client, admin, "POST", f"/keys/{old['id']}/rotate", {"grace_seconds": 60}), 201)

    response = call(client, admin, "POST", f"/keys/{old['id']}/rotate", {"grace_seconds": 60})

    assert_error(response, 409, "key_state")


def test_revoke_requires_a_reason(client: Any, admin: IssuedToken, tester: Tester) -> None:
    key = issue(client, admin, tester.id)

    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": None}, {"reason": 7}):
        response = call(client, admin, "POST", f"/keys/{key['id']}/revoke", body)

        assert response.status_code == 400, body
        assert response.get_json()["error"]["param"] == "reason"
    assert client.get("/v1/me", headers=bearer(key["secret"])).status_code == 200


def test_revoke_takes_effect_and_twice_is_409(
    client: Any, admin: IssuedToken, tester: Tester
) -> None:
    key = issue(client, admin, tester.id)

    revoked = ok(call(client, admin, "POST", f"/keys/{key['id']}/revoke", {"reason": "leaked"}))

    assert revoked["status"] == "revoked"
    assert revoked["revoked"]["reason"] == "leaked"
    assert revoked["revoked"]["by"] == actor_of(admin)
    me = client.get("/v1/me", headers=bearer(key["secret"]))
    assert me.get_json()["error"]["code"] == "key_revoked"
    again = call(client, admin, "POST", f"/keys/{key['id']}/revoke", {"reason": "again"})
    assert_error(again, 409, "key_state")


def test_suspend_and_resume(client: Any, admin: IssuedToken, tester: Tester) -> None:
    key = issue(client, admin, tester.id)
    path = f"/keys/{key['id']}"

    assert_error(call(client, admin, "POST", f"{path}/resume", {}), 409, "key_state")
    assert_error(
        call(client, admin, "POST", f"{path}/suspend", {}),
        400,
        "missing_required_parameter",
        "reason",
    )

    suspended = ok(call(client, admin, "POST", f"{path}/suspend", {"reason": "odd traffic"}))
    assert suspended["status"] == "suspended"
    assert suspended["suspended"]["reason"] == "odd traffic"
    me = client.get("/v1/me", headers=bearer(key["secret"]))
    assert me.get_json()["error"]["code"] == "key_suspended"
    assert_error(call(client, admin, "POST", f"{path}/suspend", {"reason": "x"}), 409, "key_state")
    assert_error(call(client, admin, "POST", f"{path}/rotate", {}), 409, "key_state")

    resumed = ok(call(client, admin, "POST", f"{path}/resume", {"reason": "explained"}))
    assert resumed["status"] == "active"
    assert client.get("/v1/me", headers=bearer(key["secret"])).status_code == 200

    ok(call(client, admin, "POST", f"{path}/revoke", {"reason": "done"}))
    assert_error(call(client, admin, "POST", f"{path}/resume", {}), 409, "key_state")
    assert_error(call(client, admin, "POST", f"{path}/suspend", {"reason": "x"}), 409, "key_state")


def test_actions_on_an_unknown_key_are_404(client: Any, admin: IssuedToken) -> None:
    for action in ("revoke", "suspend", "resume", "rotate"):
        response = call(client, admin, "POST", f"/keys/key_nothing/{action}", {"reason": "r"})

        assert response.status_code == 404, action
        assert_error(response, 404, "not_found")


def test_revoke_all_keys_of_a_tester(
    client: Any, admin: IssuedToken, tester: Tester, make_tester: Callable[..., Tester]
) -> None:
    first, second = issue(client, admin, tester.id), issue(client, admin, tester.id)
    already = issue(client, admin, tester.id)
    ok(call(client, admin, "POST", f"/keys/{already['id']}/revoke", {"reason": "old"}))
    bystander = issue(client, admin, make_tester().id)

    assert_error(
        call(client, admin, "POST", f"/testers/{tester.id}/revoke-keys", {}),
        400,
        "missing_required_parameter",
        "reason",
    )
    result = ok(
        call(client, admin, "POST", f"/testers/{tester.id}/revoke-keys", {"reason": "left"})
    )

    assert result["tester_id"] == tester.id
    assert sorted(result["revoked"]) == sorted([first["id"], second["id"]])
    for key in (first, second):
        assert client.get("/v1/me", headers=bearer(key["secret"])).status_code == 401
    assert client.get("/v1/me", headers=bearer(bystander["secret"])).status_code == 200
    again = ok(call(client, admin, "POST", f"/testers/{tester.id}/revoke-keys", {"reason": "x"}))
    assert again["revoked"] == []
    assert_error(
        call(client, admin, "POST", "/testers/tst_nobody/revoke-keys", {"reason": "x"}),
        404,
        "not_found",
    )


def test_invalid_json_bodies_are_refused(client: Any, admin: IssuedToken, tester: Tester) -> None:
    key = issue(client, admin, tester.id)
    for path in ("/testers", f"/keys/{key['id']}/revoke", "/tokens"):
        response = client.post(
            API + path,
            data=b'{"reason": ',
            headers={**bearer(admin.secret), "Content-Type": "application/json"},
        )
        assert_error(response, 400, "invalid_json")
    assert client.get("/v1/me", headers=bearer(key["secret"])).status_code == 200


# -- tokens ----------------------------------------------------------------------------


def test_tokens_create_list_revoke(client: Any, admin: IssuedToken) -> None:
    created = ok(call(client, admin, "POST", "/tokens", {"name": "CI", "role": "auditor"}), 201)
    secret = created["secret"]

    assert secret.startswith("drwbadm_")
    assert created["role"] == "auditor"
    assert created["created_by"] == actor_of(admin)
    assert ok(call(client, secret, "GET", "/whoami"))["role"] == "auditor"
    listing = call(client, admin, "GET", "/tokens")
    assert created["id"] in [token["id"] for token in ok(listing)["data"]]
    assert secret not in listing.get_data(as_text=True)
    assert "secret" not in all_values(ok(listing))

    revoked = ok(call(client, admin, "POST", f"/tokens/{created['id']}/revoke", {"reason": "x"}))

    assert revoked["revoked_at"] is not None
    assert_error(call(client, secret, "GET", "/whoami"), 401, "token_revoked")
    again = call(client, admin, "POST", f"/tokens/{created['id']}/revoke", {"reason": "x"})
    assert_error(again, 409, "token_state")
    assert_error(
        call(client, admin, "POST", f"/tokens/{created['id']}/revoke", {}),
        400,
        "missing_required_parameter",
        "reason",
    )


BAD_TOKENS = [
    ({"name": "x", "role": "root"}, "role"),
    ({"name": "x"}, "role"),
    ({"role": "admin"}, "name"),
    ({"name": "x", "role": "admin", "expires_in": "never"}, "expires_in"),
    ({"name": "x", "role": "admin", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
]


def test_token_validation(client: Any, admin: IssuedToken) -> None:
    for body, param in BAD_TOKENS:
        response = call(client, admin, "POST", "/tokens", body)

        assert response.status_code == 400, body
        assert response.get_json()["error"]["param"] == param
    assert len(ok(call(client, admin, "GET", "/tokens"))["data"]) == 1


def test_expired_token_is_401(client: Any, admin: IssuedToken, clock: FakeClock) -> None:
    created = ok(
        call(client, admin, "POST", "/tokens", {"name": "t", "role": "admin", "expires_in": 60}),
        201,
    )
    assert ok(call(client, created["secret"], "GET", "/whoami"))["role"] == "admin"

    clock.advance(seconds=60)

    assert_error(call(client, created["secret"], "GET", "/whoami"), 401, "token_expired")


# -- audit -----------------------------------------------------------------------------


def test_audit_lists_actions_in_order_with_the_operators_actor(
    client: Any, admin: IssuedToken, auditor: IssuedToken, store: Store
) -> None:
    with store.read() as tx:
        start = len(tx.audit.entries())
    tester = ok(
        call(client, admin, "POST", "/testers", {"name": "T", "email": "t@example.com"}), 201
    )
    key = issue(client, admin, tester["id"])
    ok(call(client, admin, "POST", f"/keys/{key['id']}/suspend", {"reason": "check"}))
    ok(call(client, admin, "POST", f"/keys/{key['id']}/resume", {}))
    ok(call(client, admin, "POST", f"/keys/{key['id']}/revoke", {"reason": "done"}))

    entries = ok(call(client, auditor, "GET", f"/audit?after_seq={start}"))["data"]

    assert [(e["action"], e["target"]) for e in entries] == [
        ("tester.add", tester["id"]),
        ("key.issue", key["id"]),
        ("key.suspend", key["id"]),
        ("key.resume", key["id"]),
        ("key.revoke", key["id"]),
    ]
    assert {entry["actor"] for entry in entries} == {actor_of(admin)}
    assert [entry["reason"] for entry in entries][2:] == ["check", None, "done"]
    seqs = [entry["seq"] for entry in entries]
    assert seqs == list(range(start + 1, start + 6))
    for previous, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == previous["hash"]


def test_audit_paginates_with_after_seq(
    client: Any, admin: IssuedToken, make_tester: Callable[..., Tester]
) -> None:
    for _ in range(5):
        make_tester()

    first = ok(call(client, admin, "GET", "/audit?limit=2"))
    second = ok(call(client, admin, "GET", f"/audit?limit=2&after_seq={first['data'][-1]['seq']}"))
    everything = ok(call(client, admin, "GET", "/audit"))

    assert first["has_more"] is True
    assert [e["seq"] for e in first["data"] + second["data"]] == [
        e["seq"] for e in everything["data"][:4]
    ]
    last = everything["data"][-1]["seq"]
    tail = ok(call(client, admin, "GET", f"/audit?after_seq={last - 1}"))
    assert [e["seq"] for e in tail["data"]] == [last]
    assert tail["has_more"] is False
    assert ok(call(client, admin, "GET", f"/audit?after_seq={last}"))["data"] == []


def test_audit_query_validation(client: Any, auditor: IssuedToken) -> None:
    for query, param in [
        ("after_seq=-1", "after_seq"),
        ("after_seq=abc", "after_seq"),
        ("after_seq=%C2%B2", "after_seq"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("limit=%C2%B2", "limit"),
    ]:
        response = call(client, auditor, "GET", f"/audit?{query}")

        assert response.status_code == 400, query
        assert_error(response, 400, "invalid_value", param)


# -- OpenAPI ---------------------------------------------------------------------------

_HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def test_openapi_document_describes_every_admin_route(app: Any, client: Any) -> None:
    response = client.get(f"{API}/openapi.json")

    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    documented = {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method in _HTTP_METHODS
    }
    registered = {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule.removeprefix(API)), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(API + "/")
        for method in rule.methods or ()
        if method.lower() in _HTTP_METHODS
    }
    # The document does not describe itself.
    registered.discard(("/openapi.json", "get"))
    assert documented == registered


def test_openapi_operations_are_well_formed(client: Any) -> None:
    document = client.get(f"{API}/openapi.json").get_json()

    for path, operations in document["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in operations.items():
            assert operation["summary"], (path, method)
            assert operation["responses"], (path, method)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)
            for status, answer in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status)
                assert answer["description"]
    error_schema = document["components"]["schemas"]["Error"]
    assert error_schema["properties"]["error"]["required"] == ["message", "type", "param", "code"]


def test_openapi_needs_no_token(client: Any) -> None:
    response = client.get(f"{API}/openapi.json")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"


def test_openapi_names_tags_and_types_every_operation(client: Any) -> None:
    document = client.get(f"{API}/openapi.json").get_json()
    tags = {tag["name"] for tag in document["tags"]}
    ids = []

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            assert operation["tags"] and set(operation["tags"]) <= tags, (path, method)
            responses = operation["responses"]
            success = next(status for status in responses if status.startswith("2"))
            assert responses[success]["content"], (path, method)
            for status in ("400", "401", "403", "429"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
            assert "Retry-After" in responses["429"]["headers"]
    assert len(ids) == len(set(ids))
    export = document["paths"]["/usage/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"text/csv", "application/jsonl"}

    def reason_of(path: str) -> dict[str, Any]:
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        schema: dict[str, Any] = body["schema"]["properties"]["reason"]
        return schema

    assert reason_of("/keys/{key_id}/suspend")["maxLength"] == 2000
    # A revocation is never refused for its reason's length: the text is clipped instead.
    for path in ("/keys/{key_id}/revoke", "/testers/{tester_id}/revoke-keys", "/keys/revoke"):
        assert reason_of(path)["minLength"] == 1 and reason_of(path)["maxLength"] > 2000


def _get_operations(client: Any) -> list[str]:
    document = client.get(f"{API}/openapi.json").get_json()
    return [path for path, operations in document["paths"].items() if "get" in operations]


def test_every_endpoint_refuses_an_unknown_query_parameter(
    client: Any, admin: IssuedToken, objects: dict[str, str]
) -> None:
    ids = {**objects, "approval_id": "apr_unknown", "cohort": "default"}
    for path in _get_operations(client):
        response = call(client, admin, "GET", path.format(**ids) + "?bogus=1")

        assert_error(response, 400, "unknown_parameter", "bogus")
    for method, path, body in WRITES:
        response = call(client, admin, method, path.format(**ids) + "?dry_run=1", body)
        assert_error(response, 400, "unknown_parameter", "dry_run")


def test_a_typo_in_a_filter_never_lists_everything(
    client: Any, admin: IssuedToken, make_key: Callable[..., IssuedKey]
) -> None:
    make_key(), make_key()

    response = call(client, admin, "GET", "/keys?tester=tst_nobody")

    assert_error(response, 400, "unknown_parameter", "tester")
    assert "tester_id" in response.get_json()["error"]["message"]
    assert_error(
        call(client, admin, "GET", "/keys?tester_id=nobody"), 400, "invalid_value", "tester_id"
    )
    assert_error(call(client, admin, "GET", "/keys?limit=5&limit=6"), 400, "invalid_value", "limit")
    assert ok(call(client, admin, "GET", "/keys?tester_id=tst_nobody"))["data"] == []


@pytest.mark.parametrize("path", ["/testers", "/keys", "/tokens"])
def test_listings_come_in_keyset_pages(
    client: Any,
    admin: IssuedToken,
    path: str,
    make_key: Callable[..., IssuedKey],
    make_token: Callable[..., IssuedToken],
    clock: FakeClock,
) -> None:
    for _ in range(4):
        make_key(), make_token("auditor")
        clock.advance(seconds=1)
    everything = [item["id"] for item in ok(call(client, admin, "GET", path))["data"]]

    seen, query = [], "?limit=2"
    while True:
        page = ok(call(client, admin, "GET", path + query))
        seen += [item["id"] for item in page["data"]]
        assert len(page["data"]) <= 2
        if not page["has_more"]:
            assert page["next_after"] is None
            break
        query = f"?limit=2&after={page['next_after']}"

    assert seen == everything and len(everything) >= 4
    kind = {"/testers": "tst", "/keys": "key", "/tokens": "adm"}[path]
    assert_error(call(client, admin, "GET", f"{path}?after={kind}_gone"), 404, "not_found", "after")
    assert_error(call(client, admin, "GET", f"{path}?limit=0"), 400, "invalid_value", "limit")


def test_reasons_are_text_of_bounded_length(
    client: Any, admin: IssuedToken, make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key().key
    path = f"/keys/{key.id}/suspend"

    assert_error(
        call(client, admin, "POST", path, {"reason": None}), 400, "invalid_value", "reason"
    )
    blank = call(client, admin, "POST", path, {"reason": "\x1f "})
    assert_error(blank, 400, "missing_required_parameter", "reason")
    assert_error(
        call(client, admin, "POST", path, {"reason": "x" * 2001}), 400, "invalid_value", "reason"
    )
    assert_error(
        call(client, admin, "POST", "/lockdown", {"lockdown": False, "reason": None}),
        400,
        "invalid_value",
        "reason",
    )
    assert_error(
        call(client, admin, "POST", "/testers", {"name": "A", "email": "a@b.co", "cohort": ""}),
        400,
        "invalid_value",
        "cohort",
    )
    ok(call(client, admin, "POST", path, {"reason": "x" * 2000}))


def test_405_allow_names_only_the_methods_of_that_path(client: Any, admin: IssuedToken) -> None:
    # /keys/revoke is not a key id: only POST is served there.
    response = call(client, admin, "GET", "/keys/revoke")

    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} <= {"POST", "OPTIONS"}


def test_rotation_says_when_the_old_keys_grace_ends(
    client: Any, admin: IssuedToken, make_key: Callable[..., IssuedKey], clock: FakeClock
) -> None:
    key = make_key().key

    rotated = ok(call(client, admin, "POST", f"/keys/{key.id}/rotate", {"grace_seconds": 60}), 201)

    assert rotated["rotated_from"] == key.id
    assert rotated["rotated_from_grace_until"] == (
        clock() + timedelta(seconds=60)
    ).isoformat().replace("+00:00", "Z")
