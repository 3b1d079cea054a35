"""``POST /integrations/secret-scanning``: GitHub's partner protocol, end to end in process.

GitHub is played by a P-256 key pair made here; its public key is served with ``responses``
at the configured URL. A refused report must change nothing: the key keeps working and the
audit trail gains no entry.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from gateway.client import new_proof_key
from gateway.integrations.github_signatures import (
    MAX_KEYS_AGE,
    GitHubSigningKeys,
    RefreshThrottled,
    SigningKeysUnavailable,
)
from gateway.integrations.secret_scanning import (
    ACTOR,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    SIGNING_KEYS_EXTENSION,
)
from gateway.state import GatewayState
from keys.access.lifecycle import IssuedKey
from keys.models import ApiKey, AuditEntry
from keys.store import Store
from tests.helpers import assert_error, bearer

KEYS_URL = "https://github-meta.test/meta/public_keys/secret_scanning"
URL = "/integrations/secret-scanning"
KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
OTHER_KEY_ID = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c"
LEAK_URL = "https://github.com/octo/demo/blob/1a2b3c/config.py"

MakeKey = Callable[..., IssuedKey]


class MonotonicClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"secret_scanning_keys_url": KEYS_URL}


@pytest.fixture
def github_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key: ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def keys_document(*published: tuple[str, ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    return {
        "public_keys": [
            {"key_identifier": key_id, "key": public_pem(key), "is_current": index == 0}
            for index, (key_id, key) in enumerate(published)
        ]
    }


@pytest.fixture
def github_meta(github_key: ec.EllipticCurvePrivateKey) -> Iterator[responses.RequestsMock]:
    """GitHub's public key endpoint, publishing ``github_key`` under KEY_ID."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(KEYS_URL, json=keys_document((KEY_ID, github_key)))
        yield mock


@pytest.fixture
def keyring_clock(app: Any) -> MonotonicClock:
    clock = MonotonicClock()
    app.extensions[SIGNING_KEYS_EXTENSION].clock = clock
    return clock


def fetches(mock: responses.RequestsMock) -> int:
    return sum(1 for call in mock.calls if call.request.url == KEYS_URL)


