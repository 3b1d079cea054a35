"""Hostile input over every route: never a 5xx, every error in the one shape.

Every rule of the Flask url_map is called — tester routes with a live tester key, admin routes
with an admin token, the secret-scanning endpoint with a validly signed body — with a corpus
of inputs that once made the gateway fail (issue 12) and with bodies and query strings drawn
by hypothesis. A revocation whose free text is hostile must still revoke.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import IterUnreader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.integrations.secret_scanning import KEY_ID_HEADER, SIGNATURE_HEADER
from keys.access.admin_tokens import IssuedToken
from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, DEFAULT_KEY_PREFIX, KeyFormat
from keys.access.lifecycle import IssuedKey
from keys.models import ApiKey, AuditEntry, Tester
from keys.store import Store
from tests.helpers import UPSTREAM_CREDENTIAL, UPSTREAM_URL, assert_error, bearer

KEYS_URL = "https://github-meta.test/meta/public_keys/secret_scanning"
GITHUB_KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
SCANNING = "/integrations/secret-scanning"
TESTER_PREFIXES = ("/v1/",)
ADMIN_PREFIXES = ("/admin/",)
LIVE_LOOKING_KEY = KeyFormat(DEFAULT_KEY_PREFIX).generate()
LIVE_LOOKING_TOKEN = KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX).generate()

# The values of issue 12, and their relatives.
HOSTILE_VALUES: list[Any] = [
    "x\ud800",
    "\udc00lone low",
    "nul\x00inside",
    "\x00",
    "bell\x07 escape\x1b[31m del\x7f c1\x85",
    f"paste {LIVE_LOOKING_KEY} here",
    f"token {LIVE_LOOKING_TOKEN}",
    "",
    "   ",
    "a" * 20_000,
    10**30,
    -(10**30),
    2**63,
    -1,
    1.5,
    True,
    None,
    [],
    {},
    {"nested": {"deeper": ["x\ud800", "\x00"]}},
    "999999999w",
    "9999999999999999999999d",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-13-45T99:99:99Z",
]
# Every field name a body of the API reads (a route ignores or refuses the others).
FIELDS = (
    "reason",
    "name",
    "email",
    "cohort",
    "role",
    "metadata",
    "honeytoken",
    "expires_at",
    "expires_in",
    "grace_seconds",
    "lockdown",
    "issued_before",
    "prompt",
    "model",
    "seconds",
    "size",
    "input_reference",
    "requests_per_minute",
    "models",
    "prompt_rules",
    "sharing",
)
RAW_BODIES: list[bytes] = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"reason": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"reason": "x\\ud800"}',
    b'{"reason": "x\\u0000y"}',
    b'{"name": "\\udfff", "email": "\\ud800@example.com"}',
    b'{"grace_seconds": 1e999}',
    b'{"grace_seconds": NaN}',
    b'{"grace_seconds": ' + b"9" * 5000 + b"}",
    b"\xff\xfe\x00{",
    b'{"reason": "caf\xc3"}',
    b"null",
    b"[]",
    b'"just a string"',
]
QUERY_VALUES = [
    "\x00",
    "9223372036854775808",
    "99999999999999999999999999",
    "-1",
    "x\ud800",
    "0001-01-01T00:00:00+14:00",
    "999999999w",
    LIVE_LOOKING_KEY[:-1] + "?",
    "a" * 5000,
    "9" * 5000,  # int() refuses more than 4300 digits
]
QUERY_NAMES = (
    "after",
    "after_seq",
    "limit",
    "since",
    "until",
    "format",
    "tester_id",
    "key_id",
    "cohort",
    "status",
    "order",
    "variant",
    "kind",
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A low body limit, so the chunked case is cheap; the secret-scanning keys at a test URL.
    return {"secret_scanning_keys_url": KEYS_URL, "max_request_bytes": 1_000_000}


@pytest.fixture
def github_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def outside(github_key: ec.EllipticCurvePrivateKey) -> Iterator[responses.RequestsMock]:
    """The upstream video API (any call answers with a fresh video) and GitHub's key list."""
    counter = itertools.count(1)

    def video(request: Any) -> tuple[int, dict[str, str], str]:
        body = {"id": f"video_up{next(counter)}", "object": "video", "status": "queued"}
        body.update(model="sora-2", size="720x1280", seconds="4", progress=0)
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    public_pem = (
        github_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(
            KEYS_URL,
            json={
                "public_keys": [
                    {"key_identifier": GITHUB_KEY_ID, "key": public_pem, "is_current": True}
                ]
            },
        )
        for method in ("GET", "POST", "DELETE"):
            mock.add_callback(method, re.compile(re.escape(UPSTREAM_URL) + ".*"), callback=video)
        yield mock


@dataclass
class Caller:
    """Calls any route with the right credential, keeping that credential alive."""

    client: Any
    store: Store
    make_key: Callable[..., IssuedKey]
    admin: IssuedToken
    home: Tester
    github_key: ec.EllipticCurvePrivateKey
    path_values: dict[str, str]
    tester_secret: str = ""
    tester_statuses: Counter[int] = field(default_factory=Counter)

    def headers_for(self, path: str, body: bytes) -> dict[str, str]:
        if path.startswith(TESTER_PREFIXES):
            if not self.tester_secret:
                self.tester_secret = self.make_key(self.home.id).secret
            return bearer(self.tester_secret)
        if path.startswith(ADMIN_PREFIXES):
            return bearer(self.admin.secret)
        if path == SCANNING:
            signature = self.github_key.sign(body, ec.ECDSA(hashes.SHA256()))
            return {
                KEY_ID_HEADER: GITHUB_KEY_ID,
                SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            }
        return {}

    def call(
        self, method: str, path: str, body: bytes | None = None, query: dict[str, str] | None = None
    ) -> Any:
        data = body or b""
        headers = self.headers_for(path, data)
        if body is not None:
            headers["Content-Type"] = "application/json"
        query_string = "&".join(
            f"{wire(name)}={wire(value)}" for name, value in (query or {}).items()
        )
        response = self.client.open(
            path, method=method, data=data, headers=headers, query_string=query_string
        )
        response.get_data()  # a streamed body fails here, if it fails
        check(response, f"{method} {path} {query!r} {data[:120]!r}")
        if path.startswith(TESTER_PREFIXES):
            self.tester_statuses[response.status_code] += 1
        if path.startswith(TESTER_PREFIXES) and response.status_code == 401:
            self.tester_secret = ""  # revoked or rotated by this very request: a fresh one
        if path.startswith(("/v1/me/revoke", "/v1/me/rotate")) and response.status_code < 300:
            self.tester_secret = ""
        if path == "/admin/v1/lockdown" and method == "POST":
            with self.store.transaction() as tx:  # tester routes must stay reachable
                tx.lockdown.set_lockdown(False, "test:hostile", None)
        return response


def check(response: Any, label: str) -> None:
    """Below 500, and every error exactly in the one shape."""
    assert response.status_code < 500, f"{label}: {response.get_data(as_text=True)[:500]}"
    if response.status_code >= 400 and label.split(" ", 2)[1].startswith("/console"):
        # The console is a browser surface: its errors are pages (gateway/console/errors.py).
        assert response.mimetype == "text/html", label
        return
    if response.status_code >= 400:
        body = response.get_json(silent=True)
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), label
        assert_error(response, response.status_code, body["error"]["code"], body["error"]["param"])


