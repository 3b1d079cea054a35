"""Proof-of-possession keys on the live gateway: the official openai SDK with the shipped
signing client works; the key string alone, a replayed proof and hostile proofs do not.

The shared ``live_gateway`` (two workers, SQLite and PostgreSQL, no Redis) claims nonces in
the database; ``fleet`` runs two instances on one PostgreSQL database with Redis, and a proof
used on one is refused on the other.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from http_message_signatures.httpx2 import adapt_message

from gateway.client import (
    ProofSigner,
    http_client,
    load_proof_key,
    new_proof_key,
    public_key_of,
)
from keys.access.proof_keys import parse_public_key
from keys.access.proofs import REQUIRED_COMPONENTS
from tests.integration.conftest import SIM_CONTENT_BYTES
from tests.integration.fleet import gateway_fleet
from tests.integration.live import (
    HTTP_TIMEOUT,
    LiveGateway,
    LiveSimulator,
    TesterKey,
    error_of,
    http_session,
    sdk_error_code,
    wait_for,
)

pytestmark = pytest.mark.integration

# Sends one captured request again from a separate process, as an eavesdropper would.
REPLAY = """
import json, sys, requests
captured = json.loads(sys.stdin.read())
response = requests.request(
    captured["method"], captured["url"], headers=captured["headers"],
    data=captured["body"].encode("latin-1"), timeout=30,
)
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def bind(gateway: LiveGateway, key: TesterKey, key_file: Path) -> dict[str, Any]:
    """Bind a new proof key to ``key`` the way a tester does: POST /v1/me/proof-keys."""
    public = new_proof_key(key_file)
    response = requests.post(
        f"{gateway.api_url}/me/proof-keys",
        headers={"Authorization": f"Bearer {key.secret}"},
        json={"public_key": public},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["key_id"] == key.key_id and body["algorithm"] == "ed25519"
    return body


@pytest.fixture
def bound_key(
    live_gateway: LiveGateway, tester_key: TesterKey, tmp_path: Path
) -> tuple[TesterKey, Path]:
    key_file = tmp_path / "proof-key.pem"
    bind(live_gateway, tester_key, key_file)
    return tester_key, key_file


def signed_client(gateway: LiveGateway, secret: str, key_file: Path) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=gateway.api_url,
        api_key=secret,
        max_retries=0,
        timeout=HTTP_TIMEOUT,
        http_client=http_client(key_file, trust_env=False),
    )
    gateway.clients.append(client)
    return client


def capture(
    url: str, secret: str, key_file: Path, method: str = "GET", body: bytes = b""
) -> dict[str, Any]:
    """A request signed by the shipped signer, not sent: what someone on the path sees."""
    headers = {"Authorization": f"Bearer {secret}"}
    if body:
        headers["Content-Type"] = "application/json"
    request = httpx2.Request(method, url, headers=headers, content=body)
    ProofSigner(load_proof_key(key_file))(request)
    return {
        "method": method,
        "url": url,
        "headers": dict(request.headers),
        "body": body.decode("latin-1"),
    }


def send(captured: dict[str, Any]) -> requests.Response:
    return requests.request(
        captured["method"],
        captured["url"],
        headers=captured["headers"],
        data=captured["body"].encode("latin-1"),
        timeout=HTTP_TIMEOUT,
    )


