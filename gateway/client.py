"""For testers: sign every request with a proof key, so the official ``openai`` SDK works
unchanged with an API key bound to one.

    import openai
    from gateway.client import http_client

    client = openai.OpenAI(
        base_url="https://drawbridge.example.com/v1",
        api_key="drwb_...",
        http_client=http_client("~/.drawbridge/proof-key.pem"),
    )

Each request, SDK retries included, gets a fresh RFC 9421 signature (new ``created`` and
``nonce``) over its method, path, query, ``Authorization`` header and, with a body, a
``Content-Digest``, made by ``http-message-signatures``. The private key never leaves this
machine; make one with ``drawbridge keys new-proof-key``. Needs ``httpx2`` (installed with
the ``openai`` SDK). Nothing here runs in the gateway.
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from keys.access.proof_keys import ECDSA_P256, ED25519, thumbprint_of
from keys.access.proofs import REQUIRED_COMPONENTS

if TYPE_CHECKING:
    import httpx2

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
_COVERED = (*REQUIRED_COMPONENTS,)


def new_proof_key(path: str | Path, algorithm: str = ED25519) -> str:
    """Write a new private key (PKCS#8 PEM, mode 0600) to ``path``, which must not exist;
    return its public key (PEM), the part to bind."""
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == ED25519
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: never overwrite a key someone may have bound; 0600 from the first byte.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_key_of(key)


def public_key_of(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def load_proof_key(path: str | Path) -> PrivateKey:
    """Read a private key file. Raises ValueError for a file others can read, or one that
    holds no Ed25519 or P-256 private key."""
    target = Path(path).expanduser()
    mode = target.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{target} is readable by others; chmod 600 it")
    key = serialization.load_pem_private_key(target.read_bytes(), password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError(f"{target} holds no Ed25519 or P-256 private key")


class ProofSigner:
    """An httpx2 request hook: signs each request as it is sent."""

    def __init__(self, key: PrivateKey) -> None:
        self.key_id = thumbprint_of(key.public_key())
        algorithm = (
            algorithms.ED25519
            if isinstance(key, ed25519.Ed25519PrivateKey)
            else algorithms.ECDSA_P256_SHA256
        )
        self.algorithm_id = ED25519 if algorithm is algorithms.ED25519 else ECDSA_P256
        resolver = MappingKeyResolver(
            public_keys={self.key_id: key.public_key()}, private_keys={self.key_id: key}
        )
        self._signer = HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=resolver)

    def __call__(self, request: httpx2.Request) -> None:
        from http_message_signatures.httpx2 import adapt_message

        body = request.read()
        # A retry is a new request, signed afresh; drop what an earlier send computed.
        for name in ("content-digest", "signature", "signature-input"):
            request.headers.pop(name, None)
        self._signer.sign(
            adapt_message(request),
            key_id=self.key_id,
            created=datetime.now(UTC),
            nonce=secrets.token_urlsafe(24),
            covered_component_ids=_COVERED,
            body=body if body else None,
        )

    async def sign_async(self, request: httpx2.Request) -> None:
        await request.aread()
        self(request)


def http_client(key_file: str | Path, **options: Any) -> httpx2.Client:
    """An ``httpx2.Client`` that signs every request with the key in ``key_file``; pass it
    as ``openai.OpenAI(http_client=...)``. ``options`` go to ``httpx2.Client``."""
    import httpx2

    signer = ProofSigner(load_proof_key(key_file))
    options.setdefault("timeout", httpx2.Timeout(600.0, connect=5.0))
    options.setdefault("follow_redirects", True)
    hooks = options.pop("event_hooks", {})
    hooks = {**hooks, "request": [*hooks.get("request", []), signer]}
    return httpx2.Client(event_hooks=hooks, **options)


def async_http_client(key_file: str | Path, **options: Any) -> httpx2.AsyncClient:
    """``http_client`` for ``openai.AsyncOpenAI``."""
    import httpx2

    signer = ProofSigner(load_proof_key(key_file))
    options.setdefault("timeout", httpx2.Timeout(600.0, connect=5.0))
    options.setdefault("follow_redirects", True)
    hooks = options.pop("event_hooks", {})
    hooks = {**hooks, "request": [*hooks.get("request", []), signer.sign_async]}
    return httpx2.AsyncClient(event_hooks=hooks, **options)