def routes(app: Any) -> list[tuple[str, str, list[str]]]:
    """(method, rule, argument names) of every rule."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, rule.rule, sorted(rule.arguments)))
    return sorted(found)


def wire(text: str) -> str:
    """Text as a client puts it in a URL: UTF-8 (even a lone surrogate's bytes), %-encoded."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def concrete(rule: str, values: dict[str, str]) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: wire(values.get(m.group(1), "x")), rule)


@pytest.fixture
def caller(
    client: Any,
    store: Store,
    make_key: Callable[..., IssuedKey],
    make_token: Callable[..., IssuedToken],
    make_tester: Callable[..., Tester],
    outside: responses.RequestsMock,
    github_key: ec.EllipticCurvePrivateKey,
) -> Caller:
    home = make_tester(name="Home")
    # No rate limit, quota or anomaly rule may stop hostile requests before they are read.
    unlimited = dict.fromkeys(
        (
            "requests_per_minute",
            "requests_per_day",
            "generations_per_day",
            "video_seconds_per_day",
            "video_seconds_per_month",
            "concurrent_jobs",
        ),
        10**9,
    )
    with store.transaction() as tx:
        tx.policies.set_overrides(
            home.id,
            {**unlimited, "anomaly_rate_factor": 0, "anomaly_max_client_ips": 0},
            "test:setup",
        )
    victim = make_key()
    caller = Caller(
        client,
        store,
        make_key,
        make_token("admin"),
        home,
        github_key,
        {
            "key_id": victim.key.id,
            "tester_id": victim.key.tester_id,
            "token_id": make_token("auditor").token.id,
            "approval_id": "apr_unknown",
            "cohort": "default",
            "token": "not-a-share-token",
            "filename": "x.txt",
        },
    )
    created = caller.call("POST", "/v1/videos", json.dumps({"prompt": "a lighthouse"}).encode())
    caller.path_values["video_id"] = created.get_json()["id"]
    return caller


def holds_nul_surrogate_or_huge(value: Any) -> bool:
    """What PostgreSQL, unlike SQLite, cannot store or compare."""
    text = json.dumps(value)
    return "\\u0000" in text or "\\ud" in text or len(text) > 18


def bodies(backend: str) -> Iterator[bytes]:
    yield from RAW_BODIES
    for value in HOSTILE_VALUES:
        if backend == "postgresql" and not holds_nul_surrogate_or_huge(value):
            continue  # the same code as on SQLite: once is enough
        yield json.dumps({name: value for name in FIELDS}).encode()
        yield json.dumps({"reason": value}).encode()


# Each GET route gets every query name with these values one by one; the others all at once.
CRITICAL_QUERY_VALUES = ("\x00", "9223372036854775808", "x\ud800")


def queries() -> Iterator[dict[str, str]]:
    for value in QUERY_VALUES:
        yield dict.fromkeys(QUERY_NAMES, value)
    for name, value in itertools.product(QUERY_NAMES, CRITICAL_QUERY_VALUES):
        yield {name: value}


@pytest.mark.both_databases
def test_the_corpus_over_every_route(app: Any, caller: Caller, backend: str) -> None:
    found = routes(app)
    assert len(found) >= 50, found
    calls = 0
    for method, rule, arguments in found:
        path = concrete(rule, caller.path_values)
        if method == "GET":
            for query in queries():
                caller.call(method, path, query=query)
                calls += 1
        else:
            for body in bodies(backend):
                caller.call(method, path, body)
                calls += 1
        for value in ("x\ud800", "\u2028", "a" * 3000, "\x00"):  # hostile path arguments
            if arguments:
                caller.call(method, concrete(rule, dict.fromkeys(arguments, value)))
    assert calls > 1000
    assert caller.tester_statuses[429] == 0, caller.tester_statuses  # every request was read
    # Whatever came in, /metrics and the audit trail hold no raw secret.
    metrics = caller.client.get("/metrics").get_data(as_text=True)
    with caller.store.read() as tx:
        trail = json.dumps([(e.reason, e.details) for e in tx.session.scalars(select(AuditEntry))])
    for secret in (LIVE_LOOKING_KEY, LIVE_LOOKING_TOKEN, caller.admin.secret, UPSTREAM_CREDENTIAL):
        assert secret not in metrics and secret not in trail


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec=None, categories=None), max_size=40),
    st.sampled_from(HOSTILE_VALUES),
)


