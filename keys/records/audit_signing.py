"""Ed25519 keys that sign audit checkpoints.

The private key is derived from the root secret (``Vault.derive(AUDIT_SIGNING_PURPOSE)`` is
the 32-byte seed), so whoever can write to the database but does not hold the root secret
cannot sign a checkpoint. The public key is handed to auditors, who verify with it alone.

A key is named by its key id: the first 16 hex digits of SHA-256 over the raw 32-byte public
key. Signatures travel as 128 lowercase hex digits.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

AUDIT_SIGNING_PURPOSE = "drawbridge/audit-signing/v1"
SEED_BYTES = 32
SIGNATURE_HEX_CHARS = 128


class AuditKeyError(ValueError):
    """A public key that is not a PEM-encoded Ed25519 key, or a seed of the wrong size."""


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class AuditVerifier:
    """Checks checkpoint signatures with a public key only."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._public_key = public_key
        self.key_id = key_id_of(public_key)

    @classmethod
    def from_pem(cls, pem: str | bytes) -> AuditVerifier:
        """Raises AuditKeyError unless ``pem`` holds an Ed25519 public key."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise AuditKeyError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError(f"not an Ed25519 public key ({type(key).__name__})")
        return cls(key)

    def public_key_pem(self) -> str:
        """SubjectPublicKeyInfo PEM, the form ``openssl pkey -pubin`` reads."""
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def verify(self, message: bytes, signature: str) -> bool:
        """True when ``signature`` (hex) is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_HEX_CHARS:
            return False
        try:
            self._public_key.verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"AuditVerifier(key_id={self.key_id!r})"


class AuditSigner:
    """Signs checkpoints with the Ed25519 key whose 32-byte seed it is given."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise AuditKeyError(f"an Ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        self._private_key = Ed25519PrivateKey.from_private_bytes(seed)
        self._verifier = AuditVerifier(self._private_key.public_key())

    @property
    def key_id(self) -> str:
        return self._verifier.key_id

    @property
    def verifier(self) -> AuditVerifier:
        """The matching public half."""
        return self._verifier

    def public_key_pem(self) -> str:
        return self._verifier.public_key_pem()

    def sign(self, message: bytes) -> str:
        """The signature of ``message`` as 128 lowercase hex digits."""
        return self._private_key.sign(message).hex()

    def __repr__(self) -> str:
        return f"AuditSigner(key_id={self.key_id!r})"
