"""One error shape for every failure: ``{"error": {"message", "type", "param", "code"}}``.

Each case names a failure path and the exact status and code a client can rely on; every
401 also carries ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

import pytest
import responses
from sqlalchemy import event

from keys.access.admin_tokens import IssuedToken
from keys.access.keyformat import BASE62
from keys.access.lifecycle import IssuedKey
from keys.models import Tester
from keys.store import Store
from tests.helpers import FakeClock, assert_error, bearer


@pytest.fixture
def upstream() -> Iterator[responses.RequestsMock]:
    # Nothing registered: any upstream call would be a bug, and fails the request.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def corrupted(secret: str) -> str:
    """The same key with one character of its random part changed: the checksum fails."""
    prefix, _, body = secret.partition("_")
    index = 5
    replacement = BASE62[(BASE62.index(body[index]) + 1) % len(BASE62)]
    return f"{prefix}_{body[:index]}{replacement}{body[index + 1 :]}"


class World:
    """Credentials in every interesting state, each made the first time a case asks for it.

    Keys that must be past their expiry or rotation grace move the clock on when made.
    """

    def __init__(
        self,
        store: Store,
        clock: FakeClock,
        make_key: Callable[..., IssuedKey],
        make_token: Callable[..., IssuedToken],
    ) -> None:
        self._store, self._clock = store, clock
        self._make_key, self._make_token = make_key, make_token
        self.secrets: list[str] = []

    def _key(self, **options: Any) -> IssuedKey:
        issued = self._make_key(**options)
        self.secrets.append(issued.secret)
        return issued

    def _token(self, role: str) -> IssuedToken:
        issued = self._make_token(role)
        self.secrets.append(issued.secret)
        return issued

    @cached_property
    def active(self) -> IssuedKey:
        return self._key()

    @cached_property
    def revoked(self) -> IssuedKey:
        issued = self._key()
        with self._store.transaction() as tx:
            tx.keys.revoke(issued.key.id, "test:setup", "leaked")
        return issued

    @cached_property
    def suspended(self) -> IssuedKey:
        issued = self._key()
        with self._store.transaction() as tx:
            tx.keys.suspend(issued.key.id, "test:setup", "investigating")
        return issued

    @cached_property
    def expiring(self) -> IssuedKey:
        issued = self._key(expires_at=self._clock() + timedelta(hours=1))
        self._clock.advance(hours=2)
        return issued

    @cached_property
    def rotated(self) -> IssuedKey:
        issued = self._key()
        with self._store.transaction() as tx:
            tx.keys.rotate(issued.key.id, "test:setup", timedelta(minutes=10))
        self._clock.advance(hours=2)
        return issued

    @cached_property
    def suspended_tester(self) -> IssuedKey:
        issued = self._key()
        with self._store.transaction() as tx:
            tester = tx.session.get(Tester, issued.key.tester_id)
            assert tester is not None
            tester.status = "suspended"
        return issued

    @cached_property
    def unknown(self) -> str:
        return self._store.key_format.generate()

    @cached_property
    def admin(self) -> IssuedToken:
        return self._token("admin")

    @cached_property
    def auditor(self) -> IssuedToken:
        return self._token("auditor")

    @cached_property
    def approver(self) -> IssuedToken:
        return self._token("approver")

    @cached_property
    def revoked_token(self) -> IssuedToken:
        issued = self._token("admin")
        with self._store.transaction() as tx:
            tx.tokens.revoke(issued.token.id, "test:setup", "left")
        return issued


@pytest.fixture
def world(
    store: Store,
    clock: FakeClock,
    make_key: Callable[..., IssuedKey],
    make_token: Callable[..., IssuedToken],
) -> World:
    return World(store, clock, make_key, make_token)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    code: str
    param: str | None = None
    headers: Callable[[World], dict[str, str]] = lambda world: {}
    json: Any = None
    data: bytes | None = None
    content_type: str | None = None


def key_of(name: str) -> Callable[[World], dict[str, str]]:
    return lambda world: bearer(getattr(world, name).secret)


CASES = {
    # -- tester authentication --
    "missing authorization": Case("GET", "/v1/videos", 401, "missing_api_key"),
    "empty authorization": Case(
        "GET", "/v1/videos", 401, "missing_api_key", headers=lambda w: {"Authorization": ""}
    ),
    "basic scheme": Case(
        "GET",
        "/v1/videos",
        401,
        "invalid_api_key",
        headers=lambda w: {"Authorization": "Basic dXNlcjpwYXNz"},
    ),
    "key without a scheme": Case(
        "GET",
        "/v1/videos",
        401,
        "invalid_api_key",
        headers=lambda w: {"Authorization": w.active.secret},
    ),
    "bearer without a key": Case(
        "GET", "/v1/me", 401, "invalid_api_key", headers=lambda w: {"Authorization": "Bearer "}
    ),
    "malformed key": Case(
        "GET", "/v1/videos", 401, "invalid_api_key", headers=lambda w: bearer("sk-not-ours")
    ),
    "key with the wrong prefix": Case(
        "GET",
        "/v1/me",
        401,
        "invalid_api_key",
        headers=lambda w: bearer("sk_" + w.active.secret.partition("_")[2]),
    ),
    "truncated key": Case(
        "GET", "/v1/me", 401, "invalid_api_key", headers=lambda w: bearer(w.active.secret[:-1])
    ),
    "bad checksum": Case(
        "GET",
        "/v1/me",
        401,
        "invalid_api_key",
        headers=lambda w: bearer(corrupted(w.active.secret)),
    ),
    "unknown well-formed key": Case(
        "GET", "/v1/me", 401, "invalid_api_key", headers=lambda w: bearer(w.unknown)
    ),
    "admin token as a tester key": Case(
        "GET", "/v1/me", 401, "invalid_api_key", headers=lambda w: bearer(w.admin.secret)
    ),
    "revoked key": Case("GET", "/v1/videos", 401, "key_revoked", headers=key_of("revoked")),
    "suspended key": Case("GET", "/v1/me", 401, "key_suspended", headers=key_of("suspended")),
    "expired key": Case("GET", "/v1/me", 401, "key_expired", headers=key_of("expiring")),
    "rotated past grace": Case("GET", "/v1/me", 401, "key_rotated", headers=key_of("rotated")),
    "suspended tester": Case(
        "GET", "/v1/me", 401, "tester_suspended", headers=key_of("suspended_tester")
    ),
    "revoked key on create": Case(
        "POST", "/v1/videos", 401, "key_revoked", headers=key_of("revoked"), json={"prompt": "x"}
    ),
    # -- keys in URLs --
    "key in query string": Case(
        "GET", "/v1/videos?api_key=whatever", 400, "api_key_in_query", param="api_key"
    ),
    "key value under an innocent name": Case(
        "GET", "/v1/videos?x={active}", 400, "api_key_in_query", param="x"
    ),
    "key in query with a valid header too": Case(
        "GET",
        "/v1/me?access_token=abc",
        400,
        "api_key_in_query",
        param="access_token",
        headers=key_of("active"),
    ),
    "admin token in query": Case(
        "GET", "/admin/v1/keys?token=abc", 400, "api_key_in_query", param="token"
    ),
    # -- routing --
    "unknown route": Case("GET", "/v1/nothing-here", 404, "not_found"),
    "unknown root route": Case("GET", "/wp-login.php", 404, "not_found"),
    "unknown admin route": Case("GET", "/admin/v1/nothing", 404, "not_found"),
    # A tester request all the same: admitted first (tests/tester/test_methods.py).
    "wrong method on videos": Case(
        "PUT", "/v1/videos", 405, "method_not_allowed", headers=key_of("active")
    ),
    "wrong method on a video": Case(
        "PATCH", "/v1/videos/video_1", 405, "method_not_allowed", headers=key_of("active")
    ),
    "wrong method on videos, no key": Case("PUT", "/v1/videos", 401, "missing_api_key"),
    "wrong method on admin": Case("DELETE", "/admin/v1/testers", 405, "method_not_allowed"),
    "tricky path": Case("GET", "/v1/videos/%2e%2e/x", 400, "invalid_path"),
    # -- tester API input --
    "bad limit": Case(
        "GET", "/v1/videos?limit=0", 400, "invalid_value", param="limit", headers=key_of("active")
    ),
    "unsupported media type": Case(
        "POST",
        "/v1/videos",
        415,
        "unsupported_media_type",
        headers=key_of("active"),
        data=b"prompt=x",
        content_type="text/plain",
    ),
    "someone else's video": Case(
        "GET", "/v1/videos/video_unknown", 404, "not_found", headers=key_of("active")
    ),
    "remix without a prompt": Case(
        "POST",
        "/v1/videos/video_1/remix",
        400,
        "missing_required_parameter",
        param="prompt",
        headers=key_of("active"),
        json={},
    ),
    "bad content variant": Case(
        "GET",
        "/v1/videos/video_1/content?variant=audio",
        400,
        "invalid_value",
        param="variant",
        headers=key_of("active"),
    ),
    # -- admin authentication and roles --
    "admin without a token": Case("GET", "/admin/v1/testers", 401, "missing_api_key"),
    "admin with a tester key": Case(
        "GET", "/admin/v1/testers", 401, "invalid_admin_token", headers=key_of("active")
    ),
    "admin write with a tester key": Case(
        "POST",
        "/admin/v1/testers",
        401,
        "invalid_admin_token",
        headers=key_of("active"),
        json={"name": "x", "email": "x@example.com"},
    ),
    "admin with an unknown token": Case(
        "GET",
        "/admin/v1/whoami",
        401,
        "invalid_admin_token",
        headers=lambda w: bearer(w.admin.secret[:-4] + "0000"),
    ),
    "admin with a revoked token": Case(
        "GET", "/admin/v1/whoami", 401, "token_revoked", headers=key_of("revoked_token")
    ),
    "auditor adding a tester": Case(
        "POST",
        "/admin/v1/testers",
        403,
        "permission_denied",
        headers=key_of("auditor"),
        json={"name": "x", "email": "x@example.com"},
    ),
    "auditor revoking a key": Case(
        "POST",
        "/admin/v1/keys/key_x/revoke",
        403,
        "permission_denied",
        headers=key_of("auditor"),
        json={"reason": "r"},
    ),
    "approver listing keys": Case(
        "GET", "/admin/v1/keys", 403, "permission_denied", headers=key_of("approver")
    ),
    # -- admin input --
    "invalid json to admin": Case(
        "POST",
        "/admin/v1/testers",
        400,
        "invalid_json",
        headers=key_of("admin"),
        data=b'{"name": "x",',
        content_type="application/json",
    ),
    "json array to admin": Case(
        "POST",
        "/admin/v1/testers",
        400,
        "invalid_json",
        headers=key_of("admin"),
        json=["name", "email"],
    ),
    "missing tester name": Case(
        "POST",
        "/admin/v1/testers",
        400,
        "missing_required_parameter",
        param="name",
        headers=key_of("admin"),
        json={"email": "x@example.com"},
    ),
    "unknown key": Case(
        "GET", "/admin/v1/keys/key_nope", 404, "not_found", headers=key_of("admin")
    ),
    "revoke without a reason": Case(
        "POST",
        "/admin/v1/keys/key_nope/revoke",
        400,
        "missing_required_parameter",
        param="reason",
        headers=key_of("admin"),
        json={},
    ),
    "bad audit cursor": Case(
        "GET",
        "/admin/v1/audit?after_seq=-1",
        400,
        "invalid_value",
        param="after_seq",
        headers=key_of("auditor"),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_error_shape(
    client: Any, world: World, upstream: responses.RequestsMock, case: Case
) -> None:
    kwargs: dict[str, Any] = {"headers": case.headers(world)}
    if case.json is not None:
        kwargs["json"] = case.json
    if case.data is not None:
        kwargs["data"] = case.data
    if case.content_type is not None:
        kwargs["content_type"] = case.content_type
    path = case.path.replace("{active}", world.active.secret)

    response = client.open(path, method=case.method, **kwargs)

    assert_error(response, case.status, case.code, case.param)
    # None of these can succeed by being sent again unchanged.
    assert response.headers["x-should-retry"] == "false"
    assert len(upstream.calls) == 0
    text = response.get_data(as_text=True)
    for secret in world.secrets:
        assert secret not in text


def test_405_names_the_allowed_methods(client: Any, world: World) -> None:
    response = client.put("/v1/videos", headers=bearer(world.active.secret))

    assert_error(response, 405, "method_not_allowed")
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_upstream_failures_are_in_the_shape_too(
    client: Any, world: World, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, "http://upstream.test/v1/videos", status=503, body=b"x")

    response = client.post("/v1/videos", json={"prompt": "x"}, headers=bearer(world.active.secret))

    assert_error(response, 502, "upstream_error")
    assert response.get_json()["error"]["type"] == "server_error"


def test_an_unexpected_exception_is_a_500_in_the_shape(
    client: Any, world: World, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"database on fire; key {world.active.secret}")

    monkeypatch.setattr(type(store), "read", explode)

    response = client.get("/v1/me", headers=bearer(world.active.secret))

    assert_error(response, 500, "internal_error")
    assert "on fire" not in response.get_data(as_text=True)


def test_within_grace_a_rotated_key_still_works(
    client: Any, store: Store, make_key: Callable[..., IssuedKey], clock: FakeClock
) -> None:
    key = make_key()
    with store.transaction() as tx:
        successor = tx.keys.rotate(key.key.id, "test:setup", timedelta(minutes=10))
    clock.advance(minutes=9)

    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    clock.advance(minutes=1)
    assert_error(client.get("/v1/me", headers=bearer(key.secret)), 401, "key_rotated")
    assert client.get("/v1/me", headers=bearer(successor.secret)).status_code == 200


def test_expiry_is_read_against_the_clock(
    client: Any, make_key: Callable[..., IssuedKey], clock: FakeClock
) -> None:
    key = make_key(expires_at=clock() + timedelta(minutes=5))

    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    clock.advance(minutes=5)
    assert_error(client.get("/v1/me", headers=bearer(key.secret)), 401, "key_expired")


# -- refusing without storage ----------------------------------------------------------


@pytest.fixture
def sql_statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement the gateway runs while the fixture is active."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def checkout(*args: Any) -> None:
        statements.append("<connection checkout>")

    engine = store.database.engine
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", checkout)
    yield statements
    event.remove(engine, "before_cursor_execute", record)
    event.remove(engine.pool, "checkout", checkout)


@pytest.mark.parametrize(
    "credential",
    [
        lambda key: corrupted(key),
        lambda key: key[:-1],
        lambda key: key + "0",
        lambda key: "sk-proj-" + key,
        lambda key: key.replace("_", "-", 1),
        lambda key: "drwb_" + "!" * 33,
    ],
    ids=["bad checksum", "truncated", "too long", "foreign prefix", "no separator", "symbols"],
)
def test_malformed_keys_are_refused_without_touching_storage(
    client: Any,
    make_key: Callable[..., IssuedKey],
    sql_statements: list[str],
    credential: Callable[[str], str],
) -> None:
    key = make_key()
    sql_statements.clear()

    response = client.get("/v1/me", headers=bearer(credential(key.secret)))

    assert_error(response, 401, "invalid_api_key")
    assert sql_statements == []


def test_malformed_admin_tokens_are_refused_without_touching_storage(
    client: Any, make_token: Callable[..., IssuedToken], sql_statements: list[str]
) -> None:
    token = make_token("admin")
    sql_statements.clear()

    response = client.get("/admin/v1/whoami", headers=bearer(corrupted(token.secret)))

    assert_error(response, 401, "invalid_admin_token")
    assert sql_statements == []


def test_a_well_formed_unknown_key_is_looked_up(
    client: Any, store: Store, sql_statements: list[str]
) -> None:
    # The counterpart of the tests above: proves the listener sees the lookup (the hot
    # path's PreparedRead runs on a pooled DBAPI connection: its checkout is what shows).
    response = client.get("/v1/me", headers=bearer(store.key_format.generate()))

    assert_error(response, 401, "invalid_api_key")
    assert "<connection checkout>" in sql_statements