def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=8), children, max_size=3
    )


JSON_VALUES = st.recursive(JSON_LEAVES, json_containers, max_leaves=8)


@pytest.mark.both_databases
def test_hypothesis_over_every_route(app: Any, caller: Caller) -> None:
    found = routes(app)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(
        route=st.sampled_from(found),
        payload=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4) | JSON_VALUES,
        query=st.dictionaries(
            st.sampled_from(QUERY_NAMES),
            st.text(st.characters(codec=None, categories=None), max_size=30)
            | st.sampled_from(QUERY_VALUES),
            max_size=3,
        ),
    )
    def run(route: tuple[str, str, list[str]], payload: Any, query: dict[str, str]) -> None:
        method, rule, _ = route
        path = concrete(rule, caller.path_values)
        if method == "GET":
            caller.call(method, path, query=query)
        else:
            caller.call(method, path, json.dumps(payload).encode())

    run()


@pytest.mark.both_databases
def test_multipart_creates_with_hostile_fields(caller: Caller) -> None:
    """The openai SDK sends creates as multipart: form fields are free text too."""
    for value in [v for v in HOSTILE_VALUES if isinstance(v, str)] + ["9" * 5000, "4\x00"]:
        for name in ("prompt", "model", "seconds", "size", "input_reference"):
            fields = {"prompt": "a lighthouse", name: value}
            body = b"".join(
                b'--hostile\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                % (field.encode(), text.encode("utf-8", "surrogatepass"))
                for field, text in fields.items()
            )
            response = caller.client.post(
                "/v1/videos",
                data=body + b"--hostile--\r\n",
                headers={
                    **caller.headers_for("/v1/videos", b""),
                    "Content-Type": "multipart/form-data; boundary=hostile",
                },
            )
            check(response, f"multipart {name}={value[:40]!r}")
            assert response.status_code not in (401, 429), response.get_data(as_text=True)


