"""A method a tester route does not have — ``OPTIONS`` included — is a tester request like any
other: the key is checked (a missing or revoked one is a 401), it counts against the key's
limits, it is refused 405 ``method_not_allowed`` in the error shape with an ``Allow`` header,
and it leaves a usage event under the key.

The tester plane answers no CORS preflight: its clients are SDKs and scripts, not browsers
(docs/isolation.md). Flask's automatic ``OPTIONS`` answer (200, an empty HTML page, no key
looked at, no usage event under the key) let anyone probe it unseen.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from gateway.state import GatewayState
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.models import UsageEvent, UsageRefusal
from keys.store import Store
from tests.helpers import assert_error, bearer


def counted_refusals(state: GatewayState, store: Store) -> list[UsageRefusal]:
    """Refusals before admission are counted per day, not stored as events (docs/usage.md)."""
    state.usage.flush()
    with store.read() as tx:
        return list(tx.session.scalars(select(UsageRefusal)))


def events(state: GatewayState, store: Store) -> list[UsageEvent]:
    state.usage.flush()
    with store.read() as tx:
        return list(tx.session.scalars(select(UsageEvent).order_by(UsageEvent.id)))


@pytest.mark.parametrize(
    ("method", "path", "route", "allowed"),
    [
        ("OPTIONS", "/v1/videos", "/v1/videos", {"GET", "HEAD", "POST"}),
        ("OPTIONS", "/v1/me", "/v1/me", {"GET", "HEAD"}),
        ("OPTIONS", "/v1/videos/video_abc", "/v1/videos/<video_id>", {"GET", "HEAD", "DELETE"}),
        ("PUT", "/v1/videos", "/v1/videos", {"GET", "HEAD", "POST"}),
        ("PATCH", "/v1/videos/video_abc", "/v1/videos/<video_id>", {"GET", "HEAD", "DELETE"}),
    ],
)
def test_a_method_a_route_lacks_is_a_405_recorded_under_the_key(
    client: Any,
    key: IssuedKey,
    state: GatewayState,
    store: Store,
    method: str,
    path: str,
    route: str,
    allowed: set[str],
) -> None:
    response = client.open(path, method=method, headers=bearer(key.secret))

    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == allowed
    assert response.headers["x-should-retry"] == "false"
    # Counted like any request of the key.
    assert "x-ratelimit-remaining-requests" in response.headers
    (event,) = events(state, store)
    assert (event.method, event.route, event.status) == (method, route, 405)
    assert (event.key_id, event.tester_id) == (key.key.id, key.key.tester_id)
    assert event.error_code == "method_not_allowed"


def test_options_without_a_key_is_a_401(client: Any, state: GatewayState, store: Store) -> None:
    response = client.options("/v1/videos")

    assert_error(response, 401, "missing_api_key")
    assert events(state, store) == []
    (counted,) = counted_refusals(state, store)
    assert (counted.method, counted.route, counted.status, counted.key_id, counted.requests) == (
        "OPTIONS",
        "/v1/videos",
        401,
        "",
        1,
    )


def test_options_with_a_revoked_key_is_refused_as_revoked(
    client: Any, key: IssuedKey, store: Store, state: GatewayState
) -> None:
    with store.transaction() as tx:
        tx.keys.revoke(key.key.id, "admin:test", "leaked")

    response = client.options("/v1/videos", headers=bearer(key.secret))

    assert_error(response, 401, "key_revoked")
    (counted,) = counted_refusals(state, store)
    assert (counted.key_id, counted.status, counted.error_code, counted.method) == (
        key.key.id,
        401,
        "key_revoked",
        "OPTIONS",
    )


def test_the_admin_plane_answers_options_in_the_error_shape_too(
    client: Any, admin: IssuedToken
) -> None:
    response = client.options("/admin/v1/keys", headers=bearer(admin.secret))

    assert_error(response, 405, "method_not_allowed")
    assert "OPTIONS" not in response.headers["Allow"]
