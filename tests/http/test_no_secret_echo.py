"""No error message echoes a secret: anything that parses as a tester key or an admin token
(keys/access/keyformat.py: a prefix, the random part and a valid checksum) comes back cut to
its hint (``drwb_...wxyz``), wherever the client put it — the path, the query string, a JSON
field's value or name — and whatever error it caused.

An error body travels further than the request: into the client's logs, a CI transcript, a
bug report pasted in a chat. The caller's own key in a 404 message is the key leaked there.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import responses

from gateway.http.errors import api_error
from gateway.upstream.client import UpstreamError
from keys.access.admin_tokens import IssuedToken
from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, DEFAULT_KEY_PREFIX, KeyFormat
from keys.access.lifecycle import IssuedKey
from tests.helpers import UPSTREAM_URL, bearer

# Secrets that parse but that no row holds: a key someone else leaked, a token of another
# deployment. The caller's own key and the admin's own token are added per test.
OTHER_KEY = KeyFormat(DEFAULT_KEY_PREFIX).generate()
OTHER_TOKEN = KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX).generate()

# (method, path, JSON body or None); "{s}" is replaced by the secret under test.
TESTER_REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/videos/{s}", None),
    ("DELETE", "/v1/videos/{s}", None),
    ("GET", "/v1/videos/{s}/content", None),
    ("POST", "/v1/videos/{s}/remix", {"prompt": "again"}),
    ("GET", "/v1/videos/{s}/share", None),
    ("POST", "/v1/videos/{s}/share", {}),
    ("GET", "/v1/videos?after={s}", None),
    ("GET", "/v1/videos?order={s}", None),
    ("GET", "/v1/videos?limit={s}", None),
    ("GET", "/v1/videos?{s}=1", None),  # ignored, as OpenAI does: a 200 that echoes nothing
    ("GET", "/v1/videos/video_x/content?variant={s}", None),
    ("POST", "/v1/videos", {"prompt": "a kite", "model": "{s}"}),
    ("POST", "/v1/videos", {"prompt": "a kite", "size": "{s}"}),
    ("POST", "/v1/videos", {"prompt": "a kite", "seconds": "{s}"}),
    ("POST", "/v1/videos", {"prompt": "a kite", "{s}": "x"}),
    ("POST", "/v1/videos", {"prompt": ["{s}"]}),
    ("POST", "/v1/me/rotate", {"grace_seconds": "{s}"}),
    ("POST", "/v1/me/revoke", {"reason": 1, "{s}": 2}),
    ("DELETE", "/v1/me/proof-keys/{s}", None),
    ("POST", "/v1/me/proof-keys", {"public_key": "{s}"}),
    ("GET", "/s/{s}", None),
]

ADMIN_REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/admin/v1/keys/{s}", None),
    ("GET", "/admin/v1/keys?tester={s}", None),
    ("GET", "/admin/v1/keys?{s}=1", None),
    ("GET", "/admin/v1/testers?cohort={s}", None),
    ("POST", "/admin/v1/testers", {"name": "Ada", "email": "a@example.com", "cohort": "{s}"}),
    ("POST", "/admin/v1/tokens", {"name": "t", "role": "{s}"}),
    ("POST", "/admin/v1/keys/revoke", {"tester_id": "{s}", "reason": "r"}),
    ("POST", "/admin/v1/keys/revoke", {"cohort": "{s}", "reason": "r"}),
    ("PUT", "/admin/v1/cohorts/{s}/policy", {"requests_per_minute": 1}),
    ("PUT", "/admin/v1/cohorts/beta/policy", {"{s}": 1}),
    ("GET", "/admin/v1/usage?since={s}", None),
    ("GET", "/admin/v1/usage/export?format={s}", None),
    ("GET", "/admin/v1/approvals?status={s}", None),
    ("POST", "/admin/v1/lockdown", {"enabled": "{s}"}),
]


def _filled(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace("{s}", secret)
    if isinstance(value, list):
        return [_filled(item, secret) for item in value]
    if isinstance(value, dict):
        return {_filled(name, secret): _filled(item, secret) for name, item in value.items()}
    return value


def _send(client: Any, credential: str, request: tuple[str, str, Any], secret: str) -> Any:
    method, path, body = request
    return client.open(
        _filled(path, secret),
        method=method,
        headers=bearer(credential),
        data=None if body is None else json.dumps(_filled(body, secret)),
        content_type=None if body is None else "application/json",
    )


def _assert_not_echoed(response: Any, secret: str) -> None:
    text = response.get_data(as_text=True)
    assert secret not in text, text
    assert secret[len(DEFAULT_KEY_PREFIX) + 1 : -4] not in text, text  # nor its body
    assert all(secret not in value for value in response.headers.values())


@pytest.fixture
def silent_upstream(upstream: responses.RequestsMock) -> responses.RequestsMock:
    """A backend that answers every call with its own 404 naming what it was asked for."""
    for method in (responses.GET, responses.POST, responses.DELETE):
        upstream.add(
            method,
            url=re.compile(rf"{UPSTREAM_URL}/.*"),
            status=404,
            json={"error": {"message": "not found", "type": "invalid_request_error"}},
        )
    return upstream


@pytest.mark.parametrize("secret_kind", ["own key", "other key", "other token"])
@pytest.mark.parametrize("request_index", range(len(TESTER_REQUESTS)))
def test_no_tester_error_echoes_a_secret(
    client: Any,
    key: IssuedKey,
    silent_upstream: responses.RequestsMock,
    secret_kind: str,
    request_index: int,
) -> None:
    secret = {"own key": key.secret, "other key": OTHER_KEY, "other token": OTHER_TOKEN}[
        secret_kind
    ]
    response = _send(client, key.secret, TESTER_REQUESTS[request_index], secret)
    _assert_not_echoed(response, secret)


@pytest.mark.parametrize("secret_kind", ["own token", "other key", "other token"])
@pytest.mark.parametrize("request_index", range(len(ADMIN_REQUESTS)))
def test_no_admin_error_echoes_a_secret(
    client: Any, admin: IssuedToken, secret_kind: str, request_index: int
) -> None:
    secret = {"own token": admin.secret, "other key": OTHER_KEY, "other token": OTHER_TOKEN}[
        secret_kind
    ]
    response = _send(client, admin.secret, ADMIN_REQUESTS[request_index], secret)
    _assert_not_echoed(response, secret)


def test_the_backends_message_is_masked_too() -> None:
    """A 4xx of the backend is passed on with its message, which may quote what it was sent."""
    error = api_error(
        UpstreamError(400, f"invalid size '{OTHER_KEY}'", "invalid_value", param=OTHER_KEY)
    )
    assert OTHER_KEY not in error.message and OTHER_KEY not in str(error.param)
    assert KeyFormat(DEFAULT_KEY_PREFIX).hint(OTHER_KEY) in error.message