# -- revocation never fails open --------------------------------------------------------


HOSTILE_REASONS = [
    pytest.param("x\ud800", id="lone-surrogate"),
    pytest.param("nul\x00", id="nul"),
    pytest.param("\x1b[2J", id="terminal-escape"),
    # An id of its own: the key is made anew by each process that collects the tests.
    pytest.param(f"leaked {LIVE_LOOKING_KEY}", id="live-looking-key"),
    pytest.param("\ud800" * 3000, id="long-surrogates"),
]


def status_of(store: Store, key_id: str) -> str:
    with store.read() as tx:
        return tx.keys.get(key_id).status


@pytest.mark.both_databases
@pytest.mark.parametrize("reason", HOSTILE_REASONS)
def test_self_revocation_revokes_whatever_the_reason_holds(
    caller: Caller, store: Store, make_key: Callable[..., IssuedKey], reason: str
) -> None:
    issued = make_key()
    response = caller.client.post(
        "/v1/me/revoke", json={"reason": reason}, headers=bearer(issued.secret)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_of(store, issued.key.id) == "revoked"
    with store.read() as tx:
        stored = tx.keys.get(issued.key.id).revoked_reason or ""
    assert "\x00" not in stored and not re.search("[\ud800-\udfff]", stored)
    assert LIVE_LOOKING_KEY not in stored


@pytest.mark.both_databases
@pytest.mark.parametrize("reason", HOSTILE_REASONS)
def test_admin_revocations_revoke_whatever_the_reason_holds(
    caller: Caller, store: Store, make_key: Callable[..., IssuedKey], reason: str
) -> None:
    admin = bearer(caller.admin.secret)
    one, two, three = make_key(), make_key(), make_key()
    body = {"reason": reason}
    assert caller.client.post(f"/admin/v1/keys/{one.key.id}/revoke", json=body, headers=admin)
    assert caller.client.post(
        f"/admin/v1/testers/{two.key.tester_id}/revoke-keys", json=body, headers=admin
    )
    with store.read() as tx:
        cohort_of_three = tx.testers.get(three.key.tester_id).cohort
    bulk = caller.client.post(
        "/admin/v1/keys/revoke", json={**body, "cohort": cohort_of_three}, headers=admin
    )
    assert bulk.status_code == 200, bulk.get_data(as_text=True)
    for issued in (one, two, three):
        assert status_of(store, issued.key.id) == "revoked"


@pytest.mark.both_databases
@pytest.mark.parametrize("where", ["x\ud800", "https://example.com/\x00", "\udfff" * 5000])
def test_a_signed_leak_report_revokes_whatever_its_url_holds(
    caller: Caller, store: Store, make_key: Callable[..., IssuedKey], where: str
) -> None:
    issued = make_key()
    pasted = make_key()  # a second live key, pasted into the report's url and source
    record = {
        "token": issued.secret,
        "type": "drawbridge_api_key",
        "url": f"{pasted.secret} {where}",
        "source": where,
    }
    body = json.dumps([record]).encode()
    for _ in range(2):  # GitHub's retry meets the same answer
        response = caller.client.post(
            SCANNING, data=body, headers=caller.headers_for(SCANNING, body)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    assert status_of(store, issued.key.id) == "revoked"
    with store.read() as tx:
        stored = tx.keys.get(issued.key.id).revoked_reason or ""
        trail = tx.session.scalars(select(AuditEntry)).all()
    everything = stored + json.dumps([(e.reason, e.details) for e in trail])
    assert pasted.secret not in everything
    assert pasted.key.hint in stored  # masked down to its hint, so a reader can tell which


# -- sizes and numbers ------------------------------------------------------------------


# What gunicorn hands over for a chunked body: no length, and a stream it ends itself.
CHUNKED = {"wsgi.input_terminated": True, "CONTENT_LENGTH": ""}


@pytest.mark.parametrize("route", ["/admin/v1/testers", "/v1/videos", SCANNING])
def test_a_chunked_body_over_the_limit_is_413(caller: Caller, route: str) -> None:
    body = b'{"name": "' + b"a" * 1_100_000 + b'"}'
    headers = caller.headers_for(route, body)
    response = caller.client.post(
        route,
        input_stream=io.BytesIO(body),
        headers={**headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=CHUNKED,
    )
    assert_error(response, 413, "request_too_large")


def test_a_chunked_body_under_the_limit_is_read_whole(caller: Caller, store: Store) -> None:
    body = json.dumps({"name": "Chunky", "email": "chunky@example.com"}).encode()
    response = caller.client.post(
        "/admin/v1/testers",
        input_stream=io.BytesIO(body),
        headers={
            **bearer(caller.admin.secret),
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides=CHUNKED,
    )
    assert response.status_code == 201, response.get_data(as_text=True)


# Bodies gunicorn's own readers (gunicorn.http.body, over the bytes a client sent before its
# EOF) cannot hand over whole: the gateway answers 400 ``bad_request``, never a 500, and
# never parses what came as if it were the body. tests/integration/test_server_errors.py
# sends the same over a socket to a real gunicorn and checks that nothing was charged.
WHOLE = b'{"prompt":"hi"}'
BROKEN_CHUNKS = {
    "size not hex": b"zz\r\n" + WHOLE + b"\r\n0\r\n\r\n",
    "control byte in an extension": b"f;x=\x01\r\n" + WHOLE + b"\r\n0\r\n\r\n",
    "chunk longer than declared": b"5\r\n" + WHOLE + b"\r\n0\r\n\r\n",
    "chunk shorter than declared": b"64\r\n" + WHOLE,
    "size past 64 bits": b"1" + b"0" * 20 + b"\r\n" + WHOLE,
    "no last chunk": b"f\r\n" + WHOLE + b"\r\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN_CHUNKS))
@pytest.mark.parametrize("route", ["/admin/v1/testers", "/v1/videos", SCANNING])
def test_a_broken_chunked_body_is_400(caller: Caller, route: str, case: str) -> None:
    sent = BROKEN_CHUNKS[case]
    stream = Body(ChunkedReader(None, IterUnreader([sent])))
    response = caller.client.post(
        route,
        headers={
            **caller.headers_for(route, WHOLE),
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={**CHUNKED, "wsgi.input": stream},
    )
    assert_error(response, 400, "bad_request")
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("route", ["/admin/v1/testers", "/v1/videos", SCANNING])
def test_a_body_shorter_than_its_content_length_is_400(caller: Caller, route: str) -> None:
    stream = Body(LengthReader(IterUnreader([WHOLE]), 100))
    response = caller.client.post(
        route,
        headers={**caller.headers_for(route, WHOLE), "Content-Type": "application/json"},
        # What gunicorn hands over for a sized body: its length and a stream it ends itself.
        environ_overrides={
            "wsgi.input_terminated": True,
            "CONTENT_LENGTH": "100",
            "wsgi.input": stream,
        },
    )
    assert_error(response, 400, "bad_request")
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("method", "path", "payload", "query", "param"),
    [
        ("POST", "/v1/me/rotate", {"grace_seconds": 10**30}, None, "grace_seconds"),
        (
            "POST",
            "/admin/v1/keys/{key_id}/rotate",
            {"grace_seconds": 10**30},
            None,
            "grace_seconds",
        ),
        (
            "POST",
            "/admin/v1/testers/{tester_id}/keys",
            {"expires_in": "999999999w"},
            None,
            "expires_in",
        ),
        (
            "POST",
            "/admin/v1/testers/{tester_id}/keys",
            {"expires_at": "0001-01-01T00:00:00+14:00"},
            None,
            "expires_at",
        ),
        (
            "POST",
            "/admin/v1/tokens",
            {"name": "t", "role": "admin", "expires_in": "999999999w"},
            None,
            "expires_in",
        ),
        ("GET", "/admin/v1/audit", None, {"after_seq": "9223372036854775808"}, "after_seq"),
        ("GET", "/v1/videos", None, {"after": "\x00"}, "after"),
        ("POST", "/admin/v1/testers", {"name": "x\ud800", "email": "a@example.com"}, None, "name"),
        ("POST", "/admin/v1/testers", {"name": "n\x00", "email": "a@example.com"}, None, "name"),
        ("POST", "/admin/v1/testers", {"name": "ok", "email": "a\x00@example.com"}, None, "email"),
        ("POST", "/admin/v1/tokens", {"name": "\ud800", "role": "admin"}, None, "name"),
    ],
)
def test_issue_12_values_are_400s(
    caller: Caller,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    query: dict[str, str] | None,
    param: str,
) -> None:
    path = path.format(**caller.path_values)
    body = json.dumps(payload).encode() if payload is not None else None
    response = caller.call(method, path, body, query)
    assert_error(response, 400, "invalid_value", param=param)


@pytest.mark.both_databases
def test_deep_json_is_invalid_json_everywhere(caller: Caller) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for method, path in [
        ("POST", "/v1/videos"),
        ("POST", f"/v1/videos/{caller.path_values['video_id']}/remix"),
        ("POST", "/v1/me/revoke"),
        ("POST", "/admin/v1/testers"),
        ("PUT", "/admin/v1/cohorts/default/policy"),
        ("POST", SCANNING),
    ]:
        response = caller.call(method, path, deep)
        expected = "invalid_payload" if path == SCANNING else "invalid_json"
        assert_error(response, 400, expected)
    with caller.store.read() as tx:
        assert tx.session.scalars(select(ApiKey).where(ApiKey.status == "revoked")).all() == []
