"""Proof keys: a tester's public key bound to one of their API keys.

The tester makes the key pair on their own machine (``drawbridge keys new-proof-key``) and
binds only the public half. From then on the key string alone is refused: every request
must be signed with the private key (RFC 9421, keys/access/proofs.py). A key has at most one
binding in force; unbinding keeps the row, marked removed, for the record. Rotating a key
carries its binding over to the successor (``KeyService.rotate``), so a tester's signing
set-up survives a rotation. Every change is in the audit trail.

Accepted public keys: Ed25519 and ECDSA P-256, as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo).
A binding is named by the key's RFC 7638 JWK thumbprint, which the signer sends as ``keyid``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keys.errors import Conflict, InvalidInput, NotFound
from keys.ids import new_id
from keys.models import ApiKey, ProofKey
from keys.records.audit import AuditTrail

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ALGORITHMS = (ED25519, ECDSA_P256)
# A PEM public key of either kind is under 200 characters; anything much longer is not one.
MAX_PUBLIC_KEY_CHARS = 1_024

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class ParsedPublicKey:
    algorithm: str
    pem: str
    """Normalised PEM (SubjectPublicKeyInfo), as stored."""
    thumbprint: str
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the ``keyid`` of the tester's signatures."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_of(key: PublicKey) -> dict[str, str]:
    """The public key as a JWK with only the members RFC 7638 hashes."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint_of(key: PublicKey) -> str:
    """RFC 7638: SHA-256 of the JWK's required members, sorted, without whitespace."""
    canonical = json.dumps(jwk_of(key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def parse_public_key(text: object) -> ParsedPublicKey:
    """A PEM public key a tester wants to bind. Raises InvalidInput (param ``public_key``)."""

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(message, param="public_key")

    if not isinstance(text, str) or not text.strip():
        raise refuse("public_key must be a PEM public key ('-----BEGIN PUBLIC KEY-----').")
    if len(text) > MAX_PUBLIC_KEY_CHARS:
        raise refuse(f"public_key is longer than {MAX_PUBLIC_KEY_CHARS} characters.")
    if "PRIVATE KEY" in text:
        raise refuse(
            "That is a private key. Keep it on your machine; bind only its public key "
            "(the file `drawbridge keys new-proof-key` printed)."
        )
    try:
        key = serialization.load_pem_public_key(text.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise refuse("public_key is not a PEM public key.") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        algorithm = ED25519
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = ECDSA_P256
    else:
        raise refuse("Only Ed25519 and ECDSA P-256 public keys can be bound.")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return ParsedPublicKey(algorithm, pem, thumbprint_of(key))


def load_public_key(pem: str) -> PublicKey:
    """A stored binding's key object (stored PEM is always one of the accepted kinds)."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    return key


@dataclass(frozen=True, slots=True)
class BoundProofKey:
    """The proof key in force on an API key, as the hot read returns it."""

    id: str
    algorithm: str
    public_key: str
    thumbprint: str


class ProofKeyService:
    def __init__(self, session: Session, audit: AuditTrail, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._audit = audit
        self._clock = clock

    def bind(
        self,
        key_id: str,
        public_key: object,
        actor: str,
        *,
        tester_id: str | None = None,
        replace: bool = False,
    ) -> ProofKey:
        """Bind a public key to an API key; ``tester_id`` limits it to that tester's keys.

        With ``replace``, a binding in force is removed in the same transaction; without,
        it is a Conflict (``proof_key_bound``). Raises NotFound, InvalidInput, Conflict.
        """
        parsed = parse_public_key(public_key)
        key = self._session.get(ApiKey, key_id, with_for_update=True)
        if key is None or (tester_id is not None and key.tester_id != tester_id):
            raise NotFound(f"No API key found with id '{key_id[:64]}'.")
        if key.status in ("revoked", "rotated"):
            raise Conflict(
                f"{key.id} is {key.status}; bind the proof key to a key in use.", code="key_state"
            )
        current = self.in_force(key.id)
        if current is not None:
            if not replace:
                raise Conflict(
                    f"{key.id} already has the proof key {current.id}; unbind it first, or "
                    "replace it.",
                    code="proof_key_bound",
                )
            self._remove(current, actor, "replaced")
        bound = self._add(key, parsed, actor)
        return bound

    def unbind(self, proof_key_id: str, actor: str, *, tester_id: str | None = None) -> ProofKey:
        """Remove a binding: its API key goes back to working with the string alone (or to
        none at all, where the policy requires a proof). Raises NotFound, Conflict."""
        row = self._session.get(ProofKey, proof_key_id, with_for_update=True)
        if row is None or (tester_id is not None and row.tester_id != tester_id):
            raise NotFound(f"No proof key found with id '{proof_key_id[:64]}'.")
        if row.removed_at is not None:
            raise Conflict(f"{row.id} was already unbound.", code="proof_key_state")
        self._remove(row, actor, "unbound")
        return row

    def unbind_key(self, key_id: str, actor: str) -> ProofKey:
        """Remove the binding in force on an API key. Raises NotFound."""
        row = self.in_force(key_id)
        if row is None:
            raise NotFound(f"{key_id[:64]} has no proof key bound.")
        self._remove(row, actor, "unbound")
        return row

    def carry_over(self, old_key_id: str, new_key: ApiKey, actor: str) -> ProofKey | None:
        """On rotation: the successor gets the same public key as its predecessor."""
        row = self.in_force(old_key_id)
        if row is None:
            return None
        parsed = ParsedPublicKey(row.algorithm, row.public_key, row.thumbprint)
        return self._add(new_key, parsed, actor, carried_from=row.id)

    def in_force(self, key_id: str) -> ProofKey | None:
        return self._session.scalar(
            select(ProofKey).where(ProofKey.key_id == key_id, ProofKey.removed_at.is_(None))
        )

    def list_for_tester(self, tester_id: str, *, include_removed: bool = False) -> list[ProofKey]:
        query = select(ProofKey).where(ProofKey.tester_id == tester_id)
        if not include_removed:
            query = query.where(ProofKey.removed_at.is_(None))
        return list(self._session.scalars(query.order_by(ProofKey.created_at, ProofKey.id)))

    def bound_key_ids(self, key_ids: list[str]) -> set[str]:
        """Which of these API keys have a proof key in force."""
        if not key_ids:
            return set()
        query = select(ProofKey.key_id).where(
            ProofKey.key_id.in_(key_ids), ProofKey.removed_at.is_(None)
        )
        return set(self._session.scalars(query))

    def _add(
        self,
        key: ApiKey,
        parsed: ParsedPublicKey,
        actor: str,
        carried_from: str | None = None,
    ) -> ProofKey:
        row = ProofKey(
            id=new_id("pkey"),
            key_id=key.id,
            tester_id=key.tester_id,
            algorithm=parsed.algorithm,
            public_key=parsed.pem,
            thumbprint=parsed.thumbprint,
            created_at=self._clock(),
            created_by=actor,
        )
        self._session.add(row)
        try:
            self._session.flush()
        except IntegrityError:
            # Two binds of one key at once: the unique index lets one win.
            raise Conflict(f"{key.id} already has a proof key.", code="proof_key_bound") from None
        details = {
            "key_id": key.id,
            "tester_id": key.tester_id,
            "algorithm": parsed.algorithm,
            "thumbprint": parsed.thumbprint,
        }
        if carried_from is not None:
            details["carried_from"] = carried_from
        self._audit.append(actor, "proof_key.bind", row.id, details=details)
        return row

    def _remove(self, row: ProofKey, actor: str, how: str) -> None:
        row.removed_at = self._clock()
        row.removed_by = actor
        self._session.flush()
        self._audit.append(
            actor,
            "proof_key.unbind",
            row.id,
            details={"key_id": row.key_id, "tester_id": row.tester_id, "how": how},
        )
