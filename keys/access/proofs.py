"""Proof of possession: checking the RFC 9421 signature a request with a bound key carries.

Why RFC 9421 HTTP Message Signatures and not RFC 9449 DPoP: a DPoP proof covers the method
and URL but not the body, so a captured proof for one ``POST /v1/videos`` could carry
another prompt. RFC 9421 with a ``Content-Digest`` (RFC 9530) covers the body too. The
signature base is built and checked by ``http-message-signatures``; this module only says
which signatures a tester request must carry (docs/proof-of-possession.md):

- covered components: ``@method``, ``@path``, ``@query``, ``authorization`` (binding the
  proof to the key string, like DPoP's ``ath``) and, for a request with a body,
  ``content-digest``, whose value the verifier checks against the body;
- parameters: ``keyid`` (the bound key's RFC 7638 thumbprint), ``created`` within the
  window of now, a ``nonce`` used once (``alg`` optional, but must match the bound key);
- exactly one signature.

A nonce is claimed for twice the window plus the skew in the shared counters, so the same
signature is refused on every worker and instance (``ReplayClaims``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from http_message_signatures import (
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from keys.access.proof_keys import (
    ECDSA_P256,
    ED25519,
    BoundProofKey,
    load_public_key,
)
from keys.errors import ProofInvalid, ProofReplayed, ProofRequired
from keys.text import mask_secrets

REQUIRED_COMPONENTS = ("@method", "@path", "@query", "authorization")
# Longer signature headers than this are not a signature a client of ours made.
MAX_SIGNATURE_HEADER_CHARS = 2_048
NONCE = re.compile(r"[A-Za-z0-9_\-.~+/=]{16,128}")
_ALGORITHMS = {ED25519: algorithms.ED25519, ECDSA_P256: algorithms.ECDSA_P256_SHA256}


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier reads of a request: as received, before any decoding."""

    method: str
    url: str
    """Absolute, with the path and query exactly as the client sent them."""
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ReplayClaims(Protocol):
    def claim(self, name: str, seconds: int, now: float) -> bool:
        """True for the first claim of ``name`` within ``seconds`` across all processes."""


class _Headers:
    """The read-only header view ``http-message-signatures`` reads a message through: its
    field lines in order (``items``)."""

    def __init__(self, fields: tuple[tuple[str, str], ...]) -> None:
        self._fields = fields

    def items(self) -> Iterable[tuple[str, str]]:
        return self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._fields))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(f.lower() == name.lower() for f, _ in self._fields)


@dataclass
class _Message:
    method: str
    url: str
    headers: _Headers


_VERIFIERS: dict[tuple[str, int], HTTPMessageVerifier] = {}


def _verifier(bound: BoundProofKey, rules: ProofRules) -> HTTPMessageVerifier:
    """Made once per process per binding (and skew): a PEM parse costs more than the check
    itself. A verifier keeps nothing of the messages it verifies."""
    name = (bound.id, rules.skew_seconds)
    verifier = _VERIFIERS.get(name)
    if verifier is None:
        if len(_VERIFIERS) >= 10_000:
            _VERIFIERS.clear()
        key = load_public_key(bound.public_key)
        verifier = HTTPMessageVerifier(
            signature_algorithm=_ALGORITHMS[bound.algorithm],
            # The bound key under its thumbprint, and nothing to sign with.
            key_resolver=MappingKeyResolver(public_keys={bound.thumbprint: key}, private_keys={}),
        )
        verifier.max_clock_skew = timedelta(seconds=rules.skew_seconds)
        verifier = _VERIFIERS.setdefault(name, verifier)
    return verifier


@dataclass(frozen=True)
class ProofRules:
    window_seconds: int = 60
    """How old a signature's ``created`` may be."""
    skew_seconds: int = 5
    """How far in the future ``created`` may be (clock drift)."""


def verify_proof(
    bound: BoundProofKey,
    request: SignedRequest,
    rules: ProofRules,
    replays: ReplayClaims,
    now: float,
) -> None:
    """Check the request's signature against the bound key; claim its nonce.

    Raises ProofRequired (no signature at all), ProofInvalid, ProofReplayed.
    """
    names = {name.lower() for name, _ in request.headers}
    if "signature" not in names and "signature-input" not in names:
        raise ProofRequired(
            "This API key is bound to a proof key: sign every request with it (RFC 9421). "
            "The key string alone is refused. See docs/proof-of-possession.md."
        )
    for name, value in request.headers:
        if name.lower() in ("signature", "signature-input") and (
            len(value) > MAX_SIGNATURE_HEADER_CHARS
        ):
            raise ProofInvalid(f"The {name} header is too long to be a proof.")
    verifier = _verifier(bound, rules)
    message = _Message(request.method, request.url, _Headers(request.headers))
    try:
        (result,) = verifier.verify(
            message,
            max_age=timedelta(seconds=rules.window_seconds),
            require_components=REQUIRED_COMPONENTS,
            body=request.body,
        )
    except (InvalidSignature, HTTPMessageSignaturesException, ValueError) as exc:
        raise ProofInvalid(f"The request's proof is not valid: {_reason(exc)}") from None
    nonce = result.parameters.get("nonce")
    if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
        raise ProofInvalid(
            "The request's proof needs a nonce: 16 to 128 characters, new for every request."
        )
    ttl = 2 * rules.window_seconds + rules.skew_seconds
    if not replays.claim(f"proof:{bound.id}:{nonce}", ttl, now):
        raise ProofReplayed(
            "This proof was used before. Sign every request afresh; a proof sent twice is "
            "treated as captured."
        )


def _reason(exc: Exception) -> str:
    """The library's reason, cut short and with anything shaped like a secret masked: it
    can quote what the client sent."""
    text = mask_secrets(" ".join(str(exc).split()))[:160]
    return text or type(exc).__name__