def replay_from_another_process(captured: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", REPLAY],
        input=json.dumps(captured),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_refused(response: requests.Response, code: str) -> None:
    assert response.status_code == 401, response.text
    assert error_of(response)["code"] == code, response.text
    assert response.headers["x-should-retry"] == "false"


def test_the_sdk_works_with_a_bound_key_and_the_signing_client(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    client = signed_client(live_gateway, key.secret, key_file)

    video = client.videos.create_and_poll(prompt="a kite that proves who flies it", seconds="4")
    assert video.status == "completed", video
    # A signed C2PA manifest rides along (docs/provenance.md): the file is larger.
    assert len(client.videos.download_content(video.id).read()) > SIM_CONTENT_BYTES
    assert video.id in [v.id for v in client.videos.list(limit=100).data]
    remix = client.videos.remix(video.id, prompt="the same kite, signed at night")
    assert client.videos.poll(remix.id).status == "completed"
    assert client.videos.delete(video.id).deleted is True
    # A multipart upload is covered by its Content-Digest too.
    upload = client.videos.create(
        prompt="animate this still",
        input_reference=("reference.png", b"\x89PNG\r\n\x1a\n" + bytes(4096), "image/png"),
    )
    assert client.videos.poll(upload.id).status == "completed"


def test_the_key_string_alone_is_refused(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, _ = bound_key
    bare = live_gateway.openai_client(key.secret)
    calls: list[Callable[[], object]] = [
        lambda: bare.videos.create(prompt="a stranger with the string only"),
        lambda: bare.videos.list(),
        lambda: bare.videos.retrieve("video_0123456789abcdef"),
    ]
    for call in calls:
        with pytest.raises(openai.AuthenticationError) as caught:
            call()
        assert sdk_error_code(caught.value) == "proof_required"
    # Nothing was created or charged: the tester's own list is empty.
    assert_refused(live_gateway.tester_get("/videos", key.secret), "proof_required")


def test_a_captured_proof_is_refused_from_another_process_on_any_worker(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    captured = capture(f"{live_gateway.api_url}/videos", key.secret, key_file)
    assert send(captured).status_code == 200
    # Fresh connections each time: whichever of the two workers takes them, all refuse.
    for _ in range(6):
        replayed = replay_from_another_process(captured)
        assert replayed["status"] == 401, replayed
        assert replayed["body"]["error"]["code"] == "proof_replayed", replayed


def test_a_proof_for_one_request_does_not_carry_another(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    body = json.dumps({"prompt": "a harmless kite"}).encode()
    captured = capture(f"{live_gateway.api_url}/videos", key.secret, key_file, "POST", body)
    other_body = {**captured, "body": json.dumps({"prompt": "something else entirely"})}
    assert_refused(send(other_body), "proof_invalid")
    other_method = {**captured, "method": "PUT"}
    assert send(other_method).status_code in (401, 405)
    listing = capture(f"{live_gateway.api_url}/videos", key.secret, key_file)
    for url in (
        f"{live_gateway.api_url}/videos?limit=1",
        f"{live_gateway.api_url}/me",
        f"{live_gateway.api_url}/videos/../me",
        f"{live_gateway.api_url}/videos%2f..%2fme",
    ):
        # Refused by the proof (401), or by the path rules before the key is looked at (400).
        response = send({**listing, "url": url})
        assert response.status_code in (400, 401), (url, response.text)
    # Refused copies claimed nothing: the tester's own request still goes through, once.
    assert send(listing).status_code == 200
    assert_refused(send(listing), "proof_replayed")


def test_unbinding_needs_a_proof_and_gives_the_string_back(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    with http_client(key_file, trust_env=False) as signed:
        listed = signed.get(
            f"{live_gateway.api_url}/me/proof-keys",
            headers={"Authorization": f"Bearer {key.secret}"},
        )
        assert listed.status_code == 200, listed.text
        (proof_key,) = listed.json()["data"]
        me = signed.get(
            f"{live_gateway.api_url}/me", headers={"Authorization": f"Bearer {key.secret}"}
        ).json()
        assert me["proof_key"]["id"] == proof_key["id"]
        # Another of the tester's keys, unbound, may not remove this key's protection.
        removed = signed.delete(
            f"{live_gateway.api_url}/me/proof-keys/{proof_key['id']}",
            headers={"Authorization": f"Bearer {key.secret}"},
        )
        assert removed.status_code == 200, removed.text
    assert live_gateway.tester_get("/videos", key.secret).status_code == 200
    audit = live_gateway.admin_ok("GET", "/audit", params={"limit": 500})
    actions = [(e["action"], e["target"]) for e in audit["data"]]
    assert ("proof_key.bind", proof_key["id"]) in actions
    assert ("proof_key.unbind", proof_key["id"]) in actions


def test_an_unbound_key_cannot_unbind_another_keys_proof_key(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, _ = bound_key
    second = live_gateway.issue_key(key.tester_id)
    listed = requests.get(
        f"{live_gateway.api_url}/me/proof-keys",
        headers={"Authorization": f"Bearer {second.secret}"},
        timeout=HTTP_TIMEOUT,
    )
    (proof_key,) = listed.json()["data"]
    refused = requests.delete(
        f"{live_gateway.api_url}/me/proof-keys/{proof_key['id']}",
        headers={"Authorization": f"Bearer {second.secret}"},
        timeout=HTTP_TIMEOUT,
    )
    assert refused.status_code == 403, refused.text
    assert error_of(refused)["code"] == "proof_required_to_unbind"
    assert_refused(live_gateway.tester_get("/videos", key.secret), "proof_required")


def test_admins_bind_and_unbind_with_the_cli(
    live_gateway: LiveGateway, tester_key: TesterKey, tmp_path: Path
) -> None:
    public_file = tmp_path / "public.pem"
    made = live_gateway.cli("keys", "new-proof-key", str(tmp_path / "key.pem"), "--json")
    public_file.write_text(made["public_key"])
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    bound = live_gateway.cli(
        "keys", "bind", tester_key.key_id, "--public-key", str(public_file), "--json"
    )
    assert bound["thumbprint"] == made["thumbprint"]
    assert_refused(live_gateway.tester_get("/videos", tester_key.secret), "proof_required")
    client = signed_client(live_gateway, tester_key.secret, tmp_path / "key.pem")
    assert client.videos.list().data == []
    live_gateway.cli("keys", "unbind", tester_key.key_id, "--json")
    assert live_gateway.tester_get("/videos", tester_key.secret).status_code == 200


def test_rotation_keeps_the_binding(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    rotated = live_gateway.admin_ok("POST", f"/keys/{key.key_id}/rotate", json={"grace_seconds": 0})
    live_gateway.issued_secrets.append(rotated["secret"])
    assert_refused(live_gateway.tester_get("/videos", rotated["secret"]), "proof_required")
    client = signed_client(live_gateway, rotated["secret"], key_file)
    assert client.videos.list().data == []


PROOF_CODES = ("proof_required", "proof_invalid", "proof_replayed")


def rejections(gateway: LiveGateway) -> dict[str, int]:
    """``drawbridge_rejections_total`` by code, as any worker answers /metrics for all."""
    with http_session() as session:
        response = session.get(f"{gateway.base}/metrics", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    found = re.findall(
        r'^drawbridge_rejections_total\{code="([a-z_]+)"\} (\d+)$', response.text, re.M
    )
    return {code: int(value) for code, value in found}


def test_proof_refusals_are_counted_in_metrics(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    before = rejections(live_gateway)
    # Declared from the start, so an alert on their rate has a series before the first.
    assert all(code in before for code in PROOF_CODES), before
    assert_refused(live_gateway.tester_get("/videos", key.secret), "proof_required")
    captured = capture(f"{live_gateway.api_url}/videos", key.secret, key_file)
    assert_refused(send({**captured, "url": f"{live_gateway.api_url}/me"}), "proof_invalid")
    assert send(captured).status_code == 200
    assert_refused(send(captured), "proof_replayed")
    # The other worker's counts reach the spool within a second (PUBLISH_SECONDS); a count
    # of an earlier test not yet published when ``before`` was read only adds to these.
    wait_for(
        lambda: all(rejections(live_gateway).get(c, 0) > before[c] for c in PROOF_CODES),
        timeout=10,
        what="proof refusals counted in /metrics",
    )


def test_refused_proofs_are_in_the_keys_blast_radius_report(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    key, key_file = bound_key
    for _ in range(2):
        assert_refused(live_gateway.tester_get("/videos", key.secret), "proof_required")
    captured = capture(f"{live_gateway.api_url}/videos", key.secret, key_file)
    assert_refused(send({**captured, "url": f"{live_gateway.api_url}/me"}), "proof_invalid")
    assert send(captured).status_code == 200
    assert_refused(send(captured), "proof_replayed")
    expected = {"proof_required": 2, "proof_invalid": 1, "proof_replayed": 1}

    def report() -> dict[str, Any]:
        return live_gateway.admin_ok("GET", f"/keys/{key.key_id}/report")

    # Refusals are written in batches: wait for the batch, not for a time.
    wait_for(lambda: report()["refused_proofs"] == expected, timeout=15, what="proof refusals")
    view = report()
    assert view["proof_bound"] is True
    assert [(ip["client_ip"], ip["count"]) for ip in view["refused_proof_ips"]] == [
        ("127.0.0.1", 4)
    ]
    text = live_gateway.cli("keys", "report", key.key_id)
    assert (
        "proof key bound: yes; refused proofs: proof_required 2, proof_invalid 1, proof_replayed 1"
    ) in text
    assert "refused proofs (the string without the proof key), by client IP:" in text
    assert "127.0.0.1" in text


# -- hostile proofs -----------------------------------------------------------------------


class _AnyKey(HTTPSignatureKeyResolver):
    def __init__(self, key: object) -> None:
        self._key = key

    def resolve_private_key(self, key_id: str) -> Any:
        return self._key

    def resolve_public_key(self, key_id: str) -> None:
        raise NotImplementedError


class _Ed25519ClaimingEcdsa(algorithms.ED25519):
    algorithm_id = "ecdsa-p256-sha256"


class _Unsigned(algorithms.HTTPSignatureAlgorithm):
    """``alg: none``: a signature of zero bytes (the library makes no empty one)."""

    algorithm_id = "none"

    def __init__(self, public_key: object = None, private_key: object = None) -> None:
        pass

    def sign(self, message: bytes) -> bytes:
        return bytes(64)

    def verify(self, signature: bytes, message: bytes) -> None:
        return None


class _EmptyAlg(_Unsigned):
    algorithm_id = ""


@dataclass(frozen=True)
class Hostile:
    """A request of a bound key with a proof made to fool the verifier."""

    algorithm: type[algorithms.HTTPSignatureAlgorithm] | None = None
    """None: the bound key's own (Ed25519)."""
    secret_key: str = ""
    """``public_pem``, ``public_raw``, ``p256`` or ``other_bound``: what signs instead of
    the bound private key."""
    created_offset: int = 0
    nonce_chars: int = 32
    signature_chars: int = 0
    """Replace the Signature header's value with one this long."""
    two_signatures: bool = False
    keyid: str = ""
    """``other_bound``: another key's thumbprint."""
    sent_path: str = ""
    """Send to this path instead of the signed /v1/videos."""
    expected: tuple[int, str] = (401, "proof_invalid")


HOSTILE = {
    "ed25519 signature claiming ecdsa-p256-sha256": Hostile(_Ed25519ClaimingEcdsa),
    "ecdsa-p256 by another key under the bound keyid": Hostile(
        algorithms.ECDSA_P256_SHA256, secret_key="p256"
    ),
    "hmac-sha256 keyed with the public key PEM": Hostile(
        algorithms.HMAC_SHA256, secret_key="public_pem"
    ),
    "hmac-sha256 keyed with the raw public key": Hostile(
        algorithms.HMAC_SHA256, secret_key="public_raw"
    ),
    "alg none, zero signature": Hostile(_Unsigned),
    "alg empty, zero signature": Hostile(_EmptyAlg),
    "signature over our 2 KiB limit": Hostile(signature_chars=4_000),
    # gunicorn refuses a header field over limit_request_field_size (8190) itself, in the
    # error shape (gateway/process/worker.py), before the application sees the request.
    "signature over gunicorn's field limit": Hostile(
        signature_chars=9_000, expected=(431, "headers_too_large")
    ),
    "signature-input with a 3000-char nonce": Hostile(nonce_chars=3_000),
    "a 10 000-char nonce": Hostile(nonce_chars=10_000, expected=(431, "headers_too_large")),
    "a 129-char nonce": Hostile(nonce_chars=129),
    "two signatures": Hostile(two_signatures=True),
    "created beyond the skew": Hostile(created_offset=60),
    "created before the window": Hostile(created_offset=-120),
    "keyid and signature of another bound key": Hostile(
        secret_key="other_bound", keyid="other_bound"
    ),
    # Refused by the path rules before the key is looked at.
    "sent to /v1/./videos": Hostile(sent_path="/v1/./videos", expected=(400, "invalid_path")),
    "sent to /v1//videos": Hostile(sent_path="/v1//videos", expected=(400, "invalid_path")),
    "sent to /v1/videos/%2e%2e/videos": Hostile(
        sent_path="/v1/videos/%2e%2e/videos", expected=(400, "invalid_path")
    ),
    "sent to /v1/%76ideos": Hostile(sent_path="/v1/%76ideos"),
    "sent to /v1/videos/": Hostile(sent_path="/v1/videos/"),
    "sent to /v1/videos?limit=1": Hostile(sent_path="/v1/videos?limit=1"),
}


def hostile_request(
    gateway: LiveGateway,
    key: TesterKey,
    key_file: Path,
    case: Hostile,
    other: tuple[TesterKey, Path] | None = None,
) -> dict[str, Any]:
    """A ``POST /v1/videos`` with the bound key's string and the case's proof."""
    bound = load_proof_key(key_file)
    public_pem = public_key_of(bound).encode()
    keyid = ProofSigner(bound).key_id
    signing_key: object = bound
    if case.secret_key == "public_pem":
        signing_key = public_pem
    elif case.secret_key == "public_raw":
        signing_key = bound.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    elif case.secret_key == "p256":
        signing_key = ec.generate_private_key(ec.SECP256R1())
    elif case.secret_key == "other_bound":
        assert other is not None
        signing_key = load_proof_key(other[1])
    if case.keyid == "other_bound":
        assert other is not None
        keyid = parse_public_key(public_key_of(load_proof_key(other[1]))).thumbprint
    algorithm = case.algorithm or algorithms.ED25519
    body = json.dumps({"prompt": "a hostile kite", "seconds": "4"}).encode()
    url = f"{gateway.api_url}/videos"
    request = httpx2.Request(
        "POST",
        url,
        headers={"Authorization": f"Bearer {key.secret}", "Content-Type": "application/json"},
        content=body,
    )
    signer = HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=_AnyKey(signing_key))
    nonce = (secrets.token_urlsafe(case.nonce_chars) * 2)[: case.nonce_chars]
    created = datetime.now(UTC) + timedelta(seconds=case.created_offset)
    signer.sign(
        adapt_message(request),
        key_id=keyid,
        created=created,
        nonce=nonce,
        covered_component_ids=REQUIRED_COMPONENTS,
        body=body,
    )
    if case.two_signatures:
        honest = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519, key_resolver=_AnyKey(bound)
        )
        honest.sign(
            adapt_message(request),
            key_id=keyid,
            created=created,
            nonce=secrets.token_urlsafe(24),
            label="second",
            covered_component_ids=(*REQUIRED_COMPONENTS, "content-digest"),
            append_if_signature_exists=True,
            use_existing_digest=True,
        )
    headers = dict(request.headers)
    if case.signature_chars:
        filler = base64.b64encode(secrets.token_bytes(case.signature_chars))[: case.signature_chars]
        label = headers["signature"].split("=", 1)[0]
        headers["signature"] = (
            f"{label}=:{filler.decode()[: case.signature_chars - len(label) - 3]}:"
        )
    return {
        "method": "POST",
        "path": case.sent_path or "/v1/videos",
        "headers": headers,
        "body": body,
    }


def send_raw(gateway: LiveGateway, prepared: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    """Send exactly these bytes: ``requests`` would normalise the path (dot segments,
    percent-encoded letters) before it reaches the wire."""
    connection = http.client.HTTPConnection(
        gateway.base.removeprefix("http://"), timeout=HTTP_TIMEOUT
    )
    try:
        connection.putrequest(
            prepared["method"], prepared["path"], skip_host=True, skip_accept_encoding=True
        )
        for name, value in prepared["headers"].items():
            if name.lower() != "host":
                connection.putheader(name, value)
        connection.putheader("Host", gateway.base.removeprefix("http://"))
        connection.endheaders(prepared["body"])
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.headers
    finally:
        connection.close()


def test_the_hostile_proof_builder_signs_an_honest_request_that_is_admitted(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path]
) -> None:
    """Without a twist the builder's request goes through: the refusals below are the
    twists', not the builder's."""
    key, key_file = bound_key
    status, body, _ = send_raw(
        live_gateway, hostile_request(live_gateway, key, key_file, Hostile())
    )
    assert status == 200 and body["object"] == "video", body


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_proofs_are_refused_in_the_error_shape_and_charge_nothing(
    live_gateway: LiveGateway, bound_key: tuple[TesterKey, Path], tmp_path: Path, name: str
) -> None:
    key, key_file = bound_key
    case = HOSTILE[name]
    other = None
    if "other_bound" in (case.secret_key, case.keyid):
        other_key = live_gateway.new_tester_key()
        bind(live_gateway, other_key, tmp_path / "other-proof-key.pem")
        other = (other_key, tmp_path / "other-proof-key.pem")
    status, body, headers = send_raw(
        live_gateway, hostile_request(live_gateway, key, key_file, case, other)
    )
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert (status, body["error"]["code"]) == case.expected, body
    if status == 401:
        assert headers["x-should-retry"] == "false"
    # Never admitted: the tester's own signed client sees no video, the key spent nothing.
    assert signed_client(live_gateway, key.secret, key_file).videos.list().data == []
    report = live_gateway.admin_ok("GET", f"/keys/{key.key_id}/report")
    assert (report["generations"], report["videos_created"]) == (0, 0)


# -- two instances, one PostgreSQL database, one Redis -------------------------------------


@pytest.fixture(scope="module")
def fleet(
    simulator: LiveSimulator,
    tmp_path_factory: pytest.TempPathFactory,
    make_postgres_database: Callable[[], str],
    fleet_redis_server: str,
) -> Iterator[list[LiveGateway]]:
    with gateway_fleet(
        simulator,
        tmp_path_factory.mktemp("proof-fleet"),
        make_postgres_database(),
        instances=2,
        workers=2,
        DRAWBRIDGE_REDIS_URL=fleet_redis_server,
        DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE="1000000",
    ) as gateways:
        yield gateways


def test_a_proof_used_on_one_instance_is_refused_on_the_other(
    fleet: list[LiveGateway], tmp_path: Path
) -> None:
    first, second = fleet
    key = first.new_tester_key()
    key_file = tmp_path / "proof-key.pem"
    bind(first, key, key_file)
    client = signed_client(second, key.secret, key_file)
    assert client.videos.list().data == []

    captured = capture(f"{first.api_url}/videos", key.secret, key_file)
    assert send(captured).status_code == 200
    on_second = {**captured, "url": f"{second.api_url}/videos"}
    # The signature covers the path and query, not the host: the same proof on the other
    # instance is the same proof, and its nonce is taken.
    for _ in range(4):
        replayed = replay_from_another_process(on_second)
        assert replayed["status"] == 401, replayed
        assert replayed["body"]["error"]["code"] == "proof_replayed"
