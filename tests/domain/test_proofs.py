"""Proof keys and proofs in the domain: what may be bound, and what a signature must be.

Signatures are made with ``http-message-signatures``' own signer (gateway/client.py's
``ProofSigner``), the independent side, or built by hand where a test needs a hostile one.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.client import ProofSigner, public_key_of
from keys.access.proof_keys import BoundProofKey, parse_public_key
from keys.access.proofs import ProofRules, SignedRequest, verify_proof
from keys.errors import InvalidInput, ProofInvalid, ProofReplayed, ProofRequired
from keys.limits.counters import MemoryCounters

URL = "http://gateway.test/v1/videos"
AUTH = "Bearer drwb_0123456789abcdefghijklmnopqrstuvw"


def bound_of(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> BoundProofKey:
    parsed = parse_public_key(public_key_of(private))
    return BoundProofKey(
        "pkey_test" + parsed.thumbprint[:6], parsed.algorithm, parsed.pem, parsed.thumbprint
    )


def signed(
    private: Any, method: str = "GET", url: str = URL, body: bytes = b"", **headers: str
) -> SignedRequest:
    request = httpx2.Request(method, url, headers={"Authorization": AUTH, **headers}, content=body)
    ProofSigner(private)(request)
    return SignedRequest(method, url, tuple(request.headers.items()), body)


def check(bound: BoundProofKey, request: SignedRequest, claims: Any = None) -> None:
    verify_proof(bound, request, ProofRules(), claims or MemoryCounters(), time.time())


@pytest.mark.parametrize(
    "make", [ed25519.Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1())]
)
def test_a_good_proof_passes_once(make: Any) -> None:
    private = make()
    bound, claims = bound_of(private), MemoryCounters()
    body = b'{"prompt": "a kite"}'
    request = signed(private, "POST", body=body, **{"Content-Type": "application/json"})
    check(bound, request, claims)
    with pytest.raises(ProofReplayed):
        check(bound, request, claims)


def test_no_signature_is_proof_required() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ProofRequired):
        check(bound_of(private), SignedRequest("GET", URL, (("Authorization", AUTH),), b""))


def _replace(request: SignedRequest, name: str, value: str) -> SignedRequest:
    headers = tuple((n, value if n.lower() == name else v) for n, v in request.headers)
    return SignedRequest(request.method, request.url, headers, request.body)


def test_hostile_proofs_are_invalid() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    bound = bound_of(private)
    good = signed(private, "POST", body=b"{}")
    sig_input = dict((n.lower(), v) for n, v in good.headers)["signature-input"]
    hostile = {
        "other body": SignedRequest("POST", URL, good.headers, b'{"prompt": "x"}'),
        "other method": SignedRequest("PUT", URL, good.headers, good.body),
        "other path": SignedRequest("POST", URL + "/../me", good.headers, good.body),
        "other query": SignedRequest("POST", URL + "?limit=1", good.headers, good.body),
        "other key string": _replace(good, "authorization", "Bearer drwb_someone_else"),
        "alg none": _replace(good, "signature-input", sig_input.replace('"ed25519"', '"none"')),
        "alg hmac": _replace(
            good, "signature-input", sig_input.replace('"ed25519"', '"hmac-sha256"')
        ),
        "oversized": _replace(good, "signature", "pyhms=:" + "A" * 4000 + ":"),
        "garbage": _replace(good, "signature-input", "pyhms=(((("),
        "no digest coverage": _replace(
            good, "signature-input", sig_input.replace(' "content-digest"', "")
        ),
    }
    for name, request in hostile.items():
        with pytest.raises(ProofInvalid):
            check(bound, request)
            pytest.fail(name)
    # Another key's good signature is not this key's.
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ProofInvalid):
        check(bound, signed(other))


def _hand_signed(
    private: ed25519.Ed25519PrivateKey, bound: BoundProofKey, *, created: int, nonce: str
) -> SignedRequest:
    params = (
        '("@method" "@path" "@query" "authorization")'
        f';created={created};keyid="{bound.thumbprint}";nonce="{nonce}"'
    )
    base = (
        f'"@method": GET\n"@path": /v1/videos\n"@query": ?\n"authorization": {AUTH}\n'
        f'"@signature-params": {params}'
    )
    signature = base64.b64encode(private.sign(base.encode())).decode()
    headers = (
        ("Authorization", AUTH),
        ("Signature-Input", f"sig={params}"),
        ("Signature", f"sig=:{signature}:"),
    )
    return SignedRequest("GET", URL, headers, b"")


def test_time_and_nonce_rules() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    bound = bound_of(private)
    now = int(time.time())
    check(bound, _hand_signed(private, bound, created=now, nonce="n" * 20))  # the base is right
    for created, nonce in (
        (now - 3600, "a" * 20),  # stale
        (now + 3600, "b" * 20),  # from the future
        (now, "short"),  # a nonce too short to be random
        (now, "c" * 5000),  # a huge nonce
    ):
        with pytest.raises(ProofInvalid):
            check(bound, _hand_signed(private, bound, created=created, nonce=nonce))


def test_only_ed25519_and_p256_public_keys_bind() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p384 = ec.generate_private_key(ec.SECP384R1())
    private_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for text in (
        public_key_of_any(rsa_key),
        public_key_of_any(p384),
        private_pem.decode(),
        "not a key",
        "-----BEGIN PUBLIC KEY-----\n" + "A" * 2000 + "\n-----END PUBLIC KEY-----",
        None,
        42,
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_public_key(text)
        assert caught.value.param == "public_key"


def public_key_of_any(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_the_thumbprint_is_rfc_7638() -> None:
    # RFC 8037 appendix A.3: the Ed25519 key's JWK thumbprint.
    raw = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert parse_public_key(pem).thumbprint == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_the_database_refuses_a_nonce_twice_and_takes_it_back_once_expired(store: Any) -> None:
    from keys.access.proof_replays import DatabaseReplayClaims

    claims = DatabaseReplayClaims(store.database)
    now = datetime.now(UTC).timestamp()
    assert claims.claim("proof:k:n1", 60, now)
    assert not claims.claim("proof:k:n1", 60, now + 1)
    assert claims.claim("proof:k:n2", 60, now)
    later = (datetime.now(UTC) + timedelta(seconds=61)).timestamp()
    assert claims.claim("proof:k:n1", 60, later)


def test_a_nonce_claim_leaves_the_hot_reads_commit_stamp_alone(store: Any) -> None:
    """A claim on every signed request must not send every next request's key check back to
    the database: proof_nonces is no table the hot read reads."""
    from keys.access.proof_replays import DatabaseReplayClaims

    stamp = store.database.commit_stamp
    assert stamp is not None  # a SQLite file
    claims = DatabaseReplayClaims(store.database)
    now = datetime.now(UTC).timestamp()
    claims.claim("proof:k:warm", 60, now)  # the first claim of a process also sweeps
    before = stamp.current()
    assert claims.claim("proof:k:n1", 60, now)
    assert not claims.claim("proof:k:n1", 60, now)
    assert stamp.current() == before
    with store.transaction() as tx:  # any other write still renews it
        tx.lockdown.state()
    assert stamp.current() != before