def sign(private_key: ec.EllipticCurvePrivateKey, body: bytes) -> str:
    return base64.b64encode(private_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def record(token: str, source: str = "content") -> dict[str, str]:
    return {"token": token, "type": "drawbridge_api_key", "url": LEAK_URL, "source": source}


def encode(records: Any) -> bytes:
    return json.dumps(records).encode()


def post_signed(
    client: Any,
    body: bytes,
    private_key: ec.EllipticCurvePrivateKey,
    key_id: str = KEY_ID,
) -> Any:
    return client.post(
        URL,
        data=body,
        content_type="application/json",
        headers={KEY_ID_HEADER: key_id, SIGNATURE_HEADER: sign(private_key, body)},
    )


def audit_count(store: Store) -> int:
    with store.read() as tx:
        return int(tx.session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def key_row(store: Store, key_id: str) -> ApiKey:
    with store.read() as tx:
        row = tx.session.get(ApiKey, key_id)
        assert row is not None
        tx.session.expunge(row)
        return row


# -- a report that verifies ------------------------------------------------------------


@pytest.mark.both_databases
def test_signed_report_revokes_the_key_within_the_request(
    client: Any,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
) -> None:
    key = make_key()
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200

    response = post_signed(client, encode([record(key.secret, source="commit")]), github_key)

    assert response.status_code == 200 and response.get_json() == []
    assert_error(client.get("/v1/me", headers=bearer(key.secret)), 401, "key_revoked")
    row = key_row(store, key.key.id)
    assert row.status == "revoked" and row.revoked_by == ACTOR
    assert row.revoked_at == store.clock()
    assert row.revoked_reason == f"leaked (url: {LEAK_URL}; source: commit)"
    with store.read() as tx:
        entry = tx.audit.entries()[-1]
    assert (entry.actor, entry.action, entry.target) == (ACTOR, "key.revoke", key.key.id)
    assert entry.details["url"] == LEAK_URL and entry.details["source"] == "commit"
    assert entry.details["cause"] == "leak"
    assert key.secret not in json.dumps(entry.details) + (entry.reason or "")


@pytest.mark.both_databases
def test_a_batch_revokes_only_the_live_keys_it_holds(
    client: Any,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
) -> None:
    live, other_live, bystander = make_key(), make_key(), make_key()
    earlier = make_key()
    with store.transaction() as tx:
        tx.keys.revoke(earlier.key.id, "test:setup", "left the program")
    unknown = store.key_format.generate()  # well formed, never issued
    bad_checksum = live.secret[:-1] + ("A" if live.secret[-1] != "A" else "B")
    before = audit_count(store)

    tokens = [
        live.secret,
        unknown,
        "drwb_tooshort",
        bad_checksum,
        earlier.secret,
        other_live.secret,
        live.secret,  # reported twice in one batch
        store.token_format.generate(),  # an admin token's shape is not a tester key
    ]
    response = post_signed(client, encode([record(t) for t in tokens]), github_key)

    assert response.status_code == 200 and response.get_json() == []
    assert key_row(store, live.key.id).status == "revoked"
    assert key_row(store, other_live.key.id).status == "revoked"
    assert key_row(store, earlier.key.id).revoked_reason == "left the program"
    assert key_row(store, bystander.key.id).status == "active"
    assert client.get("/v1/me", headers=bearer(bystander.secret)).status_code == 200
    assert audit_count(store) == before + 2


def test_the_answer_does_not_reveal_whether_a_token_was_valid(
    client: Any,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
) -> None:
    live, revoked = make_key(), make_key()
    with store.transaction() as tx:
        tx.keys.revoke(revoked.key.id, "test:setup", "gone")
    answers = []
    for token in (live.secret, revoked.secret, store.key_format.generate(), "drwb_nope"):
        response = post_signed(client, encode([record(token)]), github_key)
        headers = {k: v for k, v in response.headers.items() if k != "X-Request-Id"}
        answers.append((response.status_code, response.get_data(), headers))
    assert key_row(store, live.key.id).status == "revoked"
    assert all(answer == answers[0] for answer in answers), answers
    assert answers[0][:2] == (200, b"[]\n")


def test_label_feedback_when_enabled(
    client: Any,
    state: GatewayState,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
) -> None:
    state.settings = dataclasses.replace(state.settings, secret_scanning_feedback=True)
    live, revoked = make_key(), make_key()
    with store.transaction() as tx:
        tx.keys.revoke(revoked.key.id, "test:setup", "gone")
    unknown = store.key_format.generate()
    tokens = [live.secret, revoked.secret, unknown, "drwb_nope"]

    response = post_signed(client, encode([record(t) for t in tokens]), github_key)

    assert response.status_code == 200
    assert response.get_json() == [
        {"token_raw": token, "token_type": "drawbridge_api_key", "label": label}
        for token, label in zip(
            tokens,
            ["true_positive", "true_positive", "false_positive", "false_positive"],
            strict=True,
        )
    ]
    assert key_row(store, live.key.id).status == "revoked"


@pytest.mark.both_databases
def test_a_reported_bound_key_is_revoked_or_kept_and_the_record_says_it_was_bound(
    client: Any,
    state: GatewayState,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
    tmp_path: Path,
) -> None:
    state.settings = dataclasses.replace(state.settings, secret_scanning_feedback=True)
    revoked, kept = make_key(), make_key()
    for key in (revoked, kept):
        with store.transaction() as tx:
            tx.proof_keys.bind(key.key.id, new_proof_key(tmp_path / key.key.id), "test:setup")

    response = post_signed(client, encode([record(revoked.secret)]), github_key)
    assert response.get_json()[0]["label"] == "true_positive"
    assert key_row(store, revoked.key.id).status == "revoked"
    with store.read() as tx:
        entry = tx.audit.entries()[-1]
    assert (entry.action, entry.target) == ("key.revoke", revoked.key.id)
    assert entry.details["proof_bound"] is True

    state.settings = dataclasses.replace(state.settings, proof_revoke_leaked=False)
    response = post_signed(client, encode([record(kept.secret)]), github_key)
    assert response.get_json()[0]["label"] == "true_positive"
    assert key_row(store, kept.key.id).status == "active"
    with store.read() as tx:
        entry = tx.audit.entries()[-1]
    assert (entry.action, entry.target) == ("key.leak_reported", kept.key.id)
    assert entry.details["proof_bound"] is True and entry.details["revoked"] is False
    assert entry.details["url"] == LEAK_URL


def test_an_empty_report_is_fine(
    client: Any, github_key: ec.EllipticCurvePrivateKey, github_meta: responses.RequestsMock
) -> None:
    response = post_signed(client, b"[]", github_key)
    assert response.status_code == 200 and response.get_json() == []


# -- refused reports change nothing ----------------------------------------------------

Request = Callable[[str, ec.EllipticCurvePrivateKey], tuple[bytes, dict[str, str]]]


def _signed(body: bytes, key: ec.EllipticCurvePrivateKey, key_id: str = KEY_ID) -> dict[str, str]:
    return {KEY_ID_HEADER: key_id, SIGNATURE_HEADER: sign(key, body)}


def _tampered(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict[str, str]]:
    signed = encode([record(secret, source="content")])
    return signed.replace(b'"content"', b'"commit"'), _signed(signed, key)


def _by_another_key(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict[str, str]]:
    body = encode([record(secret)])
    return body, _signed(body, ec.generate_private_key(ec.SECP256R1()))


def _unknown_key_id(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict[str, str]]:
    body = encode([record(secret)])
    return body, _signed(body, key, key_id=OTHER_KEY_ID)


def _without(*names: str) -> Request:
    def build(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict[str, str]]:
        body = encode([record(secret)])
        headers = _signed(body, key)
        return body, {k: v for k, v in headers.items() if k not in names}

    return build


def _garbled_signature(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict]:
    body = encode([record(secret)])
    return body, {KEY_ID_HEADER: KEY_ID, SIGNATURE_HEADER: "not base64!"}


def _truncated_signature(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict]:
    body = encode([record(secret)])
    headers = _signed(body, key)
    der = base64.b64decode(headers[SIGNATURE_HEADER])
    return body, {**headers, SIGNATURE_HEADER: base64.b64encode(der[:-3]).decode()}


def _valid_then_malformed(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict]:
    body = encode([record(secret), {"token": 12, "type": "x", "url": "u", "source": "s"}])
    return body, _signed(body, key)


def _not_a_list(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict]:
    body = encode(record(secret))
    return body, _signed(body, key)


def _not_json(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict]:
    body = f"token={secret}".encode()
    return body, _signed(body, key)


def _bad_field(secret: str, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict]:
    body = encode([{**record(secret), "url": ["a list"]}])
    return body, _signed(body, key)


REFUSED: dict[str, tuple[Request, int, str, str | None]] = {
    "no headers": (_without(KEY_ID_HEADER, SIGNATURE_HEADER), 400, "missing_signature", None),
    "no signature": (_without(SIGNATURE_HEADER), 400, "missing_signature", None),
    "no key id": (_without(KEY_ID_HEADER), 400, "missing_signature", None),
    "garbled signature": (_garbled_signature, 403, "invalid_signature", None),
    "truncated signature": (_truncated_signature, 403, "invalid_signature", None),
    "signed by another key": (_by_another_key, 403, "invalid_signature", None),
    "tampered body": (_tampered, 403, "invalid_signature", None),
    "unknown key id": (_unknown_key_id, 403, "invalid_signature", None),
    "not json": (_not_json, 400, "invalid_payload", None),
    "not a list": (_not_a_list, 400, "invalid_payload", None),
    "a malformed record after a valid one": (
        _valid_then_malformed,
        400,
        "invalid_payload",
        "[1].token",
    ),
    "a field of the wrong type": (_bad_field, 400, "invalid_payload", "[0].url"),
}


@pytest.mark.both_databases
@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_reports_change_nothing(
    case: str,
    client: Any,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
) -> None:
    build, status, code, param = REFUSED[case]
    key = make_key()
    before = audit_count(store)
    body, headers = build(key.secret, github_key)

    response = client.post(URL, data=body, content_type="application/json", headers=headers)

    assert_error(response, status, code, param)
    assert key_row(store, key.key.id).status == "active"
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    assert audit_count(store) == before


def test_an_oversized_report_is_refused_unread(
    client: Any,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
) -> None:
    key = make_key()
    padding = "x" * (1024 * 1024)
    body = encode([{**record(key.secret), "source": padding}])
    response = post_signed(client, body, github_key)
    assert_error(response, 413, "request_too_large")
    assert fetches(github_meta) == 0  # refused before any signature work
    assert key_row(store, key.key.id).status == "active"


def test_a_chunked_oversized_report_is_refused(
    client: Any, store: Store, make_key: MakeKey, github_key: ec.EllipticCurvePrivateKey
) -> None:
    key = make_key()
    body = encode([{**record(key.secret), "source": "x" * (1024 * 1024)}])
    response = client.post(
        URL,
        data=body,
        headers={**_signed(body, github_key), "Transfer-Encoding": "chunked"},
        # As a WSGI server hands over a chunked body: no length, the stream ends by itself.
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert_error(response, 413, "request_too_large")
    assert key_row(store, key.key.id).status == "active"


def test_only_post(client: Any) -> None:
    assert_error(client.get(URL), 405, "method_not_allowed")


# -- GitHub's public keys --------------------------------------------------------------


def test_unknown_key_ids_refetch_at_most_once_a_minute(
    client: Any,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
    keyring_clock: MonotonicClock,
) -> None:
    key = make_key()
    assert post_signed(client, b"[]", github_key).status_code == 200
    assert fetches(github_meta) == 1
    assert post_signed(client, b"[]", github_key).status_code == 200
    assert fetches(github_meta) == 1  # cached

    body = encode([record(key.secret)])
    assert_error(post_signed(client, body, github_key, OTHER_KEY_ID), 429, "rate_limit_exceeded")
    assert fetches(github_meta) == 1  # the list is a second old: no refetch

    keyring_clock.now += 61
    assert_error(post_signed(client, body, github_key, OTHER_KEY_ID), 403, "invalid_signature")
    assert fetches(github_meta) == 2  # one refetch for the unknown id

    keyring_clock.now += 30
    for _ in range(5):
        refused = post_signed(client, body, github_key, OTHER_KEY_ID)
        assert_error(refused, 429, "rate_limit_exceeded")
        assert refused.headers["Retry-After"] == "30"
    assert fetches(github_meta) == 2  # an attacker cannot make us hammer the URL
    assert post_signed(client, b"[]", github_key).status_code == 200  # known ids unaffected

    keyring_clock.now += 31
    assert_error(post_signed(client, body, github_key, OTHER_KEY_ID), 403, "invalid_signature")
    assert fetches(github_meta) == 3
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200


def test_a_key_github_rotated_in_is_fetched(
    client: Any,
    store: Store,
    make_key: MakeKey,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
    keyring_clock: MonotonicClock,
) -> None:
    assert post_signed(client, b"[]", github_key).status_code == 200
    new_key = ec.generate_private_key(ec.SECP256R1())
    github_meta.replace(
        responses.GET, KEYS_URL, json=keys_document((OTHER_KEY_ID, new_key), (KEY_ID, github_key))
    )
    keyring_clock.now += 61
    leaked = make_key()
    response = post_signed(client, encode([record(leaked.secret)]), new_key, OTHER_KEY_ID)
    assert response.status_code == 200
    assert key_row(store, leaked.key.id).status == "revoked"


def test_a_key_github_withdrew_stops_working_after_the_cache_ages(
    client: Any,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
    keyring_clock: MonotonicClock,
) -> None:
    assert post_signed(client, b"[]", github_key).status_code == 200
    github_meta.replace(
        responses.GET,
        KEYS_URL,
        json=keys_document((OTHER_KEY_ID, ec.generate_private_key(ec.SECP256R1()))),
    )
    keyring_clock.now += MAX_KEYS_AGE - 1
    assert post_signed(client, b"[]", github_key).status_code == 200
    keyring_clock.now += 2
    assert_error(post_signed(client, b"[]", github_key), 403, "invalid_signature")


def test_keys_endpoint_down_is_a_503_and_changes_nothing(
    client: Any, store: Store, make_key: MakeKey, github_key: ec.EllipticCurvePrivateKey
) -> None:
    key = make_key()
    with responses.RequestsMock() as mock:
        mock.get(KEYS_URL, status=502, body="bad gateway")
        response = post_signed(client, encode([record(key.secret)]), github_key)
    assert_error(response, 503, "signing_keys_unavailable")
    assert response.headers["Retry-After"] == "60"
    assert key_row(store, key.key.id).status == "active"


def test_old_keys_serve_while_the_endpoint_is_down(
    client: Any,
    github_key: ec.EllipticCurvePrivateKey,
    github_meta: responses.RequestsMock,
    keyring_clock: MonotonicClock,
) -> None:
    assert post_signed(client, b"[]", github_key).status_code == 200
    github_meta.replace(responses.GET, KEYS_URL, status=500)
    keyring_clock.now += MAX_KEYS_AGE + 1
    assert post_signed(client, b"[]", github_key).status_code == 200
    assert fetches(github_meta) == 2


def test_unusable_published_keys_are_skipped() -> None:
    good = ec.generate_private_key(ec.SECP256R1())
    wrong_curve = ec.generate_private_key(ec.SECP384R1())
    document = {
        "public_keys": [
            {"key_identifier": "p384", "key": public_pem(wrong_curve)},
            {"key_identifier": "junk", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n"},
            {"key": public_pem(good)},
            "not a record",
            {"key_identifier": "good", "key": public_pem(good), "is_current": True},
        ]
    }
    keyring = GitHubSigningKeys(KEYS_URL)
    with responses.RequestsMock() as mock:
        mock.get(KEYS_URL, json=document)
        keyring.verify(b"payload", "good", sign(good, b"payload"))
    with pytest.raises(RefreshThrottled):
        keyring.public_key("p384")


@pytest.mark.parametrize(
    "answer",
    [
        {"body": "not json"},
        {"json": {"keys": []}},
        {"json": {"public_keys": "nope"}},
        {"status": 301, "headers": {"Location": "https://evil.test/keys"}},
        {"body": "x" * (300 * 1024)},
    ],
)
def test_a_bad_keys_document_is_unavailability(answer: dict[str, Any]) -> None:
    keyring = GitHubSigningKeys(KEYS_URL)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(KEYS_URL, **answer)
        with pytest.raises(SigningKeysUnavailable):
            keyring.public_key(KEY_ID)
        assert len(mock.calls) == 1  # no redirect followed


def test_the_fetch_ignores_proxy_and_netrc_settings() -> None:
    keyring = GitHubSigningKeys(KEYS_URL)
    assert keyring._session.trust_env is False
